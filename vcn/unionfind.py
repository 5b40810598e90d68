"""Disjoint sets (union-find) over the integers 0..n-1.

Used to join tracks across chunk boundaries and to apply merges transitively when clustering.
"""

from __future__ import annotations

import numpy as np


class DisjointSet:
    """Union-find with path halving and union by size over ``n`` elements."""

    def __init__(self, n: int) -> None:
        self._parent = np.arange(n, dtype=np.int64)
        self._size = np.ones(n, dtype=np.int64)

    def find(self, i: int) -> int:
        """Return the representative of ``i``'s set."""
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return int(i)

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; return True when they were separate."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return True

    def labels(self) -> np.ndarray:
        """Return ``(n,)`` int64 labels ``0..k-1``, numbered by first appearance."""
        roots = np.array([self.find(i) for i in range(len(self._parent))], dtype=np.int64)
        _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
        # Renumber so that label order follows the first element of each set.
        order = np.argsort(np.argsort(first))
        return order[inverse].astype(np.int64)
