"""Tests of vcn.evaluation.metrics: label metrics against hand arithmetic, GT matching, the full report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vcn.errors import ConfigError, InputError
from vcn.evaluation.metrics import (
    EvalReport,
    MatchConfig,
    ari,
    bcubed,
    cluster_ratio,
    evaluate,
    format_report,
    match_faces,
    nmi,
    read_ground_truth,
    weighted_cluster_purity,
)
from vcn.faces.boxes import box_iou

HAMILTON_GT = Path("/work/shared/data/dev/hamilton.faces.csv")
LN2, LN3 = math.log(2), math.log(3)

# ---------------------------------------------------------------------------------------------
# Label metrics


def test_perfect_clustering_scores_one_under_any_relabelling() -> None:
    true = ["a", "a", "b", "b", "c"]
    pred = [7, 7, 3, 3, 9]
    assert weighted_cluster_purity(true, pred) == 1.0
    assert nmi(true, pred) == pytest.approx(1.0)
    assert ari(true, pred) == 1.0
    assert bcubed(true, pred) == pytest.approx((1.0, 1.0, 1.0))
    assert cluster_ratio(true, pred) == 1.0


def test_everything_in_one_cluster() -> None:
    true = ["a", "a", "a", "b", "b", "c"]
    pred = ["x"] * 6
    # WCP: the one cluster's majority is a (3 faces) -> 3/6.
    assert weighted_cluster_purity(true, pred) == 0.5
    # A single predicted cluster carries no information: MI = 0 -> NMI 0.
    assert nmi(true, pred) == 0.0
    # Pairs: 15 in all; same identity 3+1 = 4 = tp (all in the one cluster); fn = 0;
    # fp = 15 - 4 = 11; tn = 0. ARI = 2(tp*tn - fn*fp) / ((tp+fn)(fn+tn) + (tp+fp)(fp+tn))
    # = 2(0 - 0) / (4*0 + 15*11) = 0.
    assert ari(true, pred) == 0.0
    # B-cubed precision = sum n_ij^2 / |cluster| / N = (9 + 4 + 1) / 6 / 6 = 14/36; recall = 1;
    # F = 2 (14/36) / (14/36 + 1) = 28/50 = 0.56.
    p, r, f = bcubed(true, pred)
    assert p == pytest.approx(14 / 36)
    assert r == 1.0
    assert f == pytest.approx(0.56)
    assert cluster_ratio(true, pred) == pytest.approx(1 / 3)


def test_every_face_its_own_cluster_has_perfect_wcp_but_poor_recall_and_high_ratio() -> None:
    true = ["a", "a", "a", "b", "b", "c"]
    pred = [0, 1, 2, 3, 4, 5]
    # Singletons are trivially pure: this is why WCP alone cannot judge a clustering.
    assert weighted_cluster_purity(true, pred) == 1.0
    # Recall per face = 1/|class|: a's 3 x 1/3, b's 2 x 1/2, c 1 -> (1 + 1 + 1) / 6 = 0.5;
    # precision 1; F = 2 * 0.5 / 1.5 = 2/3.
    assert bcubed(true, pred) == pytest.approx((1.0, 0.5, 2 / 3))
    assert cluster_ratio(true, pred) == 2.0  # 6 clusters / 3 identities
    # tp = 0, same identity = 3 + 1 = 4 = fn, fp = 0, tn = 15 - 4 = 11:
    # ARI = 2(0*11 - 4*0) / (4*15 + 0*11) = 0.
    assert ari(true, pred) == 0.0
    # pred determines true, so MI = H(true) = -(1/2 ln 1/2 + 1/3 ln 1/3 + 1/6 ln 1/6) and
    # H(pred) = ln 6: NMI = 2 H(true) / (H(true) + ln 6) ~= 0.7216.
    h_true = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    assert nmi(true, pred) == pytest.approx(2 * h_true / (h_true + math.log(6)))
    assert nmi(true, pred) == pytest.approx(0.7216, abs=1e-4)


def test_known_nmi_and_ari_value() -> None:
    true = [0, 0, 0, 1, 1, 1]
    pred = [0, 0, 1, 1, 2, 2]
    # Cells: (0,0)=2, (0,1)=1, (1,1)=1, (1,2)=2.
    # Pairs: 15 in all; tp = C(2,2) + C(2,2) = 2; same identity = 3 + 3 = 6 -> fn = 4;
    # same cluster = 1 + 1 + 1 = 3 -> fp = 1; tn = 15 - 2 - 4 - 1 = 8.
    # ARI = 2(2*8 - 4*1) / ((2+4)(4+8) + (2+1)(1+8)) = 24 / (72 + 27) = 24/99.
    assert ari(true, pred) == pytest.approx(24 / 99)
    # H(true) = ln 2, H(pred) = ln 3. MI = 2 * (2/6) ln((2/6) / (1/2 * 1/3)) + 2 * (1/6) ln(1) =
    # (2/3) ln 2. NMI = (2/3) ln 2 / ((ln 2 + ln 3) / 2) = 4 ln 2 / (3 ln 6) ~= 0.51580.
    assert nmi(true, pred) == pytest.approx(4 * LN2 / (3 * math.log(6)))
    assert nmi(true, pred) == pytest.approx(0.51580, abs=1e-5)
    # WCP: cluster 0 -> 2 (id 0), 1 -> 1, 2 -> 2 (id 1): 5/6.
    assert weighted_cluster_purity(true, pred) == pytest.approx(5 / 6)


def test_nmi_is_not_chance_adjusted_where_ari_is() -> None:
    true = ["a", "a", "b", "b"]
    pred = ["x", "x", "x", "y"]
    # Pairs: 6; tp = 1 (a,a); same identity 2 -> fn = 1; same cluster C(3,2) = 3 -> fp = 2; tn = 2.
    # ARI = 2(1*2 - 1*2) / (...) = 0: no better than chance.
    assert ari(true, pred) == 0.0
    # MI = 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2 = 1.5 ln 2 - 0.75 ln 3;
    # H(true) = ln 2, H(pred) = 2 ln 2 - 0.75 ln 3.
    # NMI = (3 ln 2 - 1.5 ln 3) / (3 ln 2 - 0.75 ln 3) ~= 0.34371.
    expected = (3 * LN2 - 1.5 * LN3) / (3 * LN2 - 0.75 * LN3)
    assert nmi(true, pred) == pytest.approx(expected)
    assert nmi(true, pred) == pytest.approx(0.34371, abs=1e-5)
    # WCP (2 + 1) / 4; B-cubed P = (2/3 + 2/3 + 1/3 + 1) / 4 = 2/3, R = (1 + 1 + 1/2 + 1/2) / 4 = 3/4,
    # F = 2 (2/3)(3/4) / (2/3 + 3/4) = 12/17.
    assert weighted_cluster_purity(true, pred) == 0.75
    assert bcubed(true, pred) == pytest.approx((2 / 3, 3 / 4, 12 / 17))


def test_metrics_accept_any_hashable_labels_and_arrays() -> None:
    true = pd.Series([("p", 1), ("p", 1), ("q", 2)])
    pred = np.array([None, None, 3.5], dtype=object)
    assert weighted_cluster_purity(true, pred) == 1.0
    assert ari(true, pred) == 1.0
    assert cluster_ratio(true, pred) == 1.0


def test_limit_cases_with_no_pairs_or_no_entropy() -> None:
    # All singletons on both sides: no same-identity pair and no same-cluster pair, so tp = fn =
    # fp = 0 and the ARI formula is 0/0; the partitions agree, hence 1 (as sklearn).
    assert ari(["a", "b", "c"], [1, 2, 3]) == 1.0
    assert ari(["a"], ["x"]) == 1.0
    assert nmi(["a", "b", "c"], [1, 2, 3]) == pytest.approx(1.0)
    # One identity in one cluster: both entropies 0, a perfect match by sklearn's convention.
    assert nmi(["a", "a"], ["x", "x"]) == 1.0
    # One identity split in two: H(true) = 0 and MI = 0 -> 0.
    assert nmi(["a", "a"], ["x", "y"]) == 0.0


def test_metrics_on_empty_or_mismatched_input() -> None:
    assert math.isnan(weighted_cluster_purity([], []))
    assert math.isnan(nmi([], []))
    assert math.isnan(ari([], []))
    assert all(math.isnan(v) for v in bcubed([], []))
    assert math.isnan(cluster_ratio([], []))
    with pytest.raises(InputError, match="differ in length"):
        weighted_cluster_purity(["a", "b"], ["x"])


# ---------------------------------------------------------------------------------------------
# Matching


def _gt(rows: list[tuple[int, float, float, float, float, str]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["frame_idx", "x1", "y1", "x2", "y2", "identity"])
    df.insert(0, "video", "clip.mp4")
    return df


def _pred(rows: list[tuple[int, float, float, float, float, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["frame_idx", "x1", "y1", "x2", "y2", "track_id", "cluster_id"])


def test_box_iou_by_hand() -> None:
    # Overlap 5x10 = 50, union 100 + 100 - 50 = 150.
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30]]))
    assert iou.shape == (1, 2)
    assert iou[0] == pytest.approx([1 / 3, 0.0])


def test_interpolation_between_detections_and_iou_threshold() -> None:
    # Detected on frames 0 and 4 only (stride 4); the box moves 8 px right.
    pred = _pred([(0, 0, 0, 10, 10, "t1", "c1"), (4, 8, 0, 18, 10, "t1", "c1")])
    gt = _gt(
        [
            (2, 4, 0, 14, 10, "alice"),  # the interpolated box at frame 2 exactly: IoU 1
            (0, 1, 0, 11, 10, "alice"),  # exact detected frame: overlap 9x10, union 110 -> 0.818
        ]
    )
    m = match_faces(gt, pred)
    assert m["frame_idx"].tolist() == [0, 2]  # sorted by frame
    assert m["matched"].tolist() == [True, True]
    assert m["iou"].tolist() == pytest.approx([90 / 110, 1.0])
    assert m["track_id"].tolist() == ["t1", "t1"]
    assert m["cluster_id"].tolist() == ["c1", "c1"]

    # At frame 2 the track is at x 4..14; a GT box at x 0..10 overlaps 6x10 = 60 of 140: IoU 0.4286.
    gt_off = _gt([(2, 0, 0, 10, 10, "alice")])
    assert not match_faces(gt_off, pred)["matched"].item()
    loose = match_faces(gt_off, pred, iou_min=0.4)
    assert loose["matched"].item()
    assert loose["iou"].item() == pytest.approx(60 / 140)


def test_no_extrapolation_outside_track_span_or_across_long_gaps() -> None:
    pred = _pred(
        [(5, 0, 0, 10, 10, "t1", "c1"), (25, 0, 0, 10, 10, "t1", "c1"), (30, 0, 0, 10, 10, "t1", "c1")]
    )
    # Frames 0 and 35 are outside [5, 30]; frame 15 sits in a 20-frame gap; 27 in a 5-frame gap.
    gt = _gt([(f, 0, 0, 10, 10, "alice") for f in (0, 15, 27, 35)])
    assert match_faces(gt, pred, max_gap=10)["matched"].tolist() == [False, False, True, False]
    assert match_faces(gt, pred, max_gap=20)["matched"].tolist() == [False, True, True, False]
    # max_gap 0 keeps detected frames only.
    assert match_faces(_gt([(25, 0, 0, 10, 10, "a")]), pred, max_gap=0)["matched"].item()
    assert not match_faces(gt, pred, max_gap=0)["matched"].any()


def test_interpolated_face_takes_the_nearer_detections_cluster() -> None:
    pred = _pred([(0, 0, 0, 10, 10, "t1", "c1"), (6, 0, 0, 10, 10, "t1", "c2")])
    gt = _gt([(1, 0, 0, 10, 10, "a"), (3, 0, 0, 10, 10, "a"), (5, 0, 0, 10, 10, "a")])
    # 1 is nearer 0; 3 is a tie (earlier wins); 5 is nearer 6.
    assert match_faces(gt, pred)["cluster_id"].tolist() == ["c1", "c1", "c2"]


def test_each_track_matches_at_most_one_face_per_frame() -> None:
    pred = _pred([(0, 10, 0, 20, 10, "t1", "c1")])
    gt = _gt([(0, 11, 0, 21, 10, "bob"), (0, 10, 0, 20, 10, "alice")])
    m = match_faces(gt, pred)
    assert m["matched"].sum() == 1
    # The exact box (IoU 1) wins over the shifted one (IoU 9/11).
    assert m.loc[m["matched"], "identity"].item() == "alice"


def test_assignment_is_optimal_not_greedy() -> None:
    # 1-D overlaps (all boxes 10 px tall at the same y), IoUs by hand:
    #   A=[10,20] vs T1=[11,21]: 9/11 = 0.82;  A vs T2=[7,17]: 7/13 = 0.54
    #   B=[13,23] vs T1: 8/12 = 0.67;          B vs T2: 4/16 = 0.25 (< 0.5, forbidden)
    # Greedy takes A-T1 first and leaves B unmatched; the assignment matches both.
    pred = _pred([(0, 11, 0, 21, 10, "T1", "c1"), (0, 7, 0, 17, 10, "T2", "c2")])
    gt = _gt([(0, 10, 0, 20, 10, "A"), (0, 13, 0, 23, 10, "B")])
    m = match_faces(gt, pred).set_index("identity")
    assert m["matched"].all()
    assert m.loc["A", "track_id"] == "T2"
    assert m.loc["B", "track_id"] == "T1"
    assert m.loc["A", "iou"] == pytest.approx(7 / 13)
    assert m.loc["B", "iou"] == pytest.approx(8 / 12)


def test_ignore_rows_are_matched_but_not_scored() -> None:
    # The ignore face sits exactly on the only track, so it takes it from the scored face beside it.
    pred = _pred([(0, 10, 0, 20, 10, "t1", "c1")])
    gt = _gt([(0, 10, 0, 20, 10, "ignore"), (0, 11, 0, 21, 10, "alice")])
    m = match_faces(gt, pred).set_index("identity")
    assert m.loc["ignore", "matched"] and not m.loc["ignore", "scored"]
    assert not m.loc["alice", "matched"] and m.loc["alice", "scored"]
    assert m.loc["alice", "track_id"] is None and m.loc["alice", "cluster_id"] is None
    r = evaluate(gt, pred)
    assert r.n_gt == 1 and r.n_matched == 0 and r.coverage == 0.0
    assert math.isnan(r.wcp) and math.isnan(r.unknown_rate)


def _toy_episode() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detections on even frames 0..10 (stride 2); GT on frames 0, 5, 10 (every 5th)."""
    tracks = {  # track -> (box x1, cluster, frames detected)
        "tA": (10, "c1", range(0, 11, 2)),  # alice
        "tB": (100, "c1", range(8, 11, 2)),  # bob, short track, wrongly merged with alice
        "tC": (200, "unknown", range(0, 11, 2)),  # carol, excluded from clustering
        "tD": (300, "c2", range(0, 11, 2)),  # an ignore face
    }
    pred = _pred([(f, x, 10, x + 40, 50, t, c) for t, (x, c, frames) in tracks.items() for f in frames])
    gt_rows = [(f, 10, 10, 50, 50, "alice") for f in (0, 5, 10)]
    gt_rows += [(10, 100, 10, 140, 50, "bob")]
    gt_rows += [(f, 200, 10, 240, 50, "carol") for f in (0, 5, 10)]
    gt_rows += [(f, 300, 10, 340, 50, "ignore") for f in (0, 5, 10)]
    gt_rows += [(5, 400, 10, 440, 50, "dave")]  # never detected
    return _gt(gt_rows), pred


