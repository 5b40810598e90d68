"""Time and peak memory of track clustering at movie scale (synthetic, seeded).

Default: 5,000 tracks x ~20 faces (~100k faces) of 250 identities with Zipf-like sizes (one lead
holds ~15% of the tracks), 128-d blobs on the sphere. Prints, per method, the seconds of every
round, the total, and the peak Python-heap memory of the call (tracemalloc; numpy allocations are
traced) plus the process's max RSS. Run:

    .venv/bin/python benchmarks/clustering_scale.py [--tracks 5000] [--faces 20]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np

from vcn.baselines import finch
from vcn.method.clustering import hac, parameter_free
from vcn.method.matching import coarse_matches
from vcn.method.set_distance import CosineDistance, embedding_track_stats


def synthetic(rng: np.random.Generator, n_tracks: int, faces: int, dim: int, n_ids: int):
    """Embeddings (N, dim) float32, track_index (N,), identity per track (T,)."""
    weights = 1.0 / np.arange(1, n_ids + 1) ** 0.8
    ident = rng.choice(n_ids, size=n_tracks, p=weights / weights.sum())
    centres = rng.normal(size=(n_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    counts = np.clip(rng.poisson(faces, n_tracks), 2, None)
    index = np.repeat(np.arange(n_tracks), counts)
    track_centre = centres[ident] + 0.1 * rng.normal(size=(n_tracks, dim)) / np.sqrt(dim)
    x = track_centre[index] + 0.5 * rng.normal(size=(len(index), dim)) / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), index, ident


def measure(name: str, fn):
    tracemalloc.start()
    started = time.perf_counter()
    out = fn()
    total = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{name:34s} total {total:7.2f} s   peak traced {peak / 2**20:7.0f} MiB")
    return out


def purity(labels: np.ndarray, ident: np.ndarray) -> str:
    pairs, counts = np.unique(np.stack([labels, ident], 1), axis=0, return_counts=True)
    best = np.zeros(labels.max() + 1)
    np.maximum.at(best, pairs[:, 0], counts)
    n_ids = len(np.unique(ident))
    return f"{labels.max() + 1} clusters for {n_ids} identities, purity {best.sum() / len(labels):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=5000)
    parser.add_argument("--faces", type=int, default=20)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--ids", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-matching", action="store_true", help="skip coarse matching (512-d)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    x, index, ident = synthetic(rng, args.tracks, args.faces, args.dim, args.ids)
    print(f"{args.tracks} tracks, {len(x)} faces, {args.ids} identities, dim={args.dim}")
    result = measure("parameter-free, cosine distance",
                     lambda: parameter_free(embedding_track_stats(x, index, "cosine"), CosineDistance()))
    for i, r in enumerate(result.rounds):
        print(f"    round {i + 1}: {r.clusters:5d} clusters, {r.links:6d} links, {r.seconds:6.2f} s")
    print("    " + purity(result.labels, ident))
    means = np.zeros((args.tracks, x.shape[1]))
    np.add.at(means, index, x)
    print("    hac 0.6: " + purity(measure("hac (average, cosine 0.6)", lambda: hac(means, 0.6)), ident))
    print("    finch level 2: " + purity(measure("finch level 2", lambda: finch(means, 2)), ident))
    if not args.skip_matching:
        rng512 = np.random.default_rng(args.seed)
        x512, index512, _ = synthetic(rng512, args.tracks, args.faces, 512, args.ids)
        pairs = measure("coarse matching (512-d)", lambda: coarse_matches(x512, index512))
        print(f"    {len(pairs)} matched pairs")
    print(f"process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
