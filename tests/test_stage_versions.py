"""Per-stage invalidation: a stage re-runs for its own config section, its models and its
algorithm version (``vcn.versions``), never for a source edit; and its output on a fixed input
changes only together with its version: the tracks stage and the HAC clustering on the sample
clip, the finetune and the vcn clustering on a fixed view bank.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import vcn.versions
from vcn.config import PipelineConfig
from vcn.faces.assembly import ChunkFaces, assemble_movie
from vcn.faces.detection import ModelFiles
from vcn.faces.ingest import IngestConfig, process_chunk
from vcn.media.video import Chunk, VideoInfo
from vcn.method.clustering import hac
from vcn.method.finetune import face_embeddings
from vcn.method.matching import index_sums
from vcn.method.videoclusternet import adapt, cluster
from vcn.method.view_bank import ViewBank
from vcn.method.views import strong_view_blocks
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import record_stage
from vcn.tasks.context import MovieContext
from vcn.tasks.stages import stage_plan, stage_record

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"
DIGESTS = Path(__file__).parent / "data" / "stage_digests.json"
OUTPUTS = {"tracks": ["faces.parquet", "tracks.parquet"], "finetune": ["model/final.pt"],
           "clusters": ["clusters.parquet"]}


def movie(tmp_path: Path, config: PipelineConfig, code_hash: str = "source-1",
          recognizer: str = "r-hash") -> MovieContext:
    info = VideoInfo(path="x.mp4", fps=25.0, n_frames=250, width=640, height=360, duration_s=10.0,
                     codec="h264")
    return MovieContext(video_path="x.mp4", movie_id="m", out_root=str(tmp_path / "m"), info=info,
                        config=config, models=ModelFiles("det.onnx", "rec.onnx"), code_hash=code_hash,
                        model_hashes={"detector": "d-hash", "recognizer": recognizer})


def finish_all(ctx: MovieContext) -> None:
    """Record every stage completed by ``ctx``'s config, models and versions, outputs on disk."""
    layout = MovieLayout(Path(ctx.out_root))
    for stage in ctx.config.stages():
        for name in OUTPUTS[stage]:
            (layout.root / name).parent.mkdir(parents=True, exist_ok=True)
            (layout.root / name).write_bytes(b"x")
        record_stage(layout, stage, stage_record(ctx, stage, status="completed", outputs=OUTPUTS[stage]))


def test_a_source_edit_invalidates_nothing(tmp_path):
    ctx = movie(tmp_path, PipelineConfig())
    finish_all(ctx)
    assert stage_plan(ctx) == {"tracks": None, "finetune": None, "clusters": None}
    # A docstring, a comment or a refactor changes the source hash: nothing is stale.
    edited = dataclasses.replace(ctx, code_hash="source-2")
    assert stage_plan(edited) == {"tracks": None, "finetune": None, "clusters": None}


def test_each_stage_runs_for_its_own_reasons(tmp_path, monkeypatch):
    ctx = movie(tmp_path, PipelineConfig())
    finish_all(ctx)
    later = PipelineConfig.from_dict({"method": {"faces_per_track": 9}})
    assert stage_plan(dataclasses.replace(ctx, config=later)) == {
        "tracks": None, "finetune": "config changed", "clusters": "finetune runs"}
    stride = PipelineConfig.from_dict({"ingest": {"stride": 3}})
    assert stage_plan(dataclasses.replace(ctx, config=stride)) == {
        "tracks": "config changed", "finetune": "tracks runs", "clusters": "tracks runs"}
    assert stage_plan(movie(tmp_path, PipelineConfig(), recognizer="new-r")) == {
        "tracks": "models changed", "finetune": "tracks runs", "clusters": "tracks runs"}
    monkeypatch.setitem(vcn.versions.STAGE_VERSIONS, "clusters", vcn.versions.STAGE_VERSIONS["clusters"] + 1)
    v = vcn.versions.STAGE_VERSIONS["clusters"]
    assert stage_plan(ctx) == {"tracks": None, "finetune": None,
                               "clusters": f"stage version changed (clusters {v - 1} -> {v})"}
    monkeypatch.undo()
    (Path(ctx.out_root) / "clusters.parquet").unlink()
    assert stage_plan(ctx)["clusters"] == "output missing (clusters.parquet)"
    failure = {"status": "failed", "error": "OSError: disk full"}
    record_stage(MovieLayout(Path(ctx.out_root)), "finetune", failure)
    assert stage_plan(ctx) == {"tracks": None, "finetune": "previous failure (OSError: disk full)",
                               "clusters": "finetune runs"}
    assert stage_plan(ctx, rerun_from="clusters")["clusters"] == "forced (--from clusters)"


