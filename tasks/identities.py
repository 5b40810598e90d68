"""Library task: link the clusters of the catalogue's titles into library identities.

Reads the catalogue (``vcn.storage.catalogue``), summarises each title's clusters once
(``vcn.library.identities.summarize_title``, stored under ``OUT/library/summaries``), links each title
not linked yet against the identities already there (``vcn.library.identities.link_title``), and writes
``members.parquet`` and ``identities.parquet`` (``vcn.storage.identities``) with the library's
corrections log applied. A title re-clustered since (``vcn rerun``) is published to the
catalogue again, taken out and linked again as a new one; the other titles' links are kept as
they are.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from prefect import get_run_logger, task

from vcn.library.corrections import Correction, TrackRef
from vcn.library.identities import (
    ClusterSummaries,
    IdentityConfig,
    Links,
    empty_summaries,
    link_title,
    summarize_title,
)
from vcn.storage.catalogue import CatalogueLayout, is_current, publish_movie
from vcn.storage.corrections import read_log
from vcn.storage.identities import (
    EMBED_DIM,
    LibraryLayout,
    LinkedLibrary,
    PublishedTitle,
    identity_name,
    published_titles,
    read_members,
    title_clusters,
    title_tracks,
    write_identities,
    write_members,
    write_summaries,
)
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import file_lock
from vcn.tasks.policies import is_transient
from vcn.tasks.progress import say


def title_summaries(out_dir: str, title: PublishedTitle) -> ClusterSummaries:
    """Summaries of one published title's clusters (screen time and first second as in its
    ``clusters.parquet``)."""
    t = title_tracks(out_dir, title.movie_id)
    fps = title.fps if title.fps > 0 else 1.0
    first, last = t["first_frame"] / fps, t["last_frame"] / fps
    s = summarize_title(title.movie_id, t["cluster_id"], t["mean_embedding"].reshape(len(first), -1)
                        if len(first) else np.zeros((0, EMBED_DIM), np.float32),
                        t["n_faces"], first, last, last - first)
    c = title_clusters(out_dir, title.movie_id)
    row = {cid: i for i, cid in enumerate(c["cluster_id"])}
    at = np.fromiter((row[cid] for cid in s.cluster_id), np.int64, count=len(s))
    if len(at):
        s.screen_time_s = c["screen_time_s"][at].astype(np.float64)
        s.first_sec = c["first_sec"][at].astype(np.float64)
    return s


def _drop_titles(lib: LinkedLibrary, gone: set[str]) -> LinkedLibrary:
    if not gone:
        return lib
    keep = ~np.isin(lib.summaries.movie_id.astype(str), list(gone))
    new_row = np.cumsum(keep) - 1
    old = lib.links.linked_to[keep]
    valid = (old >= 0) & keep[np.maximum(old, 0)]  # a link to a member taken out is forgotten
    linked = np.where(valid, new_row[np.maximum(old, 0)], -1)
    links = Links(lib.links.identity[keep], linked, lib.links.distance[keep], lib.links.threshold[keep])
    titles = {k: v for k, v in lib.titles.items() if k not in gone}
    return LinkedLibrary(lib.summaries.take(np.flatnonzero(keep)), links, titles, lib.next_identity)


def corrected_identities(out_dir: str, lib: LinkedLibrary,
                         log: list[Correction]) -> tuple[list[str | None], list[str | None]]:
    """Per linked cluster (row of ``lib``): its identity with the corrections applied in order
    (a merge joins the identities holding its tracks, a split gives the clusters holding a later
    group's tracks an identity apart from an earlier group's, a cluster whose tracks are all
    rejected has none) and its identity's name (the latest label naming one of its tracks)."""
    s = lib.summaries
    ids: list[str | None] = [identity_name(int(i)) for i in lib.links.identity]
    names: list[str | None] = [None] * len(ids)
    if not log:
        return ids, names
    row_of = {(m, c): r for r, (m, c) in enumerate(zip(s.movie_id, s.cluster_id, strict=True))}
    cluster_of: dict[TrackRef, int] = {}
    tracks_of: dict[int, set[TrackRef]] = {}
    for movie_id in sorted({m for c in log for m, _ in c.tracks()} & set(lib.titles)):
        t = title_tracks(out_dir, movie_id)
        for track, cl in zip(t["track_id"], t["cluster_id"], strict=True):
            r = row_of.get((movie_id, cl))
            if r is not None:
                cluster_of[(movie_id, track)] = r
                tracks_of.setdefault(r, set()).add((movie_id, track))
    rejected: set[TrackRef] = set()
    for c in log:
        groups = [sorted({cluster_of[t] for t in g if t in cluster_of}) for g in c.groups]
        if c.kind == "merge":
            touched = sorted({ids[r] for g in groups for r in g if ids[r] is not None})
            if touched:
                ids = [touched[0] if i in touched else i for i in ids]
            rejected -= c.tracks()
        elif c.kind == "split":
            for k, g in enumerate(groups[1:], start=1):
                earlier = {ids[r] for e in groups[:k] for r in e}
                for r in g:
                    if ids[r] in earlier:
                        ids[r] = f"{ids[r]}-{c.id.rsplit('-', 1)[-1]}-{k}"
        elif c.kind == "reject":
            rejected |= c.tracks()
        elif c.kind == "label":
            rejected -= c.tracks()
    for r, tracks in tracks_of.items():
        if tracks <= rejected:
            ids[r] = None
    # A label names the identity holding most of its tracks now (a track split off since does
    # not take the name along); the latest label of an identity wins.
    latest: dict[str, tuple[str, str]] = {}
    for c in log:
        if c.kind != "label":
            continue
        held = [ids[cluster_of[t]] for t in sorted(c.tracks()) if t in cluster_of and ids[cluster_of[t]]]
        if held:
            top = max(set(held), key=lambda i: (held.count(i), -held.index(i)))
            latest[top] = (c.name or "", c.time)
    names = [latest[i][0] if i in latest else None for i in ids]
    return ids, names


