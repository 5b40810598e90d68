"""Scoring a face clustering against labelled faces: matching, then WCP, NMI, ARI, B-cubed, ratio.

Ground truth labels only some frames (e.g. every 5th) and the pipeline detects faces only on every
``stride``-th frame, so a labelled frame often has no detection even though a track spans it. Each
track's box is therefore linearly interpolated between its own detections (never outside its
``[first, last]`` frames, never across a gap longer than ``max_gap``), and every labelled frame is
solved as an assignment problem between GT boxes and the tracks' boxes on that frame.

Which faces each number is computed on (see :class:`EvalReport`):

- ``n_gt`` counts scored GT faces: every row whose identity is not ``"ignore"``. Ignore rows take
  part in matching (so they can take a track away from a scored face, as they should) but are
  never scored.
- ``coverage`` and ``unknown_rate`` describe how many scored faces reached the clustering.
- The clustering metrics (WCP, NMI, ARI, B-cubed, cluster ratio) use the *clustered* faces: scored,
  matched, and with a cluster other than ``"unknown"``. A pipeline can therefore not raise them by
  declaring hard faces unknown; ``unknown_rate`` and ``coverage`` expose that trade.

WCP alone rewards over-segmentation (every face its own cluster scores 1.0), so the project judges
a clustering by ``cluster_ratio`` (ideally 1) together with B-cubed F.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from vcn.errors import ConfigError, InputError
from vcn.faces.boxes import box_iou

IGNORE = "ignore"
"""GT identity of faces that are matched but never scored."""

UNKNOWN = "unknown"
"""Predicted cluster id of faces the pipeline excluded from clustering."""

GT_COLUMNS = ("frame_idx", "x1", "y1", "x2", "y2", "identity")
PRED_COLUMNS = ("frame_idx", "x1", "y1", "x2", "y2", "track_id", "cluster_id")
_BOX = ["x1", "y1", "x2", "y2"]


@dataclass(frozen=True)
class MatchConfig:
    """How GT faces are matched to predicted tracks.

    Attributes:
        iou_min: least IoU between a GT box and a track's (possibly interpolated) box for a match.
            0.5 is the usual detection criterion; on the dev clips, boxes from the same SCRFD model
            overlap their GT at IoU >= 0.8 even when interpolated, so 0.5 loses nothing.
        max_gap: longest gap, in frames, between two consecutive detections of a track across
            which its box is interpolated. 10 spans a stride of 2 or 3 with a few missed
            detections; longer gaps are usually occlusions where a straight line is a poor guess.
    """

    iou_min: float = 0.5
    max_gap: int = 10

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_min <= 1.0:
            raise ConfigError(f"metrics iou_min={self.iou_min} must lie in (0, 1]; 0.5 is the usual value")
        if self.max_gap < 0:
            raise ConfigError(f"metrics max_gap={self.max_gap} must be >= 0 frames; 0 disables interpolation")


# ---------------------------------------------------------------------------------------------
# Input validation


def _require_columns(df: pd.DataFrame, required: Iterable[str], what: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, df.columns))}. "
            f"Expected columns: {', '.join(required)}."
        )


def _numeric_boxes(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Return ``df`` with ``frame_idx`` int64 and box columns float64, or raise InputError."""
    out = df.copy()
    for col in ["frame_idx", *_BOX]:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"{what}: column {col} has a missing or non-numeric value at row {row}")
        out[col] = values
    frames = out["frame_idx"].to_numpy(dtype=np.float64)
    if (frames < 0).any() or (frames != np.round(frames)).any():
        raise InputError(f"{what}: frame_idx must be non-negative integers (0-based decode index)")
    out["frame_idx"] = frames.astype(np.int64)
    boxes = out[_BOX].to_numpy(dtype=np.float64)
    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if degenerate.any():
        row = int(np.flatnonzero(degenerate)[0])
        raise InputError(
            f"{what}: box at row {row} has x2 <= x1 or y2 <= y1; boxes must be x1,y1,x2,y2 in pixels"
        )
    out[_BOX] = boxes
    return out


