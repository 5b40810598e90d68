"""The algorithm version of each pipeline stage.

A stage's finished output is reused as long as its config section, the models' hashes and its
version here are unchanged; editing the source alone (a comment, a docstring, a refactor, a
change to another stage) invalidates nothing. A change that alters what a stage writes for the
same input and config must bump that stage's version here, which re-runs the stage (and the
stages after it) on the next run of every title. ``tests/test_stage_versions.py`` recomputes a
digest of small outputs of each stage (tracks, HAC and vcn clusters, finetune) and fails until
the version is bumped and the digest recorded.

- ``tracks``: decoding, shots, detection, quality filter, embedding, tracking and stitching
  (``vcn.video``, ``vcn.shots``, ``vcn.detection``, ``vcn.quality``, ``vcn.embedding``,
  ``vcn.tracking``, ``vcn.stitching``, ``vcn.ingest``, ``vcn.assembly``, ``vcn.summary``).
- ``finetune``: the view bank, coarse matching and the self-supervised finetune
  (``vcn.view_bank``, ``vcn.method.bank_for``, ``vcn.method.adapt``, ``vcn.finetune``,
  ``vcn.matching``, ``vcn.grouping``, ``vcn.views``, ``vcn.augment``).
- ``clusters``: stage 4 (``vcn.method.cluster``, ``vcn.clustering``, ``vcn.quality``'s SER-FIQ,
  ``vcn.constraints``, ``vcn.linking``), the HAC baseline and the ``vct`` method (``vcn.vct``).
"""

from __future__ import annotations

STAGE_VERSIONS: dict[str, int] = {"tracks": 1, "finetune": 2, "clusters": 3}
