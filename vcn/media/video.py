"""Video probing, the chunk plan, frame-accurate decoding and the content id.

``frame_idx`` everywhere in vcn is the 0-based decode index: the number of frames an OpenCV
``cv2.VideoCapture`` would have returned before this one. Decoding uses PyAV. A seek lands on
the keyframe before the target, the first frame decoded there is placed by its timestamp
(relative to the first frame of the stream), and every later frame is counted from it, exactly
as OpenCV counts. Counting rather than converting each timestamp also survives the bogus
timestamps of B-frames packed in AVI files.

Damaged files: a packet that does not decode is skipped (the frames after it are placed by their
timestamps again) and counted in a :class:`DecodeStats`; :func:`check_decoded` turns too many of
them, or too few frames against what the container declares, into a
:class:`~vcn.errors.TruncatedVideoError` or :class:`~vcn.errors.CorruptVideoError`. :func:`probe`
compares the frames that decode with the container's declared count (an incomplete download
fails there, before any work); each chunk and the whole title check their own decoded frames.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from vcn.errors import (
    ConfigError,
    CorruptVideoError,
    InputError,
    NoVideoStreamError,
    TruncatedVideoError,
    VideoOpenError,
)

# Single-image demuxers: FFmpeg opens a JPEG or PNG as a one-frame "video", but a still is not
# footage and almost always means a wrong path or a mislabelled file.
_IMAGE_FORMATS = ("image2", "image2pipe")
# A seek that lands after its target is retried this many frames earlier, doubling each time.
_FIRST_BACKOFF_FRAMES = 16
# A tail chunk shorter than this fraction of a chunk joins the chunk before it.
_MIN_TAIL_FRACTION = 0.25
_ID_SAMPLES = 32
_ID_SAMPLE_BYTES = 256 * 1024
# Undecodable packets a title may hold: they are skipped with a warning; one more fails the title.
MAX_BAD_PACKETS = 10
# Frames a title (or a chunk) may lack against what is declared before it counts as truncated:
# MISSING_SECONDS of video or MISSING_FRACTION of it, whichever is more. A count estimated from a
# duration (MKV, MPEG-TS) gets twice the slack: durations round, and may cover the audio too.
MISSING_SECONDS = 1.0
MISSING_FRACTION = 0.01


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video file.

    ``n_frames`` is the number of decodable frames, see :func:`probe`; ``duration_s`` is
    ``n_frames / fps``; ``codec`` is the FFmpeg decoder name (``"h264"``, ``"mpeg4"``, ...).
    ``declared_frames``: the frame count the container declares (its header count, else its
    duration times ``fps``; None when it declares neither); ``declared_exact``: it is a header
    count, not an estimate from a duration.
    """

    path: str
    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    codec: str
    declared_frames: int | None = None
    declared_exact: bool = False


@dataclass
class DecodeStats:
    """What decoding met, filled in while :func:`iter_frames` runs.

    ``frames``: frames yielded; ``bad_at``: for each packet skipped because it did not decode,
    the index of the last frame decoded before it (-1: none yet); ``stopped_early``: the demuxer
    failed before the end of the stream (unreadable data: nothing after it can be read);
    ``error``: the first FFmpeg error met.
    """

    frames: int = 0
    bad_at: list[int] = field(default_factory=list)
    stopped_early: bool = False
    error: str | None = None

    def bad_packets(self, from_frame: int = -1) -> int:
        """Skipped packets met after frame ``from_frame - 1`` (all of them by default)."""
        return sum(i >= from_frame - 1 for i in self.bad_at)


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
def _open_video(path: str, threads: int = 0) -> Iterator[tuple[av.container.InputContainer,
                                                              av.video.stream.VideoStream]]:
    """Open ``path`` and yield (container, its first real video stream), closing on exit.
    ``threads``: decoder threads; 0 lets FFmpeg choose (one more than the machine's cores)."""
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
        # Frame threading decodes several frames at once, on the threads the caller grants.
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        yield container, stream


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
            stats: DecodeStats) -> Iterator[av.VideoFrame | None]:
    """Decoded frames of ``stream`` from the current position.

    A packet that fails to decode yields ``None`` in its place (the caller counts it and places
    the next frame by its timestamp); a demuxer error ends the stream. Both are noted in ``stats``.
    """
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.EOFError):
            return
        except av.FFmpegError as exc:  # unreadable data: nothing after it can be demuxed
            stats.stopped_early = True
            stats.error = stats.error or str(exc)
            return
        try:
            frames = packet.decode()
        except av.error.EOFError:
            return  # the decoder was already drained: nothing more to give
        except av.FFmpegError as exc:
            stats.error = stats.error or str(exc)
            yield None
            continue
        yield from frames


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: str, stats: DecodeStats) -> tuple[av.VideoFrame, Iterator[av.VideoFrame | None]]:
    """The first decodable frame and the iterator that continues after it."""
    frames = _decode(container, stream, stats)
    frame = next((f for f in frames if f is not None), None)
    if frame is None:
        detail = f" ({stats.error})" if stats.error else ""
        raise VideoOpenError(
            f"{path}: the video stream has no decodable frame{detail}; the file is truncated or damaged: "
            f"re-download it, or re-encode it with ffmpeg"
        )
    return frame, frames


