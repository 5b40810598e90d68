"""The evaluation protocol: composed episodes of three shapes, clean and HARD, two seed splits.

Shapes (photo subsets drawn per seed; episodes made by ``benchmarks.episode``, about 30% of the
shots with two or three people):

    guests   every identity of the guest pools (deepface ``identities.csv``, dlib_johns,
             face_recognition_knn/train), 2-5 photos each
    leads    3 people of celebs_hb6 and 3 of celebs_du5, 30-55 photos each (all when fewer)
    mix      3-4 leads of the celebs_* pools with 20-30 photos each, and 12-16 guests with 1-2

Splits: ``tuning`` (seeds 1, 2) for choices; ``validation`` (seeds 101, 102) to check them. A set
is named ``<shape>-<hard|clean>-s<seed>``, e.g. ``leads-hard-s101``; ``--sets`` also takes the
dev clips (``hamilton``, ``pedestrians``) and ``benchmarks.ablation``'s ``hard<N>``/``easy<N>``.

Stage 1 (tracks) runs once per set through the real flow and is cached
(``benchmarks.ablation.stage1``); the rows are ``benchmarks.ablation.evaluate_rows``'s on those
tracks: the anchors (``ANCHORS``: HAC at 0.6, DBSCAN per face, FINCH levels 1 and 2) and the
default, whatever the method is (any row that is not an anchor). The goal per set:

    WCP >= 0.98
    B-cubed F >= best F of the anchors with WCP >= 0.98, minus 0.01 (no bound when none has)
    cluster ratio <= max(1.5, 1.1 x lowest ratio of the anchors with WCP >= 0.98)

    .venv/bin/python -m benchmarks.protocol --split tuning [--shapes guests leads mix]
        [--hard | --clean | --both] [--sets NAME ...] [--seed S] [--anchors-only]
        [--cache DIR] [--out DIR] [--stage1-config JSON]

The table goes to ``--out`` as ``protocol.json`` (sets, rows, goal margins, composition and
stage-1 seconds) and ``protocol.csv`` (one line per set and row).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import pandas as pd

from benchmarks import ablation, episode

DEV = ablation.DEV
GUEST_POOLS = [DEV / "stills/deepface/identities.csv", DEV / "stills/dlib_johns",
               DEV / "stills/face_recognition_knn/train"]
LEAD_POOLS = [DEV / "stills/celebs_hb6", DEV / "stills/celebs_du5"]
SHAPES = ("guests", "leads", "mix")
SPLITS = {"tuning": (1, 2), "validation": (101, 102)}
WCP_GOAL = 0.98
NAME = re.compile(r"(guests|leads|mix)-(hard|clean)-s(\d+)")


def people(spec: Path) -> dict[str, list[str]]:
    """Photo paths per identity of one still pool (a folder of people or an identities CSV)."""
    out: dict[str, list[str]] = {}
    for path, ident in episode.tool().photos(str(spec)):
        out.setdefault(ident, []).append(path)
    return out


def _some(rng: random.Random, paths: list[str], lo: int, hi: int) -> list[str]:
    return rng.sample(paths, min(len(paths), rng.randint(lo, hi)))


def draw(shape: str, seed: int) -> list[tuple[str, str]]:
    """The (photo, identity) list of one shape and seed; the same for the clean and HARD sets."""
    rng = random.Random(f"{shape}:{seed}")
    guests: dict[str, list[str]] = {}
    for pool in GUEST_POOLS:
        for ident, paths in people(pool).items():
            guests.setdefault(ident, []).extend(paths)
    hb6, du5 = (people(p) for p in LEAD_POOLS)
    chosen: list[tuple[str, list[str]]] = []
    if shape == "guests":
        chosen = [(i, _some(rng, p, 2, 5)) for i, p in sorted(guests.items())]
    elif shape == "leads":
        for pool in (hb6, du5):
            for ident in rng.sample(sorted(pool), 3):
                chosen.append((ident, _some(rng, pool[ident], 30, 55)))
    elif shape == "mix":
        leads = {**hb6, **du5}
        for ident in rng.sample(sorted(leads), rng.randint(3, 4)):
            chosen.append((ident, _some(rng, leads[ident], 20, 30)))
        names = {i for i, _ in chosen}
        rest = sorted(i for i in guests if i not in names)
        for ident in rng.sample(rest, rng.randint(12, 16)):
            chosen.append((ident, _some(rng, guests[ident], 1, 2)))
    else:
        raise SystemExit(f"unknown shape {shape!r}: {', '.join(SHAPES)}")
    return [(path, ident) for ident, paths in chosen for path in paths]


def split_of(name: str) -> str:
    found = NAME.fullmatch(name)
    if found is None:
        return "dev"
    seed = int(found[3])
    return next((s for s, seeds in SPLITS.items() if seed in seeds), "other")


def dataset(name: str, cache: Path) -> tuple[Path, Path, dict]:
    """(video, faces.csv, facts) of a named set, composing a protocol episode on first use; the
    facts (shots, frames, identities, composition seconds) are kept beside the video."""
    found = NAME.fullmatch(name)
    if found is None:
        video, csv = ablation.dataset(name, cache)
        return video, csv, {}
    shape, hard, seed = found[1], found[2] == "hard", int(found[3])
    video, csv, facts_file = cache / f"{name}.mp4", cache / f"{name}.faces.csv", cache / f"{name}.json"
    if not video.exists():
        t0 = time.perf_counter()
        facts = episode.compose(draw(shape, seed), video, csv, seed, hard=hard)
        facts["compose_s"] = round(time.perf_counter() - t0, 1)
        facts_file.write_text(json.dumps(facts))
    return video, csv, json.loads(facts_file.read_text()) if facts_file.exists() else {}


def goal(rows: list[dict]) -> dict:
    """The bounds the default must meet on one set, and its margins (>= 0: met)."""
    anchors = [r for r in rows if r["row"] in ablation.ANCHORS]
    pure = [r for r in anchors if r["wcp"] >= WCP_GOAL]
    f_bound = max(r["bcubed_f"] for r in pure) - 0.01 if pure else None
    ratio_bound = max(1.5, 1.1 * min(r["ratio"] for r in pure)) if pure else 1.5
    out = {"f_bound": f_bound, "ratio_bound": ratio_bound, "default": None}
    default = next((r for r in rows if r["row"] not in ablation.ANCHORS), None)
    if default is not None:
        margins = {"wcp": default["wcp"] - WCP_GOAL,
                   "f": default["bcubed_f"] - f_bound if f_bound is not None else 0.0,
                   "ratio": ratio_bound - default["ratio"]}
        out.update(default=default["row"], margins=margins, passed=all(m >= 0 for m in margins.values()))
    return out


def _line(r: dict) -> str:
    return (f"{r['row']:<24} {r['wcp']:>6.3f} {r['bcubed_f']:>6.3f} {r['clusters']:>5} / {r['true']:<4} "
            f"{r['ratio']:>6.2f} {r['seconds']:>7.1f}")


def report_set(s: dict) -> None:
    facts = s["facts"]
    extra = (f" {facts['shots']} shots ({facts['multi_shots']} multi), {facts['frames']} frames, "
             f"{facts['identities']} identities" if facts else "")
    print(f"\n== {s['name']} ({s['split']}){extra}")
    print(f"{'row':<24} {'WCP':>6} {'B3-F':>6} {'clusters / true':>12} {'ratio':>6} {'sec':>7}")
    for r in s["rows"]:
        print(_line(r))
    g = s["goal"]
    bound = f"F >= {g['f_bound']:.3f}" if g["f_bound"] is not None else "F: no anchor at WCP >= 0.98"
    print(f"goal: WCP >= {WCP_GOAL}, {bound}, ratio <= {g['ratio_bound']:.2f}")
    if g["default"] is not None:
        m = g["margins"]
        print(f"{'PASS' if g['passed'] else 'FAIL'} {g['default']}: margins WCP {m['wcp']:+.3f}, "
              f"F {m['f']:+.3f}, ratio {m['ratio']:+.2f}")


def summary(sets: list[dict]) -> None:
    """Per shape and split: each row's mean and worst case (lowest WCP and F, highest ratio)."""
    flat = pd.DataFrame([{**r, "shape": s["shape"], "split": s["split"],
                          "passed": s["goal"].get("passed")} for s in sets for r in s["rows"]])
    if flat.empty:
        return
    flat["default"] = ~flat["row"].isin(ablation.ANCHORS)
    print("\n== per shape and split: mean / worst")
    print(f"{'shape':<8} {'split':<10} {'row':<24} {'sets':>4} {'WCP':>13} {'B3-F':>13} {'ratio':>11} "
          f"{'pass':>5}")
    for (shape, split), g in flat.groupby(["shape", "split"], sort=False):
        for row, r in sorted(g.groupby("row", sort=False), key=lambda kv: not kv[1]["default"].iloc[0]):
            passed = f"{int(r['passed'].sum())}/{len(r)}" if r["default"].iloc[0] else ""
            print(f"{shape:<8} {split:<10} {row:<24} {len(r):>4} {r.wcp.mean():>6.3f}/{r.wcp.min():<6.3f} "
                  f"{r.bcubed_f.mean():>6.3f}/{r.bcubed_f.min():<6.3f} "
                  f"{r.ratio.mean():>5.2f}/{r.ratio.max():<5.2f} {passed:>5}")


