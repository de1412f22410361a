"""How often strangers pass the open-set threshold, measured on simulated banks from LFW.

    .venv/bin/python benchmarks/open_set_thresholds.py --embeddings /tmp/lfw.npz [--repeats 5]

Every LFW image is embedded once through the default pipeline (largest face; the file given
by ``--embeddings`` caches the vectors, ``faceid eval identification --embeddings`` writes the
same file). Then banks of ``n`` identities × ``m`` samples are drawn (seeded) from the people
with more than ``m`` images; their other images are the probes, and the images of people not
in the bank are the strangers. For each bank and each way of scoring an identity (its best
sample, the mean of its best two, its centroid), it prints at the threshold of each policy:

* ``samples`` — today's rule: FPIR ``1 - (1 - FAR)^n`` with ``n`` = samples in the bank;
* ``identities`` — the same rule, ``n`` = identities;
* ``oracle`` — the threshold that lets exactly the target share of these strangers pass
  (not available to a real bank; the best a threshold can do here),

the measured FPIR (strangers whose best identity scores at or above it) and TPIR (probes whose
best identity is right and at or above it). Last, the number of independent comparisons a
stranger effectively gets (``n_eff``, from the oracle threshold and the impostor curve) for
each bank shape: what :mod:`faceid_tui.bank.thresholds` models.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def far_at(curve: object, threshold: float) -> float:
    """Inverse of ImpostorCurve.threshold_at: the per-comparison FAR at ``threshold``
    (log-linear between the measured points, clamped to their range)."""
    points = curve.points  # type: ignore[attr-defined]
    if threshold <= points[0][1]:
        return points[0][0]
    for (far_hi, t_lo), (far_lo, t_hi) in itertools.pairwise(points):
        if t_lo <= threshold <= t_hi:
            share = (threshold - t_lo) / (t_hi - t_lo)
            return 10 ** (math.log10(far_hi) + share * (math.log10(far_lo) - math.log10(far_hi)))
    return points[-1][0]


def identity_scores(queries: np.ndarray, gallery: np.ndarray, rule: str) -> np.ndarray:
    """``Q × n`` scores of each query against ``gallery`` (``n × m × D``) by ``rule``."""
    similarities = np.einsum("qd,nmd->qnm", queries, gallery)
    if rule == "max":
        return similarities.max(axis=2)
    if rule == "mean2":
        top = np.sort(similarities, axis=2)[:, :, -2:]
        return top.mean(axis=2)
    centroids = gallery.mean(axis=1)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return queries @ centroids.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, default=SHARED / "lfw")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--embedder", default="auto")
    parser.add_argument("--detector", default="auto",
                        help="the pipeline's detector (the cache is kept per detector)")
    parser.add_argument("--fpir", type=float, default=0.01)
    parser.add_argument("--strangers", type=int, default=2000)
    parser.add_argument("--sizes", default="10,30,100,300,1000")
    parser.add_argument("--shots", default="1,2,3,5,8")
    args = parser.parse_args()

    from faceid_tui.bank.open_set_eval import load_or_embed_lfw
    from faceid_tui.bank.thresholds import IMPOSTOR_CURVES, curve_threshold
    from faceid_tui.config import Settings, build_pipeline
    from faceid_tui.engine.evaluation import far_for_fpir

    pipeline = build_pipeline(Settings(detector=args.detector, embedder=args.embedder))
    loaded = load_or_embed_lfw(pipeline, args.lfw, args.embeddings)
    vectors, identities = loaded.vectors, loaded.identities
    model_id = pipeline.model_id
    curve = IMPOSTOR_CURVES[model_id]
    by_person: dict[str, list[int]] = defaultdict(list)
    for row, person in enumerate(identities):
        by_person[person].append(row)
    people = sorted(by_person)
    print(f"{len(vectors)} LFW images of {len(people)} people, model {model_id}, "
          f"target FPIR {args.fpir:.1%}, {args.repeats} draws per bank shape")
    rules = ("max", "mean2", "centroid")
    shapes = [(m, n) for m in (int(v) for v in args.shots.split(","))
              for n in (int(v) for v in args.sizes.split(","))]
    # Two independent sets of draws: the first fits each rule's n_eff, the second measures
    # the fitted policy, so the fit is not judged on the banks it was read from.
    fit_draws = draw_banks(by_person, people, shapes, args, np.random.default_rng(0))
    test_draws = draw_banks(by_person, people, shapes, args, np.random.default_rng(1))
    tables = {rule: comparisons_per_identity(fit_draws, vectors, rule, curve, args.fpir)
              for rule in rules}
    for rule, table in tables.items():
        points = ", ".join(f"({m}, {value:.2f})" for m, value in table.items())
        print(f"comparisons per identity of m samples ({rule}): {points}")
    header = (f"{'m':>2} {'n':>5} {'rule':>8} | {'samples rule: thr FPIR TPIR':>28} | "
              f"{'n · table(m): thr FPIR TPIR':>28} | {'oracle: thr TPIR':>17} | n_eff")
    print(header)
    print("-" * len(header))
    for (shots, size), banks in test_draws.items():
        for rule in rules:
            if rule == "mean2" and shots == 1:
                continue
            n_eff = size * tables[rule][shots]
            fitted = curve.threshold_at(far_for_fpir(args.fpir, max(1, round(n_eff))))[0]
            rows = []
            for bank in banks:
                probe_best, probe_right, stranger = score_bank(bank, vectors, rule)
                oracle = float(np.quantile(stranger, 1 - args.fpir, method="higher"))
                row: list[float] = []
                for threshold in (curve_threshold(model_id, size * shots, args.fpir).value,
                                  fitted):
                    row += [threshold, float((stranger >= threshold).mean()),
                            float((probe_right & (probe_best >= threshold)).mean())]
                row += [oracle, float((probe_right & (probe_best >= oracle)).mean()),
                        math.log(1 - args.fpir) / math.log(1 - far_at(curve, oracle))]
                rows.append(row)
            mean = [statistics.fmean(column) for column in zip(*rows, strict=True)]
            print(f"{shots:>2} {size:>5} {rule:>8} | {mean[0]:.4f} {mean[1]:6.2%} {mean[2]:6.2%}"
                  f"      | {mean[3]:.4f} {mean[4]:6.2%} {mean[5]:6.2%}      | "
                  f"{mean[6]:.4f} {mean[7]:6.2%}  | {mean[8]:7.1f}")
    sys.stdout.flush()


Bank = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # gallery, probes, truth, strangers


def draw_banks(by_person: dict[str, list[int]], people: list[str],
               shapes: list[tuple[int, int]], args: argparse.Namespace,
               rng: np.random.Generator) -> dict[tuple[int, int], list[Bank]]:
    """``args.repeats`` banks of each ``(m, n)`` shape: row numbers of the gallery (n × m),
    of the probes with their identity's number, and of the strangers."""
    draws: dict[tuple[int, int], list[Bank]] = {}
    for shots, size in shapes:
        eligible = [p for p in people if len(by_person[p]) > shots]
        if size > len(eligible):
            continue
        for _ in range(args.repeats):
            chosen = rng.choice(len(eligible), size=size, replace=False)
            gallery, probes, truth = [], [], []
            for number, index in enumerate(chosen):
                rows = rng.permutation(by_person[eligible[index]])
                gallery.append(rows[:shots])
                probes.extend(rows[shots:].tolist())
                truth.extend([number] * (len(rows) - shots))
            members = {eligible[i] for i in chosen}
            strangers = np.array([r for p in people if p not in members for r in by_person[p]])
            if len(strangers) > args.strangers:
                strangers = rng.choice(strangers, args.strangers, replace=False)
            draws.setdefault((shots, size), []).append(
                (np.stack(gallery), np.array(probes), np.array(truth), strangers))
    return draws


