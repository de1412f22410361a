"""Matching faces against the bank by cosine similarity.

Each face gets the best score of every identity (the maximum over that identity's samples),
its top candidates, the margin to the runner-up, and a status:

* ``known``     — the best score is at or above the threshold, clear of the runner-up;
* ``ambiguous`` — above the threshold, but the top two identities are within
  :data:`AMBIGUOUS_MARGIN` of each other;
* ``unknown``   — below the threshold (``name`` is None).

Within one photo an identity names at most one face: pairs are assigned greedily from the
highest score down, so the best assignment wins and the other face falls back to its next
identity that is still free (or to unknown).

Banks of :data:`~faceid_tui.bank.index.INDEX_MIN_SAMPLES` samples or more are not compared
sample by sample: an approximate index (:mod:`faceid_tui.bank.index`) proposes
:data:`~faceid_tui.bank.index.CANDIDATE_SAMPLES` samples per face, those are scored exactly,
and every other identity scores :data:`MISSING_SCORE`.

:func:`matched_chunks` matches the faces of many photos in one product, as ``faceid scan``
does for each chunk the pipeline yields.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from faceid_tui.bank.index import CANDIDATE_SAMPLES, INDEX_MIN_SAMPLES, SampleIndex, build_index

if TYPE_CHECKING:  # only for annotations: matching needs no detector or network
    from faceid_tui.engine.pipeline import FaceResult, PhotoResult

#: Default cosine-similarity threshold for FaceNet CASIA-WebFace with the dlib 5-point chip
#: (160 px, padding 0.4). Measured with
#:   faceid eval pairs ../shared/faces/pairs.csv
#: (90 same / 90 different pairs, largest face of each photo): accuracy is at its maximum,
#: 0.983, for every threshold from 0.39 to 0.535; 0.46 is the middle of that interval.
DEFAULT_THRESHOLD = 0.46
#: Top-two identity scores closer than this make a match ``ambiguous``.
AMBIGUOUS_MARGIN = 0.05
TOP_CANDIDATES = 3
#: Score of an identity that the index did not propose: the lowest cosine similarity, so it
#: is never at or above a threshold and never listed as a candidate.
MISSING_SCORE = -1.0

# One face's identities worth considering, best first (ties by identity number), with their
# scores: the head of the full ranking on the exact path, the index's proposals otherwise.
Shortlist = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Candidate:
    name: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "score": round(self.score, 4)}


@dataclass(frozen=True)
class FaceMatch:
    name: str | None
    score: float | None
    status: str  # known | ambiguous | unknown
    margin: float | None
    candidates: tuple[Candidate, ...]


class Matcher:
    """Cosine matching against a matrix of L2-normalised sample embeddings.

    Exact below ``index_min_samples`` samples (default
    :data:`~faceid_tui.bank.index.INDEX_MIN_SAMPLES`); at or above it through an approximate
    index, built on first use, whose proposals are re-scored exactly.
    """

    def __init__(self, sample_names: list[str], samples: np.ndarray, *,
                 threshold: float = DEFAULT_THRESHOLD,
                 ambiguous_margin: float = AMBIGUOUS_MARGIN,
                 top_k: int = TOP_CANDIDATES,
                 index_min_samples: int | None = None) -> None:
        if len(sample_names) != len(samples):
            raise ValueError("one name per sample row is needed")
        if index_min_samples is not None and index_min_samples < 1:
            raise ValueError("index_min_samples must be at least 1")
        self.threshold = threshold
        self.ambiguous_margin = ambiguous_margin
        self.top_k = top_k
        self.index_min_samples = (INDEX_MIN_SAMPLES if index_min_samples is None
                                  else index_min_samples)
        # Sort rows by identity so each identity's best score is one reduceat over columns.
        order = np.argsort(np.array(sample_names, dtype=object), kind="stable")
        sorted_names = [sample_names[i] for i in order]
        self.identities: list[str] = []
        starts: list[int] = []
        for index, name in enumerate(sorted_names):
            if not self.identities or self.identities[-1] != name:
                self.identities.append(name)
                starts.append(index)
        self._starts = np.array(starts, dtype=np.intp)
        matrix = np.asarray(samples, dtype=np.float32)
        self._samples = np.ascontiguousarray(matrix[order]) if len(order) else matrix
        self._numbers = {name: number for number, name in enumerate(self.identities)}
        # Identity number of each (sorted) row, to turn the index's sample hits into identities.
        self._row_identity = np.repeat(np.arange(len(starts), dtype=np.intp),
                                       np.diff(np.append(self._starts, len(order))))
        self._index: SampleIndex | None = None
        self._index_lock = threading.Lock()

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    @property
    def uses_index(self) -> bool:
        """Whether queries go through the approximate index rather than every sample."""
        return self.sample_count >= self.index_min_samples

    @property
    def sample_index(self) -> SampleIndex | None:
        """The approximate index (built now if not yet), or None on the exact path."""
        if not self.uses_index:
            return None
        # Sessions share one matcher across threads; the build is slow, so only once.
        with self._index_lock:
            if self._index is None:
                self._index = build_index(self._samples)
            return self._index

    def identity_scores(self, queries: np.ndarray) -> np.ndarray:
        """``M × I`` best cosine similarity of each query to each identity.

        Through the index, identities it did not propose score :data:`MISSING_SCORE`.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self.identities:
            return np.zeros((len(queries), 0), dtype=np.float32)
        if not self.uses_index:
            return self._exact_scores(queries)
        scores = np.full((len(queries), len(self.identities)), MISSING_SCORE, dtype=np.float32)
        for row, (numbers, best) in zip(scores, self._index_shortlists(queries, self.top_k),
                                        strict=True):
            row[numbers] = best
        return scores

    def identity_score(self, query: np.ndarray, name: str) -> float:
        """Exact best cosine similarity of one face to the identity ``name``, at any bank size.

        For a name chosen by hand, which the index need not have proposed for this face.
        Raises KeyError for a name not in the bank.
        """
        number = self._numbers[name]
        stop = (self._starts[number + 1] if number + 1 < len(self._starts)
                else self.sample_count)
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        return float(np.max(self._samples[self._starts[number]:stop] @ query))

    def match_photo(self, queries: np.ndarray) -> list[FaceMatch]:
        """Match every face of one photo, each identity given to at most one face."""
        return self.match_photos([queries])[0]

    def match_photos(self, photos: list[np.ndarray]) -> list[list[FaceMatch]]:
        """:meth:`match_photo` for many photos, with one matrix product (or one index search)
        for all their faces: far cheaper per face than one product per photo on big banks."""
        rows = [np.asarray(q, dtype=np.float32) for q in photos]
        rows = [q[None] if q.ndim == 1 and q.size else q for q in rows]  # one bare vector
        arrays = [q for q in rows if len(q)]
        counts = [len(q) for q in rows]
        if not arrays:
            return [[] for _ in photos]
        # A face loses at most one identity to each other face of its photo, so this many of
        # its best identities hold its assignment and, after the others' are removed, its top_k.
        depth = max(self.top_k, 1) + max(counts) - 1
        shortlists = self._shortlists(np.concatenate(arrays), depth)
        results, start = [], 0
        for count in counts:
            results.append(self._match_one_photo(shortlists[start:start + count]))
            start += count
        return results

    def _match_one_photo(self, shortlists: list[Shortlist]) -> list[FaceMatch]:
        if not shortlists:
            return []
        assigned = self._assign(shortlists)
        matches = []
        for face_index, (numbers, scores) in enumerate(shortlists):
            taken_by_others = {ident for face, ident in assigned.items() if face != face_index}
            free = [k for k, ident in enumerate(numbers.tolist()) if ident not in taken_by_others]
            matches.append(self._describe(numbers[free], scores[free]))
        return matches

    def _exact_scores(self, queries: np.ndarray) -> np.ndarray:
        similarities = queries @ self._samples.T
        return np.maximum.reduceat(similarities, self._starts, axis=1)

    def _shortlists(self, queries: np.ndarray, depth: int) -> list[Shortlist]:
        """Each face's best ``depth`` identities at least (fewer only if the bank has fewer)."""
        if not self.identities:
            empty = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32))
            return [empty] * len(queries)
        if self.uses_index:
            return self._index_shortlists(queries, depth)
        shortlists = []
        for row in self._exact_scores(queries):
            ranked = _best_first(row, depth)
            shortlists.append((ranked, row[ranked]))
        return shortlists

    def _index_shortlists(self, queries: np.ndarray, depth: int) -> list[Shortlist]:
        index = self.sample_index
        assert index is not None
        wanted = min(depth, len(self.identities))
        shortlists = []
        for query, rows in zip(queries, index.search(queries, CANDIDATE_SAMPLES), strict=True):
            rows = rows[rows >= 0]
            numbers, owner = np.unique(self._row_identity[rows], return_inverse=True)
            if len(numbers) < wanted:
                # All proposals belong to a few identities (someone with dozens of samples):
                # too few for the top candidates and margin, so this face is scored exactly.
                row = self._exact_scores(query[None])[0]
                ranked = _best_first(row, depth)
                shortlists.append((ranked, row[ranked]))
                continue
            best = np.full(len(numbers), -np.inf, dtype=np.float32)
            np.maximum.at(best, owner, self._samples[rows] @ query)
            # numbers is ascending, so a stable sort breaks ties by identity as exact does.
            order = np.argsort(-best, kind="stable")
            shortlists.append((numbers[order], best[order]))
        return shortlists

    def _assign(self, shortlists: list[Shortlist]) -> dict[int, int]:
        faces = np.concatenate([np.full(len(numbers), face, dtype=np.intp)
                                for face, (numbers, _) in enumerate(shortlists)])
        identities = np.concatenate([numbers for numbers, _ in shortlists])
        scores = np.concatenate([scores for _, scores in shortlists])
        above = scores >= self.threshold
        faces, identities, scores = faces[above], identities[above], scores[above]
        # Highest score first; ties in face then identity order.
        order = np.lexsort((identities, faces, -scores))
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for k in order:
            face, ident = int(faces[k]), int(identities[k])
            if face not in assigned and ident not in used:
                assigned[face] = ident
                used.add(ident)
        return assigned

    def _describe(self, numbers: np.ndarray, scores: np.ndarray) -> FaceMatch:
        candidates = tuple(Candidate(self.identities[j], score) for j, score
                           in zip(numbers[: self.top_k].tolist(), scores[: self.top_k].tolist(),
                                  strict=True))
        if not candidates:
            return FaceMatch(None, None, "unknown", None, ())
        best = candidates[0]
        margin = best.score - candidates[1].score if len(candidates) > 1 else None
        if best.score < self.threshold:
            return FaceMatch(None, best.score, "unknown", margin, candidates)
        if margin is not None and margin < self.ambiguous_margin:
            return FaceMatch(best.name, best.score, "ambiguous", margin, candidates)
        return FaceMatch(best.name, best.score, "known", margin, candidates)


