"""Inference sessions of the face models: the one place that opens an ONNX graph for inference.

onnxruntime everywhere (CUDA first when the build has it), or OpenVINO for the fixed-size
recognizer on the CPU; each session is limited to the threads its worker is given, and its idle
threads sleep instead of spinning.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from vcn.errors import ConfigError, ModelNotFoundError


def session_providers() -> list[str]:
    """onnxruntime providers to use: CUDA first when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass(frozen=True)
class _Port:
    """A graph input or output as onnxruntime describes it: name and shape (str for a free axis)."""

    name: str
    shape: list


class OpenVinoSession:
    """An ONNX graph compiled by OpenVINO for the CPU, with the part of onnxruntime's
    ``InferenceSession`` interface vcn uses (``get_inputs``, ``get_outputs``, ``run``).

    On the CPU it runs the ArcFace recognizer 1.6x as fast as onnxruntime in float32 (cosine
    error 1e-7) and 2.8x in bfloat16 (cosine error 1e-3); see docs/method.md, "Cost". bfloat16
    runs only where the CPU has bfloat16 units (OpenVINO's ``BF16`` capability); elsewhere the
    session runs float32 and ``precision`` says so.
    """

    def __init__(
        self, model_path: str, threads: int, precision: str = "f32", extra_outputs: tuple[str, ...] = ()
    ) -> None:
        import openvino as ov

        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "f32"  # bfloat16 pays only on CPUs with bfloat16 units (AVX512_BF16, AMX)
        self.precision = precision
        model = core.read_model(model_path)
        if extra_outputs:
            model.add_outputs(list(extra_outputs))
        self._inputs = [_Port(p.get_any_name(), self._dims(p.get_partial_shape())) for p in model.inputs]
        self._outputs = [_Port(p.get_any_name(), self._dims(p.get_partial_shape())) for p in model.outputs]
        # Any batch size: the recognizer graphs declare a batch of 1.
        model.reshape({model.inputs[0].get_any_name(): [-1, *model.inputs[0].get_partial_shape()[1:]]})
        self._compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision, "NUM_STREAMS": 1,
        })
        self._request = self._compiled.create_infer_request()

    @staticmethod
    def _dims(shape) -> list:
        return [d.get_length() if d.is_static else "N" for d in shape]

    def get_inputs(self) -> list[_Port]:
        return self._inputs

    def get_outputs(self) -> list[_Port]:
        return self._outputs

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer({self._inputs[0].name: next(iter(feed.values()))})
        outs = [np.asarray(result[self._compiled.output(i)]) for i in range(len(self._outputs))]
        if names is None:
            return outs
        index = {p.name: i for i, p in enumerate(self._outputs)}
        return [outs[index[n]] for n in names]


def open_session(
    model_path: str, threads: int, what: str, openvino: bool = False, precision: str = "f32",
    extra_outputs: tuple[str, ...] = (), free_axes: bool = False,
) -> ort.InferenceSession | OpenVinoSession:
    """A session of ``model_path`` limited to ``threads`` intra-op threads (the pipeline runs one
    session per worker core, so the engine must not spread over every core itself). With
    ``openvino``, OpenVINO when it is installed and onnxruntime has no CUDA (the recognizer:
    fixed 112x112 inputs), in ``precision`` ("f32" or "bf16", where the CPU has it), else
    onnxruntime. ``extra_outputs`` names inner float tensors that the session also returns,
    after the graph's own outputs (one pass gives the recognizer's embedding and a feature map).
    ``free_axes`` frees every axis of the graph's inputs and outputs but the channels, so a graph
    exported at one input size (YuNet at 640x640) runs at any."""
    if not os.path.isfile(model_path):
        raise ModelNotFoundError(
            f"{what} model file {model_path} does not exist: pass a path from "
            "vcn.faces.detection.find_models(<model folder>)"
        )
    if threads < 1:
        raise ConfigError(f"threads={threads} for the {what} session: use 1 or more")
    cuda = "CUDAExecutionProvider" in session_providers()
    if openvino and not cuda and importlib.util.find_spec("openvino") is not None:
        try:
            return OpenVinoSession(model_path, threads, precision, extra_outputs)
        except Exception as exc:  # OpenVINO raises its own types for unreadable or foreign graphs
            raise ModelNotFoundError(
                f"{what} model file {model_path} cannot be loaded by OpenVINO ({exc}): replace the file"
            ) from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads sleep instead of spinning: a spinning pool of 2 doubles SCRFD's CPU time
    # (64 against 30 ms a 720p frame) and takes the cores the other workers and programs need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # The recognizer graphs declare a batch of 1 on their output and ORT warns on every batch.
    opts.log_severity_level = 3
    try:
        source: str | bytes = model_path
        if extra_outputs or free_axes:
            graph = onnx.load(model_path)
            graph.graph.output.extend(
                onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in extra_outputs
            )
            if free_axes:
                _free_axes(graph)
            source = graph.SerializeToString()
        return ort.InferenceSession(source, sess_options=opts, providers=session_providers())
    except Exception as exc:  # ORT raises its own types for unreadable or foreign graphs
        raise ModelNotFoundError(
            f"{what} model file {model_path} cannot be loaded by onnxruntime ({exc}): replace the file"
        ) from exc


def _free_axes(graph: onnx.ModelProto) -> None:
    """Make the inputs' axes other than the channels (axis 1) and the outputs' axes other than the
    last free, and drop the inner shapes inferred at the export size."""
    for port, fixed in [(v, 1) for v in graph.graph.input] + [(v, -1) for v in graph.graph.output]:
        dims = port.type.tensor_type.shape.dim
        for k, dim in enumerate(dims):
            if k != fixed % len(dims):
                dim.dim_param = f"{port.name}_{k}"
    del graph.graph.value_info[:]
