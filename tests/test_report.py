"""Cluster reports: pure rendering on a tiny synthetic movie, then the real pipeline's output
rendered to report.html, opened in headless Chromium, and published as a Prefect artifact."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shlex
import shutil
import subprocess
from html import unescape as html_unescape
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from vcn.errors import StageError
from vcn.manifest import Manifest
from vcn.report.html import (
    MovieResults,
    ReportConfig,
    encode_thumbnails,
    format_clock,
    render_html,
    render_markdown,
    select_thumbnail_faces,
    track_intervals,
)
from vcn.storage.crops import write_crops
from vcn.storage.results import load_results
from vcn.tasks.report import build_report, load_thumbnails

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "short_hamilton_clip.mp4"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Dom(HTMLParser):
    """Every start tag as (tag, attrs) plus the page's text, for structural assertions."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags
                if t == tag and (cls is None or cls in (a.get("class") or "").split())]


def assert_self_contained(page: str) -> None:
    dom = Dom(page)
    for tag, attrs in dom.tags:
        for key in ("src", "href", "srcset", "data", "action"):
            value = attrs.get(key) or ""
            assert not re.match(r"\s*(https?:)?//", value), f"<{tag} {key}={value[:60]}> loads from outside"
        if tag == "link":
            pytest.fail(f"external stylesheet or resource: {attrs}")
        if tag == "script":
            assert "src" not in attrs, "scripts must be inline"
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page), "CSS must not fetch anything"
    assert "@import" not in page


def decode_data_uri(src: str) -> np.ndarray:
    assert src.startswith("data:image/jpeg;base64,"), src[:40]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "thumbnail does not decode"
    return img


# --------------------------------------------------------------------------- a tiny synthetic movie

def tiny_results(movie_path: str = "/videos/tiny <pilot> & co.mp4") -> MovieResults:
    """25 fps, 300 frames, 3 shots; three clusters plus two unknown tracks; stride 5."""
    fps, stride = 25.0, 5
    tracks = pd.DataFrame({
        "track_id": ["a1", "a2", "a3", "b1", "b2", "c1", "u1", "u2"],
        "shot_id": [0, 1, 2, 0, 2, 1, 0, 2],
        "first_frame": [0, 100, 200, 10, 205, 120, 40, 250],
        "last_frame": [90, 150, 295, 60, 230, 125, 50, 260],
        "n_faces": [19, 11, 20, 11, 6, 2, 3, 3],
        "cluster_id": ["person_000"] * 3 + ["person_001"] * 2 + ["person_002"] + ["unknown"] * 2,
    })
    rows = []
    face_id = 0
    for t in tracks.itertuples(index=False):
        for k in range(t.n_faces):
            score = 0.6 + 0.3 * ((k * 7 + len(t.track_id)) % 10) / 10
            rows.append((face_id, t.first_frame + stride * k, score, t.track_id, t.cluster_id))
            face_id += 1
    faces = pd.DataFrame(rows, columns=["face_id", "frame_idx", "det_score", "track_id", "cluster_id"])
    # One face per track gets a clear top score: the face the gallery must show for that track.
    best = faces.groupby("track_id").head(3).groupby("track_id").tail(1).index
    faces.loc[best, "det_score"] = 0.99
    shots = pd.DataFrame({"shot_id": [0, 1, 2], "start_frame": [0, 95, 198], "end_frame": [95, 198, 300]})
    shots["start_sec"], shots["end_sec"] = shots["start_frame"] / fps, shots["end_frame"] / fps
    span = (tracks["last_frame"] - tracks["first_frame"] + stride) / fps
    g = tracks.assign(span=span).groupby("cluster_id", sort=True)
    clusters = pd.DataFrame({
        "cluster_id": g.size().index, "n_tracks": g.size().to_numpy(),
        "n_faces": g["n_faces"].sum().to_numpy(), "screen_time_s": g["span"].sum().to_numpy(),
        "first_frame": g["first_frame"].min().to_numpy(),
    })
    clusters["first_sec"] = clusters["first_frame"] / fps
    # Representative: the first face of the cluster's first track (deliberately not its best face).
    first_track = tracks.groupby("cluster_id")["track_id"].first()
    clusters["rep_face_id"] = [int(faces[faces.track_id == first_track[c]].face_id.min())
                               for c in clusters.cluster_id]
    clusters["rep_track_id"] = [first_track[c] for c in clusters.cluster_id]
    manifest = Manifest.from_json({
        "movie_id": "00112233aabbccdd",
        "input": {"path": movie_path, "fps": fps, "duration_s": 12.0, "width": 640, "height": 360},
        "config": {"cluster": {"method": "vcn"}, "ingest": {"stride": stride}, "seed": 0},
        "code": {"vcn_version": "0.1.0", "git_commit": "abc123", "code_hash": "feedbeef"},
        "stages": {"clusters": {"status": "completed", "ended": "2026-01-01T00:00:00+00:00"}},
    })
    return MovieResults("00112233aabbccdd", manifest, faces, tracks, shots, clusters)


