"""vcn.method.videoclusternet, vcn.method.views, vcn.report.summary and vcn.config on small cases."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from vcn.config import PipelineConfig
from vcn.errors import CheckpointError, ConfigError
from vcn.method.grouping import match_groups
from vcn.method.matching import sample_rows
from vcn.method.videoclusternet import Checkpoint, MethodConfig, cluster, final_round
from vcn.method.view_bank import ViewBank
from vcn.method.views import ViewConfig, strong_views
from vcn.report.summary import cluster_names, summarize_clusters, summarize_tracks


def test_sample_rows_caps_and_spreads_each_track():
    index = np.array([0] * 10 + [1] * 2 + [2] * 5)
    rows = sample_rows(index, 3)
    assert list(rows[index[rows] == 0]) == [0, 4, 9], "first, middle and last face of a long track"
    assert list(rows[index[rows] == 1]) == [10, 11]
    assert len(rows) == 3 + 2 + 3


def test_strong_views_keep_clean_first_and_are_seeded():
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, size=(3, 112, 112, 3), dtype=np.uint8)
    cfg = ViewConfig(n_views=4)
    a, b = strong_views(crops, cfg, seed=7), strong_views(crops, cfg, seed=7)
    assert a.shape == (3, 4, 112, 112, 3)
    np.testing.assert_array_equal(a[:, 0], crops)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 1], crops), "augmented views differ from the crop"
    with pytest.raises(ConfigError):
        ViewConfig(n_views=1)


def test_shot_degradations_do_what_they_say():
    import cv2

    # A sharp mid-grey checkerboard: detail to lose, room to darken.
    board = (np.indices((112, 112)).sum(axis=0) // 4 % 2 * 120 + 60).astype(np.uint8)
    crops = np.repeat(board[None, :, :, None], 3, axis=3)
    plain = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "brightness": (1.0, 1.0), "contrast": (1.0, 1.0),
             "saturation": (1.0, 1.0), "grey_p": 0.0, "blur_p": 0.0, "n_views": 3}

    def sharpness(img: np.ndarray) -> float:
        return float(cv2.Laplacian(img[..., 0].astype(np.float32), cv2.CV_32F).var())

    low = strong_views(crops, ViewConfig(**plain, low_res_p=1.0, low_res_px=(20, 20)), seed=1)
    assert sharpness(low[0, 1]) < 0.2 * sharpness(crops[0])
    dark = strong_views(crops, ViewConfig(**plain, dark_p=1.0, dark_gamma=(2.0, 2.0)), seed=1)
    assert dark[0, 1].mean() < 0.6 * crops[0].mean()
    noisy = strong_views(crops, ViewConfig(**plain, noise_p=1.0, noise_sigma=(8.0, 8.0)), seed=1)
    residual = min(np.std(noisy[0, 1].astype(float) - ref) for ref in (crops[0], crops[0][:, ::-1]))
    assert 5.0 < residual < 11.0  # the view may be mirrored
    # Off by default: the matching views do not change when the degradations exist.
    np.testing.assert_array_equal(strong_views(crops, ViewConfig(**plain), seed=1),
                                  strong_views(crops, ViewConfig(**plain, low_res_p=0.0), seed=1))
    with pytest.raises(ConfigError, match="noise_p"):
        ViewConfig(noise_p=1.5)


def test_summaries_and_names():
    track = np.array(["b", "a", "a", "b", "c"], object)
    frame = np.array([10, 0, 5, 20, 7])
    shot = np.array([1, 0, 0, 1, 0])
    emb = np.eye(4, dtype=np.float32)[[0, 1, 1, 0, 2]]
    s = summarize_tracks(track, frame, shot, emb, np.array([1, 2, 4, 3, 5], np.float32))
    assert list(s.track_id) == ["a", "c", "b"], "tracks in order of first frame"
    assert list(s.first_frame) == [0, 7, 10] and list(s.last_frame) == [5, 7, 20]
    assert list(s.n_faces) == [2, 1, 2] and list(s.shot_id) == [0, 0, 1]
    assert list(s.quality) == [3.0, 5.0, 2.0], "median quality per track"
    names = cluster_names(np.array([1, -1, 1]), s.n_faces)
    assert list(names) == ["person_000", "unknown", "person_000"]
    rows = s.index_of(track)
    c = summarize_clusters(s, names, np.arange(5), rows, emb, fps=10.0, step_frames=5)
    assert list(c.cluster_id) == ["person_000", "unknown"]
    assert list(c.n_tracks) == [2, 1] and list(c.n_faces) == [4, 1]
    # Screen time: track a spans 0..5 (+5) = 1.0 s, track b 10..20 (+5) = 1.5 s.
    assert c.screen_time_s[0] == pytest.approx(2.5)


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = PipelineConfig.from_dict({"ingest": {"stride": 2}, "method": {"views": {"n_views": 3}}})
    assert cfg.ingest.stride == 2 and cfg.method.views.n_views == 3
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="strid"):
        PipelineConfig.from_dict({"ingest": {"strid": 2}})
    with pytest.raises(ConfigError, match="overlap"):
        PipelineConfig.from_dict({"ingest": {"chunk": {"overlap_frames": 2}}})
    assert PipelineConfig().stages() == ("tracks", "finetune", "clusters")  # vcn is the default
    hac = PipelineConfig.from_dict({"cluster": {"method": "hac"}})
    assert hac.stages() == ("tracks", "clusters")
    # A section overrides its parent's default, whose other fields stay: matching stays mutual
    # and the ingest's embeddings bfloat16, not the defaults of their own classes.
    part = PipelineConfig.from_dict({"method": {"matching": {"max_items": 64}},
                                     "ingest": {"embedding": {"batch_size": 8}}})
    assert part.method.matching == replace(PipelineConfig().method.matching, max_items=64)
    assert part.ingest.embedding == replace(PipelineConfig().ingest.embedding, batch_size=8)
    assert PipelineConfig().method.matching.mutual and PipelineConfig().ingest.embedding.precision == "bf16"


def test_match_groups_are_the_components_of_the_matches():
    groups = match_groups(np.array([[3, 1], [4, 5], [1, 0]]), 7)
    assert groups.tolist() == [0, 0, 1, 0, 2, 2, 3]  # numbered by first appearance
    assert match_groups(None, 3).tolist() == [0, 1, 2]
    assert match_groups(np.zeros((0, 2), np.int64), 1).tolist() == [0]


def test_method_config_votes_by_majority():
    with pytest.raises(ConfigError, match="match_draws"):
        MethodConfig(match_draws=0)
    assert [MethodConfig(match_draws=d).quorum for d in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert PipelineConfig.from_dict({"method": {"match_draws": 5}}).method.quorum == 3


def test_final_round_follows_the_cycle_of_repeated_matches():
    a, b, c = {(0, 1)}, {(0, 1), (2, 3)}, {(2, 3)}
    assert final_round([a], c, 2) is None  # new matches: another round runs
    assert final_round([a], a, 2) == 0  # stable: the round just run is the outcome
    # a, b, a, b, ...: round 2 would train on a again, as round 0 did
    assert final_round([a, b], a, 2) == 0
    assert final_round([a, b], a, 3) == 1
    # a, b, c, b, c, ...: period 2 from round 1
    assert final_round([a, b, c], b, 4) == 2
    assert final_round([a, b, c], b, 5) == 1


def test_checkpoint_round_trip(tmp_path):
    from vcn.storage.checkpoints import load_checkpoint, save_checkpoint

    ck = Checkpoint(round=1, matches=np.array([[0, 2]]), state=None, history=[{"round": 0}], done=False)
    digest = save_checkpoint(tmp_path / "c.pt", ck)
    back = load_checkpoint(tmp_path / "c.pt")
    assert digest and back.round == 1 and back.history == [{"round": 0}]
    np.testing.assert_array_equal(back.matches, ck.matches)
    assert load_checkpoint(tmp_path / "none.pt") is None
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"bad\.pt: not a checkpoint vcn can read .*--from finetune"):
        load_checkpoint(tmp_path / "bad.pt")


# -- stage 4 (vcn.method.videoclusternet.cluster) on synthetic view banks ----------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def bank_of(centres: np.ndarray, quality: list[float], seed: int, faces: int = 6, face_spread: float = 0.1,
            view_spread: float = 0.3, n_views: int = 4) -> tuple[ViewBank, np.ndarray]:
    """A view bank of ``faces`` faces per track around each track's centre (T, D), view 0 the
    face itself, every face of track t scored ``quality[t]``; returns ``(bank, track_index)``.
    One draw of matching views, equal to the threshold views (``state=None`` reads them as they
    are)."""
    rng = np.random.default_rng(seed)
    dim = centres.shape[1]
    index = np.repeat(np.arange(len(centres)), faces)
    x = unit(centres[index] + face_spread * rng.normal(size=(len(index), dim)) / np.sqrt(dim))
    views = unit(x[:, None] + view_spread * rng.normal(size=(len(x), n_views, dim)) / np.sqrt(dim))
    views[:, 0] = x
    views = views.astype(np.float16)
    return ViewBank(views[None], views, np.asarray(quality, np.float32)[index]), index


def two_people(seed: int = 0, tracks: int = 4) -> np.ndarray:
    """(2 * tracks, 64) track centres: ``tracks`` shots of person 0, then of person 1."""
    rng = np.random.default_rng(seed)
    people = unit(rng.normal(size=(2, 64)))
    return unit(np.repeat(people, tracks, axis=0) + 0.4 * rng.normal(size=(2 * tracks, 64)) / 8)


def test_cluster_gives_two_well_separated_people_two_clusters():
    bank, index = bank_of(two_people(), [0.5] * 8, seed=1, view_spread=0.6)
    res = cluster(bank, None, index, MethodConfig())
    assert res.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # numbered by first appearance
    assert not res.unknown.any() and np.isfinite(res.thresholds).all()
    assert res.quality.shape == (8,) and res.result is not None and res.result.rounds[-1].links == 0


def test_cluster_never_puts_a_cannot_linked_pair_in_one_cluster():
    bank, index = bank_of(two_people(), [0.5] * 8, seed=1, view_spread=0.6)
    for cannot in ([[0, 1]], [[1, 0], [2, 3]], [[6, 4]]):
        labels = cluster(bank, None, index, MethodConfig(), cannot_link=np.array(cannot)).labels
        assert all(labels[a] != labels[b] for a, b in cannot), (cannot, labels)
        assert len(np.unique(labels[:4])) <= 1 + len(cannot) and labels[0] not in labels[4:]
    # Nor when a match starts one side in a group with another track of that person.
    labels = cluster(bank, None, index, MethodConfig(), cannot_link=np.array([[2, 1]]),
                     matches=np.array([[0, 1]])).labels
    assert labels[0] == labels[1] != labels[2]


def test_cluster_sets_low_quality_tracks_aside_as_unknown():
    quality = [0.5, 0.51, 0.49, 0.5, 0.1, 0.5, 0.52, np.nan]  # track 4 far below, track 7 unscored
    bank, index = bank_of(two_people(), quality, seed=1, view_spread=0.6)
    res = cluster(bank, None, index, MethodConfig())
    assert np.flatnonzero(res.unknown).tolist() == [4, 7]
    assert res.labels.tolist() == [0, 0, 0, 0, -1, 1, 1, -1]
    assert np.isnan(res.thresholds[[4, 7]]).all() and np.isfinite(res.thresholds[[0, 5]]).all()
    # Every track unknown: nothing to cluster.
    none = cluster(ViewBank(bank.match, bank.thresh, np.full_like(bank.quality, np.nan)), None, index,
                   MethodConfig())
    assert none.unknown.all() and (none.labels == -1).all() and none.result is None


def test_cluster_lends_the_matched_groups_spread_to_lone_tracks_within_their_quality():
    # Person C in two matched shots (a wide group); person A in two lone shots, nearer each other
    # than C's shots are but beyond what each one's own views span; a lone stranger B.
    rng = np.random.default_rng(0)
    c, e, a, f, b = unit(rng.normal(size=(5, 64)))
    centres = np.stack([c, unit(c + 0.9 * e), a, unit(a + 0.5 * f), b])
    matched = np.array([[0, 1]])
    bank, index = bank_of(centres, [0.5] * 5, seed=1)
    res = cluster(bank, None, index, MethodConfig(), matches=matched)
    assert res.labels.tolist() == [0, 0, 1, 1, 2]
    assert (res.lifted, res.held) == (3, 0)  # A's two shots and B: B stays apart, far from all
    assert np.allclose(res.thresholds, res.thresholds[0])
    # A's shots below the quality of every matched track keep their own thresholds, and split.
    bank, index = bank_of(centres, [0.5, 0.5, 0.45, 0.45, 0.5], seed=1)
    res = cluster(bank, None, index, MethodConfig(), matches=matched)
    assert res.labels.tolist() == [0, 0, 1, 2, 3]
    assert (res.lifted, res.held) == (1, 2) and (res.thresholds[2:4] < res.thresholds[0]).all()
    assert not res.unknown.any()
