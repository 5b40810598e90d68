"""Library identities on disk: per-title cluster summaries, the members table, identities.

Layout, beside the catalogue (``OUT/catalogue``), under ``OUT/library``::

    OUT/library/summaries/movie_id=<id>/part-0.parquet   one row per cluster of the title:
        cluster_id, n_tracks, n_faces, screen_time_s, first_sec, last_sec, reach,
        mean (FLOAT[512], the generic recognizer's); metadata: the catalogue stamp it was made from
    OUT/library/members.parquet      one row per linked cluster: rank (the order the titles
        joined), movie_id, cluster_id, identity_id and name (the linking's result with the
        corrections log applied; identity_id null for a cluster whose tracks were all
        rejected), linked_identity_id (the linking's own), linked_movie_id / linked_cluster_id
        (the member it linked to; null when it started the identity), distance, threshold;
        metadata: next identity number, the linked titles and their stamps, the log's digest
    OUT/library/corrections/*.json   the corrections log (vcn.storage.corrections)
    OUT/library/identities.parquet   one row per identity (see IDENTITIES_SCHEMA)
    OUT/library/.lock                held while the library step runs

Each title's clusters gain their ``identity_id`` in the joined view :func:`clusters_query`
(the catalogue's clusters joined to ``members.parquet``); a title's own files are never
rewritten by the library step. Every file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcn.errors import InputError
from vcn.library.identities import ClusterSummaries, Links, empty_summaries
from vcn.storage import schemas
from vcn.storage.atomic import write_parquet
from vcn.storage.catalogue import MOVIES, PARTITION_FILE, CatalogueLayout

EMBED_DIM = 512

SUMMARIES_SCHEMA = pa.schema([
    ("cluster_id", pa.string()),
    ("n_tracks", pa.int64()),
    ("n_faces", pa.int64()),
    ("screen_time_s", pa.float64()),
    ("first_sec", pa.float64()),
    ("last_sec", pa.float64()),
    ("reach", pa.float32()),
    ("mean", pa.list_(pa.float32(), EMBED_DIM)),
])

MEMBERS_SCHEMA = pa.schema([
    ("rank", pa.int64()),
    ("movie_id", pa.string()),
    ("cluster_id", pa.string()),
    ("identity_id", pa.string()),
    ("name", pa.string()),
    ("linked_identity_id", pa.string()),
    ("linked_movie_id", pa.string()),
    ("linked_cluster_id", pa.string()),
    ("distance", pa.float32()),
    ("threshold", pa.float32()),
])

MEMBER = pa.struct([("movie_id", pa.string()), ("cluster_id", pa.string())])
TITLE_TIME = pa.struct([("movie_id", pa.string()), ("title", pa.string()), ("screen_time_s", pa.float64())])

IDENTITIES_SCHEMA = pa.schema([
    ("identity_id", pa.string()),
    ("name", pa.string()),
    ("n_titles", pa.int64()),
    ("n_clusters", pa.int64()),
    ("members", pa.list_(MEMBER)),
    ("first_movie_id", pa.string()),
    ("first_title", pa.string()),
    ("first_sec", pa.float64()),
    ("last_movie_id", pa.string()),
    ("last_title", pa.string()),
    ("last_sec", pa.float64()),
    ("screen_time_s", pa.float64()),
    ("screen_time", pa.list_(TITLE_TIME)),
])


def identity_name(number: int) -> str:
    """``identity_id`` of identity number ``number``: ``id_00042``."""
    return f"id_{number:05d}"


def identity_number(identity_id: str) -> int:
    return int(identity_id.split("_", 1)[1])


@dataclass(frozen=True)
class LibraryLayout:
    """Paths of the library-level outputs under ``OUT/library``."""

    root: Path

    @classmethod
    def of(cls, out_dir: str | Path) -> LibraryLayout:
        return cls(Path(out_dir) / "library")

    @property
    def out_dir(self) -> Path:
        return self.root.parent

    def summary(self, movie_id: str) -> Path:
        return self.root / "summaries" / f"movie_id={movie_id}" / PARTITION_FILE

    @property
    def members(self) -> Path:
        return self.root / "members.parquet"

    @property
    def identities(self) -> Path:
        return self.root / "identities.parquet"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@dataclass(frozen=True)
class PublishedTitle:
    """A title of the catalogue: its id, file name, frame rate and publication stamp."""

    movie_id: str
    name: str
    path: str
    fps: float
    stamp: str


def published_titles(out_dir: str | Path) -> list[PublishedTitle]:
    """The catalogue's titles (complete publications only), by file path."""
    catalogue = CatalogueLayout.of(out_dir)
    folder = catalogue.table_dir(MOVIES)
    if not Path(out_dir).is_dir():
        raise InputError(f"{out_dir}: no such folder; pass the --out folder of `vcn ingest`")
    if not folder.is_dir():
        raise InputError(f"{out_dir}: holds no catalogue ({folder} is missing); run `vcn ingest LIBRARY "
                         f"--out {out_dir}` first")
    titles = []
    for part in sorted(folder.glob(f"movie_id=*/{PARTITION_FILE}")):
        movie_id = part.parent.name.split("=", 1)[1]
        row = pq.read_table(part).to_pylist()[0]
        stamp = schemas.table_metadata(str(part)).get("source", "")
        titles.append(PublishedTitle(movie_id, row["name"] or "", row["path"] or "", float(row["fps"] or 0),
                                     stamp))
    return sorted(titles, key=lambda t: (t.path, t.movie_id))


