"""Face model lookup and SCRFD detection, on the real models and real photos."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vcn.errors import ConfigError, InputError, ModelNotFoundError
from vcn.faces.detection import (
    DetectionConfig,
    Detections,
    FaceDetector,
    ModelFiles,
    default_model_dir,
    find_models,
    nms,
)

DATA = Path(__file__).parent / "data"
# The single face of det_jolie.jpg (330x512), as insightface's own SCRFD (det_size 640) boxes it.
JOLIE_BOX = np.array([85.6, 90.3, 270.4, 356.7], np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = np.maximum(a[:2], b[:2])
    x2, y2 = np.minimum(a[2:], b[2:])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def models() -> ModelFiles:
    return find_models(default_model_dir())


@pytest.fixture(scope="module")
def detector(models: ModelFiles) -> FaceDetector:
    return FaceDetector(models.detector, DetectionConfig())


@pytest.fixture(scope="module")
def jolie() -> np.ndarray:
    return cv2.imread(str(DATA / "det_jolie.jpg"))


def fake_onnx(path: Path, in_shape: list, out_shapes: list[list]) -> None:
    """A tiny ONNX file with the given input/output signature (only its signature is read)."""
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)
    outs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, s) for i, s in enumerate(out_shapes)]
    nodes = [helper.make_node("Identity", ["x"], [f"y{i}"]) for i in range(len(out_shapes))]
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [inp], outs)), str(path))


# ---------------------------------------------------------------- model lookup


def test_default_model_dir_holds_the_vectron_models() -> None:
    folder = default_model_dir()
    assert os.path.isfile(os.path.join(folder, "scrfd_500m_bnkps.onnx"))
    assert os.path.isfile(os.path.join(folder, "w600k_mbf.onnx"))


def test_find_models_on_vectron_folder_ignores_helper_graphs(models: ModelFiles) -> None:
    # the folder also holds scrfd_concat/scrfd_nms/scrfd_resize.onnx, 2d106det.onnx, ...
    assert os.path.basename(models.detector) == "scrfd_500m_bnkps.onnx"
    assert os.path.basename(models.recognizer) == "w600k_mbf.onnx"


def test_find_models_on_buffalo_l_layout(models: ModelFiles, tmp_path: Path) -> None:
    pack = tmp_path / "buffalo_l"
    pack.mkdir()
    os.symlink(models.detector, pack / "det_10g.onnx")
    os.symlink(models.recognizer, pack / "w600k_r50.onnx")
    os.symlink(os.path.join(default_model_dir(), "2d106det.onnx"), pack / "2d106det.onnx")
    fake_onnx(pack / "1k3d68.onnx", ["N", 3, 192, 192], [[1, 3309]])
    fake_onnx(pack / "genderage.onnx", ["N", 3, 96, 96], [[1, 3]])
    found = find_models(str(pack))
    assert found == ModelFiles(str(pack / "det_10g.onnx"), str(pack / "w600k_r50.onnx"))
    # the files found are usable
    image = cv2.imread(str(DATA / "det_jolie.jpg"))
    assert len(FaceDetector(found.detector, DetectionConfig()).detect(image)) == 1


def test_find_models_falls_back_to_onnx_signature(models: ModelFiles, tmp_path: Path) -> None:
    os.symlink(models.detector, tmp_path / "model_a.onnx")
    os.symlink(models.recognizer, tmp_path / "model_b.onnx")
    fake_onnx(tmp_path / "genderage.onnx", ["N", 3, 96, 96], [[1, 3]])
    found = find_models(str(tmp_path))
    assert os.path.basename(found.detector) == "model_a.onnx"
    assert os.path.basename(found.recognizer) == "model_b.onnx"


def test_find_models_skips_a_name_match_with_the_wrong_signature(models: ModelFiles, tmp_path: Path) -> None:
    fake_onnx(tmp_path / "scrfd_nms.onnx", ["n", 16], [["k", 4]])  # named like a detector, is not one
    fake_onnx(tmp_path / "glint_decoy.onnx", ["N", 3, 96, 96], [[1, 3]])
    os.symlink(models.detector, tmp_path / "scrfd_real.onnx")
    os.symlink(models.recognizer, tmp_path / "w600k_mbf.onnx")
    found = find_models(str(tmp_path))
    assert os.path.basename(found.detector) == "scrfd_real.onnx"
    assert os.path.basename(found.recognizer) == "w600k_mbf.onnx"


def test_find_models_errors_name_folder_and_missing_model(models: ModelFiles, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no face detector.*no \.onnx files"):
        find_models(str(tmp_path))
    os.symlink(models.detector, tmp_path / "det_10g.onnx")
    with pytest.raises(ModelNotFoundError, match=rf"no face recognizer in {tmp_path}.*det_10g\.onnx"):
        find_models(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        find_models(str(tmp_path / "missing"))


def test_detector_rejects_missing_or_keypointless_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        FaceDetector(str(tmp_path / "nope.onnx"), DetectionConfig())
    no_kps = tmp_path / "scrfd_nokps.onnx"
    fake_onnx(no_kps, ["N", 3, "H", "W"], [["N", "A", 1]] * 6)
    with pytest.raises(ModelNotFoundError, match="keypoints"):
        FaceDetector(str(no_kps), DetectionConfig())


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize("proposer", ["yunet", "scrfd"])
def test_detects_the_face_with_the_expected_box(models: ModelFiles, jolie: np.ndarray, proposer: str) -> None:
    dets = FaceDetector(models.detector, DetectionConfig(proposer=proposer)).detect(jolie)
    assert len(dets) == 1
    assert dets.boxes.shape == (1, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (1,) and dets.scores.dtype == np.float32
    assert dets.landmarks.shape == (1, 5, 2) and dets.landmarks.dtype == np.float32
    if proposer == "scrfd":
        np.testing.assert_allclose(dets.boxes[0], JOLIE_BOX, atol=1.5)
    else:  # SCRFD's box from a view where the 257 px face is 64 px high: a few pixels coarser
        assert iou(dets.boxes[0], JOLIE_BOX) > 0.9
    assert dets.scores[0] > 0.8
    x1, y1, x2, y2 = dets.boxes[0]
    lm = dets.landmarks[0]
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left eye/mouth corner left of right ones
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above nose above mouth


def test_matches_insightface_scrfd(models: ModelFiles, jolie: np.ndarray, tmp_path: Path) -> None:
    from insightface.model_zoo import get_model

    # insightface picks the model type by file name; "det.onnx" makes it an SCRFD detector
    os.symlink(models.detector, tmp_path / "det.onnx")
    ref = get_model(str(tmp_path / "det.onnx"), providers=["CPUExecutionProvider"])
    ref.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    # a landscape frame with the face off-centre, letterboxed like a video frame
    frame = np.full((720, 1280, 3), 90, np.uint8)
    frame[100:612, 700:1030] = jolie
    ours = FaceDetector(models.detector, DetectionConfig(proposer="scrfd", input_size=640)).detect(frame)
    ref_boxes, ref_kps = ref.detect(frame)
    assert len(ours) == len(ref_boxes) == 1
    np.testing.assert_allclose(ours.boxes[0], ref_boxes[0, :4], atol=1.0)
    np.testing.assert_allclose(ours.landmarks[0], ref_kps[0], atol=1.0)
    assert abs(ours.scores[0] - ref_boxes[0, 4]) < 0.01


def small_face_frame(jolie: np.ndarray, face_px: int, where: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """A 1280x720 frame showing the photo scaled so its face is ``face_px`` high; returns the
    frame and the face's box there."""
    scale = face_px / (JOLIE_BOX[3] - JOLIE_BOX[1])
    small = cv2.resize(jolie, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(60, 120, (9, 16, 3), dtype=np.uint8), (1280, 720))
    x, y = where
    frame[y : y + small.shape[0], x : x + small.shape[1]] = small
    return frame, JOLIE_BOX * scale + np.array([x, y, x, y], np.float32)


