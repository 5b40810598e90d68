"""Stage 4 task: tracks → clusters; writes cluster ids into faces, tracks and clusters.parquet.

The clusters written are the method's with the library's corrections applied
(``vcn.library.corrections``): a reviewer's splits also enter the ``vcn`` clustering as cannot-links,
merges are unions after it, rejected tracks are unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.runtime import flow_run, task_run

from vcn.errors import StageError
from vcn.library.corrections import apply_to_labels, cannot_link_rows, for_movie
from vcn.method.clustering import hac
from vcn.method.constraints import cooccurring_pairs
from vcn.method.finetune import resolve_device
from vcn.method.vct import run_vct
from vcn.method.videoclusternet import cluster
from vcn.report.summary import TrackSummary, cluster_names, summarize_clusters
from vcn.storage import schemas
from vcn.storage.checkpoints import load_checkpoint
from vcn.storage.corrections import read_log
from vcn.storage.manifest import now_iso, record_stage
from vcn.storage.tables import read_face_columns, read_tracks, write_clusters
from vcn.tasks.context import MovieContext
from vcn.tasks.finetune import method_inputs, view_bank
from vcn.tasks.models import torch_threads, worker_address
from vcn.tasks.policies import is_transient
from vcn.tasks.stages import stage_record

Clustered = tuple[np.ndarray, np.ndarray | None, dict[str, Any]]


def _cluster_hac(ctx: MovieContext, tracks: TrackSummary, threads: int | None,
                 said_apart: np.ndarray) -> Clustered:
    """Labels (T,) of the HAC baseline on the tracks' mean embeddings (no quality, no unknowns);
    a reviewer's splits apply afterwards, with the rest of the log."""
    return hac(tracks.mean_embedding, threshold=ctx.config.cluster.hac_threshold), None, {}


def _cluster_vcn(ctx: MovieContext, tracks: TrackSummary, threads: int | None,
                 said_apart: np.ndarray) -> Clustered:
    """Labels (T,) (-1 = unknown) and SER-FIQ quality (T,) of the parameter-free clustering,
    with ``threads`` PyTorch threads (``vcn.tasks.models.torch_threads``); ``said_apart`` (P, 2)
    track rows a reviewer split, cannot-linked beside the tracks seen on one frame."""
    ck = load_checkpoint(ctx.layout.model_dir / "final.pt")
    if ck is None:
        raise StageError(f"{ctx.layout.model_dir / 'final.pt'}: no finetuned model; run `vcn rerun "
                         f"{ctx.layout.root} --from finetune`")
    inputs = method_inputs(ctx)
    state = ck.state
    if state is None:  # a single-track movie: nothing was finetuned
        raise StageError(f"{ctx.layout.root}: finetune produced no model; re-run with --from finetune")
    cannot = inputs.cannot_link
    if len(said_apart):
        cannot = np.unique(np.concatenate([cannot.reshape(-1, 2), said_apart]), axis=0)
    with torch_threads(threads):
        used = torch.get_num_threads()
        res = cluster(view_bank(ctx, inputs), state, inputs.track_index, ctx.config.method,
                      cannot_link=cannot, matches=ck.matches, set_aside=inputs.second_look)
    rounds = [vars(r) for r in res.result.rounds] if res.result is not None else []
    return res.labels, res.quality, {
        "merge_rounds": rounds, "unknown_tracks": int(res.unknown.sum()),
        "cannot_link_pairs": len(inputs.cannot_link),
        "start_groups": rounds[0]["clusters"] if rounds else 0, "lone_tracks_lifted": res.lifted,
        "lone_tracks_held": res.held, "clusters_linked": res.linked,
        "second_look_tracks": int(inputs.second_look.sum()), "second_look_attached": res.attached,
        "torch_threads": used, "device": str(resolve_device(ctx.config.method.finetune)),
    }