def title_tracks(out_dir: str | Path, movie_id: str) -> dict[str, np.ndarray]:
    """The catalogue's tracks of one title: track_id, first/last frame, n_faces, mean_embedding,
    cluster_id."""
    path = CatalogueLayout.of(out_dir).partition("tracks", movie_id)
    cols = ["track_id", "first_frame", "last_frame", "n_faces", "mean_embedding", "cluster_id"]
    return schemas.columns_from_table(pq.read_table(path, columns=cols))


def title_clusters(out_dir: str | Path, movie_id: str) -> dict[str, np.ndarray]:
    """The catalogue's clusters of one title (clusters.parquet's columns)."""
    path = CatalogueLayout.of(out_dir).partition("clusters", movie_id)
    return schemas.columns_from_table(pq.read_table(path))


def write_summaries(layout: LibraryLayout, movie_id: str, s: ClusterSummaries, stamp: str) -> None:
    cols = {k: getattr(s, k) for k in SUMMARIES_SCHEMA.names}
    write_parquet(layout.summary(movie_id),
                  schemas.table_from_columns(SUMMARIES_SCHEMA, cols, {"movie_id": movie_id, "source": stamp}))


def read_summaries(layout: LibraryLayout, movie_id: str) -> tuple[ClusterSummaries, str] | None:
    """A title's summaries and the stamp they were made from; None when there are none."""
    path = layout.summary(movie_id)
    if not path.exists():
        return None
    c = schemas.columns_from_table(pq.read_table(path))
    n = len(c["cluster_id"])
    s = ClusterSummaries(
        movie_id=np.full(n, movie_id, object), cluster_id=c["cluster_id"].astype(object),
        mean=c["mean"].reshape(n, -1).astype(np.float32) if n else np.zeros((0, EMBED_DIM), np.float32),
        reach=c["reach"].astype(np.float32), n_tracks=c["n_tracks"].astype(np.int64),
        n_faces=c["n_faces"].astype(np.int64), screen_time_s=c["screen_time_s"].astype(np.float64),
        first_sec=c["first_sec"].astype(np.float64), last_sec=c["last_sec"].astype(np.float64),
    )
    return s, schemas.table_metadata(str(path)).get("source", "")


@dataclass
class LinkedLibrary:
    """What ``members.parquet`` holds: the linked clusters in link order and their identities.

    ``titles``: movie id -> the catalogue stamp its clusters were linked from, in link order.
    """

    summaries: ClusterSummaries
    links: Links
    titles: dict[str, str]
    next_identity: int = 0
    log_digest: str = ""


def read_members(layout: LibraryLayout) -> LinkedLibrary:
    """The linked library (summaries from ``summaries/``); empty when nothing is linked yet."""
    if not layout.members.exists():
        return LinkedLibrary(empty_summaries(EMBED_DIM), Links(), {}, 0)
    table = pq.read_table(layout.members)
    meta = schemas.table_metadata(str(layout.members))
    m = table.to_pandas().sort_values("rank", kind="stable")
    titles: dict[str, str] = dict(meta.get("titles", []))
    parts = []
    for movie_id in titles:
        got = read_summaries(layout, movie_id)
        if got is None:
            raise InputError(f"{layout.summary(movie_id)}: missing; run `vcn identities {layout.out_dir} "
                             "--rebuild` to link the library again")
        parts.append(got[0])
    summaries = ClusterSummaries.concat(parts, EMBED_DIM)
    pairs = zip(summaries.movie_id, summaries.cluster_id, strict=True)
    key = {(mv, cl): i for i, (mv, cl) in enumerate(pairs)}
    rows = [key.get((mv, cl)) for mv, cl in zip(m["movie_id"], m["cluster_id"], strict=True)]
    if any(r is None for r in rows) or len(rows) != len(summaries):
        raise InputError(f"{layout.members}: does not match the summaries beside it; run `vcn identities "
                         f"{layout.out_dir} --rebuild`")
    identity = np.zeros(len(summaries), np.int64)
    linked = np.full(len(summaries), -1, np.int64)
    dist = np.full(len(summaries), np.nan, np.float32)
    thr = np.zeros(len(summaries), np.float32)
    for r, row in zip(rows, m.itertuples(index=False), strict=True):
        identity[r] = identity_number(row.linked_identity_id)
        if row.linked_movie_id is not None and isinstance(row.linked_movie_id, str):
            linked[r] = key[(row.linked_movie_id, row.linked_cluster_id)]
        dist[r], thr[r] = row.distance, row.threshold
    return LinkedLibrary(summaries, Links(identity, linked, dist, thr), titles,
                         int(meta.get("next_identity", identity.max() + 1 if len(identity) else 0)),
                         meta.get("log_digest", ""))


