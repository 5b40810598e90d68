"""Probing, chunk planning, frame-accurate decoding and content ids on real encoded videos."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vcn.errors import (
    ConfigError,
    CorruptVideoError,
    InputError,
    NoVideoStreamError,
    TruncatedVideoError,
    VideoOpenError,
)
from vcn.media.video import (
    MAX_BAD_PACKETS,
    Chunk,
    ChunkConfig,
    DecodeStats,
    VideoInfo,
    check_decoded,
    content_id,
    decode_warning,
    iter_decoded,
    iter_frames,
    missing_allowance,
    plan_chunks,
    probe,
)

# Each container stores timestamps differently: MP4 whose first frame is at 1.48 s, MKV in
# milliseconds starting at 0.2 s, MPEG-TS starting at 1.4 s on a 90 kHz clock.
CONTAINERS = [("plain.mp4", 0), ("late_start.mp4", 37), ("late_start.mkv", 5), ("stream.ts", 0)]


@pytest.fixture(scope="module", params=CONTAINERS, ids=[name for name, _ in CONTAINERS])
def coded_video(request, make_video, frame_maker, synthetic_video):
    """The synthetic clip re-encoded in another container; frame i still shows code i."""
    name, start_pts = request.param
    path = make_video(name, frame_maker.frames(), 25, start_pts=start_pts)
    return path, synthetic_video


def opencv_frames(path: str) -> list[np.ndarray]:
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def assert_same_frame(frame: np.ndarray, reference: list[np.ndarray], idx: int) -> None:
    """``frame`` is OpenCV's frame ``idx``: nearly identical, and no neighbour fits better."""
    def distance(j: int) -> float:
        return float(np.abs(frame.astype(np.int16) - reference[j].astype(np.int16)).mean())

    own = distance(idx)
    neighbours = [distance(j) for j in range(max(0, idx - 2), min(len(reference), idx + 3)) if j != idx]
    assert own < 1.0, f"frame {idx} differs from OpenCV's by {own:.2f} on average"
    assert all(own <= d for d in neighbours), f"frame {idx} matches a neighbour better: {own} vs {neighbours}"


# --- probe ---------------------------------------------------------------------------------------

def test_probe_reads_synthetic_clip(synthetic_video):
    info = probe(synthetic_video.path)
    assert info == VideoInfo(path=synthetic_video.path, fps=25.0, n_frames=130, width=640, height=360,
                             duration_s=5.2, codec="h264", declared_frames=130, declared_exact=True)


def test_probe_counts_frames_like_opencv_in_every_container(coded_video):
    path, clip = coded_video
    info = probe(path)
    assert info.n_frames == clip.n_frames == len(opencv_frames(path))
    assert info.fps == pytest.approx(25.0)
    # MP4 declares a frame count; MKV and MPEG-TS a duration, from which the count is estimated.
    assert info.declared_frames == clip.n_frames
    assert info.declared_exact == path.endswith(".mp4")


def test_probe_one_frame_video_is_valid(make_video, frame_maker):
    path = make_video("one_frame.mp4", frame_maker.frames(1), 25)
    assert probe(path).n_frames == 1
    frames = list(iter_frames(path, 0, 10))
    assert [i for i, _ in frames] == [0]
    assert list(iter_frames(path, 1, 10)) == []


def test_probe_hamilton_clip(dev_data):
    info = probe(str(dev_data / "short_hamilton_clip.mp4"))
    assert (info.n_frames, info.width, info.height, info.codec) == (275, 640, 360, "h264")
    assert info.fps == pytest.approx(29.97)


def test_probe_missing_file(tmp_path):
    with pytest.raises(VideoOpenError, match="no such file"):
        probe(str(tmp_path / "absent.mp4"))


def test_probe_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoOpenError, match="empty"):
        probe(str(path))