def test_default_finds_a_24px_face_in_720p(detector: FaceDetector, jolie: np.ndarray) -> None:
    frame, box = small_face_frame(jolie, 24, (300, 400))
    dets = detector.detect(frame)
    assert len(dets) >= 1
    assert iou(dets.boxes[0], box) >= 0.4


def test_tiles_find_small_faces_once(models: ModelFiles, jolie: np.ndarray) -> None:
    tiled = FaceDetector(
        models.detector, DetectionConfig(proposer="scrfd", input_size=640, tiles=(2, 2), tile_size=704)
    )
    # a small face inside one tile, and a larger one straddling the tiles' inner edges
    frame, small_box = small_face_frame(jolie, 24, (200, 150))
    scale = 90 / (JOLIE_BOX[3] - JOLIE_BOX[1])
    mid = cv2.resize(jolie, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    face = JOLIE_BOX * scale
    x0, y0 = int(640 - (face[0] + face[2]) / 2), int(360 - (face[1] + face[3]) / 2)
    frame[y0 : y0 + mid.shape[0], x0 : x0 + mid.shape[1]] = mid
    dets = tiled.detect(frame)
    assert sum(iou(b, small_box) >= 0.4 for b in dets.boxes) == 1
    assert sum(iou(b, face + np.array([x0, y0, x0, y0])) >= 0.4 for b in dets.boxes) == 1
    assert len(dets) == 2


def test_empty_frame_portrait_frame_and_clipping(detector: FaceDetector, jolie: np.ndarray) -> None:
    empty = detector.detect(np.full((720, 1280, 3), 128, np.uint8))
    assert len(empty) == 0
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,) and empty.landmarks.shape == (0, 5, 2)
    # face cut by the top edge: the box is clipped to the frame, landmarks are not
    cut = detector.detect(np.ascontiguousarray(jolie[120:]))
    assert len(cut) == 1 and cut.boxes[0, 1] == 0.0
    portrait = np.full((1280, 720, 3), 90, np.uint8)
    portrait[700:1212, 200:530] = jolie
    dets = detector.detect(portrait)
    assert len(dets) == 1 and iou(dets.boxes[0], JOLIE_BOX + np.array([200, 700, 200, 700])) > 0.9