def synthetic_crops(n: int) -> np.ndarray:
    """(n, 112, 112, 3) uint8 BGR crops, each a distinct colour with a face-like ellipse."""
    crops = np.zeros((n, 112, 112, 3), np.uint8)
    for i in range(n):
        crops[i] = ((i * 53) % 256, (i * 97) % 256, 200)
        cv2.ellipse(crops[i], (56, 60), (30, 40), 0, 0, 360, (90, 140, 220), -1)
        cv2.circle(crops[i], (44, 50), 5, (20, 20, 20), -1)
        cv2.circle(crops[i], (68, 50), 5, (20, 20, 20), -1)
    return crops


@pytest.fixture(scope="module")
def tiny() -> MovieResults:
    return tiny_results()


@pytest.fixture(scope="module")
def tiny_thumbs(tiny: MovieResults) -> dict[int, bytes]:
    ids = tiny.faces["face_id"].to_numpy()
    return dict(zip(ids.tolist(), encode_thumbnails(synthetic_crops(len(ids))), strict=True))


def test_thumbnails_are_small_jpegs():
    blobs = encode_thumbnails(synthetic_crops(3), ReportConfig(thumb_size=64, jpeg_quality=80))
    assert len(blobs) == 3
    for b in blobs:
        img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (64, 64, 3)
        assert len(b) < 4000


def test_selection_rep_first_then_best_face_per_track(tiny: MovieResults):
    sel = select_thumbnail_faces(tiny, ReportConfig())
    assert set(sel) == {"person_000", "person_001", "person_002", "unknown"}
    faces = tiny.faces.set_index("face_id")
    for cid, ids in sel.items():
        if cid == "unknown":
            continue
        rep = int(tiny.clusters.set_index("cluster_id").loc[cid, "rep_face_id"])
        assert ids[0] == rep
        assert len(set(ids.tolist())) == len(ids), "no face twice"
        shown_tracks = faces.loc[ids[1:], "track_id"]
        assert shown_tracks.is_unique, "one face per track"
        for fid, track in shown_tracks.items():
            assert faces.loc[fid, "det_score"] == faces[faces.track_id == track]["det_score"].max()
    # Tracks with the most faces come first after the representative face.
    assert faces.loc[sel["person_000"][1:], "track_id"].tolist() == ["a3", "a1", "a2"]
    assert faces.loc[sel["unknown"], "track_id"].tolist() == ["u1", "u2"]
    cfg = ReportConfig(thumbs_per_cluster=2, max_clusters=1, max_unknown_thumbs=1)
    capped = select_thumbnail_faces(tiny, cfg)
    assert {k: len(v) for k, v in capped.items()} == {"person_000": 2, "unknown": 1}


def test_track_intervals_merge_close_tracks(tiny: MovieResults):
    iv = track_intervals(tiny, ["person_000", "person_001"], units=1000)
    # a1 0-95, a2 100-155, a3 200-300 frames: gaps of 5+ frames (0.2 s) stay apart at 12 ms/unit.
    np.testing.assert_allclose(iv["person_000"], [[0, 3.8], [4.0, 6.2], [8.0, 12.0]], atol=1e-9)
    coarse = track_intervals(tiny, ["person_000"], units=5)  # 2.4 s per unit: the 1.8 s gap vanishes
    np.testing.assert_allclose(coarse["person_000"], [[0, 12.0]], atol=1e-9)


