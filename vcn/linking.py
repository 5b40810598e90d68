"""Joining a person's fragments that stage 4 leaves apart: a cluster whose nearest cluster is a
larger one, lying within the extent that cluster's own tracks span.

Stage 4 merges only what each cluster's own spread admits, so a lead whose looks vary widely
(make-up, years, light) ends as one large cluster and a few small fragments. A fragment's
nearest cluster is then the lead; for a guest it is somebody else. The video says which: a
large cluster's own tracks show how far from its centre this person's looks reach (its
*extent*, the largest distance of a member track's mean from the cluster's mean), while a
guest's one or two tracks span almost nothing. A cluster joins its nearest cluster when that
one has at least as many tracks and the distance between their means is within its extent;
never across a cannot-link, closest first, in one pass (an extent grown by a join is not used
to join more).
"""

from __future__ import annotations

import numpy as np

from vcn.constraints import ConstrainedMerger, group_pairs
from vcn.errors import InputError
from vcn.matching import index_sums


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def link_fragments(track_sums: np.ndarray, labels: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """Cluster of each track after joining fragments; (T,) int64 labels ``0..k-1``.

    ``track_sums`` (T, D) float: the sum of each track's unit face embeddings; ``labels`` (T,)
    int in 0..C-1: the cluster of each track; ``cannot_link`` (P, 2) int track pairs that are
    two people. ``O(C^2 D + T D)`` time, ``O(C^2)`` memory.
    """
    track_sums = np.asarray(track_sums, np.float64)
    labels = np.asarray(labels, np.int64)
    if track_sums.ndim != 2 or labels.shape != (len(track_sums),):
        raise InputError(f"track_sums (T, D) and labels (T,) disagree: {track_sums.shape}, {labels.shape}")
    n = int(labels.max()) + 1 if len(labels) else 0
    if n < 2:
        return labels.copy()
    sums = index_sums(track_sums, labels, n)
    means = _unit(sums)
    size = np.bincount(labels, minlength=n)
    spread = 1.0 - np.einsum("td,td->t", _unit(track_sums), means[labels])
    extent = np.zeros(n)
    np.maximum.at(extent, labels, spread)
    cannot = group_pairs(cannot_link, labels)
    d = 1.0 - means @ means.T
    np.fill_diagonal(d, np.inf)
    d[cannot[:, 0], cannot[:, 1]] = d[cannot[:, 1], cannot[:, 0]] = np.inf
    nearest = d.argmin(axis=1)
    dist = d[np.arange(n), nearest]
    join = np.flatnonzero((size[nearest] >= size) & (dist <= extent[nearest]))
    merger = ConstrainedMerger(n, cannot)
    for i in join[np.argsort(dist[join], kind="stable")]:
        merger.union(int(i), int(nearest[i]))
    return np.unique(merger.groups(), return_inverse=True)[1][labels].astype(np.int64)
