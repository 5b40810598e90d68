"""storage/: atomic writes, schemas, the crops store and the manifest."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vcn.config import PipelineConfig
from vcn.errors import InputError
from vcn.faces.assembly import MovieFaces
from vcn.manifest import InputFailure, InputRecord, Manifest, StageRecord
from vcn.report.summary import TrackSummary, cluster_names, summarize_clusters
from vcn.storage import schemas
from vcn.storage.atomic import atomic_path, write_bytes, write_json, write_parquet
from vcn.storage.crops import read_crops, write_crops
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import known_paths, read_manifest, record_stage, stage_is_complete, update_manifest
from vcn.storage.tables import read_face_columns, read_tracks, write_clusters, write_title_tables

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "short_hamilton_clip.mp4"


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    dest = tmp_path / "a.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text('{"v": 2, "half')
        raise RuntimeError("crash mid-write")
    assert json.loads(dest.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"], "no temporary file left behind"


def test_faces_table_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    n = 7
    emb = rng.normal(size=(n, 512)).astype(np.float32)
    lmk = rng.uniform(0, 100, size=(n, 5, 2)).astype(np.float32)
    cols = {
        "face_id": np.arange(n), "frame_idx": np.arange(n) * 3, "t_sec": np.arange(n) * 0.12,
        "x1": np.zeros(n), "y1": np.zeros(n), "x2": np.ones(n) * 10, "y2": np.ones(n) * 12,
        "det_score": np.full(n, 0.9), "landmarks": lmk.reshape(n, 10), "sharpness": np.ones(n),
        "yaw": np.zeros(n), "second_look": np.zeros(n, bool), "embedding": emb,
        "shot_id": np.zeros(n, np.int32),
        "track_id": np.array(["t0"] * n, object), "cluster_id": np.array(["unknown"] * n, object),
    }
    path = tmp_path / "faces.parquet"
    write_parquet(path, schemas.table_from_columns(schemas.FACES_SCHEMA, cols, metadata={"k": 1}))
    table = pq.read_table(path)
    assert table.schema.field("embedding").type == schemas.FACES_SCHEMA.field("embedding").type
    back = schemas.columns_from_table(table)
    np.testing.assert_array_equal(back["embedding"], emb)
    np.testing.assert_array_equal(back["landmarks"], lmk)
    assert schemas.table_metadata(str(path)) == {"k": 1}


def test_title_tables_then_clusters_round_trip(tmp_path):
    """The assembled title's tables read back as the clusters stage needs them, and a clustering
    written over them sets every face's and track's cluster and the tracks' quality."""
    rng = np.random.default_rng(2)
    n, ids = 6, np.array(["m-c00000-t00000", "m-c00000-t00001", "m-c00001-t00000"], object)
    track_of_face = np.array([0, 0, 1, 1, 2, 2])
    faces = {
        "face_id": np.arange(n), "frame_idx": np.arange(n) * 5, "t_sec": np.arange(n) * 0.2,
        "x1": np.zeros(n), "y1": np.zeros(n), "x2": np.full(n, 40.0), "y2": np.full(n, 48.0),
        "det_score": np.full(n, 0.8), "landmarks": np.zeros((n, 5, 2), np.float32),
        "sharpness": np.ones(n), "yaw": np.zeros(n), "second_look": np.zeros(n, bool),
        "embedding": rng.normal(size=(n, 512)).astype(np.float32),
        "shot_id": np.zeros(n, np.int32), "track_id": ids[track_of_face],
    }
    tracks = TrackSummary(
        track_id=ids, shot_id=np.zeros(3, np.int32), first_frame=np.array([0, 10, 20]),
        last_frame=np.array([5, 15, 25]), n_faces=np.full(3, 2), quality=np.full(3, np.nan, np.float32),
        mean_embedding=rng.normal(size=(3, 512)).astype(np.float32),
    )
    layout = MovieLayout(tmp_path / "m")
    layout.root.mkdir()
    write_title_tables(layout, MovieFaces(faces, tracks, np.array([[0, 30]]), np.zeros(0, np.int64)), 25.0)
    back = read_tracks(layout)
    np.testing.assert_array_equal(back.track_id, ids)
    np.testing.assert_array_equal(back.mean_embedding, tracks.mean_embedding)
    assert set(read_face_columns(layout, ["cluster_id"])["cluster_id"]) == {schemas.UNKNOWN}

    track_cluster = cluster_names(np.array([0, 0, -1]), back.n_faces)
    row_of = back.index_of(faces["track_id"])
    quality = np.array([0.7, 0.6, 0.1], np.float32)
    summary = summarize_clusters(back, track_cluster, faces["face_id"], row_of, faces["embedding"], 25.0, 5)
    write_clusters(layout, track_cluster[row_of], track_cluster, quality, summary)
    assert list(read_face_columns(layout, ["cluster_id"])["cluster_id"]) == list(track_cluster[row_of])
    written = read_tracks(layout)
    np.testing.assert_array_equal(written.quality, quality)
    assert list(pq.read_table(layout.tracks).column("cluster_id").to_pylist()) == list(track_cluster)
    assert pq.read_table(layout.clusters).column("cluster_id").to_pylist() == list(summary.cluster_id)