def test_format_clock():
    assert format_clock(0) == "00:00"
    assert format_clock(75.9) == "01:15"
    assert format_clock(3600 + 62) == "1:01:02"


def test_render_html_galleries_counts_and_order(tiny: MovieResults, tiny_thumbs):
    page = render_html(tiny, tiny_thumbs)
    assert_self_contained(page)
    dom = Dom(page)
    galleries = dom.find("section", "cluster")
    clusters = tiny.clusters.set_index("cluster_id")
    assert [g["data-cluster-id"] for g in galleries] == ["person_000", "person_001", "person_002"]
    for g in galleries:
        row = clusters.loc[g["data-cluster-id"]]
        assert int(g["data-tracks"]) == row.n_tracks and int(g["data-faces"]) == row.n_faces
    text = "".join(dom.text)
    assert "3 tracks · 50 faces" in text and "1 track · 2 faces" in text
    imgs = dom.find("img", "thumb")
    assert len(imgs) == 4 + 3 + 2 + 2  # rep + one per track per cluster, one per unknown track
    assert all(decode_data_uri(i["src"]).shape == (64, 64, 3) for i in imgs)
    assert len(dom.find("img", "rep")) == 3
    unknown = dom.find("section", "unknown")[0]
    assert (unknown["data-tracks"], unknown["data-faces"]) == ("2", "6")
    # Text is escaped, never injected.
    assert "tiny &lt;pilot&gt; &amp; co.mp4" in page and "<pilot>" not in page
    # The timeline: one row per cluster plus unknown, shot boundaries at 3.8 s and 7.92 s.
    rows = [a["data-cluster-id"] for t, a in dom.tags if t == "g" and "row" in (a.get("class") or "")]
    assert rows == ["person_000", "person_001", "person_002", "unknown"]
    assert len(dom.find("line", "shot")) == 2
    for label in ("00:12", "640x360", "vcn", "abc123", "feedbeef"):
        assert label in text, label


def test_render_html_caps_clusters_and_marks_missing_crops(tiny: MovieResults, tiny_thumbs):
    cfg = ReportConfig(max_clusters=2, thumbs_per_cluster=3)
    rep0 = int(tiny.clusters.set_index("cluster_id").loc["person_000", "rep_face_id"])
    thumbs = {k: v for k, v in tiny_thumbs.items() if k != rep0}
    dom = Dom(render_html(tiny, thumbs, cfg))
    assert [g["data-cluster-id"] for g in dom.find("section", "cluster")] == ["person_000", "person_001"]
    assert [a["data-cluster-id"] for a in dom.find("tr") if "data-cluster-id" in a] == ["person_002"]
    assert len(dom.find("span", "missing")) == 1, "a face without a crop is a visible placeholder"
    assert len(dom.find("img", "thumb")) == 2 + 3 + 2


def test_render_html_with_no_faces():
    empty = tiny_results()
    empty = MovieResults(empty.movie_id, empty.manifest, empty.faces.iloc[:0], empty.tracks.iloc[:0],
                         empty.shots, empty.clusters.iloc[:0])
    dom = Dom(render_html(empty, {}))
    assert dom.find("section", "cluster") == [] and dom.find("img") == []
    md = render_markdown(empty, {})
    assert "**0 clusters**" in md and "| face | cluster |" in md


def test_render_markdown_table(tiny: MovieResults, tiny_thumbs):
    md = render_markdown(tiny, tiny_thumbs, report_path="/out/x/report.html")
    lines = md.splitlines()
    table = [ln for ln in lines if ln.startswith("| ") and "person\\_" in ln]  # ids escaped as Markdown text
    assert [ln.split("|")[2].strip() for ln in table] == ["person\\_000", "person\\_001", "person\\_002"]
    assert "| 3 | 50 |" in table[0] and "00:00 |" in table[0]
    for ln in table:
        src = re.search(r"\]\((data:image/jpeg;base64,[^)]+)\)", ln).group(1)
        assert decode_data_uri(src).shape == (64, 64, 3)
    assert "`/out/x/report.html`" in md
    assert "2 unknown tracks" in md
    capped = render_markdown(tiny, {}, ReportConfig(markdown_max_clusters=1))
    assert "… and 2 smaller clusters" in capped and "data:" not in capped


