"""The per-movie flow: tracks (chunks fanned out on Dask) → clusters.

Wiring only: every step is a task from ``tasks/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, unmapped
from prefect.filesystems import LocalFileSystem
from prefect_dask import DaskTaskRunner

from tasks.cluster import cluster_tracks
from tasks.ingest import assemble_tracks, chunk_plan, ingest_chunk, prepare_movie
from vcn.config import PipelineConfig, fingerprint


@flow(name="process-movie", flow_run_name="process-movie-{video_path}", log_prints=True)
def process_movie(video_path: str, out_dir: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Process one video into ``out_dir/<movie_id>/``; return the run summary.

    ``config``: a nested dict of overrides of :class:`vcn.config.PipelineConfig` (JSON-able, so
    that deployments can pass it as a parameter).
    """
    cfg = PipelineConfig.from_dict(config or {})
    ctx = prepare_movie(video_path, out_dir, cfg)
    futures = ingest_chunk.map(unmapped(ctx), chunk_plan(ctx))
    reports = [f.result() for f in futures]
    rows = assemble_tracks(ctx, reports)
    clusters = cluster_tracks(ctx)
    return {"movie_id": ctx.movie_id, "output": ctx.out_root, "video": video_path,
            "duration_s": ctx.info.duration_s, **rows, **clusters}


def movie_flow(out_dir: str, dask_address: str):
    """``process_movie`` bound to a Dask scheduler, with results kept under ``out_dir``."""
    results = Path(out_dir).resolve() / ".prefect-results"
    # Task results must be readable by every Dask worker, so the storage block is saved on the
    # server (workers load it by reference); one block per output folder.
    storage = LocalFileSystem(basepath=str(results))
    storage.save(f"vcn-results-{fingerprint(str(results))}", overwrite=True)
    return process_movie.with_options(
        task_runner=DaskTaskRunner(address=dask_address), result_storage=storage, persist_result=True
    )
