"""Stages 2-3 task: self-supervised finetune alternating with coarse track matching.

Runs on a Dask worker (a GPU worker when the cluster advertises one). Checkpoints go to
``model/checkpoint.pt`` as training goes, so a killed finetune resumes where it stopped; a
checkpoint that ``vcn.storage.checkpoints`` refuses is logged, recorded in the manifest, and the
finetune starts over.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run, task_run

from vcn.errors import CheckpointError
from vcn.faces.backbone import load_backbone
from vcn.method.constraints import cooccurring_pairs
from vcn.method.finetune import resolve_device
from vcn.method.matching import sample_rows
from vcn.method.track_quality import second_look_tracks
from vcn.method.videoclusternet import Checkpoint, adapt, bank_for
from vcn.method.view_bank import ViewBank
from vcn.storage.checkpoints import load_checkpoint, save_checkpoint
from vcn.storage.crops import read_crops
from vcn.storage.manifest import now_iso, record_stage
from vcn.storage.tables import read_face_columns, read_track_ids
from vcn.storage.view_bank import load_view_bank, save_view_bank
from vcn.tasks.context import MovieContext
from vcn.tasks.models import torch_threads, worker_address
from vcn.tasks.policies import is_transient
from vcn.tasks.progress import Progress
from vcn.tasks.stages import stage_record


@dataclass(frozen=True)
class MethodInputs:
    """What stages 2-4 read of a movie, in one pass over faces.parquet.

    track_index: (M,) int64 rows of tracks.parquet of the sampled faces; face_ids: (M,) their
    ids (the crops are read only when the view bank must be computed: they take 37 KB a face);
    cannot_link: (P, 2) int64 track rows with faces on one frame (from all faces, not the
    sample); faces_digest: a hash of the sampled face ids; second_look: (T,) bool tracks with a
    face that only the detector's second look found, which stage 4 sets aside.
    """

    track_index: np.ndarray
    face_ids: np.ndarray
    cannot_link: np.ndarray
    faces_digest: str
    second_look: np.ndarray


def method_inputs(ctx: MovieContext) -> MethodInputs:
    """Sample each track's faces and list the co-occurring tracks."""
    layout = ctx.layout
    faces = read_face_columns(layout, ["face_id", "track_id", "frame_idx", "second_look"])
    row_of = {t: i for i, t in enumerate(read_track_ids(layout))}
    index = np.fromiter((row_of[t] for t in faces["track_id"]), np.int64, len(faces["track_id"]))
    rows = sample_rows(index, ctx.config.method.faces_per_track)
    face_ids = faces["face_id"][rows]
    digest = hashlib.blake2b("\n".join(map(str, face_ids)).encode(), digest_size=16).hexdigest()
    return MethodInputs(index[rows], face_ids, cooccurring_pairs(faces["frame_idx"], index), digest,
                        second_look_tracks(faces["second_look"], index, len(row_of)))