# --------------------------------------------------------------------------- names that are markup

HOSTILE_VIDEO = "/videos/<img src=x onerror=alert(1)>.mp4"
# Ids as someone who can write the title's files could set them.
HOSTILE_IDS = {"person_002": "<script>alert(2)</script>", "c1": '"><svg onload=alert(3)>',
               "person_001": "x](javascript:alert(4)) | ![y"}


def hostile_results() -> MovieResults:
    """The tiny movie with a video file name and cluster and track ids that are HTML / Markdown."""
    r = tiny_results(HOSTILE_VIDEO)
    swap = {"cluster_id": HOSTILE_IDS, "track_id": HOSTILE_IDS, "rep_track_id": HOSTILE_IDS}
    return MovieResults(r.movie_id, r.manifest, r.faces.replace(swap), r.tracks.replace(swap), r.shots,
                        r.clusters.replace(swap))


def assert_inert(page: str, scripts: int, svgs: int) -> Dom:
    """Parse ``page`` as a browser would: no element, handler or link comes from a name."""
    dom = Dom(page)
    assert [t for t, _ in dom.tags].count("script") == scripts
    assert [t for t, _ in dom.tags].count("svg") == svgs
    for tag, attrs in dom.tags:
        assert not [k for k in attrs if k.startswith("on")], f"<{tag}> carries a handler: {attrs}"
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:image/jpeg;base64,"), attrs
        if tag == "a":
            pytest.fail(f"a link made of a name: {attrs}")
    return dom


def test_html_report_escapes_file_names_and_ids(tmp_path: Path):
    results = hostile_results()
    root = write_folder(tmp_path / results.movie_id, results)
    page = Path(build_report(str(root))).read_text()
    dom = assert_inert(page, scripts=1, svgs=1)  # the page's own script and timeline
    text = "".join(dom.text)
    assert "<img src=x onerror=alert(1)>.mp4" in text, "the name is shown as text"
    assert HOSTILE_IDS["person_001"] in text and HOSTILE_IDS["person_002"] in text
    assert any(HOSTILE_IDS["c1"] in (a.get("title") or "") for a in dom.find("img", "thumb")), \
        "a track id is shown in its face's caption"
    assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in page


def test_markdown_artifact_escapes_file_names_and_ids(tiny_thumbs):
    markdown_it = pytest.importorskip("markdown_it")
    from vcn.report.html import md_text

    results = hostile_results()
    md = render_markdown(results, tiny_thumbs, report_path="/out/<b>x</b>`/report.html")
    # CommonMark with raw HTML allowed (as a permissive renderer does) and GFM tables.
    page = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    text = "".join(assert_inert(page, scripts=0, svgs=0).text)
    assert "Faces of <img src=x onerror=alert(1)>.mp4" in text
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "data:" in ln]
    assert len(rows) == 3 and all(ln.count(" | ") == 5 for ln in rows), "a name adds no table column"
    assert HOSTILE_IDS["person_001"] in text and HOSTILE_IDS["person_002"] in text
    assert "/out/<b>x</b>`/report.html" in text
    name = md_text(Path(HOSTILE_VIDEO).name)  # the artifact's description
    description = markdown_it.MarkdownIt("commonmark").render(f"Face clusters of {name}")
    assert "<img src=x onerror=alert(1)>.mp4" in "".join(assert_inert(description, scripts=0, svgs=0).text)


# --------------------------------------------------------------------------- storage + task, synthetic folder

def write_folder(root: Path, results: MovieResults, crops: bool = True) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps(results.manifest.to_json()))
    for name in ("faces", "tracks", "shots", "clusters"):
        getattr(results, name).to_parquet(root / f"{name}.parquet")
    if crops:
        ids = results.faces["face_id"].to_numpy()
        write_crops(root / "crops" / "chunk-00000.parquet", ids, synthetic_crops(len(ids)))
    return root


