"""Trainable torch copy of the ONNX face recognizer.

PyPI's torchvision does not import beside the torch build used here, and onnx2torch imports
torchvision at load time, so this module converts the ONNX graph itself. It covers the ops of the
insightface ArcFace recognizers (MobileFaceNet ``w600k_mbf``, IResNet ``w600k_r50``/``glint360k``
exports from PyTorch, the older MXNet exports with ``Sub``/``Mul`` input normalisation) plus the
small shape ops PyTorch emits for ``x.view(x.size(0), -1)``.

Weights of Conv, PRelu, Gemm, MatMul and the affine part of BatchNormalization become
``nn.Parameter`` (trainable); running statistics and constants become buffers. BatchNormalization
always uses its stored statistics, also in ``train()`` mode: a per-video finetune sees small
batches of a few correlated tracks, and batch statistics from them would drift the embedding.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcn.errors import ConfigError, ModelNotFoundError

# Ops whose listed inputs (by position) are learnable weights when they are initializers.
_WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2),
    "PRelu": (1,),
    "Gemm": (1, 2),
    "MatMul": (1,),
    "BatchNormalization": (1, 2),
}
# Ops that count as a "weight layer" (SER-FIQ's dropout sits before the last one).
WEIGHT_LAYER_OPS = ("Conv", "Gemm", "MatMul")

@dataclass(frozen=True)
class _Node:
    """One ONNX node: its op, its input/output tensor names, attributes and module key."""

    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict
    key: str


class _Weights(nn.Module):
    """Holds one node's parameters and buffers under the ONNX tensor names (sanitised)."""


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


