"""People across titles: a composed "series", its identities scored against the truth.

Composes ``--episodes`` episodes (default 5) of one series from the dev stills with
``../shared/tools/compose_episode.py`` (one shot per photo; ``--hard`` sets ``HARD=1`` for the
tool's degradations), each with its own seed and its own photos of one pool of people:

    leads      4 people (2 of celebs_hb6, 2 of celebs_du5) in every episode, 6 photos each,
               no photo used twice in the series
    recurring  6 guests of the guest pools (deepface ``identities.csv``, dlib_johns,
               face_recognition_knn/train), each in 2-3 episodes, one photo per episode
    one-off    4 other guests per episode, one or two photos each

ingests them as one library with ``vcn ingest LIB --out OUT --method hac`` (``--method vcn`` for
the default; the ``ingest-library`` flow links the titles' clusters into library identities as
its last step), and scores the identities over all episodes at once: each labelled face of an
episode is matched to a predicted track (:func:`vcn.evaluation.metrics.match_faces`), its prediction is
the identity of its cluster, its truth the person's name. Printed beside it: the per-title
clusters taken as they are (no linking) and linking by plain HAC on the cluster means at cosine
0.6 (clusters of one title may merge there). Figures: identity-level WCP, B-cubed F, identity
count (against the true count).

    .venv/bin/python -m benchmarks.series [--episodes 5] [--seed 1] [--hard] [--method hac]
        [--cache DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from benchmarks import episode, protocol

ROOT = Path(__file__).resolve().parents[1]


def draw_series(episodes: int, seed: int) -> list[list[tuple[str, str]]]:
    """(photo, identity) lists of each episode of one series (see the module docstring)."""
    rng = random.Random(f"series:{seed}")
    hb6, du5 = (protocol.people(p) for p in protocol.LEAD_POOLS)
    guests: dict[str, list[str]] = {}
    for pool in protocol.GUEST_POOLS:
        for ident, paths in protocol.people(pool).items():
            guests.setdefault(ident, []).extend(paths)
    leads = {i: rng.sample(hb6[i], len(hb6[i])) for i in rng.sample(sorted(hb6), 2)}
    leads |= {i: rng.sample(du5[i], len(du5[i])) for i in rng.sample(sorted(du5), 2)}
    multi = sorted(i for i, p in guests.items() if len(p) >= 2)
    recurring = rng.sample(multi, 6)
    others = [i for i in sorted(guests) if i not in recurring]
    rng.shuffle(others)
    plan: list[list[tuple[str, str]]] = [[] for _ in range(episodes)]
    for ident, photos in leads.items():
        for e in range(episodes):
            plan[e] += [(p, ident) for p in photos[6 * e: 6 * e + 6]]
    for ident in recurring:
        photos = rng.sample(guests[ident], len(guests[ident]))
        eps = rng.sample(range(episodes), min(episodes, rng.randint(2, 3)))
        for k, e in enumerate(eps):
            plan[e].append((photos[k % len(photos)], ident))
    for e in range(episodes):
        for ident in others[4 * e: 4 * e + 4]:
            some = rng.sample(guests[ident], min(len(guests[ident]), rng.randint(1, 2)))
            plan[e] += [(p, ident) for p in some]
    return plan


def compose_series(plan: list[list[tuple[str, str]]], seed: int, hard: bool, lib: Path) -> list[Path]:
    """One video and faces CSV per episode under ``lib`` (kept when already there)."""
    lib.mkdir(parents=True, exist_ok=True)
    videos = []
    env = {**os.environ, "HARD": "1" if hard else "0"}
    for e, items in enumerate(plan):
        video = lib / f"episode-{e + 1:02d}.mp4"
        truth = lib / f"episode-{e + 1:02d}.faces.csv"
        if not (video.exists() and truth.exists()):
            spec = lib / f".episode-{e + 1:02d}.photos.csv"
            with open(spec, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["file", "name"])
                w.writerows(items)
            subprocess.run([sys.executable, str(episode.TOOL), str(video), str(truth), str(seed * 100 + e),
                            str(spec)], check=True, env=env, stdout=subprocess.DEVNULL)
        videos.append(video)
    return videos


def ingest(lib: Path, out: Path, method: str, workers: int) -> float:
    """``vcn ingest LIB --out OUT --method M`` (the real CLI, in a subprocess); its wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vcn.flows.cli", "ingest", str(lib), "--out", str(out), "--method",
                    method, "--workers", str(workers), "--concurrency", "1"], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def labelled_faces(lib: Path, out: Path) -> pd.DataFrame:
    """Every labelled, scored face of every episode matched to a clustered track: ``identity``
    (truth), ``movie_id``, ``cluster_id``."""
    from vcn.evaluation.metrics import UNKNOWN, match_faces
    from vcn.storage.identities import published_titles

    rows = []
    for title in published_titles(out):
        truth = lib / Path(title.name).with_suffix(".faces.csv").name
        gt = pd.read_csv(truth)
        cols = ["frame_idx", "x1", "y1", "x2", "y2", "track_id", "cluster_id"]
        pred = pq.read_table(out / title.movie_id / "faces.parquet", columns=cols).to_pandas()
        m = match_faces(gt, pred)
        m = m[m["scored"] & m["matched"] & (m["cluster_id"] != UNKNOWN)]
        rows.append(pd.DataFrame({"identity": m["identity"].to_numpy(), "movie_id": title.movie_id,
                                  "cluster_id": m["cluster_id"].to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def hac_links(out: Path) -> dict[tuple[str, str], str]:
    """Plain HAC (average linkage, cosine 0.6) on every cluster's generic mean, all titles at once."""
    from vcn.library.identities import ClusterSummaries
    from vcn.method.clustering import hac
    from vcn.storage.identities import published_titles
    from vcn.tasks.identities import title_summaries

    s = ClusterSummaries.concat([title_summaries(str(out), t) for t in published_titles(out)])
    labels = hac(s.mean, threshold=0.6)
    return {(m, c): f"hac_{k}" for m, c, k in zip(s.movie_id, s.cluster_id, labels, strict=True)}


def score(faces: pd.DataFrame, label: pd.Series) -> dict:
    from vcn.evaluation.metrics import bcubed, weighted_cluster_purity

    true, pred = faces["identity"].to_numpy(), label.to_numpy()
    return {"wcp": weighted_cluster_purity(true, pred), "bcubed_f": bcubed(true, pred)[2],
            "identities": int(pd.unique(pred).size), "true": int(pd.unique(true).size)}


def synthetic_scale(n_clusters: int, per_title: int = 20, seed: int = 0) -> list[dict]:
    """Seconds to link ``n_clusters`` synthetic clusters (titles of ``per_title``, a cast of
    people recurring across titles), title by title, at a quarter, half and all of them."""
    from vcn.library.identities import link_library, summarize_title

    rng = np.random.default_rng(seed)
    people = max(per_title, n_clusters // 10)
    centres = rng.normal(size=(people, 512))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    titles = []
    for t in range(n_clusters // per_title):
        who = rng.choice(people, per_title, replace=False)
        cl = np.repeat(np.arange(per_title), 3).astype(str).astype(object)
        x = centres[np.repeat(who, 3)] + rng.normal(0, 0.036, (per_title * 3, 512))
        titles.append(summarize_title(f"t{t:05d}", cl, x, np.full(len(cl), 10), np.zeros(len(cl)),
                                      np.ones(len(cl)), np.ones(len(cl))))
    rows = []
    for frac in (4, 2, 1):
        part = titles[: len(titles) // frac]
        t0 = time.perf_counter()
        _, links = link_library(part)
        rows.append({"clusters": sum(len(t) for t in part), "titles": len(part),
                     "seconds": time.perf_counter() - t0, "identities": len(set(links.identity.tolist())),
                     "people": people})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hard", action="store_true", help="HARD=1: the composer's degradations")
    ap.add_argument("--method", default="hac", choices=["hac", "vcn"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=ROOT / ".bench" / "series")
    ap.add_argument("--out", type=Path, help="ingestion output (default: under --cache)")
    ap.add_argument("--scale", type=int, default=10_000,
                    help="also time linking this many synthetic clusters (0: skip)")
    args = ap.parse_args()
    name = f"series-{'hard' if args.hard else 'clean'}-s{args.seed}-e{args.episodes}"
    lib = args.cache / name
    out = args.out or args.cache / f"{name}-out-{args.method}"
    t0 = time.perf_counter()
    compose_series(draw_series(args.episodes, args.seed), args.seed, args.hard, lib)
    print(f"{name}: {args.episodes} episodes composed in {time.perf_counter() - t0:.0f} s under {lib}")
    wall = ingest(lib, out, args.method, args.workers)
    print(f"vcn ingest --method {args.method}: {wall:.0f} s")
    faces = labelled_faces(lib, out)
    members = pq.read_table(out / "library" / "members.parquet").to_pandas()
    ident = {(m, c): i for m, c, i in zip(members["movie_id"], members["cluster_id"], members["identity_id"],
                                          strict=True)}
    keys = list(zip(faces["movie_id"], faces["cluster_id"], strict=True))
    hac_of = hac_links(out)
    table = {
        "per-title clusters (no linking)": score(faces, faces["movie_id"] + "/" + faces["cluster_id"]),
        "HAC 0.6 on cluster means": score(faces, pd.Series([hac_of[k] for k in keys])),
        "vcn identities": score(faces, pd.Series([ident[k] for k in keys])),
    }
    print(f"\n{len(faces)} labelled faces of {faces['identity'].nunique()} people, {args.episodes} episodes")
    print(f"{'linking':<34}{'WCP':>7}{'B3 F':>7}{'identities':>12}{'true':>6}")
    for k, r in table.items():
        print(f"{k:<34}{r['wcp']:7.3f}{r['bcubed_f']:7.3f}{r['identities']:12d}{r['true']:6d}")
    thr = members["threshold"].iloc[-1] if len(members) else float("nan")
    print(f"library reach (the link threshold) after the last title: {thr:.3f}; "
          f"identities in the library: {members['identity_id'].nunique()} of {len(members)} clusters")
    result = {"name": name, "method": args.method, "ingest_s": wall, "table": table}
    if args.scale:
        rows = synthetic_scale(args.scale)
        print(f"\nlinking synthetic clusters title by title (20 per title, {rows[-1]['people']} people):")
        for r in rows:
            print(f"  {r['clusters']:6d} clusters, {r['titles']:4d} titles: {r['seconds']:6.2f} s, "
                  f"{r['identities']} identities")
        a, b = rows[0], rows[-1]
        exp = np.log(b["seconds"] / a["seconds"]) / np.log(b["clusters"] / a["clusters"])
        print(f"  growth exponent in clusters: {exp:.2f}")
        result["scale"] = rows
    (out / "library" / "series.json").write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
