"""The records of ``manifest.json``: a title's lineage and its stages' runs, as typed dataclasses.

A :class:`Manifest` holds what went in (the probed input file, :class:`InputRecord`, or why the
file is not a usable video, :class:`InputFailure`; the code, package and model versions; the full
config) and, per stage, the latest run (:class:`StageRecord`) plus every run in order.

``to_json`` gives the JSON object stored in ``manifest.json``; ``from_json`` reads any manifest
vcn writes, older ones included: a missing key takes its default and a key a record does not name
is kept in its ``extra`` and written back as it was, so reading and rewriting a manifest keeps
every key. Pure data: reading and writing the file (locks, atomic replace) is
:mod:`vcn.storage.manifest`'s job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

_R = TypeVar("_R", bound="_Flat")


class _Flat:
    """A record whose JSON object is its named fields plus its ``extra`` keys, side by side."""

    extra: dict[str, Any]

    def __post_init__(self) -> None:
        clash = set(self.extra) & set(self._named())
        if clash:
            raise ValueError(f"{type(self).__name__}.extra repeats named fields: {sorted(clash)}")

    @classmethod
    def _named(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "extra")

    @classmethod
    def _split(cls, obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``obj``'s keys that name a field, and the others (the record's ``extra``)."""
        names = set(cls._named())
        return ({k: v for k, v in obj.items() if k in names},
                {k: v for k, v in obj.items() if k not in names})

    @classmethod
    def from_json(cls: type[_R], obj: dict[str, Any]) -> _R:
        named, extra = cls._split(obj)
        return cls(**named, extra=extra)

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, **{k: getattr(self, k) for k in self._named()}}


@dataclass(frozen=True)
class InputRecord(_Flat):
    """The input file as ``prepare-movie`` probed it (:class:`vcn.media.video.VideoInfo` plus the file's
    size and content id). ``to_json`` writes every field."""

    path: str = ""
    size_bytes: int | None = None
    content_id: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    declared_frames: int | None = None
    declared_exact: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputFailure(_Flat):
    """A file that could not be opened or probed: its resolved ``path``, the ``error`` as
    ``Type: message`` and when it was recorded (ISO 8601, UTC)."""

    path: str = ""
    error: str = ""
    recorded_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRecord(_Flat):
    """One run of a stage.

    ``status``: ``completed`` or ``failed``; times are ISO 8601 (UTC). The stamp fields
    (``stage_version`` per stage, ``config_hash``, ``models_hash``, ``corrections``) and their
    digest ``stage_hash`` say what the output was made with; ``code_hash`` is lineage only.
    ``rows``: the stage's row counts; ``outputs``: its files, relative to the movie's folder. A
    failed run carries ``error`` (``Type: message``), ``input_error`` (the input file is at fault)
    and the ``traceback``. ``extra``: the stage's own facts (``chunk_seconds``, ``decode``,
    ``merge_rounds``, ...), flattened into the JSON object. ``to_json`` leaves out the named fields
    that are None.
    """

    stage: str | None = None
    status: str | None = None
    recorded_at: str | None = None
    started: str | None = None
    ended: str | None = None
    flow_run_id: str | None = None
    task_run_id: str | None = None
    stage_hash: str | None = None
    code_hash: str | None = None
    stage_version: dict[str, int] | None = None
    config_hash: str | None = None
    models_hash: str | None = None
    corrections: str | None = None
    rows: dict[str, Any] | None = None
    outputs: list[str] | None = None
    error: str | None = None
    input_error: bool | None = None
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_json().items() if v is not None or k in self.extra}


@dataclass(frozen=True)
class Manifest(_Flat):
    """A movie's ``manifest.json``.

    ``input`` is set once the file was probed, ``input_error`` when it could not be; ``code``
    (``vcn_version``, ``git_commit``, ``code_hash``), ``packages`` (name -> version), ``models``
    (``detector``/``recognizer`` -> ``path``, ``blake2b``) and ``config``
    (:meth:`vcn.config.PipelineConfig.to_dict`) are set with the input. ``stages``: each stage's
    latest run; ``history``: every run, oldest first. ``to_json`` leaves out the sections that are
    None, but writes ``input_error`` (null) beside a probed ``input``: the probe cleared it.
    """

    movie_id: str = ""
    input: InputRecord | None = None
    input_error: InputFailure | None = None
    code: dict[str, str] | None = None
    packages: dict[str, str] | None = None
    models: dict[str, dict[str, str]] | None = None
    config: dict[str, Any] | None = None
    stages: dict[str, StageRecord] = field(default_factory=dict)
    history: list[StageRecord] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def input_path(self) -> str | None:
        """The input file this title was made from, probed or not (None when none is recorded)."""
        for rec in (self.input, self.input_error):
            if rec is not None and rec.path:
                return rec.path
        return None

    def with_stage(self, record: StageRecord) -> Manifest:
        """This manifest with ``record`` as its stage's latest run, appended to the history."""
        if not record.stage:
            raise ValueError("a stage record names its stage")
        return dataclasses.replace(self, stages={**self.stages, record.stage: record},
                                   history=[*self.history, record])

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Manifest:
        named, extra = cls._split(obj)
        inp, err = named.get("input"), named.get("input_error")
        return cls(
            movie_id=named.get("movie_id", ""),
            input=InputRecord.from_json(inp) if inp else None,
            input_error=InputFailure.from_json(err) if err else None,
            code=named.get("code"), packages=named.get("packages"), models=named.get("models"),
            config=named.get("config"),
            stages={name: StageRecord.from_json(r) for name, r in (named.get("stages") or {}).items()},
            history=[StageRecord.from_json(r) for r in named.get("history") or []],
            extra=extra,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.extra, "movie_id": self.movie_id}
        if self.input is not None:
            out["input"] = self.input.to_json()
        if self.input_error is not None or self.input is not None:
            out["input_error"] = self.input_error.to_json() if self.input_error is not None else None
        for key in ("code", "packages", "models", "config"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["stages"] = {name: r.to_json() for name, r in self.stages.items()}
        out["history"] = [r.to_json() for r in self.history]
        return out
