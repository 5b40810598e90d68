"""Library tasks: find a library's titles, tell which are already done, publish finished ones.

A title is a video file, identified by its content id (``vcn.media.video.content_id``), so a renamed or
moved file is recognised and two copies of one film are processed once. A title is *done* when
``manifest.json`` says every stage completed with the current config section, models and stage
version (``vcn.versions``) and the outputs exist: exactly the test ``process-movie`` applies
(``vcn.tasks.stages.stage_plan``), made here without probing the video so that a nightly pass over a
large library stays cheap. Editing vcn's source makes no title stale; bumping a stage's version
does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from vcn.config import PipelineConfig
from vcn.errors import InputError
from vcn.faces.detection import ModelFiles, default_model_dir, find_models
from vcn.manifest import InputFailure
from vcn.media.video import VideoInfo, content_id
from vcn.storage.catalogue import CatalogueLayout, is_current, publish_movie
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import file_hash, known_paths, read_manifest
from vcn.storage.media import find_videos, read_catalogue_file
from vcn.tasks.context import MovieContext
from vcn.tasks.policies import is_transient
from vcn.tasks.progress import say
from vcn.tasks.stages import stage_plan


@dataclass(frozen=True)
class Title:
    """One video of the library and what the ingestion does with it.

    ``status``: ``todo`` (to process), ``skip`` (done, or a copy of the title ``duplicate_of``)
    or ``failed`` (could not be identified, or its unchanged content failed as bad input before);
    ``reason`` says why. ``stages``: for a ``todo`` title, each stage that would run and why (new
    file, file changed, config changed, models changed, stage version changed, previous failure,
    output missing, an earlier stage runs).
    """

    path: str
    movie_id: str | None
    status: str
    reason: str = ""
    duplicate_of: str | None = None
    stages: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LibraryPlan:
    """The titles found, in path order, and how many non-video files were passed over."""

    titles: tuple[Title, ...]
    ignored_files: int = 0
    source: str = ""

    def with_status(self, status: str) -> list[Title]:
        return [t for t in self.titles if t.status == status]


@dataclass
class LibrarySummary:
    """What an ingestion did, per title: ``processed``, ``skipped`` and ``failed`` rows."""

    processed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    ignored_files: int = 0
    flow_run_id: str = ""
    identities: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"processed": self.processed, "skipped": self.skipped, "failed": self.failed,
                "ignored_files": self.ignored_files, "flow_run_id": self.flow_run_id,
                "identities": self.identities}


def model_fingerprints(config: PipelineConfig) -> tuple[ModelFiles, dict[str, str]]:
    """The model files ``config`` selects and their hashes, as ``prepare-movie`` computes them."""
    models = find_models(config.model_dir or default_model_dir())
    return models, {"detector": file_hash(models.detector), "recognizer": file_hash(models.recognizer)}


def title_stage_plan(
    path: str, movie_id: str, out_dir: str, config: PipelineConfig, models: ModelFiles,
    model_hashes: dict[str, str],
) -> dict[str, str | None] | None:
    """Per stage, why ``process-movie`` would run it for this title (None: its output is reused;
    :func:`vcn.tasks.stages.stage_plan`); None when no run of this content got past probing."""
    layout = MovieLayout.of(out_dir, movie_id)
    inp = read_manifest(layout).input
    if inp is None:
        return None
    info = VideoInfo(path=inp.path, fps=inp.fps, n_frames=inp.n_frames, width=inp.width,
                     height=inp.height, duration_s=inp.duration_s, codec=inp.codec)
    ctx = MovieContext(video_path=path, movie_id=movie_id, out_root=str(layout.root), info=info,
                       config=config, models=models, code_hash="", model_hashes=model_hashes)
    return stage_plan(ctx)


def title_is_done(
    path: str, movie_id: str, out_dir: str, config: PipelineConfig, models: ModelFiles,
    model_hashes: dict[str, str],
) -> bool:
    """True when ``process-movie`` would run no stage for this title (see module docstring)."""
    plan = title_stage_plan(path, movie_id, out_dir, config, models, model_hashes)
    return plan is not None and not any(plan.values())


def previous_input_error(out_dir: str, movie_id: str) -> InputFailure | None:
    """The input error that the last run of this content met, if any: the file could not be
    opened or probed (``input_error`` of the manifest), or a stage failed on it (a truncated or
    damaged file found while decoding; its error and end time). The content id names the file's
    content, so a replaced file is a new title and never matches."""
    manifest = read_manifest(MovieLayout.of(out_dir, movie_id))
    if manifest.input_error is not None:
        return manifest.input_error
    for rec in manifest.stages.values():
        if rec.status == "failed" and rec.input_error:
            return InputFailure(path=manifest.input_path or "", error=rec.error or "",
                                recorded_at=rec.ended or "")
    return None


def describe_error(path: str, exc: BaseException) -> str:
    """``Type: message`` of a failure, prefixed with ``path`` unless the message names the file."""
    text = f"{type(exc).__name__}: {exc}"
    return text if Path(path).name in text else f"{path}: {text}"


def plan_titles(
    library_root: str | None, catalogue: str | None, out_dir: str, config: PipelineConfig
) -> LibraryPlan:
    """Find the titles (a folder scan or a catalogue file) and mark each todo, skip or failed,
    with the stages a todo title would run and why. Reads the files' content ids and the
    manifests only: nothing is decoded or written (``vcn ingest --dry-run`` prints this)."""
    if catalogue:
        paths, ignored, source = read_catalogue_file(catalogue, library_root), 0, str(catalogue)
    elif library_root:
        (paths, ignored), source = find_videos(library_root), str(library_root)
    else:
        raise InputError("ingest-library needs a library root folder or a title catalogue file")
    models, hashes = model_fingerprints(config)
    seen: dict[str, str] = {}
    known: dict[str, str] | None = None
    titles = []
    for path in paths:
        try:
            movie_id = content_id(path)
        except (OSError, InputError) as exc:
            titles.append(Title(path, None, "failed", describe_error(path, exc)))
            continue
        if movie_id in seen:
            titles.append(Title(path, movie_id, "skip", f"same content as {seen[movie_id]}", seen[movie_id]))
            continue
        seen[movie_id] = path
        failure = previous_input_error(out_dir, movie_id)
        if failure is not None:
            # Decoding it again would fail again: an unchanged bad file is reported, not retried.
            titles.append(Title(path, movie_id, "failed", f"{failure.error} (unchanged since this failure "
                                f"at {failure.recorded_at[:19]}; it is retried once the file changes)"))
            continue
        plan = title_stage_plan(path, movie_id, out_dir, config, models, hashes)
        if plan is None:
            known = known_paths(out_dir) if known is None else known
            before = known.get(os.path.abspath(path))
            first = f"file changed (was {before})" if before and before != movie_id else "new file"
            plan = dict.fromkeys(config.stages(), f"{config.stages()[0]} runs")
            plan[config.stages()[0]] = first
        stages = tuple((stage, why) for stage, why in plan.items() if why is not None)
        if stages:
            reason = "; ".join(f"{stage}: {why}" for stage, why in stages)
            titles.append(Title(path, movie_id, "todo", reason, stages=stages))
        else:
            titles.append(Title(path, movie_id, "skip", "complete for this config, models and stage version"))
    return LibraryPlan(tuple(titles), ignored, source)


# No caching (``persist_result=False`` turns Prefect's cache off): both tasks read the file system,
# which changes between calls with the same inputs.
@task(name="plan-library", retries=1, retry_condition_fn=is_transient, persist_result=False)
def plan_library(
    library_root: str | None, catalogue: str | None, out_dir: str, config: PipelineConfig
) -> LibraryPlan:
    """:func:`plan_titles` as a task, with a line on what the run will do."""
    plan = plan_titles(library_root, catalogue, out_dir, config)
    say(get_run_logger(), "library %s: %d titles to process, %d done, %d failed, %d non-video files",
        plan.source, len(plan.with_status("todo")), len(plan.with_status("skip")),
        len(plan.with_status("failed")), plan.ignored_files)
    return plan


def format_plan(plan: LibraryPlan) -> str:
    """What a run would do, per title: the stages to run and why, or why it is skipped or failed."""
    lines = [f"vcn ingest --dry-run {plan.source}: {len(plan.with_status('todo'))} to process, "
             f"{len(plan.with_status('skip'))} skipped, {len(plan.with_status('failed'))} failed "
             f"({plan.ignored_files} non-video files ignored)"]
    for t in plan.titles:
        name = f"{Path(t.path).name}" + (f" ({t.movie_id})" if t.movie_id else "")
        if t.status == "todo":
            lines.append(f"  run     {name}: " + ", ".join(f"{s} ({why})" for s, why in t.stages))
        elif t.status == "skip":
            lines.append(f"  skip    {name}: {t.reason}")
        else:
            lines.append(f"  FAILED  {Path(t.path).name}: {t.reason}")
    return "\n".join(lines)


@task(name="publish-catalogue", task_run_name="publish-catalogue-{movie_id}", retries=1,
      retry_condition_fn=is_transient, persist_result=False)
def publish_catalogue(out_dir: str, movie_id: str, force: bool = True) -> bool:
    """Write the movie's partitions of ``OUT/catalogue``; with ``force=False`` only when stale.

    Returns whether anything was written.
    """
    if not force and is_current(CatalogueLayout.of(out_dir), MovieLayout.of(out_dir, movie_id)):
        return False
    publish_movie(out_dir, movie_id)
    return True


def summary_rows(summary: LibrarySummary) -> list[dict[str, Any]]:
    """One flat row per title, for the Prefect table artifact."""
    rows = []
    for status, entries in (("processed", summary.processed), ("failed", summary.failed),
                            ("skipped", summary.skipped)):
        for e in entries:
            rows.append({
                "title": Path(e["video"]).name, "status": status, "movie_id": e.get("movie_id") or "",
                "seconds": e.get("seconds", ""), "faces": e.get("faces", ""), "tracks": e.get("tracks", ""),
                "clusters": e.get("clusters", ""), "reason": e.get("reason", ""), "path": e["video"],
            })
    return rows


def format_summary(summary: LibrarySummary) -> str:
    """A human-readable summary of an ingestion, one line per processed or failed title."""
    lines = ["", f"vcn ingest: {len(summary.processed)} processed, {len(summary.skipped)} skipped, "
                 f"{len(summary.failed)} failed ({summary.ignored_files} non-video files ignored)"]
    for e in summary.processed:
        lines.append(f"  done    {Path(e['video']).name} -> {e['movie_id']}: {e['faces']} faces, "
                     f"{e['tracks']} tracks, {e['clusters']} clusters in {e['seconds']:.1f} s")
    for e in summary.skipped:
        lines.append(f"  skipped {Path(e['video']).name} ({e['movie_id']}): {e['reason']}")
    for e in summary.failed:
        lines.append(f"  FAILED  {Path(e['video']).name}: {e['reason']}")
    if summary.identities:
        i = summary.identities
        lines.append(f"  identities: {i['clusters']} clusters of {i['titles']} titles -> {i['identities']} "
                     f"identities ({i['across_titles']} in two or more titles): {i['output']}")
    return "\n".join(lines)