def test_build_report_on_a_synthetic_folder(tmp_path: Path, tiny: MovieResults):
    root = write_folder(tmp_path / tiny.movie_id, tiny)
    loaded = load_results(root)
    assert loaded.movie_id == tiny.movie_id and len(loaded.faces) == len(tiny.faces)
    path = Path(build_report(str(root)))
    assert path == root / "report.html"
    dom = Dom(path.read_text())
    assert len(dom.find("section", "cluster")) == 3 and len(dom.find("img", "thumb")) == 11
    assert not list(root.glob(".tmp-*")), "written atomically, no temporary left behind"


@pytest.mark.parametrize("missing", ["clusters.parquet", "manifest.json", "faces.parquet"])
def test_load_results_names_the_missing_file(tmp_path: Path, tiny: MovieResults, missing: str):
    root = write_folder(tmp_path / tiny.movie_id, tiny, crops=False)
    (root / missing).unlink()
    with pytest.raises(StageError, match=re.escape(missing)) as err:
        load_results(root)
    assert "vcn rerun" in str(err.value)


def test_load_results_rejects_unfinished_clusters_stage(tmp_path: Path):
    results = tiny_results()
    m = results.manifest
    failed = dataclasses.replace(m.stages["clusters"], status="failed")
    results = dataclasses.replace(results, manifest=dataclasses.replace(m, stages={"clusters": failed}))
    root = write_folder(tmp_path / results.movie_id, results, crops=False)
    with pytest.raises(StageError, match="clusters stage is failed"):
        load_results(root)
    with pytest.raises(StageError, match="no such folder"):
        load_results(tmp_path / "nope")


def test_build_report_without_crops_names_the_crops_folder(tmp_path: Path, tiny: MovieResults):
    root = write_folder(tmp_path / tiny.movie_id, tiny, crops=False)
    with pytest.raises(StageError, match="crops"):
        build_report(str(root))
    assert not (root / "report.html").exists()


# --------------------------------------------------------------------------- library identities

REVIEWER_NAME = "<script>alert(1)</script>"
OTHER_TITLE = "ffeeddccbbaa9988"


def write_library(out: Path, movie_id: str) -> None:
    """``out/library/members.parquet`` as the library step writes it: person_000 is id_00003, named
    by a reviewer; person_001 is id_00001 with no name; person_002 was rejected (no identity); a
    cluster of another title shares id_00003."""
    from vcn.library.identities import ClusterSummaries, Links
    from vcn.storage.identities import LibraryLayout, LinkedLibrary, write_members

    movies = np.array([OTHER_TITLE, movie_id, movie_id, movie_id], object)
    n = len(movies)
    summaries = ClusterSummaries(
        movie_id=movies,
        cluster_id=np.array(["person_000", "person_000", "person_001", "person_002"], object),
        mean=np.zeros((n, 512), np.float32), reach=np.full(n, np.nan, np.float32),
        n_tracks=np.ones(n, np.int64), n_faces=np.ones(n, np.int64), screen_time_s=np.ones(n),
        first_sec=np.zeros(n), last_sec=np.ones(n))
    links = Links(identity=np.array([3, 3, 1, 2]), linked_to=np.array([-1, 0, -1, -1]),
                  distance=np.array([np.nan, 0.2, np.nan, np.nan], np.float32),
                  threshold=np.full(n, 0.5, np.float32))
    lib = LinkedLibrary(summaries, links, {OTHER_TITLE: "s0", movie_id: "s1"}, next_identity=4)
    write_members(LibraryLayout.of(out), lib, ["id_00003", "id_00003", "id_00001", None],
                  [REVIEWER_NAME, REVIEWER_NAME, None, None])


def test_title_identities_reads_one_title_of_the_library(tmp_path: Path, tiny: MovieResults):
    from vcn.storage.identities import title_identities

    assert title_identities(tmp_path, tiny.movie_id) is None, "no library: None"
    write_library(tmp_path, tiny.movie_id)
    assert title_identities(tmp_path, tiny.movie_id) == {
        "person_000": ("id_00003", REVIEWER_NAME), "person_001": ("id_00001", None),
        "person_002": (None, None)}
    assert title_identities(tmp_path, "0000000000000000") == {}, "a title not linked: empty"


