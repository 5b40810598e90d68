"""Cost against video length: seconds and peak memory per stage of the default, and their growth.

For each length (``--minutes``, 5, 15 and 30 by default) a 1280x720 25 fps episode is composed
from the dev stills with ``benchmarks.episode`` (about 30% of the shots with two or three people;
``--hard``: the HARD degradations) and run through the real per-movie flow with the default
config, as ``vcn run`` runs it (a private Prefect server, a Dask LocalCluster of ``--workers``
processes, the finetune and clustering on all local cores), in a fresh output folder.

The cast recurs like a film's: the 11 people of the lead pools (``celebs_hb6``, ``celebs_du5``)
hold about 80% of the photos, drawn with replacement with Zipf weights (the first lead about a
third, the last about 3%), so that leads come back throughout; the guests of the other pools take
about 20%, one or two photos each, every guest once the episode is long enough. A photo drawn twice
makes two shots with their own motion and look. Episodes are cached under ``--cache`` by length, seed and
condition; one shot holds 20-60 frames, so a minute is about 37 shots and 52 photos.

Per run it prints frames, composed shots, tracks and faces, then seconds per stage from the
title's ``manifest.json``:

    prepare    the flow's start to the first chunk's start (probe, content id, manifest)
    ingest     the first chunk's start to the end of assembly (chunks run in parallel; a chunk
               starts at its file's ``written_at`` less its summed phase timings)
    chunks     the chunks' phase seconds summed over chunks (the stage's CPU-side work)
    assemble   the ``tracks`` stage record (stitching chunks into faces, tracks and shots)
    finetune   the ``finetune`` stage record, and two of its parts: ``bank`` (the generic
               model's view bank, :mod:`vcn.method.view_bank`) and ``adapt`` (finetune rounds
               and matching, :func:`vcn.method.videoclusternet.adapt`)
    cluster    the ``clusters`` stage record
    report     the end of clustering to the flow's return (report.html and its artifact)
    total      the flow call, wall clock

and the peak RSS of every process (the flow process, which also holds the Dask scheduler and
nannies; each Dask worker; the Prefect server), sampled every 0.5 s in a thread, overall and per
stage window (the largest worker, the largest process and the sum of all). Episodes are composed
in a child process first, so the flow process holds only the run.

With two or more lengths it fits, per stage, the growth exponent b of seconds ~ x^b by least
squares on logs, x being the tracks and the minutes, and projects a 2-hour film: the fitted line
at 120 minutes and the longest run scaled linearly. A stage whose exponent in tracks exceeds
``LINEAR_TOL`` is flagged as growing faster than linear. Peak memory is fitted against minutes:
the largest worker in the chunks window (the processes that decode, detect and embed) must stay
flat (exponent at most ``FLAT_TOL``), and the method stages' largest process, projected to 2
hours, must stay under the machine's memory.

    .venv/bin/python -m benchmarks.scale [--minutes 5 15 30] [--seed 1] [--hard] [--workers N]
        [--cache .bench/scale] [--out .bench/scale/scale.json] [--reuse]

``--reuse`` takes a length's finished run (its ``scale-run.json``) instead of running it again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks import episode, protocol

FILM_MINUTES = 120.0
MEAN_SHOT_FRAMES = 40  # episode shots hold 20-60 frames
PHOTOS_PER_SHOT = 1.39  # 70% one photo, 21% two, 9% three (episode.plan, multi=0.3)
GUEST_SHARE = 0.2
LINEAR_TOL = 1.15
FLAT_TOL = 0.15
SAMPLE_S = 0.5
STAGES = ("prepare", "ingest", "chunks", "assemble", "finetune", "bank", "adapt", "cluster", "report",
          "total")
WINDOWS = ("chunks", "assemble", "finetune", "cluster", "report")
GIB = 2**30


# --- composition -------------------------------------------------------------------------------

def episode_name(minutes: float, seed: int, hard: bool) -> str:
    return f"scale-{minutes:g}m-s{seed}-{'hard' if hard else 'clean'}"


def cast(minutes: float, seed: int) -> tuple[list[episode.Photo], dict[str, Any]]:
    """The loaded photos of an episode of about ``minutes`` (recurring leads, one-off guests),
    each appearance once in the list, and a summary of who appears how often."""
    rng = random.Random(f"scale:{minutes:g}:{seed}")
    target = round(minutes * 60 * episode.FPS / MEAN_SHOT_FRAMES * PHOTOS_PER_SHOT)
    guests: dict[str, list[str]] = {}
    for pool in protocol.GUEST_POOLS:
        for ident, paths in protocol.people(pool).items():
            guests.setdefault(ident, []).extend(paths)
    leads: dict[str, list[str]] = {}
    for pool in protocol.LEAD_POOLS:
        leads.update(protocol.people(pool))

    guest_items: list[tuple[str, str]] = []
    for ident in rng.sample(sorted(guests), len(guests)):
        if len(guest_items) >= GUEST_SHARE * target:
            break
        guest_items += [(p, ident) for p in protocol._some(rng, guests[ident], 1, 2)]
    photos = episode.load_photos(guest_items)

    order = rng.sample(sorted(leads), len(leads))
    draws = Counter(rng.choices(order, weights=[1 / (r + 1) for r in range(len(order))],
                                k=max(0, target - len(photos))))
    for ident in order:
        k = draws.get(ident, 0)
        if k == 0:
            continue
        paths = rng.sample(leads[ident], len(leads[ident]))[:k]
        usable = episode.load_photos([(p, ident) for p in paths])
        photos += [usable[i % len(usable)] for i in range(k)] if usable else []
    seen = Counter(p.identity for p in photos)
    return photos, {"photos": len(photos), "unique_photos": len({id(p) for p in photos}),
                    "leads": {i: seen[i] for i in order if seen[i]},
                    "guests": sum(1 for i in seen if i not in leads)}


def dataset(minutes: float, seed: int, hard: bool, cache: Path) -> tuple[Path, dict[str, Any]]:
    """(video, facts) of one length, composing it on first use; the facts are kept beside it."""
    name = episode_name(minutes, seed, hard)
    video, facts_file = cache / f"{name}.mp4", cache / f"{name}.json"
    if not (video.exists() and facts_file.exists()):
        t0 = time.perf_counter()
        photos, who = cast(minutes, seed)
        facts: dict[str, Any] = episode.compose_photos(photos, video, cache / f"{name}.faces.csv", seed,
                                                       hard=hard)
        facts.update(cast=who, compose_s=round(time.perf_counter() - t0, 1))
        facts_file.write_text(json.dumps(facts, indent=1))
    return video, json.loads(facts_file.read_text())


# --- memory ------------------------------------------------------------------------------------

class MemorySampler:
    """Samples the RSS of this process and all its descendants every ``SAMPLE_S`` in a thread."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _role(self, proc: psutil.Process) -> str:
        if proc.pid == os.getpid():
            return "flow"
        with contextlib.suppress(psutil.Error):
            cmd = " ".join(proc.cmdline())
            if "uvicorn" in cmd or "prefect" in cmd:
                return "prefect-server"
            return proc.name()
        return "other"

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss: dict[int, int] = {}
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss[proc.pid] = proc.memory_info().rss
                    if proc.pid not in self.roles:
                        self.roles[proc.pid] = self._role(proc)
            self.samples.append((time.time(), rss))
            self._stop.wait(SAMPLE_S)

    def name_workers(self, address: str) -> None:
        """Label the Dask workers' processes ``worker-1``, ``worker-2``, ... by address."""
        from distributed import Client

        with Client(address, timeout=30) as client:
            pids = client.run(os.getpid)
        for i, addr in enumerate(sorted(pids), start=1):
            self.roles[pids[addr]] = f"worker-{i}"

    def peaks(self) -> dict[str, int]:
        """The largest RSS each role reached (bytes), and ``sum``: the largest sum over processes."""
        out: dict[str, int] = {"sum": 0}
        for _, rss in self.samples:
            out["sum"] = max(out["sum"], sum(rss.values()))
            for pid, v in rss.items():
                role = self.roles.get(pid, "other")
                out[role] = max(out.get(role, 0), v)
        return out

    def window(self, start: float, end: float) -> dict[str, int]:
        """Peaks inside [start, end] (bytes): the largest Dask worker, the largest process and the
        sum; a window shorter than the sampling interval takes the sample nearest its middle."""
        inside = [rss for t, rss in self.samples if start <= t <= end and rss]
        if not inside and self.samples:
            inside = [min(self.samples, key=lambda s: abs(s[0] - (start + end) / 2))[1]]
        workers = [v for r in inside for pid, v in r.items() if self.roles.get(pid, "").startswith("worker-")]
        return {"worker": max(workers, default=0),
                "largest": max((max(r.values()) for r in inside), default=0),
                "sum": max((sum(r.values()) for r in inside), default=0)}

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- one run -----------------------------------------------------------------------------------

