"""People across titles: the clusters of a library's titles linked into library identities.

Every title is clustered on its own (with its own finetuned model for the ``vcn`` method), so
its clusters are compared across titles in one shared space: the generic recognizer's
embedding (``tracks.parquet`` ``mean_embedding``). A cluster is summarised by

- its **mean**: the face-weighted mean of its tracks' generic means, L2-normalised;
- its **reach**: the largest cosine distance from one of its tracks to the mean of its other
  tracks (NaN for a one-track cluster). That is the widest gap between one appearance of the
  person and the rest that the title's clustering accepted as one person.

Titles are linked one at a time, in the order they join the library, each against the
identities already there (:func:`link_title`), so a new title never recomputes the library and
linking the titles one by one gives the same identities as linking them all at once in that
order. A cluster of the new title joins an existing identity when

1. they are **mutual nearest neighbours**: the identity is the cluster's nearest (its nearest
   member cluster, by the cosine distance of the means), and the cluster is the identity's
   nearest among the title's clusters; so an identity takes at most one cluster of a title and
   two clusters of one title never share an identity; and
2. the distance is **within the library's reach** (:func:`library_reach`): no farther than the
   median of the reaches of the library's many-track clusters. A new title's clusters are two
   people's only as far as the same-person clusters of single titles are; the median keeps one
   title's unusually wide cluster from widening every link.

Otherwise the cluster starts a new identity. Nothing here is tuned: the rule and its threshold
come from the clusters themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vcn.errors import InputError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class IdentityConfig:
    """How the linking computes; none of it changes which clusters link.

    ``block``: new clusters compared with the library per matrix product (bounds memory at
    ``block`` x members floats).
    """

    block: int = 256


@dataclass
class ClusterSummaries:
    """One row per cluster of one or more titles.

    ``movie_id`` (C,) object, ``cluster_id`` (C,) object, ``mean`` (C, D) float32 L2-normalised
    generic embedding, ``reach`` (C,) float32 (NaN for one-track clusters), ``n_tracks`` and
    ``n_faces`` (C,) int64, ``screen_time_s``, ``first_sec``, ``last_sec`` (C,) float64.
    """

    movie_id: np.ndarray
    cluster_id: np.ndarray
    mean: np.ndarray
    reach: np.ndarray
    n_tracks: np.ndarray
    n_faces: np.ndarray
    screen_time_s: np.ndarray
    first_sec: np.ndarray
    last_sec: np.ndarray

    def __len__(self) -> int:
        return len(self.cluster_id)

    def take(self, rows: np.ndarray | slice) -> ClusterSummaries:
        return ClusterSummaries(**{k: v[rows] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[ClusterSummaries], dim: int = 512) -> ClusterSummaries:
        if not parts:
            return empty_summaries(dim)
        return ClusterSummaries(**{k: np.concatenate([getattr(p, k) for p in parts])
                                   for k in vars(parts[0])})


def empty_summaries(dim: int = 512) -> ClusterSummaries:
    z = np.zeros(0, np.int64)
    f = np.zeros(0, np.float64)
    return ClusterSummaries(np.zeros(0, object), np.zeros(0, object), np.zeros((0, dim), np.float32),
                            np.zeros(0, np.float32), z, z, f, f, f)


def summarize_title(
    movie_id: str,
    track_cluster: np.ndarray,
    track_mean: np.ndarray,
    track_faces: np.ndarray,
    track_first_sec: np.ndarray,
    track_last_sec: np.ndarray,
    track_seconds: np.ndarray,
) -> ClusterSummaries:
    """Summaries of one title's clusters from its tracks (``unknown`` tracks are left out).

    ``track_cluster`` (T,) str, ``track_mean`` (T, D) generic mean embeddings, ``track_faces``
    (T,) int, ``track_first_sec``/``track_last_sec`` (T,) seconds of the first and last face,
    ``track_seconds`` (T,) each track's screen time.
    """
    track_cluster = np.asarray(track_cluster, dtype=object)
    x = np.asarray(track_mean, np.float64)
    if x.ndim != 2 or len(x) != len(track_cluster):
        raise InputError(f"track means must be (T, D) with T = {len(track_cluster)}, got {x.shape}")
    keep = track_cluster != UNKNOWN
    if not keep.any():
        return empty_summaries(x.shape[1] if x.ndim == 2 else 512)
    x = x[keep]
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    w = np.asarray(track_faces, np.float64)[keep]
    uniq, inv = np.unique(track_cluster[keep], return_inverse=True)
    c = len(uniq)
    sums = np.zeros((c, x.shape[1]))
    np.add.at(sums, inv, x * w[:, None])
    means = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    # Leave-one-out: each track against the weighted mean of its cluster's other tracks.
    rest = sums[inv] - x * w[:, None]
    rest_norm = np.linalg.norm(rest, axis=1)
    n_tracks = np.bincount(inv, minlength=c)
    cos = np.einsum("nd,nd->n", x, rest) / np.maximum(rest_norm, 1e-12)
    gap = np.where(rest_norm > 1e-9, 1.0 - cos, np.nan)
    reach = np.full(c, np.nan)
    many = n_tracks[inv] > 1
    if many.any():
        np.fmax.at(reach, inv[many], gap[many])
    first = np.full(c, np.inf)
    last = np.full(c, -np.inf)
    np.minimum.at(first, inv, np.asarray(track_first_sec, np.float64)[keep])
    np.maximum.at(last, inv, np.asarray(track_last_sec, np.float64)[keep])
    return ClusterSummaries(
        movie_id=np.full(c, movie_id, object), cluster_id=uniq.astype(object),
        mean=means.astype(np.float32), reach=reach.astype(np.float32), n_tracks=n_tracks.astype(np.int64),
        n_faces=np.bincount(inv, weights=w, minlength=c).astype(np.int64),
        screen_time_s=np.bincount(inv, weights=np.asarray(track_seconds, np.float64)[keep], minlength=c),
        first_sec=first, last_sec=last,
    )


def library_reach(reach: np.ndarray) -> float:
    """The distance a link may span: the median reach of the clusters that have one (two or
    more tracks); 0 when no cluster has one (then nothing links)."""
    r = np.asarray(reach, np.float64)
    r = r[np.isfinite(r)]
    return float(np.median(r)) if len(r) else 0.0


@dataclass
class Links:
    """Identities of a library's clusters.

    ``identity`` (C,) int64 identity number of each cluster row (numbers are never reused),
    ``linked_to`` (C,) int64 the row of the member cluster it linked to (-1: it started its
    identity), ``distance`` (C,) float32 the cosine distance of that link (NaN when none),
    ``threshold`` (C,) float32 the library reach when it was linked.
    """

    identity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    linked_to: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    distance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    threshold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    @property
    def next_identity(self) -> int:
        return int(self.identity.max()) + 1 if len(self.identity) else 0


def link_title(
    library: ClusterSummaries, links: Links, title: ClusterSummaries,
    cfg: IdentityConfig = IdentityConfig(), next_identity: int | None = None,
) -> Links:
    """Identities of a new title's clusters against the library's (see the module docstring).

    ``library`` and ``links``: the clusters already linked and their identities; ``title``: the
    new title's clusters (none of ``library``'s titles). Returns the new title's :class:`Links`
    (its ``linked_to`` rows index ``library``). ``next_identity``: the first number a new
    identity gets (default: one past the library's largest). Cost: one (k, M) distance matrix for
    k new clusters and M library clusters.
    """
    k, m = len(title), len(library)
    if m and set(title.movie_id.tolist()) & set(library.movie_id.tolist()):
        raise InputError("a title is linked against a library that already holds it; drop its rows first")
    start = links.next_identity if next_identity is None else next_identity
    threshold = library_reach(np.concatenate([library.reach, title.reach]))
    ident = np.full(k, -1, np.int64)
    linked = np.full(k, -1, np.int64)
    dist = np.full(k, np.nan, np.float32)
    if k and m:
        lib_ident = links.identity
        # Each new cluster's nearest member of the library, a block of new clusters at a time.
        near = np.empty(k, np.int64)
        near_d = np.empty(k, np.float32)
        for lo in range(0, k, max(1, cfg.block)):
            sim = title.mean[lo:lo + cfg.block] @ library.mean.T
            at = np.argmax(sim, axis=1)
            near[lo:lo + cfg.block] = at
            near_d[lo:lo + cfg.block] = 1.0 - sim[np.arange(len(sim)), at]
        best_ident = lib_ident[near]  # its nearest identity: the identity of its nearest member
        mutual = np.zeros(k, bool)
        for i in np.unique(best_ident):
            members = np.flatnonzero(lib_ident == i)
            # The identity's nearest new cluster (nearest to any of its members) must be one that
            # has the identity as its nearest.
            c = int(np.argmin((1.0 - title.mean @ library.mean[members].T).min(axis=1)))
            mutual[c] |= best_ident[c] == i
        ok = mutual & (near_d <= threshold)
        ident[ok] = best_ident[ok]
        linked[ok] = near[ok]
        dist[ok] = near_d[ok]
    fresh = ident < 0
    ident[fresh] = start + np.arange(int(fresh.sum()))
    return Links(identity=ident, linked_to=linked, distance=dist,
                 threshold=np.full(k, threshold, np.float32))


def link_library(
    titles: list[ClusterSummaries], cfg: IdentityConfig = IdentityConfig()
) -> tuple[ClusterSummaries, Links]:
    """Link titles one at a time in the given order, from an empty library (what the
    incremental runs give when the titles join in that order)."""
    library = ClusterSummaries.concat(titles, titles[0].mean.shape[1] if titles else 512)
    n = len(library)
    links = Links(np.zeros(n, np.int64), np.full(n, -1, np.int64), np.full(n, np.nan, np.float32),
                  np.zeros(n, np.float32))
    lo, nxt = 0, 0
    for title in titles:
        hi = lo + len(title)
        before = Links(links.identity[:lo], links.linked_to[:lo], links.distance[:lo], links.threshold[:lo])
        new = link_title(library.take(slice(0, lo)), before, title, cfg, next_identity=nxt)
        links.identity[lo:hi], links.linked_to[lo:hi] = new.identity, new.linked_to
        links.distance[lo:hi], links.threshold[lo:hi] = new.distance, new.threshold
        nxt = max(nxt, int(new.identity.max()) + 1 if hi > lo else 0)
        lo = hi
    return library, links
