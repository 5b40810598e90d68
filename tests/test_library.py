"""The library flow on a small real library, under a real Prefect server and a real Dask cluster.

Titles are short clips cut from the bundled sample (different frames, hence different content
ids); the first run processes them, later runs must skip them, and the catalogue dataset must be
readable by pandas and by DuckDB with the query documented in docs/operations.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vcn.errors import InputError
from vcn.flows.cli import main as vcn_main
from vcn.media.video import content_id, iter_frames
from vcn.storage.catalogue import CatalogueLayout
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest
from vcn.storage.media import find_videos, read_catalogue_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"
SAMPLE_FPS = Fraction(30000, 1001)
RUN_ARGS = ["--workers", "2", "--chunk-seconds", "1", "--method", "hac"]


def cut_sample(make_video, name: str, start: int, end: int) -> Path:
    """Frames [start, end) of the bundled sample re-encoded as a new title (a new content id)."""
    return Path(make_video(name, (f for _, f in iter_frames(str(SAMPLE), start, end)), SAMPLE_FPS))


def tree_digest(root: Path) -> dict[str, str]:
    """blake2b of every file under ``root`` (relative path -> digest)."""
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}




@pytest.fixture(scope="module")
def library(tmp_path_factory, make_video) -> Path:
    """lib/opening.mp4, lib/season1/finale.mkv, a copy of the first title, a note, a hidden file."""
    lib = tmp_path_factory.mktemp("library")
    (lib / "season1").mkdir()
    shutil.copy(cut_sample(make_video, "h8_lib_opening.mp4", 0, 75), lib / "opening.mp4")
    shutil.copy(cut_sample(make_video, "h8_lib_finale.mkv", 150, 240), lib / "season1" / "finale.mkv")
    shutil.copy(lib / "opening.mp4", lib / "season1" / "Opening (copy).MP4")
    (lib / "notes.txt").write_text("not a video\n")
    (lib / ".partial.mp4").write_bytes(b"\0" * 100)
    return lib


@pytest.fixture(scope="module")
def first_run(prefect_server, library, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    summary = out.parent / f"{out.name}-first.json"
    code = vcn_main(["ingest", str(library), "--out", str(out), *RUN_ARGS, "--json", str(summary)])
    return code, out, json.loads(summary.read_text())


def test_find_videos_scans_recursively(tmp_path):
    for rel in ("a.mp4", "b/c.MKV", "b/d/e.webm", "b/f.srt", "g.jpg", ".h.mp4", ".hidden/i.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    videos, others = find_videos(tmp_path)
    assert [Path(v).relative_to(tmp_path).as_posix() for v in videos] == ["a.mp4", "b/c.MKV", "b/d/e.webm"]
    assert others == 2, "subtitles and stills are counted as ignored, hidden files are not"
    with pytest.raises(InputError, match="not a folder"):
        find_videos(tmp_path / "a.mp4")


def test_read_catalogue_file(tmp_path):
    listing = pd.DataFrame({"path": ["x/a.mp4", "/abs/b.mkv"], "title": ["A", "B"]})
    listing.to_csv(tmp_path / "t.csv", index=False)
    assert read_catalogue_file(tmp_path / "t.csv") == [str(tmp_path / "x" / "a.mp4"), "/abs/b.mkv"]
    pd.DataFrame({"path": ["a.mp4"]}).to_parquet(tmp_path / "t.parquet")
    assert read_catalogue_file(tmp_path / "t.parquet", root="/lib") == ["/lib/a.mp4"]
    pd.DataFrame({"file": ["a.mp4"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match=r"bad\.csv.*no 'path' column"):
        read_catalogue_file(tmp_path / "bad.csv")


def test_first_run_processes_every_title_once(first_run, library):
    code, out, summary = first_run
    assert code == 0, summary["failed"]
    assert sorted(Path(e["video"]).name for e in summary["processed"]) == ["finale.mkv", "opening.mp4"]
    assert summary["failed"] == []
    (dup,) = summary["skipped"]
    assert Path(dup["video"]).name == "Opening (copy).MP4" and "same content as" in dup["reason"]
    assert summary["ignored_files"] == 1, "notes.txt is ignored; hidden files are not even counted"
    for e in summary["processed"]:
        assert e["movie_id"] == content_id(e["video"])
        assert e["chunks"] == 3 and e["chunks_computed"] == 3
        layout = MovieLayout.of(out, e["movie_id"])
        assert pq.read_table(layout.faces).num_rows == e["faces"] > 10
        # The report is written again after the linking, so it shows the title's people.
        members = pq.read_table(out / "library" / "members.parquet").to_pandas()
        ids = members.loc[members["movie_id"] == e["movie_id"], "identity_id"].dropna()
        assert len(ids) and all(f'data-identity-id="{i}"' in layout.report.read_text() for i in ids)


def test_catalogue_reads_with_pandas(first_run):
    _, out, summary = first_run
    cat = CatalogueLayout.of(out)
    faces = pd.read_parquet(cat.table_dir("faces"))
    per_movie = faces.groupby("movie_id", observed=True).size().to_dict()
    assert per_movie == {e["movie_id"]: e["faces"] for e in summary["processed"]}
    assert np.stack(faces["embedding"].to_numpy()).shape == (len(faces), 512)
    movies = pd.read_parquet(cat.table_dir("movies")).set_index("movie_id")
    for e in summary["processed"]:
        row = movies.loc[e["movie_id"]]
        assert row["path"] == e["video"] and row["clusters"] == e["clusters"]
        local = pq.read_table(MovieLayout.of(out, e["movie_id"]).tracks).to_pandas()
        cat_tracks = pd.read_parquet(cat.table_dir("tracks"), filters=[("movie_id", "==", e["movie_id"])])
        pd.testing.assert_frame_equal(cat_tracks.drop(columns="movie_id"), local, check_dtype=False)


def documented_query(out: Path) -> str:
    """The screen-time query of docs/operations.md, pointed at ``out``."""
    doc = (ROOT / "docs" / "operations.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, flags=re.S)
    (query,) = [b for b in blocks if "screen time per cluster per movie" in b]
    assert "'out/catalogue/" in query
    return query.replace("'out/catalogue/", f"'{out}/catalogue/")


def test_documented_duckdb_query(first_run):
    duckdb = pytest.importorskip("duckdb")
    _, out, summary = first_run
    got = duckdb.sql(documented_query(out)).df()
    assert set(got["movie_id"]) == {e["movie_id"] for e in summary["processed"]}
    for e in summary["processed"]:
        clusters = pq.read_table(MovieLayout.of(out, e["movie_id"]).clusters).to_pandas()
        clusters = clusters[clusters["cluster_id"] != "unknown"].set_index("cluster_id")
        mine = got[got["movie_id"] == e["movie_id"]].set_index("cluster_id")
        assert set(mine.index) == set(clusters.index)
        assert np.allclose(mine["screen_time_s"], clusters.loc[mine.index, "screen_time_s"])
        assert (mine["name"] == Path(e["video"]).name).all()
        assert mine["screen_time_s"].is_monotonic_decreasing


def test_summary_artifact_and_subflows(first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    _, _, summary = first_run
    run_id = summary["flow_run_id"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])))
    (artifact,) = [a for a in artifacts if a.key == "ingest-library-summary"]
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert artifact.type == "table"
    assert {(r["title"], r["status"]) for r in rows} == {
        ("opening.mp4", "processed"), ("finale.mkv", "processed"), ("Opening (copy).MP4", "skipped")}
    expected = sorted(f"process-movie-{e['video']}" for e in summary["processed"])
    assert sorted(r.name for r in children) == expected
    assert all(r.state.is_completed() for r in children)


def test_second_run_skips_finished_titles_and_writes_nothing(first_run, library, tmp_path):
    _, out, first = first_run
    before = tree_digest(out)
    summary = tmp_path / "second.json"
    assert vcn_main(["ingest", str(library), "--out", str(out), *RUN_ARGS, "--json", str(summary)]) == 0
    second = json.loads(summary.read_text())
    assert second["processed"] == [] and second["failed"] == []
    assert {e["movie_id"] for e in second["skipped"]} == {e["movie_id"] for e in first["processed"]}
    assert all(e["published"] is False for e in second["skipped"])
    assert tree_digest(out) == before, "a run with nothing to do must not rewrite any file"


def test_dry_run_lists_what_would_run_and_why(first_run, library, capsys):
    _, out, first = first_run
    ids = {Path(e["video"]).name: e["movie_id"] for e in first["processed"]}
    before = tree_digest(out)

    def dry_run(*extra: str) -> list[str]:
        assert vcn_main(["ingest", str(library), "--out", str(out), *RUN_ARGS, *extra, "--dry-run"]) == 0
        return capsys.readouterr().out.splitlines()

    def runs(lines: list[str]) -> dict[str, str]:
        return {line.split()[1]: line for line in lines if line.startswith("  run ")}

    assert "0 to process, 3 skipped, 0 failed" in dry_run()[0]
    opening = library / "opening.mp4"
    original = opening.read_bytes()
    try:
        opening.write_bytes(original + b"\0")  # a changed file under a known path
        (library / "new.mp4").write_bytes(b"\0" * 1000)  # dry runs decode nothing: any bytes will do
        changed = dry_run()
    finally:
        opening.write_bytes(original)
        (library / "new.mp4").unlink()
    assert "2 to process, 2 skipped, 0 failed" in changed[0]
    assert runs(changed)["opening.mp4"].endswith(f"tracks (file changed (was {ids['opening.mp4']})), "
                                                 f"clusters (tracks runs)")
    assert runs(changed)["new.mp4"].endswith(": tracks (new file), clusters (tracks runs)")
    # The copy of the first title now stands for its content, which is done.
    assert any(line.startswith("  skip    Opening (copy).MP4") for line in changed), changed
    # A change to the tracks stage's config re-runs it, and the stages after it.
    stride = dry_run("--stride", "3")
    assert "2 to process, 1 skipped, 0 failed" in stride[0]
    for name in ("opening.mp4", "finale.mkv"):
        assert runs(stride)[name].endswith(": tracks (config changed), clusters (tracks runs)")
    assert tree_digest(out) == before, "a dry run writes nothing"


def test_catalogue_file_with_a_missing_title(first_run, library, tmp_path):
    _, out, _ = first_run
    listing = tmp_path / "titles.csv"
    pd.DataFrame({"path": ["opening.mp4", "season1/finale.mkv", "gone.mkv"]}).to_csv(listing, index=False)
    summary = tmp_path / "cat.json"
    code = vcn_main(["ingest", str(library), "--catalogue", str(listing), "--out", str(out), *RUN_ARGS,
                     "--json", str(summary)])
    got = json.loads(summary.read_text())
    assert code == 1, "a missing title makes the run fail"
    (failed,) = got["failed"]
    assert failed["video"] == str(library / "gone.mkv") and "gone.mkv" in failed["reason"]
    assert len(got["skipped"]) == 2 and got["processed"] == []


def test_config_change_reruns_clustering_and_republishes(first_run, library, prefect_server):
    from vcn.flows.library import ingest_library

    _, out, first = first_run
    config = {"ingest": {"chunk": {"chunk_seconds": 1.0}}, "cluster": {"method": "hac", "hac_threshold": 0.2}}
    state = ingest_library(out_dir=str(out), library_root=str(library), config=config, workers=2,
                           return_state=True)
    summary = state.result()
    assert state.is_completed() and len(summary["processed"]) == 2
    cat = CatalogueLayout.of(out)
    movies = pd.read_parquet(cat.table_dir("movies")).set_index("movie_id")
    clusters = pd.read_parquet(cat.table_dir("clusters"))
    for e in summary["processed"]:
        assert e["stages_run"]["clusters"] is True
        manifest = read_manifest(MovieLayout.of(out, e["movie_id"]))
        assert manifest.config["cluster"]["hac_threshold"] == 0.2
        # The catalogue follows the new clustering: a tighter threshold, at least as many clusters.
        assert movies.loc[e["movie_id"], "clusters"] == e["clusters"]
        assert (clusters["movie_id"] == e["movie_id"]).sum() >= e["clusters"]
    before = {e["movie_id"]: e["clusters"] for e in first["processed"]}
    assert all(e["clusters"] >= before[e["movie_id"]] for e in summary["processed"])


def test_usage_errors_exit_2(prefect_server, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert vcn_main(["ingest", "--out", out]) == 2
    pd.DataFrame({"file": ["a.mp4"]}).to_csv(tmp_path / "listing.csv", index=False)
    assert vcn_main(["ingest", "--catalogue", str(tmp_path / "listing.csv"), "--out", out]) == 2
    assert "listing.csv: the title catalogue has no 'path' column" in capsys.readouterr().err
    assert vcn_main(["ingest", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "nowhere: the library root is not a folder" in capsys.readouterr().err
