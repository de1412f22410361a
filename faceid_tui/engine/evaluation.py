"""Verification on labelled pairs: embed both photos of each pair through the real pipeline
and measure how well a cosine threshold separates same from different people.

``evaluate_pairs`` scores any ``path_a,path_b,same`` CSV at one threshold; ``evaluate_lfw``
runs LFW's View 2 protocol (10 folds, threshold chosen on the other nine) and the usual
curve figures: ROC AUC, equal error rate, TAR at fixed FARs."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid_tui.engine.pipeline import FaceResult, PhotoResult, Pipeline


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
    # For plots; not part of the JSON report.
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    same_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in self.__dict__.items()
                if key not in ("scores", "same_labels")}


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
    """``(best accuracy, low, high)``: every threshold ``t`` with ``low < t <= high`` reaches the
    best accuracy (a pair is "same" when its score is ``>= t``)."""
    cuts = np.unique(np.concatenate([scores, [scores.max() + 1e-6]]))
    accuracies = np.array([accuracy_at(scores, same, float(t)) for t in cuts])
    best = accuracies.max()
    winners = np.nonzero(accuracies == best)[0]
    first, last = winners[0], winners[-1]
    # A threshold between the previous score and a cut decides exactly like the cut.
    low = float(cuts[first - 1]) if first > 0 else float(cuts[first]) - 1e-6
    return float(best), low, float(cuts[last])


@dataclass
class PhotoVectors:
    """One embedding per photo, and how it was found."""

    vectors: dict[Path, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    no_face: int = 0  # photos embedded from a centre crop
    several_faces: int = 0


def embed_one_face_each(pipeline: Pipeline, paths: list[Path],
                        choose: Callable[[PhotoResult], FaceResult | None]) -> PhotoVectors:
    """Embed the face ``choose`` picks in each photo (a centre crop when none is detected)."""
    found = PhotoVectors()
    for result in pipeline.run(paths, fallback_center=True):
        if result.error:
            found.errors[str(result.path)] = result.error
            continue
        face = choose(result)
        if face is None or face.embedding is None:
            continue
        found.no_face += int(face.fallback)
        found.several_faces += int(len(result.faces) > 1)
        found.vectors[result.path] = face.embedding
    return found


def evaluate_pairs(pipeline: Pipeline, csv_path: Path, threshold: float) -> PairsEvaluation:
    """Accuracy of ``threshold`` on a pairs CSV (largest face; centre crop when none found)."""
    pairs = read_pairs_csv(csv_path)
    paths = sorted({p for a, b, _ in pairs for p in (a, b)})
    found = embed_one_face_each(pipeline, paths, PhotoResult.largest_face)
    vectors, errors, no_face = found.vectors, found.errors, found.no_face
    usable = [(a, b, s) for a, b, s in pairs if a in vectors and b in vectors]
    scores = np.array([float(vectors[a] @ vectors[b]) for a, b, _ in usable])
    same = np.array([s for _, _, s in usable], dtype=bool)
    best, low, high = best_threshold_interval(scores, same) if len(usable) else (0.0, 0.0, 0.0)
    return PairsEvaluation(
        pairs=len(usable), same=int(same.sum()), different=int((~same).sum()),
        threshold=threshold, accuracy=accuracy_at(scores, same, threshold),
        best_accuracy=best, best_threshold_low=low, best_threshold_high=high,
        no_face=no_face, errors=errors, scores=scores, same_labels=same,
    )


# -- LFW View 2 -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LfwPair:
    fold: int
    path_a: Path
    path_b: Path
    same: bool


def read_lfw_pairs(lfw_dir: Path) -> list[LfwPair]:
    """The 6,000 pairs of ``pairs.txt`` (10 folds × 300 matched + 300 mismatched)."""
    lfw_dir = Path(lfw_dir)
    images = lfw_dir / "images" if (lfw_dir / "images").is_dir() else lfw_dir
    lines = (lfw_dir / "pairs.txt").read_text().split("\n")
    folds, per_class = (int(v) for v in lines[0].split())

    def image(name: str, number: str) -> Path:
        return images / name / f"{name}_{int(number):04d}.jpg"

    pairs = []
    rows = [line.split() for line in lines[1:] if line.strip()]
    if len(rows) != folds * 2 * per_class:
        raise ValueError(f"{lfw_dir / 'pairs.txt'} should list {folds * 2 * per_class} pairs")
    for index, row in enumerate(rows):
        fold = index // (2 * per_class)
        if len(row) == 3:
            pairs.append(LfwPair(fold, image(row[0], row[1]), image(row[0], row[2]), True))
        else:
            pairs.append(LfwPair(fold, image(row[0], row[1]), image(row[2], row[3]), False))
    return pairs


def subset(pairs: list[LfwPair], limit: int) -> list[LfwPair]:
    """About ``limit`` pairs spread evenly over folds and both classes."""
    per_group = max(1, limit // 20)
    kept: list[LfwPair] = []
    for fold in sorted({p.fold for p in pairs}):
        for same in (True, False):
            kept += [p for p in pairs if p.fold == fold and p.same == same][:per_group]
    return kept


def fold_accuracies(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> list[float]:
    """Accuracy on each fold at the threshold that is best on all the other folds."""
    results = []
    for fold in np.unique(folds):
        train = folds != fold
        _, low, high = best_threshold_interval(scores[train], same[train])
        results.append(accuracy_at(scores[~train], same[~train], (low + high) / 2))
    return results


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Probability that a random matched pair outscores a random mismatched one."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # ties share their mean rank
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    positives, negatives = same.sum(), (~same).sum()
    return float((ranks[same].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def far_frr(scores: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    far = float((scores[~same] >= threshold).mean())
    frr = float((scores[same] < threshold).mean())
    return far, frr


def equal_error_rate(scores: np.ndarray, same: np.ndarray) -> float:
    best = (2.0, 1.0)
    for threshold in np.unique(scores):
        far, frr = far_frr(scores, same, float(threshold))
        if abs(far - frr) < best[0]:
            best = (abs(far - frr), (far + frr) / 2)
    return best[1]


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """``(TAR, threshold)`` at the lowest threshold whose false-accept rate is ≤ ``far``."""
    impostors = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostors)))  # impostors that may pass
    threshold = float(impostors[allowed]) + 1e-9 if allowed < len(impostors) else -1.0
    return float((scores[same] >= threshold).mean()), threshold


#: Per-comparison FARs at which ``evaluate_lfw`` reports the impostor curve.
CURVE_FARS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)
#: Bank sizes (samples a stranger is compared with) for the open-set figures.
OPEN_SET_BANKS = (1, 10, 100, 1000)
OPEN_SET_FPIR = 0.01


def far_for_fpir(fpir: float, comparisons: int) -> float:
    """Per-comparison FAR that gives ``fpir`` over ``comparisons`` independent comparisons:
    ``FPIR = 1 - (1 - FAR) ** n``."""
    return 1.0 - (1.0 - fpir) ** (1.0 / max(1, comparisons))


def fpir_for_far(far: float, comparisons: int) -> float:
    return 1.0 - (1.0 - far) ** max(1, comparisons)


def pair_scores(vectors: np.ndarray, identities: list[str],
                block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """``(genuine, impostor)``: cosine similarity of every pair of rows (each pair once) with
    the same identity, and with different identities."""
    labels = np.array(identities, dtype=object)
    vectors = np.asarray(vectors, dtype=np.float32)
    genuine, impostor = [], []
    for start in range(0, len(vectors), block):
        rows = slice(start, start + block)
        scores = vectors[rows] @ vectors.T
        index = np.arange(start, min(start + block, len(vectors)))
        later = np.arange(len(vectors))[None, :] > index[:, None]
        same = labels[rows][:, None] == labels[None, :]
        genuine.append(scores[later & same])
        impostor.append(scores[later & ~same])
    if not genuine:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(genuine), np.concatenate(impostor)


def highest_first(scores: np.ndarray) -> np.ndarray:
    """Scores sorted from the highest: sort millions of impostors once, then read many FARs."""
    return np.sort(scores)[::-1]


def threshold_at_far(ranked: np.ndarray, far: float) -> float:
    """The lowest threshold that at most ``far`` of the impostor scores reach; ``ranked`` is
    :func:`highest_first` of them."""
    allowed = int(np.floor(far * len(ranked)))
    return float(ranked[min(allowed, len(ranked) - 1)]) + 1e-6


def impostor_curve(ranked: np.ndarray,
                   fars: tuple[float, ...] = CURVE_FARS) -> list[tuple[float, float]]:
    """``(far, threshold)`` with ``far`` of the impostor scores ``>= threshold`` (``ranked``:
    :func:`highest_first` of them); FARs that fewer than 10 impostors would measure are left
    out."""
    curve = []
    for far in fars:
        if far * len(ranked) < 10:
            break
        # Rounded up, so that the stored threshold keeps the FAR it promises.
        curve.append((far, math.ceil(threshold_at_far(ranked, far) * 1e4) / 1e4))
    return curve


@dataclass(frozen=True)
class OpenSetPoint:
    """What a bank of ``bank_samples`` needs for FPIR = ``fpir``, measured on LFW images."""

    bank_samples: int
    fpir: float
    far: float
    threshold: float
    genuine_accepted: float  # share of same-person image pairs at or above the threshold


def open_set_points(genuine: np.ndarray, ranked: np.ndarray,
                    fpir: float = OPEN_SET_FPIR) -> list[OpenSetPoint]:
    """The open-set table; ``ranked`` is :func:`highest_first` of the impostor scores."""
    points = []
    for samples in OPEN_SET_BANKS:
        far = far_for_fpir(fpir, samples)
        if far * len(ranked) < 10:  # fewer than 10 impostors above: not measurable
            break
        threshold = threshold_at_far(ranked, far)
        points.append(OpenSetPoint(samples, fpir, far, threshold,
                                   round(float((genuine >= threshold).mean()), 4)))
    return points


@dataclass
class LfwEvaluation:
    pairs: int
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    roc_auc: float
    eer: float
    tar_at_far_1e2: float
    tar_at_far_1e3: float
    images: int
    no_face_center_crop: int
    several_faces_nearest_center: int
    impostor_pairs: int = 0
    impostor_curve: list[tuple[float, float]] = field(default_factory=list)
    genuine_pairs: int = 0
    open_set: list[OpenSetPoint] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    # For plots; not part of the JSON report.
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    same: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)

    def as_dict(self) -> dict[str, object]:
        report = {key: value for key, value in self.__dict__.items()
                  if key not in ("scores", "same")}
        report["open_set"] = [point.__dict__ for point in self.open_set]
        return report


def evaluate_lfw(pipeline: Pipeline, lfw_dir: Path, limit: int | None = None) -> LfwEvaluation:
    """LFW View 2 through the real pipeline. A photo with no detected face is embedded from a
    centre crop (counted); with several faces the one nearest the centre is scored."""
    started = time.perf_counter()
    pairs = read_lfw_pairs(lfw_dir)
    if limit:
        pairs = subset(pairs, limit)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    found = embed_one_face_each(pipeline, paths, PhotoResult.central_face)
    vectors = found.vectors
    usable = [p for p in pairs if p.path_a in vectors and p.path_b in vectors]
    scores = np.array([float(vectors[p.path_a] @ vectors[p.path_b]) for p in usable])
    same = np.array([p.same for p in usable], dtype=bool)
    folds = np.array([p.fold for p in usable])
    accuracies = fold_accuracies(scores, same, folds)
    embedded = sorted(vectors)
    genuine, impostors = pair_scores(np.stack([vectors[p] for p in embedded]),
                                     [p.parent.name for p in embedded])
    ranked = highest_first(impostors)
    return LfwEvaluation(
        pairs=len(usable), accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)), fold_accuracies=accuracies,
        roc_auc=roc_auc(scores, same), eer=equal_error_rate(scores, same),
        tar_at_far_1e2=tar_at_far(scores, same, 1e-2)[0],
        tar_at_far_1e3=tar_at_far(scores, same, 1e-3)[0],
        images=len(paths), no_face_center_crop=found.no_face,
        several_faces_nearest_center=found.several_faces,
        impostor_pairs=len(impostors), impostor_curve=impostor_curve(ranked),
        genuine_pairs=len(genuine), open_set=open_set_points(genuine, ranked),
        errors=found.errors, seconds=time.perf_counter() - started, scores=scores, same=same,
    )