def test_probe_text_file(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("face,frame\n1,2\n" * 100)
    with pytest.raises(VideoOpenError, match="not a readable video"):
        probe(str(path))


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_probe_still_image_renamed_mp4_is_not_a_video(tmp_path, ext):
    image = np.full((48, 64, 3), 120, np.uint8)
    path = tmp_path / "photo.mp4"
    path.write_bytes(cv2.imencode(ext, image)[1].tobytes())
    with pytest.raises(VideoOpenError, match="still image"):
        probe(str(path))


def test_probe_truncated_mp4_without_moov(tmp_path, synthetic_video):
    data = Path(synthetic_video.path).read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(VideoOpenError, match="truncated"):
        probe(str(path))


def test_probe_truncated_faststart_mp4(tmp_path, frame_maker):
    """Index up front, media cut off: the header still claims every frame, decoding proves not."""
    path = tmp_path / "faststart.mp4"
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for i, image in enumerate(frame_maker.frames(60)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert probe(str(path)).n_frames == 60
    data = path.read_bytes()
    for fraction in (0.5, 0.7):
        path.write_bytes(data[: int(len(data) * fraction)])
        # The header still claims 60 frames; far fewer decode: probe names both counts and the fix.
        expected = r"faststart\.mp4: truncated: only \d+ of the 60 frames the container declares decode"
        with pytest.raises(TruncatedVideoError, match=expected):
            probe(str(path))
        # Decoding what is there still numbers the frames from 0 and stops at the cut.
        got = [i for i, _ in iter_frames(str(path), 0, 60)]
        assert got == list(range(len(got))) and 0 < len(got) < 60


@pytest.mark.parametrize("name", ["cut.avi", "cut.mkv"])
def test_probe_truncated_file_with_its_header_intact(tmp_path, make_video, frame_maker, name):
    """`head -c` of an AVI (header frame count) or a Matroska file (duration tag up front): the
    container still declares the whole clip; the frames that decode are compared with it."""
    whole = Path(make_video(f"whole_{name}", frame_maker.frames(), 25))
    assert probe(str(whole)).n_frames == 130
    path = tmp_path / name
    path.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.4)])
    with pytest.raises(TruncatedVideoError, match=rf"{name}: truncated: only \d+ of the 130 frames"):
        probe(str(path))


def corrupt_packets(src: str, dest: Path, first: int, count: int) -> list[int]:
    """Copy ``src`` (an H.264 MP4) to ``dest`` with ``count`` non-key packets from the ``first``-th
    one made undecodable (their NAL length overwritten); return those packets' frame indices."""
    with av.open(src) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        order = sorted(p.pts for p in packets)
        hit = [p for p in packets if not p.is_keyframe][first : first + count]
        spots = [(p.pos, order.index(p.pts)) for p in hit]
    data = bytearray(Path(src).read_bytes())
    for pos, _ in spots:
        data[pos : pos + 4] = b"\xff\xff\xff\xff"
    dest.write_bytes(bytes(data))
    return sorted(idx for _, idx in spots)


def test_a_few_broken_packets_are_skipped_and_counted(tmp_path, make_video, frame_maker):
    clip = make_video("to_break.mp4", frame_maker.frames(), 25)
    path = tmp_path / "three_bad.mp4"
    broken = corrupt_packets(clip, path, 40, 3)
    stats = DecodeStats()
    got = [(i, frame_maker.read_code(f)) for i, f in iter_frames(str(path), 0, 130, stats)]
    # The broken packets' frames are the gaps; every frame keeps its own index (placed by timestamp
    # after the gap), so the frames after it are not shifted. (Within the damaged GOP the decoder
    # may conceal a frame that refers to a lost one with the picture of another.)
    assert sorted(set(range(130)) - {i for i, _ in got}) == broken
    next_keyframe = (max(broken) // 12 + 1) * 12
    assert all(i == code for i, code in got if i < min(broken) or i >= next_keyframe)
    assert stats.bad_packets() == 3 and stats.frames == 127 and "Invalid data" in stats.error
    assert probe(str(path)).n_frames == 130
    check_decoded(str(path), stats.frames, 130, 25.0, bad_packets=3)  # within the budget: passes
    warning = decode_warning(str(path), stats.frames, 130, 3)
    assert warning.startswith(f"{path}: 3 undecodable packet(s) skipped, 3 of 130 frames missing")


def test_many_broken_packets_fail_the_title(tmp_path, make_video, frame_maker):
    clip = make_video("to_break.mp4", frame_maker.frames(), 25)
    path = tmp_path / "many_bad.mp4"
    corrupt_packets(clip, path, 30, MAX_BAD_PACKETS + 5)
    stats = DecodeStats()
    n = sum(1 for _ in iter_frames(str(path), 0, 130, stats))
    assert stats.bad_packets() == MAX_BAD_PACKETS + 5
    expected = rf"many_bad\.mp4: damaged: {MAX_BAD_PACKETS + 5} packets fail to decode.*Invalid data"
    with pytest.raises(CorruptVideoError, match=expected):
        check_decoded(str(path), n, 130, 25.0, bad_packets=stats.bad_packets(), error=stats.error)


def test_missing_allowance_is_small():
    assert missing_allowance(130, 25.0) == 25  # 1 s
    assert missing_allowance(172_800, 24.0) == 1728  # 1 % of a 2-hour film
    assert missing_allowance(130, 25.0, exact=False) == 50  # a count estimated from a duration
    check_decoded("x.mp4", 105, 130, 25.0)
    with pytest.raises(TruncatedVideoError, match=r"x\.mp4: truncated: only 104 of the 130 frames"):
        check_decoded("x.mp4", 104, 130, 25.0)


@pytest.mark.parametrize(("codec", "fmt", "sample_fmt", "ext"), [("aac", "mp4", "fltp", ".m4a"),
                                                                  ("mp2", "mp2", "s16", ".mp2")])
def test_probe_audio_only(tmp_path, codec, fmt, sample_fmt, ext):
    path = tmp_path / f"speech{ext}"
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=44100)
        samples = stream.codec_context.frame_size or 1152
        dtype = np.float32 if sample_fmt == "fltp" else np.int16
        for i in range(20):
            silence = np.zeros((1, samples), dtype)
            frame = av.AudioFrame.from_ndarray(silence, format=sample_fmt, layout="mono")
            frame.sample_rate, frame.pts = 44100, i * samples
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        probe(str(path))