def test_the_hac_baseline_skips_the_finetune_and_its_version(tmp_path, monkeypatch):
    ctx = movie(tmp_path, PipelineConfig.from_dict({"cluster": {"method": "hac"}}))
    finish_all(ctx)
    monkeypatch.setitem(vcn.versions.STAGE_VERSIONS, "finetune", 99)
    assert stage_plan(ctx) == {"tracks": None, "clusters": None}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def stage_outputs() -> dict[str, str]:
    """Digests of the tracks stage and of the HAC clustering on the first 60 frames of the sample:
    faces (ids, frames, boxes to the pixel, second-look flags), local tracks and cuts; tracks;
    cluster labels."""
    from vcn.faces.detection import default_model_dir, find_models
    from vcn.tasks.models import face_models

    cfg = IngestConfig()
    files = find_models(default_model_dir())
    models = face_models(files.detector, files.recognizer, cfg.detection, cfg.embedding)
    chunk = Chunk(index=0, start=0, end=60, read_start=0)
    res = process_chunk(str(SAMPLE), chunk, models, cfg)
    x1, y1, x2, y2 = res.boxes.T
    columns = {"face_id": res.face_id, "frame_idx": res.frame_idx, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
               "embedding": res.embeddings,
               "sharpness": res.sharpness, "local_track": res.local_track, "owned": res.owned}
    faces = assemble_movie([ChunkFaces(chunk, res.cuts, columns)], "m", 60, 29.97, cfg)
    tracks = {"face_id": faces.faces["face_id"], "frame_idx": faces.faces["frame_idx"],
              "boxes": np.round(res.boxes).astype(np.int32), "local_track": res.local_track, "cuts": res.cuts,
              "second_look": res.second_look,
              "track_id": faces.tracks.track_id.astype(str), "n_faces": faces.tracks.n_faces}
    labels = hac(faces.tracks.mean_embedding, threshold=PipelineConfig().cluster.hac_threshold)
    assert len(faces.tracks.track_id) >= 2, "the digest must cover real tracks"
    return {"tracks": _digest(tracks), "clusters": _digest({"labels": labels.astype(np.int64)})}


def synthetic_bank() -> tuple[ViewBank, np.ndarray, np.ndarray]:
    """A fixed view bank of 12 tracks of 4 faces (seeded, no recognizer): a lead of 6 tracks
    whose looks vary widely, two people of 3 and 2 close tracks seen on screen with the lead,
    and a lone track of low quality (``unknown``). The matching pairs some tracks, stage 4
    leaves the lead in fragments and the linking joins them. Returns the bank, each face's
    track and the cannot-link pairs (tracks seen on one frame)."""
    rng = np.random.default_rng(2)
    dim, faces, draws = 512, 4, 3
    people, spread = [0] * 6 + [1] * 3 + [2] * 2 + [3], [1.0, 0.38, 0.38, 0.3]
    centres = rng.normal(size=(4, dim))
    rows, track_index = [], []
    for track, person in enumerate(people):
        mean = centres[person] + spread[person] * rng.normal(size=dim)
        rows += [mean + 0.3 * rng.normal(size=dim) for _ in range(faces)]
        track_index += [track] * faces
    clean = np.array(rows)
    clean /= np.linalg.norm(clean, axis=1, keepdims=True)

    def views(n: int, spread: float) -> np.ndarray:
        x = clean[:, None] + spread * rng.normal(size=(len(clean), n, dim)) / np.sqrt(dim)
        x[:, 0] = clean
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float16)

    match = np.stack([views(4, 0.6) for _ in range(draws)])
    thresh = views(10, 0.9)
    quality = (0.8 + 0.05 * rng.random(len(clean))).astype(np.float32)
    quality[-faces:] = 0.2
    cannot_link = np.array([[0, 6], [1, 7], [2, 9], [3, 8], [4, 10], [5, 6]], np.int64)
    return ViewBank(match, thresh, quality), np.array(track_index, np.int64), cannot_link


