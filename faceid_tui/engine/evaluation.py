"""Verification on labelled pairs: embed both photos of each pair through the real pipeline
and measure how well a cosine threshold separates same from different people."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid_tui.engine.pipeline import Pipeline


@dataclass(frozen=True)
class PairsEvaluation:
    pairs: int
    same: int
    different: int
    threshold: float
    accuracy: float
    best_accuracy: float
    best_threshold_low: float
    best_threshold_high: float
    no_face: int
    errors: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def read_pairs_csv(csv_path: Path) -> list[tuple[Path, Path, bool]]:
    """``path_a,path_b,same`` rows; relative paths are relative to the CSV's folder."""
    base = Path(csv_path).parent
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path_a", "path_b", "same"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        return [(base / row["path_a"], base / row["path_b"], row["same"].strip() in ("1", "true"))
                for row in reader]


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(((scores >= threshold) == same).mean()) if len(scores) else 0.0


def best_threshold_interval(scores: np.ndarray, same: np.ndarray) -> tuple[float, float, float]:
    """``(best accuracy, lowest, highest threshold reaching it)`` over every cut point."""
    cuts = np.unique(np.concatenate([scores, [scores.max() + 1e-6]]))
    accuracies = np.array([accuracy_at(scores, same, float(t)) for t in cuts])
    best = accuracies.max()
    winners = np.nonzero(accuracies == best)[0]
    low = float(cuts[winners[0]])
    high_index = winners[-1]
    # Every threshold in (previous score, this cut] gives the same decisions.
    high = float(cuts[high_index])
    return float(best), low, high


def evaluate_pairs(pipeline: Pipeline, csv_path: Path, threshold: float) -> PairsEvaluation:
    """Accuracy of ``threshold`` on a pairs CSV (largest face; centre crop when none found)."""
    pairs = read_pairs_csv(csv_path)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    vectors: dict[Path, np.ndarray] = {}
    errors: dict[str, str] = {}
    no_face = 0
    for result in pipeline.run(paths, fallback_center=True):
        if result.error:
            errors[str(result.path)] = result.error
            continue
        face = result.largest_face()
        if face is None or face.embedding is None:
            continue
        no_face += int(face.fallback)
        vectors[result.path] = face.embedding
    usable = [(a, b, s) for a, b, s in pairs if a in vectors and b in vectors]
    scores = np.array([float(vectors[a] @ vectors[b]) for a, b, _ in usable])
    same = np.array([s for _, _, s in usable], dtype=bool)
    best, low, high = best_threshold_interval(scores, same) if len(usable) else (0.0, 0.0, 0.0)
    return PairsEvaluation(
        pairs=len(usable), same=int(same.sum()), different=int((~same).sum()),
        threshold=threshold, accuracy=accuracy_at(scores, same, threshold),
        best_accuracy=best, best_threshold_low=low, best_threshold_high=high,
        no_face=no_face, errors=errors,
    )