def _numbered(first_idx: int, first: av.VideoFrame, rest: Iterator[av.VideoFrame | None],
              timeline: _Timeline | None, stats: DecodeStats) -> Iterator[tuple[int, av.VideoFrame]]:
    """Number ``first`` and the frames after it by counting. After a skipped packet, frames are
    placed by their timestamps (never before the frame that precedes them): the decoder's delay
    makes the lost frame show up as a gap a few frames later, not right after the bad packet."""
    idx = first_idx
    yield idx, first
    by_timestamp = False
    for frame in rest:
        if frame is None:
            stats.bad_at.append(idx)
            by_timestamp = timeline is not None
            continue
        idx += 1
        if by_timestamp and frame.pts is not None:
            idx = max(idx, timeline.index_of(frame.pts))
        yield idx, frame


def _decode_from(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 path: str, timeline: _Timeline | None, target: int,
                 stats: DecodeStats) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (frame_idx, frame) from a frame at or before ``target`` to the end of the stream.

    The container must be freshly opened (or at its start) when ``timeline`` is None: frames are
    then simply counted from 0.
    """
    if timeline is None or target <= 0:
        if timeline is not None:
            _rewind(container, path)
        frames = _decode(container, stream, stats)
        bad_before = 0
        for first in frames:
            if first is not None:
                break
            bad_before += 1
        else:
            stats.bad_at.extend([-1] * bad_before)
            return
        stats.bad_at.extend([-1] * bad_before)
        if timeline is None and first.pts is not None:
            timeline = _Timeline(stream, first.pts)
        yield from _numbered(0, first, frames, timeline, stats)
        return
    backoff = 0
    while True:
        seek_idx = max(0, target - backoff)
        if seek_idx == 0:
            _rewind(container, path)
        else:
            _seek(container, stream, path, timeline.pts_of(seek_idx))
        frames = _decode(container, stream, stats)
        first = next((f for f in frames if f is not None), None)
        # A seek can land past its target (sparse index, damaged tail); retry from further back.
        if seek_idx == 0 or (first is not None and first.pts is not None
                             and timeline.index_of(first.pts) <= target):
            break
        backoff = max(2 * backoff, _FIRST_BACKOFF_FRAMES)
    if first is None:
        return
    first_idx = 0 if first.pts is None else max(0, timeline.index_of(first.pts))
    yield from _numbered(first_idx, first, frames, timeline, stats)


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
    and counted. Decoding the tail also checks the file's end: the frames that decode are
    compared with the count the container declares (:func:`declared_frames`), so a file cut short
    (an interrupted download: the header still lists every frame) fails here, before any work,
    rather than being processed as if it were whole.

    Raises VideoOpenError (missing, empty, unreadable, still image, undecodable),
    TruncatedVideoError (fewer frames decode than the container declares, beyond
    :func:`missing_allowance`) or NoVideoStreamError (e.g. audio only).
    """
    path = os.fspath(path)
    stats = DecodeStats()
    with _open_video(path) as (container, stream):
        fps = _frame_rate(stream)
        declared, exact = declared_frames(container, stream, fps)
        first, rest = _first_frame(container, stream, path, stats)
        origin = first.pts
        width, height = stream.codec_context.width, stream.codec_context.height
        codec = stream.codec_context.name
        header = stream.frames if stream.frames and stream.frames > 0 else None
        duration = _duration_s(container, stream)
        estimate = header or (round(duration * fps) if duration else None)
        target = max(0, (estimate or 1) - 1)
        if origin is None or target == 0:
            # No timestamps to seek by, or too short to be worth a seek: count every frame.
            n_frames = 1 + sum(1 for f in rest if f is not None)
        else:
            n_frames = 0
            timeline = _Timeline(stream, origin)
            for idx, _ in _decode_from(container, stream, path, timeline, target, stats):
                n_frames = max(n_frames, idx + 1)
    if declared is not None:
        check_decoded(path, n_frames, declared, float(fps), exact=exact, error=stats.error)
    return VideoInfo(path=path, fps=float(fps), n_frames=n_frames, width=width, height=height,
                     duration_s=n_frames / float(fps), codec=codec, declared_frames=declared,
                     declared_exact=exact)


