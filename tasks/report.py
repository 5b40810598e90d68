"""Report task: read a movie's outputs, render the cluster report, write ``report.html``.

A title whose ``--out`` folder (the parent of its own folder) holds a library gets its clusters'
identity ids and names from ``library/members.parquet``, and the report's review commands name that
folder.

``build_report`` and ``publish_markdown_artifact`` are plain functions (the CLI calls them without
a flow); ``write_report`` wraps both as a Prefect task for the per-movie flow.
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import numpy as np
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from vcn.report.html import (
    Identity,
    ReportConfig,
    encode_thumbnails,
    md_text,
    ordered_clusters,
    render_html,
    render_markdown,
    select_thumbnail_faces,
)
from vcn.storage.atomic import write_bytes
from vcn.storage.identities import title_identities
from vcn.storage.layout import MovieLayout
from vcn.storage.results import MovieResults, load_crops, load_results
from vcn.tasks.context import MovieContext
from vcn.tasks.policies import is_transient


def load_thumbnails(
    movie_dir: str, results: MovieResults, cfg: ReportConfig | None = None
) -> dict[int, bytes]:
    """Thumbnails (face id -> JPEG bytes) of the faces the report shows."""
    cfg = cfg or ReportConfig()
    selected = select_thumbnail_faces(results, cfg).values()
    ids = np.unique(np.concatenate([np.zeros(0, np.int64), *selected]))
    return dict(zip(ids.tolist(), encode_thumbnails(load_crops(movie_dir, ids), cfg), strict=True))


def library_identities(movie_dir: str, movie_id: str) -> tuple[dict[str, Identity] | None, str | None]:
    """The title's identities (cluster id -> (identity_id, name)) and the library folder they come
    from, the parent of ``movie_dir``; (None, None) when that folder holds no linked library."""
    out_dir = str(Path(movie_dir).resolve().parent)
    identities = title_identities(out_dir, movie_id)
    return (identities, out_dir) if identities is not None else (None, None)


def build_report(movie_dir: str, cfg: ReportConfig | None = None) -> str:
    """Write ``movie_dir/report.html`` (atomically) and return its path.

    Raises :class:`vcn.errors.StageError` when the folder is not a finished run.
    """
    cfg = cfg or ReportConfig()
    results = load_results(movie_dir)
    identities, out_dir = library_identities(movie_dir, results.movie_id)
    page = render_html(results, load_thumbnails(movie_dir, results, cfg), cfg, identities, out_dir)
    dest = MovieLayout(Path(movie_dir)).report
    write_bytes(dest, page.encode("utf-8"))
    return str(dest)


def publish_markdown_artifact(movie_dir: str, cfg: ReportConfig | None = None) -> UUID:
    """Create the Prefect Markdown artifact ``vcn-<movie_id>`` summarising the clusters.

    Call it inside a flow or task run (Prefect links the artifact to that run and deprecates
    artifacts made outside one); needs a reachable Prefect API.
    """
    cfg = cfg or ReportConfig()
    results = load_results(movie_dir)
    layout = MovieLayout(Path(movie_dir))
    # Only the representative faces appear in the table.
    reps = ordered_clusters(results)["rep_face_id"].head(cfg.markdown_max_clusters).to_numpy(np.int64)
    thumbs = dict(zip(reps.tolist(), encode_thumbnails(load_crops(movie_dir, reps), cfg), strict=True))
    identities, _ = library_identities(movie_dir, results.movie_id)
    markdown = render_markdown(results, thumbs, cfg, report_path=str(layout.report), identities=identities)
    inp = results.manifest.input
    name = Path(inp.path if inp is not None else "").name
    return create_markdown_artifact(
        markdown=markdown, key=f"vcn-{results.movie_id}", description=f"Face clusters of {md_text(name)}",
    )


@task(name="write-report", retries=1, retry_condition_fn=is_transient, persist_result=False)
def write_report(ctx_or_movie_dir: MovieContext | str, publish: bool = True) -> str:
    """Prefect task: write ``report.html`` and (``publish``) the Markdown artifact; return the path."""
    movie_dir = str(ctx_or_movie_dir.layout.root) if isinstance(ctx_or_movie_dir, MovieContext) \
        else str(ctx_or_movie_dir)
    path = build_report(movie_dir)
    if publish:
        publish_markdown_artifact(movie_dir)
    get_run_logger().info("report: %s", path)
    return path
