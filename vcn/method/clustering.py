"""Track clustering: the HAC baseline and VideoClusterNet's parameter-free clustering.

Parameter-free clustering (the paper's final stage) starts with one cluster per track, links every
pair of clusters whose set distance is at most the *own* threshold of either cluster (the mean
distance between the cluster's own faces), applies the links transitively, recomputes distances
and thresholds of the merged clusters, and repeats until nothing links. No cut-off is tuned.

The set distances (:mod:`vcn.method.set_distance`: cosine, euclidean) are bilinear in per-set sums, so
a merged cluster's statistics are the sums of its parts and nothing is recomputed from faces.

A cluster's own threshold is ``(sum over ordered pairs a != b in C of d(a, b)) / (n (n - 1))``,
with the within-track pairs valued at each track's threshold ``tau_t`` (see :mod:`vcn.method.thresholds`);
cross-track pairs inside a cluster are exact. The per-track correction
``n_t (n_t - 1) (tau_t - own_t)`` is itself a sum, so it aggregates like the other statistics.

Cost per round: ``O(C_changed * C * F)`` for the distance rows of the clusters that changed in the
previous round (``F = D`` for embeddings; every cluster in round one, so the first round is
``O(T^2 F)``), plus ``O(C F)`` to aggregate. Memory ``O(T F + block * T)``: the
``C x C`` distance matrix is never held, only ``block`` rows of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.cluster import hierarchy
from scipy.sparse.csgraph import connected_components

from vcn.errors import ConfigError, InputError
from vcn.method.constraints import ConstrainedMerger, group_pairs
from vcn.method.set_distance import DistanceModel, distance_model, embedding_track_stats
from vcn.method.thresholds import own_thresholds, robust_thresholds

# Distances are compared with ``<=`` plus this rounding allowance, so that identical tracks
# (distance 0, threshold 0) still merge despite float64 round-off.
_TOLERANCE = 1e-9

# Rows of the cluster-distance matrix computed at once (memory ``_BLOCK * C * 8`` bytes).
_BLOCK = 1024


def hac(track_means: np.ndarray, threshold: float = 0.6, linkage: str = "average") -> np.ndarray:
    """Agglomerative clustering of track means on cosine distance, cut at ``threshold``.

    Args:
        track_means: ``(T, D)`` float mean embedding per track (need not be normalised).
        threshold: cosine-distance cut in ``(0, 2)``: clusters whose linkage distance is at
            most ``threshold`` are joined.
        linkage: scipy linkage rule, ``average`` (default), ``complete`` or ``single``.

    Returns:
        ``(T,)`` int64 labels ``0..k-1`` numbered by first appearance.
    """
    x = np.asarray(track_means, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"track_means must have shape (T, D), got {x.shape}")
    if not 0.0 < threshold < 2.0:
        raise ConfigError(f"hac threshold is a cosine distance in (0, 2), got {threshold}")
    if linkage not in ("average", "complete", "single"):
        raise ConfigError(f"hac linkage must be average, complete or single, got {linkage!r}")
    if len(x) < 2:
        return np.zeros(len(x), np.int64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(x)):
        raise InputError("track_means hold a zero or non-finite row; drop empty tracks before hac")
    tree = hierarchy.linkage(x / norms, method=linkage, metric="cosine")
    return first_appearance(hierarchy.fcluster(tree, t=threshold, criterion="distance"))


def first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber ``(T,)`` labels to ``0..k-1`` in order of first appearance (int64)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse].astype(np.int64)



@dataclass(frozen=True)
class RoundInfo:
    """One round of parameter-free clustering: clusters before it, links found, seconds."""

    clusters: int
    links: int
    seconds: float


@dataclass(frozen=True)
class ParameterFreeResult:
    """Outcome of :func:`parameter_free`.

    Attributes:
        labels: ``(T,)`` int64 cluster of each track, ``0..k-1`` by first appearance.
        track_thresholds: ``(T,)`` float64 within-track thresholds ``tau_t`` that were used.
        rounds: one :class:`RoundInfo` per round (the last one found no link).
    """

    labels: np.ndarray
    track_thresholds: np.ndarray
    rounds: tuple[RoundInfo, ...]


def _link_mask(d: np.ndarray, thr_rows: np.ndarray, thr_cols: np.ndarray) -> np.ndarray:
    """Pairs to merge: the distance reaches the own threshold of either cluster (the paper)."""
    return (d <= thr_rows[:, None] + _TOLERANCE) | (d <= thr_cols[None, :] + _TOLERANCE)


def _merge(
    n: int, src: np.ndarray, dst: np.ndarray, dist: np.ndarray, cannot: np.ndarray | None
) -> np.ndarray:
    """``(n,)`` new cluster of each of ``n`` clusters after applying links ``src``-``dst``."""
    if cannot is None or len(cannot) == 0:
        graph = sparse.coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
        return connected_components(graph, directed=False)[1]
    merger = ConstrainedMerger(n, cannot)
    # Closest first, so that of two links that conflict the more certain one is kept.
    for i in np.argsort(dist, kind="stable"):
        merger.union(int(src[i]), int(dst[i]))
    return merger.groups()


def _corrections(tau: np.ndarray, own: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``(T,)`` per-track corrections ``n (n - 1) (tau - own)`` that make a cluster's mean pair
    distance count its within-track pairs at ``tau`` (they aggregate like the statistics)."""
    return pairs * np.where(pairs > 0, tau - np.nan_to_num(own), 0.0)


