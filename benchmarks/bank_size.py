"""Matching time per face and memory against bank size, exact against index-backed.

    .venv/bin/python benchmarks/bank_size.py [--sizes 1000 10000 100000 1000000]
        [--threads N] [--batch 32] [--single-faces 32] [--repeats 5] [--queries 1000]
        [--noise 1.0]

For each size, a bank of random 512-d unit vectors (float32, three samples per identity)
is matched once exactly and once through the approximate index (forced with
``index_min_samples``). Printed per size and path, as a Markdown table:

* build: ``Matcher(...)`` construction, plus the index build on the index path;
* ms/face: ``match_photo`` time divided by the faces matched, median of ``--repeats`` runs,
  for photos of ``--batch`` faces and for one-face photos (the common case, where exact
  search reads the whole matrix for a single face);
* memory: the sample matrix, the index (usearch's own count), and the process's peak RSS
  so far (``getrusage``; sizes run in ascending order, so it is the largest bank's peak);
* top-1 agreement: share of ``--queries`` noisy copies of bank samples (moved by a random
  vector of norm ``--noise``; 1.0 is cosine ~0.7) whose best identity through the index is
  exact search's best identity.

Random vectors are the hard case for a graph index (real embeddings cluster by person), so
the agreement here is a floor. Rows go to stderr as each finishes (10^6 takes a while), the
whole table to stdout at the end. ``--threads`` sets BLAS and usearch's search threads (the
index is built on one: bank/index.py THREADS; default: every core this process may use);
with fewer cores than threads the figures are meaningless.
Numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    import numpy as np

    from faceid_tui.bank.matching import Matcher

DIM = 512
SAMPLES_PER_IDENTITY = 3


def unit_rows(rng: np.random.Generator, count: int) -> np.ndarray:
    import numpy as np

    rows = rng.standard_normal((count, DIM), dtype=np.float32)
    # In place, in chunks: a million rows are 2 GB, and a temporary of that size would count.
    for start in range(0, count, 65_536):
        chunk = rows[start:start + 65_536]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
    return rows


def per_face_ms(matcher: Matcher, queries: np.ndarray, batch: int, repeats: int) -> float:
    """Median over repeats of one pass over ``queries`` in photos of ``batch`` faces."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(queries), batch):
            matcher.match_photo(queries[first:first + batch])
        times.append((time.perf_counter() - start) / len(queries))
    return statistics.median(times) * 1e3


def best_identities(matcher: Matcher, queries: np.ndarray) -> list[str]:
    import numpy as np

    best = []
    # Blocks bound the M × samples similarity matrix (64 × 10^6 float32 is 256 MB).
    for first in range(0, len(queries), 64):
        scores = matcher.identity_scores(queries[first:first + 64])
        best.extend(matcher.identities[j] for j in np.argmax(scores, axis=1))
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_size(size: int, args: argparse.Namespace) -> list[str]:
    import numpy as np

    from faceid_tui.bank.matching import Matcher

    rng = np.random.default_rng(size)
    samples = unit_rows(rng, size)
    names = [f"id{i // SAMPLES_PER_IDENTITY:07d}" for i in range(size)]
    sources = rng.choice(size, size=args.queries)
    moved = samples[sources] + args.noise * unit_rows(rng, args.queries)
    queries = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    timed = queries[: args.batch * max(1, 256 // args.batch)]
    single = queries[: args.single_faces]
    rows = []
    exact_best: list[str] = []
    for path in ("exact", "index"):
        start = time.perf_counter()
        matcher = Matcher(names, samples,
                          index_min_samples=size + 1 if path == "exact" else 1)
        index = matcher.sample_index  # built here on the index path, so timed as build
        build_s = time.perf_counter() - start
        batch_ms = per_face_ms(matcher, timed, args.batch, args.repeats)
        single_ms = per_face_ms(matcher, single, 1, args.repeats)
        best = best_identities(matcher, queries)
        if path == "exact":
            exact_best = best
            agreement = "(reference)"
        else:
            agreement = f"{np.mean([a == b for a, b in zip(best, exact_best, strict=True)]):.4f}"
        index_mb = f"{index.nbytes / 2**20:.0f}" if index is not None else "—"
        rows.append(f"| {size:,} | {path} | {build_s:.2f} | {batch_ms:.3f} | {single_ms:.3f} "
                    f"| {samples.nbytes / 2**20:.0f} | {index_mb} | {peak_rss_mb():.0f} "
                    f"| {agreement} |")
        print(rows[-1], file=sys.stderr, flush=True)
        del matcher, index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batch", type=int, default=32, help="faces per timed photo")
    parser.add_argument("--single-faces", type=int, default=32,
                        help="one-face photos timed per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--queries", type=int, default=1000, help="queries for top-1 agreement")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="norm of the random move from a bank sample to its query")
    args = parser.parse_args()
    # BLAS reads these when numpy is first imported, hence the late imports in this file.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    import usearch

    import faceid_tui.bank.index as index_module

    index_module.THREADS = args.threads
    print(f"CPUs: {os.cpu_count()} (usable: {len(os.sched_getaffinity(0))}), threads: "
          f"{args.threads}, usearch {usearch.__version__}, batch {args.batch}, "
          f"repeats {args.repeats}, agreement queries {args.queries} at noise {args.noise}, "
          f"INDEX_MIN_SAMPLES = {index_module.INDEX_MIN_SAMPLES}", flush=True)
    rows = ["| samples | path | build s | ms/face (photos of "
            f"{args.batch}) | ms/face (1-face photos) | matrix MB | index MB "
            "| peak RSS MB | top-1 agreement |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), file=sys.stderr, flush=True)
    for size in sorted(args.sizes):
        rows.extend(run_size(size, args))
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
