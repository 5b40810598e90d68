"""Shot boundary detection on decoded video, chunk merging and shot bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from vcn.errors import ConfigError, InputError
from vcn.media.shots import ShotConfig, ShotDetector, merge_cuts, shot_index, shots_from_cuts
from vcn.media.video import ChunkConfig, iter_decoded, iter_frames, plan_chunks, probe


def detect(path: str, start: int, end: int, cfg: ShotConfig | None = None) -> np.ndarray:
    detector = ShotDetector(cfg or ShotConfig())
    for idx, frame in iter_frames(path, start, end):
        detector.push(idx, frame)
    return detector.cuts()


def test_finds_the_hard_cuts_of_the_synthetic_clip(synthetic_video):
    cuts = detect(synthetic_video.path, 0, synthetic_video.n_frames)
    assert cuts.dtype == np.int64
    assert len(cuts) == len(synthetic_video.cuts)
    assert np.all(np.abs(cuts - np.asarray(synthetic_video.cuts)) <= 1), cuts


def test_downscaling_keeps_the_cuts(synthetic_video):
    """640 px frames scored at 160 px and at full size give the same cuts as the 320 px default."""
    default = detect(synthetic_video.path, 0, synthetic_video.n_frames)
    for width in (160, 640):
        assert np.array_equal(detect(synthetic_video.path, 0, synthetic_video.n_frames,
                                     ShotConfig(analysis_width=width)), default)


def detect_decoder_scaled(path: str, start: int, end: int) -> np.ndarray:
    """Cuts as ``process_chunk`` finds them: frames scaled to the analysis size by the decoder."""
    detector = ShotDetector(ShotConfig())
    for idx, frame in iter_decoded(path, start, end, threads=1):
        detector.push(idx, frame.small(*detector.analysis_size(frame.width, frame.height)))
    return detector.cuts()


def test_decoder_scaled_frames_give_the_same_cuts(synthetic_video, dev_data):
    for path in (synthetic_video.path, str(dev_data / "short_hamilton_clip.mp4")):
        n = probe(path).n_frames
        assert np.array_equal(detect_decoder_scaled(path, 0, n), detect(path, 0, n))


def test_analysis_size_keeps_the_aspect_and_never_enlarges():
    detector = ShotDetector(ShotConfig(analysis_width=320))
    assert detector.analysis_size(1280, 720) == (320, 180)
    assert detector.analysis_size(1920, 800) == (320, 133)
    assert detector.analysis_size(200, 100) == (200, 100)


def test_a_single_moving_shot_has_no_cut(frame_maker):
    detector = ShotDetector(ShotConfig())
    for idx, frame in enumerate(frame_maker.frames(60, cuts=())):
        detector.push(idx, frame)
    assert detector.cuts().tolist() == []


def test_flash_shorter_than_min_scene_len_is_not_two_cuts(frame_maker):
    """A 3-frame insert inside a shot is one event, not a shot of 3 frames."""
    detector = ShotDetector(ShotConfig(min_scene_len=15))
    frames = list(frame_maker.frames(80, cuts=(40,)))
    flash = list(frame_maker.frames(80, cuts=(0,)))  # frames of another shot
    for idx in range(80):
        detector.push(idx, flash[idx] if 20 <= idx < 23 else frames[idx])
    cuts = detector.cuts()
    assert 40 in cuts
    assert len(cuts[(cuts >= 20) & (cuts <= 23)]) <= 1


@pytest.mark.parametrize("chunk_seconds", [2.2, 2.6, 3.2, 4.0])
def test_chunked_detection_merges_to_the_single_pass_result(synthetic_video, chunk_seconds):
    """Chunks of 55-100 frames with 30 frames of overlap: cuts fall in overlaps, just after a
    chunk's read_start, and deep inside chunks."""
    cfg = ChunkConfig(chunk_seconds=chunk_seconds, overlap_frames=30)
    cfg.check_covers(ShotConfig().min_scene_len)
    info = probe(synthetic_video.path)
    chunks = plan_chunks(info.n_frames, info.fps, cfg)
    assert len(chunks) >= 2
    per_chunk = [detect(synthetic_video.path, c.read_start, c.end) for c in chunks]
    single = detect(synthetic_video.path, 0, info.n_frames)
    assert np.array_equal(merge_cuts(per_chunk), single)
    # Each cut is found by the chunk that owns its frame, so ownership alone also reproduces it.
    owned = [c[(c >= ch.start) & (c < ch.end)] for c, ch in zip(per_chunk, chunks, strict=True)]
    assert np.array_equal(np.concatenate(owned), single)