def declared_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    fps: Fraction) -> tuple[int | None, bool]:
    """The frame count the container declares for ``stream``, and whether it is exact.

    Exact: the header's frame count (MP4, MOV, AVI). Estimated (``round(length * fps)``) from the
    stream's duration (MPEG-TS), its ``DURATION`` tag (Matroska), else the container's duration,
    each less the stream's start. ``(None, False)`` when the container declares none of them.
    """
    if stream.frames and stream.frames > 0:
        return int(stream.frames), True
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    length = None
    if stream.duration:
        length = float(stream.duration * stream.time_base)
    elif tag := (stream.metadata or {}).get("DURATION"):
        with contextlib.suppress(ValueError):
            h, m, sec = tag.split(":")
            length = int(h) * 3600 + int(m) * 60 + float(sec) - start
    elif container.duration:
        begin = container.start_time / av.time_base if container.start_time is not None else start
        length = container.duration / av.time_base - begin
    if length is None or length <= 0:
        return None, False
    return round(length * float(fps)), False


def missing_allowance(expected: int, fps: float, exact: bool = True) -> int:
    """Frames a span of ``expected`` frames may lack before it counts as truncated:
    :data:`MISSING_SECONDS` of video or :data:`MISSING_FRACTION` of the span, whichever is more;
    twice that when ``expected`` is estimated from a duration rather than counted (``exact``)."""
    slack = 1.0 if exact else 2.0
    return max(math.ceil(slack * MISSING_SECONDS * fps), math.ceil(slack * MISSING_FRACTION * expected))


def check_decoded(path: str, decoded: int, expected: int, fps: float, *, exact: bool = True,
                  bad_packets: int = 0, error: str | None = None,
                  expected_is: str = "the container declares", span: str = "") -> None:
    """Raise when decoding ``path`` came up short.

    TruncatedVideoError when ``decoded`` falls short of ``expected`` (frames that ``expected_is``,
    e.g. "the container declares" or "in frames 0-1799") by more than :func:`missing_allowance`;
    CorruptVideoError when more than :data:`MAX_BAD_PACKETS` packets were skipped (``span``, e.g.
    ``" in frames 0-1799"``, says where). ``error``: the first FFmpeg error met. Fewer missing
    frames and skipped packets pass; the caller warns about them (:func:`decode_warning`).
    """
    detail = f" (first decoder error: {error})" if error else ""
    if expected - decoded > missing_allowance(expected, fps, exact):
        raise TruncatedVideoError(
            f"{path}: truncated: only {decoded} of the {expected} frames {expected_is} decode "
            f"({decoded / fps:.1f} s of {expected / fps:.1f} s){detail}. The file is incomplete (an "
            f"interrupted copy or download) or damaged: re-download it, or re-mux the part that plays "
            f"(ffmpeg -i IN -c copy OUT.mp4) and process that"
        )
    if bad_packets > MAX_BAD_PACKETS:
        raise CorruptVideoError(
            f"{path}: damaged: {bad_packets} packets{span} fail to decode, more than the "
            f"{MAX_BAD_PACKETS} vcn skips{detail}. Re-download the file, or re-encode it "
            f"(ffmpeg -i IN -c:v libx264 OUT.mp4)"
        )


