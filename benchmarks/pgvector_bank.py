"""Matching through pgvector's HNSW index in a shared bank, against exact search, and a bank
of the same size in SQLite with faceid's in-process matcher.

    .venv/bin/python benchmarks/pgvector_bank.py [--samples 1000000] [--dim 640]
        [--per-identity 5] [--queries 1000] [--sqlite-samples 100000] [--url URL]
        [--data DIR] [--ef-search 100] [--like LFW.npz] [--shared-buffers 6GB] [--reuse]

Data: by default identities are random unit centres, their samples the centre moved by noise
(cosine ~0.75 to the centre), queries stored samples moved again (cosine ~0.85): random
directions in 640 dimensions, the worst case for a graph index. With ``--like LFW.npz`` (the
vector cache of ``faceid eval clusters --embeddings``) the bank is drawn from a Gaussian with
the between- and within-identity covariance of those real vectors (their spectrum, so their
intrinsic dimension) and each query is a new draw of a stored identity: a new photo of
someone enrolled. That is the "real-like" case. Rows go into the
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
import subprocess
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


def make_bank_like(real: Path, samples: int, per_identity: int, seed: int = 7):
    """A bank drawn from a Gaussian with the between- and within-identity covariance of real
    embeddings (an ``eval`` cache of LFW vectors): real vectors' spectrum, so their intrinsic
    dimension, which is what an HNSW graph navigates by (random vectors are its worst case)."""
    with np.load(real, allow_pickle=False) as data:
        paths = [str(p) for p in data["paths"]]
        vectors = data["vectors"][~data["no_face"]].astype(np.float64)
        paths = [p for p, n in zip(paths, data["no_face"], strict=True) if not n]
    people = np.array([Path(p).parent.name for p in paths])
    names, owner_of, counts = np.unique(people, return_inverse=True, return_counts=True)
    means = np.stack([vectors[owner_of == k].mean(axis=0) for k in range(len(names))])
    several = counts[owner_of] >= 2
    within = np.cov((vectors - means[owner_of])[several], rowvar=False)
    between = np.cov(means[counts >= 2], rowvar=False)
    centre_of_all = means.mean(axis=0)
    rng = np.random.default_rng(seed)
    identities = (samples + per_identity - 1) // per_identity

    def draw(covariance: np.ndarray, count: int) -> np.ndarray:
        values, vectors_ = np.linalg.eigh(covariance)
        scale = vectors_ * np.sqrt(np.clip(values, 0, None))
        return (rng.standard_normal((count, len(values))) @ scale.T).astype(np.float32)

    centres = centre_of_all + draw(between, identities)
    owner = np.repeat(np.arange(identities), per_identity)[:samples]
    bank = np.empty((samples, vectors.shape[1]), np.float32)
    for start in range(0, samples, 100_000):
        stop = min(samples, start + 100_000)
        bank[start:stop] = unit(centres[owner[start:stop]] + draw(within, stop - start))
    return owner, bank, lambda rows: unit(centres[owner[rows]] + draw(within, len(rows)))


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


def set_shared_buffers(data: Path, size: str) -> None:
    """Give a pgserver data folder ``size`` of shared buffers: started once, set, stopped
    (the setting takes effect at the next start)."""
    faceid = Path(sys.executable).with_name("faceid")
    import psycopg

    from faceid_tui.bank.local_postgres import database_url

    url = subprocess.run([str(faceid), "postgres", str(data)], check=True,
                         capture_output=True, text=True).stdout.strip()
    with psycopg.connect(database_url(url, "postgres"), autocommit=True) as connection:
        connection.execute(f"ALTER SYSTEM SET shared_buffers = '{size}'")
    subprocess.run([str(faceid), "postgres", "--stop", str(data)], check=True,
                   capture_output=True)


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
    parser.add_argument("--like", type=Path, metavar="FILE.npz",
                        help="draw the bank from the statistics of real vectors (the cache of "
                             "`faceid eval clusters --embeddings`) instead of random centres")
    parser.add_argument("--shared-buffers", default="6GB",
                        help="PostgreSQL shared_buffers for a pgserver started here (its "
                             "default, 128MB, keeps no index of this size in memory)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows and index --data holds from an earlier run with "
                             "the same arguments (no load, no build)")
    args = parser.parse_args()

    rng = np.random.default_rng(11)
    sources = rng.choice(args.samples, size=args.queries, replace=False)
    if args.like:
        owner, vectors, new_photos = make_bank_like(args.like, args.samples, args.per_identity)
        queries = new_photos(sources)
        kind = f"drawn like {args.like.name}'s vectors; queries: new photos of stored people"
    else:
        owner, vectors = make_bank(args.samples, args.dim, args.per_identity)
        queries = moved(vectors[sources], 0.85, rng)
        kind = "random centres; queries at cosine 0.85 to a stored sample"
    print(f"bank: {args.samples:,} samples of {owner.max() + 1:,} identities, "
          f"{vectors.shape[1]}-d ({kind}); {args.queries} queries", flush=True)
    args.dim = vectors.shape[1]

    scratch = None
    if args.url is None:
        from faceid_tui.bank.local_postgres import start_local_postgres

        scratch = args.data or Path(tempfile.mkdtemp(prefix="faceid-pgbench-"))
        set_shared_buffers(scratch, args.shared_buffers)
        url = start_local_postgres(scratch, database="bench", keep_running=False)
    else:
        url = args.url
    store = PostgresBankStore(url)
    try:
        print("shared_buffers:", store._db.execute("SHOW shared_buffers").fetchone()[0])
        reuse = args.reuse and store.sample_count(MODEL_ID) == args.samples
        if not reuse:
            store._db.execute("TRUNCATE identities, photos, embeddings, vector_indexes CASCADE")
            for (name,) in store._db.execute("SELECT indexname FROM pg_indexes WHERE "
                                             "indexname LIKE 'embeddings_hnsw_%'").fetchall():
                store._db.execute(f'DROP INDEX "{name}"')
            seconds = load(store, owner, vectors)
            print(f"load (COPY): {seconds:.1f} s", flush=True)

        truth = exact_top1(vectors, queries)
        paths = {row: f"person {owner[row]:07d}/{row}.jpg" for row in truth}

        def measure(label: str, ef_search: int) -> None:
            times, hits = [], 0
            for query, expected in zip(queries, truth, strict=True):
                started = time.perf_counter()
                near = store.nearest_samples(MODEL_ID, query, 10, ef_search=ef_search)
                times.append((time.perf_counter() - started) * 1000)
                hits += bool(near) and near[0][1] == paths[expected]
            print(f"{label}: p50 {percentile(times, 50):.2f} ms, p95 "
                  f"{percentile(times, 95):.2f} ms a face; top-1 recall vs exact "
                  f"{hits / len(queries):.4f}", flush=True)

        if args.samples <= 200_000 and not reuse:
            measure("pgvector, no index (sequential scan, exact)", args.ef_search)
        started = time.perf_counter()
        index_name = store.ensure_vector_index(MODEL_ID, args.dim, min_samples=1)
        build = time.perf_counter() - started
        index_size, table_size = store._db.execute(
            "SELECT pg_relation_size(%s::regclass), pg_total_relation_size('embeddings')",
            (index_name,)).fetchone()
        print(f"HNSW build (m=16, ef_construction=64): "
              f"{'reused' if reuse else f'{build:.1f} s'}; index "
              f"{index_size / 2**20:.0f} MiB, embeddings table with indexes "
              f"{table_size / 2**20:.0f} MiB", flush=True)
        started = time.perf_counter()
        store.samples(MODEL_ID)
        print(f"every sample read back (what a station's matcher loads): "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        measure("pgvector HNSW, first pass (cold buffers)", args.ef_search)
        for ef_search in sorted({40, args.ef_search, 200, 400}):
            measure(f"pgvector HNSW (ef_search {ef_search})", ef_search)
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