def _cluster_vct(ctx: MovieContext, tracks: TrackSummary, threads: int | None,
                 said_apart: np.ndarray) -> Clustered:
    """Labels (T,) (-1 = unknown) and quality (T,) of the ``vct`` method (:func:`vcn.method.vct.run_vct`)
    on the faces' frozen embeddings; the unknowns rule reads the detector score (median per
    track), which faces.parquet already holds, in place of SER-FIQ (it needs the crops and the
    recognizer); ``said_apart`` (P, 2) track pairs a reviewer split, kept apart like co-occurring
    ones."""
    c = read_face_columns(ctx.layout, ["track_id", "frame_idx", "det_score", "embedding"])
    index = tracks.index_of(c["track_id"].astype(object))
    cannot = cooccurring_pairs(c["frame_idx"], index)
    if len(said_apart):
        cannot = np.unique(np.concatenate([cannot.reshape(-1, 2), said_apart]), axis=0)
    cfg = ctx.config.cluster.vct
    with torch_threads(threads):
        used = torch.get_num_threads()
        res = run_vct(c["embedding"], index, c["frame_idx"], c["det_score"], cannot, cfg, ctx.config.seed)
    cl = res.clustering
    return cl.labels, cl.quality, {
        "unknown_tracks": int(cl.unknown.sum()), "cannot_link_pairs": len(cannot),
        "vct_steps": res.steps, "vct_final_loss": res.final_loss, "vct_seconds": round(res.seconds, 2),
        "vct_train_seconds": round(res.train_seconds, 2), "matched_positives": len(res.matches),
        "merge_rounds": cl.rounds, "clusters_linked": cl.linked, "quality": "det_score",
        "torch_threads": used, "device": "cpu",
    }


# Each method's clustering, by its name in vcn.method.registry.METHODS (tests check they agree).
CLUSTERERS: dict[str, Callable[..., Clustered]] = {
    "vcn": _cluster_vcn, "hac": _cluster_hac, "vct": _cluster_vct,
}


@task(name="cluster-tracks", retries=1, retry_condition_fn=is_transient, persist_result=False)
def cluster_tracks(ctx: MovieContext, threads: int | None = None) -> dict[str, Any]:
    """Cluster the movie's tracks with the configured method and write the results.

    ``threads``: PyTorch threads for the vcn and vct methods (``None``: the worker's ``VCN_THREADS``
    where set).
    """
    logger = get_run_logger()
    started = now_iso()
    layout = ctx.layout
    cfg = ctx.config.cluster
    tracks = read_tracks(layout)
    faces = read_face_columns(layout, ["face_id", "track_id", "embedding"])
    extra: dict[str, Any] = {}
    # The library's corrections that name this title's tracks (vcn.storage.corrections).
    said = for_movie(read_log(layout.root.parent), ctx.movie_id)
    if len(tracks.track_id) == 0:
        labels = np.zeros(0, np.int64)
    elif len(tracks.track_id) == 1:  # one track is one cluster, whatever the method
        labels = np.zeros(1, np.int64)
    else:
        apart = cannot_link_rows(said, ctx.movie_id, tracks.track_id)
        labels, quality, extra = CLUSTERERS[cfg.method](ctx, tracks, threads, apart)
        if quality is not None:
            tracks.quality = quality.astype(np.float32)
    if said:
        labels = apply_to_labels(labels, tracks.track_id, ctx.movie_id, said)
        # Beside the stamp's ``corrections`` digest, which decides whether the clusters are current.
        extra["corrections_applied"] = [c.id for c in said]
    track_cluster = cluster_names(labels, tracks.n_faces)
    row_of = tracks.index_of(faces["track_id"].astype(object))
    face_cluster = track_cluster[row_of] if len(row_of) else np.zeros(0, object)
    summary = summarize_clusters(
        tracks, track_cluster, faces["face_id"], row_of, faces["embedding"], ctx.info.fps,
        ctx.config.ingest.stride,
    )
    write_clusters(layout, face_cluster, track_cluster, tracks.quality, summary)
    n_clusters = int(np.sum(summary.cluster_id != schemas.UNKNOWN))
    rows = {"clusters": n_clusters, "unknown_tracks": int(np.sum(track_cluster == schemas.UNKNOWN))}
    record_stage(layout, "clusters", stage_record(
        ctx, "clusters", status="completed", started=started, ended=now_iso(),
        flow_run_id=str(flow_run.id), task_run_id=str(task_run.id), rows=rows,
        outputs=["faces.parquet", "tracks.parquet", "clusters.parquet"],
        extra={"method": cfg.method, "worker": worker_address(), **extra},
    ))
    logger.info("movie %s: %d clusters", ctx.movie_id, n_clusters)
    return rows
