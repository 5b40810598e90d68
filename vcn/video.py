"""Video probing, the chunk plan, frame-accurate decoding and the content id.

``frame_idx`` everywhere in vcn is the 0-based decode index: the number of frames an OpenCV
``cv2.VideoCapture`` would have returned before this one. Decoding uses PyAV. A seek lands on
the keyframe before the target, the first frame decoded there is placed by its timestamp
(relative to the first frame of the stream), and every later frame is counted from it, exactly
as OpenCV counts. Counting rather than converting each timestamp also survives the bogus
timestamps of B-frames packed in AVI files.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from vcn.errors import ConfigError, InputError, NoVideoStreamError, VideoOpenError

# Single-image demuxers: FFmpeg opens a JPEG or PNG as a one-frame "video", but a still is not
# footage and almost always means a wrong path or a mislabelled file.
_IMAGE_FORMATS = ("image2", "image2pipe")
# A seek that lands after its target is retried this many frames earlier, doubling each time.
_FIRST_BACKOFF_FRAMES = 16
# A tail chunk shorter than this fraction of a chunk joins the chunk before it.
_MIN_TAIL_FRACTION = 0.25
_ID_SAMPLES = 32
_ID_SAMPLE_BYTES = 256 * 1024


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file.

    ``n_frames`` is the number of decodable frames, see :func:`probe`; ``duration_s`` is
    ``n_frames / fps``; ``codec`` is the FFmpeg decoder name (``"h264"``, ``"mpeg4"``, ...).
    """

    path: str
    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    codec: str


@dataclass(frozen=True)
class ChunkConfig:
    """How a video is cut into independently processed chunks.

    chunk_seconds: length of the frames a chunk owns, in seconds (default 60 s: long enough that
        the overlap costs little, short enough to spread a film over workers).
    overlap_frames: frames decoded before a chunk's own start (default 30). Shots and tracks are
        joined across the boundary through this overlap, so it must be at least the shot
        detector's ``min_scene_len`` (see :meth:`check_covers`).
    """

    chunk_seconds: float = 60.0
    overlap_frames: int = 30

    def __post_init__(self) -> None:
        if not (math.isfinite(self.chunk_seconds) and self.chunk_seconds > 0):
            raise ConfigError(f"ChunkConfig.chunk_seconds={self.chunk_seconds}: must be a positive number")
        if self.overlap_frames < 0:
            raise ConfigError(f"ChunkConfig.overlap_frames={self.overlap_frames}: must be >= 0")

    def check_covers(self, min_scene_len: int) -> None:
        """Raise ConfigError unless the overlap is at least ``min_scene_len`` frames.

        The shot detector cannot report a cut within ``min_scene_len`` frames of the first frame
        it sees, so a shorter overlap would lose cuts just after a chunk's ``read_start``.
        """
        if self.overlap_frames < min_scene_len:
            raise ConfigError(
                f"ChunkConfig.overlap_frames={self.overlap_frames} is below ShotConfig.min_scene_len="
                f"{min_scene_len}: raise overlap_frames to at least {min_scene_len}"
            )


@dataclass(frozen=True)
class Chunk:
    """A chunk owns frames ``[start, end)`` and decodes ``[read_start, end)``."""

    index: int
    start: int
    end: int
    read_start: int


class _Timeline:
    """Maps stream timestamps to frame indices, with the stream's first frame as index 0."""

    def __init__(self, stream: av.video.stream.VideoStream, origin_pts: int) -> None:
        self.fps = _frame_rate(stream)
        self.time_base = Fraction(stream.time_base)
        self.origin_pts = origin_pts

    def index_of(self, pts: int) -> int:
        return round((pts - self.origin_pts) * self.time_base * self.fps)

    def pts_of(self, frame_idx: int) -> int:
        return self.origin_pts + math.floor(frame_idx / (self.fps * self.time_base))


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    raise VideoOpenError(f"{stream.container.name}: the video stream declares no frame rate")