def test_bad_inputs_and_configs(detector: FaceDetector) -> None:
    with pytest.raises(InputError):
        detector.detect(np.zeros((720, 1280), np.uint8))
    with pytest.raises(InputError):
        detector.detect(np.zeros((720, 1280, 3), np.float32))
    with pytest.raises(ConfigError):
        DetectionConfig(tiles=(0, 2))
    with pytest.raises(ConfigError):
        DetectionConfig(score_threshold=1.5)
    with pytest.raises(ConfigError):
        DetectionConfig(input_size=16)
    with pytest.raises(ConfigError):
        DetectionConfig(zoom_floor=0.6)
    with pytest.raises(ConfigError):
        DetectionConfig(zoom_context=0.5)
    with pytest.raises(ConfigError, match="proposer"):
        DetectionConfig(proposer="yolo")
    with pytest.raises(ConfigError, match="proposer='scrfd'"):
        DetectionConfig(proposer="yunet", tiles=(2, 2))
    with pytest.raises(ConfigError):
        DetectionConfig(propose_floor=0.8, propose_threshold=0.7)
    DetectionConfig(proposer="scrfd", tiles=(2, 2), zoom_floor=0.1)


def test_nms_and_select() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
    dets = Detections(boxes, scores, np.zeros((3, 5, 2), np.float32))
    picked = dets.select(scores > 0.65)
    assert len(picked) == 2 and picked.boxes.shape == (2, 4)