def test_crops_store_returns_requested_order(tmp_path):
    rng = np.random.default_rng(1)
    crops = np.zeros((6, 112, 112, 3), np.uint8)
    for i in range(6):  # flat colours survive JPEG nearly exactly
        crops[i] = rng.integers(0, 255, size=3)
    write_crops(tmp_path / "chunk-00000.parquet", np.arange(3), crops[:3])
    write_crops(tmp_path / "chunk-00001.parquet", np.arange(3, 6), crops[3:])
    back = read_crops(tmp_path, np.array([4, 0, 5]))
    assert back.shape == (3, 112, 112, 3)
    assert np.abs(back.astype(int) - crops[[4, 0, 5]].astype(int)).max() <= 3
    with pytest.raises(KeyError, match="99"):
        read_crops(tmp_path, np.array([99]))


def _record(root: str, i: int) -> None:
    layout = MovieLayout(Path(root))
    record_stage(layout, f"s{i % 3}", {"status": "completed", "i": i})


def test_manifest_concurrent_updates_keep_every_record(tmp_path):
    layout = MovieLayout(tmp_path / "m")
    update_manifest(layout, input=InputRecord(path="x.mp4"))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record, args=(str(layout.root), i)) for i in range(12)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    m = read_manifest(layout)
    assert len(m.history) == 12, "no update lost under concurrent writers"
    assert m.input == InputRecord(path="x.mp4")


def test_stage_complete_needs_its_stage_hash_and_outputs(tmp_path):
    layout = MovieLayout(tmp_path / "m")
    (layout.root).mkdir(parents=True)
    (layout.root / "faces.parquet").write_bytes(b"x")
    record_stage(layout, "tracks", {"status": "completed", "stage_hash": "s", "code_hash": "k",
                                    "outputs": ["faces.parquet"]})
    assert stage_is_complete(layout, "tracks", "s")
    assert not stage_is_complete(layout, "tracks", "other")
    (layout.root / "faces.parquet").unlink()
    assert not stage_is_complete(layout, "tracks", "s")


# -- manifest.json as typed records ----------------------------------------------------------------