def test_probe_directory(tmp_path):
    with pytest.raises(VideoOpenError, match="directory"):
        probe(str(tmp_path))


# --- iter_frames ---------------------------------------------------------------------------------

RANGES = [(0, 5), (11, 14), (12, 13), (13, 40), (59, 75), (97, 103), (125, 130), (128, 200)]


def test_iter_frames_is_frame_accurate_in_every_container(coded_video):
    """Seeks land on the right frame with B-frames, 12-frame GOPs and late starts."""
    path, clip = coded_video
    for start, end in RANGES:
        got = list(iter_frames(path, start, end))
        expected = list(range(start, min(end, clip.n_frames)))
        assert [i for i, _ in got] == expected, (start, end)
        assert [clip.read_code(f) for _, f in got] == expected, (start, end)


def test_iter_frames_matches_opencv_decode_index(synthetic_video):
    reference = opencv_frames(synthetic_video.path)
    for start, end in [(0, 130), *RANGES]:
        for idx, frame in iter_frames(synthetic_video.path, start, end):
            assert_same_frame(frame, reference, idx)


def test_iter_frames_matches_opencv_on_hamilton(dev_data):
    """A real clip with a late first timestamp (0.85 s) and B-frames."""
    path = str(dev_data / "short_hamilton_clip.mp4")
    reference = opencv_frames(path)
    assert len(reference) == 275
    for start, end in [(0, 40), (19, 23), (81, 84), (150, 160), (210, 213), (270, 300)]:
        got = list(iter_frames(path, start, end))
        assert [i for i, _ in got] == list(range(start, min(end, 275)))
        for idx, frame in got:
            assert_same_frame(frame, reference, idx)


def test_iter_frames_yields_bgr_uint8(synthetic_video, frame_maker):
    (idx, frame), = iter_frames(synthetic_video.path, 40, 41)
    assert idx == 40
    assert frame.dtype == np.uint8 and frame.shape == (360, 640, 3) and frame.flags.c_contiguous
    # frame 40 lies in shot 1; its colour field was drawn in BGR, so channels must not be swapped
    expected = frame_maker.frame(40, 1)
    assert np.abs(frame[200:300, 200:400].astype(int) - expected[200:300, 200:400]).mean() < 4


@pytest.mark.parametrize("threads", [0, 1, 2])
def test_iter_decoded_gives_the_frames_of_iter_frames(synthetic_video, threads):
    expected = list(iter_frames(synthetic_video.path, 35, 60))
    decoded = iter_decoded(synthetic_video.path, 35, 60, threads=threads)
    got = [(i, f.bgr(), f.small(320, 180)) for i, f in decoded]
    assert [i for i, _, _ in got] == [i for i, _ in expected]
    for (_, full, small), (_, frame) in zip(got, expected, strict=True):
        assert np.array_equal(full, frame)
        # the decoder's area scaling is OpenCV's INTER_AREA to within a grey level or two
        area = cv2.resize(frame, (320, 180), interpolation=cv2.INTER_AREA)
        assert small.dtype == np.uint8 and small.shape == (180, 320, 3)
        assert np.abs(small.astype(int) - area).mean() < 2.5


def test_iter_decoded_small_at_full_size_is_the_frame(synthetic_video):
    (_, frame), = iter_decoded(synthetic_video.path, 40, 41)
    assert frame.small(frame.width, frame.height) is frame.bgr()
    with pytest.raises(InputError, match="threads"):
        iter_decoded(synthetic_video.path, 0, 5, threads=-1)


