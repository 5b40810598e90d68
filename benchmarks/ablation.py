"""The paper's ablation rows and the baselines, side by side, on labelled videos.

For each (video, ground truth) pair: stage 1 runs once through the real flow (or is reused from
``--out``), then every row clusters the same tracks and is scored with ``vcn.evaluation.metrics``:

    generic + HAC           un-finetuned ArcFace, average-linkage HAC at cosine 0.6
    generic + DBSCAN        per face, eps 0.5, min 3 (Immich's defaults), track majority
    generic + FINCH 1       FINCH level 1 (first-neighbour components) over track means
    generic + FINCH         FINCH level 2 over track means
    finetuned + HAC         HAC over the finetuned model's track means
    PF + cosine             parameter-free on finetuned embeddings, view thresholds
    PF + euclidean          same, mean squared Euclidean distance
    vcn without shot views  the default with thresholds from the matching views alone, without
                            the views that add wide framing, low light and noise
                            (``MethodConfig.threshold_views``); it embeds a second view bank
    vcn                     ``--method vcn`` (:func:`vcn.method.videoclusternet.cluster`): cosine distance
                            from the matched groups, shot-view thresholds, the matched
                            groups' spread lent to lone tracks within their quality range,
                            fragments linked
    avg pooling + PF        (``--vct``) the VCT paper's Temp Avg: the unit mean of each track's
                            sequence, clustered as ``vct`` clusters (view thresholds, linking,
                            unknowns on the detector score)
    vct                     ``--method vct``: the sequence transformer trained on the title
                            (``vcn.method.vct``), the same clustering
    vct + matched positives the same with coarse matches on the frozen embeddings as positives

    .venv/bin/python -m benchmarks.ablation [--sets hamilton pedestrians hard1 easy2] [--seed S]
        [--quick | --default-only] [--reuse] [--match-draws N] [--vct] [--skip-vcn]

``--quick`` leaves out the rows that need a second view bank; ``--default-only`` keeps the
baselines and ``vcn``. ``--vct`` adds the VCT rows (their ``sec`` is the whole vct stage:
sequences, training, embedding, clustering); ``--skip-vcn`` leaves out the finetuned rows (the
anchors stay).

The seed draws the views, the finetune's augmentations and its head; run two or more to see
how much a row moves with them.

Composed episodes are made with ../shared/tools/compose_episode.py: ``hard<N>`` with HARD=1 and
seed N, ``easy<N>`` clean (the default sets: hard1, easy2; hard3, hard5 and hard7 are held out),
and cached under ``--cache``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEV = SHARED / "data" / "dev"
STILLS = [DEV / "stills/deepface/identities.csv", DEV / "stills/dlib_johns",
          DEV / "stills/face_recognition_knn/train"]
ANCHORS = ("generic + HAC", "generic + DBSCAN", "generic + FINCH 1", "generic + FINCH")
HEADER = (f"{'row':<23} {'WCP':>6} {'NMI':>6} {'B3-F':>6} {'ratio':>6} {'unk':>6} {'pred':>5} "
          f"{'true':>5} {'sec':>7}")


def dataset(name: str, cache: Path) -> tuple[Path, Path]:
    """(video, faces.csv) of a named set, composing episodes on first use."""
    if name == "hamilton":
        return DEV / "short_hamilton_clip.mp4", DEV / "hamilton.faces.csv"
    if name == "pedestrians":
        return DEV / "pedestrians.mp4", DEV / "pedestrians.faces.csv"
    found = re.fullmatch(r"(hard|easy)(\d+)", name)
    if found is None:
        raise SystemExit(f"unknown set {name!r}: hamilton, pedestrians, hard<seed> or easy<seed>")
    seed, hard = int(found[2]), found[1] == "hard"
    video, csv = cache / f"{name}.mp4", cache / f"{name}.faces.csv"
    if not video.exists():
        cache.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "HARD": "1" if hard else "0"}
        tool = str(SHARED / "tools/compose_episode.py")
        subprocess.run([sys.executable, tool, str(video), str(csv), str(seed),
                        *map(str, STILLS)], check=True, env=env)
    return video, csv


def stage1(video: Path, out: Path, config: dict | None = None) -> Path:
    """Run the per-movie flow (tracks + HAC) unless its output exists; return the movie folder.
    ``config``: more of the run's config (e.g. ``{"ingest": {...}}``); use its own ``out``."""
    from vcn.flows.movie import movie_flow
    from vcn.flows.runtime import dask_cluster, prefect_api
    from vcn.media.video import content_id

    movie = out / content_id(str(video))
    if not (movie / "tracks.parquet").exists():
        with prefect_api(), dask_cluster(None, None) as address:
            movie_flow(address)(video_path=str(video), out_dir=str(out),
                                          config={**(config or {}), "cluster": {"method": "hac"}})
    return movie