# A manifest in the shape a run writes: a probed input, a completed stage with its own facts
# (extra), one whose extras are null, a failed one.
WRITTEN = {
    "movie_id": "0091c8325bbc4c8c",
    "input": {"path": "/lib/a.mp4", "size_bytes": 1234, "content_id": "0091c8325bbc4c8c",
              "duration_s": 9.2, "fps": 29.97, "n_frames": 275, "width": 640, "height": 360,
              "codec": "h264", "declared_frames": None, "declared_exact": False},
    "input_error": None,
    "code": {"vcn_version": "0.1.0", "git_commit": "abc", "code_hash": "c1"},
    "packages": {"numpy": "2.1.0", "torch": "absent"},
    "models": {"detector": {"path": "d.onnx", "blake2b": "d1"},
               "recognizer": {"path": "r.onnx", "blake2b": "r1"}},
    "config": {"cluster": {"method": "vcn"}, "ingest": {"stride": 5}, "model_dir": None, "seed": 0},
    "stages": {
        "tracks": {"stage": "tracks", "status": "completed", "recorded_at": "t2", "started": "t0",
                   "ended": "t1", "flow_run_id": "f", "task_run_id": "k", "stage_hash": "s1",
                   "code_hash": "c1", "stage_version": {"tracks": 1}, "config_hash": "h1",
                   "models_hash": "m1", "rows": {"faces": 120, "tracks": 15},
                   "outputs": ["faces.parquet", "crops"],
                   "chunk_seconds": {"decode": 1.5}, "decode": {"bad_packets": 0, "first_error": None}},
        "finetune": {"stage": "finetune", "status": "completed", "recorded_at": "t3", "rows": {"rounds": 2},
                     "outputs": ["model/final.pt"], "resumed_at_step": None, "checkpoint_refused": None,
                     "rounds": [{"matches": 4}]},
        "clusters": {"stage": "clusters", "status": "failed", "recorded_at": "t5", "ended": "t4",
                     "flow_run_id": "f", "error": "InputError: truncated", "input_error": True,
                     "traceback": "Traceback ...", "stage_version": {"tracks": 1, "clusters": 2},
                     "corrections": "d9"},
    },
    "history": [],
}
WRITTEN["history"] = list(WRITTEN["stages"].values())

# Older and hand-written shapes: a partial input, no history, no input_error, a bare stage record,
# keys this vcn does not name.
OLD = {
    "movie_id": "00112233aabbccdd",
    "input": {"path": "/videos/tiny.mp4", "fps": 25.0, "duration_s": 12.0, "width": 640, "height": 360,
              "bitrate": 900},
    "config": {"cluster": {"method": "vcn"}, "ingest": {"stride": 5}},
    "code": {"vcn_version": "0.1.0", "code_hash": "feedbeef"},
    "stages": {"clusters": {"status": "completed", "ended": "2026-01-01T00:00:00+00:00"}},
    "notes": "kept as written",
}


def test_manifest_records_round_trip_the_written_json():
    m = Manifest.from_json(json.loads(json.dumps(WRITTEN)))
    assert m.to_json() == WRITTEN, "the same keys, nesting and values come back"
    assert m.input.n_frames == 275 and m.input.declared_frames is None and m.input_error is None
    tracks = m.stages["tracks"]
    assert tracks.completed and tracks.stage_version == {"tracks": 1}
    assert tracks.outputs == ["faces.parquet", "crops"] and tracks.rows["faces"] == 120
    assert set(tracks.extra) == {"chunk_seconds", "decode"} and tracks.extra["decode"]["first_error"] is None
    assert m.stages["finetune"].extra["resumed_at_step"] is None and m.stages["finetune"].error is None
    failed = m.stages["clusters"]
    assert failed.status == "failed" and failed.input_error is True and failed.corrections == "d9"
    assert [r.stage for r in m.history] == ["tracks", "finetune", "clusters"]
    assert m.input_path == "/lib/a.mp4"


def test_manifest_reads_older_shapes_with_defaults():
    m = Manifest.from_json(OLD)
    assert m.input.path == "/videos/tiny.mp4" and m.input.fps == 25.0 and m.input.n_frames is None
    assert m.input.extra == {"bitrate": 900} and m.extra == {"notes": "kept as written"}
    assert m.input_error is None and m.history == [] and m.packages is None
    rec = m.stages["clusters"]
    assert rec.completed and rec.ended.startswith("2026") and rec.outputs is None and rec.extra == {}
    again = m.to_json()
    assert again["input"]["bitrate"] == 900 and again["notes"] == "kept as written"
    assert again["stages"] == OLD["stages"] and again["history"] == []
    assert Manifest.from_json(json.loads(json.dumps(again))) == m, "rewriting it reads back the same"


def test_manifest_of_an_unusable_file_writes_only_its_failure():
    failed = {"movie_id": "m", "input_error": {"path": "/lib/bad.mp4", "error": "InputError: no video stream",
                                               "recorded_at": "t"}, "stages": {}, "history": []}
    m = Manifest.from_json(failed)
    assert m.input is None and m.input_error.error.startswith("InputError") and m.input_path == "/lib/bad.mp4"
    assert m.to_json() == failed
    assert Manifest(movie_id="m").to_json() == {"movie_id": "m", "stages": {}, "history": []}


