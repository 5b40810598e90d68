"""Library identities: summaries, the linking rule, incremental linking, the stored tables."""

from __future__ import annotations

import numpy as np
import pytest

from vcn.errors import InputError
from vcn.library.identities import (
    ClusterSummaries,
    Links,
    library_reach,
    link_library,
    link_title,
    summarize_title,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_titles(n_titles: int, people: int, per_title: int, seed: int = 0, tracks: int = 4,
                     noise: float = 0.036) -> tuple[list[ClusterSummaries], list[np.ndarray]]:
    """Titles of ``per_title`` people each, drawn from ``people``; every cluster made of
    ``tracks`` track means around its person's centre (track-to-track cosine distance about
    0.4, people about 1 apart). Returns the summaries and each title's true person per cluster."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.normal(size=(people, 512)))
    out, truth = [], []
    for t in range(n_titles):
        who = rng.choice(people, per_title, replace=False)
        cluster = np.repeat(np.array([f"person_{i:03d}" for i in range(per_title)], object), tracks)
        means = _unit(centres[np.repeat(who, tracks)] + rng.normal(0, noise, (per_title * tracks, 512)))
        faces = np.full(len(cluster), 10)
        first = np.arange(len(cluster), dtype=float)
        out.append(summarize_title(f"title{t:04d}", cluster, means, faces, first, first + 1,
                                   np.ones(len(cluster))))
        truth.append(who[np.unique(cluster, return_inverse=True)[1][::tracks]])
    return out, truth


def test_summaries_reach_is_the_widest_leave_one_out_gap():
    e = np.eye(4, 512, dtype=np.float32)
    track_cluster = np.array(["a", "a", "a", "b", "unknown"], object)
    means = np.stack([e[0], e[0], e[1], e[2], e[3]])
    s = summarize_title("m", track_cluster, means, np.array([1, 1, 2, 5, 9]), np.zeros(5), np.arange(5.0),
                        np.ones(5))
    assert list(s.cluster_id) == ["a", "b"], "unknown tracks belong to no identity"
    assert s.n_tracks.tolist() == [3, 1] and s.n_faces.tolist() == [4, 5]
    # Track e1 against the mean of the two e0 tracks: distance 1; the e0 tracks are nearer.
    assert s.reach[0] == pytest.approx(1.0)
    assert np.isnan(s.reach[1]), "a one-track cluster has no reach"
    assert s.last_sec.tolist() == [2.0, 3.0]
    assert np.allclose(np.linalg.norm(s.mean, axis=1), 1)


def test_library_reach_is_the_median_of_known_reaches():
    assert library_reach(np.array([0.2, np.nan, 0.4, 0.3])) == pytest.approx(0.3)
    assert library_reach(np.array([np.nan])) == 0.0


def test_same_person_links_across_titles_never_within_one():
    titles, truth = synthetic_titles(n_titles=6, people=12, per_title=5, seed=1)
    lib, links = link_library(titles)
    who = np.concatenate(truth)
    ident = links.identity
    for i in np.unique(ident):
        members = ident == i
        assert len(set(who[members])) == 1, "an identity holds one person"
        assert len(set(lib.movie_id[members])) == members.sum(), "never two clusters of one title"
    for p in np.unique(who):
        assert len(set(ident[who == p])) == 1, f"person {p} is one identity across titles"


def test_a_split_person_takes_one_identity_per_title():
    titles, _ = synthetic_titles(n_titles=3, people=4, per_title=4, seed=2)
    # The third title's first person comes out as two clusters.
    t = titles[2]
    twin = t.take(np.array([0]))
    twin.cluster_id = np.array(["person_extra"], object)
    titles[2] = ClusterSummaries.concat([t, twin])
    _, links = link_library(titles)
    third = links.identity[-5:]
    assert len(set(third)) == 5, "two clusters of one title never share an identity"


def test_incremental_linking_equals_linking_all_at_once():
    titles, _ = synthetic_titles(n_titles=5, people=10, per_title=4, seed=3)
    lib, links = link_library(titles[:3])
    new = link_title(lib, links, titles[3])
    lib4, links4 = link_library(titles[:4])
    assert np.array_equal(links4.identity[-len(titles[3]):], new.identity)
    with pytest.raises(InputError, match="already holds it"):
        link_title(lib4, links4, titles[3])


def test_strangers_do_not_link():
    titles, _ = synthetic_titles(n_titles=4, people=40, per_title=3, seed=4)
    # No person recurs when each title draws from its own people.
    rng = np.random.default_rng(5)
    for t in titles:
        t.mean = _unit(rng.normal(size=t.mean.shape)).astype(np.float32)
    _, links = link_library(titles)
    assert len(set(links.identity)) == sum(len(t) for t in titles)


# ---------------------------------------------------------------------------------------------
# The library step on a catalogue written the way `publish-catalogue` writes it


def publish_synthetic(out, movie_id: str, name: str, summary_clusters: list[str], means: np.ndarray,
                      stamp: str) -> None:
    """Catalogue partitions of one title: one track per row of ``means``, in ``summary_clusters``."""
    import json

    import pyarrow as pa

    from vcn.storage import schemas
    from vcn.storage.atomic import write_parquet
    from vcn.storage.catalogue import MOVIES, MOVIES_SCHEMA, CatalogueLayout

    cat = CatalogueLayout.of(out)
    meta = {"vcn": json.dumps({"movie_id": movie_id, "source": stamp})}
    n = len(means)
    tracks = schemas.table_from_columns(schemas.TRACKS_SCHEMA, {
        "track_id": np.array([f"c00000-t{i:05d}" for i in range(n)], object), "shot_id": np.arange(n),
        "first_frame": np.arange(n) * 100, "last_frame": np.arange(n) * 100 + 50,
        "n_faces": np.full(n, 10), "mean_embedding": means, "quality": np.ones(n),
        "cluster_id": np.array(summary_clusters, object)})
    write_parquet(cat.partition("tracks", movie_id), tracks.replace_schema_metadata(meta))
    ids = sorted(set(summary_clusters))
    clusters = schemas.table_from_columns(schemas.CLUSTERS_SCHEMA, {
        "cluster_id": np.array(ids, object), "n_tracks": np.array([summary_clusters.count(c) for c in ids]),
        "n_faces": np.array([10 * summary_clusters.count(c) for c in ids]),
        "screen_time_s": np.array([2.0 * summary_clusters.count(c) for c in ids]),
        "first_frame": np.array([100 * summary_clusters.index(c) for c in ids]),
        "first_sec": np.array([4.0 * summary_clusters.index(c) for c in ids]),
        "rep_face_id": np.zeros(len(ids)), "rep_track_id": np.array(["x"] * len(ids), object)})
    write_parquet(cat.partition("clusters", movie_id), clusters.replace_schema_metadata(meta))
    row = {k: [None] for k in MOVIES_SCHEMA.names} | {"path": [f"/lib/{name}"], "name": [name], "fps": [25.0]}
    write_parquet(cat.partition(MOVIES, movie_id),
                  pa.Table.from_pydict(row, schema=MOVIES_SCHEMA).replace_schema_metadata(meta))


def _people(seed: int, n: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).normal(size=(n, 512)))


def _title_of(centres: np.ndarray, who: list[int], seed: int,
              tracks: int = 3) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = [f"person_{k:03d}" for k, _ in enumerate(who) for _ in range(tracks)]
    means = _unit(centres[np.repeat(who, tracks)] + rng.normal(0, 0.036, (len(who) * tracks, 512)))
    return clusters, means.astype(np.float32)


def test_library_step_links_incrementally_and_relinks_a_changed_title(tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    from vcn.storage.identities import LibraryLayout, clusters_query, members_query
    from vcn.tasks.identities import update_identities

    centres = _people(7, 6)
    publish_synthetic(tmp_path, "aaaa", "ep1.mp4", *_title_of(centres, [0, 1, 2], 1), stamp="run1")
    publish_synthetic(tmp_path, "bbbb", "ep2.mp4", *_title_of(centres, [1, 2, 3], 2), stamp="run1")
    first = update_identities(str(tmp_path))
    assert first == {**first, "titles_linked": 2, "clusters": 6, "identities": 4, "across_titles": 2}
    lay = LibraryLayout.of(tmp_path)
    ids = pq.read_table(lay.identities).to_pandas()
    both = ids[ids["n_titles"] == 2]
    assert len(both) == 2
    assert (both["first_title"] == "ep1.mp4").all() and (both["last_title"] == "ep2.mp4").all()
    assert all(sum(t["screen_time_s"] for t in r) == pytest.approx(s)
               for r, s in zip(both["screen_time"], both["screen_time_s"], strict=True))

    # A new title links into the existing identities; the others' rows are kept as they were.
    before = pq.read_table(lay.members).to_pandas()
    publish_synthetic(tmp_path, "cccc", "ep3.mp4", *_title_of(centres, [2, 4], 3), stamp="run1")
    again = update_identities(str(tmp_path))
    assert again["titles_linked"] == 1 and again["identities"] == 5
    after = pq.read_table(lay.members).to_pandas()
    assert after.iloc[:6].equals(before)
    person2 = after[after["cluster_id"].eq("person_002") & after["movie_id"].eq("aaaa")]["identity_id"].item()
    got = duckdb.sql(members_query(tmp_path, person2)).df()
    assert got["title"].tolist() == ["ep1.mp4", "ep2.mp4", "ep3.mp4"], "person 2 is in all three titles"
    joined = duckdb.sql(clusters_query(tmp_path)).df()
    assert len(joined) == 8 and joined["identity_id"].notna().all()

    # Nothing new: nothing is rewritten.
    mtime = lay.members.stat().st_mtime_ns
    assert update_identities(str(tmp_path))["titles_linked"] == 0
    assert lay.members.stat().st_mtime_ns == mtime

    # ep1 re-clustered (a new stamp): it is taken out and linked again; identity numbers are not reused.
    publish_synthetic(tmp_path, "aaaa", "ep1.mp4", *_title_of(centres, [0, 1, 2, 5], 4), stamp="run2")
    third = update_identities(str(tmp_path))
    assert third["titles_linked"] == 1 and third["clusters"] == 9
    m = pq.read_table(lay.members).to_pandas()
    assert m["movie_id"].tolist()[-4:] == ["aaaa"] * 4, "the re-linked title joins last"
    kept = m.set_index(["movie_id", "cluster_id"])["identity_id"]
    assert kept[("aaaa", "person_002")] == person2, "person 2 keeps its identity through a re-link"
    assert kept[("aaaa", "person_003")] not in set(before["identity_id"])


def test_library_step_needs_a_catalogue(tmp_path):
    from vcn.tasks.identities import update_identities

    with pytest.raises(InputError, match="run `vcn ingest"):
        update_identities(str(tmp_path))


def test_an_identity_nearest_to_a_cluster_that_chose_another_leaves_that_link_alone():
    e = np.eye(3, 512, dtype=np.float32)
    lib = ClusterSummaries(np.array(["t0", "t0"], object), np.array(["a", "b"], object),
                           _unit(np.stack([e[0], e[0] + 0.5 * e[1]])).astype(np.float32),
                           np.array([0.5, 0.5], np.float32), np.array([3, 3]), np.array([9, 9]),
                           np.zeros(2), np.zeros(2), np.zeros(2))
    links = Links(np.array([0, 1]), np.array([-1, -1]), np.full(2, np.nan, np.float32),
                  np.zeros(2, np.float32))
    # x is a's twin; y is nearest to b, but b's nearest new cluster is x, which chose a.
    title = ClusterSummaries(np.array(["t1", "t1"], object), np.array(["x", "y"], object),
                             _unit(np.stack([e[0], e[0] + 0.5 * e[1] + 0.8 * e[2]])).astype(np.float32),
                             np.array([np.nan, np.nan], np.float32), np.array([1, 1]), np.array([3, 3]),
                             np.zeros(2), np.zeros(2), np.zeros(2))
    new = link_title(lib, links, title)
    assert new.identity[0] == 0, "x links to a whatever b prefers"
    assert new.identity[1] == 2, "y is not b's nearest: a new identity"


def test_corrections_across_titles_show_in_the_identities_at_once(tmp_path):
    import pyarrow.parquet as pq

    from vcn.storage.identities import LibraryLayout
    from vcn.tasks import review
    from vcn.tasks.identities import update_identities

    centres = _people(11, 4)
    publish_synthetic(tmp_path, "aaaa", "ep1.mp4", *_title_of(centres, [0, 1], 1), stamp="run1")
    publish_synthetic(tmp_path, "bbbb", "ep2.mp4", *_title_of(centres, [1, 2], 2), stamp="run1")
    update_identities(str(tmp_path))

    def members() -> dict:
        rows = pq.read_table(LibraryLayout.of(tmp_path).members).to_pylist()
        return {(r["movie_id"], r["cluster_id"]): r for r in rows}

    m = members()
    shared = m[("aaaa", "person_001")]["identity_id"]
    assert m[("bbbb", "person_000")]["identity_id"] == shared
    review.label(str(tmp_path), shared, "Grace", user="ana")
    review.merge(str(tmp_path), "aaaa:person_000", "bbbb:person_001")
    m = members()
    assert m[("aaaa", "person_001")]["name"] == m[("bbbb", "person_000")]["name"] == "Grace"
    assert m[("aaaa", "person_000")]["identity_id"] == m[("bbbb", "person_001")]["identity_id"]
    review.split(str(tmp_path), "aaaa:person_001", "bbbb:person_000")
    m = members()
    assert m[("aaaa", "person_001")]["identity_id"] != m[("bbbb", "person_000")]["identity_id"]
    assert [r["name"] for r in m.values()].count("Grace") == 1
    ids = pq.read_table(LibraryLayout.of(tmp_path).identities).to_pandas()
    assert len(ids) == 3 and ids["n_clusters"].sum() == 4
    with pytest.raises(InputError, match="no such identity"):
        review.label(str(tmp_path), "id_09999", "Nobody")