def identity_rows(lib: LinkedLibrary, titles: list[PublishedTitle], ids: list[str | None],
                  names: list[str | None]) -> list[dict[str, Any]]:
    """One ``identities.parquet`` row per identity: its members, first and last appearance (titles
    in path order) and screen time per title."""
    order = {t.movie_id: i for i, t in enumerate(titles)}
    name_of = {t.movie_id: t.name for t in titles}
    s = lib.summaries
    rows = []
    by_identity: dict[str, list[int]] = {}
    for r, i in enumerate(ids):
        if i is not None:
            by_identity.setdefault(i, []).append(r)
    for ident, members in sorted(by_identity.items()):
        members.sort(key=lambda r: (order.get(s.movie_id[r], len(order)), s.first_sec[r]))
        first = members[0]
        last = max(members, key=lambda r: (order.get(s.movie_id[r], len(order)), s.last_sec[r]))
        per_title: dict[str, float] = {}
        for r in members:
            per_title[s.movie_id[r]] = per_title.get(s.movie_id[r], 0.0) + float(s.screen_time_s[r])
        rows.append({
            "identity_id": ident, "name": names[first], "n_titles": len(per_title),
            "n_clusters": len(members),
            "members": [{"movie_id": s.movie_id[r], "cluster_id": s.cluster_id[r]} for r in members],
            "first_movie_id": s.movie_id[first], "first_title": name_of.get(s.movie_id[first], ""),
            "first_sec": float(s.first_sec[first]),
            "last_movie_id": s.movie_id[last], "last_title": name_of.get(s.movie_id[last], ""),
            "last_sec": float(s.last_sec[last]),
            "screen_time_s": float(sum(per_title.values())),
            "screen_time": [{"movie_id": m, "title": name_of.get(m, ""), "screen_time_s": v}
                            for m, v in per_title.items()],
        })
    return rows


def update_identities(out_dir: str, rebuild: bool = False, cfg: IdentityConfig | None = None,
                      lock_timeout_s: float = 600.0) -> dict[str, Any]:
    """Link the catalogue's titles that are not linked yet (all of them with ``rebuild``) and
    rewrite ``OUT/library``; returns counts (titles linked now, titles, clusters, identities,
    identities seen in two or more titles)."""
    titles = published_titles(out_dir)
    # A title re-run since it was published (`vcn rerun`) is published again first.
    catalogue = CatalogueLayout.of(out_dir)
    stale_titles = [t for t in titles if not is_current(catalogue, MovieLayout.of(out_dir, t.movie_id))
                    and MovieLayout.of(out_dir, t.movie_id).manifest.exists()]
    for t in stale_titles:
        publish_movie(out_dir, t.movie_id)
    if stale_titles:
        titles = published_titles(out_dir)
    layout = LibraryLayout.of(out_dir)
    cfg = cfg or IdentityConfig()
    with file_lock(layout.lock, timeout_s=lock_timeout_s):
        lib = LinkedLibrary(empty_summaries(EMBED_DIM), Links(), {}, 0) if rebuild else read_members(layout)
        current = {t.movie_id: t.stamp for t in titles}
        stale = {m for m, stamp in lib.titles.items() if current.get(m) != stamp}
        lib = _drop_titles(lib, stale)
        todo = [t for t in titles if t.movie_id not in lib.titles]
        for title in todo:
            s = title_summaries(out_dir, title)
            write_summaries(layout, title.movie_id, s, title.stamp)
            new = link_title(lib.summaries, lib.links, s, cfg, next_identity=lib.next_identity)
            links = Links(np.r_[lib.links.identity, new.identity], np.r_[lib.links.linked_to, new.linked_to],
                          np.r_[lib.links.distance, new.distance], np.r_[lib.links.threshold, new.threshold])
            nxt = max(lib.next_identity, int(new.identity.max()) + 1 if len(new.identity) else 0)
            lib = LinkedLibrary(ClusterSummaries.concat([lib.summaries, s], EMBED_DIM), links,
                                {**lib.titles, title.movie_id: title.stamp}, nxt)
        log = read_log(out_dir)
        digest = hashlib.blake2b(json.dumps([c.to_dict() for c in log]).encode(), digest_size=16).hexdigest()
        ids, names = corrected_identities(out_dir, lib, log)
        if todo or stale or digest != lib.log_digest or not layout.identities.exists():
            lib.log_digest = digest
            write_members(layout, lib, ids, names)
            write_identities(layout, identity_rows(lib, titles, ids, names))
    n_titles: dict[str, set[str]] = {}
    for m, i in zip(lib.summaries.movie_id, ids, strict=True):
        if i is not None:
            n_titles.setdefault(i, set()).add(m)
    return {"titles_linked": len(todo), "titles": len(lib.titles), "clusters": len(lib.summaries),
            "identities": len(n_titles), "across_titles": sum(len(v) > 1 for v in n_titles.values()),
            "output": str(layout.identities)}


def format_identities(result: dict[str, Any]) -> str:
    return (f"vcn identities: {result['titles']} titles ({result['titles_linked']} linked now), "
            f"{result['clusters']} clusters -> {result['identities']} identities, "
            f"{result['across_titles']} of them in two or more titles\n    output: {result['output']}")


@task(name="link-identities", retries=1, retry_condition_fn=is_transient, persist_result=False)
def link_identities(out_dir: str) -> dict[str, Any]:
    """:func:`update_identities` as the library flow's last step."""
    result = update_identities(out_dir)
    say(get_run_logger(), "%s", format_identities(result))
    return result
