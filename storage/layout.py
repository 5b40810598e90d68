"""Where a movie's outputs live under ``OUT/<movie_id>/``.

One class names every file so that tasks, the CLI and tests agree on paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MovieLayout:
    """Paths of one movie's outputs."""

    root: Path

    @classmethod
    def of(cls, out_dir: str | Path, movie_id: str) -> MovieLayout:
        return cls(Path(out_dir) / movie_id)

    @property
    def movie_id(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def chunks_dir(self) -> Path:
        return self.root / "chunks"

    def chunk_faces(self, index: int) -> Path:
        return self.chunks_dir / f"chunk-{index:05d}.faces.parquet"

    @property
    def crops_dir(self) -> Path:
        return self.root / "crops"

    def chunk_crops(self, index: int) -> Path:
        return self.crops_dir / f"chunk-{index:05d}.parquet"

    @property
    def faces(self) -> Path:
        return self.root / "faces.parquet"

    @property
    def tracks(self) -> Path:
        return self.root / "tracks.parquet"

    @property
    def shots(self) -> Path:
        return self.root / "shots.parquet"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters.parquet"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def report(self) -> Path:
        return self.root / "report.html"