def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def first_chunk_start(movie: Path) -> float:
    """The earliest chunk start: a chunk file's ``written_at`` less its summed phase timings."""
    from vcn.storage.schemas import table_metadata

    starts = []
    for path in sorted((movie / "chunks").glob("chunk-*.faces.parquet")):
        meta = table_metadata(str(path))
        starts.append(_ts(meta["written_at"]) - sum(meta.get("timings", {}).values()))
    return min(starts)


def run(video: Path, run_dir: Path, workers: int | None, reuse: bool) -> dict[str, Any]:
    """Run the flow with the default config on ``video`` in a fresh ``run_dir`` (or, ``reuse``,
    read the record of a finished run there); return seconds, counts and memory."""
    record = run_dir / "scale-run.json"
    if reuse and record.exists():
        return json.loads(record.read_text())
    from vcn.flows.movie import movie_flow
    from vcn.flows.runtime import dask_cluster, gpu_workers, model_threads, prefect_api
    from vcn.storage.layout import MovieLayout
    from vcn.storage.manifest import read_manifest

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    with MemorySampler() as mem, prefect_api(), dask_cluster(None, workers) as address:
        mem.name_workers(address)
        gpu = gpu_workers(address)
        t0 = time.time()
        summary = movie_flow(address)(
            video_path=str(video.resolve()), out_dir=str(run_dir.resolve()), config={}, gpu=gpu,
            threads=model_threads(None, 1))
        t1 = time.time()
    movie = Path(summary["output"])
    manifest = read_manifest(MovieLayout(movie))
    st = manifest.stages
    c0 = first_chunk_start(movie)
    spans = {"prepare": (t0, c0), "ingest": (c0, _ts(st["tracks"].ended)),
             "chunks": (c0, _ts(st["tracks"].started)),
             "assemble": (_ts(st["tracks"].started), _ts(st["tracks"].ended)),
             "cluster": (_ts(st["clusters"].started), _ts(st["clusters"].ended)),
             "report": (_ts(st["clusters"].ended), t1), "total": (t0, t1)}
    if "finetune" in st:
        spans["finetune"] = (_ts(st["finetune"].started), _ts(st["finetune"].ended))
    seconds = {k: b - a for k, (a, b) in spans.items()}
    seconds["chunks"] = sum(st["tracks"].extra.get("chunk_seconds", {}).values())
    parts = st["finetune"].extra.get("seconds", {}) if "finetune" in st else {}
    seconds.update({k: parts[v] for k, v in (("bank", "view_bank"), ("adapt", "adapt")) if v in parts})
    inp = manifest.input
    out = {"video": str(video), "output": str(movie), "method": manifest.config["cluster"]["method"],
           "workers": workers or os.cpu_count(), "frames": inp.n_frames, "duration_s": inp.duration_s,
           "tracks": summary["tracks"], "faces": summary["faces"], "detected_shots": summary.get("shots"),
           "clusters": summary.get("clusters"), "seconds": seconds,
           "peak_rss": mem.peaks(), "window_rss": {w: mem.window(*spans[w]) for w in WINDOWS if w in spans}}
    record.write_text(json.dumps(out, indent=1))
    return out


