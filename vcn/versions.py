"""The algorithm version of each pipeline stage.

A stage's finished output is reused as long as its config section, the models' hashes and its
version here are unchanged; editing the source alone (a comment, a docstring, a refactor, a
change to another stage) invalidates nothing. A change that alters what a stage writes for the
same input and config must bump that stage's version here, which re-runs the stage (and the
stages after it) on the next run of every title. ``tests/test_stage_versions.py`` recomputes a
digest of small outputs of each stage (tracks, HAC and vcn clusters, finetune) and fails until
the version is bumped and the digest recorded.

- ``tracks``: decoding, shots, detection, quality filter, embedding, tracking and stitching
  (``vcn.media``, ``vcn.faces``, ``vcn.report.summary``).
- ``finetune``: the view bank, coarse matching and the self-supervised finetune
  (``vcn.method``: ``view_bank``, ``views``, ``videoclusternet.bank_for`` and ``adapt``,
  ``finetune``, ``matching``, ``grouping``).
- ``clusters``: stage 4 (``vcn.method``: ``videoclusternet.cluster``, ``clustering``,
  ``track_quality``, ``constraints``, ``linking``), the HAC baseline and the ``vct`` method
  (``vcn.method.vct``).
"""

from __future__ import annotations

STAGE_VERSIONS: dict[str, int] = {"tracks": 2, "finetune": 2, "clusters": 5}