def test_report_shows_identities_names_and_correction_commands(tmp_path: Path, tiny: MovieResults):
    from vcn.flows.cli import main as vcn_main

    out = tmp_path / "out"
    root = write_folder(out / tiny.movie_id, tiny)
    write_library(out, tiny.movie_id)
    page = Path(build_report(str(root))).read_text()
    dom = assert_inert(page, scripts=1, svgs=1)  # the reviewer's name is text, not a script
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    galleries = {g["data-cluster-id"]: g for g in dom.find("section", "cluster")}
    assert galleries["person_000"]["data-identity-id"] == "id_00003"
    assert galleries["person_001"]["data-identity-id"] == "id_00001"
    assert "data-identity-id" not in galleries["person_002"], "rejected: no identity"
    text = "".join(dom.text)
    assert REVIEWER_NAME in text and "id_00003" in text and "rejected: no identity" in text
    # One "correct it" block per gallery, naming this title's cluster and the real --out folder.
    cmds = [c for c in re.findall(r'<code class="cmd" data-kind="(\w+)">([^<]*)</code>', page)]
    assert [k for k, _ in cmds] == ["label", "merge", "split", "reject"] * 3
    target = f"{out.resolve()} {tiny.movie_id}:person_000"
    label = html_unescape(cmds[0][1])
    assert label == f"vcn label {target} NAME"
    assert html_unescape(cmds[2][1]) == f"vcn split {target} --off TRACK_ID..."
    assert html_unescape(cmds[3][1]) == f"vcn reject {target}"
    # The line runs as shown: the name lands in the log on person_000's tracks.
    argv = shlex.split(label.replace("NAME", "'Ada Lovelace'"))
    assert argv[0] == "vcn" and vcn_main(argv[1:]) == 0
    (logged,) = [json.loads(p.read_text()) for p in (out / "library" / "corrections").glob("*.json")]
    assert logged["kind"] == "label" and logged["name"] == "Ada Lovelace"
    assert logged["groups"] == [[[tiny.movie_id, t] for t in ("a1", "a2", "a3")]]
    # The Markdown artifact names the person too, escaped.
    from vcn.tasks.report import library_identities

    identities, _ = library_identities(str(root), tiny.movie_id)
    md = render_markdown(tiny, {}, identities=identities)
    assert "| person |" in md and "&lt;script&gt;" in md and "<script>" not in md
    assert "id\\_00003" in md


def test_report_without_a_library_renders_as_before(tmp_path: Path, tiny: MovieResults):
    root = write_folder(tmp_path / "out" / tiny.movie_id, tiny)
    page = Path(build_report(str(root))).read_text()
    results = load_results(root)
    assert page == render_html(results, load_thumbnails(str(root), results))
    assert "vcn label" not in page and "data-identity-id" not in page and 'class="who"' not in page
    assert "| person |" not in render_markdown(results, {})


def test_correction_commands_quote_ids_and_use_the_placeholder():
    from vcn.report.html import correction_commands

    cmds = correction_commands("00112233aabbccdd", HOSTILE_IDS["person_002"])
    assert cmds["reject"] == "vcn reject OUT '00112233aabbccdd:<script>alert(2)</script>'"
    assert shlex.split(cmds["merge"])[3:] == ["00112233aabbccdd:<script>alert(2)</script>", "OTHER_ID"]
    assert shlex.split(correction_commands("m", "person_000", "/data/my out")["label"])[1:3] == [
        "label", "/data/my out"]
    page = render_html(hostile_results(), {}, identities={HOSTILE_IDS["person_002"]: ("id_00001", None)})
    assert_inert(page, scripts=1, svgs=1)
    assert "OUT &#x27;00112233aabbccdd:&lt;script&gt;alert(2)&lt;/script&gt;&#x27;" in page


# --------------------------------------------------------------------------- the real pipeline