# --- fits and output ---------------------------------------------------------------------------

def exponent(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two distinct x or y <= 0)."""
    if len(set(x)) < 2 or min(y) <= 0:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def project(minutes: list[float], y: list[float]) -> dict[str, float | None]:
    """A 2-hour film's value: the fitted power law at ``FILM_MINUTES``, and the longest run scaled
    linearly."""
    i = int(np.argmax(minutes))
    linear = y[i] * FILM_MINUTES / minutes[i]
    if len(set(minutes)) < 2 or min(y) <= 0:
        return {"fit": None, "linear": linear}
    b, a = np.polyfit(np.log(minutes), np.log(y), 1)
    return {"fit": float(np.exp(a + b * np.log(FILM_MINUTES))), "linear": linear}


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Growth exponents and 2-hour projections of every stage's seconds and window memory."""
    minutes = [r["duration_s"] / 60 for r in rows]
    tracks = [float(r["tracks"]) for r in rows]
    time_fit = {}
    for s in STAGES:
        if not all(s in r["seconds"] for r in rows):
            continue
        y = [r["seconds"][s] for r in rows]
        b_tracks = exponent(tracks, y)
        time_fit[s] = {"vs_tracks": b_tracks, "vs_minutes": exponent(minutes, y),
                       "film_s": project(minutes, y),
                       "linear": None if b_tracks is None else b_tracks <= LINEAR_TOL}
    mem_fit = {}
    for w in WINDOWS:
        if not all(w in r["window_rss"] for r in rows):
            continue
        for k in ("worker", "largest", "sum"):
            if not all(k in r["window_rss"][w] for r in rows):
                continue
            y = [r["window_rss"][w][k] / GIB for r in rows]
            mem_fit[f"{w}.{k}"] = {"vs_minutes": exponent(minutes, y), "film_gib": project(minutes, y)}
    ram = psutil.virtual_memory().total / GIB
    verdict: dict[str, Any] = {"ram_gib": ram}
    b = mem_fit.get("chunks.worker", {}).get("vs_minutes")
    verdict["ingest_memory_flat"] = None if b is None else b <= FLAT_TOL
    for w in ("finetune", "cluster"):
        proj = mem_fit.get(f"{w}.largest", {}).get("film_gib", {}).get("fit")
        verdict[f"{w}_memory_bounded"] = None if proj is None else proj < ram
    return {"time": time_fit, "memory": mem_fit, "verdict": verdict}


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(round(v, 6) + 0.0, fmt)


