"""Clustering metrics on hand-computed examples (faceid_tui/triage/cluster_eval.py)."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from faceid_tui.triage.cluster_eval import (
    ClusterMethod,
    ClusterScores,
    OperatingPoint,
    bcubed_scores,
    best_at_precision,
    chinese_whispers,
    cosine_to_euclidean,
    describe_dataset,
    evaluate_clustering,
    pairwise_scores,
)

# Six faces of three people; clusters {0,1} {2,3}, faces 4 and 5 left alone (-1).
TRUTH = ["a", "a", "a", "b", "b", "c"]
LABELS = np.array([0, 0, 1, 1, -1, -1])


def close(scores: ClusterScores, precision: Fraction, recall: Fraction, f: Fraction) -> None:
    assert scores.precision == pytest.approx(float(precision), abs=1e-12)
    assert scores.recall == pytest.approx(float(recall), abs=1e-12)
    assert scores.f == pytest.approx(float(f), abs=1e-12)


def test_pairwise_by_hand() -> None:
    # Pairs put together: (0,1) right, (2,3) wrong → P = 1/2. Pairs of one person:
    # a: (0,1) (0,2) (1,2), b: (3,4) → 4, of which (0,1) found → R = 1/4. F = 1/3.
    close(pairwise_scores(TRUTH, LABELS), Fraction(1, 2), Fraction(1, 4), Fraction(1, 3))


def test_bcubed_by_hand() -> None:
    # Per face (precision, recall): 0 (1, 2/3), 1 (1, 2/3), 2 (1/2, 1/3), 3 (1/2, 1/2),
    # 4 (1, 1/2), 5 (1, 1) → P = 5/6, R = 11/18, F = 2PR/(P+R) = 55/78.
    close(bcubed_scores(TRUTH, LABELS), Fraction(5, 6), Fraction(11, 18), Fraction(55, 78))


def test_unclustered_faces_are_singletons_not_one_cluster() -> None:
    # Two -1 faces of one person are not "together": nothing claimed, one pair missed.
    close(pairwise_scores(["a", "a"], np.array([-1, -1])), Fraction(1), Fraction(0), Fraction(0))
    close(bcubed_scores(["a", "a"], np.array([-1, -1])), Fraction(1), Fraction(1, 2),
          Fraction(2, 3))


def test_everything_in_one_cluster() -> None:
    # 3 pairs put together, 1 right; BCubed precision (2/3 + 2/3 + 1/3) / 3 = 5/9.
    close(pairwise_scores(["a", "a", "b"], np.zeros(3, int)), Fraction(1, 3), Fraction(1),
          Fraction(1, 2))
    close(bcubed_scores(["a", "a", "b"], np.zeros(3, int)), Fraction(5, 9), Fraction(1),
          Fraction(5, 7))


def test_scores_ignore_label_values() -> None:
    relabelled = np.array([7, 7, 3, 3, -1, -1])
    assert pairwise_scores(TRUTH, relabelled) == pairwise_scores(TRUTH, LABELS)
    assert bcubed_scores([1, 1, 1, 2, 2, 3], relabelled) == bcubed_scores(TRUTH, LABELS)
    perfect = np.array([5, 5, 5, 9, 9, -1])
    assert pairwise_scores(TRUTH, perfect) == ClusterScores(1.0, 1.0, 1.0)
    assert bcubed_scores(TRUTH, perfect) == ClusterScores(1.0, 1.0, 1.0)


def test_describe_dataset() -> None:
    dataset = describe_dataset(TRUTH)
    assert (dataset.faces, dataset.identities, dataset.identities_with_pairs) == (6, 3, 2)
    assert dataset.singleton_faces == 1 and dataset.genuine_pairs == 4
    assert dataset.singleton_share == pytest.approx(1 / 6)


def point(param: float, precision: float, f: float) -> OperatingPoint:
    scores = ClusterScores(precision, 0.5, 0.5)
    return OperatingPoint("m", param, scores, ClusterScores(1.0, 1.0, f), 0.0, 1, 2)


def test_best_at_precision() -> None:
    points = [point(0.1, 0.95, 0.9), point(0.2, 0.99, 0.7), point(0.3, 0.995, 0.8),
              point(0.4, 1.0, 0.6)]
    assert best_at_precision(points).param == 0.3
    assert best_at_precision(points, min_precision=0.999).param == 0.4
    assert best_at_precision(points[:1]) is None


def test_cosine_to_euclidean() -> None:
    assert cosine_to_euclidean(1.0) == 0.0
    assert cosine_to_euclidean(0.0) == pytest.approx(math.sqrt(2))
    a, b = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    assert cosine_to_euclidean(a @ b) == pytest.approx(np.linalg.norm(a - b))


def two_people() -> tuple[np.ndarray, list[str]]:
    # Three faces near each of two orthogonal directions (cosine ~0.99 within, ~0 between).
    rng = np.random.default_rng(0)
    centres = np.eye(8)[[0, 0, 0, 1, 1, 1]]
    vectors = centres + 0.05 * rng.standard_normal(centres.shape)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), list("aaabbb")


def test_chinese_whispers_splits_two_clear_people() -> None:
    vectors, truth = two_people()
    labels = chinese_whispers(vectors, 0.9).labels
    assert pairwise_scores(truth, labels) == ClusterScores(1.0, 1.0, 1.0)


def test_evaluate_clustering_with_a_method_of_ones_own() -> None:
    vectors, truth = two_people()

    def by_threshold(v: np.ndarray, threshold: float) -> np.ndarray:
        # Everything together below the two people's similarity, everything apart above.
        return np.zeros(len(v), int) if threshold < 0.5 else np.full(len(v), -1)

    result = evaluate_clustering(vectors, truth,
                                 {"mine": ClusterMethod(by_threshold, [0.3, 0.9])})
    low, high = result.points["mine"]
    assert low.pairwise.precision == pytest.approx(6 / 15) and low.clusters == 1
    assert high.pairwise == ClusterScores(1.0, 0.0, 0.0) and high.clustered_faces == 0
    assert result.best("mine") is high  # the only point at precision >= 0.99
    assert result.best_any("mine") is low
    report = json.loads(json.dumps(result.as_dict()))
    assert report["methods"]["mine"]["best_at_precision"]["param"] == 0.9
    assert report["dataset"]["identities_with_pairs"] == 2
