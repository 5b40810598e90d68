"""Which stages of a movie must run, and the failure records of those that broke.

A stage is skipped when ``manifest.json`` says it completed with its current config section,
models and algorithm version (:mod:`vcn.versions`) and its outputs exist; it runs when it did not
(and :func:`stage_plan` says why), when the user names it (or an earlier stage) with ``--from``,
or when a stage before it runs. Editing the source changes none of this.
"""

from __future__ import annotations

import traceback
from typing import Any

from prefect.runtime import flow_run

from vcn.errors import ConfigError, InputError
from vcn.manifest import StageRecord
from vcn.storage.manifest import missing_outputs, now_iso, read_manifest, record_stage
from vcn.tasks.context import MovieContext

STAGES = ("tracks", "finetune", "clusters")


def stale_reason(ctx: MovieContext, stage: str, record: StageRecord | None) -> str | None:
    """Why ``stage`` must run again given its last ``record`` in the manifest; None when its
    output is current (same config section, models and stage version, outputs on disk)."""
    if record is None:
        return "never run"
    if record.status == "failed":
        return f"previous failure ({record.error if record.error is not None else 'unknown error'})"
    if record.status != "completed":
        return f"previous run did not finish ({record.status})"
    stamp = ctx.stage_stamp(stage)
    if record.stage_version is None:
        return "made by a vcn without stage versions"
    why = []
    if record.stage_version != stamp["stage_version"]:
        changed = [f"{s} {record.stage_version.get(s)} -> {v}" for s, v in stamp["stage_version"].items()
                   if record.stage_version.get(s) != v]
        why.append(f"stage version changed ({', '.join(changed)})")
    if record.config_hash != stamp["config_hash"]:
        why.append("config changed")
    if record.models_hash != stamp["models_hash"]:
        why.append("models changed")
    if record.corrections != stamp.get("corrections"):
        why.append("corrections changed")
    if not why and record.stage_hash != ctx.stage_hash(stage):
        why.append("stage hash changed")
    missing = missing_outputs(ctx.layout, record)
    if missing:
        why.append(f"output missing ({', '.join(missing)})")
    return "; ".join(why) or None


def stage_plan(ctx: MovieContext, rerun_from: str | None = None) -> dict[str, str | None]:
    """Map each stage to why it must run now, or None when its finished output is reused.

    A stage runs when its own output is stale (:func:`stale_reason`), when the user names it or
    an earlier stage with ``--from``, or when a stage before it runs.
    """
    if rerun_from is not None and rerun_from not in STAGES:
        raise ConfigError(f"unknown stage {rerun_from!r} for --from; stages are {', '.join(STAGES)}")
    records = read_manifest(ctx.layout).stages
    plan: dict[str, str | None] = {}
    upstream: str | None = None
    for stage in ctx.config.stages():
        if rerun_from is not None and STAGES.index(stage) >= STAGES.index(rerun_from):
            plan[stage] = f"forced (--from {rerun_from})"
        elif upstream is not None:
            plan[stage] = f"{upstream} runs"
        else:
            plan[stage] = stale_reason(ctx, stage, records.get(stage))
        if plan[stage] is not None and upstream is None:
            upstream = stage
    return plan


def stages_to_run(ctx: MovieContext, rerun_from: str | None = None) -> dict[str, bool]:
    """Map each stage to whether it must run now (see :func:`stage_plan`)."""
    return {stage: why is not None for stage, why in stage_plan(ctx, rerun_from).items()}


def stage_record(ctx: MovieContext, stage: str, **fields: Any) -> StageRecord:
    """A record of ``stage`` carrying the hashes of what its output is made with
    (:meth:`MovieContext.stage_stamp`, the stage hash, the code hash) and the other ``fields``."""
    return StageRecord(stage=stage, **ctx.stage_stamp(stage), stage_hash=ctx.stage_hash(stage),
                       code_hash=ctx.code_hash, **fields)


def previous_rows(ctx: MovieContext, stage: str) -> dict:
    """Row counts a skipped stage reported when it completed."""
    return dict(read_manifest(ctx.layout).stages[stage].rows or {})


def record_failure(ctx: MovieContext, stage: str, exc: BaseException) -> None:
    """Mark ``stage`` failed in the manifest, with the error, so ``vcn rerun`` picks it up."""
    record_stage(ctx.layout, stage, stage_record(
        ctx, stage, status="failed", ended=now_iso(), flow_run_id=str(flow_run.id),
        error=f"{type(exc).__name__}: {exc}", input_error=isinstance(exc, InputError),
        traceback="".join(traceback.format_exception(exc))[-4000:],
    ))
