"""The library flow: every new or changed title of a media library through ``process-movie``.

``ingest-library`` finds the titles (a folder scan or a catalogue file), skips those whose outputs
are complete for the current config and code, runs ``process-movie`` as a subflow for each of the
others, ``concurrency`` titles at a time, all fanning their chunks out on one Dask cluster, and
publishes each finished movie to the ``OUT/catalogue`` dataset, then links the titles' clusters
into library identities (``link-identities``, ``OUT/library``). A failed title never stops the
others; the run ends ``Failed`` (with the summary as its result) when any title failed, so that
the UI and notifications flag it. The summary is also a table artifact on the run.

Wiring only: the work is in ``tasks/library.py`` and ``flows/movie.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed, State

from vcn.config import PipelineConfig
from vcn.errors import InputError
from vcn.flows.console import verbose
from vcn.flows.movie import movie_flow
from vcn.flows.runtime import dask_cluster, gpu_workers, model_threads
from vcn.report.html import md_text
from vcn.tasks.identities import link_identities
from vcn.tasks.library import (
    LibrarySummary,
    Title,
    describe_error,
    format_summary,
    plan_library,
    publish_catalogue,
    summary_rows,
)
from vcn.tasks.progress import say
from vcn.tasks.report import write_report

ARTIFACT_KEY = "ingest-library-summary"


def _export_api_url() -> None:
    # Dask worker processes inherit the environment, not this process's Prefect settings: a
    # flow started by a Prefect worker may know its API only through a profile.
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url and "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_API_URL"] = url


def _process_title(
    title: Title, *, movie: Any, out_dir: str, config: dict[str, Any], gpu: bool, threads: int | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = movie(video_path=title.path, out_dir=out_dir, config=config, gpu=gpu, threads=threads)
    seconds = time.perf_counter() - t0
    publish_catalogue(out_dir, result["movie_id"])
    return {"video": title.path, "movie_id": result["movie_id"], "seconds": round(seconds, 2),
            "faces": result["faces"], "tracks": result["tracks"], "clusters": result["clusters"],
            "chunks": result.get("chunks"), "chunks_computed": result.get("chunks_computed"),
            "stages_run": result["stages_run"], "duration_s": result["duration_s"]}


def _run_name() -> str:
    params = flow_run.parameters
    source = params.get("catalogue") or params.get("library_root") or "?"
    return f"ingest-library-{Path(source).name}"


@flow(name="ingest-library", flow_run_name=_run_name, log_prints=True, persist_result=False)
def ingest_library(
    out_dir: str,
    library_root: str | None = None,
    catalogue: str | None = None,
    config: dict[str, Any] | None = None,
    concurrency: int = 2,
    workers: int | None = None,
    dask_address: str | None = None,
) -> dict[str, Any] | State:
    """Process every title of a library that is not done yet; return the summary.

    ``library_root``: folder scanned recursively for video files; ``catalogue``: a CSV or Parquet
    file whose ``path`` column lists the titles instead (relative paths against ``library_root``
    or the catalogue's folder). ``config``: nested overrides of :class:`PipelineConfig`, as for
    ``process-movie``. ``concurrency``: titles in flight at once. ``dask_address``: an existing
    scheduler; else a local cluster of ``workers`` processes (default one per core) is started.
    The summary: ``processed``, ``skipped`` and ``failed`` lists of per-title dicts (``video``,
    ``movie_id``, ``reason``, ...) and ``ignored_files``.
    """
    logger = get_run_logger()
    overrides = config or {}
    cfg = PipelineConfig.from_dict(overrides)
    out = str(Path(out_dir).resolve())
    try:
        plan = plan_library(library_root, catalogue, out, cfg)
    except InputError as exc:  # a root that is not a folder, an unreadable catalogue
        if verbose():
            raise
        return Failed(message=str(exc), data=exc)
    summary = LibrarySummary(ignored_files=plan.ignored_files, flow_run_id=str(flow_run.id))
    summary.failed += [{"video": t.path, "movie_id": t.movie_id, "reason": t.reason}
                       for t in plan.with_status("failed")]
    for t in plan.with_status("skip"):
        entry = {"video": t.path, "movie_id": t.movie_id, "reason": t.reason, "published": False}
        try:
            # A title done by `vcn run`, or whose publication was interrupted, joins the catalogue.
            if t.duplicate_of is None:
                entry["published"] = publish_catalogue(out, t.movie_id, force=False)
        except Exception as exc:
            summary.failed.append({**entry, "reason": describe_error(t.path, exc)})
            continue
        summary.skipped.append(entry)

    todo = plan.with_status("todo")
    if todo:
        _export_api_url()
        with dask_cluster(dask_address, workers) as address:
            movie, gpu = movie_flow(address), gpu_workers(address)
            with cf.ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="title") as pool:
                # Each subflow runs in a copy of this flow's context, so it is recorded as a child.
                # A nightly run often has one new title: its model stages then have the cores to themselves.
                in_flight = min(max(1, concurrency), len(todo))
                work = functools.partial(_process_title, movie=movie, out_dir=out, config=overrides, gpu=gpu,
                                         threads=model_threads(dask_address, in_flight))
                futures = {pool.submit(contextvars.copy_context().run, work, t): t for t in todo}
                for fut in cf.as_completed(futures):
                    title = futures[fut]
                    try:
                        summary.processed.append(fut.result())
                    except Exception as exc:  # one broken title must not stop the library
                        reason = describe_error(title.path, exc)
                        say(logger, "FAILED %s", reason, level=logging.ERROR)
                        summary.failed.append({"video": title.path, "movie_id": title.movie_id,
                                               "reason": reason})
    summary.processed.sort(key=lambda e: e["video"])
    summary.failed.sort(key=lambda e: e["video"])
    if summary.processed or summary.skipped:
        # People across titles: the new titles' clusters join the library's identities.
        try:
            summary.identities = link_identities(out)
        except Exception as exc:
            if verbose():
                raise
            return Failed(message=f"linking identities across titles failed: {exc}", data=exc)
        # Each new title's report was written before the linking: write it again with its people.
        for entry in summary.processed:
            try:
                write_report(str(Path(out) / entry["movie_id"]), publish=False)
            except Exception as exc:
                say(logger, "%s: report not refreshed with identities (%s)", entry["video"], exc,
                    level=logging.WARNING)
    create_table_artifact(
        key=ARTIFACT_KEY, table=summary_rows(summary),
        description=f"ingest-library {md_text(plan.source)}: {len(summary.processed)} processed, "
                    f"{len(summary.skipped)} skipped, {len(summary.failed)} failed",
    )
    text = format_summary(summary)
    logger.info(text)
    result = summary.to_dict()
    if summary.failed:
        return Failed(message=f"{len(summary.failed)} of {len(plan.titles)} titles failed; see the "
                              f"'{ARTIFACT_KEY}' artifact", data=result)
    return result