def evaluate_rows(movie: Path, gt_csv: Path, seed: int = 0, reuse: bool = False,
                  quick: bool = False, match_draws: int | None = None,
                  default_only: bool = False, anchors_only: bool = False, vct: bool = False) -> list[dict]:
    """Every row's scores on one set; ``quick``: all but the rows that need a second view bank;
    ``default_only``: the baselines (``ANCHORS``) and the default (``vcn``); ``anchors_only``:
    the baselines; ``vct``: also the VCT rows (:func:`vct_rows`); ``match_draws``:
    ``MethodConfig.match_draws`` of the seeded rows."""
    from vcn import baselines
    from vcn.evaluation import metrics
    from vcn.faces.backbone import load_backbone
    from vcn.faces.detection import default_model_dir, find_models
    from vcn.method import clustering, thresholds
    from vcn.method.finetune import face_embeddings
    from vcn.method.matching import sample_rows
    from vcn.method.track_quality import second_look_tracks
    from vcn.method.videoclusternet import MethodConfig, adapt, bank_for, cluster
    from vcn.storage.crops import read_crops

    faces = pq.read_table(movie / "faces.parquet").to_pandas()
    tracks = pq.read_table(movie / "tracks.parquet").to_pandas()
    gt = metrics.read_ground_truth(pd.read_csv(gt_csv).drop(columns=["video"], errors="ignore"))
    tid = {t: i for i, t in enumerate(tracks["track_id"])}
    face_track = faces["track_id"].map(tid).to_numpy()
    emb = np.stack(faces["embedding"].to_numpy()).astype(np.float32)
    means = np.stack(tracks["mean_embedding"].to_numpy()).astype(np.float32)
    cfg = MethodConfig() if match_draws is None else MethodConfig(match_draws=match_draws)
    rows_out = []

    def score(name: str, track_labels: np.ndarray, seconds: float,
              face_labels: np.ndarray | None = None) -> None:
        lab = face_labels if face_labels is not None else np.asarray(track_labels)[face_track]
        pred = faces[["frame_idx", "x1", "y1", "x2", "y2", "track_id"]].copy()
        pred["cluster_id"] = np.where(lab < 0, "unknown", [f"c{x}" for x in lab])
        r = metrics.evaluate(gt, pred)
        rows_out.append({"row": name, "wcp": r.wcp, "nmi": r.nmi, "bcubed_f": r.bcubed_f,
                         "ratio": r.cluster_ratio, "unknown": r.unknown_rate, "clusters": r.n_pred_clusters,
                         "true": r.n_true_identities, "seconds": seconds})

    t0 = time.perf_counter()
    score("generic + HAC", clustering.hac(means, 0.6), time.perf_counter() - t0)
    t0 = time.perf_counter()
    db = baselines.dbscan_faces(emb, eps=0.5, min_samples=3, track_index=face_track)
    score("generic + DBSCAN", baselines.track_majority(db, face_track), time.perf_counter() - t0)
    for level, name in ((1, "generic + FINCH 1"), (2, "generic + FINCH")):
        t0 = time.perf_counter()
        score(name, baselines.finch(means, level=level), time.perf_counter() - t0)
    from vcn.method.constraints import cooccurring_pairs

    if vct:
        vct_rows(faces, face_track, emb, cooccurring_pairs(faces["frame_idx"].to_numpy(), face_track),
                 seed, score)
    if anchors_only:
        return rows_out

    cannot = cooccurring_pairs(faces["frame_idx"].to_numpy(), face_track)
    # a stage-1 cache without the column holds no second-look faces
    flags = faces["second_look"].to_numpy() if "second_look" in faces else np.zeros(len(faces), bool)
    aside = second_look_tracks(flags, face_track, len(tracks))
    sample = sample_rows(face_track, cfg.faces_per_track)
    crops = read_crops(movie / "crops", faces["face_id"].to_numpy()[sample])
    index = face_track[sample]
    backbone = load_backbone(find_models(default_model_dir()).recognizer)
    from vcn.errors import CheckpointError
    from vcn.storage.checkpoints import load_checkpoint, save_checkpoint

    cache = movie / "model" / f"ablation-seed{seed}-draws{cfg.match_draws}.pt"
    t0 = time.perf_counter()
    bank = bank_for(backbone, crops, cfg, seed)
    t_bank = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        ck = load_checkpoint(cache) if reuse else None
    except CheckpointError as exc:  # a cache it cannot read safely is recomputed
        print(f"{exc}; finetuning again")
        ck = None
    if ck is None or not ck.done:
        ck = adapt(bank, index, cfg, seed, cannot_link=cannot)
        save_checkpoint(cache, ck)
    t_adapt = time.perf_counter() - t0 + t_bank
    print(f"  view bank {t_bank:.1f} s, adapt {t_adapt - t_bank:.1f} s", file=sys.stderr)
    state = ck.state
    variants = (
        ("vcn without shot views", {"threshold_views": cfg.views}),
        ("vcn", {}),
    )

    def run_variants(chosen: tuple[tuple[str, dict], ...]) -> list[dict]:
        for row, change in chosen:
            t0 = time.perf_counter()
            vcfg = dataclasses.replace(cfg, **change)
            # Rows that change the threshold views need a bank with those views.
            same = vcfg.threshold_views == cfg.threshold_views
            vbank = bank if same else bank_for(backbone, crops, vcfg, seed)
            res = cluster(vbank, state, index, vcfg, cannot_link=cannot, matches=ck.matches,
                          set_aside=aside)
            score(row, res.labels, time.perf_counter() - t0 + t_adapt)
        if aside.any():  # what setting the second look's tracks aside changes
            t0 = time.perf_counter()
            res = cluster(bank, state, index, cfg, cannot_link=cannot, matches=ck.matches)
            score("vcn, 2nd look clustered", res.labels, time.perf_counter() - t0 + t_adapt)
        print(f"  adapt rounds: {ck.history}", file=sys.stderr)
        return rows_out

    if default_only:
        return run_variants(variants[-1:])
    emb = face_embeddings(state, bank.clean, cfg.finetune)
    ft_means = np.zeros((len(tracks), emb.shape[1]))
    np.add.at(ft_means, index, emb)
    ft_means /= np.linalg.norm(ft_means, axis=1, keepdims=True)
    score("finetuned + HAC", clustering.hac(ft_means.astype(np.float32), 0.6), t_adapt)
    v_emb = face_embeddings(state, bank.match[0], cfg.finetune)
    for metric in ("cosine", "euclidean"):
        t0 = time.perf_counter()
        thr = thresholds.view_thresholds_embedding(v_emb, index, metric)
        lab = clustering.parameter_free_embedding(v_emb[:, 0], index, metric, thr, cannot)
        score(f"PF + {metric}", lab, time.perf_counter() - t0)
    return run_variants(variants[-1:] if quick else variants)


