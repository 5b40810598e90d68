"""Stage 1 tasks: prepare a movie, ingest its chunks (on Dask), stitch them into tracks."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run, task_run

from vcn.config import PipelineConfig
from vcn.errors import InputError
from vcn.faces.assembly import assemble_movie, check_title_decode
from vcn.faces.detection import default_model_dir, find_models
from vcn.faces.ingest import ChunkResult, check_chunk_decode, process_chunk
from vcn.faces.proposals import YUNET_PATH
from vcn.manifest import InputRecord
from vcn.media.video import Chunk, content_id, plan_chunks, probe
from vcn.storage.crops import write_crops
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import (
    code_hash,
    code_version,
    file_hash,
    now_iso,
    package_versions,
    record_input_error,
    record_stage,
    update_manifest,
)
from vcn.storage.tables import (
    chunk_metadata,
    read_chunk_faces,
    write_chunk_faces,
    write_title_tables,
)
from vcn.tasks.context import MovieContext
from vcn.tasks.models import face_models, worker_threads
from vcn.tasks.policies import is_transient
from vcn.tasks.progress import say
from vcn.tasks.stages import stage_record


@task(name="prepare-movie", retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=is_transient,
      persist_result=False)
def prepare_movie(video_path: str, out_dir: str, config: PipelineConfig) -> MovieContext:
    """Probe the video, derive its movie id and record its lineage in ``manifest.json``.

    Raises :class:`vcn.errors.InputError` (not retried) naming the file when it is not a
    usable video; the error is recorded in the manifest of the file's content id
    (``input_error``), so that ``vcn ingest`` reports an unchanged file as failed without
    decoding it again.
    """
    movie_id = content_id(video_path)
    layout = MovieLayout.of(out_dir, movie_id)
    try:
        info = probe(video_path)
    except InputError as exc:
        record_input_error(layout, video_path, exc)
        raise
    models = find_models(config.model_dir or default_model_dir())
    layout.root.mkdir(parents=True, exist_ok=True)
    model_paths = {"detector": models.detector, "recognizer": models.recognizer}
    if config.ingest.detection.proposer == "yunet":
        model_paths["proposer"] = YUNET_PATH
    model_hashes = {role: file_hash(path) for role, path in model_paths.items()}
    ctx = MovieContext(
        video_path=str(Path(video_path).resolve()), movie_id=movie_id, out_root=str(layout.root), info=info,
        config=config, models=models, code_hash=code_hash(), model_hashes=model_hashes,
    )
    update_manifest(
        layout,
        movie_id=movie_id,
        input=InputRecord(
            path=ctx.video_path, size_bytes=Path(video_path).stat().st_size, content_id=movie_id,
            duration_s=info.duration_s, fps=info.fps, n_frames=info.n_frames,
            width=info.width, height=info.height, codec=info.codec,
            declared_frames=info.declared_frames, declared_exact=info.declared_exact,
        ),
        input_error=None,
        code=code_version(),
        packages=package_versions(),
        models={role: {"path": path, "blake2b": model_hashes[role]} for role, path in model_paths.items()},
        config=config.to_dict(),
    )
    return ctx


def chunk_plan(ctx: MovieContext) -> list[Chunk]:
    """The movie's chunks under its config."""
    return plan_chunks(ctx.info.n_frames, ctx.info.fps, ctx.config.ingest.chunk)


def _chunk_is_done(ctx: MovieContext, chunk: Chunk) -> bool:
    meta = chunk_metadata(ctx.layout, chunk.index)
    return meta is not None and meta.get("stage_hash") == ctx.stage_hash("tracks")


