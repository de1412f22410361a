"""The triage session: what the app does, without the app. It takes photos from the inbox into
the ledger, processes them through the pipeline, matches faces against the bank, records the
user's decisions (enrolling confirmed faces), undoes them, rescores at a new threshold, and
writes annotated copies when a photo is fully decided.

Every method is safe to call from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.matching import AMBIGUOUS, CONFLICT, KNOWN, LIKELY, FaceMatch, Matcher
from faceid_tui.engine.annotation import FaceLabel, write_annotated
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import FaceIdError
from faceid_tui.fsutil import remove_stale_temp_files, sha256_file
from faceid_tui.triage.ledger import (
    CONFIRMED,
    ERROR,
    LEFT_UNKNOWN,
    PROCESSING,
    QUEUED,
    REJECTED,
    REVIEW,
    REVIEWED,
    FaceRow,
    Ledger,
    PhotoRow,
)

THRESHOLD_STEP = 0.02


@dataclass(frozen=True)
class FaceView:
    """One face as the app shows it: the user's decision, or else the current suggestion."""

    face_id: int
    number: int
    box: tuple[int, int, int, int]
    name: str | None
    score: float | None
    margin: float | None
    #: A suggestion (one of bank.matching.TIERS) or a decision (confirmed | rejected | unknown)
    status: str
    decided: bool
    candidates: tuple[str, ...] = ()


def shown_name(face: FaceView) -> str:
    """The name as the photo list shows it: a suggestion short of ``known`` ends in "?"."""
    tentative = not face.decided and face.status in (LIKELY, AMBIGUOUS, CONFLICT)
    return f"{face.name}?" if tentative else str(face.name)


@dataclass(frozen=True)
class PhotoView:
    sha256: str
    path: str
    state: str
    faces: int
    names: tuple[str, ...]
    best_score: float | None
    error: str | None


@dataclass
class TriagePaths:
    inbox: Path
    out: Path
    move_done: Path | None = None


