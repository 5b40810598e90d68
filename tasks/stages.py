"""Which stages of a movie must run, and the failure records of those that broke.

A stage is skipped when ``manifest.json`` says it completed with the current config and code and
its outputs exist; it runs when it did not, when the user names it (or an earlier stage) with
``--from``, or when a stage before it runs.
"""

from __future__ import annotations

import traceback

from prefect.runtime import flow_run

from storage.manifest import now_iso, read_manifest, record_stage, stage_is_complete
from tasks.context import MovieContext
from vcn.errors import ConfigError, InputError

STAGES = ("tracks", "finetune", "clusters")


def stages_to_run(ctx: MovieContext, rerun_from: str | None = None) -> dict[str, bool]:
    """Map each stage to whether it must run now."""
    if rerun_from is not None and rerun_from not in STAGES:
        raise ConfigError(f"unknown stage {rerun_from!r} for --from; stages are {', '.join(STAGES)}")
    plan: dict[str, bool] = {}
    upstream_runs = False
    for stage in ctx.config.stages():
        forced = rerun_from is not None and STAGES.index(stage) >= STAGES.index(rerun_from)
        done = stage_is_complete(ctx.layout, stage, ctx.stage_hash(stage), ctx.code_hash)
        plan[stage] = forced or upstream_runs or not done
        upstream_runs = upstream_runs or plan[stage]
    return plan


def previous_rows(ctx: MovieContext, stage: str) -> dict:
    """Row counts a skipped stage reported when it completed."""
    return dict(read_manifest(ctx.layout)["stages"][stage].get("rows", {}))


def record_failure(ctx: MovieContext, stage: str, exc: BaseException) -> None:
    """Mark ``stage`` failed in the manifest, with the error, so ``vcn rerun`` picks it up."""
    record_stage(ctx.layout, stage, {
        "status": "failed", "ended": now_iso(), "flow_run_id": str(flow_run.id),
        "error": f"{type(exc).__name__}: {exc}", "input_error": isinstance(exc, InputError),
        "traceback": "".join(traceback.format_exception(exc))[-4000:],
        "config_hash": ctx.stage_hash(stage), "code_hash": ctx.code_hash,
    })