@pytest.fixture(scope="module")
def method_outputs(h5_faces) -> dict[str, str]:
    """Digests of the finetune stage (the views it draws from real crops, and the matches,
    rounds and adapted embeddings of :func:`vcn.method.videoclusternet.adapt` on
    :func:`synthetic_bank`) and of
    the vcn clustering of that bank under the adapted model (labels, unknown tracks, the
    lifted, held and linked counts, thresholds; and the labels with two tracks set aside). The
    default method config with a short finetune (8 + 8 steps); floats are rounded to 2 decimals,
    so thread counts and CPUs do not move the digest and a change to the method does."""
    crops, _ = h5_faces
    cfg = PipelineConfig.from_dict(
        {"method": {"finetune": {"min_steps": 8, "max_steps": 8, "batch_pairs": 16}}}).method
    drawn = {"match": np.concatenate(list(strong_view_blocks(crops[:6], cfg.views, 0, 4))),
             "thresh": np.concatenate(list(strong_view_blocks(crops[:6], cfg.threshold_views, 1, 4)))}
    bank, track_index, cannot_link = synthetic_bank()
    ck = adapt(bank, track_index, cfg, seed=0, cannot_link=cannot_link)
    emb = face_embeddings(ck.state, bank.clean, cfg.finetune)
    means = index_sums(emb, track_index, int(track_index.max()) + 1)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    history = [[h["round"], h["matches"], h["next_matches"], h["steps"]] for h in ck.history]
    finetune = {**drawn, "round": np.array([ck.round]), "matches": ck.matches.astype(np.int64),
                "history": np.array(history, np.int64), "gram": np.round(means @ means.T, 2) + 0.0}
    res = cluster(bank, ck.state, track_index, cfg, cannot_link=cannot_link, matches=ck.matches)
    assert len(ck.matches) and res.linked and len(set(res.labels.tolist())) > 2 and res.unknown.any(), \
        "the digest must cover matches, merges, linked fragments and an unknown track"
    aside = np.zeros(len(res.labels), bool)
    aside[[1, 7]] = True
    placed = cluster(bank, ck.state, track_index, cfg, cannot_link=cannot_link, matches=ck.matches,
                     set_aside=aside)
    clusters = {"labels": res.labels.astype(np.int64), "unknown": res.unknown,
                "aside": placed.labels.astype(np.int64),
                "counts": np.array([res.lifted, res.held, res.linked, placed.attached]),
                "thresholds": np.round(np.nan_to_num(res.thresholds, nan=-1.0), 2) + 0.0}
    return {"finetune": _digest(finetune), "clusters-vcn": _digest(clusters)}


# Each recorded digest: the stage whose version it is tied to, and the fixture that computes it.
CHECKS = {"tracks": ("tracks", "stage_outputs"), "clusters": ("clusters", "stage_outputs"),
          "finetune": ("finetune", "method_outputs"), "clusters-vcn": ("clusters", "method_outputs")}


@pytest.mark.parametrize("check", list(CHECKS))
def test_stage_output_changes_only_with_its_version(request, check):
    stage, fixture = CHECKS[check]
    recorded = json.loads(DIGESTS.read_text())[check]
    now = {"version": vcn.versions.STAGE_VERSIONS[stage], "digest": request.getfixturevalue(fixture)[check]}
    assert now["version"] == recorded["version"], (
        f"the {stage} version is {now['version']}; record the {check!r} digest in {DIGESTS.name}: {now}")
    assert now["digest"] == recorded["digest"], (
        f"the {stage} stage's output ({check!r}) changed without a version bump: bump vcn.versions."
        f"STAGE_VERSIONS[{stage!r}] and record the new digest in {DIGESTS.name}: {now['digest']}")