def test_evaluate_by_hand() -> None:
    gt, pred = _toy_episode()
    r = evaluate(gt, pred)
    # Scored: alice 3, bob 1, carol 3, dave 1 = 8; dave unmatched -> 7 matched; carol's 3 unknown.
    assert (r.n_gt, r.n_matched, r.n_clustered) == (8, 7, 4)
    assert r.coverage == pytest.approx(7 / 8)
    assert r.unknown_rate == pytest.approx(3 / 7)
    # Clustered faces: alice x3, bob x1, all in c1 (the ignore face's c2 does not count).
    assert (r.n_pred_clusters, r.n_true_identities) == (1, 2)
    assert r.cluster_ratio == 0.5
    assert r.wcp == 0.75  # majority alice: 3 / 4
    assert r.nmi == 0.0 and r.ari == 0.0  # a single cluster; ARI: tp 3, fn 0, fp 3, tn 0 -> 0
    # B-cubed P = (3^2 + 1^2) / 4 / 4 = 0.625, R = 1, F = 2 * 0.625 / 1.625 = 10/13.
    assert (r.bcubed_precision, r.bcubed_recall) == (0.625, 1.0)
    assert r.bcubed_f == pytest.approx(10 / 13)
    # One item per track: tA -> alice, tB -> bob, both in c1: track WCP 1/2 (face WCP was 3/4).
    assert (r.n_tracks, r.track_wcp) == (2, 0.5)

    # Giving bob his own cluster fixes everything it should.
    pred.loc[pred["track_id"] == "tB", "cluster_id"] = "c3"
    r = evaluate(gt, pred)
    assert (r.wcp, r.track_wcp, r.cluster_ratio, r.bcubed_f, r.ari) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert r.nmi == pytest.approx(1.0)


