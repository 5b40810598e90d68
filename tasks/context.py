"""What every task of one movie needs to know, passed explicitly (picklable for Dask)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.layout import MovieLayout
from vcn.config import PipelineConfig, fingerprint
from vcn.detection import ModelFiles
from vcn.video import VideoInfo


@dataclass(frozen=True)
class MovieContext:
    """A movie being processed: its input, its output folder, its config and models."""

    video_path: str
    movie_id: str
    out_root: str
    info: VideoInfo
    config: PipelineConfig
    models: ModelFiles
    code_hash: str
    model_hashes: dict[str, str]

    @property
    def layout(self) -> MovieLayout:
        return MovieLayout(Path(self.out_root))

    def stage_hash(self, stage: str) -> str:
        """Fingerprint of what ``stage``'s output depends on: its config and the model files."""
        return fingerprint({"stage": self.config.stage_config(stage), "models": self.model_hashes})