def _fill(tau: np.ndarray) -> np.ndarray:
    # A track with a single item has no view threshold: it takes the median of the others.
    return np.where(np.isnan(tau), np.nanmedian(tau), tau)


def _initial_thresholds(
    stats: np.ndarray, model: DistanceModel, track_thresholds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(own, tau)`` (T,) float64: the tracks' own thresholds and the within-track thresholds
    clustering uses (``track_thresholds`` with NaN filled, else :func:`robust_thresholds`)."""
    own = own_thresholds(stats, model)
    if track_thresholds is None:
        return own, robust_thresholds(own)
    tau = np.asarray(track_thresholds, dtype=np.float64)
    if tau.shape != (len(stats),):
        raise InputError(f"track_thresholds must have shape ({len(stats)},), got {tau.shape}")
    if np.all(np.isnan(tau)):
        raise InputError("track_thresholds are all NaN; pass None to use the tracks' own thresholds")
    return own, _fill(tau)


def _cannot_pairs(cannot_link: np.ndarray | None, n_tracks: int) -> np.ndarray | None:
    """``cannot_link`` as ``(P, 2)`` int64 pairs of tracks ``0..n_tracks-1``; None when empty."""
    if cannot_link is None or len(cannot_link) == 0:
        return None
    cannot = np.asarray(cannot_link, np.int64).reshape(-1, 2)
    if cannot.min() < 0 or cannot.max() >= n_tracks:
        raise InputError(f"cannot_link holds track indices outside 0..{n_tracks - 1}")
    return cannot


def _links(
    stats: np.ndarray, model: DistanceModel, thr: np.ndarray, dirty: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round's links ``(src, dst, dist)`` between the ``C`` clusters of ``stats`` (C, F):
    pairs whose distance reaches either cluster's threshold ``thr`` (C,), each unordered pair
    once, only rows of ``dirty`` (C,) clusters (those that changed), ``_BLOCK`` rows at a time."""
    left, right, offset = model.bilinear(stats)
    edges, dists = [], []
    rows_all = np.flatnonzero(dirty)
    for lo in range(0, len(rows_all), _BLOCK):
        rows = rows_all[lo:lo + _BLOCK]
        d = offset[rows][:, None] + offset[None, :] + left[rows] @ right.T
        link = _link_mask(d, thr[rows], thr)
        # Each unordered pair once: a dirty pair is kept from its smaller index.
        link &= ~dirty[None, :] | (np.arange(len(stats))[None, :] > rows[:, None])
        a, b = np.nonzero(link)
        edges.append((rows[a], b))
        dists.append(d[a, b])
    src = np.concatenate([e[0] for e in edges]) if edges else np.zeros(0, np.int64)
    dst = np.concatenate([e[1] for e in edges]) if edges else np.zeros(0, np.int64)
    return src, dst, np.concatenate(dists) if dists else np.zeros(0)


def parameter_free(
    track_stats: np.ndarray,
    model: DistanceModel,
    track_thresholds: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
) -> ParameterFreeResult:
    """Parameter-free clustering of tracks on aggregatable set statistics.

    Args:
        track_stats: ``(T, F)`` float64 per-track statistics of ``model`` (column 0 = faces), e.g.
            from :func:`vcn.method.set_distance.embedding_track_stats`.
        model: the set distance.
        track_thresholds: optional ``(T,)`` float within-track thresholds ``tau_t`` (e.g. from
            augmented views, :func:`vcn.method.thresholds.view_thresholds_embedding`; NaN entries take
            the median of the others); default :func:`vcn.method.thresholds.robust_thresholds` of the
            tracks' own thresholds.
        cannot_link: optional ``(P, 2)`` int pairs of tracks that must end in different
            clusters (co-occurring tracks, :func:`vcn.method.constraints.cooccurring_pairs`). With
            them a round applies its links closest first and skips a link that would join a
            cannot-link pair (:class:`vcn.method.constraints.ConstrainedMerger`); without them links
            apply transitively at once, as in the paper.

    Returns:
        A :class:`ParameterFreeResult`. Terminates: a round that merges nothing is the last, and
        every other round merges at least two clusters, so there are at most ``T`` rounds (in
        practice a handful).
    """
    stats = np.asarray(track_stats, dtype=np.float64)
    if stats.ndim != 2 or len(stats) == 0 or np.any(stats[:, 0] < 1):
        raise InputError(
            f"track_stats must be (T, F) with T >= 1 and a face count >= 1 per track, got {stats.shape}"
        )
    n_tracks = len(stats)
    own, tau = _initial_thresholds(stats, model, track_thresholds)
    cannot = _cannot_pairs(cannot_link, n_tracks)
    n = stats[:, 0]
    corr = _corrections(tau, own, n * (n - 1))
    labels = np.arange(n_tracks, dtype=np.int64)
    fallback = tau.copy()
    dirty = np.ones(n_tracks, bool)
    rounds = []
    while True:
        started = time.perf_counter()
        n = stats[:, 0]
        pairs = n * (n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_pair = (model.pair_total(stats) + corr) / np.where(pairs > 0, pairs, 1)
        thr = np.where(pairs > 0, mean_pair, fallback)
        src, dst, dist = _links(stats, model, thr, dirty)
        rounds.append(RoundInfo(len(stats), len(src), time.perf_counter() - started))
        if len(src) == 0:
            break
        # Cannot-links between the current clusters: those of their tracks, relabelled.
        cl = None if cannot is None else group_pairs(cannot, labels)
        comp = _merge(len(stats), src, dst, dist, cl)
        n_comp = int(comp.max()) + 1
        if n_comp == len(stats):  # every link was vetoed: nothing can change any more
            break
        member = sparse.csr_matrix(  # (n_comp, C): the clusters each new cluster sums
            (np.ones(len(comp)), (comp, np.arange(len(comp)))), shape=(n_comp, len(comp))
        )
        stats = member @ stats
        corr = member @ corr
        fallback = member @ fallback  # only read for unmerged one-face clusters
        dirty = np.bincount(comp, minlength=n_comp) > 1
        labels = comp[labels]
    return ParameterFreeResult(first_appearance(labels), tau, tuple(rounds))


def parameter_free_embedding(
    embeddings: np.ndarray,
    track_index: np.ndarray,
    metric: str = "cosine",
    track_thresholds: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
) -> np.ndarray:
    """Parameter-free merging on embedding distances (the paper's cosine/Euclidean ablation).

    Args:
        embeddings: ``(N, D)`` float face embeddings (``float32 (N, 512)`` L2-normalised).
        track_index: ``(N,)`` int track of each face; every id ``0..T-1`` used.
        metric: ``cosine`` (mean pairwise cosine distance) or ``euclidean`` (mean pairwise
            squared distance; same partition as cosine on unit-norm embeddings).
        track_thresholds: optional ``(T,)`` within-track thresholds in the metric's units,
            e.g. :func:`vcn.method.thresholds.view_thresholds_embedding`; default: own thresholds
            floored at the median.
        cannot_link: optional ``(P, 2)`` int track pairs kept apart (see :func:`parameter_free`).

    Returns:
        ``(T,)`` int64 cluster label per track, ``0..k-1`` by first appearance.
    """
    stats = embedding_track_stats(embeddings, track_index, metric)
    return parameter_free(stats, distance_model(metric), track_thresholds, cannot_link).labels
