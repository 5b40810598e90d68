"""Library throughput: titles per hour, per-stage time, orchestration overhead and peak memory.

Composes N 720p 25 fps titles from the dev clips (different lengths, hence different content
ids), runs the real ``ingest-library`` flow over them (Prefect + a Dask LocalCluster), and
prints one row per title and a total.

Orchestration overhead of a title = its subflow's wall time minus the work recorded for it,
as a share of the wall time. The work is the chunk compute time from the chunk files' metadata
(``process_chunk`` timings, summed over chunks and divided by the worker lanes in use,
``min(workers, chunks)``), plus the ``started``..``ended`` span of every other stage in
``manifest.json`` (assemble, finetune, clusters), plus the running time of the ``prepare-movie``
and ``write-report`` tasks from the Prefect API (they keep no manifest record). What is left is
Prefect and Dask (flow and task run creation, state changes, result persistence, scheduling
gaps), the workers' warm-up on the first title (imports, model loading), writing the chunk files
(JPEG crops), and idle lanes: the last chunks of a title running while other workers wait. The
overhead is split (from the chunk task runs' times in the Prefect API) into idle lanes, time in
the chunk tasks outside ``process_chunk`` (model loading, chunk file writes) and the rest
(Prefect and Dask around the tasks).
With ``--concurrency`` above 1 titles share the workers and per-title overheads lose their
meaning; the default is 1.

    .venv/bin/python -m benchmarks.library [--titles 4] [--seconds 60] [--workers 2] [--chunk-seconds 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.compose import compose_long_video
from benchmarks.ingest import PeakRSS
from vcn.manifest import StageRecord
from vcn.storage import schemas
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest


def _span_s(rec: StageRecord) -> float:
    if not rec.started or not rec.ended:
        return 0.0
    return (datetime.fromisoformat(rec.ended) - datetime.fromisoformat(rec.started)).total_seconds()


def _task_runs(flow_run_name: str) -> list:
    """Task runs of the (latest) subflow run named ``flow_run_name``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        by_name = FlowRunFilter(name=FlowRunFilterName(any_=[flow_run_name]))
        runs = client.read_flow_runs(flow_run_filter=by_name, sort=FlowRunSort.START_TIME_DESC, limit=1)
        if not runs:
            return []
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[runs[0].id])),
                                     limit=200)


