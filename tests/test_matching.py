"""Matching: tiers, margins, and conflicts between the faces of one photo."""

from __future__ import annotations

from itertools import chain

import numpy as np
import pytest

import faceid_tui.bank.matching as matching
from faceid_tui.bank.matching import BEST_SAMPLE, Matcher


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_an_identity_scores_by_its_centroid_or_its_best_sample() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1)])
    query = unit(1, 0.2, 0)
    centroid = Matcher(["ann", "ann", "bob"], samples, threshold=0.5)
    best = Matcher(["ann", "ann", "bob"], samples, threshold=0.5, scoring=BEST_SAMPLE)
    # ann's centroid is (1, 1, 0)/sqrt(2): the query scores (1 + 0.2) / sqrt(2) / |query|.
    expected = float(query @ unit(1, 1, 0))
    assert centroid.identity_score(query, "ann") == np.float32(expected)
    assert centroid.identity_scores(query[None])[0].tolist() == [
        np.float32(expected), np.float32(0.0)]
    assert best.identity_score(query, "ann") == np.float32(query @ samples[0])
    assert centroid.sample_count == best.sample_count == 3


def test_best_sample_per_identity_and_statuses() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0.9, 0.1, 0), unit(0, 1, 0), unit(0, 0, 1)])
    matcher = Matcher(["ann", "ann", "bob", "cid"], samples, threshold=0.6, ambiguous_margin=0.05,
                      scoring=BEST_SAMPLE)
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


def test_two_faces_with_one_best_identity_are_a_conflict_never_a_fallback() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    matcher = Matcher(["ann", "bob"], samples, threshold=0.5, ambiguous_margin=0.01)
    # Both faces look most like ann (the second also resembles bob, above the threshold):
    # the closer keeps ann as known, the other keeps ann's name as a conflict, not bob's.
    first, second = matcher.match_photo(np.stack([unit(1, 0.3, 0), unit(1, 0.8, 0)]))
    assert (first.name, first.status) == ("ann", "known")
    assert (second.name, second.status) == ("ann", "conflict")
    assert second.candidates[1].name == "bob"  # the runner-up is still listed
    # The better face keeps its status wherever it sits in the photo.
    later_better = matcher.match_photo(np.stack([unit(1, 0.8, 0), unit(1, 0.3, 0)]))
    assert [m.status for m in later_better] == ["conflict", "known"]
    # A face below the suggestion threshold is unknown and takes part in no conflict.
    only_ann = Matcher(["ann"], samples[:1], threshold=0.9, likely_threshold=0.8)
    a, b = only_ann.match_photo(np.stack([unit(1, 0.3, 0), unit(1, 1, 0)]))
    assert (a.name, a.status) == ("ann", "known") and (b.name, b.status) == (None, "unknown")


def test_tiers_between_the_suggestion_and_open_set_thresholds() -> None:
    samples = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
    matcher = Matcher(["ann", "bob"], samples, threshold=0.9, likely_threshold=0.6,
                      ambiguous_margin=0.05)
    known, likely, ambiguous, unknown = (matcher.match_photo(q[None])[0] for q in (
        unit(1, 0.1, 0), unit(1, 0.6, 0), unit(1, 0.95, 0), unit(1, 1.5, 2)))
    assert (known.name, known.status) == ("ann", "known")
    assert (likely.name, likely.status) == ("ann", "likely")
    assert 0.6 <= likely.score < 0.9
    assert (ambiguous.name, ambiguous.status) == ("ann", "ambiguous")
    assert unknown.status == "unknown" and unknown.name is None and unknown.score < 0.6
    # Lowering the open-set threshold (the app's - key) below the suggestion one leaves no
    # likely band: the suggestion threshold follows it down.
    matcher.threshold = 0.5
    assert matcher.likely_threshold == 0.5
    assert matcher.match_photo(unit(1, 0.6, 0)[None])[0].status == "known"


def test_empty_bank_leaves_every_face_unknown() -> None:
    matcher = Matcher([], np.zeros((0, 3), dtype=np.float32))
    (match,) = matcher.match_photo(np.stack([unit(1, 0, 0)]))
    assert match.status == "unknown" and match.candidates == ()


def test_all_rows_ranked_at_once_as_one_row_at_a_time() -> None:
    # A re-match ranks every pending face's identities in one call; it must give each row
    # what the per-face ranking gives, ties (in index order) and NaN rows included.
    rng = np.random.default_rng(3)
    scores = np.round(rng.uniform(-1, 1, (400, 37)), 1).astype(np.float32)  # many ties
    scores[7] = np.nan
    scores[11, 5] = np.nan
    scores[13] = 0.5
    for depth in (1, 3, 5, 36, 37, 50):
        ranked = matching._best_first_rows(scores, depth)
        expected = [matching._best_first(row, depth) for row in scores]
        assert ranked.shape == (400, min(depth, 37))
        assert [r.tolist() for r in ranked] == [e.tolist() for e in expected]


def test_grouped_faces_match_as_photos() -> None:
    rng = np.random.default_rng(4)
    people = rng.standard_normal((15, 16)).astype(np.float32)
    samples = np.repeat(people, 2, axis=0) + 0.1 * rng.standard_normal((30, 16)).astype(
        np.float32)
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    matcher = Matcher([f"p{i // 2}" for i in range(30)], samples, threshold=0.7)
    # The first photo holds two faces of p0 (a conflict within it), the third two of p5
    # split across photos 3 and 4 (no conflict: each photo is its own).
    picks = [0, 1, 4, 7, 9, 10, 12, 11, 20]
    faces = samples[picks] + 0.1 * rng.standard_normal((9, 16)).astype(np.float32)
    counts = [2, 0, 3, 1, 3]
    photos = np.split(faces, np.cumsum(counts)[:-1])
    grouped = matcher.match_grouped(faces, counts)
    alone = [matcher.match_photo(p) if len(p) else [] for p in photos]
    assert [len(g) for g in grouped] == counts
    # A product over 9 rows and one over 2 agree to float rounding, not bit for bit.
    for got, want in zip(chain(*grouped), chain(*alone), strict=True):
        assert (got.name, got.status) == (want.name, want.status)
        assert [c.name for c in got.candidates] == [c.name for c in want.candidates]
        assert got.score == pytest.approx(want.score, abs=1e-6)
    assert sorted(m.status == "conflict" for m in grouped[0]) == [False, True]
    assert "conflict" not in {m.status for m in grouped[2] + grouped[3] + grouped[4]}
