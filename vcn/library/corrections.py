"""Corrections: what a reviewer says about the clusters, stated on tracks so that it survives re-runs.

A correction names tracks (``(movie_id, track_id)`` pairs), never clusters or identities: those
are renumbered by every run, tracks are not (a re-run of the clustering keeps the title's
tracks). The commands resolve the ids a reviewer reads in the report (a title's cluster, a
library identity, a track) to their tracks at the time they are said.

- ``label``: one group of tracks; the cluster and the identity holding them take ``name``.
- ``merge``: two or more groups; all their tracks are one person (must-links).
- ``split``: two or more groups; tracks of different groups are different people (cannot-links).
- ``reject``: one group; the tracks are nobody (no face, or a face not worth a cluster): unknown.

Corrections are applied in the order they were said, each to the result of the ones before, on
top of the method's result (:func:`apply_to_labels`), so a later statement overrides an earlier
one it contradicts. Splits also enter the clustering itself as cannot-links
(:func:`cannot_link_rows`), so the method never re-joins what a reviewer split.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vcn.errors import InputError

KINDS = ("label", "merge", "split", "reject")

TrackRef = tuple[str, str]


@dataclass(frozen=True)
class Correction:
    """One statement of a reviewer.

    ``id``: unique, sortable by time; ``time``: ISO 8601 UTC; ``user``; ``kind``: one of
    :data:`KINDS`; ``said``: the statement as given (the command line); ``groups``: tuples of
    track references; ``name``: the name of a ``label``.
    """

    id: str
    time: str
    user: str
    kind: str
    said: str
    groups: tuple[tuple[TrackRef, ...], ...]
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"correction {self.id}: unknown kind {self.kind!r}; one of {', '.join(KINDS)}")
        want = 2 if self.kind in ("merge", "split") else 1
        if len(self.groups) < want or any(not g for g in self.groups):
            raise InputError(f"correction {self.id}: a {self.kind} needs {want} or more non-empty groups "
                             "of tracks")
        if self.kind == "label" and not (self.name or "").strip():
            raise InputError(f"correction {self.id}: a label needs a name")

    def tracks(self) -> set[TrackRef]:
        return {t for g in self.groups for t in g}

    def to_dict(self) -> dict:
        return {"id": self.id, "time": self.time, "user": self.user, "kind": self.kind, "said": self.said,
                "groups": [[list(t) for t in g] for g in self.groups], "name": self.name}

    @classmethod
    def from_dict(cls, d: dict) -> Correction:
        return cls(id=str(d["id"]), time=str(d["time"]), user=str(d.get("user", "")), kind=str(d["kind"]),
                   said=str(d.get("said", "")), name=d.get("name"),
                   groups=tuple(tuple((str(m), str(t)) for m, t in g) for g in d["groups"]))


def for_movie(corrections: Iterable[Correction], movie_id: str) -> list[Correction]:
    """The corrections that name at least one track of ``movie_id``, in the order given."""
    return [c for c in corrections if any(m == movie_id for m, _ in c.tracks())]


def _rows(group: Iterable[TrackRef], movie_id: str, row_of: dict[str, int]) -> np.ndarray:
    return np.array(sorted({row_of[t] for m, t in group if m == movie_id and t in row_of}), np.int64)


def cannot_link_rows(corrections: Iterable[Correction], movie_id: str, track_ids: np.ndarray) -> np.ndarray:
    """(P, 2) int64 pairs of track rows (in ``track_ids`` order) that a split says are two people
    and no later merge joined again."""
    row_of = {t: i for i, t in enumerate(track_ids)}
    pairs: set[tuple[int, int]] = set()
    for c in corrections:
        groups = [_rows(g, movie_id, row_of) for g in c.groups]
        if c.kind == "split":
            for i, a in enumerate(groups):
                for b in groups[i + 1:]:
                    pairs |= {(min(x, y), max(x, y)) for x in a.tolist() for y in b.tolist() if x != y}
        elif c.kind == "merge":
            rows = set(np.concatenate(groups).tolist())
            pairs = {p for p in pairs if not (p[0] in rows and p[1] in rows)}
    return np.array(sorted(pairs), np.int64).reshape(-1, 2)


def apply_to_labels(labels: np.ndarray, track_ids: np.ndarray, movie_id: str,
                    corrections: Iterable[Correction]) -> np.ndarray:
    """The method's labels (T,) int64 (-1: unknown) of one title's tracks with the corrections
    applied in order; returns new labels (T,) int64. Tracks of other titles are ignored.

    A merge joins every cluster holding one of its tracks (and its unknown tracks) into one; a
    split moves, from each cluster holding tracks of two or more of its groups, the tracks of
    every group after the first that are there into a cluster of their own; a reject makes its
    tracks unknown. Applying the same corrections again changes nothing.
    """
    out = np.asarray(labels, np.int64).copy()
    row_of = {t: i for i, t in enumerate(track_ids)}
    for c in corrections:
        groups = [_rows(g, movie_id, row_of) for g in c.groups]
        rows = np.concatenate(groups) if groups else np.zeros(0, np.int64)
        if not len(rows):
            continue
        fresh = int(out.max()) + 1 if len(out) else 0
        if c.kind == "merge":
            held = np.unique(out[rows][out[rows] >= 0])
            target = int(held[0]) if len(held) else fresh
            out[np.isin(out, held)] = target
            out[rows] = target
        elif c.kind == "split":
            for i, g in enumerate(groups[1:], start=1):
                earlier = np.concatenate(groups[:i])
                for cl in np.unique(out[g][out[g] >= 0]):
                    if np.any(out[earlier] == cl):
                        out[g[out[g] == cl]] = fresh
                        fresh += 1
        elif c.kind == "reject":
            out[rows] = -1
    return out

