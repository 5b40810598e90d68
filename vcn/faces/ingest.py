"""One chunk of a video, end to end: decode → shots → detect → filter → align → embed → track.

This is stage 1 of the pipeline for one chunk. It is pure apart from reading the video and the
models it is handed, so a Dask worker can run it on any chunk in any order and the result depends
only on (video, chunk, config, models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vcn.errors import ConfigError
from vcn.faces.detection import DetectionConfig, FaceDetector
from vcn.faces.embedding import EmbeddingConfig, FaceEmbedder, align_faces
from vcn.faces.quality import QualityConfig, measure, passes
from vcn.faces.tracking import TrackerConfig, track_faces
from vcn.media.shots import ShotConfig, ShotDetector
from vcn.media.video import Chunk, ChunkConfig, DecodeStats, check_decoded, iter_decoded

# face_id = frame_idx * FACE_ID_BASE + index of the detection in its frame. Unique per movie and
# identical for the same detection seen by two overlapping chunks.
FACE_ID_BASE = 1000


@dataclass(frozen=True)
class IngestConfig:
    """Stage-1 configuration: the component configs plus the detection stride.

    ``stride``: faces are detected on frames with ``frame_idx % stride == 0``. The default, 5,
    was chosen by measurement (docs/detection.md): every labelled appearance in the composed
    episodes is still found at stride 20, while detection (about 20 ms a frame on one core) and
    the embedding (about 3.5 ms a face with its alignment) make every detected frame expensive.
    ``embed_batch``: crops collected before one embedding call (bounds memory).
    ``embedding``: bfloat16 on CPUs that have it (2.4x faster, docs/detection.md). These
    embeddings gate the tracker and make the track means; their rounding (cosine error under
    2e-3) is a fifteenth or less of the spread within a track (0.03-0.26), and gave the same
    tracks as float32 on every clip measured. The method embeds its sampled crops again for
    itself (the view bank).
    """

    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    embedding: EmbeddingConfig = field(default_factory=lambda: EmbeddingConfig(precision="bf16"))
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    stride: int = 5
    embed_batch: int = 64

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ConfigError(f"IngestConfig.stride must be >= 1, got {self.stride}")
        # Cuts near a chunk start are only seen by the previous chunk: the overlap must cover them.
        self.chunk.check_covers(self.shots.min_scene_len)


@dataclass
class FaceModels:
    """The loaded detector and recognizer (one pair per worker process)."""

    detector: FaceDetector
    embedder: FaceEmbedder


@dataclass
class ChunkResult:
    """Faces and cuts of one chunk, over its decoded range ``[chunk.read_start, chunk.end)``.

    Arrays are aligned by row (N faces): ``face_id`` (N,) int64, ``frame_idx`` (N,) int64,
    ``boxes`` (N, 4) float32 x1,y1,x2,y2 px, ``scores`` (N,) float32, ``landmarks`` (N, 5, 2)
    float32, ``sharpness`` and ``yaw`` (N,) float32, ``second_look`` (N,) bool (found by the
    detector's second look only, :class:`vcn.faces.detection.Detections`), ``embeddings``
    (N, 512) float32 L2-normalised, ``local_track`` (N,) int64 (ids of this chunk's tracker;
    -1 = dropped), ``owned`` (N,) bool (frame in ``[chunk.start, chunk.end)``), ``crops``
    (N, 112, 112, 3) uint8 BGR. ``cuts`` (C,) int64 frames where a shot starts, within the
    decoded range. ``n_frames``: frames decoded, overlap included; ``owned_frames``: those in
    ``[chunk.start, chunk.end)``; ``bad_packets``: undecodable packets skipped in the owned
    range; ``decode_error``: the first decoder error met.
    ``timings``: wall seconds per phase; ``cpu``: CPU seconds of the process per phase
    (``time.process_time``: every thread, decoder threads included), the cost that does not
    depend on what else the machine runs.
    """

    chunk: Chunk
    face_id: np.ndarray
    frame_idx: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    sharpness: np.ndarray
    yaw: np.ndarray
    second_look: np.ndarray
    embeddings: np.ndarray
    local_track: np.ndarray
    owned: np.ndarray
    crops: np.ndarray
    cuts: np.ndarray
    n_frames: int
    timings: dict[str, float]
    owned_frames: int = 0
    bad_packets: int = 0
    decode_error: str | None = None
    cpu: dict[str, float] = field(default_factory=dict)


class _Clock:
    """Wall and CPU seconds per phase: :meth:`lap` charges the time since the previous lap."""

    def __init__(self, phases: tuple[str, ...]) -> None:
        self.wall = dict.fromkeys(phases, 0.0)
        self.cpu = dict.fromkeys(phases, 0.0)
        self._w, self._c = time.perf_counter(), time.process_time()

    def lap(self, phase: str | None) -> None:
        w, c = time.perf_counter(), time.process_time()
        if phase is not None:
            self.wall[phase] += w - self._w
            self.cpu[phase] += c - self._c
        self._w, self._c = w, c


class _Accumulator:
    """Collects kept detections and embeds their crops in batches to bound memory; the
    embedding time is charged to ``clock``'s "embed" phase, the time before it to "filter"."""

    def __init__(self, embedder: FaceEmbedder, batch: int, clock: _Clock) -> None:
        self.embedder, self.batch, self.clock = embedder, batch, clock
        keys = ("face_id", "frame_idx", "boxes", "scores", "landmarks", "sharpness", "yaw", "second_look",
                "crops")
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self.embeddings: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []

    def add(self, **cols: np.ndarray) -> None:
        for k, v in cols.items():
            self.rows[k].append(v)
        self._pending.append(cols["crops"])
        if sum(len(p) for p in self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        self.clock.lap("filter")
        self.embeddings.append(self.embedder.embed(np.concatenate(self._pending)))
        self.clock.lap("embed")
        self._pending = []

    def arrays(self) -> dict[str, np.ndarray]:
        self.flush()
        empty = {
            "face_id": np.zeros(0, np.int64), "frame_idx": np.zeros(0, np.int64),
            "boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
            "landmarks": np.zeros((0, 5, 2), np.float32), "sharpness": np.zeros(0, np.float32),
            "yaw": np.zeros(0, np.float32), "second_look": np.zeros(0, bool),
            "crops": np.zeros((0, 112, 112, 3), np.uint8),
        }
        out = {k: (np.concatenate(v) if v else empty[k]) for k, v in self.rows.items()}
        out["embeddings"] = (
            np.concatenate(self.embeddings) if self.embeddings else np.zeros((0, 512), np.float32)
        )
        return out


def process_chunk(path: str, chunk: Chunk, models: FaceModels, cfg: IngestConfig,
                  threads: int = 1) -> ChunkResult:
    """Run stage 1 on one chunk of the video at ``path``.

    Decodes frames ``[chunk.read_start, chunk.end)`` on ``threads`` decoder threads (the
    caller's share of the cores); every frame feeds the shot detector at its small analysis size,
    scaled by the decoder, and only frames on the stride grid are converted to full-size BGR for
    the face detector. Returns a :class:`ChunkResult`; a chunk without faces returns empty
    arrays, not an error. Undecodable packets are skipped and counted; the caller checks the
    counts (:func:`vcn.media.video.check_decoded`).
    """
    shots = ShotDetector(cfg.shots)
    clock = _Clock(("decode", "shots", "detect", "filter", "embed", "track"))
    acc = _Accumulator(models.embedder, cfg.embed_batch, clock)
    n_frames = owned_frames = 0
    stats = DecodeStats()
    for frame_idx, decoded in iter_decoded(path, chunk.read_start, chunk.end, stats, threads):
        clock.lap("decode")
        n_frames += 1
        owned_frames += frame_idx >= chunk.start
        shots.push(frame_idx, decoded.small(*shots.analysis_size(decoded.width, decoded.height)))
        clock.lap("shots")
        if frame_idx % cfg.stride == 0:
            frame = decoded.bgr()
            clock.lap("decode")
            dets = models.detector.detect(frame)
            clock.lap("detect")
            if len(dets.scores):
                crops = align_faces(frame, dets.landmarks)
                q = measure(dets, crops)
                idx = np.flatnonzero(passes(q, cfg.quality))
                if len(idx):
                    acc.add(
                        face_id=frame_idx * FACE_ID_BASE + idx.astype(np.int64),
                        frame_idx=np.full(len(idx), frame_idx, np.int64),
                        boxes=dets.boxes[idx].astype(np.float32),
                        scores=dets.scores[idx].astype(np.float32),
                        landmarks=dets.landmarks[idx].astype(np.float32),
                        sharpness=q.sharpness[idx].astype(np.float32),
                        yaw=q.yaw[idx].astype(np.float32),
                        second_look=dets.second_look[idx],
                        crops=crops[idx],
                    )
            clock.lap("filter")
    clock.lap("decode")  # the decoder's last call, which ends the loop
    cuts = np.asarray(shots.cuts(), dtype=np.int64)
    clock.lap("shots")
    cols = acc.arrays()
    clock.lap("embed")
    local = track_faces(cols["frame_idx"], cols["boxes"], cols["embeddings"], cuts, cfg.tracker)
    clock.lap("track")
    return ChunkResult(
        chunk=chunk,
        local_track=np.asarray(local, np.int64),
        owned=cols["frame_idx"] >= chunk.start,
        cuts=cuts,
        n_frames=n_frames,
        timings=clock.wall,
        cpu=clock.cpu,
        owned_frames=owned_frames,
        bad_packets=stats.bad_packets(chunk.start),
        decode_error=stats.error,
        **{k: cols[k] for k in ("face_id", "frame_idx", "boxes", "scores", "landmarks", "sharpness", "yaw",
                                "second_look", "embeddings", "crops")},
    )


def check_chunk_decode(path: str, res: ChunkResult, fps: float) -> None:
    """Raise :class:`~vcn.errors.TruncatedVideoError` when the chunk's own frames stopped decoding
    early (a file cut or damaged in its range), or :class:`~vcn.errors.CorruptVideoError` when
    it skipped more undecodable packets than a whole title may (see :func:`check_decoded`)."""
    c = res.chunk
    span = f"frames {c.start}-{c.end - 1}"
    check_decoded(path, res.owned_frames, c.end - c.start, fps, bad_packets=res.bad_packets,
                  error=res.decode_error, expected_is=f"in {span}", span=f" in {span}")