def write_members(layout: LibraryLayout, lib: LinkedLibrary, identity_ids: list[str | None],
                  names: list[str | None]) -> None:
    """``members.parquet``: the linking's result and, per cluster, its identity and name with the
    corrections applied (``identity_ids``, ``names``, in the rows' order)."""
    s, links = lib.summaries, lib.links
    has = links.linked_to >= 0
    ref = np.where(has, links.linked_to, 0)
    table = pa.Table.from_pydict({
        "rank": np.arange(len(s), dtype=np.int64),
        "movie_id": s.movie_id.tolist(), "cluster_id": s.cluster_id.tolist(),
        "identity_id": identity_ids, "name": names,
        "linked_identity_id": [identity_name(int(i)) for i in links.identity],
        "linked_movie_id": [s.movie_id[r] if h else None for r, h in zip(ref, has, strict=True)],
        "linked_cluster_id": [s.cluster_id[r] if h else None for r, h in zip(ref, has, strict=True)],
        "distance": links.distance.astype(np.float32), "threshold": links.threshold.astype(np.float32),
    }, schema=MEMBERS_SCHEMA)
    meta = {"next_identity": lib.next_identity, "titles": list(lib.titles.items()),
            "log_digest": lib.log_digest}
    write_parquet(layout.members, table.replace_schema_metadata({"vcn": json.dumps(meta)}))


def title_identities(out_dir: str | Path, movie_id: str) -> dict[str, tuple[str | None, str | None]] | None:
    """One title's clusters in the library: cluster_id -> (identity_id, name), from
    ``members.parquet``. None when the library has no members file (``out_dir`` is no library, or
    nothing is linked yet); an empty dict when the title is not linked. ``identity_id`` is None for a
    cluster whose tracks are all rejected, ``name`` None for a person nobody named."""
    path = LibraryLayout.of(out_dir).members
    if not path.exists():
        return None
    table = pq.read_table(path, columns=["movie_id", "cluster_id", "identity_id", "name"],
                          filters=[("movie_id", "=", movie_id)])
    return {r["cluster_id"]: (r["identity_id"], r["name"]) for r in table.to_pylist()}


def write_identities(layout: LibraryLayout, rows: list[dict[str, Any]]) -> None:
    write_parquet(layout.identities, pa.Table.from_pylist(rows, schema=IDENTITIES_SCHEMA))


HIVE = "hive_partitioning = true, hive_types = {'movie_id': VARCHAR}"


def members_query(out_dir: str | Path, identity_id: str) -> str:
    """DuckDB SQL listing one identity's member clusters with their title and screen time."""
    lib = LibraryLayout.of(out_dir)
    cat = CatalogueLayout.of(out_dir)
    return (
        "SELECT m.identity_id, m.name, m.movie_id, t.name AS title, m.cluster_id, c.n_tracks,\n"
        "  c.screen_time_s\n"
        f"FROM read_parquet('{lib.members}') m\n"
        f"JOIN read_parquet('{cat.glob('clusters')}', {HIVE}) c USING (movie_id, cluster_id)\n"
        f"JOIN read_parquet('{cat.glob(MOVIES)}', {HIVE}) t USING (movie_id)\n"
        f"WHERE m.identity_id = '{identity_id}' ORDER BY t.path, c.first_sec"
    )


def clusters_query(out_dir: str | Path) -> str:
    """DuckDB SQL of every title's clusters with their ``identity_id`` and ``name`` (null: not
    linked yet, or rejected)."""
    lib = LibraryLayout.of(out_dir)
    cat = CatalogueLayout.of(out_dir)
    return (
        "SELECT c.*, m.identity_id, m.name\n"
        f"FROM read_parquet('{cat.glob('clusters')}', {HIVE}) c\n"
        f"LEFT JOIN read_parquet('{lib.members}') m USING (movie_id, cluster_id)"
    )
