"""Groups of undecided faces that are probably one person: the "people to name" of the app.

The algorithm is average linkage with a stop threshold, grown incrementally. Two groups are
merged while the *mean* cosine similarity over every pair of their faces is at least the
threshold; a new face starts as a group of one and merges from there. The mean rather than
the closest pair (single linkage, what DBSCAN and Chinese whispers amount to) is what keeps
precision: one look-alike pair cannot chain two people together, a whole group has to agree.

Some faces look like many people (the "hubs" of an embedding: a frontal, well-lit face of
a common type is close to thousands of strangers). Each face's similarities are therefore
corrected by how close it is to faces in general, as cross-domain similarity local scaling
(CSLS) does: a face's *offset* is :data:`HUB_WEIGHT` × (its mean similarity to its
:data:`HUB_RANKS` nearest faces − the pool's median of that), fixed when the face arrives,
and a pair's score is its cosine minus the mean of the two offsets. Ranks 10–30 leave out a
person's own other photos (most people have fewer than ten in a drop). On LFW this keeps
pairwise precision at 0.99 with BCubed recall 0.86 instead of 0.73 (README, Accuracy).

Every vector is unit length and offsets add up, so the mean pairwise score of groups A and B
is ``sum(A) · sum(B) / (|A| |B|) − (mean offset(A) + mean offset(B)) / 2``: a group is kept
as the sums of its vectors and offsets and its size, and one product scores a group against
every other. Merges are taken best first from a heap (stale entries are skipped by a version
number): the greedy agglomerative (UPGMA) order. Adding faces one chunk at a time can give
slightly different groups from one run over all of them (a chunk merges before the next
arrives), and the user's constraints cut in:

* two faces of one photo are never one person: groups that share a photo never merge;
* a face the user took out of a group never joins that group again (the bar is kept on the
  group and carried through its later merges);
* what the user merged stays merged: the faces of such a group are never moved out.

Arrival order matters more than chunking: a face whose own people have not arrived yet joins
the group of someone who looks like it, and batch clustering, which compares every face with
every other first, would not have done that. So after each arrival the faces are *settled*
(:meth:`FaceClusters._settle`): a face that fits a group the arrival changed better than the
rest of its own moves there, and a face the rest of its grown group no longer reaches at the
threshold stands alone again. On LFW in random order this lifts pairwise precision from
0.984–0.987 to 0.990 (README, Accuracy).

Decided faces leave their groups; groups are never recomputed from scratch, so a group the
user is looking at does not reshuffle when photos arrive, and a restart restores the groups
(:meth:`FaceClusters.restore`) from what the ledger kept instead of clustering again.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Groups this small are not shown as people to name: one face is just an unknown face.
MIN_GROUP_SIZE = 2
#: Scores for this many new faces against every group are computed at a time (memory bound).
_BLOCK = 1024
#: The hub correction (see the module docstring): its weight and the neighbour ranks it
#: averages over, chosen on LFW with the metrics of ``faceid eval clusters`` (weights 0.3–2
#: with ranks 10–30 and 20–50, at thresholds 0.905–0.92: 0.7 with ranks 10–30 gave the best
#: BCubed F at pairwise precision 0.99).
HUB_WEIGHT = 0.7
HUB_RANKS = (10, 30)
#: The pool's median is estimated from at most this many of its faces.
_MEDIAN_SAMPLE = 256
#: Offsets are made again each time the pool doubles, up to this size: by then they rest on
#: thousands of faces, and once more would cost n² products (10⁵ faces: about a minute).
REFRESH_OFFSETS_UP_TO = 16_384
#: A face moves to another group only when it fits that one (the mean over its faces) by
#: this much more than the rest of its own: nothing goes back and forth between two groups
#: that fit it about as well.
MOVE_MARGIN = 0.01


class ClusterError(ValueError):
    """A change the rules forbid (e.g. merging groups that share a photo)."""


@dataclass
class ClusterChange:
    """What one call changed: the faces that moved (face id → its group now) and the groups
    that gained, lost or were merged away (``gone``)."""

    moved: dict[int, int] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    gone: set[int] = field(default_factory=set)

    def update(self, other: ClusterChange) -> None:
        self.moved.update(other.moved)
        self.touched |= other.touched
        self.gone |= other.gone
        self.touched -= self.gone


class FaceClusters:
    """Undecided faces grouped by average linkage at ``threshold`` (see the module docstring).

    Faces are identified by the caller's ids; ``photo`` keys say which faces share a photo.
    Not thread-safe: the session serialises calls.
    """

    def __init__(self, threshold: float | Callable[[int], float], dim: int, *,
                 hub_weight: float = HUB_WEIGHT) -> None:
        # A number, or a function of the number of faces held (see GROUP_PAIR_BUDGET in
        # faceid_tui/bank/thresholds.py: more faces, more strangers to mistake).
        self._threshold_for = threshold if callable(threshold) else (lambda _: threshold)
        self.threshold = float(self._threshold_for(0))
        self._near_floor = self.threshold  # the lowest threshold the near sets hold for
        self.dim = int(dim)
        self.hub_weight = float(hub_weight)
        #: Faces known to be on their way (the app's queued photos): the threshold is set
        #: for the pool they will make, so a big drop is not grouped leniently at its start.
        self.expected_faces = 0
        self._offsets_pool = 0  # the pool size the offsets were last made against
        self._sums = np.zeros((64, self.dim), dtype=np.float32)
        # Per group, the sum of its faces' offsets (see :meth:`add`).
        self._offsets = np.zeros(64, dtype=np.float64)
        self._face_offset: dict[int, float] = {}
        self._sizes = np.zeros(64, dtype=np.int64)
        self._row_of: dict[int, int] = {}  # group id -> row of _sums
        self._group_of_row: dict[int, int] = {}
        self._free_rows: list[int] = list(range(63, -1, -1))
        self._members: dict[int, set[int]] = {}
        self._photos: dict[int, set[Hashable]] = {}
        self._barred: dict[int, set[int]] = {}  # group id -> faces that may never join it
        self._version: dict[int, int] = {}
        # group -> every group whose linkage to it reaches the threshold; a group missing
        # here (restored from the ledger, not touched since) is scored on first need.
        self._near: dict[int, set[int]] = {}
        self._face_group: dict[int, int] = {}
        self._face_photo: dict[int, Hashable] = {}
        self._photo_faces: dict[Hashable, set[int]] = {}
        self._vectors: dict[int, np.ndarray] = {}
        #: Groups the user merged: what the user put together stays together.
        self._pinned: set[int] = set()
        self.next_id = 1

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._face_group)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._face_group

    def group_of(self, face_id: int) -> int | None:
        return self._face_group.get(face_id)

    def faces_of_photo(self, photo: Hashable) -> set[int]:
        return set(self._photo_faces.get(photo, ()))

    def members(self, group: int) -> set[int]:
        return set(self._members.get(group, ()))

    def groups(self, min_size: int = MIN_GROUP_SIZE) -> list[int]:
        """Group ids with at least ``min_size`` faces, largest first (then oldest)."""
        found = [g for g, faces in self._members.items() if len(faces) >= min_size]
        return sorted(found, key=lambda g: (-len(self._members[g]), g))

    def photos(self, group: int) -> set[Hashable]:
        return set(self._photos.get(group, ()))

    def barred(self, group: int) -> set[int]:
        return set(self._barred.get(group, ()))

    def pinned(self) -> list[int]:
        """The groups the user merged (their faces are never moved out), for the ledger."""
        return sorted(g for g in self._pinned if g in self._members)

    def all_bars(self) -> list[tuple[int, int]]:
        """``(face id, group id)`` for every bar, for the ledger."""
        return [(face, group) for group, faces in self._barred.items() for face in faces]

    def centroid(self, group: int) -> np.ndarray:
        """The group's mean direction, unit length."""
        total = self._sums[self._row_of[group]]
        return total / max(float(np.linalg.norm(total)), 1e-12)

    def cohesion(self, group: int) -> float:
        """Mean cosine similarity over the group's pairs of faces (1.0 for one face)."""
        size = int(self._sizes[self._row_of[group]])
        if size < 2:
            return 1.0
        total = self._sums[self._row_of[group]]
        # |sum|² counts every ordered pair once and every face with itself (1.0) once.
        return float((float(total @ total) - size) / (size * (size - 1)))

    def face_scores(self, group: int) -> dict[int, float]:
        """Each face's similarity to its group's centroid (low: the odd one out)."""
        centre = self.centroid(group)
        return {face: float(self._vectors[face] @ centre) for face in self._members[group]}

    def link(self, a: int, b: int) -> float:
        """Mean similarity over the pairs of faces between groups ``a`` and ``b``."""
        ra, rb = self._row_of[a], self._row_of[b]
        return float(self._sums[ra] @ self._sums[rb] / (self._sizes[ra] * self._sizes[rb])
                     - 0.5 * (self._offsets[ra] / self._sizes[ra]
                              + self._offsets[rb] / self._sizes[rb]))

    # -- building ---------------------------------------------------------------------------
    def offset(self, face_id: int) -> float | None:
        """The face's hub correction, once it was computed (kept after the face leaves, so
        an undo puts it back as it was)."""
        return self._face_offset.get(face_id)

    @classmethod
    def restore(cls, threshold: float | Callable[[int], float], dim: int,
                faces: Iterable[tuple[int, Hashable, np.ndarray, int]],
                bars: Iterable[tuple[int, int]] = (), next_id: int = 1,
                offsets: dict[int, float] | None = None,
                pinned: Iterable[int] = ()) -> FaceClusters:
        """Groups as they were kept: ``(face id, photo, vector, group id)``, the faces'
        offsets and the groups the user merged; no clustering."""
        clusters = cls(threshold, dim)
        clusters._face_offset.update(offsets or {})
        for face_id, photo, vector, group in faces:
            if group not in clusters._row_of:
                clusters._new_group(group)
            clusters._place(face_id, photo, _unit(vector), group,
                            clusters._face_offset.get(face_id, 0.0))
        for face_id, group in bars:
            if group in clusters._members:
                clusters._barred[group].add(face_id)
        clusters._pinned = {g for g in pinned if g in clusters._members}
        known = max([*clusters._members, 0])
        clusters.next_id = max(next_id, known + 1)
        # The kept offsets were made against a pool about this size: the next refresh is due
        # when it doubles, not at the first arrival.
        clusters._offsets_pool = len(clusters._face_group)
        clusters._follow_threshold()
        return clusters

    def add(self, faces: Sequence[tuple[int, Hashable, np.ndarray]]) -> ClusterChange:
        """New undecided faces ``(face id, photo, vector)``: each starts alone, then merges
        best first while the average linkage is at least the threshold. A face seen before
        keeps its offset; the others get theirs against the pool they join."""
        change = ClusterChange()
        new_groups: list[int] = []
        faces = [(f, p, _unit(v)) for f, p, v in faces if f not in self._face_group]
        fresh = [i for i, (face_id, _, _) in enumerate(faces)
                 if face_id not in self._face_offset]
        if fresh:
            offsets = self._hub_offsets(np.stack([faces[i][2] for i in fresh]))
            for i, value in zip(fresh, offsets, strict=True):
                self._face_offset[faces[i][0]] = float(value)
        for face_id, photo, vector in faces:
            group = self._new_group()
            self._place(face_id, photo, vector, group, self._face_offset[face_id])
            change.moved[face_id] = group
            change.touched.add(group)
            new_groups.append(group)
        self._follow_threshold()
        held = len(self._face_group)
        if (held >= max(2 * self._offsets_pool, 2 * HUB_RANKS[1])
                and self._offsets_pool < REFRESH_OFFSETS_UP_TO):
            self._refresh_offsets()
        if new_groups:
            change.update(self._agglomerate(new_groups))
            change.update(self._settle(change.touched))
        return change

    def _follow_threshold(self) -> None:
        """The threshold for the faces now held. Near sets made under a higher threshold
        hold every group that passes a lower one only if they were made under it: when the
        threshold falls below what they were made for, they are made again on need."""
        self.threshold = float(self._threshold_for(len(self._face_group) + self.expected_faces))
        if self.threshold < self._near_floor:
            self._near.clear()
            self._near_floor = self.threshold

    def _refresh_offsets(self) -> None:
        """Every held face's offset again, against today's pool (it doubled since the last
        time): an offset made against a few dozen faces says little about a face among
        thousands. Groups are kept; their linkages follow the new offsets."""
        self._offsets_pool = len(self._face_group)
        if self.hub_weight == 0:
            return
        faces = list(self._vectors)
        values = self._hub_offsets(np.stack([self._vectors[f] for f in faces]), pooled=True)
        self._offsets[:] = 0.0
        for face, value in zip(faces, values, strict=True):
            self._face_offset[face] = float(value)
            self._offsets[self._row_of[self._face_group[face]]] += float(value)
        self._near.clear()  # linkages moved: near sets are made again on need

    def _hub_offsets(self, queries: np.ndarray, *, pooled: bool = False) -> np.ndarray:
        """Offsets of new faces against the pool they join (the faces held and themselves):
        HUB_WEIGHT × (mean similarity to their HUB_RANKS nearest − the pool's median)."""
        if pooled:  # the queries are the pool
            pool = queries
        else:
            pool = np.concatenate([np.stack(list(self._vectors.values())), queries]
                                  ) if self._vectors else queries
        first, last = HUB_RANKS
        if len(pool) <= first + 1 or self.hub_weight == 0:
            return np.zeros(len(queries))  # too few faces to tell a hub from anyone

        def typicality(rows: np.ndarray) -> np.ndarray:
            values = []
            for start in range(0, len(rows), _BLOCK):
                scores = rows[start:start + _BLOCK] @ pool.T
                # The highest score is the face itself (it is in the pool).
                top = -np.partition(-scores, min(last, len(pool) - 1), axis=1)
                top = -np.sort(-top[:, :min(last, len(pool) - 1) + 1], axis=1)
                values.append(top[:, first + 1:last + 1].mean(axis=1))
            return np.concatenate(values)

        sample = pool[np.linspace(0, len(pool) - 1, min(len(pool), _MEDIAN_SAMPLE)).astype(int)]
        return self.hub_weight * (typicality(queries) - float(np.median(typicality(sample))))

    def remove(self, face_ids: Iterable[int]) -> ClusterChange:
        """Faces that were decided leave their groups (the rest of each group stays)."""
        change = ClusterChange()
        for face_id in face_ids:
            group = self._face_group.get(face_id)
            if group is None:
                continue
            self._unplace(face_id)
            if not self._members[group]:
                self._drop_group(group)
                change.gone.add(group)
            else:
                change.touched.add(group)
        change.touched -= change.gone
        self._follow_threshold()
        for group in change.touched:
            self._rescore(group)  # a smaller group may be closer to others than before
        return change

    def detach(self, face_id: int) -> ClusterChange:
        """The user took ``face_id`` out of its group: it stands alone (or joins another
        group it is close to) and never rejoins this one."""
        group = self._face_group[face_id]
        if len(self._members[group]) < 2:
            raise ClusterError("that face is not in a group with other faces")
        vector = self._vectors[face_id]
        photo = self._face_photo[face_id]
        change = self.remove([face_id])
        self._barred[group].add(face_id)
        change.update(self.add([(face_id, photo, vector)]))
        change.touched.add(group)
        return change

    def merge(self, keep: int, other: int) -> ClusterChange:
        """The user says groups ``keep`` and ``other`` are one person (nothing else merges
        on from there: what the user did is all that changed, so undo is exact)."""
        if keep == other:
            raise ClusterError("a group cannot be merged with itself")
        for group in (keep, other):
            if group not in self._members:
                raise ClusterError(f"there is no group {group}")
        reason = self._forbidden(keep, other)
        if reason:
            raise ClusterError(reason)
        change = ClusterChange()
        self._merge_into(keep, other, change)
        self._pinned.add(keep)
        return change

    def put_back(self, groups: dict[int, list[tuple[int, Hashable, np.ndarray]]],
                 bars: dict[int, list[int]], pinned: Iterable[int] = ()) -> ClusterChange:
        """Undo: these faces back in these groups (``group id → faces``), with these bars
        and pins (``pinned``: those of them the user had merged), wherever the faces are
        now; faces that joined a group since stay in it. Nothing is merged."""
        pinned = set(pinned)
        change = self.remove([face for faces in groups.values() for face, _, _ in faces])
        for group, faces in groups.items():
            if group not in self._members:
                self._new_group(group)
            for face_id, photo, vector in faces:
                self._place(face_id, photo, _unit(vector), group,
                            self._face_offset.get(face_id, 0.0))
                change.moved[face_id] = group
            self._barred[group] = set(bars.get(group, ()))
            if group in pinned:
                self._pinned.add(group)
            else:
                self._pinned.discard(group)
            change.touched.add(group)
            change.gone.discard(group)
        for group in groups:
            self._rescore(group)
        return change

    # -- the algorithm ----------------------------------------------------------------------
    def _agglomerate(self, seeds: list[int]) -> ClusterChange:
        """Merge best first from the pairs that involve ``seeds`` (new groups of one).

        The linkage of a merged group A∪B to C is the size-weighted mean of A's and B's
        linkages to C, so it can reach the threshold only where one of them did: a merge
        needs scoring only the merged groups' near groups, never every group."""
        change = ClusterChange()
        heap: list[tuple[float, int, int, int, int]] = []
        seeds = [g for g in seeds if g in self._row_of]
        for start in range(0, len(seeds), _BLOCK):
            block = seeds[start:start + _BLOCK]
            links = self._links(np.array([self._row_of[g] for g in block]))
            for group, row_links in zip(block, links, strict=True):
                near = self._close_groups(row_links)
                self._near[group] = set(near)
                for other in near:
                    if other in self._near:
                        self._near[other].add(group)
                self._push(heap, group, near)
        while heap:
            _, a, version_a, b, version_b = heapq.heappop(heap)
            if (self._version.get(a) != version_a or self._version.get(b) != version_b):
                continue
            if self._forbidden(a, b):
                continue
            keep, other = (a, b) if self._prefer(a, b) else (b, a)
            self._merge_into(keep, other, change)
            self._push(heap, keep, {g: self.link(keep, g) for g in self._near[keep]})
        return change

    def _settle(self, grown: set[int]) -> ClusterChange:
        """Faces that joined a group early, before their own people arrived, go where they
        belong now that those have: after arrivals grew the groups ``grown``,

        * a face anywhere that fits one of them better (by :data:`MOVE_MARGIN`) than the rest
          of its own group, and at least at the threshold, moves there;
        * a face of one of them that the rest of it no longer reaches at the threshold (the
          group grew into a person it is not) leaves it and stands alone.

        Average linkage adds faces one at a time to a group that looks like them then; batch
        clustering would have compared them with everyone first. This is that comparison,
        made when the groups change. Groups the user merged keep their faces."""
        change = ClusterChange()
        targets = [g for g in grown if g in self._row_of]
        faces = [f for f, g in self._face_group.items()
                 if self._sizes[self._row_of[g]] >= 2 and g not in self._pinned]
        if not targets or not faces:
            return change
        vectors = np.stack([self._vectors[f] for f in faces])
        offsets = np.array([self._face_offset[f] for f in faces])
        rows = np.array([self._row_of[self._face_group[f]] for f in faces])
        own = self._mean_scores(vectors, offsets, rows, without_self=True)
        target_rows = np.array([self._row_of[g] for g in targets])
        sizes = self._sizes[target_rows].astype(np.float64)
        links = (vectors @ self._sums[target_rows].T) / sizes \
            - 0.5 * (offsets[:, None] + (self._offsets[target_rows] / sizes)[None, :])
        links[rows[:, None] == target_rows[None, :]] = -np.inf  # a face with its own group
        best = links.argmax(axis=1)
        best_link = links[np.arange(len(faces)), best]
        grown_rows = np.isin(rows, target_rows) & (self._sizes[rows] >= 3)
        wanted = (best_link >= self.threshold) & (best_link >= own + MOVE_MARGIN)
        leaving = grown_rows & ~wanted & (own < self.threshold)
        # Best improvements first; each is checked again as earlier ones change the groups.
        for i in sorted(np.nonzero(wanted | leaving)[0].tolist(),
                        key=lambda i: -(best_link[i] - own[i])):
            face = faces[i]
            group = self._face_group[face]
            if self._sizes[self._row_of[group]] < 2:
                continue
            fit = self._face_link(face, group, without=True)
            target = targets[int(best[i])] if wanted[i] else None
            if (target is not None and target in self._row_of and target != group
                    and self._may_join(face, target)):
                link = self._face_link(face, target)
                if link >= self.threshold and link >= fit + MOVE_MARGIN:
                    self._move(face, group, target, change)
                    continue
            if leaving[i] and fit < self.threshold and self._sizes[self._row_of[group]] >= 3:
                self._move(face, group, self._new_group(), change)
        if change.moved:
            for group in change.touched:
                self._rescore(group)
            change.update(self._agglomerate(sorted(change.touched)))
        return change

    def _mean_scores(self, vectors: np.ndarray, offsets: np.ndarray, rows: np.ndarray, *,
                     without_self: bool = False) -> np.ndarray:
        """Each face's mean score to the faces of the group at its row (``without_self``: to
        the others, the face being one of them)."""
        totals, sizes = self._sums[rows], self._sizes[rows].astype(np.float64)
        group_offsets = self._offsets[rows]
        if without_self:
            totals, sizes, group_offsets = totals - vectors, sizes - 1, group_offsets - offsets
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.einsum("ij,ij->i", vectors, totals) / sizes
            return scores - 0.5 * (offsets + group_offsets / sizes)

    def _face_link(self, face: int, group: int, *, without: bool = False) -> float:
        """One face's :meth:`_mean_scores` to ``group`` (as the group is now)."""
        return float(self._mean_scores(self._vectors[face][None, :],
                                       np.array([self._face_offset[face]]),
                                       np.array([self._row_of[group]]), without_self=without)[0])

    def _may_join(self, face: int, group: int) -> bool:
        return (self._face_photo[face] not in self._photos[group]
                and face not in self._barred[group])

    def _move(self, face: int, source: int, target: int, change: ClusterChange) -> None:
        photo, vector = self._unplace(face)
        self._place(face, photo, vector, target, self._face_offset[face])
        change.moved[face] = target
        change.touched |= {source, target}

    def _links(self, rows: np.ndarray) -> np.ndarray:
        """Average linkage of the groups in ``rows`` to every row (empty rows: -inf)."""
        sizes = self._sizes.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = (self._sums[rows] @ self._sums.T) / np.outer(sizes[rows], sizes)
            mean_offsets = self._offsets / np.maximum(self._sizes, 1)
            scores -= 0.5 * (mean_offsets[rows][:, None] + mean_offsets[None, :])
        scores[:, self._sizes == 0] = -np.inf
        scores[np.arange(len(rows)), rows] = -np.inf  # a group with itself
        return scores

    def _close_groups(self, row_links: np.ndarray) -> dict[int, float]:
        close = np.nonzero(row_links >= self.threshold)[0]
        return {self._group_of_row[row]: float(row_links[row]) for row in close.tolist()}

    def _near_of(self, group: int) -> set[int]:
        """The groups whose linkage to ``group`` reaches the threshold (scored now if the
        group was restored and not touched since)."""
        if group not in self._near:
            near = self._close_groups(self._links(np.array([self._row_of[group]]))[0])
            self._near[group] = set(near)
            for other in near:
                if other in self._near:
                    self._near[other].add(group)
        return self._near[group]

    def _rescore(self, group: int) -> None:
        """A group changed other than by a merge: its near groups from scratch."""
        old = self._near.pop(group, set())
        for other in old:
            if other in self._near:
                self._near[other].discard(group)
        self._near_of(group)

    def _push(self, heap: list[tuple[float, int, int, int, int]], group: int,
              links: dict[int, float]) -> None:
        version = self._version[group]
        for other, link in links.items():
            if link >= self.threshold:
                heapq.heappush(heap, (-link, group, version, other, self._version[other]))

    def _forbidden(self, a: int, b: int) -> str | None:
        if not self._photos[a].isdisjoint(self._photos[b]):
            return "these groups share a photo, and two faces of one photo are not one person"
        if (not self._members[a].isdisjoint(self._barred[b])
                or not self._members[b].isdisjoint(self._barred[a])):
            return "a face in one group was taken out of the other"
        return None

    def _prefer(self, a: int, b: int) -> bool:
        """Which id survives a merge: the larger group's, so the group the user sees keeps its
        id as strays join it; the older on a tie."""
        size_a, size_b = len(self._members[a]), len(self._members[b])
        return size_a > size_b or (size_a == size_b and a < b)

    def _merge_into(self, keep: int, other: int, change: ClusterChange) -> None:
        candidates = (self._near_of(keep) | self._near_of(other)) - {keep, other}
        row_keep, row_other = self._row_of[keep], self._row_of[other]
        self._sums[row_keep] += self._sums[row_other]
        self._offsets[row_keep] += self._offsets[row_other]
        self._sizes[row_keep] += self._sizes[row_other]
        for face in self._members[other]:
            self._face_group[face] = keep
            change.moved[face] = keep
        self._members[keep] |= self._members[other]
        self._photos[keep] |= self._photos[other]
        self._barred[keep] |= self._barred[other]
        if other in self._pinned:
            self._pinned.add(keep)
        self._version[keep] += 1
        self._drop_group(other)
        near = {g for g in candidates if self.link(keep, g) >= self.threshold}
        for group in candidates:
            if group in self._near:
                self._near[group].discard(keep)
                if group in near:
                    self._near[group].add(keep)
        self._near[keep] = near
        change.gone.add(other)
        change.touched.discard(other)
        change.touched.add(keep)

    def _new_group(self, group: int | None = None) -> int:
        if group is None:
            group = self.next_id
        self.next_id = max(self.next_id, group + 1)
        if not self._free_rows:
            self._grow()
        row = self._free_rows.pop()
        self._row_of[group], self._group_of_row[row] = row, group
        self._sums[row] = 0.0
        self._offsets[row] = 0.0
        self._sizes[row] = 0
        self._members[group], self._photos[group], self._barred[group] = set(), set(), set()
        self._version[group] = 0
        return group

    def _place(self, face_id: int, photo: Hashable, vector: np.ndarray, group: int,
               offset: float = 0.0) -> None:
        if vector.shape != (self.dim,):
            raise ClusterError(f"face {face_id}: a {vector.shape} vector in {self.dim}-d groups")
        row = self._row_of[group]
        self._sums[row] += vector
        self._offsets[row] += offset
        self._face_offset[face_id] = offset
        self._sizes[row] += 1
        self._members[group].add(face_id)
        self._photos[group].add(photo)
        self._face_group[face_id] = group
        self._face_photo[face_id] = photo
        self._photo_faces.setdefault(photo, set()).add(face_id)
        self._vectors[face_id] = vector
        self._version[group] += 1

    def _unplace(self, face_id: int) -> tuple[Hashable, np.ndarray]:
        """Take a face out of its group (the group stays, even empty); its photo and vector."""
        group = self._face_group.pop(face_id)
        vector = self._vectors.pop(face_id)
        photo = self._face_photo.pop(face_id)
        self._photo_faces[photo].discard(face_id)
        if not self._photo_faces[photo]:
            del self._photo_faces[photo]
        row = self._row_of[group]
        self._sums[row] -= vector
        self._offsets[row] -= self._face_offset[face_id]
        self._sizes[row] -= 1
        self._members[group].discard(face_id)
        # Another face of the same photo may still be in the group: not possible (the rule),
        # so the photo leaves with the face.
        self._photos[group].discard(photo)
        self._version[group] += 1
        return photo, vector

    def _drop_group(self, group: int) -> None:
        for other in self._near.pop(group, ()):
            if other in self._near:
                self._near[other].discard(group)
        row = self._row_of.pop(group)
        del self._group_of_row[row]
        self._sums[row] = 0.0
        self._offsets[row] = 0.0
        self._sizes[row] = 0
        self._free_rows.append(row)
        for table in (self._members, self._photos, self._barred, self._version):
            del table[group]
        self._pinned.discard(group)

    def _grow(self) -> None:
        old = len(self._sizes)
        self._sums = np.vstack([self._sums, np.zeros((old, self.dim), dtype=np.float32)])
        self._sizes = np.concatenate([self._sizes, np.zeros(old, dtype=np.int64)])
        self._offsets = np.concatenate([self._offsets, np.zeros(old)])
        self._free_rows.extend(range(2 * old - 1, old - 1, -1))


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def group_faces(vectors: np.ndarray, photo_keys: Sequence[Hashable] | None,
                threshold: float | Callable[[int], float], *, hub_weight: float = HUB_WEIGHT,
                chunk: int | None = None) -> FaceClusters:
    """Group a set of faces (``faceid cluster``, the evaluation); face ids are the rows of
    ``vectors``. ``chunk``: add them this many at a time, as the app does while photos
    arrive (None: all at once)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    keys: Sequence[Hashable] = photo_keys if photo_keys is not None else range(len(vectors))
    clusters = FaceClusters(threshold, vectors.shape[1] if vectors.ndim == 2 else 1,
                            hub_weight=hub_weight)
    step = chunk or max(1, len(vectors))
    for start in range(0, len(vectors), step):
        clusters.expected_faces = max(0, len(vectors) - start - step)
        clusters.add([(i, keys[i], vectors[i])
                      for i in range(start, min(start + step, len(vectors)))])
    return clusters


def cluster_vectors(vectors: np.ndarray, photo_keys: Sequence[Hashable] | None,
                    threshold: float | Callable[[int], float], *,
                    hub_weight: float = HUB_WEIGHT, chunk: int | None = None) -> np.ndarray:
    """A group label per face (rows of ``vectors``), ``-1`` for a face left alone."""
    clusters = group_faces(vectors, photo_keys, threshold, hub_weight=hub_weight, chunk=chunk)
    labels = np.full(len(vectors), -1, dtype=np.int64)
    for number, group in enumerate(clusters.groups()):
        labels[sorted(clusters.members(group))] = number
    return labels
