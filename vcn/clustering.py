"""Track clustering: the HAC baseline and VideoClusterNet's parameter-free clustering.

Parameter-free clustering (the paper's final stage) starts with one cluster per track, links every
pair of clusters whose set distance is at most the *own* threshold of either cluster (the mean
distance between the cluster's own faces), applies the links transitively, recomputes distances
and thresholds of the merged clusters, and repeats until nothing links. No cut-off is tuned.

Everything rests on set distances that are *bilinear in per-set sums*, so a merged cluster's
statistics are the sums of its parts and nothing is recomputed from faces:

- loss (the paper): ``d(A, B) = mean over a in A, b in B of -(P_a . S_b + P_b . S_a) / 2`` with
  teacher probabilities ``P`` and student log-probabilities ``S`` of the finetuned model, i.e.
  ``-(Pbar_A . Sbar_B + Pbar_B . Sbar_A) / 2``; statistics: count, ``sum P``, ``sum S`` and
  ``sum_a P_a . S_a`` (the self pairs, removed from a set's own mean).
- cosine: mean pairwise cosine distance ``1 - mbar_A . mbar_B`` of L2-normalised embeddings
  (average linkage); statistics: count, ``sum e``.
- euclidean: mean pairwise *squared* Euclidean distance ``q_A/n_A + q_B/n_B - 2 mbar_A . mbar_B``
  (``q = sum |x|^2``), on the embeddings as given. For unit-norm embeddings this is exactly twice
  the cosine distance, thresholds included, so the two give the same partition; they differ only
  on un-normalised features.

A cluster's own threshold is ``(sum over ordered pairs a != b in C of d(a, b)) / (n (n - 1))``,
with the within-track pairs valued at each track's threshold ``tau_t`` (see below); cross-track
pairs inside a cluster are exact. The per-track correction ``n_t (n_t - 1) (tau_t - own_t)`` is
itself a sum, so it aggregates like the other statistics.

Within-track thresholds (the near-duplicate problem). A track's own threshold is the spread of its
faces. Tracks cut from static shots or still photos are near-duplicates inside, so their own
thresholds are far too tight and nothing merges. The fix is the paper's own invariance: the caller
passes ``track_thresholds`` measured between *augmented views* of the track's faces
(:func:`view_thresholds_loss`, :func:`view_thresholds_embedding`: mean distance over all pairs of
distinct (face, view) items, so one-face tracks get one too). The views must be as strong as the
finetune's (DINO-style) augmentations. Measured with the generic recognizer (w600k_mbf, no
finetune), cosine distance, B-cubed F over faces / clusters (precision 1.000 in every row)::

    video (tracks, ids)            own thr  view thr  nearest same-id | paper       views       HAC 0.6
    hamilton clip (8, 6)             0.22     0.55        0.72       | 0.930 / 8   0.974 / 7   0.974 / 7
    pedestrians (25, 11)             0.38     0.54        0.54       | 0.899 / 19  0.984 / 14  0.977 / 15
    composed HARD seed 1 (66, 18)    0.023    0.48        0.38       | 0.432 / 66  0.843 / 33  0.895 / 28
    composed HARD seed 2 (66, 18)    0.034    0.47        0.43       | 0.444 / 66  0.804 / 33  0.879 / 26

(medians over tracks; "strong views": the face plus 7 views with random resized crop scale
0.5-1, flip, brightness and contrast x0.6-1.4, saturation x0.8-1.2, grayscale p=0.2, blur p=0.5.)
Mild views (flip, +-10 degree rotation, warm/cool colour cast) give only 0.08 on the composed
episodes and fix nothing. Strong-view thresholds are nearly constant across the four videos
(0.47-0.55) while own thresholds range 0.02-0.38: they measure the model's nuisance scale, not the
shot's motion. Without views, each track's threshold is floored at the median own threshold over
tracks with at least two faces (a fixed robust statistic, no knob): it repairs the static tracks
of a movie that also has moving ones, but cannot help a video made only of static tracks. One-face
tracks have no pairs; their threshold is the view threshold when given, else that median.

Cost per round: ``O(C_changed * C * F)`` for the distance rows of the clusters that changed in the
previous round (``F = 2K`` for the loss, ``D`` for embeddings; every cluster in round one, so the
first round is ``O(T^2 F)``), plus ``O(C F)`` to aggregate. Memory ``O(T F + block * T)``: the
``C x C`` distance matrix is never held, only ``block`` rows of it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.cluster import hierarchy
from scipy.sparse.csgraph import connected_components

from vcn.constraints import ConstrainedMerger, group_pairs
from vcn.errors import ConfigError, InputError
from vcn.matching import check_track_index

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


class LossDistance(DistanceModel):
    """Symmetrised teacher-student cross-entropy; stats ``[n, sum P.S, sum P (K), sum S (K)]``."""

    def bilinear(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = (stats.shape[1] - 2) // 2
        mean = stats[:, 2:] / stats[:, :1]
        right = -0.5 * np.concatenate([mean[:, k:], mean[:, :k]], axis=1)
        return mean, right, np.zeros(len(stats))

    def pair_total(self, stats: np.ndarray) -> np.ndarray:
        k = (stats.shape[1] - 2) // 2
        cross = np.einsum("ck,ck->c", stats[:, 2:2 + k], stats[:, 2 + k:])
        return -(cross - stats[:, 1])


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


def loss_track_stats(
    teacher_probs: np.ndarray, student_logprobs: np.ndarray, track_index: np.ndarray
) -> np.ndarray:
    """Per-track statistics of the loss distance.

    Args:
        teacher_probs: ``(N, K)`` float teacher probabilities (rows sum to 1).
        student_logprobs: ``(N, K)`` float student log-probabilities (log-softmax outputs).
        track_index: ``(N,)`` int track of each face, every id in ``0..T-1`` used.

    Returns:
        ``(T, 2K + 2)`` float64 ``[n, sum P.S, sum P, sum S]`` per track.
    """
    p = np.asarray(teacher_probs)
    s = np.asarray(student_logprobs)
    if p.ndim != 2 or p.shape != s.shape:
        raise InputError(
            f"teacher_probs and student_logprobs must both be (N, K), got {p.shape} and {s.shape}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(s))):
        raise InputError("teacher_probs or student_logprobs hold NaN or inf (use log_softmax, not log)")
    track_index = check_track_index(track_index, len(p))
    n_tracks = _n_tracks(track_index)
    member = _membership(track_index, n_tracks)
    diag = np.einsum("nk,nk->n", p, s, dtype=np.float64)
    # Summed in the inputs' precision (no float64 copy of two (N, K) arrays): a track's sum has
    # few terms, and the float64 cluster sums built from them keep pair totals exact enough.
    member_in = member.astype(np.result_type(p.dtype, s.dtype, np.float32))
    return np.concatenate(
        [member @ np.ones((len(p), 1)), (member @ diag)[:, None],
         np.asarray(member_in @ p, np.float64), np.asarray(member_in @ s, np.float64)], axis=1,
    )


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


def _model(metric: str) -> DistanceModel:
    if metric == "cosine":
        return CosineDistance()
    if metric == "euclidean":
        return EuclideanDistance()
    raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def own_thresholds(stats: np.ndarray, model: DistanceModel) -> np.ndarray:
    """``(C,)`` mean distance between each set's own faces (pairs ``a != b``); NaN for 1 face."""
    n = stats[:, 0]
    pairs = n * (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, model.pair_total(stats) / np.where(pairs > 0, pairs, 1), np.nan)


