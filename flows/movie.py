"""The per-movie flow: tracks (chunks fanned out on Dask) → clusters.

Wiring only: every step is a task from ``tasks/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed
from prefect.states import Failed, State
from prefect_dask import DaskTaskRunner
from tqdm import tqdm

from vcn.config import PipelineConfig
from vcn.errors import InputError
from vcn.flows.console import verbose
from vcn.flows.runtime import gpu_annotation
from vcn.method.registry import get_method
from vcn.storage.manifest import file_lock
from vcn.tasks.cluster import cluster_tracks
from vcn.tasks.finetune import finetune_model
from vcn.tasks.ingest import assemble_tracks, chunk_plan, ingest_chunk, prepare_movie
from vcn.tasks.progress import Progress, duration, say
from vcn.tasks.report import write_report
from vcn.tasks.stages import previous_rows, record_failure, stages_to_run


# No result of this flow or its tasks is persisted: the manifest and the chunk files record what
# is done, and Prefect reads a persisted result back with the deserializer its file names, pickle
# included (docs/operations.md).
@flow(name="process-movie", flow_run_name="process-movie-{video_path}", log_prints=True, persist_result=False)
def process_movie(
    video_path: str,
    out_dir: str,
    config: dict[str, Any] | None = None,
    rerun_from: str | None = None,
    gpu: bool = False,
    threads: int | None = None,
) -> dict[str, Any] | State:
    """Process one video into ``out_dir/<movie_id>/``; return the run summary.

    ``config``: a nested dict of overrides of :class:`vcn.config.PipelineConfig` (JSON-able, so
    that deployments can pass it as a parameter). Stages that completed with the same config
    section, models and stage version (:mod:`vcn.versions`) are reused; ``rerun_from`` (a stage
    name) forces that stage and the later ones to run.
    ``gpu``: the Dask cluster has workers with a ``GPU`` resource; the finetune and the vcn
    clustering ask for one. ``threads``: PyTorch threads for those two tasks on their worker
    (``None``: its ``VCN_THREADS``); :func:`vcn.flows.runtime.model_threads` gives a local cluster's.

    A bad input (:class:`vcn.errors.InputError`: missing, empty, unreadable, truncated or damaged
    file) ends the run *Failed* with the error's one-line message as the state message and no
    traceback (``VCN_VERBOSE=1``: raised as is); calling the flow raises the error.
    """
    try:
        return _process(video_path, out_dir, PipelineConfig.from_dict(config or {}), rerun_from, gpu, threads)
    except InputError as exc:
        if verbose():
            raise
        # An unusable input is the user's to fix, not a bug: the run ends Failed with the
        # one-line message (file, what is wrong, the fix) as its state message, and no traceback.
        return Failed(message=str(exc), data=exc)


def _process(video_path: str, out_dir: str, cfg: PipelineConfig, rerun_from: str | None, gpu: bool,
             threads: int | None) -> dict[str, Any]:
    logger = get_run_logger()
    name = Path(video_path).name
    ctx = prepare_movie(video_path, out_dir, cfg)
    info = ctx.info
    # One run per title at a time: a second run waits, then finds the work done.
    with file_lock(ctx.layout.lock, timeout_s=6 * 3600):
        plan = stages_to_run(ctx, rerun_from)
        todo = [s for s, run in plan.items() if run]
        say(logger, "%s: %s, %d frames at %.2f fps, %dx%d -> %s; to run: %s", name, duration(info.duration_s),
            info.n_frames, info.fps, info.width, info.height, ctx.out_root, ", ".join(todo) or "nothing")
        summary: dict[str, Any] = {"movie_id": ctx.movie_id, "output": ctx.out_root, "video": video_path,
                                   "duration_s": ctx.info.duration_s, "stages_run": plan}
        for stage, run in plan.items():
            if not run:
                summary.update(previous_rows(ctx, stage))
                continue
            t0 = time.monotonic()
            try:
                if stage == "tracks":
                    chunks = chunk_plan(ctx)
                    say(logger, "%s: tracks: %d chunk(s) of %s", name, len(chunks),
                        duration(cfg.ingest.chunk.chunk_seconds))
                    futures = ingest_chunk.map(unmapped(ctx), chunks, force=rerun_from == "tracks")
                    summary.update(assemble_tracks(ctx, wait_with_progress(futures, ctx.movie_id, name)))
                elif stage == "finetune":
                    say(logger, "%s: finetune started", name)
                    with gpu_annotation(gpu):
                        future = finetune_model.submit(ctx, threads)
                    summary.update(future.result())
                elif stage == "clusters":
                    # Stage 4 reads the view bank and the finetuned model: a worker's job (a GPU
                    # one when there is one), not the flow process's.
                    say(logger, "%s: clusters (%s) started", name, cfg.cluster.method)
                    with gpu_annotation(gpu and get_method(cfg.cluster.method).gpu):
                        future = cluster_tracks.submit(ctx, threads)
                    summary.update(future.result())
            except Exception as exc:
                record_failure(ctx, stage, exc)
                raise
            say(logger, "%s: %s done in %s (%s)", name, stage, duration(time.monotonic() - t0),
                ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in summary.items() if k in STAGE_ROWS[stage]))
        summary["report"] = write_report(ctx)
    return summary


# The counts each stage's end line reports.
STAGE_ROWS = {"tracks": ("faces", "tracks", "shots"), "finetune": ("rounds", "matches"),
              "clusters": ("clusters", "unknown_tracks")}


def wait_with_progress(futures: list, movie_id: str, name: str) -> list[Any]:
    """Results of the chunk futures in order, with progress as chunks finish: a Prefect progress
    artifact (on the flow run's page), a log line every 10 % of the chunks (with the time spent
    and left), and on a terminal a progress bar in place of those lines on the console."""
    total = len(futures)
    artifact = create_progress_artifact(0.0, description=f"chunks of {movie_id} ingested")
    tty = sys.stderr.isatty()
    progress = Progress(get_run_logger(), f"{name}: tracks", total, "chunks", console=not tty)
    with tqdm(total=total, desc=f"{name} chunks", unit="chunk", file=sys.stderr, disable=not tty) as bar:
        for done, _ in enumerate(as_completed(futures), start=1):
            bar.update(1)
            progress.update(done)
            update_progress_artifact(artifact, 100.0 * done / max(total, 1))
    return [f.result() for f in futures]


def movie_flow(dask_address: str):
    """``process_movie`` bound to a Dask scheduler.

    Call it with ``gpu=gpu_workers(dask_address)`` to route the finetune to GPU workers.
    """
    return process_movie.with_options(task_runner=DaskTaskRunner(address=dask_address))
