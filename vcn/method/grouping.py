"""Coarse matching grown over groups of matched tracks: the positives of the finetune.

Round 1 is the paper's track matching (:func:`vcn.method.matching.coarse_matches`, mutual); each further
round fits one Gaussian per *group* of matched tracks (a person's spread across shots) and
matches groups with the same rule, until the groups stop changing (:func:`grow_matches`). Two
guards keep a wrong match from snowballing: a match must join mutually nearest groups
(:func:`mutual_nearest`), and a group match may not join groups that lie farther apart than the
widest track match of the first round (:func:`group_distances`). Co-occurring tracks are never joined
(:mod:`vcn.method.constraints`). Matching runs on random views of the faces, so one draw of views can
miss a match or make a wrong one: :func:`voted_matches` keeps the pairs that a majority of
independent draws make. docs/method.md (departure 1) has the measurements.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vcn.errors import ConfigError
from vcn.method.constraints import consistent_pairs, drop_pairs, group_pairs
from vcn.method.matching import MatchingConfig, coarse_matches, index_sums, mean_directions
from vcn.unionfind import DisjointSet


def _closest_pairs(means: np.ndarray, group: np.ndarray, group_pairs: np.ndarray) -> np.ndarray:
    """For each pair of groups ``(G, 2)``, the pair of their tracks with the closest means."""
    out = np.zeros((len(group_pairs), 2), np.int64)
    members = {int(g): np.flatnonzero(group == g) for g in np.unique(group_pairs)}
    for i, (a, b) in enumerate(group_pairs):
        ta, tb = members[int(a)], members[int(b)]
        j, k = np.unravel_index(np.argmax(means[ta] @ means[tb].T), (len(ta), len(tb)))
        out[i] = ta[j], tb[k]
    return out


def match_groups(matches: np.ndarray | None, n_tracks: int) -> np.ndarray:
    """``(n_tracks,)`` int64 group of each track: the connected components of ``matches``
    ``(M, 2)`` int track pairs, ``0..G-1`` by first appearance."""
    groups = DisjointSet(n_tracks)
    for a, b in np.asarray(matches if matches is not None else [], np.int64).reshape(-1, 2):
        groups.union(int(a), int(b))
    return groups.labels()


def pairs_within_groups(group: np.ndarray) -> np.ndarray:
    """``(M, 2)`` int64 pairs ``a < b`` of every two tracks with one label in ``group`` ``(T,)``."""
    group = np.asarray(group)
    a, b = np.nonzero((group[:, None] == group[None, :]) & np.triu(np.ones((len(group),) * 2, bool), 1))
    return np.stack([a, b], axis=1).astype(np.int64)


def voted_matches(
    matches: Sequence[np.ndarray], n_tracks: int, quorum: int, means: np.ndarray,
    cannot_link: np.ndarray,
) -> np.ndarray:
    """The groups made of the track pairs that at least ``quorum`` matchings put in one group.

    ``matches``: one or more ``(M_i, 2)`` int track-pair arrays (e.g. :func:`grow_matches` on
    independent draws of views); a pair's votes are the matchings whose groups hold both
    tracks. ``means`` ``(n_tracks, D)`` unit track means, ``cannot_link`` ``(P, 2)`` int track
    pairs that are two people. The kept pairs are closed transitively, so with a quorum below
    ``len(matches)`` a group can join tracks that no single pair vote joined, and could join a
    cannot-link pair: the pairs are therefore applied most votes first, then closest means
    first, skipping one that would (:func:`vcn.method.constraints.consistent_pairs`). With
    ``quorum == len(matches)`` the groups are the meet of the matchings' partitions.
    ``O(sum M_i log)`` time.

    Returns ``(M, 2)`` int64 pairs ``a < b`` of every two tracks in one voted group.
    """
    if len(matches) == 0:
        raise ConfigError("voted_matches needs at least one matching (MethodConfig.match_draws >= 1)")
    if not 1 <= quorum <= len(matches):
        raise ConfigError(f"quorum={quorum} must lie in 1..{len(matches)} (the number of matchings)")
    closed = [pairs_within_groups(match_groups(m, n_tracks)) for m in matches]
    keys = np.concatenate([p[:, 0] * n_tracks + p[:, 1] for p in closed])
    keys, votes = np.unique(keys, return_counts=True)
    keys, votes = keys[votes >= quorum], votes[votes >= quorum]
    pairs = np.stack([keys // n_tracks, keys % n_tracks], axis=1).astype(np.int64)
    closeness = 1.0 - np.einsum("md,md->m", means[pairs[:, 0]], means[pairs[:, 1]])
    order = np.lexsort((closeness, -votes))
    rank = np.empty(len(pairs), np.int64)
    rank[order] = np.arange(len(pairs))
    kept = consistent_pairs(pairs, rank, n_tracks, cannot_link)
    return pairs_within_groups(match_groups(kept, n_tracks))


# Rows of the group-similarity matrix held at once in :func:`mutual_nearest` (memory block * G).
_NN_BLOCK = 1024


def mutual_nearest(embeddings: np.ndarray, group_index: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """``(M, 2)`` int64 pairs ``a < b`` of groups that are each other's nearest group, sorted.

    ``embeddings`` (N, D) unit rows, ``group_index`` (N,) int64 in 0..G-1, ``cannot_link``
    (P, 2) int64 *group* pairs, never counted as neighbours. Nearness is the cosine between the
    groups' mean embeddings; a group in no allowed pair has no neighbour. Each group is in one
    pair at most. ``O(G^2 D)`` time, ``O(_NN_BLOCK * G)`` memory.
    """
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups < 2:
        return np.zeros((0, 2), np.int64)
    means = mean_directions(embeddings, group_index, n_groups)
    cannot = np.asarray(cannot_link, np.int64).reshape(-1, 2)
    cannot = np.concatenate([cannot, cannot[:, ::-1]])
    nearest = np.full(n_groups, -1, np.int64)
    for lo in range(0, n_groups, _NN_BLOCK):
        rows = np.arange(lo, min(lo + _NN_BLOCK, n_groups))
        sim = means[rows] @ means.T
        sim[np.arange(len(rows)), rows] = -np.inf
        inside = (cannot[:, 0] >= lo) & (cannot[:, 0] < lo + len(rows))
        sim[cannot[inside, 0] - lo, cannot[inside, 1]] = -np.inf
        best = np.argmax(sim, axis=1)
        nearest[rows] = np.where(np.isfinite(sim[np.arange(len(rows)), best]), best, -1)
    a = np.flatnonzero(nearest > np.arange(n_groups))
    a = a[nearest[nearest[a]] == a]
    return np.stack([a, nearest[a]], axis=1)


def group_distances(
    embeddings: np.ndarray, group_index: np.ndarray, pairs: np.ndarray
) -> np.ndarray:
    """``(M,)`` mean pairwise cosine distance between the items of the two groups of each pair.

    ``embeddings`` (N, D) unit rows, ``group_index`` (N,) int64 in 0..G-1, ``pairs`` (M, 2) int
    group pairs. Bilinear in the groups' sums, so ``O(N D + M D)``.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    sums = index_sums(embeddings, group_index, n_groups)
    counts = np.bincount(group_index, minlength=n_groups).astype(np.float64)
    a, b = pairs[:, 0], pairs[:, 1]
    return 1.0 - np.einsum("md,md->m", sums[a], sums[b]) / (counts[a] * counts[b])


