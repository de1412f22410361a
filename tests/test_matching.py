"""Matching: statuses, margins, and one identity per face within a photo."""

from __future__ import annotations

import numpy as np

from faceid_tui.bank.matching import Matcher


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_best_sample_per_identity_and_statuses() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0.9, 0.1, 0), unit(0, 1, 0), unit(0, 0, 1)])
    matcher = Matcher(["ann", "ann", "bob", "cid"], samples, threshold=0.6, ambiguous_margin=0.05)
    assert matcher.identities == ["ann", "bob", "cid"]
    known, unknown = matcher.match_photo(np.stack([unit(1, 0.02, 0), unit(-1, -1, -1)]))
    assert known.status == "known" and known.name == "ann"
    assert known.score > 0.99 and known.margin is not None and known.margin > 0.5
    assert known.candidates[0].name == "ann"
    assert unknown.status == "unknown" and unknown.name is None


def test_close_runner_up_is_ambiguous() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    matcher = Matcher(["ann", "bob"], samples, threshold=0.5, ambiguous_margin=0.05)
    (match,) = matcher.match_photo(np.stack([unit(1, 0.98, 0)]))
    assert match.status == "ambiguous"
    assert match.margin is not None and match.margin < 0.05


def test_an_identity_names_at_most_one_face_per_photo() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    matcher = Matcher(["ann", "bob"], samples, threshold=0.5, ambiguous_margin=0.01)
    # Both faces look most like ann; the closer one keeps her, the other falls back to bob.
    first, second = matcher.match_photo(np.stack([unit(1, 0.3, 0), unit(1, 0.8, 0)]))
    assert first.name == "ann"
    assert second.name == "bob"
    # With no free identity above the threshold the other face stays unknown.
    only_ann = Matcher(["ann"], samples[:1], threshold=0.5)
    a, b = only_ann.match_photo(np.stack([unit(1, 0.3, 0), unit(1, 0.8, 0)]))
    assert a.name == "ann" and b.status == "unknown" and b.name is None


def test_empty_bank_leaves_every_face_unknown() -> None:
    matcher = Matcher([], np.zeros((0, 3), dtype=np.float32))
    (match,) = matcher.match_photo(np.stack([unit(1, 0, 0)]))
    assert match.status == "unknown" and match.candidates == ()