def robust_thresholds(own: np.ndarray) -> np.ndarray:
    """The default ``tau_t`` without views: each track's own threshold floored at the median.

    Args:
        own: ``(T,)`` float own thresholds, NaN for one-face tracks.

    Returns:
        ``(T,)`` float64 ``max(own_t, median)``; one-face tracks get the median. When no track
        has two faces every value is ``-inf`` (nothing can be learnt about spread: no merges).
    """
    finite = own[np.isfinite(own)]
    if len(finite) == 0:
        return np.full(len(own), -np.inf)
    floor = float(np.median(finite))
    return np.where(np.isfinite(own), np.maximum(own, floor), floor)


def group_spread_floor(thresholds: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """Lone tracks borrow the cross-shot spread measured on the video's matched groups.

    A group that coarse matching built from tracks of several shots carries the spread between
    shots (pose, light, framing, a different take) in its view threshold; a lone track's views
    can only show how one shot varies under augmentation. Each lone track's threshold is
    therefore floored at the median threshold of the multi-track groups of the same video: a
    statistic of the video itself, not a knob. Multi-track groups keep their own threshold.

    Args:
        thresholds: ``(G,)`` float threshold per matched group (NaN: a one-item group).
        group_sizes: ``(G,)`` int tracks in each group.

    Returns:
        ``(G,)`` float64 thresholds; unchanged when no group spans two tracks (nothing was
        measured across shots). NaN lone thresholds become the floor.
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    sizes = np.asarray(group_sizes)
    if thr.shape != sizes.shape or thr.ndim != 1:
        raise InputError(f"thresholds {thr.shape} and group_sizes {sizes.shape} must be equal (G,) arrays")
    spans = (sizes > 1) & np.isfinite(thr)
    if not spans.any():
        return thr
    floor = float(np.median(thr[spans]))
    return np.where(sizes > 1, thr, np.fmax(thr, floor))


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


def parameter_free(
    track_stats: np.ndarray,
    model: DistanceModel,
    track_thresholds: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
) -> ParameterFreeResult:
    """Parameter-free clustering of tracks on aggregatable set statistics.

    Args:
        track_stats: ``(T, F)`` float64 per-track statistics of ``model`` (column 0 = faces), e.g.
            from :func:`loss_track_stats` or :func:`embedding_track_stats`.
        model: the set distance.
        track_thresholds: optional ``(T,)`` float within-track thresholds ``tau_t`` (e.g. from
            augmented views, :func:`view_thresholds_loss`; NaN entries take the median of the
            others); default :func:`robust_thresholds` of the tracks' own thresholds.
        cannot_link: optional ``(P, 2)`` int pairs of tracks that must end in different
            clusters (co-occurring tracks, :func:`vcn.constraints.cooccurring_pairs`). With
            them a round applies its links closest first and skips a link that would join a
            cannot-link pair (:class:`vcn.constraints.ConstrainedMerger`); without them links
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
    own = own_thresholds(stats, model)
    if track_thresholds is None:
        tau = robust_thresholds(own)
    else:
        tau = np.asarray(track_thresholds, dtype=np.float64)
        if tau.shape != (n_tracks,):
            raise InputError(f"track_thresholds must have shape ({n_tracks},), got {tau.shape}")
        if np.all(np.isnan(tau)):
            raise InputError("track_thresholds are all NaN; pass None to use the tracks' own thresholds")
        # A track with a single item has no view threshold: it takes the median of the others.
        tau = np.where(np.isnan(tau), np.nanmedian(tau), tau)
    n = stats[:, 0]
    pairs = n * (n - 1)
    corr = pairs * np.where(pairs > 0, tau - np.nan_to_num(own), 0.0)
    labels = np.arange(n_tracks, dtype=np.int64)
    cannot = None
    if cannot_link is not None and len(cannot_link):
        cannot = np.asarray(cannot_link, np.int64).reshape(-1, 2)
        if cannot.min() < 0 or cannot.max() >= n_tracks:
            raise InputError(f"cannot_link holds track indices outside 0..{n_tracks - 1}")
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
        rounds.append(RoundInfo(len(stats), len(src), time.perf_counter() - started))
        if len(src) == 0:
            break
        # Cannot-links between the current clusters: those of their tracks, relabelled.
        cl = None if cannot is None else group_pairs(cannot, labels)
        comp = _merge(len(stats), src, dst, np.concatenate(dists), cl)
        n_comp = int(comp.max()) + 1
        if n_comp == len(stats):  # every link was vetoed: nothing can change any more
            break
        member = sparse.csr_matrix(
            (np.ones(len(comp)), (comp, np.arange(len(comp)))), shape=(n_comp, len(comp))
        )
        stats = member @ stats
        corr = member @ corr
        fallback = member @ fallback  # only read for unmerged one-face clusters
        dirty = np.bincount(comp, minlength=n_comp) > 1
        labels = comp[labels]
    return ParameterFreeResult(first_appearance(labels), tau, tuple(rounds))


def parameter_free_loss(
    teacher_probs: np.ndarray,
    student_logprobs: np.ndarray,
    track_index: np.ndarray,
    track_thresholds: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's clustering: parameter-free merging on the teacher-student loss distance.

    Args:
        teacher_probs: ``(N, K)`` float teacher softmax outputs (after centering/sharpening).
        student_logprobs: ``(N, K)`` float student log-softmax outputs of the same faces.
        track_index: ``(N,)`` int track of each face; every id ``0..T-1`` used.
        track_thresholds: optional ``(T,)`` within-track loss thresholds from augmented views
            (:func:`view_thresholds_loss`); default: own thresholds floored at their median.
        cannot_link: optional ``(P, 2)`` int track pairs kept apart (see :func:`parameter_free`).

    Returns:
        ``(T,)`` int64 cluster label per track, ``0..k-1`` by first appearance.
    """
    stats = loss_track_stats(teacher_probs, student_logprobs, track_index)
    return parameter_free(stats, LossDistance(), track_thresholds, cannot_link).labels


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
            e.g. :func:`view_thresholds_embedding`; default: own thresholds floored at the median.
        cannot_link: optional ``(P, 2)`` int track pairs kept apart (see :func:`parameter_free`).

    Returns:
        ``(T,)`` int64 cluster label per track, ``0..k-1`` by first appearance.
    """
    stats = embedding_track_stats(embeddings, track_index, metric)
    return parameter_free(stats, _model(metric), track_thresholds, cannot_link).labels


def _check_views(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[1] < 1:
        raise InputError(f"{name} must have shape (N, V, K) with V >= 1 views per face, got {arr.shape}")
    return arr


def view_thresholds_loss(
    teacher_views: np.ndarray, student_logviews: np.ndarray, track_index: np.ndarray
) -> np.ndarray:
    """Within-track loss thresholds from augmented views.

    Args:
        teacher_views: ``(N, V, K)`` teacher probabilities of ``V`` augmented views per face.
        student_logviews: ``(N, V, K)`` student log-probabilities of the same views.
        track_index: ``(N,)`` int track of each face.

    Returns:
        ``(T,)`` float64 mean loss over ordered pairs of distinct (face, view) items of a track,
        so two views of one face count: a one-face track gets a threshold too (``V >= 2``).
        NaN where a track has a single item (``V = 1`` and one face).
    """
    p = _check_views(teacher_views, "teacher_views")
    s = _check_views(student_logviews, "student_logviews")
    if p.shape != s.shape:
        raise InputError(f"teacher_views and student_logviews differ in shape: {p.shape} vs {s.shape}")
    n_faces, n_views, k = p.shape
    items = np.repeat(check_track_index(track_index, n_faces), n_views)
    stats = loss_track_stats(p.reshape(-1, k), s.reshape(-1, k), items)
    return own_thresholds(stats, LossDistance())


def view_thresholds_embedding(
    views: np.ndarray, track_index: np.ndarray, metric: str = "cosine"
) -> np.ndarray:
    """Within-track embedding thresholds from augmented views.

    Args:
        views: ``(N, V, D)`` float embeddings of ``V`` augmented views per face.
        track_index: ``(N,)`` int track of each face.
        metric: ``cosine`` or ``euclidean``.

    Returns:
        ``(T,)`` float64 mean distance over ordered pairs of distinct (face, view) items of a
        track; NaN where a track has a single item.
    """
    v = _check_views(views, "views")
    n_faces, n_views, dim = v.shape
    items = np.repeat(check_track_index(track_index, n_faces), n_views)
    stats = embedding_track_stats(v.reshape(-1, dim), items, metric)
    return own_thresholds(stats, _model(metric))