def test_stage_record_extra_does_not_shadow_its_fields():
    with pytest.raises(ValueError, match="rows"):
        StageRecord(stage="tracks", extra={"rows": {}})
    rec = StageRecord(stage="tracks", status="completed", rows={"faces": 3}, extra={"decode": None})
    assert rec.to_json() == {"stage": "tracks", "status": "completed", "rows": {"faces": 3}, "decode": None}
    assert Manifest(movie_id="m").with_stage(rec).with_stage(rec).history == [rec, rec]
    assert InputRecord.from_json(InputRecord(path="x", fps=25.0).to_json()) == InputRecord(path="x", fps=25.0)
    assert InputFailure.from_json({"path": "p", "error": "e", "recorded_at": "t"}).error == "e"


def test_a_prepared_title_writes_the_manifest_shape_and_reads_it_back(tmp_path):
    """The manifest that prepare-movie and the stage records write has the keys it always had,
    and reads back into the same JSON."""
    from vcn.tasks.ingest import prepare_movie
    from vcn.tasks.stages import record_failure, stage_record

    ctx = prepare_movie.fn(str(SAMPLE), str(tmp_path), PipelineConfig())
    layout = ctx.layout
    record_stage(layout, "tracks", stage_record(ctx, "tracks", status="completed", rows={"faces": 1},
                                                outputs=["faces.parquet"], extra={"decode": {"error": None}}))
    record_failure(ctx, "clusters", InputError("truncated"))
    raw = json.loads(layout.manifest.read_text())
    assert set(raw) == {"movie_id", "input", "input_error", "code", "packages", "models", "config",
                        "stages", "history"}
    assert set(raw["input"]) == {"path", "size_bytes", "content_id", "duration_s", "fps", "n_frames", "width",
                                 "height", "codec", "declared_frames", "declared_exact"}
    assert raw["input_error"] is None and raw["input"]["n_frames"] == ctx.info.n_frames
    stamp = {"stage", "recorded_at", "stage_hash", "code_hash", "stage_version", "config_hash", "models_hash"}
    assert set(raw["stages"]["tracks"]) == stamp | {"status", "rows", "outputs", "decode"}
    failed = {"status", "ended", "flow_run_id", "error", "input_error", "traceback"}
    assert set(raw["stages"]["clusters"]) == stamp | failed
    assert raw["history"] == [raw["stages"]["tracks"], raw["stages"]["clusters"]]
    assert Manifest.from_json(raw).to_json() == raw
    assert set(raw["models"]) == {"detector", "recognizer"}
    # YuNet's proposals shape the detections only when they are on: only then is its hash in the
    # lineage and the stage keys
    yunet = PipelineConfig.from_dict({"ingest": {"detection": {"proposer": "yunet"}}})
    proposing = prepare_movie.fn(str(SAMPLE), str(tmp_path / "yunet"), yunet)
    models = json.loads(proposing.layout.manifest.read_text())["models"]
    assert set(models) == {"detector", "recognizer", "proposer"}
    assert models["proposer"]["path"].endswith("face_detection_yunet_2023mar.onnx")
    assert proposing.model_hashes["proposer"] == models["proposer"]["blake2b"]

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(InputError):
        prepare_movie.fn(str(bad), str(tmp_path), PipelineConfig())
    (failed,) = [p for p in tmp_path.glob("*/manifest.json") if p.parent != layout.root]
    raw = json.loads(failed.read_text())
    assert set(raw) == {"movie_id", "input_error", "stages", "history"}
    assert set(raw["input_error"]) == {"path", "error", "recorded_at"}
    assert Manifest.from_json(raw).to_json() == raw
    assert known_paths(str(tmp_path)) == {str(SAMPLE.resolve()): ctx.movie_id,
                                          str(bad.resolve()): failed.parent.name}


# -- checkpoints: reading one back never runs code ------------------------------------------------


