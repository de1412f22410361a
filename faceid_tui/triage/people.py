"""People to name: the session's groups of undecided faces, kept in step with the ledger.

:mod:`~faceid_tui.triage.clustering` does the grouping; this module decides which faces take
part (the undecided faces of photos under review, embedded by the session's model), writes
every change to the ledger in the caller's transaction, restores the groups at start instead of
grouping again, and describes each group for the app (:class:`GroupView`).

Grouping from scratch happens only when there are no kept groups for this model and threshold:
the first start after an upgrade, or after the user switched embedders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from faceid_tui.bank.matching import KNOWN, LIKELY, Matcher
from faceid_tui.bank.thresholds import GROUP_PAIR_BUDGET, group_threshold
from faceid_tui.triage.clustering import (
    HUB_RANKS,
    HUB_WEIGHT,
    MIN_GROUP_SIZE,
    ClusterChange,
    FaceClusters,
)
from faceid_tui.triage.ledger import REVIEW, FaceRow, Ledger

#: How many of a named group's faces are enrolled as samples: the most typical ones. More add
#: little to an identity's centroid and make the bank slower to re-embed.
ENROL_PER_GROUP = 3


@dataclass(frozen=True)
class GroupFace:
    face_id: int
    photo_sha: str
    index: int  # the face's number in its photo, from 0
    box: tuple[int, int, int, int]
    score: float  # similarity to the group's centroid


@dataclass(frozen=True)
class GroupView:
    """One group as the app shows it; ``faces`` the most typical first."""

    group_id: int
    faces: tuple[GroupFace, ...]
    photos: int
    cohesion: float
    #: The bank's best identity for the group when its faces' mean score reaches the
    #: suggestion threshold (``best_tier`` says whether it reaches the open-set one too).
    best_name: str | None
    best_score: float | None
    best_tier: str | None = None

    @property
    def size(self) -> int:
        return len(self.faces)


class PeopleGroups:
    """The groups of one session (not thread-safe: the session's lock serialises calls)."""

    def __init__(self, ledger: Ledger, model_id: str) -> None:
        self.ledger = ledger
        self.model_id = model_id
        self.clusters: FaceClusters | None = None
        self._faces: dict[int, FaceRow] = {}
        #: Faces still to come (the queue), for the merge threshold.
        self.expected_faces = 0

    def threshold_for(self, faces: int) -> float:
        """The merge threshold while ``faces`` faces are grouped."""
        return group_threshold(self.model_id, faces).value

    @property
    def threshold(self) -> float:
        """The merge threshold in force now."""
        if self.clusters is None:
            return self.threshold_for(0)
        return self.clusters.threshold

    @property
    def _settings(self) -> dict[str, str]:
        # Groups made with other parameters are made again (once).
        return {"model_id": self.model_id, "pair_budget": f"{GROUP_PAIR_BUDGET:g}",
                "hub": f"{HUB_WEIGHT:g}@{HUB_RANKS[0]}-{HUB_RANKS[1]}"}

    def load(self, face_rows: Mapping[str, list[FaceRow]], states: Mapping[str, str]) -> None:
        """Restore the kept groups (or group every undecided face when none are kept for
        this model and threshold), then take in faces the kept groups lack."""
        wanted = [face for sha, rows in face_rows.items() for face in rows
                  if self._takes_part(face, states.get(sha))]
        self._faces = {face.id: face for face in wanted}
        settings = self.ledger.grouping_settings()
        kept = all(settings.get(key) == value for key, value in self._settings.items())
        dim = len(wanted[0].embedding) if wanted else 0
        if kept and wanted:
            members, bars, offsets = self.ledger.group_rows()
            group_of = dict(members)
            self.clusters = FaceClusters.restore(
                self.threshold_for, dim,
                ((face.id, face.photo_sha, face.embedding, group_of[face.id])
                 for face in wanted if face.id in group_of),
                bars, int(settings.get("next_id", "1")), offsets,
                [int(g) for g in settings.get("pinned", "").split(",") if g])
            missing = [face for face in wanted if face.id not in group_of]
            stale = set(group_of) - set(self._faces)
            change = self.clusters.add([(f.id, f.photo_sha, f.embedding) for f in missing])
            change.update(self.clusters.remove(stale))
            self._save(change, stale)
            return
        self.clusters = FaceClusters(self.threshold_for, dim) if wanted else None
        change = ClusterChange()
        if self.clusters is not None:
            change = self.clusters.add([(f.id, f.photo_sha, f.embedding) for f in wanted])
        self.ledger.save_groups(change.moved, set(), self._next_id(), bars=[],
                                settings=self._settings, offsets=self._offsets(change))

    def sync(self, face_rows: Mapping[str, list[FaceRow] | None],
             states: Mapping[str, str]) -> ClusterChange:
        """These photos changed (processed, decided, undone, gone: ``None``): their undecided
        faces join the groups, decided ones leave; the change is written to the ledger."""
        leaving: set[int] = set()
        arriving: list[FaceRow] = []
        for sha, rows in face_rows.items():
            wanted = {face.id: face for face in rows or ()
                      if self._takes_part(face, states.get(sha))}
            held = self.clusters.faces_of_photo(sha) if self.clusters is not None else set()
            leaving |= held - set(wanted)
            arriving += [face for face_id, face in wanted.items() if face_id not in held]
            self._faces.update(wanted)
        for face_id in leaving:
            self._faces.pop(face_id, None)
        if self.clusters is None and arriving:
            self.clusters = FaceClusters(self.threshold_for, len(arriving[0].embedding))
        change = ClusterChange()
        if self.clusters is not None:
            self.clusters.expected_faces = self.expected_faces
            change = self.clusters.remove(leaving)
            change.update(self.clusters.add(
                [(f.id, f.photo_sha, f.embedding) for f in arriving]))
        self._save(change, leaving)
        return change

    def _takes_part(self, face: FaceRow, state: str | None) -> bool:
        return state == REVIEW and face.decision is None and face.model_id == self.model_id

    def _next_id(self) -> int:
        return self.clusters.next_id if self.clusters is not None else 1

    def _save(self, change: ClusterChange, left: Iterable[int], *, bars: bool = False) -> None:
        left = set(left) - set(change.moved)
        if not change.moved and not left and not bars:
            return
        user = bars and self.clusters is not None
        self.ledger.save_groups(change.moved, left, self._next_id(),
                                bars=self.clusters.all_bars() if user else None,
                                offsets=self._offsets(change),
                                pinned=self.clusters.pinned() if user else None)

    def _offsets(self, change: ClusterChange) -> dict[int, float]:
        if self.clusters is None:
            return {}
        return {face: value for face in change.moved
                if (value := self.clusters.offset(face)) is not None}

    # -- reading ----------------------------------------------------------------------------
    def group_ids(self, min_size: int = MIN_GROUP_SIZE) -> list[int]:
        return self.clusters.groups(min_size) if self.clusters is not None else []

    def group_of(self, face_id: int) -> int | None:
        return self.clusters.group_of(face_id) if self.clusters is not None else None

    def views(self, matcher: Matcher | None, groups: list[int] | None = None) -> list[GroupView]:
        """The groups (all shown ones, or ``groups``) with their best identity in the bank:
        the one with the highest mean score over the group's faces (one product for all)."""
        if self.clusters is None:
            return []
        clusters = self.clusters
        chosen = self.group_ids() if groups is None else [
            g for g in groups if len(clusters.members(g)) >= MIN_GROUP_SIZE]
        if not chosen:
            return []
        best = best_identities(matcher, clusters, chosen)
        views = []
        for group, (name, score, tier) in zip(chosen, best, strict=True):
            scored = clusters.face_scores(group)
            order = sorted(scored, key=lambda f: (-scored[f], f))
            faces = tuple(GroupFace(f, self._faces[f].photo_sha, self._faces[f].index,
                                    self._faces[f].box, scored[f]) for f in order)
            views.append(GroupView(group, faces, len(clusters.photos(group)),
                                   clusters.cohesion(group), name, score, tier))
        return views

    def snapshot(self, groups: Iterable[int]) -> dict[str, object]:
        """What undo needs to put these groups back: their faces, bars and pins."""
        assert self.clusters is not None
        groups = list(groups)
        pinned = set(self.clusters.pinned())
        return {"groups": {str(g): sorted(self.clusters.members(g)) for g in groups},
                "bars": {str(g): sorted(self.clusters.barred(g)) for g in groups},
                "pinned": sorted(g for g in groups if g in pinned)}

    # -- the user's changes -----------------------------------------------------------------
    def detach(self, face_id: int) -> ClusterChange:
        assert self.clusters is not None
        change = self.clusters.detach(face_id)
        self._save(change, (), bars=True)
        return change

    def merge(self, keep: int, other: int) -> ClusterChange:
        assert self.clusters is not None
        change = self.clusters.merge(keep, other)
        self._save(change, (), bars=True)
        return change

    def put_back(self, snapshot: Mapping[str, object],
                 face_rows: Mapping[int, FaceRow]) -> ClusterChange:
        """Undo: the snapshot's groups as they were (faces now decided again are skipped)."""
        assert self.clusters is not None
        groups_in = snapshot.get("groups", {})
        bars_in = snapshot.get("bars", {})
        assert isinstance(groups_in, dict) and isinstance(bars_in, dict)
        groups = {int(g): [(f, face_rows[f].photo_sha, face_rows[f].embedding)
                           for f in faces if f in face_rows
                           and face_rows[f].decision is None]
                  for g, faces in groups_in.items()}
        for faces in groups.values():
            self._faces.update({f: face_rows[f] for f, _, _ in faces})
        bars = {int(g): list(faces) for g, faces in bars_in.items()}
        pinned = [int(g) for g in snapshot.get("pinned", [])]  # type: ignore[union-attr]
        change = self.clusters.put_back({g: f for g, f in groups.items() if f}, bars, pinned)
        self._save(change, (), bars=True)
        return change


Suggestion = tuple[str | None, float | None, str | None]


def best_identities(matcher: Matcher | None, clusters: FaceClusters,
                    groups: list[int]) -> list[Suggestion]:
    """``(name, score, tier)`` of the bank's best identity for each group, or Nones where
    no identity reaches the suggestion threshold. One product for all the groups: the mean
    of a group's vectors scores an identity by the mean of its faces' scores (the product is
    linear), on the same scale as one face's score, so the face thresholds apply."""
    if matcher is None or not matcher.identities or not groups:
        return [(None, None, None)] * len(groups)
    means = np.stack([clusters.centroid(g) * _mean_norm(clusters, g) for g in groups])
    scores = matcher.identity_scores(means)
    numbers = scores.argmax(axis=1)
    return [_suggestion(matcher, matcher.identities[n], float(scores[i, n]))
            for i, n in enumerate(numbers)]


def _suggestion(matcher: Matcher, name: str,
                score: float) -> tuple[str | None, float | None, str | None]:
    """A group's best identity, kept only where one face would be offered that name."""
    if score >= matcher.threshold:
        return name, score, KNOWN
    if score >= matcher.likely_threshold:
        return name, score, LIKELY
    return None, None, None


def _mean_norm(clusters: FaceClusters, group: int) -> float:
    """|mean of the group's unit vectors|: the centroid scaled back to the mean vector."""
    members = clusters.members(group)
    return float(np.sqrt(max(clusters.cohesion(group) * (len(members) - 1) + 1, 0.0)
                         / len(members)))


def group_cells(view: GroupView) -> tuple[str, ...]:
    """One row of the people-to-name list: the group's id (stable while it lives), faces,
    photos, how alike its faces are, and the bank's best identity for it (with the mean
    score of its faces)."""
    best = "-"
    if view.best_name and view.best_score is not None:
        best = f"{view.best_name} {view.best_score:.2f}"
        if view.best_tier == LIKELY:
            best += "?"  # a suggestion, as in the photo list
    return (str(view.group_id), str(view.size), str(view.photos), f"{view.cohesion:.2f}", best)
