"""Matching through pgvector's HNSW index in a shared bank, against exact search, and a bank
of the same size in SQLite with faceid's in-process matcher.

    .venv/bin/python benchmarks/pgvector_bank.py [--samples 1000000] [--dim 640]
        [--per-identity 5] [--queries 1000] [--sqlite-samples 100000] [--url URL]
        [--data DIR] [--ef-search 100]

Data is "real-like": identities are random unit centres, their samples the centre moved by
noise (cosine ~0.75 to the centre, as photos of one person are), queries are stored samples
moved again (cosine ~0.85 to that sample: a new photo of someone enrolled). Rows go into the
same tables ``PostgresBankStore`` uses, by COPY; then the index is built by
``PostgresBankStore.ensure_vector_index`` (printed: build time, index and table size on disk)
and each query runs ``nearest_samples`` (printed: p50/p95 ms a face, top-1 recall against exact
search computed in numpy over the same vectors).

With ``--sqlite-samples N`` the first N samples also go into a SQLite bank store and the same
queries run through ``Matcher`` (the folder bank's path: load the samples, exact products or
the usearch index from 10^5 rows), in the same run, for comparison.

Without ``--url`` a PostgreSQL is started from pgserver in ``--data`` (default: a temporary
folder, deleted after). Numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from faceid_tui.bank.postgres_store import PostgresBankStore  # noqa: E402

MODEL_ID = "benchmark-model"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def moved(rows: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """Each row turned by a random direction to about ``cosine`` from where it was."""
    noise = unit(rng.standard_normal(rows.shape).astype(np.float32))
    sine = np.sqrt(1 - cosine**2)
    return unit(cosine * rows + sine * noise)


def make_bank(samples: int, dim: int, per_identity: int, seed: int = 7):
    rng = np.random.default_rng(seed)
    identities = (samples + per_identity - 1) // per_identity
    centres = unit(rng.standard_normal((identities, dim)).astype(np.float32))
    owner = np.repeat(np.arange(identities), per_identity)[:samples]
    vectors = np.empty((samples, dim), np.float32)
    for start in range(0, samples, 100_000):
        stop = min(samples, start + 100_000)
        vectors[start:stop] = moved(centres[owner[start:stop]], 0.75, rng)
    return owner, vectors


def load(store: PostgresBankStore, owner: np.ndarray, vectors: np.ndarray) -> float:
    started = time.perf_counter()
    db = store._db
    identities = int(owner.max()) + 1
    with db.cursor() as cursor:
        with cursor.copy("COPY identities (id, name, created_at) FROM STDIN") as copy:
            for number in range(identities):
                copy.write_row((number + 1, f"person {number:07d}", 0.0))
        with cursor.copy("COPY photos (rel_path, identity_id, sha256, size, mtime_ns, "
                         "added_at) FROM STDIN") as copy:
            for row, person in enumerate(owner):
                copy.write_row((f"person {person:07d}/{row}.jpg", int(person) + 1,
                                _sha(row), 0, 0, 0.0))
        with cursor.copy("COPY embeddings (sha256, model_id, dim, vector, face_count, "
                         "created_at) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "int4", "vector", "int4", "float8"])
            for row, vector in enumerate(vectors):
                copy.write_row((_sha(row), MODEL_ID, vectors.shape[1], vector, 1, 0.0))
    db.execute("ANALYZE")
    return time.perf_counter() - started


def _sha(row: int) -> str:
    return hashlib.sha256(str(row).encode()).hexdigest()


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    best = np.full(len(queries), -1, np.int64)
    best_score = np.full(len(queries), -np.inf, np.float32)
    for start in range(0, len(vectors), 200_000):
        scores = queries @ vectors[start:start + 200_000].T
        top = scores.argmax(axis=1)
        value = scores[np.arange(len(queries)), top]
        better = value > best_score
        best[better], best_score[better] = top[better] + start, value[better]
    return best


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=640, help="640: the default fused model")
    parser.add_argument("--per-identity", type=int, default=5)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sqlite-samples", type=int, default=100_000)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--url", help="an existing PostgreSQL with pgvector (default: pgserver)")
    parser.add_argument("--data", type=Path, help="pgserver data folder (default: temporary)")
    args = parser.parse_args()

    owner, vectors = make_bank(args.samples, args.dim, args.per_identity)
    rng = np.random.default_rng(11)
    sources = rng.choice(args.samples, size=args.queries, replace=False)
    queries = moved(vectors[sources], 0.85, rng)
    print(f"bank: {args.samples:,} samples of {owner.max() + 1:,} identities, {args.dim}-d; "
          f"{args.queries} queries near stored samples", flush=True)

    scratch = None
    if args.url is None:
        from faceid_tui.bank.local_postgres import start_local_postgres

        scratch = args.data or Path(tempfile.mkdtemp(prefix="faceid-pgbench-"))
        url = start_local_postgres(scratch, database="bench", keep_running=False)
    else:
        url = args.url
    store = PostgresBankStore(url)
    try:
        store._db.execute("TRUNCATE identities, photos, embeddings, vector_indexes CASCADE")
        for (name,) in store._db.execute("SELECT indexname FROM pg_indexes WHERE indexname "
                                         "LIKE 'embeddings_hnsw_%'").fetchall():
            store._db.execute(f'DROP INDEX "{name}"')
        seconds = load(store, owner, vectors)
        print(f"load (COPY): {seconds:.1f} s", flush=True)

        truth = exact_top1(vectors, queries)
        paths = {row: f"person {owner[row]:07d}/{row}.jpg" for row in truth}

        def measure(label: str) -> None:
            times, hits = [], 0
            for query, expected in zip(queries, truth, strict=True):
                started = time.perf_counter()
                near = store.nearest_samples(MODEL_ID, query, 10, ef_search=args.ef_search)
                times.append((time.perf_counter() - started) * 1000)
                hits += bool(near) and near[0][1] == paths[expected]
            print(f"{label}: p50 {percentile(times, 50):.2f} ms, p95 "
                  f"{percentile(times, 95):.2f} ms a face; top-1 recall vs exact "
                  f"{hits / len(queries):.4f}", flush=True)

        if args.samples <= 200_000:
            measure("pgvector, no index (sequential scan, exact)")
        started = time.perf_counter()
        index_name = store.ensure_vector_index(MODEL_ID, args.dim, min_samples=1)
        build = time.perf_counter() - started
        index_size, table_size = store._db.execute(
            "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('embeddings')",
            (index_name,)).fetchone()
        print(f"HNSW build (m=16, ef_construction=64): {build:.1f} s; index "
              f"{index_size / 2**20:.0f} MiB, embeddings table with indexes "
              f"{table_size / 2**20:.0f} MiB", flush=True)
        measure(f"pgvector HNSW (ef_search {args.ef_search})")
    finally:
        store.close()

    if args.sqlite_samples:
        sqlite_bench(owner[: args.sqlite_samples], vectors[: args.sqlite_samples], queries,
                     truth)
    if scratch is not None and args.data is None:
        shutil.rmtree(scratch, ignore_errors=True)


def sqlite_bench(owner: np.ndarray, vectors: np.ndarray, queries: np.ndarray,
                 truth: np.ndarray) -> None:
    """The same queries against a SQLite store of the first samples, matched in process."""
    from faceid_tui.bank.matching import BEST_SAMPLE, Matcher
    from faceid_tui.bank.store import CachedEmbedding, PhotoRecord, SqliteBankStore

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteBankStore(Path(folder) / "bank.sqlite3")
        started = time.perf_counter()
        with store.transaction():
            for row, (person, vector) in enumerate(zip(owner, vectors, strict=True)):
                store.put_photo(PhotoRecord(f"person {person:07d}/{row}.jpg",
                                            f"person {person:07d}", _sha(row), 0, 0))
                store.put_embedding(_sha(row), MODEL_ID, CachedEmbedding(vector, None, 1))
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        names, _paths, matrix = store.samples(MODEL_ID)
        matcher = Matcher(names, matrix, scoring=BEST_SAMPLE)
        matcher.match_photo(queries[:1])  # builds the index where the matcher uses one
        ready_s = time.perf_counter() - started
        times, hits = [], 0
        in_bank = truth < len(vectors)
        for query, expected, counted in zip(queries, truth, in_bank, strict=True):
            started = time.perf_counter()
            (match,) = matcher.match_photo(query[None, :])
            times.append((time.perf_counter() - started) * 1000)
            hits += counted and match.candidates[0].name == f"person {owner[expected]:07d}"
        store.close()
    print(f"SQLite + in-process matcher, {len(vectors):,} samples: load {load_s:.1f} s, "
          f"samples read + matcher ready {ready_s:.1f} s "
          f"({'index' if matcher.uses_index else 'exact'}); p50 "
          f"{percentile(times, 50):.2f} ms, p95 {percentile(times, 95):.2f} ms a face; top-1 "
          f"identity right for {hits}/{int(in_bank.sum())} queries whose sample is in it",
          flush=True)


if __name__ == "__main__":
    main()
