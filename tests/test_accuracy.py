"""Identification accuracy on real photos: the default threshold, held-back photos, a group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceid_tui.bank.matching import DEFAULT_THRESHOLD
from faceid_tui.engine.evaluation import best_threshold_interval, evaluate_pairs
from faceid_tui.engine.pipeline import Pipeline

from .conftest import copy_identity


def test_default_threshold_separates_the_dev_pairs(pipeline: Pipeline, faces_dir: Path) -> None:
    evaluation = evaluate_pairs(pipeline, faces_dir / "pairs.csv", DEFAULT_THRESHOLD)
    assert evaluation.pairs == 180 and evaluation.same == 90
    assert evaluation.accuracy >= 0.97
    assert evaluation.best_threshold_low <= DEFAULT_THRESHOLD <= evaluation.best_threshold_high


def test_best_threshold_interval_on_known_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.75])
    same = np.array([True, True, True, False, False, False])
    best, low, high = best_threshold_interval(scores, same)
    assert abs(best - 5 / 6) < 1e-9
    assert 0.3 < low <= high <= 0.9


def test_held_back_photos_are_named(bank_factory, identity_photos, pipeline: Pipeline) -> None:
    bank = bank_factory()
    held_back: dict[Path, str] = {}
    for name, photos in identity_photos.items():
        copy_identity(bank.folder, name, photos[:-1])
        held_back[photos[-1]] = name
    bank.sync()
    matcher = bank.matcher()
    correct = 0
    for result in pipeline.run(list(held_back)):
        assert result.error is None
        # The person in a photo with a bystander is the largest face.
        target = result.faces.index(result.largest_face())
        matches = matcher.match_photo(np.stack([f.embedding for f in result.faces]))
        correct += matches[target].name == held_back[result.path]
    assert correct / len(held_back) >= 0.95, f"{correct}/{len(held_back)} named correctly"


def test_both_people_in_kit_with_rose_are_named(bank_factory, identity_photos, faces_dir: Path,
                                                pipeline: Pipeline) -> None:
    bank = bank_factory()
    for name, photos in identity_photos.items():
        copy_identity(bank.folder, name, photos)
    bank.sync()
    result = next(pipeline.run([faces_dir / "group_photos/kit_with_rose.jpg"]))
    matches = bank.matcher().match_photo(np.stack([f.embedding for f in result.faces]))
    # Faces are numbered left to right: rose_leslie stands on the left.
    assert [m.name for m in matches] == ["rose_leslie", "kit_harington"]
    assert all(m.status == "known" for m in matches)
