"""Corrections: the log, their meaning on labels, and their survival through a real re-run."""

from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vcn.errors import InputError
from vcn.library.corrections import Correction, apply_to_labels, cannot_link_rows
from vcn.storage.corrections import append, read_log, resolve

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"


def _c(kind: str, *groups: list[str], name: str | None = None, n: int = 0) -> Correction:
    return Correction(id=f"c{n}", time=f"2026-01-01T00:00:{n:02d}", user="u", kind=kind, said=kind,
                      groups=tuple(tuple(("m", t) for t in g) for g in groups), name=name)


def test_corrections_apply_in_order_and_twice_change_nothing():
    tracks = np.array(["a", "b", "c", "d", "e"], object)
    labels = np.array([0, 0, 1, 1, -1])
    log = [_c("split", ["a"], ["b"], n=1), _c("merge", ["c"], ["e"], n=2), _c("reject", ["d"], n=3)]
    got = apply_to_labels(labels, tracks, "m", log)
    assert got[0] != got[1], "split"
    assert got[2] == got[4] != -1, "merge takes an unknown track in"
    assert got[3] == -1, "reject"
    assert np.array_equal(apply_to_labels(got, tracks, "m", log), got)
    # Tracks of another title are none of this one's business.
    assert np.array_equal(apply_to_labels(labels, tracks, "other", log), labels)
    # A merge after a split joins them again, and the cannot-link goes with it.
    again = [*log, _c("merge", ["a"], ["b"], n=4)]
    out = apply_to_labels(labels, tracks, "m", again)
    assert out[0] == out[1]
    assert cannot_link_rows(log, "m", tracks).tolist() == [[0, 1]]
    assert cannot_link_rows(again, "m", tracks).shape == (0, 2)


def test_a_correction_needs_its_groups():
    with pytest.raises(InputError, match="needs 2 or more"):
        _c("merge", ["a"])
    with pytest.raises(InputError, match="needs a name"):
        _c("label", ["a"])
    with pytest.raises(InputError, match="unknown kind"):
        _c("rename", ["a"])


def _append_many(out: str, worker: int) -> None:
    for k in range(10):
        append(out, "reject", [[("m", f"w{worker}-t{k}")]], said=f"reject w{worker}-t{k}", user=f"w{worker}")


def test_concurrent_appends_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    log = read_log(tmp_path)
    assert len(log) == 40 and len({c.id for c in log}) == 40
    assert [c.time for c in log] == sorted(c.time for c in log)
    (tmp_path / "library" / "corrections" / "broken.json").write_text("{")
    with pytest.raises(InputError, match=r"broken\.json: not a vcn correction"):
        read_log(tmp_path)


# ---------------------------------------------------------------------------------------------
# Through the real pipeline: ingest, correct, re-run the clustering


@pytest.fixture(scope="module")
def ingested(prefect_server, tmp_path_factory):
    from vcn.flows.cli import main as vcn_main

    lib = tmp_path_factory.mktemp("lib")
    shutil.copy(SAMPLE, lib / SAMPLE.name)
    out = tmp_path_factory.mktemp("out")
    assert vcn_main(["ingest", str(lib), "--out", str(out), "--method", "hac", "--workers", "1"]) == 0
    (movie,) = [p for p in out.iterdir() if (p / "manifest.json").exists()]
    return out, movie, lib


def _tracks(movie: Path) -> dict[str, str]:
    t = pq.read_table(movie / "tracks.parquet", columns=["track_id", "cluster_id"]).to_pylist()
    return {r["track_id"].rsplit("-", 1)[-1]: r["cluster_id"] for r in t}


def _members(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out / "library" / "members.parquet").to_pylist()
    return {r["cluster_id"]: r for r in rows}


def test_corrections_survive_a_rerun_of_the_clustering(ingested, capsys):
    from vcn.flows.cli import main as vcn_main

    out, movie, lib = ingested
    dry_run = ["ingest", str(lib), "--out", str(out), "--method", "hac", "--dry-run"]
    mid = movie.name
    before = _tracks(movie)
    # The method's clusters on the sample: t3, t5, t6, t7 are one cluster; t2 and t4 two others.
    assert before["t00003"] == before["t00005"] == before["t00006"] == before["t00007"]
    assert before["t00002"] != before["t00004"] and before["t00014"] != "unknown"
    lead = before["t00003"]
    with pytest.raises(InputError, match="no cluster or track 'person_999'"):
        resolve(out, f"{mid}:person_999")

    assert vcn_main(["label", str(out), f"{mid}:{lead}", "Lin-Manuel", "--user", "ana"]) == 0
    assert vcn_main(["split", str(out), f"{mid}:{lead}", "--off", f"{mid}-c00000-t00007"]) == 0
    assert vcn_main(["merge", str(out), f"{mid}:{before['t00002']}", f"{mid}:{before['t00004']}"]) == 0
    assert vcn_main(["reject", str(out), f"{mid}:{before['t00014']}"]) == 0
    log = read_log(out)
    assert [c.kind for c in log] == ["label", "split", "merge", "reject"]
    assert log[0].user == "ana" and log[0].said.startswith("label ") and log[0].name == "Lin-Manuel"
    assert all(len(c.tracks()) for c in log), "every entry is stated on tracks"

    # The library's identities show the corrections at once.
    m = _members(out)
    assert m[lead]["name"] == "Lin-Manuel"
    assert m[before["t00002"]]["identity_id"] == m[before["t00004"]]["identity_id"], "merged"
    assert m[before["t00014"]]["identity_id"] is None, "rejected: in no identity"

    # The corrections make the title's clustering stale: the next ingestion re-clusters it.
    capsys.readouterr()
    assert vcn_main(dry_run) == 0
    assert "clusters (corrections changed)" in capsys.readouterr().out

    # A real re-run of the clustering: the method's result with the log applied.
    assert vcn_main(["rerun", str(movie), "--from", "clusters", "--workers", "1"]) == 0
    after = _tracks(movie)
    assert after["t00003"] == after["t00005"] == after["t00006"], "the rest of the cluster stays"
    assert after["t00007"] != after["t00003"] and after["t00007"] != "unknown", "a split stays split"
    assert after["t00002"] == after["t00004"] != "unknown", "a merge stays merged"
    assert after["t00014"] == "unknown", "a rejected track stays unknown"
    manifest = (movie / "manifest.json").read_text()
    assert all(c.id in manifest for c in log), "the clusters record lists the corrections applied"
    assert vcn_main(dry_run) == 0
    assert f"skip    {SAMPLE.name}" in capsys.readouterr().out, "nothing is stale after the re-run"

    # The library follows the re-run title; the name stays on the cluster holding its tracks.
    assert vcn_main(["identities", str(out)]) == 0
    m = _members(out)
    assert m[after["t00003"]]["name"] == "Lin-Manuel"
    assert m[after["t00007"]]["identity_id"] != m[after["t00003"]]["identity_id"]
    ids = pq.read_table(out / "library" / "identities.parquet").to_pandas()
    assert (ids["name"] == "Lin-Manuel").sum() == 1