def write(sets: list[dict], out: Path, args: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.json").write_text(json.dumps({"args": args, "sets": sets}, indent=1, default=float))
    lines = [{"set": s["name"], "shape": s["shape"], "condition": s["condition"], "split": s["split"],
              **r, "default": r["row"] not in ablation.ANCHORS,
              "passed": s["goal"].get("passed") if r["row"] not in ablation.ANCHORS else None}
             for s in sets for r in s["rows"]]
    pd.DataFrame(lines).to_csv(out / "protocol.csv", index=False)


def set_names(split: str, shapes: list[str], conditions: list[str]) -> list[str]:
    return [f"{shape}-{c}-s{seed}" for shape in shapes for c in conditions for seed in SPLITS[split]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=sorted(SPLITS), default="tuning")
    ap.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    cond = ap.add_mutually_exclusive_group()
    cond.add_argument("--hard", dest="conditions", action="store_const", const=["hard"])
    cond.add_argument("--clean", dest="conditions", action="store_const", const=["clean"])
    cond.add_argument("--both", dest="conditions", action="store_const", const=["clean", "hard"])
    ap.add_argument("--sets", nargs="+", help="explicit set names (instead of --split/--shapes)")
    ap.add_argument("--seed", type=int, default=0, help="the method's seed (views, finetune)")
    ap.add_argument("--anchors-only", action="store_true", help="the anchors only (no finetune)")
    ap.add_argument("--cache", default=".bench/proto", help="episodes and stage-1 outputs")
    ap.add_argument("--out", default=".bench/proto/table", help="protocol.json and protocol.csv")
    ap.add_argument("--stage1-config", type=json.loads, default=None,
                    help="JSON config of stage 1, e.g. the second look: "
                         "'{\"ingest\": {\"detection\": {\"zoom_floor\": 0.1}}}' (with its own --cache)")
    args = ap.parse_args()
    from vcn.media.video import content_id

    names = args.sets or set_names(args.split, args.shapes, args.conditions or ["clean", "hard"])
    cache = Path(args.cache)
    sets = []
    for name in names:
        video, csv, facts = dataset(name, cache)
        fresh = not (cache / "stage1" / content_id(str(video)) / "tracks.parquet").exists()
        t0 = time.perf_counter()
        movie = ablation.stage1(video, cache / "stage1", args.stage1_config)
        if facts and fresh:
            facts["stage1_s"] = round(time.perf_counter() - t0, 1)
            (cache / f"{name}.json").write_text(json.dumps(facts))
        rows = ablation.evaluate_rows(movie, csv, args.seed, anchors_only=args.anchors_only,
                                      default_only=not args.anchors_only)
        found = NAME.fullmatch(name)
        s = {"name": name, "shape": found[1] if found else "dev",
             "condition": found[2] if found else "dev", "split": split_of(name), "video": str(video),
             "facts": facts, "rows": rows, "goal": goal(rows)}
        sets.append(s)
        report_set(s)
        write(sets, Path(args.out), vars(args))
        sys.stdout.flush()
    summary(sets)


if __name__ == "__main__":
    main()
