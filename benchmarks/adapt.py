"""Cost of stages 2 and 3 together: ``vcn.method.adapt`` (coarse matching alternating with the
finetune), the call the ``finetune`` task makes.

    .venv/bin/python -m benchmarks.adapt [--tracks 250] [--faces 8] [--match-draws N]
        [--max-rounds N] [--seed 0] [--threads N] [--matching-only]

Tracks are synthesised as in ``benchmarks/finetune.py`` (each track ``--faces`` differently
flipped/rotated/tinted copies of one of the 45 real faces of tests/data/h5_faces.jpg; tracks
t and t + 45 share a photo, so matching finds pairs). Prints the wall and CPU time of ``adapt``
with the default ``MethodConfig`` (``--match-draws`` and ``--max-rounds`` aside), its rounds and
matches, and the peak resident memory it adds over its inputs, each also per 1,000 tracks, and
what holding every matching view at once would have cost instead (6 views x 37.6 KB per face,
per draw). ``--matching-only``: one matching pass's embeddings under the generic model instead,
drawn and embedded a block of faces at a time (as ``adapt`` does) and then, for comparison,
with every view drawn at once, with the peak memory each adds. CPU time is printed besides wall
time because other programs sharing the cores inflate the latter.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from benchmarks.finetune import PeakRss, synthetic_tracks
from vcn.backbone import load_backbone
from vcn.detection import default_model_dir, find_models
from vcn.method import MethodConfig, adapt, matching_embeddings, view_embeddings
from vcn.views import strong_views


def matching_memory(backbone, crops, cfg: MethodConfig, seed: int) -> None:
    """Peak RSS growth of one matching pass's embeddings, block by block, then all at once.

    Absolute figures: the blocks' peak does not grow with the tracks, so it is not scaled."""

    def at_once():
        return view_embeddings(backbone, None, strong_views(crops, cfg.views, seed), cfg)

    runs = (("block by block", lambda: matching_embeddings(backbone, None, crops, cfg, seed)),
            ("all views at once", at_once))
    ref = None
    for name, fn in runs:  # the smaller first: RSS the allocator keeps would inflate the second
        rss0 = PeakRss.current()
        with PeakRss() as rss:
            w = time.perf_counter()
            emb = fn()
            wall = time.perf_counter() - w
        same = "" if ref is None else f", embeddings equal to the blocks': {bool((emb == ref).all())}"
        ref = emb if ref is None else ref
        print(f"{name}: wall {wall:.1f} s, peak RSS growth {rss.peak - rss0:.0f} MiB{same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=250)
    ap.add_argument("--faces", type=int, default=8, help="faces per track (MethodConfig samples 8)")
    ap.add_argument("--match-draws", type=int, default=MethodConfig().match_draws,
                    help="draws of matching views voted over (default: MethodConfig's)")
    ap.add_argument("--max-rounds", type=int, default=0, help="cap on matching rounds (0: the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--matching-only", action="store_true", help="memory of one matching pass only")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    crops, track, _ = synthetic_tracks(args.tracks, args.faces, args.seed)
    cfg = MethodConfig(match_draws=args.match_draws)
    if args.max_rounds:
        cfg = dataclasses.replace(cfg, matching=dataclasses.replace(cfg.matching, max_rounds=args.max_rounds))
    backbone = load_backbone(find_models(default_model_dir()).recognizer)
    print(f"{len(crops)} crops, {args.tracks} tracks, match_draws {cfg.match_draws}, "
          f"max_rounds {cfg.matching.max_rounds}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    if args.matching_only:
        matching_memory(backbone, crops, cfg, args.seed)
        return

    rss0 = PeakRss.current()
    with PeakRss() as rss:
        w, c = time.perf_counter(), time.process_time()
        ck = adapt(backbone, crops, track, cfg, seed=args.seed)
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    k = 1000.0 / args.tracks
    for h in ck.history:
        print(f"  round {h['round']}: {h['matches']} matches -> {h['next_matches']} next, "
              f"{h['steps']} finetune steps, final loss {h['final_loss'] or float('nan'):.3f}")
    print(f"adapt: wall {wall:.1f} s, cpu {cpu:.1f} s  ->  per 1,000 tracks: wall {wall * k:.0f} s, "
          f"cpu {cpu * k:.0f} s")
    held = len(crops) * cfg.views.n_views * crops[0].nbytes / 2**20
    print(f"  peak RSS {rss.peak:.0f} MiB (inputs and model before {rss0:.0f} MiB; growth "
          f"{rss.peak - rss0:.0f} MiB, {(rss.peak - rss0) * k:.0f} MiB per 1,000 tracks); every "
          f"matching view held at once would be {held:.0f} MiB per draw ({held * k:.0f} per 1,000 tracks)")


if __name__ == "__main__":
    main()
