"""Composed episodes with one-, two- and three-person shots and exact face-level labels.

``../shared/tools/compose_episode.py`` makes one shot per photo, one labelled face per shot. A film
also has two-shots and group scenes, where two faces on one frame are two people. Here about
``multi`` of the shots (0.3 by default) hold two or three faces cut from photos of *different*
identities, laid out side by side (similar sizes) or over the shoulder (one face about twice the
other's height, the larger one sometimes out of focus), each on its own feathered layer with its
own smooth drift, roll, yaw and zoom over a smooth colour fill. The other shots are the tool's: the
photo on a blurred fill, a slow zoom toward its main face, roll, yaw, light and focus drift.

Labels are exact: the main face of each photo is found once on the photo (the tool's detector and
filters), and every box is mapped through its layer's known per-frame transform, one row per face
every fifth frame. Other faces of a photo, as far as they lie inside its layer, are ``ignore``.

With ``hard`` every shot gets, with probability 1/2 each, the tool's degradations: a wide shot
(the largest face 28-80 px high), low light with a colour cast, blur, sensor noise, a mirrored
frame. The same seed gives the same episode.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
TOOL = SHARED / "tools" / "compose_episode.py"
W, H, FPS = 1280, 720, 25
LABEL_EVERY = 5


@functools.cache
def tool() -> ModuleType:
    """The shared composer, loaded from its file (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("compose_episode", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass(eq=False)
class Photo:
    """A photo fitted to the frame, its identity, its main face and its other faces (x1 y1 x2 y2)."""

    image: np.ndarray
    identity: str
    main: np.ndarray
    others: list[np.ndarray]


def _detect(det, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its face boxes (x1 y1 x2 y2, score). A face chip (one face filling the photo,
    which the detector misses, and so would the pipeline's) becomes the photo at a third of its
    size, its faces found inside a black border."""
    boxes, _ = det.detect(img)
    if len(boxes):
        return img, boxes
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    bh, bw = small.shape[:2]
    boxes, _ = det.detect(cv2.copyMakeBorder(small, bh, bh, bw, bw, cv2.BORDER_CONSTANT, value=0))
    if len(boxes):
        boxes = boxes.copy()
        boxes[:, :4] = np.clip(boxes[:, :4] - [bw, bh, bw, bh], 0, [bw, bh, bw, bh])
    return small, boxes


def load_photos(items: list[tuple[str, str]]) -> list[Photo]:
    """Read, fit and detect each (path, identity), keeping photos with one clear main face of at
    least 40 px (the tool's rules: a second face over half the main face's area is ambiguous)."""
    det = tool().detector()
    out = []
    for path, ident in items:
        img = cv2.imread(str(path))
        if img is None:
            continue
        s = min(W / img.shape[1], H / img.shape[0])
        img = cv2.resize(img, (int(img.shape[1] * s), int(img.shape[0] * s)))
        img, boxes = _detect(det, img)
        if len(boxes) == 0:
            continue
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-areas)
        if len(order) > 1 and areas[order[1]] > 0.5 * areas[order[0]]:
            continue
        main = boxes[order[0], :4].astype(np.float64)
        if min(main[2] - main[0], main[3] - main[1]) < 40:
            continue
        out.append(Photo(img, ident, main, [boxes[i, :4].astype(np.float64) for i in order[1:]]))
    return out


def _translate(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=np.float64)


@dataclass
class Layer:
    """One image moving over the frame; ``alpha`` None: opaque, it fills the frame (edges replicated).

    ``place`` maps layer pixels to frame pixels at rest; the motion turns, tilts and zooms about
    ``centre`` (a frame point) and drifts by (dx, dy), interpolated through three keyframes of
    (roll degrees, perspective coefficient, dx, dy); the zoom goes from 1 to ``zoom``."""

    image: np.ndarray
    alpha: np.ndarray | None
    place: np.ndarray
    centre: tuple[float, float]
    keys: list[tuple[float, float, float, float]]
    zoom: float = 1.0
    boxes: list[tuple[np.ndarray, str]] = field(default_factory=list)

    def homography(self, k: int, n: int) -> np.ndarray:
        u = 2 * k / max(n - 1, 1)
        i = min(int(u), 1)
        a = u - i
        rot, persp, dx, dy = (self.keys[i][j] * (1 - a) + self.keys[i + 1][j] * a for j in range(4))
        z = 1 + (self.zoom - 1) * k / max(n - 1, 1)
        cx, cy = self.centre
        R = np.vstack([cv2.getRotationMatrix2D((0, 0), rot, z), [0, 0, 1]])
        P = np.array([[1, 0, 0], [0, 1, 0], [persp, 0, 1]])
        return _translate(cx + dx, cy + dy) @ R @ P @ _translate(-cx, -cy) @ self.place


@dataclass
class Shot:
    """Layers bottom to top, ``n`` frames, light and focus keyframes (gain, blur sigma), mirror."""

    layers: list[Layer]
    n: int
    light: list[tuple[float, float]]
    mirror: bool = False

    def frame(self, k: int) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
        """Frame ``k`` and its labelled boxes (frame pixels, clipped, at least 8 px a side)."""
        frame = np.zeros((H, W, 3), np.uint8)
        boxes = []
        for layer in self.layers:
            Hm = layer.homography(k, self.n)
            if layer.alpha is None:
                frame = cv2.warpPerspective(layer.image, Hm, (W, H), borderMode=cv2.BORDER_REPLICATE)
            else:
                _blend(frame, layer, Hm)
            for b, lab in layer.boxes:
                c = np.array([[b[0], b[1], 1], [b[2], b[1], 1], [b[2], b[3], 1], [b[0], b[3], 1]]) @ Hm.T
                c = c[:, :2] / c[:, 2:]
                x1, y1 = max(0.0, c[:, 0].min()), max(0.0, c[:, 1].min())
                x2, y2 = min(W, c[:, 0].max()), min(H, c[:, 1].max())
                if x2 - x1 > 8 and y2 - y1 > 8:
                    boxes.append((np.array([x1, y1, x2, y2]), lab))
        u = 2 * k / max(self.n - 1, 1)
        i = min(int(u), 1)
        a = u - i
        gain, blur = (self.light[i][j] * (1 - a) + self.light[i + 1][j] * a for j in range(2))
        frame = np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        if blur > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), blur)
        if self.mirror:
            frame = np.ascontiguousarray(frame[:, ::-1])
            boxes = [(np.array([W - b[2], b[1], W - b[0], b[3]]), lab) for b, lab in boxes]
        return frame, boxes


def _blend(frame: np.ndarray, layer: Layer, Hm: np.ndarray) -> None:
    """Warp a feathered layer onto ``frame`` in place, over the part of the frame it covers."""
    h, w = layer.image.shape[:2]
    c = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=np.float64) @ Hm.T
    c = c[:, :2] / c[:, 2:]
    x0, y0 = max(0, int(np.floor(c[:, 0].min()))), max(0, int(np.floor(c[:, 1].min())))
    x1, y1 = min(W, int(np.ceil(c[:, 0].max())) + 1), min(H, int(np.ceil(c[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    M = _translate(-x0, -y0) @ Hm
    img = cv2.warpPerspective(layer.image, M, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_CONSTANT)
    a = cv2.warpPerspective(layer.alpha, M, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_CONSTANT)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = (roi * (1 - a) + img.astype(np.float32) * a).astype(np.uint8)


def _light_keys(rng: random.Random) -> list[tuple[float, float]]:
    return [(rng.uniform(0.65, 1.2), rng.uniform(0, 2.0)) for _ in range(3)]


def single_shot(photo: Photo, rng: random.Random, hard: bool) -> Shot:
    """The tool's shot: the (degraded) photo on its blurred fill, zooming toward its main face."""
    img, main, others = photo.image, photo.main, photo.others
    if hard:
        img, main, others = tool().degrade(img, main, others, rng)
    h, w = img.shape[:2]
    canvas = cv2.resize(cv2.GaussianBlur(img, (0, 0), 25), (W, H))
    ox, oy = (W - w) // 2, (H - h) // 2
    canvas[oy:oy + h, ox:ox + w] = img
    centre = ((main[0] + main[2]) / 2 + ox, (main[1] + main[3]) / 2 + oy)
    n, zoom = rng.randint(20, 60), rng.uniform(1.05, 1.2)
    keys = [(rng.uniform(-12, 12), rng.uniform(-0.35, 0.35) / (2.5 * w), 0.0, 0.0) for _ in range(3)]
    shift = np.array([ox, oy, ox, oy], dtype=np.float64)
    boxes = [(main + shift, photo.identity)] + [(o + shift, "ignore") for o in others]
    layer = Layer(canvas, None, np.eye(3), centre, keys, zoom, boxes)
    return Shot([layer], n, _light_keys(rng))


@dataclass
class _Look:
    """One multi-person shot's degradations (all off for a clean episode)."""

    wide: float | None = None  # the largest face's height in px
    gamma: float | None = None
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur: float = 0.0
    noise: float = 0.0
    mirror: bool = False

    @classmethod
    def draw(cls, rng: random.Random, hard: bool) -> _Look:
        look = cls()
        if not hard:
            return look
        if rng.random() < 0.5:
            look.wide = rng.uniform(28, 80)
        if rng.random() < 0.5:
            look.gamma = rng.uniform(1.4, 2.4)
            look.cast = rng.choice([(0.8, 1.0, 1.25), (1.25, 1.0, 0.8)])
        if rng.random() < 0.5:
            look.blur = rng.uniform(0.8, 2.0)
        if rng.random() < 0.5:
            look.noise = rng.uniform(0.02, 0.05)
        look.mirror = rng.random() < 0.5
        return look

    def apply(self, img: np.ndarray, rng: random.Random, blur: float = 0.0) -> np.ndarray:
        """Light, cast, blur (the shot's plus ``blur``) and noise on one image of the shot."""
        x = img.astype(np.float32) / 255
        if self.gamma is not None:
            x = x ** self.gamma * np.array(self.cast, dtype=np.float32)
        sigma = float(np.hypot(self.blur, blur))
        if sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        if self.noise > 0:
            x = x + np.random.default_rng(rng.randint(0, 1 << 30)).normal(0, self.noise, x.shape)
        return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _cut(photo: Photo, rng: random.Random) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Head and shoulders around the main face: the cut image, the main face and the other faces
    overlapping it, in cut coordinates (others clipped to the cut)."""
    x1, y1, x2, y2 = photo.main
    fw, fh = x2 - x1, y2 - y1
    half = fw * rng.uniform(1.0, 1.3)
    cx = (x1 + x2) / 2
    h, w = photo.image.shape[:2]
    left, right = int(max(0, cx - half)), int(min(w, cx + half))
    top, bottom = int(max(0, y1 - 0.6 * fh)), int(min(h, y2 + rng.uniform(1.0, 1.8) * fh))
    cut = photo.image[top:bottom, left:right]
    shift = np.array([left, top, left, top], dtype=np.float64)
    others = []
    for o in photo.others:
        c = np.clip(o - shift, 0, [right - left, bottom - top] * 2)
        if c[2] - c[0] > 4 and c[3] - c[1] > 4:
            others.append(c)
    return cut, photo.main - shift, others


def _feather(h: int, w: int) -> np.ndarray:
    """An alpha of ones that fades to zero over the outer ~12% of the image."""
    m = max(2, int(0.12 * min(h, w)))
    a = np.zeros((h, w), np.float32)
    a[m:h - m, m:w - m] = 1
    return cv2.GaussianBlur(a, (0, 0), m / 2)


def multi_shot(photos: list[Photo], rng: random.Random, hard: bool) -> Shot:
    """Two or three faces of different people on one frame, side by side or over the shoulder."""
    k = len(photos)
    look = _Look.draw(rng, hard)
    ots = k == 2 and rng.random() < 0.5
    if ots:  # one face near the camera, about twice the other's height
        big = rng.uniform(200, 300)
        heights = [big, big * rng.uniform(0.4, 0.6)]
    else:
        base = rng.uniform(110, 200) if k == 2 else rng.uniform(90, 160)
        heights = [base * rng.uniform(0.85, 1.15) for _ in range(k)]
    if look.wide is not None:
        heights = [hh * look.wide / max(heights) for hh in heights]
    cuts = [_cut(p, rng) for p in photos]
    scales = [hh / (m[3] - m[1]) for hh, (_, m, _) in zip(heights, cuts, strict=True)]
    widths = [c.shape[1] * s for (c, _, _), s in zip(cuts, scales, strict=True)]
    gap = 0.15 * max(widths)
    room = W - 40
    fit = min(1.0, room / (sum(widths) + gap * (k - 1)))
    scales, widths, gap = [s * fit for s in scales], [wd * fit for wd in widths], gap * fit
    slack = room - sum(widths) - gap * (k - 1)
    share = [rng.random() for _ in range(k + 1)]
    order = list(range(k))
    rng.shuffle(order)  # who stands where, left to right
    # A smooth colour field from one photo's colours: no face in it for a detector to find.
    fill = cv2.resize(cv2.resize(photos[0].image, (6, 4), interpolation=cv2.INTER_AREA), (W, H),
                      interpolation=cv2.INTER_CUBIC)
    layers = [Layer(look.apply(fill, rng), None, np.eye(3), (W / 2, H / 2), [(0.0, 0.0, 0.0, 0.0)] * 3)]
    x = 20.0
    for slot, i in enumerate(order):
        cut, main, others = cuts[i]
        x += slack * share[slot] / sum(share)
        s = scales[i]
        img = cv2.resize(cut, (max(8, round(cut.shape[1] * s)), max(8, round(cut.shape[0] * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        to_img = np.array([img.shape[1] / cut.shape[1], img.shape[0] / cut.shape[0]] * 2)
        main = main * to_img
        fh = main[3] - main[1]
        face_x, face_y = x + (main[0] + main[2]) / 2, rng.uniform(0.3, 0.5) * H
        place = _translate(x, face_y - (main[1] + main[3]) / 2)
        defocus = rng.uniform(1.0, 2.5) if ots and i == 0 and rng.random() < 0.5 else 0.0
        keys = [(rng.uniform(-6, 6), rng.uniform(-0.2, 0.2) / (2.5 * img.shape[1]),
                 rng.uniform(-0.15, 0.15) * fh, rng.uniform(-0.15, 0.15) * fh) for _ in range(3)]
        boxes = [(main, photos[i].identity)] + [(o * to_img, "ignore") for o in others]
        layers.append(Layer(look.apply(img, rng, defocus), _feather(*img.shape[:2]), place,
                            (face_x, face_y), keys, rng.uniform(0.95, 1.1), boxes))
        x += widths[i] + gap
    return Shot(layers, rng.randint(20, 60), _light_keys(rng), look.mirror)


def plan(photos: list[Photo], rng: random.Random, multi: float = 0.3) -> list[list[Photo]]:
    """Shots in order: each one photo, or (with probability ``multi``) two or three photos of
    different identities; photos shuffled so that one person's shots are scattered."""
    pool = list(photos)
    rng.shuffle(pool)
    shots = []
    while pool:
        k = 1
        if rng.random() < multi:
            k = 2 if rng.random() < 0.7 else 3
        taken = [0]
        for j in range(1, len(pool)):
            if len(taken) == k:
                break
            if all(pool[j].identity != pool[t].identity for t in taken):
                taken.append(j)
        shots.append([pool[t] for t in taken])
        pool = [p for j, p in enumerate(pool) if j not in taken]
    return shots


def compose(items: list[tuple[str, str]], out_mp4: Path, out_csv: Path, seed: int,
            hard: bool = False, multi: float = 0.3) -> dict[str, int]:
    """Write the episode of ``items`` (photo path, identity) and its labels; return its counts."""
    return compose_photos(load_photos(items), out_mp4, out_csv, seed, hard, multi)


def compose_photos(photos: list[Photo], out_mp4: Path, out_csv: Path, seed: int,
                   hard: bool = False, multi: float = 0.3) -> dict[str, int]:
    """Write the episode of loaded ``photos`` and its labels; return its counts. A photo may
    appear more than once: each appearance is its own shot, with its own motion and look."""
    rng = random.Random(seed)
    groups = plan(photos, rng, multi)
    out_mp4.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_mp4.with_suffix(".tmp.mp4")
    rows, f = [], 0
    with av.open(str(tmp), "w") as container:
        st = container.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.options = {"crf": "20", "preset": "veryfast"}
        for g in groups:
            shot = single_shot(g[0], rng, hard) if len(g) == 1 else multi_shot(g, rng, hard)
            for k in range(shot.n):
                frame, boxes = shot.frame(k)
                for pk in st.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                    container.mux(pk)
                if f % LABEL_EVERY == 0:
                    rows += [[out_mp4.name, f, *(round(v) for v in b), lab] for b, lab in boxes]
                f += 1
        for pk in st.encode():
            container.mux(pk)
    with open(out_csv, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["video", "frame_idx", "x1", "y1", "x2", "y2", "identity"])
        wr.writerows(rows)
    tmp.rename(out_mp4)
    return {"shots": len(groups), "multi_shots": sum(len(g) > 1 for g in groups), "frames": f,
            "identities": len({p.identity for g in groups for p in g})}
