"""Five-point alignment and ArcFace embeddings, checked against insightface on real photos."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from vcn.errors import ConfigError, InputError
from vcn.faces.detection import DetectionConfig, FaceDetector, ModelFiles, default_model_dir, find_models
from vcn.faces.embedding import (
    ARCFACE_TEMPLATE,
    EmbeddingConfig,
    FaceEmbedder,
    align_face,
    align_faces,
    similarity_transform,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def models() -> ModelFiles:
    return find_models(default_model_dir())


@pytest.fixture(scope="module")
def embedder(models: ModelFiles) -> FaceEmbedder:
    return FaceEmbedder(models.recognizer, EmbeddingConfig())


@pytest.fixture(scope="module")
def faces(models: ModelFiles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (image, landmarks (5, 2)) of the single face in each test photo."""
    detector = FaceDetector(models.detector, DetectionConfig())
    out = {}
    for name in ("jolie", "simm_1", "simm_2", "salley"):
        image = cv2.imread(str(DATA / f"det_{name}.jpg"))
        dets = detector.detect(image)
        assert len(dets) == 1, name
        out[name] = (image, dets.landmarks[0])
    return out


@pytest.fixture(scope="module")
def crops(faces) -> np.ndarray:
    """(4, 112, 112, 3) uint8 aligned crops of the test photos' faces."""
    return np.stack([align_face(img, lm) for img, lm in faces.values()])


def test_similarity_transform_matches_insightface_estimate_norm() -> None:
    from insightface.utils import face_align

    rng = np.random.default_rng(0)
    for _ in range(50):
        angle = rng.uniform(-0.6, 0.6)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = (ARCFACE_TEMPLATE @ rot.T * rng.uniform(0.3, 4) + rng.uniform(0, 900, 2)
                  + rng.normal(0, 2, (5, 2))).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecation inside insightface
            expected = face_align.estimate_norm(points)
        np.testing.assert_allclose(similarity_transform(points), expected, rtol=1e-5, atol=1e-4)
    assert similarity_transform(np.ones((5, 2))) is None


def test_align_face_matches_norm_crop(faces) -> None:
    from insightface.utils import face_align

    for image, landmarks in faces.values():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            expected = face_align.norm_crop(image, landmarks)
        crop = align_face(image, landmarks)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        assert np.abs(crop.astype(int) - expected).max() <= 1  # float rounding of the same warp


def test_align_faces_shapes_and_degenerate_landmarks(faces) -> None:
    image, landmarks = faces["jolie"]
    crops = align_faces(image, np.stack([landmarks, np.zeros((5, 2), np.float32)]))
    assert crops.shape == (2, 112, 112, 3) and crops.dtype == np.uint8
    assert crops[0].std() > 10 and crops[1].max() == 0
    assert align_faces(image, np.zeros((0, 5, 2), np.float32)).shape == (0, 112, 112, 3)
    with pytest.raises(InputError):
        align_faces(image, np.zeros((3, 4, 2)))


def test_embed_matches_insightface_get_feat(models: ModelFiles, embedder: FaceEmbedder, crops) -> None:
    from insightface.model_zoo import get_model

    ref = get_model(models.recognizer, providers=["CPUExecutionProvider"])
    expected = np.concatenate([ref.get_feat(crop) for crop in crops])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = embedder.embed(crops)
    assert got.shape == (len(crops), 512) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embed_batches_and_empty_input(models: ModelFiles, embedder: FaceEmbedder, crops) -> None:
    small_batches = FaceEmbedder(models.recognizer, EmbeddingConfig(batch_size=3)).embed(crops)
    np.testing.assert_allclose(small_batches, embedder.embed(crops), atol=1e-5)
    empty = embedder.embed(np.zeros((0, 112, 112, 3), np.uint8))
    assert empty.shape == (0, 512) and empty.dtype == np.float32
    with pytest.raises(InputError):
        embedder.embed(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ConfigError):
        EmbeddingConfig(batch_size=0)


def test_bfloat16_embeddings_stay_within_rounding_of_float32(models: ModelFiles, embedder: FaceEmbedder,
                                                           crops) -> None:
    """The ingest's bfloat16 embeddings: each face within cosine 5e-3 of float32 (the spread
    inside a track is 0.03 or more), and the same person nearest; float32 where the CPU has no
    bfloat16 units."""
    import openvino as ov

    from vcn.faces.sessions import OpenVinoSession

    bf16 = FaceEmbedder(models.recognizer, EmbeddingConfig(precision="bf16"))
    if isinstance(bf16._session, OpenVinoSession):  # onnxruntime on CUDA runs float32
        has_bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        assert bf16.precision == ("bf16" if has_bf16 else "f32")
    assert embedder.precision == "f32"
    got, expected = bf16.embed(crops), embedder.embed(crops)
    assert np.min(np.sum(got * expected, axis=1)) > 1 - 5e-3
    np.testing.assert_array_equal(np.argsort(got @ got.T, axis=1), np.argsort(expected @ expected.T, axis=1))


def test_bfloat16_falls_back_to_float32_on_a_cpu_without_bfloat16_units(
        models: ModelFiles, embedder: FaceEmbedder, crops, monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino as ov

    real = ov.Core.get_property

    def capabilities(self, device, name, *rest):  # a CPU with AVX-512 but no bfloat16 units
        if name == "OPTIMIZATION_CAPABILITIES":
            return ["FP32", "INT8", "BIN"]
        return real(self, device, name, *rest)

    monkeypatch.setattr(ov.Core, "get_property", capabilities)
    plain = FaceEmbedder(models.recognizer, EmbeddingConfig(precision="bf16"))
    assert plain.precision == "f32"
    np.testing.assert_allclose(plain.embed(crops), embedder.embed(crops), atol=1e-5)


def test_same_face_is_closer_than_another_person(embedder: FaceEmbedder, faces) -> None:
    simm_1 = align_face(*faces["simm_1"])
    crops = np.stack([simm_1, simm_1[:, ::-1], align_face(*faces["simm_2"]), align_face(*faces["salley"]),
                      align_face(*faces["jolie"])])
    e = embedder.embed(crops)
    flipped, same_person, other, other_2 = e[1:] @ e[0]
    assert flipped > 0.7
    assert same_person > 0.3
    assert max(other, other_2) < 0.25
    assert min(flipped, same_person) > max(other, other_2) + 0.1