def vct_rows(faces: pd.DataFrame, face_track: np.ndarray, emb: np.ndarray, cannot: np.ndarray,
             seed: int, score) -> None:
    """Score average pooling, ``vct`` and ``vct`` with matched positives, each through
    :func:`vcn.method.vct.run_vct` (one clustering for all three)."""
    from vcn.method.vct import VctConfig, run_vct

    frames = faces["frame_idx"].to_numpy()
    quality = faces["det_score"].to_numpy()
    for name, cfg, train in (("avg pooling + PF", VctConfig(), False), ("vct", VctConfig(), True),
                             ("vct + matched positives", VctConfig(matched_positives=True), True)):
        res = run_vct(emb, face_track, frames, quality, cannot, cfg, seed, train=train)
        print(f"  {name}: {res.seconds:.1f} s ({res.train_seconds:.1f} s training, {res.steps} steps, "
              f"{len(res.matches)} matched pairs, final loss {res.final_loss:.3f})", file=sys.stderr)
        score(name, res.clustering.labels, res.seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["hamilton", "pedestrians", "hard1", "easy2"])
    ap.add_argument("--out", default=".bench/ablation-out")
    ap.add_argument("--cache", default=".bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="reuse a cached finetune of an earlier run")
    ap.add_argument("--quick", action="store_true", help="leave out the rows that need a second view bank")
    ap.add_argument("--default-only", action="store_true", help="baselines and the default row")
    ap.add_argument("--match-draws", type=int, default=None,
                    help="MethodConfig.match_draws (default: the MethodConfig default, 3)")
    ap.add_argument("--vct", action="store_true", help="add the VCT rows")
    ap.add_argument("--skip-vcn", action="store_true", help="leave out the finetuned (vcn) rows")
    args = ap.parse_args()
    for name in args.sets:
        video, csv = dataset(name, Path(args.cache))
        movie = stage1(video, Path(args.out))
        print(f"\n== {name}: {video.name}")
        print(HEADER)
        for r in evaluate_rows(movie, csv, args.seed, args.reuse, args.quick, args.match_draws,
                               args.default_only, anchors_only=args.skip_vcn, vct=args.vct):
            print(f"{r['row']:<23} {r['wcp']:>6.3f} {r['nmi']:>6.3f} {r['bcubed_f']:>6.3f} "
                  f"{r['ratio']:>6.2f} {r['unknown']:>6.3f} {r['clusters']:>5} {r['true']:>5} "
                  f"{r['seconds']:>7.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
