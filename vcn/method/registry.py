"""The clustering methods, by name: the one place that says what each method runs.

A method is a name, a line for the CLI's help, whether a per-title finetune stage runs before
its clustering, the :class:`vcn.config.ClusterConfig` field that holds its own settings (part
of the clusters stage's config only under that method), and whether its clustering goes to a GPU
worker when one is there. The CLI's choices, :class:`vcn.config.PipelineConfig`'s stages and
stage configs, the flow and the cluster task all read this table. Adding a method is its module,
one entry here and its clustering function in ``vcn.tasks.cluster.CLUSTERERS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcn.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """One clustering method (see the module docstring)."""

    name: str
    summary: str
    finetune: bool = False
    settings: str | None = None
    gpu: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("vcn", "VideoClusterNet: per-title finetune, coarse track matching, parameter-free "
                  "clustering (the default, docs/method.md)", finetune=True, gpu=True),
    Method("hac", "average-linkage HAC on track means at cosine hac_threshold (the faster baseline)"),
    Method("vct", "a track-sequence transformer trained on the title, then parameter-free clustering",
           settings="vct"),
)}
DEFAULT_METHOD = "vcn"


def get_method(name: str) -> Method:
    """The method called ``name``; :class:`vcn.errors.ConfigError` naming the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown clustering method {name!r}; choose one of {', '.join(METHODS)}") from None


def cli_help() -> str:
    """The ``--method`` help: each method's name and summary."""
    return "clustering method: " + "; ".join(f"{m.name} = {m.summary}" for m in METHODS.values())