class TriageSession:
    def __init__(self, pipeline: Pipeline, bank: IdentityBank, ledger: Ledger,
                 paths: TriagePaths) -> None:
        self.pipeline = pipeline
        self.bank = bank
        self.ledger = ledger
        self.paths = paths
        self.paths.inbox = Path(paths.inbox).absolute()
        self._lock = threading.RLock()
        self._matcher: Matcher | None = None
        self._matches: dict[str, list[FaceMatch]] = {}
        self._threshold_override: float | None = None  # set by the user's +/- keys
        self.errors = 0

    def close(self) -> None:
        self.ledger.close()
        self.bank.close()

    # -- intake ---------------------------------------------------------------------------
    def register(self, path: Path) -> str | None:
        """Hash a complete inbox file and queue it; None when that content is known already
        (or the file vanished)."""
        path = Path(path).absolute()
        try:
            digest = sha256_file(path)
        except OSError:
            return None
        with self._lock:
            return digest if self.ledger.add_photo(str(path), digest) else None

    def queued(self) -> list[PhotoRow]:
        with self._lock:
            return self.ledger.queued()

    # -- processing -----------------------------------------------------------------------
    def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Load the bank (embedding photos added by hand, and every photo again after a change
        of model) and the matcher. Slow: models load. ``progress(done, total)`` follows the
        bank's embedding."""
        self.bank.sync(progress=progress)
        remove_stale_temp_files(self.paths.out)  # left by a write that was killed
        with self._lock:
            self.ledger.requeue_other_models(self.pipeline.model_id)
            self._matcher = None
            self._matches.clear()

    def process(self, photos: list[PhotoRow],
                should_stop: Callable[[], bool] | None = None) -> list[str]:
        """Detect and embed a batch of queued photos; return the hashes that changed.

        A photo whose every file vanished before processing is dropped quietly.
        """
        todo: dict[Path, str] = {}
        for photo in photos:
            path = self._existing_path(photo.sha256)
            if path is None:
                with self._lock:
                    self.ledger.forget_photo(photo.sha256)
                continue
            with self._lock:
                self.ledger.set_state(photo.sha256, PROCESSING)
            todo[path] = photo.sha256
        done = []
        for result in self.pipeline.run(list(todo), should_stop=should_stop):
            sha = todo[result.path]
            with self._lock:
                if result.error and not result.path.exists():
                    self.ledger.forget_photo(sha)
                elif result.error:
                    self.ledger.set_state(sha, ERROR, result.error)
                    self.errors += 1
                else:
                    faces = [(tuple(face.box.as_list()), face.embedding)
                             for face in result.faces if face.embedding is not None]
                    self.ledger.store_results(sha, result.width or 0, result.height or 0,
                                              self.pipeline.model_id, faces)
                    self._matches.pop(sha, None)
                    if not faces:
                        self._write_output(sha)
            done.append(sha)
        # Anything not reached (stop asked) goes back to the queue.
        with self._lock:
            for sha in set(todo.values()) - set(done):
                self.ledger.set_state(sha, QUEUED)
        return done

    def photo_path(self, sha: str) -> Path | None:
        """A path where the photo with this content still exists, if any."""
        with self._lock:
            return self._existing_path(sha)

    def _existing_path(self, sha: str) -> Path | None:
        for path in self.ledger.paths_of(sha):
            if Path(path).is_file():
                return Path(path)
        return None

    # -- views ----------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The user's choice once they changed it, else the bank's (which follows its size)."""
        if self._threshold_override is not None:
            return self._threshold_override
        return self.bank.threshold

    @property
    def threshold_source(self) -> str:
        """Short reason for the threshold in force: set (keys or --threshold), calibrated, auto."""
        if self._threshold_override is not None:
            return "set"
        source = self.bank.threshold_in_force.source
        return {"--threshold": "set", "calibrated": "calibrated"}.get(source, "auto")

    @property
    def matcher(self) -> Matcher:
        with self._lock:
            if self._matcher is None:
                self._matcher = self.bank.matcher()
                self._matcher.threshold = self.threshold
            return self._matcher

    def _photo_matches(self, sha: str, faces: list[FaceRow]) -> list[FaceMatch]:
        if sha not in self._matches:
            usable = [f for f in faces if f.model_id == self.pipeline.model_id]
            if len(usable) != len(faces) or not faces:
                self._matches[sha] = []
            else:
                self._matches[sha] = self.matcher.match_photo(
                    np.stack([face.embedding for face in faces]))
        return self._matches[sha]

    def faces(self, sha: str) -> list[FaceView]:
        with self._lock:
            rows = self.ledger.faces(sha)
            matches = self._photo_matches(sha, rows)
            views = []
            for face, match in zip(rows, matches or [None] * len(rows), strict=True):
                candidates = tuple(c.name for c in match.candidates) if match else ()
                if face.decision:
                    status = face.decision
                    name = face.decided_name
                    score = self._score_for(face, name) if name else None
                    views.append(FaceView(face.id, face.index + 1, face.box, name, score, None,
                                          status, True, candidates))
                elif match is None:
                    views.append(FaceView(face.id, face.index + 1, face.box, None, None, None,
                                          "unknown", False))
                else:
                    views.append(FaceView(face.id, face.index + 1, face.box, match.name,
                                          match.score, match.margin, match.status, False,
                                          candidates))
            return views

    def _score_for(self, face: FaceRow, name: str) -> float | None:
        matcher = self.matcher
        if name not in matcher.identities:
            return None
        scores = matcher.identity_scores(face.embedding[None])[0]
        return float(scores[matcher.identities.index(name)])

    def photos(self) -> list[PhotoView]:
        with self._lock:
            views = []
            for photo in self.ledger.photos():
                faces = self.faces(photo.sha256) if photo.state in (REVIEW, REVIEWED) else []
                names = tuple(shown_name(f) for f in faces if f.name)
                scores = [f.score for f in faces if f.score is not None]
                views.append(PhotoView(photo.sha256, photo.path, photo.state, len(faces), names,
                                       max(scores) if scores else None, photo.error))
            return views

    def identity_names(self) -> list[str]:
        return self.bank.store.identity_names()

    # -- decisions ------------------------------------------------------------------------
    def confirm(self, face_id: int) -> None:
        """Accept the suggested name (enrols the face)."""
        face = self._view(face_id)
        if face.name is None:
            raise FaceIdError("this face has no suggestion to confirm; press n to name it")
        self.name_face(face_id, face.name)

    def name_face(self, face_id: int, name: str) -> None:
        """Name a face (a new name creates the identity) and enrol it into the bank."""
        with self._lock:
            face = self.ledger.face(face_id)
            photo = self.ledger.photo(face.photo_sha)
            source = self._existing_path(face.photo_sha)
            if photo is None or source is None:
                raise FaceIdError("the photo is no longer in the inbox; it cannot be enrolled")
            face_count = len(self.ledger.faces(face.photo_sha))
            enrolment = self.bank.enrol_face(name, source, face.box, face.embedding,
                                             face_count=face_count, face_number=face.index + 1)
            self.ledger.decide(face_id, CONFIRMED, enrolment.rel_path.split("/", 1)[0],
                               None if enrolment.already_enrolled else enrolment.rel_path,
                               enrolment.created_identity)
            self._bank_changed()
            self._finish_if_done(face.photo_sha)

    def reject(self, face_id: int) -> None:
        self._decide_without_enrolment(face_id, REJECTED)

    def leave_unknown(self, face_id: int) -> None:
        self._decide_without_enrolment(face_id, LEFT_UNKNOWN)

    def _decide_without_enrolment(self, face_id: int, decision: str) -> None:
        with self._lock:
            face = self.ledger.face(face_id)
            self.ledger.decide(face_id, decision, None)
            self._finish_if_done(face.photo_sha)

    def confirm_all_known(self, sha: str) -> int:
        count = 0
        for face in self.faces(sha):
            if not face.decided and face.status == KNOWN:
                self.confirm(face.face_id)
                count += 1
        return count

    def undo(self) -> str | None:
        """Undo the latest decision (removing what it enrolled); say what was undone."""
        with self._lock:
            decision = self.ledger.last_decision()
            if decision is None:
                return None
            if decision.enrolled_path:
                with contextlib.suppress(FaceIdError, OSError):
                    self.bank.remove_sample(decision.enrolled_path,
                                            drop_empty_identity=decision.created_identity)
            face = self.ledger.face(decision.face_id)
            self.ledger.undo_decision(decision)
            self._bank_changed()
            label = decision.name or decision.decision
            return f"undid {decision.decision} of face {face.index + 1} ({label})"

    def _view(self, face_id: int) -> FaceView:
        face = self.ledger.face(face_id)
        return next(v for v in self.faces(face.photo_sha) if v.face_id == face_id)

    def _bank_changed(self) -> None:
        self._matcher = None
        self._matches.clear()

    def bank_changed(self) -> None:
        """The bank was edited elsewhere (the bank screen): re-match everything."""
        with self._lock:
            self._bank_changed()

    # -- threshold ------------------------------------------------------------------------
    def set_threshold(self, threshold: float) -> set[str]:
        """Rescore every photo from stored embeddings; return the photos whose view changed."""
        with self._lock:
            before = {p.sha256: p for p in self.photos()}
            self._threshold_override = round(min(0.99, max(0.0, threshold)), 4)
            self._bank_changed()
            after = {p.sha256: p for p in self.photos()}
            return {sha for sha, view in after.items() if before.get(sha) != view}

    # -- output ---------------------------------------------------------------------------
    def _finish_if_done(self, sha: str) -> None:
        photo = self.ledger.photo(sha)
        if photo and photo.state == REVIEWED:
            self._write_output(sha)

    def _write_output(self, sha: str) -> None:
        source = self._existing_path(sha)
        photo = self.ledger.photo(sha)
        if source is None or photo is None:
            return
        try:
            image = load_rgb(source)
        except FaceIdError:
            return
        views = self.faces(sha)
        labels = [FaceLabel(v.box, v.name if v.status == CONFIRMED else
                            ("rejected" if v.status == REJECTED else None),
                            v.score if v.status == CONFIRMED else None, v.status)
                  for v in views]
        record = {
            "path": str(source), "sha256": sha, "width": photo.width, "height": photo.height,
            "model": self.pipeline.model_id, "threshold": self.threshold,
            "faces": [{"box": list(v.box), "decision": v.status, "name": v.name if
                       v.status == CONFIRMED else None,
                       "score": None if v.score is None else round(v.score, 4)} for v in views],
        }
        write_annotated(self.paths.out, source, image, labels, record)
        if self.paths.move_done is not None:
            self._move_done(sha, source)

    def _move_done(self, sha: str, source: Path) -> None:
        try:
            relative = source.relative_to(self.paths.inbox)
        except ValueError:
            relative = Path(source.name)
        target = Path(self.paths.move_done) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(source), target)
        self.ledger.add_photo(str(target.absolute()), sha)

