"""Loaded face models, one set per worker process.

Loading an ONNX session costs about a second, so a Dask worker keeps its models between chunk
tasks. This cache is the orchestration layer's business (the core stays free of global state).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import cv2

from vcn.faces.detection import DetectionConfig, FaceDetector
from vcn.faces.embedding import EmbeddingConfig, FaceEmbedder
from vcn.faces.ingest import FaceModels


def worker_threads() -> int:
    """Threads one model session may use: the worker's share of the cores (``VCN_THREADS``)."""
    return max(1, int(os.environ.get("VCN_THREADS", "1")))


def worker_address() -> str | None:
    """Address of the Dask worker running the current task, for the manifest; ``None`` outside
    a worker (a task called in the flow's own process)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Let PyTorch use ``threads`` intra-op threads inside the block; ``None``: the worker's
    ``VCN_THREADS`` where set (a user's own workers), else the process's setting.

    A Dask worker's nanny starts it with ``OMP_NUM_THREADS=1``; the finetune and the clustering,
    each the one task of its title while it runs, can use more (flows/runtime.py,
    ``model_threads``)."""
    if threads is None and "VCN_THREADS" in os.environ:
        threads = worker_threads()
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=4)
def face_models(
    detector: str, recognizer: str, det_cfg: DetectionConfig, emb_cfg: EmbeddingConfig
) -> FaceModels:
    """Return the detector and recognizer for these files and configs, loading them once.

    Every engine of the worker process gets the worker's share of the cores: the ONNX sessions
    here, the video decoder (``process_chunk``'s ``threads``) and OpenCV, whose own pool
    otherwise takes every core of the machine for each resize and warp, in every worker.
    """
    threads = worker_threads()
    cv2.setNumThreads(threads)
    return FaceModels(
        detector=FaceDetector(detector, det_cfg, threads=threads),
        embedder=FaceEmbedder(recognizer, emb_cfg, threads=threads),
    )