def decode_warning(path: str, decoded: int, expected: int, bad_packets: int) -> str | None:
    """One line on the frames and packets a title lost within :func:`check_decoded`'s slack;
    None when it lost none."""
    missing = max(0, expected - decoded)
    if not missing and not bad_packets:
        return None
    return (f"{path}: {bad_packets} undecodable packet(s) skipped, {missing} of {expected} frames "
            f"missing; the faces on those frames are not in the output")


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


class DecodedFrame:
    """One decoded frame, converted to pixels on demand.

    :meth:`bgr` is the full-size ``uint8 (H, W, 3)`` BGR frame (converted once, then kept);
    :meth:`small` a downscaled BGR copy made by FFmpeg's scaler straight from the decoder's
    pixel format, which costs less than converting the full frame and resizing it. Both convert
    on ``threads`` threads (0: FFmpeg's choice, one per core).
    """

    __slots__ = ("_bgr", "_frame", "_threads")

    def __init__(self, frame: av.VideoFrame, threads: int = 0) -> None:
        self._frame, self._threads = frame, threads
        self._bgr: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self._frame.width

    @property
    def height(self) -> int:
        return self._frame.height

    def bgr(self) -> np.ndarray:
        """The frame, ``uint8 (H, W, 3)`` BGR."""
        if self._bgr is None:
            self._bgr = self._frame.to_ndarray(format="bgr24", threads=self._threads)
        return self._bgr

    def small(self, width: int, height: int) -> np.ndarray:
        """The frame scaled to ``width`` x ``height`` (area averaging), ``uint8`` BGR."""
        if (width, height) == (self.width, self.height):
            return self.bgr()
        return self._frame.reformat(width=width, height=height, format="bgr24", interpolation="AREA",
                                    threads=self._threads).to_ndarray()


def iter_frames(path: str, start: int, end: int,
                stats: DecodeStats | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_idx, frame)`` for every frame with ``start <= frame_idx < end``.

    Frames are ``uint8 (H, W, 3)`` BGR; ``frame_idx`` is the 0-based decode index (OpenCV's).
    Decoding seeks to the keyframe before ``start`` and decodes forward, so any range costs at
    most one keyframe interval of extra decoding. It stops silently at the end of the stream if
    ``end`` lies beyond it. A packet that fails to decode is skipped; ``stats``, when given,
    counts the frames yielded and the packets skipped (the caller checks them with
    :func:`check_decoded`). Arguments and the file are checked when called; the container is
    opened on the first ``next()`` and closed when the iterator is exhausted, closed or
    garbage-collected.
    """
    return ((idx, frame.bgr()) for idx, frame in iter_decoded(path, start, end, stats))


def iter_decoded(path: str, start: int, end: int, stats: DecodeStats | None = None,
                 threads: int = 0) -> Iterator[tuple[int, DecodedFrame]]:
    """:func:`iter_frames` yielding :class:`DecodedFrame` objects, for callers that need only
    some frames at full size. ``threads``: decoder and scaler threads (0: FFmpeg's choice, about
    one per core; a worker that owns one core of a shared machine passes 1)."""
    path = os.fspath(path)
    if start < 0 or end < start:
        raise InputError(f"iter_frames({path!r}): need 0 <= start <= end, got start={start}, end={end}")
    if threads < 0:
        raise InputError(f"iter_frames({path!r}): threads={threads} must be >= 0")
    if not os.path.isfile(path):
        raise VideoOpenError(f"{path}: no such file; check the path")
    return _iter_frames(path, start, end, DecodeStats() if stats is None else stats, threads)


def _iter_frames(path: str, start: int, end: int, stats: DecodeStats,
                 threads: int) -> Iterator[tuple[int, DecodedFrame]]:
    if start == end:
        return
    with _open_video(path, threads) as (container, stream):
        timeline = None
        if start > 0:
            first, _ = _first_frame(container, stream, path, DecodeStats())
            if first.pts is None:
                # No timestamps to seek by: count from the very first frame.
                _rewind(container, path)
            else:
                timeline = _Timeline(stream, first.pts)
        for idx, frame in _decode_from(container, stream, path, timeline, start, stats):
            if idx >= end:
                break
            if idx >= start:
                stats.frames += 1
                yield idx, DecodedFrame(frame, threads)


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
