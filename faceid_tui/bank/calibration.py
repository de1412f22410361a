"""``faceid calibrate``: the user's own bank measured against itself.

Genuine scores are the cosine similarities between samples of the same identity, impostor
scores those between samples of different identities. From them: the threshold that keeps the
false-positive identification rate (a stranger given a name) at the target FPIR for a bank of
this size, and the share of known people that threshold would leave unnamed (each sample
matched, leave-one-out, against the centroid of the rest of its identity, as matching does).

A per-comparison FAR of ``f`` can only be read off the bank when at least
:data:`MIN_IMPOSTORS_ABOVE` impostor scores lie above the threshold, i.e. with
``MIN_IMPOSTORS_ABOVE / f`` impostor pairs or more. Smaller banks (the usual case: a bank of
67 photos has ~2,100 impostor pairs, while FPIR 1 % needs FAR 1.5e-4, so ~66,000 pairs) keep the
threshold of the impostor curve measured on LFW for the same model, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from faceid_tui.bank.thresholds import (
    DEFAULT_FPIR,
    ThresholdChoice,
    effective_comparisons,
    far_for_fpir,
    open_set_threshold,
)
from faceid_tui.engine.evaluation import highest_first, threshold_at_far

MIN_IMPOSTORS_ABOVE = 10
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


@dataclass
class Calibration:
    model_id: str
    identities: int
    samples: int
    fpir: float
    far: float  # per-comparison FAR that gives ``fpir`` over ``samples`` comparisons
    threshold: ThresholdChoice
    bank_threshold: float | None  # read off the bank's impostors when it has enough of them
    curve: ThresholdChoice  # the built-in impostor curve's threshold for this bank size
    impostors_needed: int
    unnamed_share: float | None  # known people left unnamed at the threshold
    notes: list[str] = field(default_factory=list)
    genuine: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    impostor: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    best_genuine: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)

    def quantiles(self, scores: np.ndarray) -> list[float]:
        return [round(float(q), 4) for q in np.quantile(scores, QUANTILES)] if len(scores) else []

    def as_dict(self) -> dict[str, object]:
        return {
            "model": self.model_id, "identities": self.identities, "samples": self.samples,
            "fpir": self.fpir, "far_per_comparison": self.far,
            "threshold": self.threshold.as_dict(),
            "bank_threshold": None if self.bank_threshold is None else
            round(self.bank_threshold, 4),
            "curve_threshold": self.curve.as_dict(),
            "genuine_pairs": len(self.genuine), "impostor_pairs": len(self.impostor),
            "impostor_pairs_needed": self.impostors_needed,
            "quantile_levels": list(QUANTILES),
            "genuine_quantiles": self.quantiles(self.genuine),
            "impostor_quantiles": self.quantiles(self.impostor),
            "unnamed_share": self.unnamed_share, "notes": self.notes,
        }


def calibrate(names: list[str], samples: np.ndarray, model_id: str,
              fpir: float = DEFAULT_FPIR) -> Calibration:
    """Measure one bank (``names[i]`` is the identity of row ``i`` of ``samples``)."""
    count = len(names)
    labels = np.array(names, dtype=object)
    vectors = np.asarray(samples, dtype=np.float32).reshape(count, -1)
    similarities = vectors @ vectors.T if count else np.zeros((0, 0), np.float32)
    same = labels[:, None] == labels[None, :] if count else np.zeros((0, 0), bool)
    upper = np.triu(np.ones((count, count), dtype=bool), k=1)
    genuine = similarities[upper & same]
    impostor = similarities[upper & ~same]

    # Leave-one-out, as matching scores: each sample against the centroid of the other samples
    # of its identity (bank/matching.py scores identities by their centroid).
    best_genuine = leave_one_out_scores(labels, vectors)

    identities = len(set(names))
    curve = open_set_threshold(model_id, identities, count, fpir)
    far = far_for_fpir(fpir, max(1, round(effective_comparisons(model_id, identities, count))))
    needed = int(np.ceil(MIN_IMPOSTORS_ABOVE / far))
    notes: list[str] = []
    bank_threshold = None
    if identities < 2:
        notes.append("fewer than 2 identities: no impostor scores at all")
    if len(impostor) >= needed:
        bank_threshold = threshold_at_far(highest_first(impostor), far)
        threshold = ThresholdChoice(bank_threshold, "calibrated",
                                    f"bank impostors: {len(impostor)} pairs, FAR {far:.1e}")
    else:
        threshold = curve
        notes.append(f"the bank has {len(impostor):,} impostor pairs; reading FAR {far:.1e} off "
                     f"it needs {needed:,} or more, so the threshold comes from the model's "
                     "impostor curve measured on LFW")
    unnamed = None
    if len(best_genuine):
        unnamed = float((best_genuine < threshold.value).mean())
    else:
        notes.append("no identity has two samples: the share of known people left unnamed "
                     "cannot be measured")
    return Calibration(model_id, identities, count, fpir, far, threshold, bank_threshold,
                       curve, needed, unnamed, notes, genuine, impostor, best_genuine)


def leave_one_out_scores(labels: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each sample's score against the normalised mean of the other samples of its identity
    (identities of one sample have none and are left out)."""
    scores = []
    for name in dict.fromkeys(labels.tolist()):
        rows = vectors[labels == name]
        if len(rows) < 2:
            continue
        total = rows.sum(axis=0)
        for row in rows:
            rest = total - row
            norm = float(np.linalg.norm(rest))
            if norm > 0:
                scores.append(float(row @ rest) / norm)
    return np.array(scores, dtype=np.float32)


def histogram(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; scores outside the edges go to the first or last bin."""
    clipped = np.clip(scores, edges[0], edges[-1] - 1e-9)
    return np.histogram(clipped, bins=edges)[0]