def score_bank(bank: Bank, vectors: np.ndarray,
               rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each probe's best score and whether its best identity is right; each stranger's best."""
    gallery_rows, probe_rows, truth, stranger_rows = bank
    gallery = vectors[gallery_rows]
    probe = identity_scores(vectors[probe_rows], gallery, rule)
    stranger = identity_scores(vectors[stranger_rows], gallery, rule).max(axis=1)
    return probe.max(axis=1), probe.argmax(axis=1) == truth, stranger


def comparisons_per_identity(draws: dict[tuple[int, int], list[Bank]], vectors: np.ndarray,
                             rule: str, curve: object, fpir: float) -> dict[int, float]:
    """For each ``m``: how many independent comparisons one identity of ``m`` samples gives a
    stranger (geometric mean over the bank sizes and draws of ``n_eff / n``, where ``n_eff``
    puts the impostor curve's threshold where ``fpir`` of the strangers pass)."""
    logs: dict[int, list[float]] = defaultdict(list)
    for (shots, size), banks in draws.items():
        if rule == "mean2" and shots == 1:
            continue
        for bank in banks:
            _, _, stranger = score_bank(bank, vectors, rule)
            oracle = float(np.quantile(stranger, 1 - fpir, method="higher"))
            n_eff = math.log(1 - fpir) / math.log(1 - far_at(curve, oracle))
            logs[shots].append(math.log(max(n_eff, 1e-9) / size))
    return {shots: math.exp(statistics.fmean(values)) for shots, values in sorted(logs.items())}


if __name__ == "__main__":
    main()
