"""Finetune checkpoints on disk: written atomically, so an interrupted finetune resumes.

``model/checkpoint.pt`` holds the latest resumable
:class:`vcn.method.videoclusternet.Checkpoint` (overwritten as training goes); ``model/final.pt``
the finished one, whose hash goes into the manifest.

A title's folder sits on storage that other accounts may write, so reading a checkpoint never
runs code: a file holds only tensors and plain values (numbers, strings, None, lists, tuples,
dicts) and is read with ``torch.load(..., weights_only=True)``, PyTorch's unpickler that builds
nothing else. A file it refuses, or whose layout is not a checkpoint's, raises
:class:`vcn.errors.CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vcn.errors import CheckpointError
from vcn.method.finetune import FinetuneState
from vcn.method.videoclusternet import Checkpoint
from vcn.storage.atomic import atomic_path
from vcn.storage.manifest import file_hash

FORMAT = "vcn-checkpoint/1"


def _plain(value: Any) -> Any:
    """``value`` as tensors and plain values only (numpy arrays become tensors, numpy scalars
    Python numbers), so that what :func:`save_checkpoint` writes :func:`load_checkpoint` reads."""
    if value is None or isinstance(value, (torch.Tensor, bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    raise TypeError(f"a checkpoint holds tensors and plain values only, not {type(value).__name__}")


def save_checkpoint(path: str | Path, ck: Checkpoint) -> str:
    """Write ``ck`` atomically to ``path``; return the file's hash."""
    state = None if ck.state is None else {f.name: getattr(ck.state, f.name)
                                           for f in dataclasses.fields(FinetuneState)}
    blob = _plain({
        "format": FORMAT, "round": ck.round, "matches": np.asarray(ck.matches, np.int64).reshape(-1, 2),
        "history": ck.history, "done": ck.done, "state": state,
    })
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return file_hash(path)


def _refuse(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a checkpoint vcn can read ({why}); it must hold only tensors and plain values. "
        f"Delete it and re-run the finetune: `vcn rerun {path.parent.parent} --from finetune`"
    )


def load_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none.

    Raises :class:`vcn.errors.CheckpointError` (naming the file) when the file is damaged,
    foreign, or holds anything but tensors and plain values; nothing in it is run.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise _refuse(path, f"{type(exc).__name__}: {first[:200]}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise _refuse(path, f"no {FORMAT!r} format tag")
    try:
        matches = blob["matches"]
        if not isinstance(matches, torch.Tensor) or matches.dtype != torch.int64 or matches.ndim != 2:
            raise TypeError("matches must be an int64 (M, 2) tensor")
        raw = blob["state"]
        state = None if raw is None else FinetuneState(**raw)
        if state is not None and not all(isinstance(getattr(state, k), torch.Tensor)
                                         for k in ("center", "generator")):
            raise TypeError("the finetune state's centre and generator must be tensors")
        history = list(blob["history"])
        return Checkpoint(int(blob["round"]), matches.numpy(), state, history, bool(blob["done"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise _refuse(path, f"{type(exc).__name__}: {exc}") from None