def view_bank(ctx: MovieContext, inputs: MethodInputs) -> ViewBank:
    """The movie's view bank: ``model/views.npz`` when it was made from these inputs, else
    computed from the sampled faces' crops (generic recognizer, on the task's device) and
    written there."""
    path = ctx.layout.model_dir / "views.npz"
    key = f"{ctx.stage_hash('finetune')}-{ctx.config.seed}-{inputs.faces_digest}"
    bank = load_view_bank(path, key)
    if bank is None:
        backbone = load_backbone(ctx.models.recognizer)
        crops = read_crops(ctx.layout.crops_dir, inputs.face_ids)
        bank = bank_for(backbone, crops, ctx.config.method, ctx.config.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_view_bank(path, bank, key)
    return bank


@task(name="finetune", retries=1, retry_condition_fn=is_transient, persist_result=False)
def finetune_model(ctx: MovieContext, threads: int | None = None) -> dict[str, Any]:
    """Adapt the recognizer to the movie; write ``model/final.pt``; record rounds and losses.

    ``threads``: PyTorch threads for the run (``None``: the worker's ``VCN_THREADS`` where set).
    """
    logger = get_run_logger()
    started = now_iso()
    layout = ctx.layout
    layout.model_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = layout.model_dir / "checkpoint.pt"
    t0 = time.perf_counter()
    inputs = method_inputs(ctx)
    seconds = {"inputs": time.perf_counter() - t0}  # where the stage's time goes, part by part
    index = inputs.track_index
    rows: dict[str, Any] = {"faces_sampled": len(index), "tracks": int(index.max()) + 1 if len(index) else 0}
    resumed_at: int | None = None  # the step a resumed checkpoint had reached
    refused: str | None = None  # why checkpoint.pt was not used, when it was not
    if len(np.unique(index)) < 2:
        # Nothing to learn from a single track: the generic model stands.
        ck = Checkpoint(round=0, matches=np.zeros((0, 2), np.int64), state=None, done=True)
    else:
        resume = None
        try:
            resume = load_checkpoint(ckpt_path)
        except CheckpointError as exc:
            # Nothing of a refused file is used: the finetune starts from the generic model.
            refused = str(exc)
            logger.warning("%s; starting the finetune over", refused)
        if resume is not None and resume.state is not None and resume.state.seed != ctx.config.seed:
            resume = None
        if resume is not None:
            resumed_at = resume.state.step if resume.state else 0
            logger.info("resuming finetune at round %d, step %d", resume.round, resumed_at)
        progress = create_progress_artifact(0.0, description=f"finetune of {ctx.movie_id}, current round")
        name = Path(ctx.video_path).name
        # When each round started, and at which step (a resumed round starts mid-way).
        round_start = {resume.round if resume else 0: (time.monotonic(), resume.state.step if resume and
                                                         resume.state else 0)}
        rounds: dict[int, Progress] = {}

        def on_checkpoint(c: Checkpoint) -> None:
            save_checkpoint(ckpt_path, c)
            if c.state is None:  # matching done, the next round's finetune starts
                round_start[c.round] = (time.monotonic(), 0)
                return
            total = max(c.state.head_steps + c.state.joint_steps, 1)
            update_progress_artifact(progress, 100.0 * c.state.step / total,
                                     description=f"finetune of {ctx.movie_id}, round {c.round + 1}")
            if c.round not in rounds:  # a line every 10 % of the round's steps, as checkpoints come
                t0, first = round_start.get(c.round, (time.monotonic(), c.state.step))
                rounds[c.round] = Progress(logger, f"{name}: finetune round {c.round + 1}", total, "steps",
                                           done=first, started=t0)
            rounds[c.round].update(c.state.step)

        rows["cannot_link_pairs"] = len(inputs.cannot_link)
        with torch_threads(threads):
            rows["torch_threads"] = torch.get_num_threads()
            t0 = time.perf_counter()
            bank = view_bank(ctx, inputs)
            t1 = time.perf_counter()
            ck = adapt(bank, index, ctx.config.method, ctx.config.seed,
                       resume=resume, on_checkpoint=on_checkpoint, cannot_link=inputs.cannot_link)
            seconds.update(view_bank=t1 - t0, adapt=time.perf_counter() - t1)
    digest = save_checkpoint(layout.model_dir / "final.pt", ck)
    ckpt_path.unlink(missing_ok=True)
    rows.update({"rounds": len(ck.history), "matches": len(ck.matches)})
    record_stage(layout, "finetune", stage_record(
        ctx, "finetune", status="completed", started=started, ended=now_iso(),
        flow_run_id=str(flow_run.id), task_run_id=str(task_run.id), rows=rows, outputs=["model/final.pt"],
        extra={"checkpoint_blake2b": digest, "rounds": ck.history, "seconds": seconds,
               "device": str(resolve_device(ctx.config.method.finetune)), "worker": worker_address(),
               "resumed_at_step": resumed_at, "checkpoint_refused": refused},
    ))
    return rows