def test_iter_frames_stops_quietly_at_end_of_stream(synthetic_video):
    assert [i for i, _ in iter_frames(synthetic_video.path, 120, 10_000)] == list(range(120, 130))
    assert list(iter_frames(synthetic_video.path, 500, 600)) == []
    assert list(iter_frames(synthetic_video.path, 7, 7)) == []


def test_iter_frames_checks_arguments_when_called(synthetic_video, tmp_path):
    with pytest.raises(InputError):
        iter_frames(synthetic_video.path, 10, 5)
    with pytest.raises(InputError):
        iter_frames(synthetic_video.path, -1, 5)
    with pytest.raises(VideoOpenError, match="no such file"):
        iter_frames(str(tmp_path / "absent.mp4"), 0, 5)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_iter_frames_closes_the_file_when_abandoned(synthetic_video):
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    frames = iter_frames(synthetic_video.path, 50, 100)
    next(frames)
    assert open_files() > before
    frames.close()
    assert open_files() == before
    frames = iter_frames(synthetic_video.path, 0, 100)
    next(frames)
    del frames
    gc.collect()
    assert open_files() == before


# --- plan_chunks ---------------------------------------------------------------------------------

def test_plan_chunks_tiles_the_video_with_overlap():
    chunks = plan_chunks(10_000, 25.0, ChunkConfig(chunk_seconds=60.0, overlap_frames=30))
    assert [c.start for c in chunks] == [0, 1500, 3000, 4500, 6000, 7500, 9000]
    assert chunks[-1].end == 10_000
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))
    assert [c.index for c in chunks] == list(range(7))
    assert chunks[0].read_start == 0
    assert all(c.read_start == c.start - 30 for c in chunks[1:])


def test_plan_chunks_merges_a_tiny_tail():
    cfg = ChunkConfig(chunk_seconds=4.0, overlap_frames=10)  # 100 frames at 25 fps
    assert [(c.start, c.end) for c in plan_chunks(320, 25.0, cfg)] == [(0, 100), (100, 200), (200, 320)]
    assert [(c.start, c.end) for c in plan_chunks(330, 25.0, cfg)] == [(0, 100), (100, 200), (200, 300),
                                                                        (300, 330)]


def test_plan_chunks_short_and_empty_videos():
    cfg = ChunkConfig()
    assert plan_chunks(275, 29.97, cfg) == [Chunk(index=0, start=0, end=275, read_start=0)]
    assert plan_chunks(1, 25.0, cfg) == [Chunk(index=0, start=0, end=1, read_start=0)]
    assert plan_chunks(0, 25.0, cfg) == []
    # a tail under a quarter chunk is not split off even from a barely-longer-than-one-chunk video
    assert len(plan_chunks(1600, 25.0, cfg)) == 1


def test_plan_chunks_rejects_bad_arguments():
    with pytest.raises(InputError):
        plan_chunks(-1, 25.0, ChunkConfig())
    with pytest.raises(InputError):
        plan_chunks(100, 0.0, ChunkConfig())


def test_chunk_config_validation():
    with pytest.raises(ConfigError):
        ChunkConfig(chunk_seconds=0)
    with pytest.raises(ConfigError):
        ChunkConfig(overlap_frames=-1)
    ChunkConfig(overlap_frames=15).check_covers(15)
    with pytest.raises(ConfigError, match="min_scene_len"):
        ChunkConfig(overlap_frames=10).check_covers(15)


# --- content_id ----------------------------------------------------------------------------------

def test_content_id_is_stable_and_content_based(synthetic_video, tmp_path):
    cid = content_id(synthetic_video.path)
    assert len(cid) == 16 and int(cid, 16) >= 0
    copy = tmp_path / "renamed copy.mp4"
    shutil.copy(synthetic_video.path, copy)
    assert content_id(str(copy)) == cid
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert content_id(str(copy)) != cid


def test_content_id_samples_large_files(tmp_path):
    size = 64 * 1024 * 1024  # 64 MiB: 32 samples of 256 KiB, one every ~2 MiB
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(size)
    base = content_id(str(path))

    def with_byte_at(offset: int) -> str:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\x01")
        changed = content_id(str(path))
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(b"\x00")
        return changed

    assert with_byte_at(0) != base  # first sample
    assert with_byte_at(size - 1) != base  # last sample
    assert with_byte_at(3 * 1024 * 1024) == base  # between samples: a sampled fingerprint
    with open(path, "ab") as f:
        f.write(b"\x00")
    assert content_id(str(path)) != base  # the size is hashed too


def test_content_id_missing_file(tmp_path):
    with pytest.raises(VideoOpenError, match="no such file"):
        content_id(str(tmp_path / "absent.mp4"))