@contextmanager
def _open_video(path: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and yield (container, its first real video stream), closing on exit."""
    if not os.path.exists(path):
        raise VideoOpenError(f"{path}: no such file; check the path")
    if os.path.isdir(path):
        raise VideoOpenError(f"{path}: is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise VideoOpenError(f"{path}: the file is empty (0 bytes); copy or download it again")
    try:
        container = av.open(path, mode="r")
    except av.FFmpegError as exc:
        raise VideoOpenError(
            f"{path}: not a readable video container, or truncated (e.g. an MP4 missing its moov "
            f"atom): {exc}. Re-download or re-mux the file (ffmpeg -i in -c copy out.mp4)"
        ) from exc
    with container:
        if container.format.name in _IMAGE_FORMATS or container.format.name.endswith("_pipe"):
            raise VideoOpenError(
                f"{path}: is a still image ({container.format.name}), not a video; pass a video file"
            )
        # Cover art in audio files shows up as a one-picture "video" stream; it is not footage.
        streams = [
            s for s in container.streams.video
            if not s.disposition & av.stream.Disposition.attached_pic and s.codec_context is not None
        ]
        if not streams:
            raise NoVideoStreamError(
                f"{path}: holds no video stream (streams: "
                f"{', '.join(s.type for s in container.streams) or 'none'}); pass a file with video"
            )
        stream = streams[0]
        # Frame threading decodes several frames at once; it is what makes 720p decode keep up.
        stream.thread_type = "AUTO"
        yield container, stream


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            path: str) -> Iterator[av.VideoFrame]:
    """Decoded frames of ``stream`` from the current position; FFmpeg errors become VcnErrors."""
    try:
        yield from container.decode(stream)
    except av.error.EOFError:
        return  # the decoder was already drained: nothing more to give
    except av.FFmpegError as exc:
        raise VideoOpenError(
            f"{path}: decoding failed, the file is truncated or damaged ({exc}); re-download it or "
            f"re-encode it with ffmpeg"
        ) from exc


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: str) -> tuple[av.VideoFrame, Iterator[av.VideoFrame]]:
    """The first decodable frame and the iterator that continues after it."""
    frames = _decode(container, stream, path)
    frame = next(frames, None)
    if frame is None:
        raise VideoOpenError(f"{path}: the video stream has no decodable frame; the file is damaged")
    return frame, frames


def _decode_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: str, timeline: _Timeline | None, target: int) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (frame_idx, frame) from a frame at or before ``target`` to the end of the stream.

    The container must be freshly opened (or at its start) when ``timeline`` is None: frames are
    then simply counted from 0.
    """
    if timeline is None or target <= 0:
        if timeline is not None:
            _rewind(container, path)
        yield from enumerate(_decode(container, stream, path))
        return
    backoff = 0
    while True:
        seek_idx = max(0, target - backoff)
        if seek_idx == 0:
            _rewind(container, path)
        else:
            _seek(container, stream, path, timeline.pts_of(seek_idx))
        frames = _decode(container, stream, path)
        first = next(frames, None)
        # A seek can land past its target (sparse index, damaged tail); retry from further back.
        if seek_idx == 0 or (first is not None and first.pts is not None
                             and timeline.index_of(first.pts) <= target):
            break
        backoff = max(2 * backoff, _FIRST_BACKOFF_FRAMES)
    if first is None:
        return
    first_idx = 0 if first.pts is None else max(0, timeline.index_of(first.pts))
    yield first_idx, first
    for offset, frame in enumerate(frames, start=1):
        yield first_idx + offset, frame


def _seek(container: av.container.InputContainer, stream: av.video.stream.VideoStream | None, path: str,
          pts: int) -> None:
    """Seek to the keyframe at or before ``pts`` (stream time base; av.time_base if no stream)."""
    try:
        container.seek(pts, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as exc:
        raise VideoOpenError(f"{path}: cannot seek ({exc}); re-mux the file to a seekable MP4") from exc


def _rewind(container: av.container.InputContainer, path: str) -> None:
    # Seeking to the first frame's own timestamp can land a whole GOP late (MPEG-TS seeks by
    # decode time) or one frame late (AVI); time 0 in the container clock precedes every frame.
    _seek(container, None, path, 0)


def probe(path: str) -> VideoInfo:
    """Read a video's frame rate, exact frame count, size and codec.

    ``n_frames`` is measured, not just read from the header: the last keyframe interval is
    decoded and its last frame placed by timestamp, the same way :func:`iter_frames` numbers
    frames. Where that interval starts comes from ``stream.frames`` when the container records
    it (MP4, AVI), else from ``duration * fps`` (MKV, MPEG-TS); the measurement then corrects
    either. Streams whose frames carry no timestamps (raw elementary streams) are decoded in full
    and counted. Decoding the tail also checks the file's end: a file cut inside a frame raises
    here rather than mid-run, and one cut between frames reports only the frames that decode.
    :func:`iter_frames` stops at the real end of the stream anyway.

    Raises VideoOpenError (missing, empty, unreadable, truncated, still image, undecodable) or
    NoVideoStreamError (e.g. audio only).
    """
    path = os.fspath(path)
    with _open_video(path) as (container, stream):
        fps = _frame_rate(stream)
        first, rest = _first_frame(container, stream, path)
        origin = first.pts
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        header = stream.frames if stream.frames and stream.frames > 0 else None
        duration = _duration_s(container, stream)
        estimate = header or (round(duration * fps) if duration else None)
        target = max(0, (estimate or 1) - 1)
        if origin is None or target == 0:
            # No timestamps to seek by, or too short to be worth a seek: count every frame.
            n_frames = 1 + sum(1 for _ in rest)
        else:
            n_frames = 0
            timeline = _Timeline(stream, origin)
            for idx, _ in _decode_from(container, stream, path, timeline, target):
                n_frames = max(n_frames, idx + 1)
    return VideoInfo(path=path, fps=float(fps), n_frames=n_frames, width=width, height=height,
                     duration_s=n_frames / float(fps), codec=codec)


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def plan_chunks(n_frames: int, fps: float, cfg: ChunkConfig) -> list[Chunk]:
    """Split ``[0, n_frames)`` into chunks of ``round(cfg.chunk_seconds * fps)`` frames.

    Chunks tile the video without gaps; each decodes ``cfg.overlap_frames`` extra frames before
    its start (``read_start = max(0, start - overlap_frames)``). The last chunk may be short, but
    a tail under a quarter chunk is merged into the previous chunk. A video shorter than one
    chunk is one chunk; ``n_frames == 0`` gives no chunks.
    """
    if n_frames < 0:
        raise InputError(f"plan_chunks: n_frames={n_frames} must be >= 0")
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"plan_chunks: fps={fps} must be a positive number; probe the video first")
    size = max(1, round(cfg.chunk_seconds * fps))
    if n_frames == 0:
        return []
    starts = list(range(0, n_frames, size))
    if len(starts) > 1 and n_frames - starts[-1] < _MIN_TAIL_FRACTION * size:
        starts.pop()
    ends = [*starts[1:], n_frames]
    return [
        Chunk(index=i, start=s, end=e, read_start=max(0, s - cfg.overlap_frames))
        for i, (s, e) in enumerate(zip(starts, ends, strict=True))
    ]


def iter_frames(path: str, start: int, end: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_idx, frame)`` for every frame with ``start <= frame_idx < end``.

    Frames are ``uint8 (H, W, 3)`` BGR; ``frame_idx`` is the 0-based decode index (OpenCV's).
    Decoding seeks to the keyframe before ``start`` and decodes forward, so any range costs at
    most one keyframe interval of extra decoding. It stops silently at the end of the stream if
    ``end`` lies beyond it. Arguments and the file are checked when called; the container is
    opened on the first ``next()`` and closed when the iterator is exhausted, closed or
    garbage-collected.
    """
    path = os.fspath(path)
    if start < 0 or end < start:
        raise InputError(f"iter_frames({path!r}): need 0 <= start <= end, got start={start}, end={end}")
    if not os.path.isfile(path):
        raise VideoOpenError(f"{path}: no such file; check the path")
    return _iter_frames(path, start, end)


def _iter_frames(path: str, start: int, end: int) -> Iterator[tuple[int, np.ndarray]]:
    if start == end:
        return
    with _open_video(path) as (container, stream):
        timeline = None
        if start > 0:
            first, _ = _first_frame(container, stream, path)
            if first.pts is None:
                # No timestamps to seek by: count from the very first frame.
                _rewind(container, path)
            else:
                timeline = _Timeline(stream, first.pts)
        for idx, frame in _decode_from(container, stream, path, timeline, start):
            if idx >= end:
                break
            if idx >= start:
                yield idx, frame.to_ndarray(format="bgr24")


def content_id(path: str) -> str:
    """A 16-hex-char id of the file's content, stable across renames and copies.

    This is a sampled fingerprint, not a full hash: blake2b over the file size and 32 evenly
    spaced 256 KiB samples (first and last included), or over the whole file when it is at most
    8 MiB. It reads at most 8 MiB, so it is fast on multi-GB films; two different encodes of a
    film differ in every sample, but an edit confined to bytes between samples goes unnoticed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoOpenError(f"{path}: no such file; check the path")
    size = os.path.getsize(path)
    digest = hashlib.blake2b(digest_size=8, person=b"vcn-cid-v1")
    digest.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= _ID_SAMPLES * _ID_SAMPLE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            for i in range(_ID_SAMPLES):
                f.seek(i * (size - _ID_SAMPLE_BYTES) // (_ID_SAMPLES - 1))
                digest.update(f.read(_ID_SAMPLE_BYTES))
    return digest.hexdigest()
