"""Linking the clusters of one person that stage 4 leaves apart: first neighbours within the
distance at which this video shows two different people.

Stage 4 merges only what each cluster's own spread admits, so a lead whose looks vary widely
(make-up, years, light) ends as several tight clusters. FINCH's observation holds for such
fragments: a cluster's first neighbour is usually the same person. It fails for guests, whose
nearest cluster is somebody else. The video itself says where "somebody else" starts: two
clusters holding tracks seen on one frame are two people, and the closest such pair bounds how
near two different people come in this video. A link is made only between mutual first
neighbours closer than every cannot-linked pair; links apply closest first, never joining a
cannot-link, and the test repeats on the merged clusters until nothing links. A video with no
co-occurring tracks shows no such bound, and nothing is linked.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from vcn.constraints import ConstrainedMerger, group_pairs
from vcn.errors import InputError


def _unit(sums: np.ndarray) -> np.ndarray:
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def link_clusters(sums: np.ndarray, cannot_link: np.ndarray) -> np.ndarray:
    """Cluster of each input cluster after linking; labels (C,) int64 ``0..k-1``.

    ``sums`` (C, D) float: the sum of each cluster's unit face embeddings (its mean direction is
    the cluster's position); ``cannot_link`` (P, 2) int cluster pairs that are two people.
    Cost per pass ``O(C^2 D)``; each pass that goes on merges two clusters at least.
    """
    sums = np.asarray(sums, np.float64)
    if sums.ndim != 2:
        raise InputError(f"sums must be (C, D), got {sums.shape}")
    n = len(sums)
    labels = np.arange(n, dtype=np.int64)
    cannot = group_pairs(cannot_link, labels)
    while len(sums) > 1 and len(cannot):
        unit = _unit(sums)
        d = 1.0 - unit @ unit.T
        bound = float(d[cannot[:, 0], cannot[:, 1]].min())
        np.fill_diagonal(d, np.inf)
        d[cannot[:, 0], cannot[:, 1]] = d[cannot[:, 1], cannot[:, 0]] = np.inf
        nearest = d.argmin(axis=1)
        dist = d[np.arange(len(d)), nearest]
        link = np.flatnonzero((nearest[nearest] == np.arange(len(d))) & (dist < bound))
        link = link[link < nearest[link]]  # each mutual pair once
        if len(link) == 0:
            break
        merger = ConstrainedMerger(len(sums), cannot)
        for i in link[np.argsort(dist[link], kind="stable")]:
            merger.union(int(i), int(nearest[i]))
        comp = np.unique(merger.groups(), return_inverse=True)[1]
        if comp.max() + 1 == len(sums):
            break
        member = sparse.csr_matrix((np.ones(len(comp)), (comp, np.arange(len(comp)))))
        sums = member @ sums
        labels = comp[labels]
        cannot = group_pairs(cannot, comp)
    return labels