def _pads(attrs: dict, spatial: int) -> tuple[list[int], bool]:
    """ONNX pads (begin..., end...) as F.pad order, and whether they are symmetric."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ConfigError(f"auto_pad={attrs['auto_pad']!r} is not supported by vcn/faces/backbone.py")
    pads = list(attrs.get("pads", [0] * (2 * spatial)))
    begin, end = pads[:spatial], pads[spatial:]
    torch_pad: list[int] = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        torch_pad += [b, e]
    return torch_pad, begin == end


class OnnxBackbone(nn.Module):
    """An ONNX recognizer graph executed node by node in topological order.

    ``forward(x)``: x float32 (N, 3, 112, 112) RGB normalised as ``preprocess`` does; returns
    the raw (not normalised) embedding, float32 (N, 512) for the ArcFace models.
    ``run(x, start, stop)`` executes a slice of the graph between two cut tensors (see
    ``cut_points``), which lets a finetune run the frozen trunk once without gradients.
    """

    def __init__(self, onnx_path: str) -> None:
        super().__init__()
        import onnx
        from onnx import numpy_helper

        self.source = onnx_path
        model = onnx.load(onnx_path)
        graph = model.graph
        init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.input_name = next(i.name for i in graph.input if i.name not in init)
        if len(graph.output) != 1:
            raise ConfigError(f"{onnx_path}: expected one output, found {len(graph.output)}")
        self.output_name = graph.output[0].name
        # insightface's ArcFaceONNX rule: MXNet exports normalise inside the graph.
        first = [n.name for n in graph.node[:8]]
        inside = any(n.startswith(("Sub", "_minus")) for n in first) and any(
            n.startswith(("Mul", "_mul")) for n in first
        )
        self.input_mean, self.input_std = (0.0, 1.0) if inside else (127.5, 127.5)

        self.weights = nn.ModuleDict()
        self._names: dict[str, tuple[str, str]] = {}  # ONNX tensor -> (module key, attr name)
        nodes: list[_Node] = []
        for i, n in enumerate(graph.node):
            if n.op_type not in _SUPPORTED:
                raise ConfigError(
                    f"{onnx_path}: op {n.op_type!r} (node {n.name or i}) is not supported by "
                    "vcn/faces/backbone.py; use an insightface ArcFace recognizer (w600k_mbf, w600k_r50) "
                    "or add the op to the converter"
                )
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant":
                if "value" in attrs:
                    attrs = {"value": numpy_helper.to_array(attrs["value"])}
                else:  # value_float(s) / value_int(s)
                    (kind, val), *_ = attrs.items()
                    attrs = {"value": np.array(val, np.float32 if "float" in kind else np.int64)}
            key = _safe(n.name or f"{n.op_type}_{i}")
            while key in self.weights:
                key += "_"
            holder = _Weights()
            learnable = _WEIGHT_INPUTS.get(n.op_type, ())
            for pos, name in enumerate(n.input):
                if name not in init or name in self._names:
                    continue
                arr = np.array(init[name])
                t = torch.from_numpy(arr.copy())
                attr = _safe(name) if not _safe(name)[0].isdigit() else f"t{_safe(name)}"
                if pos in learnable and t.is_floating_point():
                    holder.register_parameter(attr, nn.Parameter(t))
                else:
                    holder.register_buffer(attr, t)
                self._names[name] = (key, attr)
            self.weights[key] = holder
            nodes.append(_Node(n.op_type, tuple(n.input), tuple(n.output), attrs, key))
        self.nodes: tuple[_Node, ...] = tuple(nodes)
        self._check_inputs_defined(onnx_path)
        # Index of the last node reading each computed tensor: run() drops a tensor after it,
        # so a forward pass holds only the live activations (without this, a 64-face batch
        # keeps every intermediate map of the network, over 1 GB for w600k_mbf).
        self._last_use: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for name in n.inputs:
                if name and name not in self._names:
                    self._last_use[name] = i

    def _check_inputs_defined(self, onnx_path: str) -> None:
        known = {self.input_name, "", *self._names}
        for n in self.nodes:
            missing = [i for i in n.inputs if i not in known]
            if missing:
                raise ConfigError(
                    f"{onnx_path}: node {n.key} reads {missing} before they are produced; "
                    "the graph is not topologically sorted"
                )
            known.update(n.outputs)

    def _tensor(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor:
        if name in env:
            return env[name]
        key, attr = self._names[name]
        return getattr(self.weights[key], attr)

    # -- graph structure ---------------------------------------------------------------------

    def cut_points(self) -> list[str]:
        """Tensor names after which the graph is a chain: only that tensor is read later.

        Topological order; the graph input comes first. Splitting the graph at such a tensor
        leaves a trunk and a tail with one tensor between them.
        """
        last_use = self._last_use
        cuts = [self.input_name]
        live: set[str] = {self.input_name}
        for i, n in enumerate(self.nodes):
            live.update(n.outputs)
            live = {t for t in live if last_use.get(t, -1) > i}
            if len(live) == 1 and n.outputs[0] in live:
                cuts.append(n.outputs[0])
        return cuts

    def _node_index_after(self, cut: str) -> int:
        if cut == self.input_name:
            return 0
        for i, n in enumerate(self.nodes):
            if cut in n.outputs:
                return i + 1
        raise ConfigError(f"{self.source}: tensor {cut!r} is not produced by any node")

    # -- execution -----------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def run(self, x: torch.Tensor, start: str | None = None, stop: str | None = None) -> torch.Tensor:
        """Run from tensor ``start`` (default: the graph input) up to tensor ``stop`` (default:
        the output). ``start`` must be a cut point so that ``x`` is the only live value."""
        start = start or self.input_name
        stop = stop or self.output_name
        if start == stop:
            return x
        if x.dim() == 4:
            # oneDNN's depthwise and 1x1 convolutions run about 4x faster on NHWC than on NCHW
            # tensors on the CPU (w600k_mbf: ~140 against ~35 faces/s on 2 cores).
            x = x.contiguous(memory_format=torch.channels_last)
        env: dict[str, torch.Tensor] = {start: x}
        first = self._node_index_after(start)
        for i, n in enumerate(self.nodes[first:], start=first):
            outs = self._exec(n, [self._tensor(name, env) if name else None for name in n.inputs])
            for name, val in zip(n.outputs, outs, strict=False):
                env[name] = val
            if stop in n.outputs:
                return env[stop]
            for name in n.inputs:
                if self._last_use.get(name) == i:
                    env.pop(name, None)
        raise ConfigError(f"{self.source}: tensor {stop!r} is not reached after {start!r}")

    def _exec(self, n: _Node, xs: list) -> Sequence[torch.Tensor]:
        return _OPS[n.op](n.attrs, xs, f"{self.source}, node {n.key}")


# -- the ops ------------------------------------------------------------------------------------
# Each takes the node's attributes, its inputs (None for an omitted optional input) and a
# "model, node" string for errors, and returns the node's outputs.

Tensors = list[torch.Tensor]


def _conv(a: dict, xs: list, where: str) -> Tensors:
    w = xs[1]
    if w.dim() != 4:
        raise ConfigError(f"{where}: only 2-D Conv is supported")
    torch_pad, symmetric = _pads(a, 2)
    x = xs[0]
    pad: tuple[int, ...] | int = tuple(a.get("pads", [0, 0, 0, 0])[:2])
    if not symmetric:
        x, pad = F.pad(x, torch_pad), 0
    return [F.conv2d(x, w, xs[2] if len(xs) > 2 else None, stride=tuple(a.get("strides", [1, 1])),
                     padding=pad, dilation=tuple(a.get("dilations", [1, 1])), groups=a.get("group", 1))]


def _prelu(a: dict, xs: list, where: str) -> Tensors:
    x, slope = xs[0], xs[1]
    # F.prelu is one fused kernel (where/ge/mul cost a third of the forward time); it takes a
    # per-channel slope, which ONNX stores as (C, 1, 1).
    if (x.dim() >= 2 and slope.numel() in (1, x.shape[1]) and slope.dim() <= x.dim() - 1
            and math.prod(slope.shape[1:]) == 1):
        return [F.prelu(x, slope.reshape(-1))]
    return [torch.where(x >= 0, x, x * slope)]


def _clip(a: dict, xs: list, where: str) -> Tensors:
    lo = a.get("min", xs[1] if len(xs) > 1 and xs[1] is not None else None)
    hi = a.get("max", xs[2] if len(xs) > 2 and xs[2] is not None else None)
    return [torch.clamp(xs[0], lo, hi)]


def _batch_norm(a: dict, xs: list, where: str) -> Tensors:
    return [F.batch_norm(xs[0], xs[3], xs[4], xs[1], xs[2], training=False, eps=a.get("epsilon", 1e-5))]


def _flatten(a: dict, xs: list, where: str) -> Tensors:
    axis = a.get("axis", 1) % max(xs[0].dim(), 1)
    return [xs[0].reshape(math.prod(xs[0].shape[:axis]), -1)]


def _reshape(a: dict, xs: list, where: str) -> Tensors:
    shape = [int(s) for s in xs[1].tolist()]
    return [xs[0].reshape([xs[0].shape[i] if s == 0 else s for i, s in enumerate(shape)])]


def _gemm(a: dict, xs: list, where: str) -> Tensors:
    A = xs[0].t() if a.get("transA", 0) else xs[0]
    B = xs[1].t() if a.get("transB", 0) else xs[1]
    y = a.get("alpha", 1.0) * (A @ B)
    if len(xs) > 2 and xs[2] is not None:
        y = y + a.get("beta", 1.0) * xs[2]
    return [y]


def _pool(a: dict, xs: list, where: str, op: str) -> Tensors:
    _, symmetric = _pads(a, 2)
    if not symmetric:
        raise ConfigError(f"{where}: asymmetric pads in {op} are not supported")
    k, s = tuple(a["kernel_shape"]), tuple(a.get("strides", [1, 1]))
    p = tuple(a.get("pads", [0, 0, 0, 0])[:2])
    ceil = bool(a.get("ceil_mode", 0))
    if op == "MaxPool":
        return [F.max_pool2d(xs[0], k, s, p, ceil_mode=ceil)]
    include_pad = bool(a.get("count_include_pad", 0))
    return [F.avg_pool2d(xs[0], k, s, p, ceil_mode=ceil, count_include_pad=include_pad)]


def _gather(a: dict, xs: list, where: str) -> Tensors:
    axis, idx = a.get("axis", 0), xs[1].long()
    out = torch.index_select(xs[0], axis, idx.reshape(-1))
    return [out.reshape(xs[0].shape[:axis] + idx.shape + xs[0].shape[axis + 1:])]


def _unsqueeze(a: dict, xs: list, where: str) -> Tensors:
    axes = a["axes"] if "axes" in a else xs[1].tolist()
    y = xs[0]
    for ax in sorted(int(v) % (y.dim() + len(axes)) for v in axes):
        y = y.unsqueeze(ax)
    return [y]


def _transpose(a: dict, xs: list, where: str) -> Tensors:
    return [xs[0].permute(*a["perm"]) if "perm" in a else xs[0].permute(*reversed(range(xs[0].dim())))]


def _elementwise(f: Callable[..., torch.Tensor]) -> Callable[[dict, list, str], Tensors]:
    return lambda a, xs, where: [f(xs[0], xs[1])]


_OPS: dict[str, Callable[[dict, list, str], Tensors]] = {
    "Conv": _conv,
    "PRelu": _prelu,
    "Relu": lambda a, xs, where: [F.relu(xs[0])],
    "LeakyRelu": lambda a, xs, where: [F.leaky_relu(xs[0], a.get("alpha", 0.01))],
    "Sigmoid": lambda a, xs, where: [torch.sigmoid(xs[0])],
    "Clip": _clip,
    "Add": _elementwise(torch.add),
    "Sub": _elementwise(torch.sub),
    "Mul": _elementwise(torch.mul),
    "Div": _elementwise(torch.div),
    "BatchNormalization": _batch_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": _elementwise(torch.matmul),
    "Identity": lambda a, xs, where: [xs[0]],
    "Dropout": lambda a, xs, where: [xs[0]],
    "GlobalAveragePool": lambda a, xs, where: [xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)],
    "AveragePool": lambda a, xs, where: _pool(a, xs, where, "AveragePool"),
    "MaxPool": lambda a, xs, where: _pool(a, xs, where, "MaxPool"),
    "Constant": lambda a, xs, where: [torch.from_numpy(np.array(a["value"]))],
    "Shape": lambda a, xs, where: [torch.tensor(xs[0].shape, dtype=torch.int64)],
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda a, xs, where: [torch.cat([x for x in xs if x is not None], dim=a["axis"])],
    "Transpose": _transpose,
}
_SUPPORTED = frozenset(_OPS)


def load_backbone(onnx_path: str) -> OnnxBackbone:
    """Build a trainable torch module from an ArcFace ONNX recognizer file.

    The module takes float32 (N, 3, 112, 112) RGB tensors normalised as ``preprocess`` makes
    them and returns the raw embedding float32 (N, 512) (L2-normalise it for cosine use). It is
    in train mode with every weight trainable; callers freeze what they do not finetune.
    Raises ModelNotFoundError if the file is missing, ConfigError for an unsupported op.
    """
    if not os.path.isfile(onnx_path):
        raise ModelNotFoundError(
            f"recognizer model {onnx_path!r} does not exist; pass the path of w600k_mbf.onnx "
            "(see vcn.faces.detection.default_model_dir) or another ArcFace ONNX file"
        )
    return OnnxBackbone(onnx_path)


def preprocess(crops: np.ndarray, input_mean: float = 127.5, input_std: float = 127.5) -> torch.Tensor:
    """Aligned crops uint8 (N, 112, 112, 3) BGR -> float32 (N, 3, 112, 112) RGB tensor.

    Same numbers as insightface ``ArcFaceONNX.get_feat`` (``cv2.dnn.blobFromImages(imgs,
    1/std, size, (mean,)*3, swapRB=True)``): (pixel - mean) * (1 / std). Pass the backbone's
    ``input_mean``/``input_std`` (0 and 1 for MXNet exports that normalise in-graph).
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ConfigError(f"preprocess expects uint8 (N, H, W, 3) BGR crops, got {crops.dtype} {crops.shape}")
    x = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).permute(0, 3, 1, 2).float()
    return ((x - float(input_mean)) * np.float32(1.0 / input_std)).contiguous()
