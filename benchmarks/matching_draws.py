"""How much stage 3's positives depend on the draw of matching views, with one draw and voted.

    .venv/bin/python -m benchmarks.matching_draws [--sets hard9 hard5] [--seeds 0 1 2 3]
        [--draws 3]

For each labelled set (names as in ``benchmarks.ablation``; stage 1 runs once through the real
flow or is reused from ``--out``) and each seed, the generic model's first matching pass of
:func:`vcn.method.videoclusternet.adapt`
(:func:`vcn.method.videoclusternet.coarse_positives`: grown coarse matching on each of
``--draws`` draws of views, draw 0 from the seed and draw ``d`` from ``(seed, d)``, then the
majority vote, the default) runs once. Per seed it prints, for the first draw alone (what
``match_draws=1`` gives), for the vote, and for each draw: the positive pairs, how many join two
people (each track's identity is the majority ground-truth identity of its faces) and the
groups. The spread over seeds is the figure: a draw decides whether a wide pair of one person
matches in the first round, and with it how wide a group match may be (docs/method.md,
departure 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.ablation import dataset, stage1
from benchmarks.confusions import track_identities


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["hard9", "hard5"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--out", default=".bench/ablation-out")
    ap.add_argument("--cache", default=".bench")
    args = ap.parse_args()

    from vcn.faces.backbone import load_backbone
    from vcn.faces.detection import default_model_dir, find_models
    from vcn.method.constraints import cooccurring_pairs
    from vcn.method.grouping import match_groups
    from vcn.method.matching import sample_rows
    from vcn.method.videoclusternet import MethodConfig, bank_for, coarse_positives
    from vcn.storage.crops import read_crops

    cfg = MethodConfig(match_draws=args.draws)
    backbone = load_backbone(find_models(default_model_dir()).recognizer)
    for name in args.sets:
        video, csv = dataset(name, Path(args.cache))
        movie = stage1(video, Path(args.out))
        faces = pq.read_table(movie / "faces.parquet").to_pandas()
        tracks = pq.read_table(movie / "tracks.parquet").to_pandas()
        index_of = {t: i for i, t in enumerate(tracks["track_id"])}
        face_track = faces["track_id"].map(index_of).to_numpy()
        who = track_identities(faces, csv)
        ident = np.array([who.get(t, f"?{i}") for i, t in enumerate(tracks["track_id"])])
        cannot = cooccurring_pairs(faces["frame_idx"].to_numpy(), face_track)
        sample = sample_rows(face_track, cfg.faces_per_track)
        crops = read_crops(movie / "crops", faces["face_id"].to_numpy()[sample])
        n = len(tracks)

        def describe(pairs: np.ndarray, ident: np.ndarray = ident, n: int = n) -> str:
            wrong = int(sum(ident[a] != ident[b] for a, b in pairs))
            groups = len(np.unique(match_groups(pairs, n)))
            return f"{len(pairs):>4} pairs {wrong:>3} wrong {groups:>4} groups"

        print(f"\n== {name}: {n} tracks, {len(set(ident))} people, draws {cfg.match_draws}, "
              f"quorum {cfg.quorum}")
        for seed in args.seeds:
            bank = bank_for(backbone, crops, cfg, seed)
            voted, found = coarse_positives(bank, None, face_track[sample], cfg, cannot)
            draws = "  ".join(describe(f) for f in found)
            print(f"seed {seed}: one draw {describe(found[0])} | voted {describe(voted)} | "
                  f"each draw: {draws}", flush=True)


if __name__ == "__main__":
    main()
