"""Fuzz the pipeline with damaged real photos; report crashes, hangs and the slowest case.

    .venv/bin/python -m tests.fuzz.run_fuzz [--cases 10000] [--seed 1] [--timeout 30]

Cases run in a child process that the parent restarts after a crash (the child died) or a
hang (no answer within --timeout seconds), so one bad file cannot stop the run.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FACES = Path(os.environ.get("FACEID_SHARED", REPO.parent / "shared")) / "faces"


def worker(seed: int, indices: mp.Queue, results: mp.Queue) -> None:
    import torch

    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline
    from tests.fuzz.mutations import make_case, source_photos

    torch.set_num_threads(1)
    pipeline = Pipeline(ModelStore(REPO / "face_models"))
    pipeline.load()
    sources = source_photos(FACES)
    with tempfile.TemporaryDirectory() as folder:
        while True:
            index = indices.get()
            if index is None:
                return
            case = make_case(sources, seed, index)
            path = Path(folder) / f"case{case.suffix}"
            path.write_bytes(case.data)
            started = time.perf_counter()
            try:
                (result,) = list(pipeline.run([path]))
                outcome = "error" if result.error else f"faces={len(result.faces)}"
            except Exception as exc:  # an escaped exception is a crash of the pipeline
                outcome = f"CRASH {type(exc).__name__}: {exc}"
            results.put((index, case.mutation, outcome, time.perf_counter() - started))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one case may take before it counts as a hang")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    crashes: list[str] = []
    hangs: list[int] = []
    outcomes: Counter[str] = Counter()
    slowest = (0.0, -1, "")
    next_index = 0
    started = time.perf_counter()
    while next_index < args.cases:
        indices, results = context.Queue(), context.Queue()
        child = context.Process(target=worker, args=(args.seed, indices, results), daemon=True)
        child.start()
        first_answer = True
        while next_index < args.cases:
            indices.put(next_index)
            try:
                wait = args.timeout + (120 if first_answer else 0)  # the first loads models
                index, mutation, outcome, seconds = results.get(timeout=wait)
            except queue.Empty:
                if child.is_alive():
                    hangs.append(next_index)
                    print(f"case {next_index}: HANG (> {args.timeout:.0f} s)", flush=True)
                else:
                    crashes.append(f"case {next_index}: child died, exit {child.exitcode}")
                    print(crashes[-1], flush=True)
                child.kill()
                next_index += 1
                break
            first_answer = False
            next_index += 1
            kind = outcome.split("=")[0].split(" ")[0]
            outcomes[kind] += 1
            if outcome.startswith("CRASH"):
                crashes.append(f"case {index} ({mutation}): {outcome}")
                print(crashes[-1], flush=True)
            if seconds > slowest[0]:
                slowest = (seconds, index, mutation)
            if next_index % 500 == 0:
                print(f"{next_index}/{args.cases} cases, {len(crashes)} crashes, "
                      f"{len(hangs)} hangs", flush=True)
        else:
            indices.put(None)
            child.join(timeout=30)
    elapsed = time.perf_counter() - started
    print(f"\n{args.cases} cases (seed {args.seed}) in {elapsed:.0f} s: "
          f"{dict(outcomes)}; crashes {len(crashes)}; hangs {len(hangs)}; slowest case "
          f"{slowest[1]} ({slowest[2]}) {slowest[0]:.2f} s")
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