def read_ground_truth(df: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalise a ground-truth face table (as read from a ``*.faces.csv``).

    Args:
        df: one row per labelled face with columns ``frame_idx, x1, y1, x2, y2, identity`` and
            optionally ``video`` and ``track`` (kept, not used). Boxes are x1,y1,x2,y2 pixels.

    Returns:
        A copy sorted by ``frame_idx`` with a fresh RangeIndex: ``frame_idx`` int64, box columns
        float64, ``identity`` str. Rows with identity ``"ignore"`` are kept (they are matched).

    Raises:
        InputError: a required column is missing, a value is missing or not numeric, a box is
            degenerate, an identity is empty, or the table mixes several videos.
    """
    _require_columns(df, GT_COLUMNS, "ground-truth table")
    if "video" in df.columns and df["video"].nunique(dropna=False) > 1:
        videos = ", ".join(map(str, df["video"].unique()[:5]))
        raise InputError(
            f"ground-truth table mixes videos ({videos}); filter it to the video being evaluated"
        )
    out = _numeric_boxes(df, "ground-truth table")
    identity = out["identity"]
    empty = identity.isna() | (identity.astype(str).str.strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise InputError(f"ground-truth table: identity is empty at row {row}; use '{IGNORE}' to skip a face")
    out["identity"] = identity.astype(str)
    return out.sort_values("frame_idx", kind="stable").reset_index(drop=True)


def _read_predictions(pred: pd.DataFrame) -> pd.DataFrame:
    _require_columns(pred, PRED_COLUMNS, "prediction table (faces.parquet)")
    out = _numeric_boxes(pred[list(PRED_COLUMNS)], "prediction table (faces.parquet)")
    for col in ("track_id", "cluster_id"):
        if out[col].isna().any():
            raise InputError(
                f"prediction table (faces.parquet): {col} has missing values; every face needs a "
                f"{col} ('{UNKNOWN}' for faces excluded from clustering)"
            )
        out[col] = out[col].astype(str)
    # Chunk overlaps can repeat a detection under the same stitched track; keep one per frame.
    out = out.drop_duplicates(subset=["track_id", "frame_idx"], keep="first")
    return out.sort_values(["track_id", "frame_idx"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Matching


def _track_boxes_at(pred: pd.DataFrame, frames: np.ndarray, max_gap: int) -> pd.DataFrame:
    """Every track's box on each of ``frames`` (sorted unique int64) where the track spans it.

    ``pred`` is sorted by (track_id, frame_idx) with one row per pair. Returns columns frame_idx,
    track_id, cluster_id, x1..y2: exact boxes on detected frames, linear interpolation between
    consecutive detections at most ``max_gap`` frames apart, nothing elsewhere.
    """
    track_ids = pred["track_id"].to_numpy()
    det_frames = pred["frame_idx"].to_numpy(dtype=np.int64)
    boxes = pred[_BOX].to_numpy(dtype=np.float64)
    if len(pred) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ["frame_idx", "track_id", "cluster_id"]})
    # Vectorised over all tracks at once: a per-track loop costs seconds on a full episode.
    starts = np.flatnonzero(np.r_[True, track_ids[1:] != track_ids[:-1]])
    ends = np.r_[starts[1:], len(pred)]
    lo = np.searchsorted(frames, det_frames[starts], side="left")
    hi = np.searchsorted(frames, det_frames[ends - 1], side="right")
    counts = hi - lo
    track = np.repeat(np.arange(starts.size), counts)  # (K,) track number of each query
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    query = frames[np.repeat(lo, counts) + offset]
    # Rows are sorted by (track, frame), so (track number, frame) keys are sorted too and one
    # global searchsorted finds each query's last detection at or before it, inside its track.
    span = int(max(det_frames.max(initial=0), frames.max(initial=0))) + 2
    row_track = np.repeat(np.arange(starts.size), ends - starts)
    left = np.searchsorted(row_track * span + det_frames, track * span + query, side="right") - 1
    right = np.minimum(left + 1, ends[track] - 1)
    exact = det_frames[left] == query
    gap = det_frames[right] - det_frames[left]
    keep = exact | (gap <= max_gap)
    query, left, right, exact, gap = query[keep], left[keep], right[keep], exact[keep], gap[keep]
    w = np.where(exact, 0.0, (query - det_frames[left]) / np.maximum(gap, 1))
    interp = boxes[left] * (1.0 - w)[:, None] + boxes[right] * w[:, None]
    # A face between two detections takes the cluster of the nearer one (the earlier on a tie).
    nearer = np.where(w <= 0.5, left, right)
    out = pd.DataFrame(
        {
            "frame_idx": query,
            "track_id": pd.Series(track_ids[left], dtype=object),
            "cluster_id": pd.Series(pred["cluster_id"].to_numpy()[nearer], dtype=object),
        }
    )
    out[_BOX] = interp
    return out


def match_faces(
    gt: pd.DataFrame,
    pred: pd.DataFrame,
    iou_min: float = MatchConfig.iou_min,
    max_gap: int = MatchConfig.max_gap,
) -> pd.DataFrame:
    """Match every GT face to at most one predicted track on its frame.

    Per labelled frame, GT boxes and the tracks' boxes on that frame (exact on detected frames,
    interpolated in between, see :class:`MatchConfig`) are assigned by the Hungarian algorithm on
    IoU; pairs below ``iou_min`` are forbidden. Each track is used at most once per frame.

    Args:
        gt: ground-truth table, as accepted by :func:`read_ground_truth` (validated here).
        pred: predicted faces, one row per detection: ``frame_idx`` int, ``x1, y1, x2, y2`` float
            pixels, ``track_id`` str, ``cluster_id`` str (``"unknown"`` = not clustered).
        iou_min: least IoU for a match, in (0, 1].
        max_gap: longest gap in frames between two detections of a track that is interpolated.

    Returns:
        One row per GT face, in :func:`read_ground_truth` order: ``frame_idx``, ``x1..y2``,
        ``identity``, ``scored`` (identity != "ignore"), ``matched`` (bool), ``track_id`` and
        ``cluster_id`` (str, None when unmatched), ``iou`` (float64, NaN when unmatched).

    Raises:
        InputError: either table is malformed. ConfigError: ``iou_min`` or ``max_gap`` out of range.
    """
    cfg = MatchConfig(iou_min=iou_min, max_gap=max_gap)
    gt = read_ground_truth(gt)
    pred = _read_predictions(pred)
    n = len(gt)
    track_of = np.full(n, None, dtype=object)
    cluster_of = np.full(n, None, dtype=object)
    iou_of = np.full(n, np.nan)

    frames = np.unique(gt["frame_idx"].to_numpy())
    cand = _track_boxes_at(pred, frames, cfg.max_gap)
    if len(cand):
        gt_frames = gt["frame_idx"].to_numpy()
        gt_boxes = gt[_BOX].to_numpy(dtype=np.float64)
        cand_frames = cand["frame_idx"].to_numpy(dtype=np.int64)
        order = np.argsort(cand_frames, kind="stable")
        cand = cand.iloc[order].reset_index(drop=True)
        cand_frames = cand_frames[order]
        cand_boxes = cand[_BOX].to_numpy(dtype=np.float64)
        cand_tracks = cand["track_id"].to_numpy()
        cand_clusters = cand["cluster_id"].to_numpy()
        # gt is sorted by frame, so each frame's rows are one contiguous slice in both tables.
        g_lo = np.searchsorted(gt_frames, frames, side="left")
        g_hi = np.searchsorted(gt_frames, frames, side="right")
        c_lo = np.searchsorted(cand_frames, frames, side="left")
        c_hi = np.searchsorted(cand_frames, frames, side="right")
        for gl, gh, cl, ch in zip(g_lo, g_hi, c_lo, c_hi, strict=True):
            if ch == cl:
                continue
            iou = box_iou(gt_boxes[gl:gh], cand_boxes[cl:ch])
            allowed = iou >= cfg.iou_min
            if not allowed.any():
                continue
            # Forbidden pairs get a cost no set of allowed pairs can beat, then are dropped.
            cost = np.where(allowed, 1.0 - iou, float(iou.size + 1))
            rows, cols = linear_sum_assignment(cost)
            ok = allowed[rows, cols]
            rows, cols = rows[ok], cols[ok]
            track_of[gl + rows] = cand_tracks[cl + cols]
            cluster_of[gl + rows] = cand_clusters[cl + cols]
            iou_of[gl + rows] = iou[rows, cols]

    out = gt[["frame_idx", *_BOX, "identity"]].copy()
    out["scored"] = out["identity"] != IGNORE
    out["matched"] = ~np.isnan(iou_of)
    # Object dtype keeps None for unmatched faces; pandas' str dtype would turn it into NaN.
    out["track_id"] = pd.Series(track_of, index=out.index, dtype=object)
    out["cluster_id"] = pd.Series(cluster_of, index=out.index, dtype=object)
    out["iou"] = iou_of
    return out


# ---------------------------------------------------------------------------------------------
# Metrics on label arrays


@dataclass(frozen=True)
class _Contingency:
    """Sparse contingency table of two labelings of the same n items."""

    n: int
    nij: np.ndarray  # (k,) int64 counts of the non-empty (true, pred) cells
    rows: np.ndarray  # (k,) true-class index of each cell
    cols: np.ndarray  # (k,) predicted-cluster index of each cell
    a: np.ndarray  # (n_classes,) items per true class
    b: np.ndarray  # (n_clusters,) items per predicted cluster


def _encode(labels: Iterable[Hashable]) -> np.ndarray:
    """Map any hashable labels to int64 codes 0..k-1 by first appearance."""
    codes: dict[Hashable, int] = {}
    return np.fromiter((codes.setdefault(v, len(codes)) for v in labels), dtype=np.int64)


def _contingency(true: Iterable[Hashable], pred: Iterable[Hashable]) -> _Contingency:
    t, p = _encode(true), _encode(pred)
    if t.shape != p.shape:
        raise InputError(f"label arrays differ in length: {t.size} true labels, {p.size} predicted labels")
    n_pred = int(p.max()) + 1 if p.size else 0
    cells, nij = np.unique(t * n_pred + p, return_counts=True)
    return _Contingency(
        n=int(t.size),
        nij=nij.astype(np.int64),
        rows=cells // max(n_pred, 1),
        cols=cells % max(n_pred, 1),
        a=np.bincount(t).astype(np.int64),
        b=np.bincount(p).astype(np.int64),
    )


def weighted_cluster_purity(true: Iterable[Hashable], pred: Iterable[Hashable]) -> float:
    """WCP: sum over predicted clusters of their majority identity's count, over all items.

    Args:
        true: (N,) true identities, any hashable values. pred: (N,) predicted cluster labels.

    Returns:
        WCP in (0, 1]; NaN for N = 0. Every item its own cluster scores 1.0, so read it with
        :func:`cluster_ratio`.
    """
    c = _contingency(true, pred)
    if c.n == 0:
        return math.nan
    majority = np.zeros(c.b.size, dtype=np.int64)
    np.maximum.at(majority, c.cols, c.nij)
    return float(majority.sum() / c.n)


def _entropy(counts: np.ndarray, n: int) -> float:
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def nmi(true: Iterable[Hashable], pred: Iterable[Hashable]) -> float:
    """Normalised mutual information, arithmetic-mean normalisation: MI / ((H(true) + H(pred)) / 2).

    Follows sklearn's ``normalized_mutual_info_score`` (default ``average_method="arithmetic"``),
    including its limit cases: 1.0 when both labelings are a single cluster, 0.0 when MI is 0.

    Args:
        true: (N,) true identities. pred: (N,) predicted cluster labels. Any hashable values.

    Returns:
        NMI in [0, 1]; NaN for N = 0 (sklearn returns 1.0 there; an empty evaluation is not perfect).
    """
    c = _contingency(true, pred)
    if c.n == 0:
        return math.nan
    if c.a.size == c.b.size == 1:
        return 1.0
    pij = c.nij / c.n
    mi = float((pij * (np.log(c.nij * float(c.n)) - np.log(c.a[c.rows] * c.b[c.cols].astype(float)))).sum())
    # Rounding can leave a tiny non-zero MI for independent labelings.
    if abs(mi) < 1e-12:
        return 0.0
    denom = (_entropy(c.a, c.n) + _entropy(c.b, c.n)) / 2.0
    return float(min(max(mi / denom, 0.0), 1.0))


def _pairs(x: np.ndarray) -> int:
    """Number of unordered pairs inside groups of the given sizes, as an exact Python int."""
    return sum(int(v) * (int(v) - 1) // 2 for v in x)


def ari(true: Iterable[Hashable], pred: Iterable[Hashable]) -> float:
    """Adjusted Rand index (Hubert & Arabie), from the pair confusion matrix as sklearn computes it.

    Args:
        true: (N,) true identities. pred: (N,) predicted cluster labels. Any hashable values.

    Returns:
        ARI in [-1, 1] (0 = chance, 1 = identical partitions); 1.0 when no pair is split or joined
        wrongly (e.g. N = 1); NaN for N = 0.
    """
    c = _contingency(true, pred)
    if c.n == 0:
        return math.nan
    # Exact integer arithmetic: pair counts reach N^2 and products N^4.
    tp = _pairs(c.nij)
    same_true, same_pred = _pairs(c.a), _pairs(c.b)
    fn = same_true - tp  # same identity, different clusters
    fp = same_pred - tp  # same cluster, different identities
    tn = c.n * (c.n - 1) // 2 - tp - fn - fp
    if fn == 0 and fp == 0:
        return 1.0
    return float(2 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def bcubed(true: Iterable[Hashable], pred: Iterable[Hashable]) -> tuple[float, float, float]:
    """B-cubed precision, recall and F (Bagga & Baldwin), per item then averaged over items.

    For item i with cluster C(i) and class L(i): precision_i = |C(i) ∩ L(i)| / |C(i)| and
    recall_i = |C(i) ∩ L(i)| / |L(i)|; F = 2PR / (P + R) of the averages.

    Args:
        true: (N,) true identities. pred: (N,) predicted cluster labels. Any hashable values.

    Returns:
        (precision, recall, f), each in (0, 1]; all NaN for N = 0.
    """
    c = _contingency(true, pred)
    if c.n == 0:
        return (math.nan, math.nan, math.nan)
    # The nij items of a cell each score nij / |cluster| and nij / |class|.
    sq = c.nij.astype(np.float64) ** 2
    precision = float((sq / c.b[c.cols]).sum() / c.n)
    recall = float((sq / c.a[c.rows]).sum() / c.n)
    f = 2 * precision * recall / (precision + recall)
    return (precision, recall, float(f))


def cluster_ratio(true: Iterable[Hashable], pred: Iterable[Hashable]) -> float:
    """Number of predicted clusters over number of true identities among the given items.

    Only clusters holding at least one of the given (scored) items count, so clusters made of
    unlabelled faces do not inflate it. 1.0 is ideal; > 1 means over-segmentation.

    Args:
        true: (N,) true identities. pred: (N,) predicted cluster labels. Any hashable values.

    Returns:
        The ratio; NaN for N = 0.
    """
    c = _contingency(true, pred)
    if c.n == 0:
        return math.nan
    return float(c.b.size / c.a.size)


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class EvalReport:
    """Scores of one prediction against one ground truth.

    Face sets: *scored* GT faces have identity != "ignore"; *matched* are scored faces matched to a
    track; *clustered* are matched faces whose cluster is not "unknown". Metrics with no faces to
    work on are NaN.

    Attributes:
        n_gt: scored GT faces.
        n_matched: scored faces matched to a track.
        n_clustered: matched faces not "unknown"; every clustering metric below uses these.
        coverage: n_matched / n_gt.
        unknown_rate: matched faces in cluster "unknown" / n_matched.
        wcp, nmi, ari: weighted cluster purity, NMI (arithmetic), adjusted Rand index.
        bcubed_precision, bcubed_recall, bcubed_f: per-face B-cubed.
        n_pred_clusters: clusters holding at least one clustered face.
        n_true_identities: identities among the clustered faces (identities never matched show up
            in coverage, not here).
        cluster_ratio: n_pred_clusters / n_true_identities.
        track_wcp: WCP with each track as one item labelled by the majority identity of its
            clustered faces and grouped by its (majority) cluster; insensitive to track length.
        n_tracks: tracks holding at least one clustered face.
    """

    n_gt: int
    n_matched: int
    n_clustered: int
    coverage: float
    unknown_rate: float
    wcp: float
    nmi: float
    ari: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    n_pred_clusters: int
    n_true_identities: int
    cluster_ratio: float
    track_wcp: float
    n_tracks: int

    def to_dict(self) -> dict[str, int | float]:
        """Return the fields as a plain dict (JSON-ready; NaN stays float NaN)."""
        return dataclasses.asdict(self)


def _majority_per_group(groups: np.ndarray, values: np.ndarray) -> pd.Series:
    """Most frequent value per group, indexed by group; ties go to the smallest value so the
    result does not depend on row order."""
    counts = pd.DataFrame({"g": groups, "v": values}).value_counts().rename("n").reset_index()
    counts = counts.sort_values(["g", "n", "v"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("g").set_index("g")["v"]


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def evaluate(
    gt: pd.DataFrame,
    pred: pd.DataFrame,
    iou_min: float = MatchConfig.iou_min,
    max_gap: int = MatchConfig.max_gap,
) -> EvalReport:
    """Match ``pred`` to ``gt`` (see :func:`match_faces`) and score the clustering.

    Args:
        gt: ground-truth faces (columns of :func:`read_ground_truth`) of one video.
        pred: predicted faces of the same video (columns of :func:`match_faces`).
        iou_min, max_gap: matching settings, see :class:`MatchConfig`.

    Returns:
        An :class:`EvalReport`; clustering metrics use matched, scored, non-"unknown" faces.
    """
    m = match_faces(gt, pred, iou_min=iou_min, max_gap=max_gap)
    scored = m[m["scored"]]
    matched = scored[scored["matched"]]
    clustered = matched[matched["cluster_id"] != UNKNOWN]
    true = clustered["identity"].to_numpy()
    labels = clustered["cluster_id"].to_numpy()
    precision, recall, f = bcubed(true, labels)

    tracks = clustered["track_id"].to_numpy()
    track_identity = _majority_per_group(tracks, true)
    track_cluster = _majority_per_group(tracks, labels).reindex(track_identity.index)
    return EvalReport(
        n_gt=len(scored),
        n_matched=len(matched),
        n_clustered=len(clustered),
        coverage=_ratio(len(matched), len(scored)),
        unknown_rate=_ratio(len(matched) - len(clustered), len(matched)),
        wcp=weighted_cluster_purity(true, labels),
        nmi=nmi(true, labels),
        ari=ari(true, labels),
        bcubed_precision=precision,
        bcubed_recall=recall,
        bcubed_f=f,
        n_pred_clusters=int(pd.unique(labels).size),
        n_true_identities=int(pd.unique(true).size),
        cluster_ratio=cluster_ratio(true, labels),
        track_wcp=weighted_cluster_purity(track_identity, track_cluster),
        n_tracks=len(track_identity),
    )


def format_report(r: EvalReport) -> str:
    """Render ``r`` as an aligned two-column text table, one metric per line (no trailing newline)."""
    rows: list[tuple[str, str]] = []
    for name, value in r.to_dict().items():
        # Floats (NaN included, printed "nan") get fixed decimals so the column lines up.
        rows.append((name, f"{value:.4f}" if isinstance(value, float) else str(value)))
    key_w = max(len(k) for k, _ in rows)
    val_w = max(len(v) for _, v in rows)
    return "\n".join(f"{k:<{key_w}}  {v:>{val_w}}" for k, v in rows)
