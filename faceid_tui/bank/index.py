"""Approximate nearest-neighbour search over the bank's sample embeddings, for large banks.

:class:`~faceid_tui.bank.matching.Matcher` compares every query with every sample, which is
exact and fast up to some tens of thousands of samples; beyond :data:`INDEX_MIN_SAMPLES` it
asks a :class:`SampleIndex` for a short list of likely samples per query instead and scores
only those exactly (the re-ranking lives in the matcher, so an index only has to *find*).

The index is an HNSW graph from `usearch <https://github.com/unum-cloud/usearch>`_. It was
chosen over ``faiss-cpu`` because both install here as prebuilt wheels for CPython 3.11 on
x86-64, but usearch's is about 2.3 MB against faiss-cpu's 19 MB, its Python API takes numpy
arrays as they are (no SWIG types), and it stores vectors as int8 with a SIMD cosine kernel:
a quarter of the float32 matrix's memory and the fastest build and search of the dtypes
tried, with the exact top-1 unchanged on ``tests/test_index.py`` and
``benchmarks/bank_size.py`` (the int8 rounding only decides which samples get re-scored).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Banks with at least this many samples are searched through the index (see
#: ``benchmarks/bank_size.py``): below it exact matching per face is already well under a
#: millisecond and needs no build time, above it the index is faster per face.
INDEX_MIN_SAMPLES = 50_000
#: Samples fetched from the index per query and re-scored exactly. Identities have a few
#: samples each, so this leaves dozens of candidate identities for the top three and margin.
CANDIDATE_SAMPLES = 64
#: Threads for index build and search; 0 lets usearch use every core.
THREADS = 0

# HNSW settings: connectivity 16 and an add-time beam of 64 keep the build several times
# faster than usearch's defaults with recall@64 still ~1 on 512-d embeddings (measured on
# random unit vectors, the hardest case: real embeddings cluster by person); a search beam
# of 128 is wider than the 64 results asked for, so the last ones are not guesses.
_CONNECTIVITY = 16
_EXPANSION_ADD = 64
_EXPANSION_SEARCH = 128


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
        rows = matches.keys.astype(np.intp)
        # Slots past a query's result count hold a default key, which is a valid row number.
        rows[np.arange(count)[None, :] >= matches.counts[:, None]] = -1
        return rows


def build_index(samples: np.ndarray, *, threads: int | None = None) -> SampleIndex:
    """The index used by the matcher for ``samples`` (rows L2-normalised, float32)."""
    return UsearchIndex(samples, threads=threads)
