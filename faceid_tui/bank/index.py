"""Approximate nearest-neighbour search over the bank's sample embeddings, for large banks.

:class:`~faceid_tui.bank.matching.Matcher` compares every query with every sample, which is
exact and fast up to some tens of thousands of samples; from :data:`INDEX_MIN_SAMPLES` on it
asks a :class:`SampleIndex` for a short list of likely samples per query instead and scores
only those exactly (the re-ranking lives in the matcher, so an index only has to *find*).

The index is an HNSW graph from `usearch <https://github.com/unum-cloud/usearch>`_. It was
chosen over ``faiss-cpu`` because both install here as prebuilt wheels for CPython 3.11 on
x86-64, but usearch's is about 2.3 MB against faiss-cpu's 19 MB, its Python API takes numpy
arrays as they are (no SWIG types), and it stores vectors as int8 with a SIMD cosine kernel.
int8 takes a quarter of the float32 matrix's memory and built and searched fastest of the
dtypes tried (20,000 samples: build 13 s against 22 s for float16 and 26 s for float32,
search 2-3× faster), while float16 found a query's source sample no more often: the int8
rounding only decides which samples get re-scored, and the exact top-1 is unchanged on
``tests/test_index.py``.

The graph is approximate, and random unit vectors (what ``benchmarks/bank_size.py`` and the
tests use) are its worst case, as they have no neighbourhood structure to navigate by: for
queries at cosine 0.7 to a bank sample, the index's top-1 identity is exact search's for
100 % of them at 10^4 samples, 86 % at 10^5 and 26 % at 10^6 with the settings below. Real
embeddings cluster by person, which should be far kinder, but that is not measured here.
What the index misses can only turn a face unknown or hand it another identity whose exact
score is itself above the threshold: every proposal is re-scored exactly.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Banks with at least this many samples are searched through the index. Measured with
#: ``benchmarks/bank_size.py`` (one thread, on 2 cores shared with other jobs), per face in
#: photos of 32 faces: exact 0.5 ms at 10^4 samples, 1.7 ms at 3·10^4 and 4.3 ms at 10^5
#: (26 ms for a one-face photo); index 0.9, 2.1 and 3.0 ms (3.4). The crossover lies between
#: 3·10^4 and 10^5; exact stays the default up to 10^5, where it would reach the 5 ms target,
#: because the index is approximate and is rebuilt after each bank change (79 s at 10^5 when
#: built on two threads, about twice that on the one thread it is built on now).
INDEX_MIN_SAMPLES = 100_000
#: Samples fetched from the index per query and re-scored exactly. Identities have a few
#: samples each, so this leaves dozens of candidate identities for the top three and margin.
CANDIDATE_SAMPLES = 64
#: Threads for index search; 0 lets usearch use every core. The graph is always built on one
#: thread: usearch 2.26's concurrent ``add`` leaves some nodes unreachable by search
#: (unum-cloud/USearch#735). Measured here on 2 cores: built with 2 threads, 1-5 rows of every
#: index (2,000 or 20,000 rows) were not found even by a search for their own vector, so
#: their identities could never be matched; built on one thread, none. One thread builds
#: 20,000 512-d samples in 15.7 s against 7.0 s.
THREADS = 0

# HNSW settings, measured on random 512-d unit vectors with queries at cosine 0.7 to a
# sample. Connectivity 16 with an add-time beam of 64 builds 2-3× faster than a beam of 128
# or connectivity 24/32 (at 10^5 samples connectivity 32 took 214 s against 82 s, and would
# have found the source sample for 99 % of queries against 88 %). A search beam of 256
# misses it for 0.1 % of queries at 2·10^4 samples (2 % at 128) and 12 % at 10^5 (4 % at
# 512, for twice the time per query, which is then no faster than exact search).
_CONNECTIVITY = 16
_EXPANSION_ADD = 64
_EXPANSION_SEARCH = 256


class SampleIndex(Protocol):
    """Finds, for each query, rows of the sample matrix that are probably most similar."""

    def search(self, queries: np.ndarray, count: int) -> np.ndarray:
        """``M × count`` sample row indices, best first; ``-1`` where there are fewer."""
        ...

    @property
    def nbytes(self) -> int:
        """Memory the index holds on top of the sample matrix."""
        ...


class UsearchIndex:
    """HNSW graph over int8 copies of the samples, keyed by row number."""

    def __init__(self, samples: np.ndarray, *, threads: int | None = None) -> None:
        # Imported here so that small banks, which never build an index, do not load it.
        from usearch.index import Index

        samples = np.ascontiguousarray(samples, dtype=np.float32)
        self._threads = THREADS if threads is None else threads
        self._index = Index(ndim=samples.shape[1], metric="cos", dtype="i8",
                            connectivity=_CONNECTIVITY, expansion_add=_EXPANSION_ADD,
                            expansion_search=_EXPANSION_SEARCH, enable_key_lookups=False)
        self._index.add(np.arange(len(samples), dtype=np.uint64), samples, threads=1)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def nbytes(self) -> int:
        return int(self._index.memory_usage)

    def search(self, queries: np.ndarray, count: int) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        count = min(count, len(self._index))
        if len(queries) == 0 or count == 0:
            return np.full((len(queries), max(count, 0)), -1, dtype=np.intp)
        matches = self._index.search(queries, count, threads=self._threads)
        if matches.keys.ndim == 1:
            # One query comes back as a single Matches, already cut to its hits.
            rows = np.full((1, count), -1, dtype=np.intp)
            rows[0, : len(matches.keys)] = matches.keys
            return rows
        rows = matches.keys.astype(np.intp)
        # Slots past a query's result count hold a default key, which is a valid row number.
        rows[np.arange(count)[None, :] >= matches.counts[:, None]] = -1
        return rows


def build_index(samples: np.ndarray, *, threads: int | None = None) -> SampleIndex:
    """The index used by the matcher for ``samples`` (rows L2-normalised, float32)."""
    return UsearchIndex(samples, threads=threads)
