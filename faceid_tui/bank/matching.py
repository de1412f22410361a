"""Matching faces against the bank by cosine similarity.

Each face gets a score for every identity (against the identity's centroid, the normalised
mean of its samples; or its best sample: :class:`Matcher`), its top candidates, the margin to
the runner-up, and one of five statuses (tiers):

* ``known``     — the best score is at or above the open-set threshold (a stranger passes it
  rarely: :mod:`~faceid_tui.bank.thresholds`), clear of the runner-up: safe to confirm in bulk;
* ``likely``    — the best score lies between the suggestion threshold and the open-set one: the
  name is shown, to be confirmed one face at a time;
* ``ambiguous`` — above the suggestion threshold, but the runner-up is within the margin;
* ``conflict``  — another face of the same photo has the same best identity with a higher
  score (one person appears once in a photo, so at most one of them is right);
* ``unknown``   — below the suggestion threshold (``name`` is None).

``name`` is the best identity for every status but ``unknown``. A face is never given its
second-best identity because another face took the first: that fallback put wrong names on
faces (two photos of one person in a collage gave the second face a stranger's name).

Banks of :data:`~faceid_tui.bank.index.INDEX_MIN_SAMPLES` rows (centroids, or samples) or
more are not compared row by row: an approximate index (:mod:`faceid_tui.bank.index`) proposes
:data:`~faceid_tui.bank.index.CANDIDATE_SAMPLES` rows per face, those are scored exactly,
and every other identity scores :data:`MISSING_SCORE`.

:func:`matched_chunks` matches the faces of many photos in one product, as ``faceid scan``
does for each chunk the pipeline yields.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator
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

KNOWN = "known"
LIKELY = "likely"
AMBIGUOUS = "ambiguous"
CONFLICT = "conflict"
UNKNOWN = "unknown"
#: Every status a match can have, from the surest to the least sure.
TIERS = (KNOWN, LIKELY, AMBIGUOUS, CONFLICT, UNKNOWN)

#: How a face scores against an identity (see :class:`Matcher`).
CENTROID = "centroid"
BEST_SAMPLE = "best sample"
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
    status: str  # one of TIERS
    margin: float | None
    candidates: tuple[Candidate, ...]

    @property
    def named(self) -> bool:
        """Whether a name is shown (every tier but ``unknown``)."""
        return self.name is not None


class Matcher:
    """Cosine matching against a matrix of L2-normalised sample embeddings.

    ``threshold`` is the open-set threshold (``known``), ``likely_threshold`` the suggestion
    threshold below it (``likely``; None: the same as ``threshold``, so no ``likely`` tier).

    ``scoring`` says how a face scores against an identity: :data:`CENTROID` (the default)
    compares it with the normalised mean of the identity's samples, :data:`BEST_SAMPLE` with
    each sample, keeping the best. On LFW banks of 2-5 samples per person the centroid names
    3-6 % more probes right at the same measured share of strangers passing
    (benchmarks/open_set_thresholds.py): averaging a person's photos cancels what is peculiar to
    each (light, pose), while the best of m samples gives a stranger m chances.

    Exact below ``index_min_samples`` rows (samples or centroids; default
    :data:`~faceid_tui.bank.index.INDEX_MIN_SAMPLES`); at or above it through an approximate
    index, built on first use (``index_builder``, default usearch's), whose proposals are
    re-scored exactly.
    """

    def __init__(self, sample_names: list[str], samples: np.ndarray, *,
                 threshold: float = DEFAULT_THRESHOLD,
                 likely_threshold: float | None = None,
                 ambiguous_margin: float = AMBIGUOUS_MARGIN,
                 top_k: int = TOP_CANDIDATES,
                 index_min_samples: int | None = None,
                 scoring: str = CENTROID,
                 index_builder: Callable[[np.ndarray], SampleIndex] | None = None) -> None:
        if scoring not in (CENTROID, BEST_SAMPLE):
            raise ValueError(f"scoring must be {CENTROID!r} or {BEST_SAMPLE!r}")
        if len(sample_names) != len(samples):
            raise ValueError("one name per sample row is needed")
        if index_min_samples is not None and index_min_samples < 1:
            raise ValueError("index_min_samples must be at least 1")
        self.threshold = threshold
        self._likely_threshold = likely_threshold
        self.ambiguous_margin = ambiguous_margin
        self.top_k = top_k
        self.index_min_samples = (INDEX_MIN_SAMPLES if index_min_samples is None
                                  else index_min_samples)
        order = np.argsort(np.array(sample_names, dtype=object), kind="stable")
        sorted_names = [sample_names[i] for i in order]
        self.identities: list[str] = []
        starts: list[int] = []
        for index, name in enumerate(sorted_names):
            if not self.identities or self.identities[-1] != name:
                self.identities.append(name)
                starts.append(index)
        self.scoring = scoring
        self._sample_count = len(order)
        matrix = np.asarray(samples, dtype=np.float32)
        rows = np.ascontiguousarray(matrix[order]) if len(order) else matrix
        if scoring == CENTROID and len(starts):
            # One row per identity: the rest of the matcher (exact products, the index,
            # shortlists) works on rows and needs no second code path.
            centroids = np.add.reduceat(rows, starts, axis=0)
            norms = np.linalg.norm(centroids, axis=1, keepdims=True)
            rows = np.ascontiguousarray(centroids / np.maximum(norms, 1e-12), dtype=np.float32)
            starts = list(range(len(starts)))
        # Rows sorted by identity, so each identity's best score is one reduceat over columns.
        self._rows = rows
        self._starts = np.array(starts, dtype=np.intp)
        self._numbers = {name: number for number, name in enumerate(self.identities)}
        # Identity number of each row, to turn the index's row hits into identities.
        self._row_identity = np.repeat(np.arange(len(starts), dtype=np.intp),
                                       np.diff(np.append(self._starts, len(rows))))
        self._index: SampleIndex | None = None
        # Another index than usearch's over the rows (a shared bank's pgvector index).
        self._index_builder = index_builder or build_index
        self._index_lock = threading.Lock()

    @property
    def likely_threshold(self) -> float:
        """The suggestion threshold; never above the open-set one (raising that with the
        app's keys must not hide names below it that were shown before)."""
        if self._likely_threshold is None:
            return self.threshold
        return min(self._likely_threshold, self.threshold)

    @likely_threshold.setter
    def likely_threshold(self, value: float | None) -> None:
        self._likely_threshold = value

    @property
    def sample_count(self) -> int:
        return self._sample_count

    @property
    def uses_index(self) -> bool:
        """Whether queries go through the approximate index rather than every row."""
        return len(self._rows) >= self.index_min_samples

    @property
    def sample_index(self) -> SampleIndex | None:
        """The approximate index (built now if not yet), or None on the exact path."""
        if not self.uses_index:
            return None
        # Sessions share one matcher across threads; the build is slow, so only once.
        with self._index_lock:
            if self._index is None:
                self._index = self._index_builder(self._rows)
            return self._index

    def identity_scores(self, queries: np.ndarray) -> np.ndarray:
        """``M × I`` cosine similarity of each query to each identity (its centroid, or its best
        sample).

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
        """Exact score of one face against the identity ``name``, at any bank size.

        For a name chosen by hand, which the index need not have proposed for this face.
        Raises KeyError for a name not in the bank.
        """
        number = self._numbers[name]
        stop = (self._starts[number + 1] if number + 1 < len(self._starts)
                else len(self._rows))
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        return float(np.max(self._rows[self._starts[number]:stop] @ query))

    def match_photo(self, queries: np.ndarray) -> list[FaceMatch]:
        """Match every face of one photo; faces sharing a best identity are in ``conflict``."""
        return self.match_photos([queries])[0]

    def match_photos(self, photos: list[np.ndarray]) -> list[list[FaceMatch]]:
        """:meth:`match_photo` for many photos, with one matrix product (or one index search)
        for all their faces: far cheaper per face than one product per photo on big banks."""
        rows = [np.asarray(q, dtype=np.float32) for q in photos]
        rows = [q[None] if q.ndim == 1 and q.size else q for q in rows]  # one bare vector
        arrays = [q for q in rows if len(q)]
        if not arrays:
            return [[] for _ in photos]
        return self.match_grouped(np.concatenate(arrays), [len(q) for q in rows])

    def match_grouped(self, queries: np.ndarray, counts: list[int]) -> list[list[FaceMatch]]:
        """:meth:`match_photos` for faces already in one matrix, ``counts[i]`` rows for photo
        ``i`` in order (what a caller holding thousands of photos builds in one call)."""
        if sum(counts) == 0:
            return [[] for _ in counts]
        queries = np.asarray(queries, dtype=np.float32)
        shortlists = self._shortlists(queries, max(self.top_k, 1))
        results, start = [], 0
        for count in counts:
            matches = [self._describe(numbers, scores)
                       for numbers, scores in shortlists[start:start + count]]
            results.append(mark_conflicts(matches))
            start += count
        return results

    def _exact_scores(self, queries: np.ndarray) -> np.ndarray:
        similarities = queries @ self._rows.T
        return np.maximum.reduceat(similarities, self._starts, axis=1)

    def _shortlists(self, queries: np.ndarray, depth: int) -> list[Shortlist]:
        """Each face's best ``depth`` identities at least (fewer only if the bank has fewer)."""
        if not self.identities:
            empty = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32))
            return [empty] * len(queries)
        if self.uses_index:
            return self._index_shortlists(queries, depth)
        scores = self._exact_scores(queries)
        ranked = _best_first_rows(scores, depth)
        return list(zip(ranked, np.take_along_axis(scores, ranked, axis=1), strict=True))

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
            np.maximum.at(best, owner, self._rows[rows] @ query)
            # numbers is ascending, so a stable sort breaks ties by identity as exact does.
            order = np.argsort(-best, kind="stable")
            shortlists.append((numbers[order], best[order]))
        return shortlists

    def _describe(self, numbers: np.ndarray, scores: np.ndarray) -> FaceMatch:
        candidates = tuple(Candidate(self.identities[j], score) for j, score
                           in zip(numbers[: self.top_k].tolist(), scores[: self.top_k].tolist(),
                                  strict=True))
        if not candidates:
            return FaceMatch(None, None, UNKNOWN, None, ())
        best = candidates[0]
        margin = best.score - candidates[1].score if len(candidates) > 1 else None
        return FaceMatch(*self.tier(best, margin), margin, candidates)

    def tier(self, best: Candidate, margin: float | None) -> tuple[str | None, float, str]:
        """``(name, score, status)`` of a face whose best identity is ``best``, before the
        other faces of its photo are looked at."""
        if best.score < self.likely_threshold:
            return None, best.score, UNKNOWN
        if margin is not None and margin < self.ambiguous_margin:
            return best.name, best.score, AMBIGUOUS
        if best.score >= self.threshold:
            return best.name, best.score, KNOWN
        return best.name, best.score, LIKELY


