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
tests use) are its worst case: with no neighbourhood structure, a query at cosine 0.7 to a
sample finds it about 88 % of the time in 10^5 samples with the settings below (99 % with
twice the search beam, at twice the search time). Real embeddings cluster by person, which
is what a graph index navigates by; see the benchmark's table for the figures at each size.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Banks with at least this many samples are searched through the index. From
#: ``benchmarks/bank_size.py`` on this 2-core machine: exact matching takes ~1.7 ms per face
#: at 3·10^4 samples (index: ~2.1 ms, and tens of seconds of build after each bank change)
#: and ~5.6 ms at 10^5 (index: ~2.7 ms), so exact stays the default until it would miss
#: the 5 ms target, and the index, with its build time and approximate recall, only then.
INDEX_MIN_SAMPLES = 100_000
#: Samples fetched from the index per query and re-scored exactly. Identities have a few
#: samples each, so this leaves dozens of candidate identities for the top three and margin.
CANDIDATE_SAMPLES = 64
#: Threads for index build and search; 0 lets usearch use every core.
THREADS = 0

# HNSW settings, measured on random 512-d unit vectors with queries at cosine 0.7 to a
# sample. Connectivity 16 with an add-time beam of 64 builds 2-3× faster than a beam of 128
# or connectivity 24/32 (at 10^5 samples connectivity 32 took 214 s against 82 s). A search
# beam of 256 misses the source sample for 0.1 % of queries at 2·10^4 samples (2 % at 128)
# and 12 % at 10^5 (4 % at 512, for twice the time per query).
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
        self._index.add(np.arange(len(samples), dtype=np.uint64), samples,
                        threads=self._threads)

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
