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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default cosine-similarity threshold for FaceNet CASIA-WebFace with the dlib 5-point chip
#: (160 px, padding 0.4). Measured with
#:   faceid eval pairs ../shared/faces/pairs.csv
#: (90 same / 90 different pairs, largest face of each photo): accuracy is at its maximum,
#: 0.983, for every threshold from 0.39 to 0.535; 0.46 is the middle of that interval.
DEFAULT_THRESHOLD = 0.46
#: Top-two identity scores closer than this make a match ``ambiguous``.
AMBIGUOUS_MARGIN = 0.05
TOP_CANDIDATES = 3


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
    """Exact cosine matching against a matrix of L2-normalised sample embeddings."""

    def __init__(self, sample_names: list[str], samples: np.ndarray, *,
                 threshold: float = DEFAULT_THRESHOLD,
                 ambiguous_margin: float = AMBIGUOUS_MARGIN,
                 top_k: int = TOP_CANDIDATES) -> None:
        if len(sample_names) != len(samples):
            raise ValueError("one name per sample row is needed")
        self.threshold = threshold
        self.ambiguous_margin = ambiguous_margin
        self.top_k = top_k
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

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    def identity_scores(self, queries: np.ndarray) -> np.ndarray:
        """``M × I`` best cosine similarity of each query to each identity."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self.identities:
            return np.zeros((len(queries), 0), dtype=np.float32)
        similarities = queries @ self._samples.T
        return np.maximum.reduceat(similarities, self._starts, axis=1)

    def match_photo(self, queries: np.ndarray) -> list[FaceMatch]:
        """Match every face of one photo, each identity given to at most one face."""
        queries = np.asarray(queries, dtype=np.float32)
        if len(queries) == 0:
            return []
        scores = self.identity_scores(queries)
        assigned = self._assign(scores)
        matches = []
        for face_index in range(len(queries)):
            taken_by_others = {ident for face, ident in assigned.items() if face != face_index}
            free = [j for j in np.argsort(-scores[face_index], kind="stable")
                    if j not in taken_by_others]
            matches.append(self._describe(scores[face_index], free))
        return matches

    def _assign(self, scores: np.ndarray) -> dict[int, int]:
        faces, identities = np.nonzero(scores >= self.threshold)
        order = np.argsort(-scores[faces, identities], kind="stable")
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for k in order:
            face, ident = int(faces[k]), int(identities[k])
            if face not in assigned and ident not in used:
                assigned[face] = ident
                used.add(ident)
        return assigned

    def _describe(self, row: np.ndarray, ranked: list[int]) -> FaceMatch:
        candidates = tuple(Candidate(self.identities[j], float(row[j]))
                           for j in ranked[: self.top_k])
        if not candidates:
            return FaceMatch(None, None, "unknown", None, ())
        best = candidates[0]
        margin = best.score - candidates[1].score if len(candidates) > 1 else None
        if best.score < self.threshold:
            return FaceMatch(None, best.score, "unknown", margin, candidates)
        if margin is not None and margin < self.ambiguous_margin:
            return FaceMatch(best.name, best.score, "ambiguous", margin, candidates)
        return FaceMatch(best.name, best.score, "known", margin, candidates)
