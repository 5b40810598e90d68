"""Loaded face models, one set per worker process.

Loading an ONNX session costs about a second, so a Dask worker keeps its models between chunk
tasks. This cache is the orchestration layer's business (the core stays free of global state).
"""

from __future__ import annotations

import functools
import os

from vcn.detection import DetectionConfig, FaceDetector
from vcn.embedding import EmbeddingConfig, FaceEmbedder
from vcn.ingest import FaceModels


def worker_threads() -> int:
    """Threads one model session may use: the worker's share of the cores (``VCN_THREADS``)."""
    return max(1, int(os.environ.get("VCN_THREADS", "1")))


@functools.lru_cache(maxsize=4)
def face_models(
    detector: str, recognizer: str, det_cfg: DetectionConfig, emb_cfg: EmbeddingConfig
) -> FaceModels:
    """Return the detector and recognizer for these files and configs, loading them once."""
    threads = worker_threads()
    return FaceModels(
        detector=FaceDetector(detector, det_cfg, threads=threads),
        embedder=FaceEmbedder(recognizer, emb_cfg, threads=threads),
    )
