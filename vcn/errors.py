"""The errors vcn raises.

Every error names the file (or the setting) at fault and what the user can do about it, so that
a batch runner can record the message and move on to the next title.
"""

from __future__ import annotations


class VcnError(Exception):
    """Base class of every error vcn raises on purpose."""


class InputError(VcnError):
    """A user-supplied input (video, CSV, catalogue) cannot be used."""


class VideoOpenError(InputError):
    """The file is missing, empty, truncated or not a container PyAV can read."""


class NoVideoStreamError(InputError):
    """The container opens but holds no decodable video stream (e.g. an audio-only file)."""


class ModelNotFoundError(VcnError):
    """A face model folder lacks the detector or recognizer ONNX file."""


class ConfigError(VcnError):
    """A configuration value is out of range or inconsistent with another."""


class StageError(VcnError):
    """A pipeline stage could not run because an input it needs is missing or stale."""


class CheckpointError(StageError):
    """A checkpoint file is damaged, foreign, or holds more than tensors and plain values."""


class TruncatedVideoError(VideoOpenError):
    """Decoding stops well before the frames the container declares: an incomplete copy or
    download, or a file cut short. Re-download it, or re-mux what is there."""


class CorruptVideoError(VideoOpenError):
    """More packets of the video stream fail to decode than vcn skips with a warning."""
