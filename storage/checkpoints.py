"""Finetune checkpoints on disk: written atomically, so an interrupted finetune resumes.

``model/checkpoint.pt`` holds the latest resumable :class:`vcn.method.Checkpoint` (overwritten as
training goes); ``model/final.pt`` the finished one, whose hash goes into the manifest.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch

from storage.atomic import atomic_path
from storage.manifest import file_hash
from vcn.finetune import FinetuneState
from vcn.method import Checkpoint


def save_checkpoint(path: str | Path, ck: Checkpoint) -> str:
    """Write ``ck`` atomically to ``path``; return the file's hash."""
    blob = {
        "round": ck.round, "matches": np.asarray(ck.matches, np.int64), "history": ck.history,
        "done": ck.done, "state": dataclasses.asdict(ck.state) if ck.state is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return file_hash(path)


def load_checkpoint(path: str | Path) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is none (or it is unreadable)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None  # a foreign or damaged file is never trusted: start over
    state = FinetuneState(**blob["state"]) if blob["state"] is not None else None
    return Checkpoint(blob["round"], blob["matches"], state, list(blob["history"]), blob["done"])