def title_breakdown(out: Path, entry: dict, workers: int) -> dict:
    """Per-stage seconds and the orchestration overhead of one processed title."""
    layout = MovieLayout.of(out, entry["movie_id"])
    manifest = read_manifest(layout)
    chunk_stages: dict[str, float] = {}
    n_chunks = 0
    for path in sorted(layout.chunks_dir.glob("chunk-*.faces.parquet")):
        n_chunks += 1
        for k, v in schemas.table_metadata(str(path)).get("timings", {}).items():
            chunk_stages[k] = chunk_stages.get(k, 0.0) + v
    # The tracks record spans its last task, assemble-tracks; the chunks are counted above.
    stage_spans = {("assemble" if name == "tracks" else name): _span_s(rec)
                   for name, rec in manifest.stages.items()}
    runs = _task_runs(f"process-movie-{entry['video']}")
    side = {k: sum(t.total_run_time.total_seconds() for t in runs if t.name.startswith(k))
            for k in ("prepare-movie", "write-report")}
    lanes = max(1, min(workers, n_chunks))
    work = sum(chunk_stages.values()) / lanes + sum(stage_spans.values()) + sum(side.values())
    # Idle lanes during the chunk phase (the last chunks run while other workers wait), in wall
    # seconds: part of the overhead that comes from chunk granularity, not from Prefect or Dask.
    chunks = [t for t in runs if t.name.startswith("ingest-chunk") and t.start_time and t.end_time]
    idle = extra = 0.0
    if chunks:
        span = (max(t.end_time for t in chunks) - min(t.start_time for t in chunks)).total_seconds()
        busy = sum(t.total_run_time.total_seconds() for t in chunks)
        idle = max(0.0, span - busy / lanes)
        # Inside the chunk tasks but outside process_chunk: model loading, writing the chunk files
        # (JPEG crops), the task engine's own calls.
        extra = max(0.0, busy - sum(chunk_stages.values())) / lanes
    wall = entry["seconds"]
    return {"title": Path(entry["video"]).name, "duration_s": entry["duration_s"], "wall_s": wall,
            "chunks": n_chunks, "chunk_s": chunk_stages, "stage_s": {**stage_spans, **side},
            "work_s": work, "overhead_s": wall - work, "overhead_pct": 100 * (wall - work) / wall,
            "idle_s": idle, "extra_s": extra, "rest_s": wall - work - idle - extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--titles", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the first title; +2 s each")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--chunk-seconds", type=float, default=10.0)
    ap.add_argument("--method", default="hac")
    ap.add_argument("--cache", default=".bench", help="where the composed titles are kept")
    args = ap.parse_args()

    lib = Path(tempfile.mkdtemp(prefix="vcn-lib-"))
    out = Path(tempfile.mkdtemp(prefix="vcn-lib-out-"))
    for i in range(args.titles):
        seconds = args.seconds + 2 * i
        video = compose_long_video(Path(args.cache) / f"dev-720p-{seconds:g}s.mp4", seconds).resolve()
        (lib / f"title-{i:02d}.mp4").symlink_to(video)
    config = {"ingest": {"chunk": {"chunk_seconds": args.chunk_seconds}}, "cluster": {"method": args.method}}
    from prefect.logging.handlers import APILogHandler

    from vcn.flows.library import ingest_library
    from vcn.flows.runtime import prefect_api

    try:
        with prefect_api():
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                state = ingest_library(out_dir=str(out), library_root=str(lib), config=config,
                                       concurrency=args.concurrency, workers=args.workers, return_state=True)
                wall = time.perf_counter() - t0
            summary = state.result(raise_on_failure=False)
            if isinstance(summary, BaseException):
                raise summary
            rows = [title_breakdown(out, e, args.workers) for e in summary["processed"]]
            APILogHandler().flush()  # the run's last log lines, before the private server stops
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)

    video_s = sum(r["duration_s"] for r in rows)
    print(f"\n{len(rows)} titles (1280x720, 25 fps, {video_s:.0f} s of video), {args.workers} workers, "
          f"concurrency {args.concurrency}, chunks of {args.chunk_seconds:g} s, {os.cpu_count()} cores; "
          f"{len(summary['failed'])} failed")
    print(f"library wall {wall:.1f} s: {3600 * len(rows) / wall:.0f} titles/hour, "
          f"{video_s / wall:.2f}x real time, peak RSS {mem.peak / 2**30:.2f} GiB (flow, server, workers)")
    print(f"\n{'title':>12} {'video s':>8} {'chunks':>6} {'wall s':>7} {'work s':>7} {'overhead s':>10} "
          f"{'overhead':>8}   of which: {'idle lanes s':>12} {'in chunk tasks s':>16} {'rest s':>6}")
    for r in rows:
        print(f"{r['title']:>12} {r['duration_s']:>8.1f} {r['chunks']:>6} {r['wall_s']:>7.1f} "
              f"{r['work_s']:>7.1f} {r['overhead_s']:>10.1f} {r['overhead_pct']:>7.1f}%   {'':>9} "
              f"{r['idle_s']:>12.1f} {r['extra_s']:>16.1f} {r['rest_s']:>6.1f}")
    total_wall, total_over = sum(r["wall_s"] for r in rows), sum(r["overhead_s"] for r in rows)
    idle, extra = sum(r["idle_s"] for r in rows), sum(r["extra_s"] for r in rows)
    print(f"{'all':>12} {video_s:>8.1f} {'':>6} {total_wall:>7.1f} {total_wall - total_over:>7.1f} "
          f"{total_over:>10.1f} {100 * total_over / total_wall:>7.1f}%   {'':>9} {idle:>12.1f} "
          f"{extra:>16.1f} {total_over - idle - extra:>6.1f}")
    chunk_s: dict[str, float] = {}
    stage_s: dict[str, float] = {}
    for r in rows:
        for k, v in r["chunk_s"].items():
            chunk_s[k] = chunk_s.get(k, 0.0) + v
        for k, v in r["stage_s"].items():
            stage_s[k] = stage_s.get(k, 0.0) + v
    print("\nchunk work, summed over workers (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(chunk_s.items(), key=lambda kv: -kv[1])))
    print("other stages (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(stage_s.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