def _write_chunk(ctx: MovieContext, res: ChunkResult, precision: str) -> None:
    layout = ctx.layout
    owned = res.owned
    # Crops first, faces last: the faces file is the chunk's completion marker.
    write_crops(layout.chunk_crops(res.chunk.index), res.face_id[owned], res.crops[owned])
    write_chunk_faces(
        layout, res.chunk.index,
        {
            "face_id": res.face_id, "frame_idx": res.frame_idx, "t_sec": res.frame_idx / ctx.info.fps,
            "x1": res.boxes[:, 0], "y1": res.boxes[:, 1], "x2": res.boxes[:, 2], "y2": res.boxes[:, 3],
            "det_score": res.scores, "landmarks": res.landmarks.reshape(-1, 10), "sharpness": res.sharpness,
            "yaw": res.yaw, "second_look": res.second_look, "embedding": res.embeddings,
            "local_track": res.local_track, "owned": owned,
        },
        metadata={
            "chunk": vars(res.chunk), "cuts": res.cuts.tolist(), "n_frames": res.n_frames,
            "owned_frames": res.owned_frames, "bad_packets": res.bad_packets,
            "decode_error": res.decode_error,
            "timings": res.timings, "cpu_seconds": res.cpu, "recognizer_precision": precision,
            "stage_hash": ctx.stage_hash("tracks"),
            "code_hash": ctx.code_hash,
            "flow_run_id": str(flow_run.id), "written_at": now_iso(),
        },
    )


@task(
    name="ingest-chunk",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=is_transient,
    persist_result=False,
    task_run_name="ingest-chunk-{chunk.index}",
)
def ingest_chunk(ctx: MovieContext, chunk: Chunk, force: bool = False) -> dict[str, Any]:
    """Run stage 1 on one chunk and write its faces and crops; skip when already done
    (unless ``force``)."""
    if not force and _chunk_is_done(ctx, chunk):
        meta = chunk_metadata(ctx.layout, chunk.index) or {}
        return {"index": chunk.index, "computed": False, "n_frames": meta["n_frames"], "timings": {}}
    cfg = ctx.config.ingest
    models = face_models(ctx.models.detector, ctx.models.recognizer, cfg.detection, cfg.embedding)
    t0 = time.perf_counter()
    res = process_chunk(ctx.video_path, chunk, models, cfg, threads=worker_threads())
    check_chunk_decode(ctx.video_path, res, ctx.info.fps)
    _write_chunk(ctx, res, models.embedder.precision)
    return {
        "index": chunk.index, "computed": True, "n_frames": res.n_frames, "n_faces": int(res.owned.sum()),
        "seconds": time.perf_counter() - t0, "timings": res.timings, "cpu_seconds": res.cpu,
    }


@task(name="assemble-tracks", retries=1, retry_condition_fn=is_transient, persist_result=False)
def assemble_tracks(ctx: MovieContext, chunk_reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Stitch the chunks into movie-level faces, tracks and shots and write them."""
    logger = get_run_logger()
    started = now_iso()
    layout = ctx.layout
    chunks = [read_chunk_faces(layout, c.index) for c in chunk_plan(ctx)]
    decode = check_title_decode(chunks, ctx.info)
    if decode.warning:
        say(logger, "%s", decode.warning, level=logging.WARNING)
    movie = assemble_movie(chunks, ctx.movie_id, ctx.info.n_frames, ctx.info.fps, ctx.config.ingest)
    write_title_tables(layout, movie, ctx.info.fps)
    faces, tr, shots = movie.faces, movie.tracks, movie.shots
    # A chunk was computed by this run when its file says so: the file is the chunk's record.
    computed = sum(c.meta.get("flow_run_id") == str(flow_run.id) for c in chunks)
    rows = {"faces": len(faces["face_id"]), "tracks": len(tr.track_id), "shots": len(shots),
            "chunks": len(chunks), "chunks_computed": computed}
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for c in chunks:
        for k, v in c.meta.get("timings", {}).items():
            timings[k] = timings.get(k, 0.0) + v
        for k, v in c.meta.get("cpu_seconds", {}).items():
            cpu[k] = cpu.get(k, 0.0) + v
    # The engines' precision of the embeddings: bfloat16 where a worker's CPU has it.
    precision = sorted({c.meta.get("recognizer_precision", "unrecorded") for c in chunks})
    record_stage(layout, "tracks", stage_record(
        ctx, "tracks", status="completed", started=started, ended=now_iso(),
        flow_run_id=str(flow_run.id), task_run_id=str(task_run.id), rows=rows,
        outputs=["faces.parquet", "tracks.parquet", "shots.parquet", "crops"],
        extra={"chunk_seconds": timings, "chunk_cpu_seconds": cpu, "decode": decode.to_dict(),
               "recognizer_precision": precision},
    ))
    logger.info("movie %s: %s", ctx.movie_id, rows)  # the UI's line; the flow prints the stage's end
    return rows
