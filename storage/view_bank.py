"""The view bank on disk (``model/views.npz``): written once by the finetune, read by clustering.

Plain arrays only (``allow_pickle=False``), with the key of what they were computed from, so a
bank of other crops, seed or views is never reused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vcn.errors import InputError
from vcn.method.view_bank import ViewBank
from vcn.storage.atomic import atomic_path


def save_view_bank(path: str | Path, bank: ViewBank, key: str) -> None:
    """Write ``bank`` atomically to ``path`` with its ``key`` (what it was computed from)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, match=bank.match, thresh=bank.thresh, quality=bank.quality, key=np.array(key))


def load_view_bank(path: str | Path, key: str) -> ViewBank | None:
    """The bank at ``path`` when it exists, reads as plain arrays and has ``key``; else None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return ViewBank(z["match"], z["thresh"], z["quality"])
    except (OSError, ValueError, KeyError, InputError):
        return None  # a damaged or foreign file is recomputed, never trusted