def report(rows: list[dict[str, Any]], facts: list[dict[str, Any]], fitted: dict[str, Any] | None) -> None:
    """Print the per-length table, the per-stage memory table, the exponents and projections."""
    print(f"\n== default method ({rows[0]['method']}), {rows[0]['workers']} workers, {os.cpu_count()} cores")
    head = (f"{'min':>5} {'frames':>6} {'shots':>5} {'tracks':>6} {'faces':>6} | "
            + " ".join(f"{s:>8}" for s in STAGES)
            + f" | {'x RT':>5} | {'flow':>5} {'worker':>6} {'sum':>5} GiB")
    print(head)
    for r, f in zip(rows, facts, strict=True):
        sec = " ".join(_num(r["seconds"].get(s), "8.1f") for s in STAGES)
        workers = [v for k, v in r["peak_rss"].items() if k.startswith("worker-")]
        print(f"{r['duration_s'] / 60:>5.1f} {r['frames']:>6} {f['shots']:>5} {r['tracks']:>6} "
              f"{r['faces']:>6} | "
              f"{sec} | {r['duration_s'] / r['seconds']['total']:>5.2f} | "
              f"{r['peak_rss']['flow'] / GIB:>5.2f} {max(workers, default=0) / GIB:>6.2f} "
              f"{r['peak_rss']['sum'] / GIB:>5.2f}")
    print("\npeak RSS per stage window, GiB: largest worker / largest process / sum of processes")
    print(f"{'min':>5} | " + " ".join(f"{w:>18}" for w in WINDOWS))
    for r in rows:
        cells = []
        for w in WINDOWS:
            m = r["window_rss"].get(w)
            if not m:
                cells.append("-".rjust(18))
                continue
            worker = f"{m['worker'] / GIB:.2f}" if "worker" in m else "-"
            cells.append(f"{worker:>6}/{m['largest'] / GIB:>5.2f}/{m['sum'] / GIB:<5.2f}")
        print(f"{r['duration_s'] / 60:>5.1f} | " + " ".join(cells))
    print("\npeak RSS per process, GiB")
    for r in rows:
        procs = ", ".join(f"{k} {v / GIB:.2f}" for k, v in sorted(r["peak_rss"].items()) if k != "sum")
        print(f"{r['duration_s'] / 60:>5.1f} | {procs}")
    if fitted is None:
        print("\n(one length: no growth fit; run two or more --minutes)")
        return
    print(f"\ngrowth exponent b (seconds ~ x^b) and a {FILM_MINUTES:g}-minute film's seconds")
    print(f"{'stage':>9} {'b tracks':>8} {'b min':>6} {'2 h fit':>9} {'2 h linear':>10}  verdict")
    for s, v in fitted["time"].items():
        verdict = {True: "linear or better", False: "FASTER THAN LINEAR", None: "-"}[v["linear"]]
        print(f"{s:>9} {_num(v['vs_tracks'], '8.2f')} {_num(v['vs_minutes'], '6.2f')} "
              f"{_num(v['film_s']['fit'], '9.0f')} {v['film_s']['linear']:>10.0f}  {verdict}")
    print(f"\npeak memory against minutes (GiB ~ min^b) and at {FILM_MINUTES:g} minutes")
    print(f"{'window':>16} {'b min':>6} {'2 h fit':>8} {'2 h linear':>10}")
    for k, v in fitted["memory"].items():
        print(f"{k:>16} {_num(v['vs_minutes'], '6.2f')} {_num(v['film_gib']['fit'], '8.2f')} "
              f"{v['film_gib']['linear']:>10.2f}")
    vd = fitted["verdict"]
    print(f"\nchunks' largest worker flat in length (b <= {FLAT_TOL}): {vd['ingest_memory_flat']}; "
          f"finetune / cluster largest process under {vd['ram_gib']:.0f} GiB at 2 h: "
          f"{vd['finetune_memory_bounded']} / {vd['cluster_memory_bounded']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[5.0, 15.0, 30.0])
    ap.add_argument("--seed", type=int, default=1, help="the episodes' seed")
    ap.add_argument("--hard", action="store_true", help="HARD degradations")
    ap.add_argument("--workers", type=int, default=None, help="Dask workers (default: one per core)")
    ap.add_argument("--cache", default=".bench/scale", help="episodes and flow outputs")
    ap.add_argument("--out", default=None, help="JSON results (default: CACHE/scale.json)")
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs under CACHE/runs")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    rows, facts = [], []
    # Composing holds whole episodes in memory: a child process keeps that out of the flow's RSS.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        episodes = [pool.submit(dataset, m, args.seed, args.hard, cache).result()
                    for m in sorted(args.minutes)]
    for video, f in episodes:
        run_dir = cache / "runs" / f"{video.stem}-w{args.workers or os.cpu_count()}"
        r = run(video, run_dir, args.workers, args.reuse)
        print(f"{video.name}: {r['frames']} frames, {r['tracks']} tracks, {r['seconds']['total']:.0f} s",
              file=sys.stderr)
        rows.append(r)
        facts.append(f)
    fitted = fit(rows) if len({r["frames"] for r in rows}) > 1 else None
    report(rows, facts, fitted)
    out = Path(args.out) if args.out else cache / "scale.json"
    out.write_text(json.dumps({"args": vars(args), "cores": os.cpu_count(), "episodes": facts, "runs": rows,
                               "fit": fitted}, indent=1, default=float))


if __name__ == "__main__":
    main()