def test_report_dict_and_text() -> None:
    gt, pred = _toy_episode()
    r = evaluate(gt, pred)
    d = r.to_dict()
    assert list(d) == [f.name for f in EvalReport.__dataclass_fields__.values()]
    assert d["n_gt"] == 8 and d["wcp"] == 0.75
    text = format_report(r)
    lines = text.splitlines()
    assert len(lines) == len(d)
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert "wcp" in lines[5] and lines[5].endswith("0.7500")
    empty = format_report(evaluate(gt.iloc[:0], pred))
    assert "nan" in empty
    # No predictions at all: nothing matched, every clustering metric undefined.
    r = evaluate(gt, pred.iloc[:0])
    assert (r.n_gt, r.coverage, r.n_tracks) == (8, 0.0, 0)
    assert math.isnan(r.wcp) and math.isnan(r.bcubed_f)


def test_input_validation() -> None:
    gt, pred = _toy_episode()
    with pytest.raises(InputError, match="identity"):
        read_ground_truth(gt.drop(columns=["identity"]))
    with pytest.raises(InputError, match="x2, y2"):
        read_ground_truth(gt.drop(columns=["x2", "y2"]))
    with pytest.raises(InputError, match="cluster_id"):
        match_faces(gt, pred.drop(columns=["cluster_id"]))
    mixed = gt.copy()
    mixed.loc[0, "video"] = "other.mp4"
    with pytest.raises(InputError, match="mixes videos"):
        read_ground_truth(mixed)
    bad = gt.copy()
    bad["x1"] = bad["x1"].astype(object)
    bad.loc[2, "x1"] = "abc"
    with pytest.raises(InputError, match="x1"):
        read_ground_truth(bad)
    flipped = gt.copy()
    flipped.loc[1, "x2"] = 0
    with pytest.raises(InputError, match="x2 <= x1"):
        read_ground_truth(flipped)
    with pytest.raises(ConfigError, match="iou_min"):
        match_faces(gt, pred, iou_min=0.0)
    with pytest.raises(ConfigError, match="max_gap"):
        MatchConfig(max_gap=-1)
    # Track, video and dtype details are normalised.
    out = read_ground_truth(gt.astype({"frame_idx": "float64"}))
    assert out["frame_idx"].dtype == np.int64 and out["frame_idx"].is_monotonic_increasing


