"""LFW identification under main's matching rules and under today's, on the same vectors.

    .venv/bin/python benchmarks/identification_policies.py --embeddings lfw.npz [--shots 1 3]

The split is ``faceid eval identification``'s (people with >= 5 images enrolled with
``--shots`` images each, their other images as probes, one image each of 1,000 people with
fewer as strangers, seed 0), and the vectors come from the cache that command writes
(``--embeddings``). Printed per policy: the ``known`` threshold, the share of probes ``known``
and right, and the share of strangers given ``known``:

* **main** — each identity scored by its best sample, FPIR counted over every sample,
  runner-up margin 0.05 (the rules before the tiers);
* **now** — centroid scoring, the measured stranger model, the model's margin
  (:mod:`faceid_tui.bank.thresholds`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", type=Path, required=True)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 3])
    args = parser.parse_args()

    from faceid_tui.bank.matching import BEST_SAMPLE, Matcher
    from faceid_tui.bank.open_set_eval import split_identification
    from faceid_tui.bank.thresholds import bank_thresholds, curve_threshold

    cache = np.load(args.embeddings, allow_pickle=False)
    paths = [str(p) for p in cache["paths"]]
    vectors, model_id = cache["vectors"], str(cache["model_id"])
    row = {path: number for number, path in enumerate(paths)}
    people: dict[str, list[str]] = {}
    for path in paths:
        people.setdefault(Path(path).parent.name, []).append(path)
    print(f"model {model_id}, detector {cache['detector']}")
    for shots in args.shots:
        split = split_identification(people, shots=shots, strangers=1000, seed=0)
        names = [Path(p).parent.name for p in split.gallery]
        gallery = vectors[[row[p] for p in split.gallery]]
        chosen = bank_thresholds(model_id, len(set(names)), len(names))
        policies = {
            "main": Matcher(names, gallery, threshold=curve_threshold(model_id, len(names)).value,
                            ambiguous_margin=0.05, scoring=BEST_SAMPLE),
            "now": Matcher(names, gallery, threshold=chosen.known.value,
                           likely_threshold=chosen.likely.value, ambiguous_margin=chosen.margin),
        }
        truth = [Path(p).parent.name for p in split.probes]
        for label, matcher in policies.items():
            probes = [m[0] for m in matcher.match_photos([vectors[row[p]] for p in split.probes])]
            strangers = [m[0] for m in
                         matcher.match_photos([vectors[row[p]] for p in split.strangers])]
            right = np.mean([m.status == "known" and m.name == t
                             for m, t in zip(probes, truth, strict=True)])
            passed = np.mean([m.status == "known" for m in strangers])
            print(f"{shots}-shot {label:>4}: known threshold {matcher.threshold:.4f} · probes "
                  f"known and right {right:.2%} · strangers known {passed:.2%}")


if __name__ == "__main__":
    main()
