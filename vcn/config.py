"""The pipeline's configuration: the per-component configs, composed.

Each component owns a frozen dataclass next to its code (``ShotConfig`` in shots.py, ...); this
module only composes them and fingerprints them, so that caches and the manifest can tell whether
a stage's output was made with the config in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from vcn.errors import ConfigError
from vcn.faces.ingest import IngestConfig
from vcn.method.registry import DEFAULT_METHOD, METHODS, get_method
from vcn.method.vct import VctConfig
from vcn.method.videoclusternet import MethodConfig


@dataclass(frozen=True)
class ClusterConfig:
    """How tracks become clusters.

    ``method``: ``vcn`` (the default: self-supervised finetune, coarse track matching and
    parameter-free clustering, docs/method.md), ``hac`` (the baseline: average-linkage HAC on
    the cosine distance of track means, cut at ``hac_threshold``; several times faster, and
    behind ``vcn`` on degraded footage) or ``vct`` (a sequence transformer over each track's
    face embeddings, trained on the title, then parameter-free clustering; ``vcn.method.vct``).
    ``hac_threshold``: cosine-distance cut of the HAC baseline.
    ``vct``: the ``vct`` method's config (part of the clusters stage's config only under it).
    """

    method: str = DEFAULT_METHOD
    hac_threshold: float = 0.6
    vct: VctConfig = field(default_factory=VctConfig)

    def __post_init__(self) -> None:
        get_method(self.method)
        if not 0.0 < self.hac_threshold < 2.0:
            raise ConfigError(f"hac_threshold must be in (0, 2), got {self.hac_threshold}")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes a movie's outputs. ``model_dir`` None = the bundled models."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    model_dir: str | None = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, overrides: dict[str, Any]) -> PipelineConfig:
        """Build a config from nested overrides of the defaults, e.g.
        ``{"ingest": {"stride": 2}, "cluster": {"method": "hac"}}``. Unknown keys raise
        :class:`ConfigError` naming them."""
        return _build(cls, overrides, "config")

    def stages(self) -> tuple[str, ...]:
        """The stages this config runs, in order."""
        if get_method(self.cluster.method).finetune:
            return ("tracks", "finetune", "clusters")
        return ("tracks", "clusters")

    def stage_config(self, stage: str) -> dict[str, Any]:
        """The part of the config a stage's output depends on."""
        if stage == "tracks":
            ingest = dataclasses.asdict(self.ingest)
            ingest["detection"] = self.ingest.detection.output_settings()
            return {"ingest": ingest, "model_dir": self.model_dir}
        if stage == "finetune":
            return {"method": dataclasses.asdict(self.method), "seed": self.seed,
                    "upstream": self.stage_config("tracks")}
        if stage == "clusters":
            method = get_method(self.cluster.method)
            upstream = "finetune" if method.finetune else "tracks"
            cluster = dataclasses.asdict(self.cluster)
            for other in METHODS.values():  # other methods' settings shape nothing here
                if other.settings and other.settings != method.settings:
                    cluster.pop(other.settings)
            return {"cluster": cluster, "seed": self.seed,
                    "upstream": self.stage_config(upstream)}
        raise ConfigError(f"unknown stage {stage!r}")


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses are converted first)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()


def _build(cls: type, overrides: dict[str, Any], where: str, base: Any = None) -> Any:
    """``base`` (default: ``cls()``) with ``overrides`` applied; a nested section overrides the
    parent's default for it, so a field the section leaves out keeps that default, not the
    nested class's own (e.g. ``MethodConfig.matching`` is mutual)."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(overrides).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"unknown {where} keys {unknown}; known: {sorted(names)}")
    base = cls() if base is None else base
    kwargs = {}
    for key, value in overrides.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            kwargs[key] = _build(hint, value, f"{where}.{key}", getattr(base, key))
        else:
            # JSON has no tuples; configs must stay hashable (they key model caches).
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **kwargs)
