"""Joining a person's fragments that stage 4 leaves apart: a cluster joins its nearest larger
cluster when it lies nearer that cluster than anyone seen on screen with it.

Stage 4 merges only what each cluster's own spread admits, so a lead whose looks vary widely
(make-up, years, light) ends as one large cluster and a few small fragments. The video tells
how near a different person comes to a cluster: every track of a cluster that shares a frame
with it (a cannot-link) is somebody else. A cluster's *bound* is the distance from its mean to
the nearest such track; a fragment whose mean is nearer than that is more like this person than
anyone the video shows beside them.

A bound is trusted only on enough evidence. A stranger falls below the nearest of N
co-occurring tracks with odds of about one in N + 1, and every other cluster of the title is a
possible stranger, so a cluster takes fragments only when its co-occurring tracks (each
co-occurring cluster counted for at most as many tracks as the cluster has) are at least as
many as the title's other clusters: fewer than one false join is then expected. A bound is also
never looser than the title's median bound, the distance at which a different person typically
appears beside someone in this video.

Each cluster looks at its nearest strictly larger cluster that it never shares a frame with,
and joins it when their means are nearer than that cluster's bound; closest first, in one pass,
never across a cannot-link.
"""

from __future__ import annotations

import numpy as np

from vcn.errors import InputError
from vcn.method.constraints import ConstrainedMerger, group_pairs
from vcn.method.matching import mean_directions, unit_rows


def cooccurrence_bounds(track_units: np.ndarray, labels: np.ndarray, means: np.ndarray,
                        together: np.ndarray) -> np.ndarray:
    """Each cluster's bound, (C,) float: the cosine distance from its mean to the nearest track of
    a cluster it shares a frame with, capped at the median of those distances over the title;
    ``-inf`` where its evidence is too thin to trust (see the module docstring).

    ``track_units`` (T, D) unit track means; ``labels`` (T,) clusters 0..C-1; ``means`` (C, D)
    unit cluster means; ``together`` (C, C) bool, symmetric: the clusters share a frame.
    """
    n = len(means)
    size = np.bincount(labels, minlength=n)
    evidence = (together * np.minimum(size[:, None], size[None, :])).sum(axis=0)
    to_mean = 1.0 - track_units @ means.T                                   # (T, C)
    nearest_other = np.where(together[labels], to_mean, np.inf).min(axis=0)
    seen = np.isfinite(nearest_other)
    if not seen.any():
        return np.full(n, -np.inf)
    typical = float(np.median(nearest_other[seen]))
    return np.where(seen & (evidence >= n - 1), np.minimum(nearest_other, typical), -np.inf)


def link_fragments(track_sums: np.ndarray, labels: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """Cluster of each track after joining fragments; (T,) int64 labels ``0..k-1``.

    ``track_sums`` (T, D) float: the sum of each track's unit face embeddings; ``labels`` (T,)
    int in 0..C-1: the cluster of each track; ``cannot_link`` (P, 2) int track pairs that are
    two people. ``O(C^2 D + T C D)`` time, ``O(T C)`` memory.
    """
    track_sums = np.asarray(track_sums, np.float64)
    labels = np.asarray(labels, np.int64)
    if track_sums.ndim != 2 or labels.shape != (len(track_sums),):
        raise InputError(f"track_sums (T, D) and labels (T,) disagree: {track_sums.shape}, {labels.shape}")
    n = int(labels.max()) + 1 if len(labels) else 0
    if n < 2:
        return labels.copy()
    units = unit_rows(track_sums)
    means = mean_directions(units, labels, n)                                # each track weighs one
    size = np.bincount(labels, minlength=n)
    cannot = group_pairs(cannot_link, labels)
    together = np.zeros((n, n), bool)
    together[cannot[:, 0], cannot[:, 1]] = together[cannot[:, 1], cannot[:, 0]] = True
    bound = cooccurrence_bounds(units, labels, means, together)
    d = 1.0 - means @ means.T
    d[~((size[:, None] < size[None, :]) & ~together)] = np.inf               # [C, L]: L larger, apart
    target = d.argmin(axis=1)
    dist = d[np.arange(n), target]
    join = np.flatnonzero(dist < bound[target])
    merger = ConstrainedMerger(n, cannot)
    for i in join[np.argsort(dist[join], kind="stable")]:
        merger.union(int(i), int(target[i]))
    return np.unique(merger.groups(), return_inverse=True)[1][labels].astype(np.int64)


def attach_tracks(track_units: np.ndarray, labels: np.ndarray, thresholds: np.ndarray,
                  candidates: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """Labels (T,) int64 with each candidate track put in the cluster of its nearest clustered track,
    when it lies within that track's threshold and within no threshold of another cluster's track, and
    shares no frame with the cluster; the others keep -1.

    ``track_units`` (T, D) unit track means; ``labels`` (T,) int64, -1 = not clustered;
    ``thresholds`` (T,) float the stage-4 threshold of each clustered track; ``candidates`` (K,)
    int64 unclustered tracks to place; ``cannot_link`` (P, 2) int64 track pairs that are two
    people. Only the tracks clustered on entry are neighbours; candidates are placed nearest
    first, and one placed candidate's frames bar the next from its cluster. A candidate within
    the thresholds of two clusters is left out: its face fits either person, and a wrong
    placement merges two people where an ``unknown`` costs one track.
    """
    labels = np.asarray(labels, np.int64).copy()
    clustered = np.flatnonzero(labels >= 0)
    candidates = np.asarray(candidates, np.int64)
    if len(clustered) == 0 or len(candidates) == 0:
        return labels
    units = np.asarray(track_units, np.float64)
    d = 1.0 - units[candidates] @ units[clustered].T
    nearest = d.argmin(axis=1)
    dist = d[np.arange(len(candidates)), nearest]
    within = d < thresholds[clustered][None, :]                              # (K, C)
    # within the nearest track's threshold, and within no threshold of another cluster's track
    other = labels[clustered][None, :] != labels[clustered[nearest]][:, None]
    fits_one = within[np.arange(len(candidates)), nearest] & ~(within & other).any(axis=1)
    merger = ConstrainedMerger(len(labels), cannot_link)
    first = {}
    for t in clustered:  # each cluster as one group, so a placed track's frames bar the next
        merger.union(first.setdefault(int(labels[t]), int(t)), int(t))
    for i in np.argsort(dist, kind="stable"):
        track, near = int(candidates[i]), int(clustered[nearest[i]])
        if fits_one[i] and merger.union(track, near):
            labels[track] = labels[near]
    return labels
