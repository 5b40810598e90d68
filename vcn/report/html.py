"""Cluster reports: a self-contained HTML page and a compact Markdown summary of one movie.

Pure rendering: tables, the manifest and already-encoded JPEG thumbnails go in, a string comes
out. Reading the outputs and writing ``report.html`` are the job of ``vcn.storage.results`` and
``vcn.tasks.report``.

The HTML opens offline: CSS and a few lines of JavaScript are inline, thumbnails are ``data:``
URIs, the timeline is inline SVG. Its size stays bounded on a 2-hour movie because galleries are
capped (``ReportConfig``), thumbnails are small re-encoded JPEGs and timeline bars of one cluster
closer than one SVG unit are merged.

Given the title's library identities (cluster id -> identity id and name, see
:func:`vcn.storage.identities.title_identities`), each gallery shows the person's name and identity id
and the review commands that correct the cluster (:func:`correction_commands`).

Every string that comes from a file name or from metadata (the video's name, cluster and track
ids, config values, reviewers' names) is escaped where it lands: ``html.escape`` in the page,
:func:`md_text` or :func:`md_code` in the Markdown, so neither renders a tag, a link or an image
from it. Command lines are shell-quoted (``shlex.quote``) before they are escaped, so a copied
line passes each id to ``vcn`` as one argument.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from vcn.manifest import Manifest

UNKNOWN = "unknown"
OUT_PLACEHOLDER = "OUT"

Identity = tuple[str | None, str | None]
"""A cluster's place in the library: (identity_id, name); None where it has none."""


@dataclass(frozen=True)
class ReportConfig:
    """What a report shows and how big it may get.

    ``thumb_size``: thumbnails are ``thumb_size`` x ``thumb_size`` px JPEGs at ``jpeg_quality``
    (64 px, quality 80: 1-2 KB each). ``thumbs_per_cluster``: at most this many faces per
    gallery (the representative face, then the best face of each track). ``max_clusters``: clusters
    with a gallery and a timeline row, by decreasing screen time; the rest are listed in a table.
    ``max_unknown_thumbs``: thumbnails in the "Unknown" section (one per track).
    ``markdown_max_clusters``: rows of the Markdown table. ``timeline_units``: width of the
    timeline's plot area in SVG units; bars closer than one unit are drawn as one.
    """

    thumb_size: int = 64
    jpeg_quality: int = 80
    thumbs_per_cluster: int = 12
    max_clusters: int = 200
    max_unknown_thumbs: int = 60
    markdown_max_clusters: int = 50
    timeline_units: int = 1000


@dataclass(frozen=True, eq=False)
class MovieResults:
    """A movie's outputs as tables (see README, "Output contract").

    ``faces``: one row per face with at least ``face_id``, ``frame_idx``, ``det_score``,
    ``track_id``, ``cluster_id``. ``tracks``: ``track_id``, ``first_frame``, ``last_frame``,
    ``n_faces``, ``cluster_id``. ``shots``: ``shot_id``, ``start_frame``, ``end_frame``
    (exclusive). ``clusters``: the rows of ``clusters.parquet``. ``manifest``: ``manifest.json``
    (:class:`vcn.manifest.Manifest`).
    """

    movie_id: str
    manifest: Manifest
    faces: pd.DataFrame
    tracks: pd.DataFrame
    shots: pd.DataFrame
    clusters: pd.DataFrame

    @property
    def fps(self) -> float:
        """Frames per second of the input video."""
        inp = self.manifest.input
        fps = float(inp.fps or 0.0) if inp is not None else 0.0
        if fps > 0:
            return fps
        # Older or partial manifests: the shots table carries both frames and seconds.
        if len(self.shots) and float(self.shots["end_sec"].max()) > 0:
            return float(self.shots["end_frame"].max()) / float(self.shots["end_sec"].max())
        return 25.0

    @property
    def video_name(self) -> str:
        """The input video's file name (the movie id when the manifest names no file)."""
        inp = self.manifest.input
        return Path(inp.path if inp is not None and inp.path else self.movie_id).name

    @property
    def step_frames(self) -> int:
        """Frames between two detections (the ingest stride): the time one face stands for."""
        return int((self.manifest.config or {}).get("ingest", {}).get("stride") or 1)

    @property
    def duration_s(self) -> float:
        """Length of the input video in seconds."""
        inp = self.manifest.input
        dur = float(inp.duration_s or 0.0) if inp is not None else 0.0
        if dur > 0:
            return dur
        n = int(self.shots["end_frame"].max()) if len(self.shots) else 0
        return n / self.fps