def _best_first(row: np.ndarray, depth: int) -> np.ndarray:
    """The first ``depth`` of ``np.argsort(-row, kind="stable")``, without sorting all of row.

    A bank of 10^5 samples has tens of thousands of identities; only a handful are needed.
    """
    negated = -row
    if depth >= len(row):
        return np.argsort(negated, kind="stable")
    cutoff = np.partition(negated, depth - 1)[depth - 1]
    if np.isnan(cutoff):
        return np.argsort(negated, kind="stable")[:depth]
    # Every entry tied with the cutoff is kept, so ties still fall in index order.
    head = np.flatnonzero(negated <= cutoff)
    return head[np.argsort(negated[head], kind="stable")][:depth]


def matched_chunks(results: Iterable[PhotoResult], matcher: Matcher, size: int,
                   ) -> Iterator[tuple[PhotoResult, list[FaceResult], list[FaceMatch]]]:
    """Each result with its embedded faces and their matches; the faces of ``size`` photos
    are matched together, in one matrix product (the pipeline yields a chunk at a time)."""
    batch: list[PhotoResult] = []
    for result in results:
        batch.append(result)
        if len(batch) >= size:
            yield from _match_batch(batch, matcher)
            batch = []
    yield from _match_batch(batch, matcher)


def _match_batch(batch: list[PhotoResult], matcher: Matcher,
                 ) -> Iterator[tuple[PhotoResult, list[FaceResult], list[FaceMatch]]]:
    faces = [[f for f in result.faces if f.embedding is not None] for result in batch]
    matches = matcher.match_photos([np.stack([f.embedding for f in found]) if found
                                    else np.zeros((0, 1)) for found in faces])
    yield from zip(batch, faces, matches, strict=True)