def mark_conflicts(matches: list[FaceMatch]) -> list[FaceMatch]:
    """The matches of one photo with every named face but the best of each identity marked
    ``conflict``: one person appears once in a photo. The face with the higher score (on a tie,
    the earlier face) keeps the status it earned; the others keep the name, so the user sees
    whom they resemble, and are never given their second-best identity instead."""
    keeper: dict[str, int] = {}
    for index, match in enumerate(matches):
        if match.name is None:
            continue
        current = keeper.get(match.name)
        if current is None or (match.score or 0.0) > (matches[current].score or 0.0):
            keeper[match.name] = index
    return [match if match.name is None or keeper[match.name] == index
            else dataclasses.replace(match, status=CONFLICT)
            for index, match in enumerate(matches)]


def _best_first_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """:func:`_best_first` of every row of ``scores`` at once (``rows × min(depth, columns)``):
    one partition and one small sort for all rows, not one call per face, which was most of
    a re-match of 10^4 pending faces. Rows where ties reach past the cutoff, or holding NaN,
    go through :func:`_best_first` so that ties still fall in index order."""
    negated = -scores
    rows, columns = negated.shape
    if depth >= columns:
        return np.argsort(negated, axis=1, kind="stable")
    cutoff = np.partition(negated, depth - 1, axis=1)[:, depth - 1:depth]
    within = negated <= cutoff
    plain = (within.sum(axis=1) == depth) & ~np.isnan(cutoff[:, 0])
    # Where exactly ``depth`` entries reach the cutoff, nonzero lists them row by row in
    # index order; a stable sort by score then gives _best_first's order.
    head = np.nonzero(within[plain])[1].reshape(-1, depth)
    order = np.argsort(np.take_along_axis(negated[plain], head, axis=1), axis=1, kind="stable")
    ranked = np.empty((rows, depth), dtype=np.intp)
    ranked[plain] = np.take_along_axis(head, order, axis=1)
    for number in np.flatnonzero(~plain):
        ranked[number] = _best_first(scores[number], depth)
    return ranked


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