@pytest.fixture(scope="module")
def real_run(prefect_server, tmp_path_factory) -> Path:
    from vcn.flows.cli import main as vcn_main

    out = tmp_path_factory.mktemp("out")
    assert vcn_main(["run", str(SAMPLE), "--out", str(out), "--method", "hac"]) == 0
    (movie_dir,) = [p for p in out.iterdir() if (p / "manifest.json").exists()]
    return movie_dir


@pytest.fixture(scope="module")
def real_report(real_run: Path) -> Path:
    return Path(build_report(str(real_run)))


def run_chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (`make chromium` installs it)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp / 'profile'}", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.integration
def test_real_report_is_self_contained_and_complete(real_run: Path, real_report: Path):
    results = load_results(real_run)
    page = real_report.read_text()
    assert_self_contained(page)
    assert len(page) < 2_000_000
    dom = Dom(page)
    clusters = results.clusters[results.clusters.cluster_id != "unknown"].set_index("cluster_id")
    galleries = dom.find("section", "cluster")
    assert {g["data-cluster-id"] for g in galleries} == set(clusters.index) and len(clusters) >= 3
    for g in galleries:
        row = clusters.loc[g["data-cluster-id"]]
        assert (int(g["data-tracks"]), int(g["data-faces"])) == (row.n_tracks, row.n_faces)
    times = [float(g["data-screen-time"]) for g in galleries]
    assert times == sorted(times, reverse=True), "galleries sorted by screen time"
    for img in dom.find("img", "thumb"):
        assert decode_data_uri(img["src"]).std() > 5, "a real face crop, not a blank"
    stats = {a["data-stat"] for a in dom.find("div", "stat")}
    assert {"faces", "tracks", "shots", "clusters", "unknown-tracks", "duration", "resolution"} <= stats
    assert "short_hamilton_clip.mp4" in page and results.manifest.code["code_hash"] in page


@pytest.mark.integration
def test_real_report_renders_in_headless_chromium(real_run: Path, real_report: Path, tmp_path: Path):
    url = real_report.resolve().as_uri()
    png = tmp_path / "report.png"
    run_chromium(tmp_path, url, f"--screenshot={png}", "--window-size=1280,2000",
                 "--virtual-time-budget=5000")
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (2000, 1280)
    assert shot.std() > 20, "the screenshot is blank"
    # Face thumbnails and coloured timeline bars: many distinct colours, not a flat page.
    assert len(np.unique(shot.reshape(-1, 3) // 16, axis=0)) > 200
    dom = Dom(run_chromium(tmp_path, url, "--dump-dom", "--virtual-time-budget=5000").stdout)
    body = dom.find("body")[0]
    n_clusters = int((load_results(real_run).clusters.cluster_id != "unknown").sum())
    assert len(dom.find("section", "cluster")) == n_clusters
    total = int(body["data-images-total"])
    assert total == len(dom.find("img")) and total >= n_clusters
    assert body["data-images-ok"] == body["data-images-total"], "every thumbnail decodes (naturalWidth > 0)"


@pytest.mark.integration
def test_report_task_publishes_the_markdown_artifact(real_run: Path, prefect_server):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from vcn.tasks.report import write_report

    @flow(name="report-only")
    def report_flow(movie_dir: str) -> str:
        return write_report(movie_dir)

    (real_run / "report.html").unlink(missing_ok=True)
    assert report_flow(str(real_run)) == str(real_run / "report.html")
    assert (real_run / "report.html").stat().st_size > 10_000
    key = f"vcn-{real_run.name}"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    # One artifact from the movie flow itself, one from this flow: the key keeps both versions.
    assert len(found) == 2 and {a.type for a in found} == {"markdown"}
    assert all(a.task_run_id is not None for a in found)
    md = found[0].data
    assert "| person\\_000 |" in md and "data:image/jpeg;base64," in md
    assert str(real_run / "report.html") in md


@pytest.mark.integration
def test_incomplete_real_folder_raises_stage_error(real_run: Path, tmp_path: Path):
    copy = tmp_path / real_run.name
    shutil.copytree(real_run, copy, ignore=shutil.ignore_patterns("crops", "chunks", ".*"))
    (copy / "tracks.parquet").unlink()
    with pytest.raises(StageError, match=r"tracks\.parquet missing"):
        build_report(str(copy))