def test_hamilton_clip_cuts(dev_data):
    path = str(dev_data / "short_hamilton_clip.mp4")
    cuts = detect(path, 0, probe(path).n_frames)
    assert len(cuts) == 3
    assert np.all(np.abs(cuts - np.array([20, 82, 211])) <= 1), cuts
    shots = shots_from_cuts(cuts, 275)
    assert shots[0, 0] == 0 and shots[-1, 1] == 275 and len(shots) == 4


def test_hamilton_clip_in_two_chunks(dev_data):
    path = str(dev_data / "short_hamilton_clip.mp4")
    chunks = plan_chunks(275, 29.97, ChunkConfig(chunk_seconds=3.0, overlap_frames=30))
    per_chunk = [detect(path, c.read_start, c.end) for c in chunks]
    assert np.array_equal(merge_cuts(per_chunk), detect(path, 0, 275))


def test_first_frame_pushed_is_never_a_cut(frame_maker):
    detector = ShotDetector(ShotConfig(min_scene_len=0))
    for idx, frame in zip(range(100, 110), frame_maker.frames(10, cuts=(5,)), strict=True):
        detector.push(idx, frame)
    assert detector.cuts().tolist() == [105]


def test_push_checks_its_input(frame_maker):
    frame = frame_maker.frame(0, 0)
    detector = ShotDetector(ShotConfig())
    detector.push(5, frame)
    with pytest.raises(InputError, match="increasing"):
        detector.push(5, frame)
    with pytest.raises(InputError, match="uint8"):
        detector.push(6, frame.astype(np.float32))
    with pytest.raises(InputError, match="uint8"):
        detector.push(6, frame[:, :, 0])
    detector.push(9, frame)  # gaps are fine
    assert detector.cuts().tolist() == []
    assert detector.cuts().tolist() == []
    with pytest.raises(InputError, match="after cuts"):
        detector.push(10, frame)


def test_empty_detector_has_no_cuts():
    assert ShotDetector(ShotConfig()).cuts().shape == (0,)


def test_shot_config_validation():
    with pytest.raises(ConfigError):
        ShotConfig(threshold=0)
    with pytest.raises(ConfigError):
        ShotConfig(min_scene_len=-1)
    with pytest.raises(ConfigError):
        ShotConfig(analysis_width=8)


def test_merge_cuts_collapses_near_duplicates():
    merged = merge_cuts([np.array([10, 50, 90]), np.array([51, 90, 130]), np.array([52, 200])])
    assert merged.dtype == np.int64
    assert merged.tolist() == [10, 50, 90, 130, 200]
    assert merge_cuts([np.array([50, 52]), np.array([52])], tolerance=2).tolist() == [52]
    assert merge_cuts([np.array([50, 53])], tolerance=2).tolist() == [50, 53]
    assert merge_cuts([np.array([5, 1])], tolerance=0).tolist() == [1, 5]
    assert merge_cuts([]).tolist() == []
    assert merge_cuts([np.array([], dtype=np.int64)]).tolist() == []


def test_shots_from_cuts_tiles_the_video():
    shots = shots_from_cuts(np.array([82, 20, 211]), 275)
    assert shots.dtype == np.int64 and shots.shape == (4, 2)
    assert shots.tolist() == [[0, 20], [20, 82], [82, 211], [211, 275]]
    assert shots_from_cuts(np.array([0, 275, 300]), 275).tolist() == [[0, 275]]
    assert shots_from_cuts(np.array([], dtype=np.int64), 10).tolist() == [[0, 10]]
    assert shots_from_cuts(np.array([3]), 0).shape == (0, 2)


def test_shot_index_numbers_frames_by_shot():
    cuts = np.array([20, 82, 211])
    frames = np.array([0, 19, 20, 81, 82, 210, 211, 274])
    index = shot_index(frames, cuts)
    assert index.dtype == np.int64
    assert index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    shots = shots_from_cuts(cuts, 275)
    for f, s in zip(frames, index, strict=True):
        assert shots[s, 0] <= f < shots[s, 1]