def grow_matches(
    embeddings: np.ndarray, track_index: np.ndarray, cfg: MatchingConfig, cannot_link: np.ndarray
) -> np.ndarray:
    """Coarse matching repeated on groups of matched tracks until the groups stop changing.

    ``embeddings`` (N, D) float unit rows (faces or their views), ``track_index`` (N,) int64 in
    0..T-1, ``cannot_link`` (P, 2) int64 track pairs that are two people. Round 1 is the paper's
    track matching; each further round fits one Gaussian per *group* (the tracks that matches
    joined, so a person's spread across shots) and matches groups with the same rule. A match
    is kept only when its two groups are also each other's nearest group
    (:func:`mutual_nearest`): without that, one wrong match between two low-information tracks
    makes a wide group whose Gaussian admits ever more people, and the groups snowball. So each
    round tests only the mutually nearest groups, which costs ``O(G^2 D)`` on the group means
    plus ``O(N D)``, not ``O(N G D)`` (every mean under every Gaussian). A group match must also
    join groups no farther apart (mean pairwise cosine of their items) than the widest track
    match of the first round: those are the paper's confident positives, so their widest pair is how far
    apart two tracks of one person are known to be in this video, and growth links no wider
    (docs/method.md, departure 1). A group match
    stands for its closest pair of tracks; matches that co-occur or would join a co-occurring
    pair are dropped (closest first, :func:`vcn.method.constraints.consistent_pairs`).

    Returns (M, 2) int64 pairs ``a < b`` of every two tracks in one final group: the positives.
    """
    n_tracks = int(track_index.max()) + 1
    embeddings = np.asarray(embeddings, np.float64)  # once: every step below sums in float64
    means = mean_directions(embeddings, track_index, n_tracks)
    group = np.arange(n_tracks)
    links = np.zeros((0, 2), np.int64)
    widest = np.inf
    for rnd in range(n_tracks):  # each round that goes on joins two groups at least
        item_group = group[track_index]
        nearest = mutual_nearest(embeddings, item_group, group_pairs(cannot_link, group))
        matched = coarse_matches(embeddings, item_group, cfg, candidates=nearest)
        if rnd > 0:  # the tolerance keeps a match exactly as wide as the widest one
            matched = matched[group_distances(embeddings, item_group, matched) <= widest + 1e-9]
        found = _closest_pairs(means, group, matched)
        cand = drop_pairs(np.unique(np.sort(np.concatenate([links, found]), axis=1), axis=0), cannot_link)
        closeness = 1.0 - np.einsum("md,md->m", means[cand[:, 0]], means[cand[:, 1]])
        links = consistent_pairs(cand, closeness, n_tracks, cannot_link)
        if rnd == 0 and len(links):
            widest = float(group_distances(embeddings, track_index, links).max())
        new = match_groups(links, n_tracks)
        if len(np.unique(new)) == len(np.unique(group)):
            break
        group = new
    return pairs_within_groups(group)
