"""Cannot-link constraints: two tracks with faces in the same frame are two different people.

A detector's non-maximum suppression leaves at most one box per face, so two tracks that both
have a face on one frame show two people. This is a fact of the video, not a learnt or tuned
quantity, and it is the only negative evidence VideoClusterNet's stages use: it never enters the
self-supervised loss (the paper trains on positives only), it only vetoes links.

Without the veto, wrong coarse matches between co-occurring tracks merge several people into
one cluster (docs/method.md, departure 2).
"""

from __future__ import annotations

import numpy as np

from vcn.errors import InputError
from vcn.unionfind import DisjointSet


def cooccurring_pairs(frame_idx: np.ndarray, track_index: np.ndarray) -> np.ndarray:
    """Pairs of tracks that have a face on the same frame.

    Args:
        frame_idx: ``(N,)`` int frame of every face (all faces, not a sample).
        track_index: ``(N,)`` int track of every face, in ``0..T-1``.

    Returns:
        ``(P, 2)`` int64 unique pairs ``(a, b)`` with ``a < b``, sorted. Cost ``O(N log N + P)``:
        a frame with ``k`` faces gives ``k (k - 1) / 2`` pairs.
    """
    frame_idx = np.asarray(frame_idx)
    track_index = np.asarray(track_index)
    if frame_idx.shape != track_index.shape or frame_idx.ndim != 1:
        raise InputError(
            f"frame_idx and track_index must both be (N,), got {frame_idx.shape} and {track_index.shape}"
        )
    if len(frame_idx) and (track_index.min() < 0 or not np.issubdtype(track_index.dtype, np.integer)):
        raise InputError("track_index must hold integers 0..T-1")
    order = np.lexsort((track_index, frame_idx))
    frames, tracks = frame_idx[order], track_index[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]])
    sizes = np.diff(np.r_[starts, len(frames)])
    pairs = []
    # Frames grouped by how many faces they hold: one vectorised block per group size.
    for k in np.unique(sizes[sizes > 1]):
        first = starts[sizes == k]
        members = tracks[first[:, None] + np.arange(k)[None, :]]  # (F, k)
        a, b = np.triu_indices(int(k), 1)
        pairs.append(np.stack([members[:, a].ravel(), members[:, b].ravel()], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    p = np.sort(np.concatenate(pairs), axis=1)
    p = p[p[:, 0] != p[:, 1]]  # a track with two faces on one frame constrains nothing
    return np.unique(p, axis=0).reshape(-1, 2)


def drop_pairs(pairs: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """``pairs`` ``(M, 2)`` int without those listed in ``cannot_link`` ``(P, 2)`` (any order)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    cannot = np.sort(np.asarray(cannot_link, np.int64).reshape(-1, 2), axis=1)
    if len(pairs) == 0 or len(cannot) == 0:
        return pairs
    top = int(max(pairs.max(), cannot.max())) + 1
    key = np.sort(pairs, axis=1) @ np.array([top, 1])
    return pairs[~np.isin(key, cannot @ np.array([top, 1]))]


def group_pairs(pairs: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Track ``pairs`` ``(P, 2)`` int as pairs of their groups ``group`` ``(T,)`` int.

    Returns ``(Q, 2)`` int64 unique pairs ``a < b`` of distinct groups (a pair inside one group
    says nothing between groups).
    """
    p = np.sort(np.asarray(group, np.int64)[np.asarray(pairs, np.int64).reshape(-1, 2)], axis=1)
    return np.unique(p[p[:, 0] != p[:, 1]], axis=0).reshape(-1, 2)


def consistent_pairs(pairs: np.ndarray, distance: np.ndarray, n: int, cannot_link: np.ndarray) -> np.ndarray:
    """The pairs that stay once positives are made consistent with the cannot-links.

    Positives are transitive (A~B and B~C put A and C together), so a set of pairs can break a
    constraint that none of them breaks alone. Pairs are taken closest first and kept when
    :class:`ConstrainedMerger` accepts them (or their tracks are already together).

    Args:
        pairs: ``(M, 2)`` int track pairs in ``0..n-1``.
        distance: ``(M,)`` float, smaller = more certain.
        n: number of tracks.
        cannot_link: ``(P, 2)`` int pairs that may not end in one group.

    Returns:
        ``(M', 2)`` int64 kept pairs, in the input order.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0 or len(cannot_link) == 0:
        return pairs
    merger = ConstrainedMerger(n, cannot_link)
    keep = np.zeros(len(pairs), bool)
    for i in np.argsort(np.asarray(distance), kind="stable"):
        a, b = int(pairs[i, 0]), int(pairs[i, 1])
        keep[i] = merger.union(a, b) or merger.find(a) == merger.find(b)
    return pairs[keep]


class ConstrainedMerger:
    """Transitive merging of ``n`` items that never puts a cannot-link pair in one group.

    Links are applied in the order given (callers pass them closest first); a link whose two
    groups hold a cannot-link pair is skipped. Each group's representative keeps the set of
    representatives it may not join, so a check is a set lookup and a union merges two sets.
    """

    def __init__(self, n: int, cannot_link: np.ndarray) -> None:
        self._sets = DisjointSet(n)
        self._conflicts: dict[int, set[int]] = {}
        for a, b in np.asarray(cannot_link, np.int64).reshape(-1, 2):
            if a == b:
                continue
            self._conflicts.setdefault(int(a), set()).add(int(b))
            self._conflicts.setdefault(int(b), set()).add(int(a))

    def find(self, i: int) -> int:
        """Representative of ``i``'s group."""
        return self._sets.find(i)

    def union(self, a: int, b: int) -> bool:
        """Join the groups of ``a`` and ``b`` unless that breaks a constraint; True if joined."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb or rb in self._conflicts.get(ra, ()):
            return False
        self._sets.union(ra, rb)
        root = self.find(ra)
        gone = rb if root == ra else ra
        moved = self._conflicts.pop(gone, set())
        for other in moved:
            # Conflicts point at representatives: re-point the absorbed group's to the new root.
            peer = self._conflicts[other]
            peer.discard(gone)
            peer.add(root)
        if moved:
            self._conflicts.setdefault(root, set()).update(moved)
        return True

    def groups(self) -> np.ndarray:
        """``(n,)`` int64 group of every item, ``0..k-1`` in order of first appearance."""
        return self._sets.labels()