def test_second_look_keeps_a_blurred_face_and_drops_weak_background(
    models: ModelFiles, jolie: np.ndarray
) -> None:
    # a tightly cut, blurred 36 px face on flat colour: the global pass scores it under 0.5
    face = jolie[int(JOLIE_BOX[1]) : int(JOLIE_BOX[3]), int(JOLIE_BOX[0]) : int(JOLIE_BOX[2])]
    small = cv2.resize(face, None, fx=36 / face.shape[0], fy=36 / face.shape[0], interpolation=cv2.INTER_AREA)
    frame = np.full((720, 1280, 3), 60, np.uint8)
    frame[300 : 300 + small.shape[0], 500 : 500 + small.shape[1]] = small
    frame = cv2.GaussianBlur(frame, (0, 0), 3)
    box = np.array([500, 300, 500 + small.shape[1], 300 + small.shape[0]], np.float32)
    cfg = DetectionConfig(proposer="scrfd", zoom_floor=0.1)
    first_only = FaceDetector(models.detector, DetectionConfig(proposer="scrfd")).detect(frame)
    floor = FaceDetector(models.detector, replace(cfg, score_threshold=0.1, zoom_floor=None)).detect(frame)
    dets = FaceDetector(models.detector, cfg).detect(frame)
    assert len(first_only) == 0
    # the floor alone lets the face through, and weak hits that are not faces
    assert len(floor) >= 2 and iou(floor.boxes[0], box) >= 0.4 and floor.scores[0] < cfg.score_threshold
    assert len(dets) == 1 and iou(dets.boxes[0], box) >= 0.4 and dets.scores[0] >= cfg.score_threshold
    assert dets.landmarks.shape == (1, 5, 2)
    # the face is marked as the second look's; a face the global pass finds is not
    assert dets.second_look.tolist() == [True]
    sharp = FaceDetector(models.detector, cfg).detect(jolie)
    assert len(sharp) and not sharp.second_look.any()
    # YuNet proposes the blurred face with confidence, and SCRFD's zoomed view confirms it
    proposed = FaceDetector(models.detector, DetectionConfig(proposer="yunet")).detect(frame)
    assert len(proposed) == 1 and iou(proposed.boxes[0], box) >= 0.4


def test_a_sure_proposal_needs_scrfd_to_see_it_and_a_weak_one_needs_scrfd_to_be_sure(
    models: ModelFiles, jolie: np.ndarray
) -> None:
    detector = FaceDetector(models.detector, DetectionConfig(proposer="yunet"))
    frame, box = small_face_frame(jolie, 60, (300, 200))
    background = np.array([900, 400, 960, 460], np.float32)  # flat colour: SCRFD sees nothing there
    boxes = np.stack([box, box + 2, background]).astype(np.float32)
    sure = detector.confirm(frame, boxes[[0, 2]], np.array([0.9, 0.9], np.float32))
    assert len(sure) == 1 and iou(sure.boxes[0], box) >= 0.7 and not sure.second_look.any()
    assert sure.scores[0] >= 0.9 and sure.landmarks.shape == (1, 5, 2)
    # a weak proposal on the face: kept, with SCRFD's score, and marked as the zoomed look's
    weak = detector.confirm(frame, boxes[[1, 2]], np.array([0.4, 0.4], np.float32))
    assert len(weak) == 1 and weak.second_look.tolist() == [True] and weak.scores[0] >= 0.5
    assert len(detector.confirm(frame, boxes[:0], np.zeros(0, np.float32))) == 0


def test_the_stage_key_holds_only_the_settings_that_shape_the_detections() -> None:
    from vcn.config import PipelineConfig, fingerprint

    default = PipelineConfig().stage_config("tracks")
    key = default["ingest"]["detection"]
    assert not any(name.startswith(("zoom_", "propose", "confirm_")) for name in key)
    assert key["score_threshold"] == 0.5
    yunet = PipelineConfig.from_dict({"ingest": {"detection": {"proposer": "yunet"}}}).stage_config("tracks")
    key = yunet["ingest"]["detection"]
    assert key["proposer"] == "yunet" and key["propose_threshold"] == 0.7 and key["zoom_face"] == 64
    assert not any(name.startswith("tile") or name == "zoom_floor" for name in key)
    on = PipelineConfig.from_dict({"ingest": {"detection": {"zoom_floor": 0.1}}}).stage_config("tracks")
    assert on["ingest"]["detection"]["zoom_floor"] == 0.1 and on["ingest"]["detection"]["zoom_face"] == 64
    assert len({fingerprint(default), fingerprint(yunet), fingerprint(on)}) == 3
