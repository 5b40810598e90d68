"""Set-to-set distances whose statistics aggregate by summation (for parameter-free clustering).

Everything rests on set distances that are *bilinear in per-set sums*, so a merged cluster's
statistics are the sums of its parts and nothing is recomputed from faces:

- cosine: mean pairwise cosine distance ``1 - mbar_A . mbar_B`` of L2-normalised embeddings
  (average linkage); statistics: count, ``sum e``.
- euclidean: mean pairwise *squared* Euclidean distance ``q_A/n_A + q_B/n_B - 2 mbar_A . mbar_B``
  (``q = sum |x|^2``), on the embeddings as given. For unit-norm embeddings this is exactly twice
  the cosine distance, thresholds included, so the two give the same partition; they differ only
  on un-normalised features.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy import sparse

from vcn.errors import ConfigError, InputError
from vcn.method.matching import check_track_index


class DistanceModel(ABC):
    """A set-to-set distance whose statistics aggregate by summation.

    Statistics are one ``(C, F)`` float64 row per set; column 0 is the number of faces. A merged
    set's row is the sum of its parts' rows.
    """

    @abstractmethod
    def bilinear(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(left (C, G), right (C, G), offset (C,))`` such that the mean cross-pair
        distance of sets ``i`` and ``j`` is ``offset_i + offset_j + left_i . right_j``."""

    @abstractmethod
    def pair_total(self, stats: np.ndarray) -> np.ndarray:
        """Return ``(C,)`` the sum of ``d(a, b)`` over ordered pairs ``a != b`` inside each set."""


class CosineDistance(DistanceModel):
    """Mean pairwise cosine distance; stats ``[n, sum e (D)]`` of unit vectors ``e``."""

    def bilinear(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = stats[:, 1:] / stats[:, :1]
        return mean, -mean, np.full(len(stats), 0.5)

    def pair_total(self, stats: np.ndarray) -> np.ndarray:
        n = stats[:, 0]
        return n * n - np.einsum("cd,cd->c", stats[:, 1:], stats[:, 1:])


class EuclideanDistance(DistanceModel):
    """Mean pairwise squared Euclidean distance; stats ``[n, sum |x|^2, sum x (D)]``."""

    def bilinear(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = stats[:, 2:] / stats[:, :1]
        return mean, -2.0 * mean, stats[:, 1] / stats[:, 0]

    def pair_total(self, stats: np.ndarray) -> np.ndarray:
        n = stats[:, 0]
        return 2.0 * n * stats[:, 1] - 2.0 * np.einsum("cd,cd->c", stats[:, 2:], stats[:, 2:])


def _membership(track_index: np.ndarray, n_tracks: int, dtype: type = np.float64) -> sparse.csr_matrix:
    n = len(track_index)
    return sparse.csr_matrix((np.ones(n, dtype), (track_index, np.arange(n))), shape=(n_tracks, n))


def _n_tracks(track_index: np.ndarray) -> int:
    if len(track_index) == 0:
        raise InputError("no faces to cluster: track_index is empty")
    n_tracks = int(track_index.max()) + 1
    if np.any(np.bincount(track_index, minlength=n_tracks) == 0):
        raise InputError(
            "track_index must use every track id 0..T-1 at least once; renumber tracks after "
            "dropping faces (e.g. np.unique(track_index, return_inverse=True))"
        )
    return n_tracks


def embedding_track_stats(embeddings: np.ndarray, track_index: np.ndarray, metric: str) -> np.ndarray:
    """Per-track statistics of the ``cosine`` or ``euclidean`` distance.

    Args:
        embeddings: ``(N, D)`` float face embeddings; ``cosine`` L2-normalises them first.
        track_index: ``(N,)`` int track of each face, every id in ``0..T-1`` used.
        metric: ``cosine`` or ``euclidean``.

    Returns:
        ``(T, D + 1)`` float64 ``[n, sum e]`` (cosine) or ``(T, D + 2)`` ``[n, sum |x|^2, sum x]``.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"embeddings must have shape (N, D), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("embeddings hold NaN or inf; drop those faces before clustering")
    track_index = check_track_index(track_index, len(x))
    n_tracks = _n_tracks(track_index)
    member = _membership(track_index, n_tracks)
    count = member @ np.ones((len(x), 1))
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if np.any(norms == 0):
            raise InputError("an embedding is all zeros; cosine distance is undefined for it")
        return np.concatenate([count, member @ (x / norms)], axis=1)
    if metric == "euclidean":
        sq = np.einsum("nd,nd->n", x, x)
        return np.concatenate([count, (member @ sq)[:, None], member @ x], axis=1)
    raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def distance_model(metric: str) -> DistanceModel:
    """The :class:`DistanceModel` of an embedding ``metric``: ``cosine`` or ``euclidean``."""
    if metric == "cosine":
        return CosineDistance()
    if metric == "euclidean":
        return EuclideanDistance()
    raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
