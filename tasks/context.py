"""What every task of one movie needs to know, passed explicitly (picklable for Dask)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcn.config import PipelineConfig, fingerprint
from vcn.faces.detection import ModelFiles
from vcn.media.video import VideoInfo
from vcn.storage.layout import MovieLayout
from vcn.versions import STAGE_VERSIONS


@dataclass(frozen=True)
class MovieContext:
    """A movie being processed: its input, its output folder, its config and models."""

    video_path: str
    movie_id: str
    out_root: str
    info: VideoInfo
    config: PipelineConfig
    models: ModelFiles
    code_hash: str  # of the source, recorded for lineage; it invalidates nothing
    model_hashes: dict[str, str]

    @property
    def layout(self) -> MovieLayout:
        return MovieLayout(Path(self.out_root))

    def stage_stamp(self, stage: str) -> dict[str, Any]:
        """What ``stage``'s output depends on, part by part: ``config_hash`` (its config section,
        the upstream stages' included), ``models_hash`` (the model files) and ``stage_version``
        (its algorithm version and the upstream stages', :mod:`vcn.versions`); for ``clusters``
        also ``corrections``, a digest of the review log's merges, splits and rejects of this
        title, when it has any. The source code
        is not part of it: ``code_hash`` is recorded for lineage only."""
        order = self.config.stages()
        upstream = order[: order.index(stage) + 1]
        stamp: dict[str, Any] = {"config_hash": fingerprint(self.config.stage_config(stage)),
                                 "models_hash": fingerprint(self.model_hashes),
                                 "stage_version": {s: STAGE_VERSIONS[s] for s in upstream}}
        if stage == "clusters":
            # The review log's merges, splits and rejects of this title, when there are any (a
            # label changes no cluster).
            from vcn.library.corrections import for_movie
            from vcn.storage.corrections import read_log

            log = for_movie(read_log(self.layout.root.parent), self.movie_id)
            said = [c for c in log if c.kind != "label"]
            if said:
                stamp["corrections"] = fingerprint([c.to_dict() for c in said])
        return stamp

    def stage_hash(self, stage: str) -> str:
        """One fingerprint of :meth:`stage_stamp`: a finished stage is reused while it holds."""
        return fingerprint(self.stage_stamp(stage))
