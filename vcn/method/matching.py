"""Coarse track matching: one Gaussian per track, bottom-25% density thresholds (VideoClusterNet).

Every track gets a multivariate Gaussian of its face embeddings. Its threshold is the mean of
the lowest ``lowest_fraction`` of its own faces' log-densities. Track B *matches* track A when the
log-density of B's mean embedding under A's Gaussian reaches A's threshold. The matched pairs are
the confident positives that the self-supervised finetune pulls together; finetune and matching
alternate (at most ``MatchingConfig.max_rounds`` times, a cap the flow applies).

Covariance model. Tracks often hold 2-20 faces in 512 dimensions, so a sample covariance is
singular. Each track's covariance is the posterior mean under a conjugate (inverse-Wishart) prior
centred on a pooled isotropic covariance ``sigma2 * I``::

    Sigma_t = (S_t + kappa * sigma2 * I) / (n_t - 1 + kappa)

``S_t = U_t^T U_t`` is the within-track scatter of the ``n_t`` centred faces ``U_t (n_t, D)``;
``sigma2`` is the within-track variance per dimension pooled over all tracks (total scatter /
(D * sum(n_t - 1))); ``kappa`` (``prior_strength``) counts the prior as that many pseudo-faces. A
long track is dominated by its own scatter, a 2-face track by the pooled shape, and a
zero-variance track (identical faces) gets ``sigma2 * I`` instead of a singular matrix.
Why this and not a PCA subspace: the Gaussian keeps all 512 dimensions (a subspace fitted on all
faces discards exactly the directions that tell two people apart), and it costs no more.

Vectorised computation. ``Sigma_t = a_t U^T U + b_t I`` (``a_t = 1/(n_t-1+kappa)``,
``b_t = kappa sigma2 a_t``) is low-rank plus diagonal, so by Woodbury with the ``n_t x n_t`` Gram
matrix ``G = U U^T``::

    maha_t(y) = (|r|^2 - |V_t r|^2) / b_t,   r = y - mu_t,   V_t = L^T U,   L L^T = (cI + G)^-1,
    c = kappa * sigma2 (the same for every track)

Stacking every track's ``V_t`` rows gives an ``(N, D)`` matrix, and the Mahalanobis distances of
all T means under all T Gaussians are one ``(N, D) @ (D, T)`` product reduced per track:
``O(N T D)`` time, ``O(sum n_t^3 + N n_t D)`` for the batched ``n_t x n_t`` inverses, and ``O(block * T)``
memory (rows are processed in blocks, never a ``T x T x D`` or ``T x D x D`` array).

Log-density is ``-(maha + log det Sigma_t + D log 2 pi) / 2``; a track's threshold and the test of
another mean use the *same* Gaussian, so "density reaches the threshold" is exactly
"``maha_A(mu_B) <= mean of the largest lowest_fraction of A's own faces' maha``", which is what
is computed (no log-determinants needed).

Matching on the faces themselves is precise but sparse (a still photo's track is a near-point,
so its Gaussian admits nothing); vcn matches on strong augmented views of the faces instead,
mutually and with leave-one-out thresholds (docs/method.md, departure 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from vcn.errors import ConfigError, InputError

# Variance floor (per dimension) so that a video whose tracks are all zero-variance still gives
# finite Mahalanobis distances; far below the float32 resolution of unit-norm embeddings squared.
_MIN_VARIANCE = 1e-12


@dataclass(frozen=True)
class MatchingConfig:
    """Settings of coarse track matching.

    Attributes:
        prior_strength: ``kappa``, weight of the pooled isotropic covariance in pseudo-faces
            (default 8: a 2-face track is ~90% prior, a 50-face track ~15%). ``> 0``.
        lowest_fraction: the threshold is the mean of this fraction of a track's own faces with
            the lowest log-density (paper: 0.25). At least one face is always used.
        mutual: False (default, the paper's rule for positives): a pair is linked when either
            track's mean reaches the other's threshold. True: both directions must match.
        leave_one_out: True (default): a face's own distance is measured under the Gaussian fitted
            without it (closed form, below), as another track's mean is; False: in-sample. With
            ``n_t`` faces spanning only ``n_t - 1`` of 512 dimensions, in-sample distances are
            biased low (each face pulls the covariance towards itself) and almost nothing
            matches; see :func:`_own_mahalanobis`.
        max_rounds: cap on finetune/matching alternations (applied by the flow, default 3).
        max_items: items (faces or views) a Gaussian is fitted on at most, evenly spaced over
            its set: a group of many tracks costs ``O(p^3)`` in its ``p`` items, so a lead with
            hundreds of tracks would make one matching pass superlinear; 256 items are five
            tracks' views and leave one track's Gaussian untouched.
        block_faces: faces per block in the ``(block, T)`` distance computation (memory bound).
    """

    prior_strength: float = 8.0
    lowest_fraction: float = 0.25
    mutual: bool = False
    leave_one_out: bool = True
    max_rounds: int = 3
    max_items: int = 256
    block_faces: int = 4096

    def __post_init__(self) -> None:
        if not (np.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise ConfigError(f"MatchingConfig.prior_strength must be > 0, got {self.prior_strength}")
        if not 0.0 < self.lowest_fraction <= 1.0:
            raise ConfigError(f"MatchingConfig.lowest_fraction must be in (0, 1], got {self.lowest_fraction}")
        if self.max_rounds < 1:
            raise ConfigError(f"MatchingConfig.max_rounds must be >= 1, got {self.max_rounds}")
        if self.max_items < 2:
            raise ConfigError(f"MatchingConfig.max_items must be >= 2, got {self.max_items}")
        if self.block_faces < 1:
            raise ConfigError(f"MatchingConfig.block_faces must be >= 1, got {self.block_faces}")


def check_track_index(track_index: np.ndarray, n_faces: int) -> np.ndarray:
    """Validate ``track_index`` ``(N,)`` integers in ``0..T-1`` and return it as int64."""
    track_index = np.asarray(track_index)
    if track_index.ndim != 1 or len(track_index) != n_faces:
        raise InputError(
            f"track_index must have shape ({n_faces},) (one track per face), got {track_index.shape}"
        )
    if n_faces and not np.issubdtype(track_index.dtype, np.integer):
        raise InputError(f"track_index must hold integers 0..T-1, got dtype {track_index.dtype}")
    if n_faces and track_index.min() < 0:
        raise InputError("track_index must hold integers 0..T-1; found a negative track id")
    return track_index.astype(np.int64, copy=False)


def index_sums(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """(n, D) float64 sums of the rows of ``values`` (N, D) by ``index`` (N,) int in 0..n-1.

    One sparse product: ``np.add.at`` is unbuffered and 15x slower on (5,000, 512) rows, and
    matching sums views by track or group in every growth round.
    """
    index = np.asarray(index, np.int64)
    member = sparse.csr_matrix((np.ones(len(index)), (index, np.arange(len(index)))), shape=(n, len(index)))
    return np.asarray(member @ np.asarray(values, np.float64))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` (N, D) with every row scaled to unit length (an all-zero row stays zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def mean_directions(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """(n, D) float64 unit means of the rows of ``values`` (N, D) by ``index`` (N,) in 0..n-1:
    the direction of each track's (or group's) summed embeddings."""
    return unit_rows(index_sums(values, index, n))


def sample_rows(track_index: np.ndarray, per_track: int) -> np.ndarray:
    """Rows (M,) int64 of up to ``per_track`` faces per track, evenly spaced along each track.

    ``track_index`` (N,) int64 in 0..T-1, rows assumed in time order within a track.
    """
    track_index = np.asarray(track_index, np.int64)
    order = np.argsort(track_index, kind="stable")
    counts = np.bincount(track_index)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    picks = []
    for s, n in zip(starts, counts, strict=True):
        if n:
            picks.append(order[s + np.round(np.linspace(0, n - 1, min(n, per_track))).astype(np.int64)])
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def _check_embeddings(embeddings: np.ndarray) -> np.ndarray:
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2:
        raise InputError(f"embeddings must have shape (N, D), got {embeddings.shape}")
    if not np.all(np.isfinite(embeddings)):
        raise InputError("embeddings hold NaN or inf; drop those faces before matching")
    return embeddings.astype(np.float64, copy=False)


@dataclass(frozen=True)
class TrackGaussians:
    """Every track's Gaussian in the factored form used for batched Mahalanobis distances.

    Attributes:
        means: ``(T, D)`` float64 mean embedding per track (zeros for a track without faces).
        counts: ``(T,)`` int64 faces per track.
        whiten: ``(N, D)`` float32 rows ``V_t`` of all tracks, stacked track by track.
        row_track: ``(N,)`` int64 track of each row of ``whiten`` (sorted).
        scale: ``(T,)`` float64 ``b_t``, the isotropic part of each covariance.
        thresholds: ``(T,)`` float64 threshold in Mahalanobis units (mean of the largest
            ``lowest_fraction`` of own faces' squared Mahalanobis distances); ``-inf`` if empty.
    """

    means: np.ndarray
    counts: np.ndarray
    whiten: np.ndarray
    row_track: np.ndarray
    scale: np.ndarray
    thresholds: np.ndarray


def fit_track_gaussians(
    embeddings: np.ndarray, track_index: np.ndarray, cfg: MatchingConfig | None = None,
    only: np.ndarray | None = None,
) -> TrackGaussians:
    """Fit the shrunk Gaussian of every track (see the module docstring).

    Args:
        embeddings: ``(N, D)`` float face embeddings (L2-normalised by convention).
        track_index: ``(N,)`` int track of each face, in ``0..T-1`` (``T = max + 1``).
        cfg: matching settings.
        only: ``(K,)`` int tracks whose covariance factors and thresholds to compute, or None
            for all; the others keep their mean, count and scale, no ``whiten`` rows and a
            ``-inf`` threshold. The pooled variance always comes from every track, so a fitted
            track's Gaussian is the same either way.

    Returns:
        A :class:`TrackGaussians` with ``T`` tracks.
    """
    cfg = cfg or MatchingConfig()
    x = _check_embeddings(embeddings)
    track_index = check_track_index(track_index, len(x))
    n_tracks = int(track_index.max()) + 1 if len(x) else 0
    dim = x.shape[1]
    counts = np.bincount(track_index, minlength=n_tracks).astype(np.int64)
    means = index_sums(x, track_index, n_tracks)
    means /= np.maximum(counts, 1)[:, None]
    centred = x - means[track_index]

    dof = np.maximum(counts - 1, 0)
    sigma2 = max(float(np.sum(centred**2)) / max(dim * int(dof.sum()), 1), _MIN_VARIANCE)
    kappa = cfg.prior_strength
    c = kappa * sigma2
    scale = c / (dof + kappa)

    order = np.argsort(track_index, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    thresholds = np.full(n_tracks, -np.inf)
    whiten_parts, row_parts = [], []
    # Tracks are padded to a multiple of 8 faces so that each bucket is one batched inverse; zero
    # padding rows and columns of the Gram matrix leave the real block's inverse unchanged.
    pad = -(-counts // 8) * 8
    if only is not None:
        pad = np.where(np.isin(np.arange(n_tracks), only), pad, 0)
    for p in np.unique(pad[pad > 0]):
        tracks = np.flatnonzero(pad == p)
        per_chunk = max(1, cfg.block_faces // int(p))
        for lo in range(0, len(tracks), per_chunk):
            chunk = tracks[lo:lo + per_chunk]
            n = counts[chunk]
            slot = np.arange(p)[None, :]
            valid = slot < n[:, None]
            src = order[np.minimum(starts[chunk][:, None] + slot, len(x) - 1)]
            u = np.where(valid[..., None], centred[src], 0.0)  # (B, p, D)
            # (cI + G)^-1 = L L^T; then V = L^T U satisfies V^T V = U^T (cI + G)^-1 U (Woodbury).
            # Batched inverse + Cholesky: LAPACK's batched eigh is ~50x slower at these sizes.
            inv = np.linalg.inv(c * np.eye(p) + u @ u.transpose(0, 2, 1))
            inv = (inv + inv.transpose(0, 2, 1)) / 2
            v = np.linalg.cholesky(inv).transpose(0, 2, 1) @ u
            # Ridge leverage h_i = u_i^T (S + cI)^-1 u_i = [G (cI + G)^-1]_ii = 1 - c [(cI + G)^-1]_ii.
            lev = np.clip(1.0 - c * np.diagonal(inv, axis1=1, axis2=2), 0.0, 1.0)
            own = _own_mahalanobis(lev, n, kappa, cfg.leave_one_out)
            own = np.where(valid, own, -np.inf)
            k = np.maximum(1, np.ceil(cfg.lowest_fraction * n).astype(np.int64))
            top = -np.sort(-own, axis=1)
            take = slot < k[:, None]
            thresholds[chunk] = np.where(take, top, 0.0).sum(axis=1) / k
            # float32 for the big (N, D) @ (D, T) product: its rounding (~1e-7 relative) is far
            # below the spread of Mahalanobis distances around a threshold.
            whiten_parts.append(v[valid].astype(np.float32))
            row_parts.append(np.repeat(chunk, n))
    whiten = np.concatenate(whiten_parts) if whiten_parts else np.zeros((0, dim), np.float32)
    row_track = np.concatenate(row_parts) if row_parts else np.zeros(0, np.int64)
    return TrackGaussians(means, counts, whiten, row_track.astype(np.int64), scale, thresholds)


def _own_mahalanobis(lev: np.ndarray, n: np.ndarray, kappa: float, leave_one_out: bool) -> np.ndarray:
    """Squared Mahalanobis distance of each own face from ridge leverages ``lev (B, p)``.

    In-sample: ``maha_i = (n - 1 + kappa) h_i``. Leave-one-out: removing face ``i`` moves the mean
    by ``-u_i / (n - 1)`` (residual ``n/(n-1) u_i``), the scatter to ``S - n/(n-1) u_i u_i^T`` and
    the prior weight to ``1/(n - 2 + kappa)``; Sherman-Morrison then gives
    ``maha_(i) = (n - 2 + kappa) (n/(n-1))^2 h_i / (1 - n/(n-1) h_i)``. One-face tracks have no
    held-out version and keep the in-sample value 0.
    """
    n = n[:, None].astype(np.float64)
    inside = (n - 1 + kappa) * lev
    if not leave_one_out:
        return inside
    beta = n / np.maximum(n - 1, 1)
    # Centred-data leverages are < (n-1)/n, so 1 - beta h > 0; the clip guards rounding only.
    held_out = (n - 2 + kappa) * beta**2 * lev / np.maximum(1 - beta * lev, 1e-12)
    return np.where(n >= 2, held_out, inside)


def _maha_blocks(gauss: TrackGaussians, block_faces: int):
    """Yield ``(track ids, (len, T) squared Mahalanobis rows)`` for groups of whole tracks."""
    mu = gauss.means
    if len(gauss.row_track) == 0:
        return
    sq = np.einsum("td,td->t", mu, mu)
    mu32 = mu.astype(np.float32)
    # Whole tracks per block: rows of one track are contiguous in ``whiten``.
    bounds = np.flatnonzero(np.diff(gauss.row_track)) + 1
    cuts = np.concatenate([[0], bounds, [len(gauss.row_track)]])
    lo = 0
    while lo < len(cuts) - 1:
        hi = lo + 1
        while hi < len(cuts) - 1 and cuts[hi + 1] - cuts[lo] <= block_faces:
            hi += 1
        r0, r1 = cuts[lo], cuts[hi]
        tracks = gauss.row_track[cuts[lo:hi]]
        v = gauss.whiten[r0:r1]
        proj = v @ mu32.T  # (rows, T): V_t mu_b
        proj -= np.einsum("rd,rd->r", v, mu32[gauss.row_track[r0:r1]])[:, None]  # minus V_t mu_t
        diff2 = np.square(proj, out=proj)
        seg = cuts[lo:hi] - r0
        quad = np.add.reduceat(diff2, seg, axis=0)  # (tracks, T): |V_t (mu_b - mu_t)|^2
        maha = _mahalanobis(sq[tracks][:, None] + sq[None, :], mu[tracks] @ mu.T, quad,
                            gauss.scale[tracks][:, None])
        yield tracks, maha
        lo = hi


def _mahalanobis(total: np.ndarray, cross: np.ndarray, quad: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis ``(|mu_b - mu_t|^2 - |V_t (mu_b - mu_t)|^2) / b_t`` from its parts, any
    broadcastable shape: ``total`` ``|mu_t|^2 + |mu_b|^2``, ``cross`` ``mu_t . mu_b``, ``quad``
    ``|V_t (mu_b - mu_t)|^2``, ``scale`` ``b_t``."""
    dist2 = total - 2.0 * cross
    # For (nearly) equal means the subtraction leaves only float64 rounding of its terms; that
    # is zero, or a zero-variance track (scale at _MIN_VARIANCE) would put its own copy ~1e-3
    # Mahalanobis units away, above its threshold of 0 (numpy 2.4's matmul rounds so).
    dist2[dist2 <= 8.0 * np.finfo(np.float64).eps * total] = 0.0
    return np.maximum(dist2 - quad, 0.0) / scale


def _pair_mahalanobis(gauss: TrackGaussians, directed: np.ndarray, block_faces: int) -> np.ndarray:
    """``(K,)`` squared Mahalanobis distance of track ``b``'s mean under track ``t``'s Gaussian
    for each directed pair ``(t, b)`` of ``directed`` ``(K, 2)`` int64; the arithmetic of
    :func:`_maha_blocks` on the given pairs only, ``O(sum n_t D)`` time."""
    if len(directed) == 0 or len(gauss.row_track) == 0:
        return np.zeros(len(directed))
    mu = gauss.means
    mu32 = mu.astype(np.float32)
    order = np.argsort(gauss.row_track, kind="stable")
    rows_per = np.bincount(gauss.row_track, minlength=len(mu))
    first = np.r_[0, np.cumsum(rows_per)[:-1]]
    t, b = directed[:, 0], directed[:, 1]
    quad = np.zeros(len(directed))
    ends = np.cumsum(rows_per[t])  # rows up to and including each pair
    lo = 0
    while lo < len(directed):  # whole pairs per block, about block_faces rows each
        done = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, done + block_faces, side="right")))
        n = rows_per[t[lo:hi]]
        pair = np.repeat(np.arange(lo, hi), n)
        within = np.arange(len(pair)) - np.repeat(np.cumsum(n) - n, n)
        v = gauss.whiten[order[first[t[pair]] + within]]
        proj = np.einsum("rd,rd->r", v, mu32[b[pair]]) - np.einsum("rd,rd->r", v, mu32[t[pair]])
        quad[lo:hi] = np.bincount(pair - lo, weights=np.square(proj).astype(np.float64), minlength=hi - lo)
        lo = hi
    sq = np.einsum("td,td->t", mu, mu)
    return _mahalanobis(sq[t] + sq[b], np.einsum("kd,kd->k", mu[t], mu[b]), quad, gauss.scale[t])


