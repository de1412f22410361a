"""Identification accuracy on real photos: the default threshold, held-back photos, a group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceid_tui.bank.thresholds import pair_threshold
from faceid_tui.engine.evaluation import best_threshold_interval, evaluate_pairs
from faceid_tui.engine.pipeline import Pipeline

from .conftest import copy_identity


@pytest.mark.parametrize("mode", ["default", "facenet"])
def test_the_pair_threshold_separates_the_dev_pairs(mode: str, pipeline: Pipeline,
                                                    facenet_pipeline: Pipeline,
                                                    faces_dir: Path) -> None:
    """The threshold `faceid eval pairs` uses (the model's LFW impostor curve at FAR 1 %) lies
    where these 180 real pairs are best separated, for the default and for FaceNet alone."""
    chosen = pipeline if mode == "default" else facenet_pipeline
    threshold = pair_threshold(chosen.model_id)
    assert threshold.source == "impostor curve"
    evaluation = evaluate_pairs(chosen, faces_dir / "pairs.csv", threshold.value)
    assert evaluation.pairs == 180 and evaluation.same == 90
    assert evaluation.accuracy >= 0.97
    assert evaluation.best_threshold_low <= threshold.value <= evaluation.best_threshold_high


def test_best_threshold_interval_on_known_scores() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.75])
    same = np.array([True, True, True, False, False, False])
    best, low, high = best_threshold_interval(scores, same)
    assert abs(best - 5 / 6) < 1e-9
    assert 0.3 <= low < high <= 0.9  # thresholds in (low, high] do best


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


def test_ten_fold_protocol_on_scores_with_a_known_answer() -> None:
    from faceid_tui.engine.evaluation import (
        equal_error_rate,
        fold_accuracies,
        roc_auc,
        tar_at_far,
    )

    rng = np.random.default_rng(0)
    folds = np.repeat(np.arange(10), 100)
    same = np.tile(np.r_[np.ones(50, bool), np.zeros(50, bool)], 10)
    # Perfectly separable: genuine scores in [0.6, 0.9], impostors in [0.0, 0.3].
    scores = np.where(same, rng.uniform(0.6, 0.9, same.size), rng.uniform(0.0, 0.3, same.size))
    assert fold_accuracies(scores, same, folds) == [1.0] * 10
    assert roc_auc(scores, same) == 1.0
    assert equal_error_rate(scores, same) == 0.0
    assert tar_at_far(scores, same, 1e-3)[0] == 1.0
    # One impostor per fold scores above every genuine pair: exactly one error per fold.
    flipped = scores.copy()
    flipped[np.flatnonzero(~same)[::50]] = 0.95
    assert fold_accuracies(flipped, same, folds) == [0.99] * 10
    assert abs(roc_auc(flipped, same) - (1 - 10 / 500)) < 1e-12
    tar, threshold = tar_at_far(flipped, same, 0.05)  # 25 of 500 impostors may pass
    assert tar == 1.0 and threshold <= 0.6
    tar, threshold = tar_at_far(flipped, same, 1e-2)  # only 5 may: cut above the 10 at 0.95
    assert tar == 0.0 and threshold > 0.95