def _crafted_checkpoints(tmp_path: Path, code_payload) -> dict[str, tuple[Path, Path]]:
    """Files at a checkpoint's path whose unpickling would write a marker: name -> (file, marker)."""
    import pickle

    import torch

    from vcn.storage.checkpoints import FORMAT

    files = {}
    for name in ("raw-pickle", "torch-save", "torch-save-state"):
        marker = tmp_path / f"ran-{name}"
        path = tmp_path / name / "model" / "checkpoint.pt"
        path.parent.mkdir(parents=True)
        if name == "raw-pickle":  # a bare pickle, as `pickle.dump` writes it
            path.write_bytes(pickle.dumps(code_payload(marker, {"round": 0})))
        elif name == "torch-save":  # the payload inside a torch zip, the format of a real checkpoint
            blob = {"format": FORMAT, "round": code_payload(marker, 0), "matches": torch.zeros(0, 2)}
            torch.save(blob, path)
        else:  # deep in the finetune state, next to real tensors
            state = {"center": torch.zeros(4), "optimizer": {"state": code_payload(marker, {})}}
            torch.save({"format": FORMAT, "round": 0, "matches": torch.zeros((0, 2), dtype=torch.int64),
                        "history": [], "done": False, "state": state}, path)
        files[name] = (path, marker)
    return files


def test_crafted_checkpoint_is_refused_without_running(tmp_path, code_payload):
    from vcn.errors import CheckpointError
    from vcn.storage.checkpoints import load_checkpoint

    for name, (path, marker) in _crafted_checkpoints(tmp_path, code_payload).items():
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(path)
        assert not marker.exists(), f"loading the {name} checkpoint ran its payload"
        message = str(err.value)
        assert str(path) in message and "\n" not in message, message
        assert f"vcn rerun {path.parent.parent} --from finetune" in message


def test_checkpoint_of_tensors_but_not_vcns_layout_is_refused(tmp_path):
    import torch

    from vcn.errors import CheckpointError
    from vcn.storage.checkpoints import FORMAT, load_checkpoint

    cases = {
        "weights.pt": {"layer.weight": torch.zeros(2, 2)},  # someone else's state dict
        "numpy.pt": {"format": FORMAT, "round": 0, "matches": np.zeros((0, 2), np.int64), "history": [],
                     "done": True, "state": None},  # a numpy array: not a plain value
        "state.pt": {"format": FORMAT, "round": 0, "matches": torch.zeros((0, 2), dtype=torch.int64),
                     "history": [], "done": False, "state": {"center": torch.zeros(3)}},
    }
    for name, blob in cases.items():
        torch.save(blob, tmp_path / name)
        with pytest.raises(CheckpointError, match=re.escape(name)):
            load_checkpoint(tmp_path / name)


@pytest.mark.parametrize("umask", [0o002, 0o027])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask):
    """Outputs are shared files: their mode is ``0o666 & ~umask``, as for a plain ``open()``,
    and writing over an existing file gives the same mode."""
    import stat

    table = schemas.table_from_columns(schemas.SHOTS_SCHEMA, {
        "shot_id": np.arange(2, dtype=np.int32), "start_frame": np.array([0, 5]),
        "end_frame": np.array([5, 9]), "start_sec": np.array([0.0, 0.2]), "end_sec": np.array([0.2, 0.36]),
    })
    old = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
        for _ in range(2):  # a new file, then a replaced one
            write_json(tmp_path / "m.json", {"v": 1})
            write_bytes(tmp_path / "r.html", b"<p>")
            write_parquet(tmp_path / "s.parquet", table)
            write_crops(tmp_path / "crops" / "chunk-00000.parquet", np.arange(1),
                        np.zeros((1, 112, 112, 3), np.uint8))
            for name in ("m.json", "r.html", "s.parquet", "crops/chunk-00000.parquet"):
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected == 0o666 & ~umask, name
        layout = MovieLayout(tmp_path / "movie")
        update_manifest(layout, input=InputRecord(path="x.mp4"))
        assert stat.S_IMODE(layout.manifest.stat().st_mode) == expected
    finally:
        os.umask(old)
