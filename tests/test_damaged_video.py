"""Damaged videos: a chunk whose frames stop decoding fails, a title's lost frames and packets
are checked as a whole, and a few broken packets are only counted.

Real encoded video with real damage (bytes overwritten in the file), decoded by the real stage-1
code with the shipped face models.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vcn.errors import CorruptVideoError, TruncatedVideoError
from vcn.faces.assembly import ChunkFaces, check_title_decode
from vcn.faces.detection import default_model_dir, find_models
from vcn.faces.ingest import IngestConfig, check_chunk_decode, process_chunk
from vcn.media.video import MAX_BAD_PACKETS, Chunk, probe


def packet_spans(path: str) -> list[tuple[int, int]]:
    """(byte offset, size) of the video packets of ``path``, in file order."""
    with av.open(path) as container:
        return sorted((p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size)


@pytest.fixture(scope="module")
def holed_video(make_video, frame_maker, tmp_path_factory) -> str:
    """The synthetic clip with the bytes of its 50th to 89th packets overwritten: the header and
    the end of the file are intact (probe finds all 130 frames), the middle does not decode."""
    clip = make_video("to_hole.mp4", frame_maker.frames(), 25)
    spans = packet_spans(clip)
    data = bytearray(Path(clip).read_bytes())
    start, end = spans[50][0], spans[90][0]
    data[start:end] = b"\xff" * (end - start)
    path = tmp_path_factory.mktemp("damaged") / "holed.mp4"
    path.write_bytes(bytes(data))
    return str(path)


def test_a_chunk_that_stops_decoding_fails(holed_video):
    info = probe(holed_video)
    assert (info.n_frames, info.declared_frames) == (130, 130), "the damage is invisible to probe"
    from vcn.tasks.models import face_models

    cfg = IngestConfig()
    models_files = find_models(default_model_dir())
    models = face_models(models_files.detector, models_files.recognizer, cfg.detection, cfg.embedding)
    chunk = Chunk(index=1, start=40, end=100, read_start=10)
    res = process_chunk(holed_video, chunk, models, cfg)
    assert res.owned_frames < 30 and res.bad_packets > MAX_BAD_PACKETS
    with pytest.raises(TruncatedVideoError, match=r"holed\.mp4: truncated: only \d+ of the 60 frames in "
                                                  r"frames 40-99 decode .*Invalid data"):
        check_chunk_decode(holed_video, res, info.fps)
    # A chunk before the damage is whole.
    whole = process_chunk(holed_video, Chunk(index=0, start=0, end=40, read_start=0), models, cfg)
    assert (whole.owned_frames, whole.bad_packets) == (40, 0)
    check_chunk_decode(holed_video, whole, info.fps)


def chunk_faces(start: int, end: int, **meta) -> ChunkFaces:
    return ChunkFaces(chunk=Chunk(index=0, start=start, end=end, read_start=max(0, start - 30)),
                      cuts=np.zeros(0, np.int64), columns={}, meta=meta)


def test_the_title_check_adds_up_its_chunks(synthetic_video):
    info = probe(synthetic_video.path)
    halves = [chunk_faces(0, 65, owned_frames=65), chunk_faces(65, 130, owned_frames=65)]
    clean = check_title_decode(halves, info)
    assert clean.to_dict() == {"declared_frames": 130, "decoded_frames": 130, "missing_frames": 0,
                               "bad_packets": 0, "first_error": None}
    assert clean.warning is None
    # A few broken packets: counted, with a warning naming the file.
    few = check_title_decode([chunk_faces(0, 65, owned_frames=63, bad_packets=2, decode_error="bad NAL"),
                              chunk_faces(65, 130, owned_frames=64, bad_packets=1)], info)
    assert (few.missing_frames, few.bad_packets, few.first_error) == (3, 3, "bad NAL")
    assert few.warning.startswith(f"{info.path}: 3 undecodable packet(s) skipped, 3 of 130 frames missing")
    # Each chunk within its slack, the title beyond it: the broken packets add up.
    spread = [chunk_faces(i * 13, (i + 1) * 13, owned_frames=13, bad_packets=2) for i in range(10)]
    expected = rf"damaged: 20 packets fail to decode, more than the {MAX_BAD_PACKETS}"
    with pytest.raises(CorruptVideoError, match=expected):
        check_title_decode(spread, info)
    short = [chunk_faces(i * 13, (i + 1) * 13, owned_frames=10) for i in range(10)]
    expected = r"only 100 of the 130 frames the container declares decode"
    with pytest.raises(TruncatedVideoError, match=expected):
        check_title_decode(short, info)
