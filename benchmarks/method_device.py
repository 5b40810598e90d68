"""The method stages (view bank, finetune with matching, clustering) on one device, timed.

Runs the pure core on titles that stage 1 already processed (their ``faces.parquet``,
``tracks.parquet`` and ``crops/``), without Prefect or Dask, so it runs wherever torch does: the
CPU here, or a CUDA machine (``FinetuneConfig.device="auto"`` picks CUDA, the view bank then
embeds with the torch recognizer in bf16). Prints seconds per stage and the clusters; with
``--labels`` it compares the partition with one saved from another device (the adjusted Rand
index and whether it is the same); ``--scale K`` repeats each title's tracks K times, each copy
through its own strong view of every crop, to time a title K times as long.

    python -m benchmarks.method_device MOVIE_DIR [MOVIE_DIR ...] --model W600K_MBF.onnx \
        [--scale 10] [--save labels.json] [--labels labels.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from vcn.evaluation.metrics import ari
from vcn.faces.backbone import load_backbone
from vcn.method.constraints import cooccurring_pairs
from vcn.method.finetune import FinetuneConfig, resolve_device
from vcn.method.matching import sample_rows
from vcn.method.track_quality import SerFiqConfig
from vcn.method.videoclusternet import MethodConfig, adapt, bank_for, cluster
from vcn.method.views import ViewConfig, strong_views
from vcn.storage.crops import read_crops


def title_inputs(movie: Path, cfg: MethodConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crops (N, 112, 112, 3) uint8, track_index (N,), cannot_link (P, 2)) of a stage-1 title."""
    faces = pq.read_table(movie / "faces.parquet", columns=["face_id", "track_id", "frame_idx"]).to_pandas()
    tracks = pq.read_table(movie / "tracks.parquet", columns=["track_id"]).column(0).to_pylist()
    index = faces["track_id"].map({t: i for i, t in enumerate(tracks)}).to_numpy(np.int64)
    rows = sample_rows(index, cfg.faces_per_track)
    crops = read_crops(movie / "crops", faces["face_id"].to_numpy()[rows])
    return crops, index[rows], cooccurring_pairs(faces["frame_idx"].to_numpy(), index)


def tiled(crops: np.ndarray, index: np.ndarray, cannot: np.ndarray, k: int, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The title's tracks ``k`` times; copy ``c > 0`` sees one strong view of every crop."""
    n_tracks = int(index.max()) + 1
    view = ViewConfig(n_views=2)
    parts = [crops] + [strong_views(crops, view, (seed, c))[:, 1] for c in range(1, k)]
    return (np.concatenate(parts), np.concatenate([index + c * n_tracks for c in range(k)]),
            np.concatenate([cannot + c * n_tracks for c in range(k)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("movies", nargs="+", type=Path)
    ap.add_argument("--model", required=True, help="the recognizer's ONNX file (w600k_mbf.onnx)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--save", type=Path, help="write the track labels per title as JSON")
    ap.add_argument("--labels", type=Path, help="compare with labels saved by --save")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = ap.parse_args()
    cfg = MethodConfig(finetune=FinetuneConfig(device=args.device), serfiq=SerFiqConfig(device=args.device))
    device = resolve_device(cfg.finetune)
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}", flush=True)
    backbone = load_backbone(str(args.model))
    saved = json.loads(args.labels.read_text()) if args.labels else {}
    out = {}
    for movie in args.movies:
        crops, index, cannot = title_inputs(movie, cfg)
        if args.scale > 1:
            crops, index, cannot = tiled(crops, index, cannot, args.scale, args.seed)
        times = {}
        t0 = time.perf_counter()
        bank = bank_for(backbone, crops, cfg, args.seed)
        times["bank"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ck = adapt(bank, index, cfg, args.seed, cannot_link=cannot)
        times["adapt"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = cluster(bank, ck.state, index, cfg, cannot_link=cannot, matches=ck.matches)
        times["cluster"] = time.perf_counter() - t0
        n_tracks = int(index.max()) + 1
        total = sum(times.values())
        line = " ".join(f"{k} {v:.1f} s" for k, v in times.items())
        n_clusters = len(np.unique(res.labels[res.labels >= 0]))
        print(f"{movie.name}: {n_tracks} tracks, {len(index)} faces, {n_clusters} clusters, "
              f"{len(ck.history)} rounds | {line} | total {total:.1f} s, "
              f"{1000 * total / n_tracks:.0f} s per 1,000 tracks", flush=True)
        out[movie.name] = res.labels.tolist()
        if movie.name in saved:
            other = np.asarray(saved[movie.name])
            print(f"  against the saved partition: ARI {ari(other, res.labels):.3f}, "
                  f"same: {bool(ari(other, res.labels) == 1.0)}", flush=True)
    if args.save:
        args.save.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