# ---------------------------------------------------------------------------------------------
# Real ground truth


@pytest.fixture
def hamilton() -> tuple[pd.DataFrame, pd.DataFrame]:
    if not HAMILTON_GT.exists():
        pytest.skip(f"{HAMILTON_GT} absent")
    gt = pd.read_csv(HAMILTON_GT)
    rng = np.random.default_rng(4)
    pred = gt.rename(columns={"track": "track_id", "identity": "cluster_id"})
    pred = pred[["frame_idx", "x1", "y1", "x2", "y2", "track_id", "cluster_id"]].copy()
    # A few pixels of jitter, as from another detector run, keeps every IoU well above 0.5.
    pred[["x1", "y1", "x2", "y2"]] += rng.uniform(-2, 2, size=(len(pred), 4))
    pred["track_id"] = pred["track_id"].astype(str)
    return gt, pred


def test_ground_truth_as_prediction_is_perfect(hamilton: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    gt, pred = hamilton
    r = evaluate(gt, pred)
    assert r.n_gt == (gt["identity"] != "ignore").sum() == 87
    assert r.coverage == 1.0 and r.unknown_rate == 0.0
    assert r.wcp == 1.0 and r.cluster_ratio == 1.0 and r.track_wcp == 1.0
    assert r.bcubed_f == 1.0 and r.ari == 1.0 and r.nmi == pytest.approx(1.0)
    assert r.n_true_identities == 6

    # One cluster per GT track instead: still pure, but over-segmented (6 people in 8 tracks).
    per_track = pred.assign(cluster_id=pred["track_id"])
    r = evaluate(gt, per_track)
    assert r.wcp == 1.0 and r.n_tracks == 8
    assert r.cluster_ratio == pytest.approx(8 / 6) and r.bcubed_recall < 0.9


def test_sparse_detections_are_interpolated_on_real_tracks(
    hamilton: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    gt, pred = hamilton
    # Keep detections on every 10th frame only: GT frames 5, 15, ... must come from interpolation.
    sparse = pred[pred["frame_idx"] % 10 == 0]
    m = match_faces(gt, sparse)
    spans = sparse.groupby("track_id")["frame_idx"].agg(["min", "max"])
    gt_track = gt["track"].astype(str)
    in_span = [
        t in spans.index and spans.loc[t, "min"] <= f <= spans.loc[t, "max"]
        for t, f in zip(gt_track, gt["frame_idx"], strict=True)
    ]
    # Faces inside their track's span are matched to that very track; the others cannot be.
    order = gt.sort_values("frame_idx", kind="stable").index
    assert m["matched"].tolist() == [in_span[i] for i in order]
    assert (m.loc[m["matched"], "track_id"].to_numpy() == gt_track[order][m["matched"].to_numpy()]).all()
    assert m["matched"].sum() == 105  # of 120; 15 faces lie before/after their track's 10-frame grid
    r = evaluate(gt, sparse)
    assert r.wcp == 1.0 and r.cluster_ratio == 1.0
