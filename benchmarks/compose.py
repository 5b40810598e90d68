"""Benchmark inputs: a long 720p 25 fps video made from the dev clips.

The dev clips (Hamilton, pedestrians, carphone, Megamind) are scaled into a 1280x720 canvas and
played back to back, looping, until the requested length: real faces, real cuts, H.264.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev"
CLIPS = ["short_hamilton_clip.mp4", "pedestrians.mp4", "clips/carphone.mp4", "clips/megamind.avi"]
W, H, FPS = 1280, 720, 25


def _fit(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    s = min(W / w, H / h)
    img = cv2.resize(frame, (int(w * s) // 2 * 2, int(h * s) // 2 * 2), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((H, W, 3), np.uint8)
    y, x = (H - img.shape[0]) // 2, (W - img.shape[1]) // 2
    canvas[y:y + img.shape[0], x:x + img.shape[1]] = img
    return canvas


def compose_long_video(dest: Path, seconds: float, dev: Path = DEV) -> Path:
    """Write a ``seconds``-long 1280x720 25 fps H.264 video made of the dev clips to ``dest``."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    total = int(seconds * FPS)
    tmp = dest.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        st = out.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"crf": "23", "preset": "veryfast"}
        n = 0
        while n < total:
            for name in CLIPS:
                with av.open(str(dev / name)) as src:
                    for frame in src.decode(video=0):
                        if n >= total:
                            break
                        img = _fit(frame.to_ndarray(format="bgr24"))
                        for pk in st.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                            out.mux(pk)
                        n += 1
        for pk in st.encode():
            out.mux(pk)
    tmp.rename(dest)
    return dest