def encode_thumbnails(crops: np.ndarray, cfg: ReportConfig | None = None) -> list[bytes]:
    """Re-encode aligned crops (N, 112, 112, 3) uint8 BGR as ``thumb_size`` px JPEGs."""
    cfg = cfg or ReportConfig()
    size = (cfg.thumb_size, cfg.thumb_size)
    params = [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
    return [cv2.imencode(".jpg", cv2.resize(c, size, interpolation=cv2.INTER_AREA), params)[1].tobytes()
            for c in crops]


def ordered_clusters(results: MovieResults) -> pd.DataFrame:
    """Clusters other than ``unknown``, by decreasing screen time (earliest first on ties)."""
    c = results.clusters
    c = c[c["cluster_id"] != UNKNOWN]
    return c.sort_values(["screen_time_s", "first_frame", "cluster_id"], ascending=[False, True, True],
                         kind="stable").reset_index(drop=True)


def _best_face_per_track(results: MovieResults) -> pd.DataFrame:
    """One row per track: its highest-scoring face, with the track's size and start."""
    f = results.faces[["face_id", "track_id", "det_score", "frame_idx"]]
    best = f.sort_values(["track_id", "det_score", "face_id"], ascending=[True, False, True], kind="stable")
    best = best.drop_duplicates("track_id")
    t = results.tracks[["track_id", "n_faces", "first_frame", "cluster_id"]]
    return best.merge(t, on="track_id", how="inner")


def select_thumbnail_faces(results: MovieResults, cfg: ReportConfig | None = None) -> dict[str, np.ndarray]:
    """Face ids (int64, display order) to show per cluster.

    For each of the first ``max_clusters`` clusters of :func:`ordered_clusters`: the
    representative face, then the highest-``det_score`` face of each track (largest tracks first),
    at most ``thumbs_per_cluster``. Under ``unknown``: one face per unknown track, in time order, at
    most ``max_unknown_thumbs``.
    """
    cfg = cfg or ReportConfig()
    best = _best_face_per_track(results).sort_values(
        ["n_faces", "first_frame", "track_id"], ascending=[False, True, True], kind="stable")
    per_cluster = {cid: grp["face_id"].to_numpy(np.int64)
                   for cid, grp in best.groupby("cluster_id", sort=False)}
    out: dict[str, np.ndarray] = {}
    for row in ordered_clusters(results).head(cfg.max_clusters).itertuples(index=False):
        rep = np.asarray([row.rep_face_id], np.int64)
        rest = per_cluster.get(row.cluster_id, np.zeros(0, np.int64))
        out[row.cluster_id] = np.concatenate([rep, rest[rest != row.rep_face_id]])[: cfg.thumbs_per_cluster]
    unknown = best[best["cluster_id"] == UNKNOWN].sort_values(["first_frame", "track_id"], kind="stable")
    if len(unknown):
        out[UNKNOWN] = unknown["face_id"].to_numpy(np.int64)[: cfg.max_unknown_thumbs]
    return out


def format_clock(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` from one hour on)."""
    s = max(int(seconds), 0)
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def format_duration(seconds: float) -> str:
    """``4.2 s`` under a minute, ``3 min 05 s`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


def _count(n: int, noun: str) -> str:
    return f"{int(n)} {noun}{'' if int(n) == 1 else 's'}"


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def cluster_color(rank: int) -> str:
    """A distinct colour per gallery rank (golden-angle hues), shared by gallery and timeline."""
    return f"hsl({rank * 137.508 % 360:.0f},62%,44%)"


def track_intervals(results: MovieResults, cluster_ids: list[str], units: int) -> dict[str, np.ndarray]:
    """On-screen intervals per cluster in seconds, (K, 2) float64, merged where the gap between two
    of them is below ``duration / units`` (one SVG unit: drawing them apart would not show)."""
    fps, step = results.fps, results.step_frames
    tol = max(results.duration_s, 1e-6) / max(units, 1)
    t = results.tracks
    out: dict[str, np.ndarray] = {}
    for cid, grp in t[t["cluster_id"].isin(cluster_ids)].groupby("cluster_id", sort=False):
        start = grp["first_frame"].to_numpy(np.float64) / fps
        end = (grp["last_frame"].to_numpy(np.float64) + step) / fps
        order = np.argsort(start, kind="stable")
        start, end = start[order], np.maximum.accumulate(end[order])
        # A new interval begins where a track starts after everything before it has ended.
        new = np.r_[True, start[1:] > end[:-1] + tol]
        idx = np.flatnonzero(new)
        ends = np.r_[end[idx[1:] - 1], end[-1]] if len(idx) > 1 else end[-1:]
        out[cid] = np.stack([start[idx], ends], axis=1)
    return out


def _tick_step(duration: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 12:
            return float(step)
    return 7200.0


def render_timeline(results: MovieResults, cluster_ids: list[str], cfg: ReportConfig | None = None) -> str:
    """Inline SVG: x = time, one row per cluster (``unknown`` last if it has tracks), bars where
    the cluster's tracks are on screen, shot boundaries as thin vertical lines."""
    cfg = cfg or ReportConfig()
    rows = [*cluster_ids, *([UNKNOWN] if (results.tracks["cluster_id"] == UNKNOWN).any() else [])]
    label_w, row_h, axis_h, units = 120, 16, 28, cfg.timeline_units
    dur = max(results.duration_s, 1e-6)
    plot_h = row_h * len(rows)
    height = axis_h + plot_h + 4
    xs = units / dur
    intervals = track_intervals(results, rows, units)
    parts = [f'<svg class="timeline" viewBox="0 0 {label_w + units + 30} {height}" '
             'role="img" aria-label="who is on screen over time">'
             f'<rect x="{label_w}" y="{axis_h}" width="{units}" height="{plot_h}" class="plot"/>']
    step = _tick_step(dur)
    for t in np.arange(0.0, dur + 1e-9, step):
        parts.append(f'<text x="{label_w + t * xs:.1f}" y="12" class="tick">{format_clock(t)}</text>')
    # Shot boundaries (every shot start but the first, deduplicated at 0.5-unit precision): ticks in
    # a ruler under the time axis, and across the rows too while they are sparse enough to read.
    starts = results.shots["start_frame"].to_numpy(np.float64)[1:] / results.fps
    cuts = np.unique(np.round(label_w + starts * xs, 1) * 2) / 2
    y2 = axis_h + plot_h if len(cuts) <= units / 8 else axis_h - 2
    parts.extend(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{axis_h - 8}" y2="{y2}" class="shot"/>' for x in cuts)
    for i, cid in enumerate(rows):
        y = axis_h + i * row_h
        color = "#9aa0a6" if cid == UNKNOWN else cluster_color(i)
        name = html.escape(cid)
        parts.append(f'<g class="row" data-cluster-id="{name}"><title>{name}</title>'
                     f'<text x="{label_w - 6}" y="{y + row_h - 4}" class="label">{name}</text>')
        for a, b in np.clip(intervals.get(cid, np.zeros((0, 2))), 0.0, dur):
            w = max((b - a) * xs, 1.0)
            parts.append(f'<rect x="{label_w + a * xs:.1f}" y="{y + 3}" width="{w:.1f}" '
                         f'height="{row_h - 6}" fill="{color}"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _thumb_html(face_id: int, thumbnails: Mapping[int, bytes], caption: str, rep: bool) -> str:
    jpeg = thumbnails.get(int(face_id))
    cls = "thumb rep" if rep else "thumb"
    if jpeg is None:
        return f'<span class="{cls} missing" title="face {face_id}: no crop">?</span>'
    return (f'<img class="{cls}" src="{_data_uri(jpeg)}" width="64" height="64" alt="face {face_id}" '
            f'title="{html.escape(caption)}" data-face-id="{int(face_id)}">')


def _captions(results: MovieResults) -> dict[int, str]:
    f = results.faces
    secs = f["frame_idx"].to_numpy(np.float64) / results.fps
    return {int(i): f"face {int(i)} · {t} · {format_clock(s)}"
            for i, t, s in zip(f["face_id"].to_numpy(), f["track_id"].to_numpy(), secs, strict=True)}


def _flat_config(cfg: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(cfg, dict):
        return [kv for k, v in cfg.items() for kv in _flat_config(v, f"{prefix}{k}.")]
    return [(prefix[:-1], json.dumps(cfg))]


_CONFIG_SUMMARY = (
    "cluster.method", "cluster.hac_threshold", "ingest.stride", "ingest.detection.score_threshold",
    "ingest.quality.min_face_px", "ingest.quality.max_yaw", "ingest.shots.threshold",
    "ingest.chunk.chunk_seconds", "model_dir", "seed",
)


def _header(results: MovieResults, clusters: pd.DataFrame) -> str:
    m = results.manifest
    inp, code = m.input, m.code or {}
    name = results.video_name
    unknown_tracks = int((results.tracks["cluster_id"] == UNKNOWN).sum())
    known = inp is not None and inp.width is not None and inp.height is not None
    res = f"{inp.width}x{inp.height}" if known else "?"
    stats = [("duration", format_clock(results.duration_s)), ("resolution", res),
             ("fps", f"{results.fps:.3f}".rstrip("0").rstrip(".")), ("faces", len(results.faces)),
             ("tracks", len(results.tracks)), ("shots", len(results.shots)), ("clusters", len(clusters)),
             ("unknown tracks", unknown_tracks)]
    stat_html = "".join(f'<div class="stat" data-stat="{k.replace(" ", "-")}"><b>{html.escape(str(v))}</b>'
                        f"<span>{k}</span></div>" for k, v in stats)
    flat = dict(_flat_config(m.config or {}))
    summary = " · ".join(f"{k.removeprefix('ingest.')} = {html.escape(flat[k])}"
                         for k in _CONFIG_SUMMARY if k in flat)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in flat.items())
    version = " · ".join(f"{k} {html.escape(str(code[k]))}"
                         for k in ("vcn_version", "git_commit", "code_hash") if k in code)
    clustered = getattr(m.stages.get("clusters"), "ended", None) or ""
    return (f'<header><h1>{html.escape(name)}</h1><p class="sub">movie {html.escape(results.movie_id)}'
            f'{" · clustered " + html.escape(clustered) if clustered else ""}</p>'
            f'<div class="stats">{stat_html}</div>'
            f'<p class="cfg"><b>config</b> {summary or "n/a"}</p>'
            f'<p class="cfg"><b>code</b> {version or "n/a"}</p>'
            f"<details><summary>full configuration</summary><table class=\"kv\">{rows}</table></details>"
            "</header>")


def correction_commands(movie_id: str, cluster_id: str, out_dir: str | None = None) -> dict[str, str]:
    """The ``vcn`` command lines that correct one cluster, by kind (label, merge, split, reject).

    The cluster is named ``MOVIE_ID:CLUSTER_ID``, the form ``vcn label`` and the others resolve
    to the cluster's tracks. ``out_dir`` is the folder the commands act on (the ``--out`` folder
    holding the title's folder and ``library/``); without it the placeholder ``OUT`` stands
    there. The other placeholders are what only the reviewer knows: ``NAME`` (the person's name),
    ``OTHER_ID`` (another cluster or identity of the same person) and ``TRACK_ID`` (the tracks to
    split off; each face's caption names its track). Every argument is shell-quoted.
    """
    out = shlex.quote(out_dir) if out_dir else OUT_PLACEHOLDER
    target = shlex.quote(f"{movie_id}:{cluster_id}")
    return {
        "label": f"vcn label {out} {target} NAME",
        "merge": f"vcn merge {out} {target} OTHER_ID",
        "split": f"vcn split {out} {target} --off TRACK_ID...",
        "reject": f"vcn reject {out} {target}",
    }


def _who_text(identity: Identity | None) -> str:
    """``name · id_00003``, the id alone, or "" (not linked)."""
    identity_id, name = identity or (None, None)
    return " · ".join(x for x in (name, identity_id) if x)


def _who_html(identity: Identity | None) -> str:
    identity_id, name = identity or (None, None)
    parts = []
    if name:
        parts.append(f'<b class="name">{html.escape(name)}</b>')
    if identity_id:
        parts.append(f'identity <code class="identity">{html.escape(identity_id)}</code>')
    elif identity is not None:
        parts.append('<span class="identity none">rejected: no identity</span>')
    else:
        parts.append('<span class="identity none">not linked to the library yet</span>')
    return f'<p class="who">{" · ".join(parts)}</p>'


def _fix_html(movie_id: str, cluster_id: str, identity: Identity | None, out_dir: str | None) -> str:
    cmds = correction_commands(movie_id, cluster_id, out_dir)
    lines = "".join(f'<code class="cmd" data-kind="{k}">{html.escape(c)}</code>' for k, c in cmds.items())
    identity_id = identity[0] if identity else None
    hint = (f"; {html.escape(identity_id)} in place of the cluster acts on the person in every title"
            if identity_id else "")
    return (f'<details class="fix"><summary>correct it</summary>{lines}'
            f'<p class="meta">NAME, OTHER_ID (another cluster or identity), TRACK_ID (from a face\'s '
            f"caption) are yours to fill in{hint}</p></details>")


def _gallery(row: Any, rank: int, faces: np.ndarray, thumbnails: Mapping[int, bytes],
             captions: Mapping[int, str], movie_id: str,
             identities: Mapping[str, Identity] | None, out_dir: str | None) -> str:
    cid = html.escape(row.cluster_id)
    thumbs = "".join(_thumb_html(f, thumbnails, captions.get(int(f), ""), i == 0)
                     for i, f in enumerate(faces))
    who = fix = ident_attr = ""
    if identities is not None:
        identity = identities.get(row.cluster_id)
        who = _who_html(identity)
        fix = _fix_html(movie_id, row.cluster_id, identity, out_dir)
        if identity and identity[0]:
            ident_attr = f' data-identity-id="{html.escape(identity[0])}"'
    return (f'<section class="cluster" id="cluster-{cid}" data-cluster-id="{cid}"{ident_attr} '
            f'data-tracks="{int(row.n_tracks)}" data-faces="{int(row.n_faces)}" '
            f'data-screen-time="{float(row.screen_time_s):.3f}">'
            f'<h3><i style="background:{cluster_color(rank)}"></i>{cid}</h3>{who}'
            f'<p class="meta"><span class="tracks">{_count(row.n_tracks, "track")}</span> · '
            f'<span class="faces">{_count(row.n_faces, "face")}</span> · '
            f'<span class="screen">{format_duration(float(row.screen_time_s))}</span> on screen · '
            f'first at <span class="first">{format_clock(float(row.first_sec))}</span></p>'
            f'<div class="thumbs">{thumbs}</div>{fix}</section>')


def _rest_table(rest: pd.DataFrame, identities: Mapping[str, Identity] | None) -> str:
    if not len(rest):
        return ""

    def who(cluster_id: str) -> str:
        return "" if identities is None else f"<td>{html.escape(_who_text(identities.get(cluster_id)))}</td>"

    rows = "".join(f'<tr data-cluster-id="{html.escape(r.cluster_id)}"><td>{html.escape(r.cluster_id)}</td>'
                   f"{who(r.cluster_id)}<td>{int(r.n_tracks)}</td><td>{int(r.n_faces)}</td>"
                   f"<td>{format_duration(float(r.screen_time_s))}</td><td>{format_clock(float(r.first_sec))}</td></tr>"
                   for r in rest.itertuples(index=False))
    person = "" if identities is None else "<th>person</th>"
    return (f'<details class="rest"><summary>{len(rest)} smaller clusters without gallery</summary>'
            f"<table><tr><th>cluster</th>{person}<th>tracks</th><th>faces</th><th>screen time</th>"
            f"<th>first</th></tr>{rows}</table></details>")


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;
background:#f4f5f7;color:#202124}
main{max-width:1240px;margin:0 auto;padding:20px}
header{background:#fff;border-radius:8px;padding:16px 20px;box-shadow:0 1px 2px #0002}
h1{margin:0;font-size:22px}h2{margin:28px 0 10px;font-size:18px}h3{margin:0 0 2px;font-size:15px}
.sub,.meta,.cfg{color:#5f6368;margin:4px 0}.cfg b{color:#202124;margin-right:6px}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.stat{background:#f1f3f4;border-radius:6px;padding:6px 12px;min-width:70px}
.stat b{display:block;font-size:18px}.stat span{color:#5f6368;font-size:12px}
.kv td{padding:1px 10px 1px 0;font-family:ui-monospace,monospace;font-size:12px}
.galleries{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px;align-items:start}
.cluster{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px #0002}
.cluster h3 i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;margin-top:6px}
.thumb{width:64px;height:64px;border-radius:4px;display:inline-block;background:#ddd;text-align:center;line-height:64px}
.thumb.rep{outline:2px solid #1a73e8;outline-offset:-2px}
.timeline{width:100%;height:auto;background:#fff;border-radius:8px;box-shadow:0 1px 2px #0002}
.timeline .plot{fill:#fafafa}.timeline .shot{stroke:#9aa0a6;stroke-width:.6}
.timeline .tick{font-size:10px;fill:#5f6368;text-anchor:middle}
.timeline .label{font-size:11px;fill:#202124;text-anchor:end}
table{border-collapse:collapse}.rest table td,.rest table th{padding:2px 10px;text-align:left}
.unknown{background:#fff;border-radius:8px;padding:10px 12px;box-shadow:0 1px 2px #0002}
.who{margin:2px 0}.who .none{color:#5f6368}.who code,.fix code{font:12px ui-monospace,monospace}
.fix{margin-top:6px;font-size:12px}.fix summary{color:#1a73e8;cursor:pointer}
.fix .cmd{display:block;background:#f1f3f4;border-radius:4px;padding:2px 6px;margin:3px 0;
overflow-x:auto;white-space:pre;user-select:all}
"""

# Marks the page once every thumbnail has decoded, so a headless browser (or a reader's devtools)
# can tell a broken image from a slow one.
_SCRIPT = """
window.addEventListener('load',function(){var im=document.images,ok=0;
for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}
document.body.setAttribute('data-images-total',im.length);document.body.setAttribute('data-images-ok',ok);});
"""


def render_html(
    results: MovieResults, thumbnails: Mapping[int, bytes], cfg: ReportConfig | None = None,
    identities: Mapping[str, Identity] | None = None, out_dir: str | None = None,
) -> str:
    """The movie's cluster report as one self-contained HTML page.

    ``thumbnails`` maps face id to JPEG bytes (see :func:`encode_thumbnails`) for at least the faces
    of :func:`select_thumbnail_faces`; a face without one is drawn as a "?" placeholder.

    ``identities`` (cluster id -> (identity_id, name)) is the title's place in a library: each
    gallery then shows the name and identity id (or that the cluster is not linked yet) and a
    "correct it" block with the ``vcn label / merge / split / reject`` lines for that cluster.
    Pass an empty mapping for a library title not linked yet; None (no library) leaves both out.
    The lines name ``out_dir``, which must be the folder the identities were read from (the
    title's ``--out`` folder, where the corrections log lives), so that a copied line corrects
    this library from any working directory; without it they read ``OUT``, a placeholder.
    """
    cfg = cfg or ReportConfig()
    clusters = ordered_clusters(results)
    shown, rest = clusters.head(cfg.max_clusters), clusters.iloc[cfg.max_clusters:]
    selection = select_thumbnail_faces(results, cfg)
    captions = _captions(results)
    none = np.zeros(0, np.int64)
    galleries = "".join(_gallery(r, i, selection.get(r.cluster_id, none), thumbnails, captions,
                                 results.movie_id, identities, out_dir)
                        for i, r in enumerate(shown.itertuples(index=False)))
    unknown_tracks = int((results.tracks["cluster_id"] == UNKNOWN).sum())
    unknown_faces = int((results.faces["cluster_id"] == UNKNOWN).sum())
    unknown_thumbs = "".join(_thumb_html(f, thumbnails, captions.get(int(f), ""), False)
                             for f in selection.get(UNKNOWN, []))
    more = f" (first {cfg.max_clusters} by screen time)" if len(rest) else ""
    n_thumbs = len(selection.get(UNKNOWN, []))
    shown_unknown = f"; one face of each of the first {n_thumbs} tracks" if n_thumbs < unknown_tracks else ""
    title = html.escape(results.video_name)
    review = ("; names and identity ids come from the library, and <i>correct it</i> gives the "
              "review commands (README, Reviewing)" if identities is not None else "")
    body = (
        f"<main>{_header(results, clusters)}"
        f'<h2>Timeline</h2><p class="meta">one row per cluster{more}; thin lines are shot boundaries</p>'
        f"{render_timeline(results, list(shown['cluster_id']), cfg)}"
        f'<h2>Clusters</h2><p class="meta">{len(clusters)} clusters by screen time{more}; per cluster the '
        f"representative face (outlined), then the best face of each track{review}</p>"
        f'<div class="galleries">{galleries}</div>{_rest_table(rest, identities)}'
        f'<h2>Unknown</h2><section class="unknown" data-tracks="{unknown_tracks}" '
        f'data-faces="{unknown_faces}"><p class="meta">{_count(unknown_tracks, "track")}, '
        f'{_count(unknown_faces, "face")} '
        f"excluded from clustering (low quality){shown_unknown}</p>"
        f'<div class="thumbs">{unknown_thumbs}</div></section></main>'
    )
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>vcn · {title}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<style>{_CSS}</style></head><body>{body}<script>{_SCRIPT}</script></body></html>\n")


_MD_MARKUP = re.compile(r"([\\`*_{}\[\]()#+!|~])")


def md_text(text: Any) -> str:
    """``text`` as literal Markdown text on one line (a heading, a table cell, alt text): markup
    characters backslash-escaped and ``&``, ``<``, ``>`` as HTML entities, so that no renderer
    makes a tag, a link, an image or a table column of it."""
    one_line = " ".join(str(text).splitlines())
    return html.escape(_MD_MARKUP.sub(r"\\\1", one_line), quote=False)


def md_code(text: Any) -> str:
    """``text`` as a Markdown code span on one line: shown verbatim, never markup."""
    one_line = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one_line)), default=0) + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"


def render_markdown(results: MovieResults, thumbnails: Mapping[int, bytes], cfg: ReportConfig | None = None,
                    report_path: str | None = None, identities: Mapping[str, Identity] | None = None) -> str:
    """A compact Markdown summary (a Prefect artifact): counts, then one table row per cluster with
    its representative face as an inline ``data:`` image (the Prefect 3 UI renders
    ``data:image/*`` sources; elsewhere the alt text shows). With ``identities`` (see
    :func:`render_html`) a "person" column gives each cluster's name and identity id.
    """
    cfg = cfg or ReportConfig()
    clusters = ordered_clusters(results)
    name = results.video_name
    unknown_tracks = int((results.tracks["cluster_id"] == UNKNOWN).sum())
    lines = [
        f"# Faces of {md_text(name)}",
        "",
        f"{format_clock(results.duration_s)} · {len(results.faces)} faces · {len(results.tracks)} tracks · "
        f"{len(results.shots)} shots · **{len(clusters)} clusters** · {unknown_tracks} unknown tracks",
        "",
        f"| face | cluster |{' person |' if identities is not None else ''} tracks | faces | screen time "
        "| first seen |",
        f"|---|---|{'---|' if identities is not None else ''}---:|---:|---:|---:|",
    ]
    for r in clusters.head(cfg.markdown_max_clusters).itertuples(index=False):
        jpeg = thumbnails.get(int(r.rep_face_id))
        img = f"![{md_text(r.cluster_id)}]({_data_uri(jpeg)})" if jpeg is not None else ""
        who = f" {md_text(_who_text(identities.get(r.cluster_id)))} |" if identities is not None else ""
        lines.append(f"| {img} | {md_text(r.cluster_id)} |{who} {int(r.n_tracks)} | {int(r.n_faces)} | "
                     f"{format_duration(float(r.screen_time_s))} | {format_clock(float(r.first_sec))} |")
    if len(clusters) > cfg.markdown_max_clusters:
        lines += ["", f"… and {len(clusters) - cfg.markdown_max_clusters} smaller clusters."]
    if report_path:
        lines += ["", f"Full report with every gallery and the timeline: {md_code(report_path)}"]
    return "\n".join(lines) + "\n"