def coarse_matches(
    embeddings: np.ndarray, track_index: np.ndarray, cfg: MatchingConfig | None = None,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """Pairs of tracks whose means fall inside each other's bottom-quantile density region.

    Args:
        embeddings: ``(N, D)`` float face embeddings, L2-normalised (``float32 (N, 512)``).
        track_index: ``(N,)`` int track of each face in ``0..T-1``; tracks may have any number of
            faces (one-face tracks can only be matched *by* another track: their own threshold is
            the density at their mean, which no other mean reaches).
        cfg: matching settings; ``cfg.mutual`` picks "either direction" (default) or "both".
        candidates: ``(K, 2)`` int track pairs to test, or None for every pair. Only their
            tracks' Gaussians are fitted (the pooled variance still comes from all), so a
            candidate's outcome is the one the full matching gives it; growth tests only
            mutually nearest groups (:func:`vcn.method.grouping.grow_matches`).

    Returns:
        ``(M, 2)`` int64 unique unordered pairs ``(a, b)`` with ``a < b``, sorted
        lexicographically. Empty ``(0, 2)`` for fewer than two tracks.
        Each track's Gaussian and mean come from at most ``cfg.max_items`` of its items.
        Cost: ``O(N T D)`` time, ``O(cfg.block_faces * T + N D)`` memory; with candidates
        ``O(N D)`` plus the fit of their tracks.
    """
    cfg = cfg or MatchingConfig()
    track_index = check_track_index(track_index, len(embeddings))
    if np.bincount(track_index).max(initial=0) > cfg.max_items:
        keep = sample_rows(track_index, cfg.max_items)
        embeddings, track_index = np.asarray(embeddings)[keep], track_index[keep]
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    if candidates is not None:
        pairs = np.unique(np.sort(np.asarray(candidates, np.int64).reshape(-1, 2), axis=1), axis=0)
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= n_tracks):
            raise InputError(f"candidates must be pairs of tracks in 0..{n_tracks - 1}")
        gauss = fit_track_gaussians(embeddings, track_index, cfg, only=np.unique(pairs))
        pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (gauss.counts[pairs] > 0).all(axis=1)]
        directed = np.concatenate([pairs, pairs[:, ::-1]])  # each mean under the other's Gaussian
        hit = _pair_mahalanobis(gauss, directed, cfg.block_faces) <= gauss.thresholds[directed[:, 0]]
        ab, ba = hit[:len(pairs)], hit[len(pairs):]
        return pairs[(ab & ba) if cfg.mutual else (ab | ba)]
    gauss = fit_track_gaussians(embeddings, track_index, cfg)
    found = []
    for tracks, maha in _maha_blocks(gauss, cfg.block_faces):
        hit = maha <= gauss.thresholds[tracks][:, None]
        hit[np.arange(len(tracks)), tracks] = False
        hit[:, gauss.counts == 0] = False
        a, b = np.nonzero(hit)
        found.append(np.stack([tracks[a], b], axis=1))
    if not found:
        return np.zeros((0, 2), np.int64)
    directed = np.concatenate(found).astype(np.int64)
    if cfg.mutual:
        key = directed[:, 0] * n_tracks + directed[:, 1]
        rev = directed[:, 1] * n_tracks + directed[:, 0]
        directed = directed[np.isin(key, rev)]
    pairs = np.sort(directed, axis=1)
    return np.unique(pairs, axis=0).reshape(-1, 2)
