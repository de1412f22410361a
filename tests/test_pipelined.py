"""The pipelined engine (worker processes + batched embedding) gives the same answers as the
naive one-photo-at-a-time loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceid_tui.bank.matching import Matcher
from faceid_tui.engine.decode import is_image_name, load_rgb
from faceid_tui.engine.pipeline import Pipeline


def naive(pipeline: Pipeline, path: Path) -> list[tuple[list[int], np.ndarray]]:
    """Decode, detect, align, then embed each face on its own (batch of one)."""
    image = load_rgb(path)
    faces = []
    for face in pipeline.find_faces(image):
        faces.append((face.box.as_list(), pipeline.embedder.embed(face.chip[None])[0]))
    return faces


def test_pipelined_and_naive_paths_agree(pipeline: Pipeline, faces_dir: Path,
                                         identity_photos) -> None:
    photos = sorted(p for p in faces_dir.rglob("*") if p.is_file() and is_image_name(p))
    bank = [(name, paths[0]) for name, paths in sorted(identity_photos.items())]
    vectors = [naive(pipeline, path) for _, path in bank]
    matcher = Matcher([name for name, _ in bank], np.stack([found[0][1] for found in vectors]))

    pipelined = list(pipeline.run(photos, workers=2, chunk_size=16))
    assert [result.path for result in pipelined] == photos  # in order, none lost
    compared_faces = 0
    for result in pipelined:
        assert result.error is None
        expected = naive(pipeline, result.path)
        assert [face.box.as_list() for face in result.faces] == [box for box, _ in expected]
        if not expected:
            continue
        got = np.stack([face.embedding for face in result.faces])
        want = np.stack([vector for _, vector in expected])
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert [m.name for m in matcher.match_photo(got)] == \
            [m.name for m in matcher.match_photo(want)]
        compared_faces += len(expected)
    assert compared_faces >= 80  # 67 portraits + the group photos' faces


def test_a_stop_request_ends_a_parallel_run_early(pipeline: Pipeline, identity_photos) -> None:
    photos = [p for paths in identity_photos.values() for p in paths]
    seen = []
    for result in pipeline.run(photos, workers=2, chunk_size=4,
                               should_stop=lambda: len(seen) >= 6):
        seen.append(result)
    assert 6 <= len(seen) < len(photos)
