"""The triage session: what the app does, without the app. It takes photos from the inbox into
the ledger, processes them through the pipeline, matches faces against the bank, records the
user's decisions (enrolling confirmed faces), undoes them, rescores at a new threshold, and
writes annotated copies when a photo is fully decided.

The session keeps what the app shows in memory — every photo's row and view, the faces and
their matches, the count of photos in each state — and changes only what an event touches: a
processed photo, a decision, a re-match after the bank changed (one matrix product over every
pending face). So a list of 10⁴–10⁵ photos costs the app nothing per refresh; the ledger
(SQLite) stays the record, read back whole only at start and after edits made elsewhere.

Every method is safe to call from a worker thread; one lock serialises them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.importing import import_people, import_photo
from faceid_tui.bank.matching import AMBIGUOUS, CONFLICT, KNOWN, LIKELY, FaceMatch, Matcher
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.engine.annotation import FaceLabel, write_annotated
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.face_finder import PhotoResult
from faceid_tui.engine.photo_feed import PhotoFeed
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
    DecisionRow,
    FaceRow,
    Ledger,
    PhotoRow,
)
from faceid_tui.triage.people import ENROL_PER_GROUP, GroupFace, GroupView, PeopleGroups

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


def _as_shown(matches: list[FaceMatch]) -> list[tuple[object, ...]]:
    """What the screen shows of a photo's matches. Scores are rounded: a product over a bank
    of another shape gives the same scores to within float rounding, not bit for bit, and
    that must not count as a change (it would mark every row after each new name)."""
    return [(m.name, m.status, None if m.score is None else round(m.score, 3),
             None if m.margin is None else round(m.margin, 3),
             tuple(c.name for c in m.candidates)) for m in matches]


@dataclass(frozen=True)
class PhotoView:
    sha256: str
    path: str
    state: str
    faces: int
    names: tuple[str, ...]
    best_score: float | None
    error: str | None
    #: Arrival order (the ledger's sequence): the list's "by time" order.
    seq: int = 0
    #: The tier of every face still undecided, in face order (what the list's filters read).
    pending: tuple[str, ...] = ()


@dataclass
class TriagePaths:
    inbox: Path
    out: Path
    move_done: Path | None = None


class TriageSession:
    def __init__(self, pipeline: Pipeline, bank: BankBase, ledger: Ledger,
                 paths: TriagePaths) -> None:
        self.pipeline = pipeline
        self.bank = bank
        self.ledger = ledger
        self.paths = paths
        self.paths.inbox = Path(paths.inbox).absolute()
        self._lock = threading.RLock()
        self._matcher: Matcher | None = None
        # Set when the bank or threshold changed: the matcher is rebuilt on next use, while
        # readers without the lock go on with the one they have.
        self._matcher_dirty = False
        self._threshold_override: float | None = None  # set by the user's +/- keys
        self.errors = 0
        # In-memory mirror of the ledger (see the module docstring).
        self._photos: dict[str, PhotoRow] = {}  # arrival order
        self._seq: dict[str, int] = {}
        self._face_rows: dict[str, list[FaceRow]] = {}
        self._matches: dict[str, list[FaceMatch]] = {}
        self._views: dict[str, PhotoView] = {}
        self._counts: Counter[str] = Counter()
        self._feed: PhotoFeed | None = None  # the running stream's, while one runs
        self._in_flight: dict[Path, str] = {}
        self._last_seq = 0
        self._stale = False  # the bank changed since the pending faces were matched
        self._identity_count: int | None = None
        self._outputs_due: set[str] = set()  # photos a decision completed (finish_deferred)
        #: The photos whose names or tiers the latest re-match changed.
        self.renamed: set[str] = set()
        #: The photos the latest group action or undo changed (for the app to redraw).
        self.touched_photos: set[str] = set()
        #: Groups of undecided faces ("people to name"), kept in step with every change by
        #: :meth:`_settle_groups`. Lock order: the session's lock, then ``_groups_lock``,
        #: then the ledger's (never the session's while holding the groups').
        self.people = PeopleGroups(ledger, pipeline.model_id)
        self._groups_lock = threading.RLock()
        self._regroup_due: set[str] = set()  # photos whose faces the groups must take up
        self._regroup_marks: Counter[str] = Counter()  # bumped each time a photo is marked
        self._reload()

    def close(self) -> None:
        self.ledger.close()
        self.bank.close()

    # -- the in-memory mirror -------------------------------------------------------------
    def _reload(self) -> None:
        """Read every photo and face back from the ledger (at start, after outside edits).
        New structures are built, then swapped in: readers without the lock (counts, views)
        never see a half-empty mirror."""
        with self._lock:
            photos: dict[str, PhotoRow] = {}
            seq: dict[str, int] = {}
            counts: Counter[str] = Counter()
            for number, row in enumerate(self.ledger.photos(), start=1):
                photos[row.sha256], seq[row.sha256] = row, number
                counts[row.state] += 1
            face_rows: dict[str, list[FaceRow]] = {}
            for face in self.ledger.faces():
                face_rows.setdefault(face.photo_sha, []).append(face)
            self._photos, self._seq, self._counts = photos, seq, counts
            self._last_seq = len(photos)
            self._face_rows, self._matches, self._views = face_rows, {}, {}  # views: on read
            with self._groups_lock:
                self.people.load(face_rows, {sha: row.state for sha, row in photos.items()})
            self._stale = False
            self._identity_count = None

    def _put_row(self, row: PhotoRow, *, build: bool = True) -> None:
        """Set a photo's row; ``build``: its view too, at once (else the caller does, or the
        next reader). A view is replaced, never removed first, so readers without the lock
        always find one."""
        old = self._photos.get(row.sha256)
        if old is not None:
            self._counts[old.state] -= 1
        else:
            self._last_seq += 1
            self._seq[row.sha256] = self._last_seq
        self._photos[row.sha256] = row
        self._counts[row.state] += 1
        if build:
            self._refresh_views([row.sha256])

    def _refresh_views(self, shas: list[str], *, regroup: bool = True) -> None:
        """Build these photos' views again, matching those with faces in one product; their
        undecided faces join the groups of people to name, decided ones leave (unless
        ``regroup`` is False: undo puts the groups back itself)."""
        if regroup:
            self._regroup(shas)
        shas = [sha for sha in shas if sha in self._photos]
        self._match_missing([sha for sha in shas
                             if self._photos[sha].state in (REVIEW, REVIEWED)])
        for sha in shas:
            self._views[sha] = self._build_view(sha)

    def _drop_row(self, sha: str) -> None:
        old = self._photos.pop(sha, None)
        if old is not None:
            self._counts[old.state] -= 1
        for cache in (self._seq, self._face_rows, self._matches, self._views):
            cache.pop(sha, None)
        self._regroup([sha])

    def _regroup(self, shas: list[str]) -> None:
        """These photos' faces changed: the groups take them up at the next
        :meth:`_settle_groups` (the caller's, or before the groups are next read)."""
        self._regroup_due.update(shas)
        self._regroup_marks.update(shas)

    def _settle_groups(self) -> None:
        """Bring the groups of people to name in step with the photos marked by
        :meth:`_regroup`. Grouping is the slow part of storing a chunk of a drain (~100 ms a
        chunk with 10^4 faces pending), so the processing thread runs it after letting go of
        the session's lock: a decision made meanwhile does not wait for it (the reject key
        did, while a queue drained). The photos' faces are read under the session's lock,
        grouped under the groups' lock only; a photo marked again in between is left to the
        settle that follows its new mark, so an older reading never undoes a newer one."""
        with self._lock:
            if not self._regroup_due:
                return
            due, self._regroup_due = self._regroup_due, set()
            rows = {sha: self._face_rows.get(sha) if sha in self._photos else None
                    for sha in due}
            states = {sha: self._photos[sha].state for sha in due if sha in self._photos}
            marks = {sha: self._regroup_marks[sha] for sha in due}
            # Photos still queued will bring about a face each: the merge threshold is set
            # for the pool the drop will make (see GROUP_PAIR_BUDGET).
            expected = self._counts[QUEUED] + self._counts[PROCESSING]
        with self._groups_lock:
            current = {sha: rows[sha] for sha in due if self._regroup_marks[sha] == marks[sha]}
            self.people.expected_faces = expected
            self.people.sync(current, states)

    def _reread_photo(self, sha: str, *, build: bool = True) -> None:
        """After a ledger change to one photo: its row and faces from the ledger again, and
        its view (unless ``build`` is False: the caller builds many at once)."""
        row = self.ledger.photo(sha)
        if row is None:
            self._drop_row(sha)
            return
        self._put_row(row, build=False)
        self._face_rows[sha] = self.ledger.faces(sha)
        self._matches.pop(sha, None)
        if build:
            self._refresh_views([sha])

    def counts(self) -> dict[str, int]:
        """Photos in each state (queued, processing, to review, reviewed, error): kept as
        events happen, never recounted."""
        # Read without the lock: the status line asks on every refresh, and must not wait
        # for a chunk being stored or a re-match (copying the dict is atomic in CPython).
        return {state: count for state, count in dict(self._counts).items() if count}

    # -- intake ---------------------------------------------------------------------------
    def register(self, path: Path) -> str | None:
        """Hash a complete inbox file and queue it; None when that content is known already
        (or the file vanished). A running stream takes it at once."""
        return self.register_many([path])[0]

    def register_many(self, paths: list[Path]) -> list[str | None]:
        """:meth:`register` for a burst of arrivals: files hashed before the lock is taken,
        then one transaction for them all (a drop of thousands of photos must not hold the
        lock, and sync the disk, once per photo while the stream waits to store results)."""
        hashed: list[tuple[Path, str]] = []
        for path in paths:
            path = Path(path).absolute()
            try:
                digest = sha256_file(path)
            except OSError:
                continue  # vanished before it was read
            shared = self.ledger.shared
            if shared is not None and not shared.claim(digest, str(path)):
                continue  # another station has it (or it is done there)
            hashed.append((path, digest))
        if not hashed:  # the intake asks every tenth of a second, mostly with nothing new
            return [None] * len(paths)
        queued: dict[Path, str] = {}
        with self._lock:
            added = self.ledger.add_photos([(str(path), digest) for path, digest in hashed])
            for (path, digest), is_new in zip(hashed, added, strict=True):
                if not is_new:
                    continue
                old = self._in_flight.get(path)
                if old and old != digest and not self.ledger.paths_of(old):
                    # The file was overwritten before its old content was read: that is gone.
                    self.ledger.forget_photo(old)
                    self._drop_row(old)
                self._put_row(PhotoRow(digest, str(path), QUEUED, None, None, None),
                              build=False)
                if self._feed is not None:
                    self._in_flight[path] = digest
                    self._feed.put(path)
                queued[path] = digest
            if queued:
                self._refresh_views(list(queued.values()))
        return [queued.get(Path(path).absolute()) for path in paths]

    def _drop_photos_taken_over(self) -> None:
        """With a shared ledger: photos this station left undecided when it stopped are
        claimed again; those another station took over meanwhile leave this station's list."""
        shared = self.ledger.shared
        if shared is None:
            return
        for row in self.ledger.photos():
            if row.state != REVIEWED and not shared.claim(row.sha256, row.path):
                self.ledger.forget_photo(row.sha256)

    def take_abandoned(self) -> list[str]:
        """With a shared ledger: queue the photos of stations whose claims ran out (they
        stopped); return their hashes. Their files must be where that station saw them (a
        shared inbox)."""
        shared = self.ledger.shared
        if shared is None:
            return []
        taken = []
        for sha, path in shared.take_abandoned():
            if not Path(path).is_file():
                shared.release(sha)  # gone from the inbox: nothing left to claim
            elif self.register(Path(path)) is not None:
                taken.append(sha)
        return taken

    def queued(self) -> list[PhotoRow]:
        with self._lock:
            return [row for row in self._photos.values() if row.state == QUEUED]

    # -- processing -----------------------------------------------------------------------
    def start(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Load the bank (embedding photos added by hand, and every photo again after a change
        of model) and the matcher. Slow: models load. ``progress(done, total)`` follows the
        bank's embedding."""
        self.bank.sync(progress=progress)
        remove_stale_temp_files(self.paths.out)  # left by a write that was killed
        with self._lock:
            self._drop_photos_taken_over()
            self.ledger.requeue_other_models(self.pipeline.model_id)
            self._matcher_dirty = True
            self._reload()

    def process(self, photos: list[PhotoRow],
                should_stop: Callable[[], bool] | None = None) -> list[str]:
        """Detect and embed a batch of queued photos; return the hashes that changed.

        A photo whose every file vanished before processing is dropped quietly.
        """
        todo: dict[Path, str] = {}
        for photo in photos:
            path = self._existing_path(photo.sha256)
            with self._lock:
                if path is None:
                    self.ledger.forget_photo(photo.sha256)
                    self._drop_row(photo.sha256)
                    continue
                self.ledger.set_state(photo.sha256, PROCESSING)
                self._put_row(dataclasses.replace(self._photos[photo.sha256], state=PROCESSING))
            todo[path] = photo.sha256
        done = []
        for result in self.pipeline.run(list(todo), should_stop=should_stop):
            self._store(todo[result.path], result)
            self._settle_groups()  # photo by photo, as they come
            done.append(todo[result.path])
        # Anything not reached (stop asked) goes back to the queue.
        with self._lock:
            for sha in set(todo.values()) - set(done):
                self.ledger.set_state(sha, QUEUED)
                self._reread_photo(sha)
        self._settle_groups()
        return done

    def process_stream(self, should_stop: Callable[[], bool],
                       on_stored: Callable[[str], None]) -> None:
        """Process the queue and every photo registered meanwhile in one pipelined run (the
        detect processes and the models start once), until ``should_stop``. Results are stored
        as each chunk of them comes (up to 64 photos, one transaction) and each photo is
        announced with ``on_stored(sha)``. Photos wait in the ledger as ``queued`` until
        stored, so a stop or a crash loses nothing."""
        feed = PhotoFeed()
        with self._lock:
            if self._feed is not None:
                raise RuntimeError("a processing stream is already running")
            self._feed, self._in_flight = feed, {}
            for row in self.queued():
                path = self._existing_path(row.sha256)
                if path is None:
                    self.ledger.forget_photo(row.sha256)
                    self._drop_row(row.sha256)
                    on_stored(row.sha256)
                    continue
                self._in_flight[path] = row.sha256
                feed.put(path)
        try:
            for chunk in self.pipeline.stream(feed, should_stop=should_stop):
                for sha in self._store_chunk(chunk):
                    on_stored(sha)
        finally:
            with self._lock:
                self._feed, self._in_flight = None, {}
            feed.close()

    def _store_chunk(self, chunk: list[PhotoResult]) -> list[str]:
        """Record a chunk of the stream's results in one transaction (one disk sync, one hold
        of the lock per chunk, not per photo); return the photos stored."""
        stored, faceless = [], []
        with self._lock, self.ledger.transaction():
            for result in chunk:
                sha = self._in_flight.pop(result.path, None)
                if sha is not None and self._store(sha, result, write_output=False):
                    stored.append(sha)
                    if not result.error and not self._face_rows.get(sha):
                        faceless.append(sha)
            self._refresh_views(stored)  # one product for the chunk's faces
        self._settle_groups()  # the slow part, without the session's lock
        for sha in faceless:  # reviewed already: nothing to decide
            self._write_output(sha)
        return stored

    def _store(self, sha: str, result: PhotoResult, *, write_output: bool = True) -> bool:
        """Record one photo's result; False if the photo left the ledger meanwhile."""
        with self._lock:
            if sha not in self._photos:
                return False
            if result.error and not result.path.exists():
                self.ledger.forget_photo(sha)
                self._drop_row(sha)
                return True
            if result.error:
                self.ledger.set_state(sha, ERROR, result.error)
                self.errors += 1
            else:
                faces = [(tuple(face.box.as_list()), face.embedding)
                         for face in result.faces if face.embedding is not None]
                self.ledger.store_results(sha, result.width or 0, result.height or 0,
                                          self.pipeline.model_id, faces)
            self._reread_photo(sha, build=write_output)
            if write_output and not result.error and not self._face_rows.get(sha):
                self._write_output(sha)
            return True

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
            if self._matcher is None or self._matcher_dirty:
                self._matcher = self.bank.matcher()
                self._matcher.threshold = self.threshold
                self._matcher_dirty = False
            return self._matcher

    def _usable(self, sha: str, model_id: str) -> list[FaceRow] | None:
        """The photo's faces if every one can be matched (embedded by ``model_id``, the
        pipeline's: read once per pass by the caller, as it looks for the model's files)."""
        faces = self._face_rows.get(sha, [])
        if not faces or any(f.model_id != model_id for f in faces):
            return None
        return faces

    def _match_missing(self, shas: list[str]) -> None:
        """Match the photos among ``shas`` that have no matches yet, in one product."""
        todo = [sha for sha in shas if sha not in self._matches]
        model_id = self.pipeline.model_id
        usable = {sha: self._usable(sha, model_id) for sha in todo}
        for sha in todo:
            if usable[sha] is None:
                self._matches[sha] = []
        ready = [sha for sha in todo if usable[sha] is not None]
        if ready:
            queries = [np.stack([face.embedding for face in usable[sha] or []])
                       for sha in ready]
            for sha, matches in zip(ready, self.matcher.match_photos(queries), strict=True):
                self._matches[sha] = matches

    def faces(self, sha: str) -> list[FaceView]:
        # The screen calls this on every move: when the photo is matched already, read without
        # the lock (the caches are replaced entry by entry, never emptied while in use), so a
        # re-match or a store running in a worker does not hold the keyboard up.
        matcher = self._matcher
        if sha in self._matches and matcher is not None:
            return self._face_views(sha, matcher)
        with self._lock:
            self._match_missing([sha])
            return self._face_views(sha)

    def _face_views(self, sha: str, matcher: Matcher | None = None) -> list[FaceView]:
        rows = self._face_rows.get(sha, [])
        matches = self._matches.get(sha) or [None] * len(rows)
        views = []
        for face, match in zip(rows, matches, strict=True):
            candidates = tuple(c.name for c in match.candidates) if match else ()
            if face.decision:
                status = face.decision
                name = face.decided_name
                score = self._score_for(face, name, matcher) if name else None
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

    def _score_for(self, face: FaceRow, name: str,
                   matcher: Matcher | None = None) -> float | None:
        if face.model_id != self.pipeline.model_id:
            return None
        matcher = matcher or self.matcher
        if name not in matcher.identities:
            return None
        return matcher.identity_score(face.embedding, name)

    def _photo_view(self, sha: str) -> PhotoView:
        view = self._views.get(sha)
        if view is None:
            view = self._views[sha] = self._build_view(sha)
        return view

    def _build_view(self, sha: str) -> PhotoView:
        row = self._photos[sha]
        faces = self._face_views(sha) if row.state in (REVIEW, REVIEWED) else []
        names = tuple(shown_name(f) for f in faces if f.name)
        scores = [f.score for f in faces if f.score is not None]
        view = PhotoView(sha, row.path, row.state, len(faces), names,
                         max(scores) if scores else None, row.error, self._seq.get(sha, 0),
                         tuple(f.status for f in faces if not f.decided))
        return view

    def photos(self) -> list[PhotoView]:
        """Every photo's view, in arrival order (cached: only what changed is rebuilt)."""
        views = [self._views.get(sha) for sha in list(self._photos)]
        if all(view is not None for view in views):  # without the lock (see faces)
            return views  # type: ignore[return-value]
        with self._lock:
            self._match_missing([sha for sha, row in self._photos.items()
                                 if row.state in (REVIEW, REVIEWED) and sha not in self._views])
            return [self._photo_view(sha) for sha in self._photos]

    def photo(self, sha: str) -> PhotoView | None:
        """One photo's view; None once it left the ledger."""
        view = self._views.get(sha)  # the common case, without the lock (see faces)
        if view is not None:
            return view
        with self._lock:
            if sha not in self._photos:
                return None
            if sha not in self._views:
                self._match_missing([sha])
            return self._photo_view(sha)

    def rematch(self) -> set[str]:
        """Match every pending face again (after the bank or the threshold changed), in one
        product; return the photos whose view changed (:attr:`renamed`: those among them
        whose names or tiers changed, not only scores)."""
        with self._lock:
            self._matcher_dirty = True
            self._stale = False
            model_id = self.pipeline.model_id
            pending = [sha for sha, row in self._photos.items()
                       if row.state == REVIEW and self._usable(sha, model_id) is not None]
            faces = [self._face_rows[sha] for sha in pending]
            queries = np.array([face.embedding for photo in faces for face in photo])
            matched = (self.matcher.match_grouped(queries, [len(photo) for photo in faces])
                       if pending else [])
            changed: set[str] = set()
            renamed: set[str] = set()
            # Entry by entry: readers without the lock always find a view (old or new).
            for sha, matches in zip(pending, matched, strict=True):
                if (sha in self._views and
                        _as_shown(matches) == _as_shown(self._matches.get(sha) or [])):
                    continue  # most photos: the new identity is not among their candidates
                self._matches[sha] = matches
                view = self._build_view(sha)
                old = self._views.get(sha)
                if view != old:
                    self._views[sha] = view
                    changed.add(sha)
                    if old is None or (view.names, view.pending) != (old.names, old.pending):
                        renamed.add(sha)
            self.renamed = renamed
            return changed

    def identity_names(self) -> list[str]:
        return self.bank.store.identity_names()

    def import_people(self, path: Path, name: str | None = None,
                      progress: Callable[[int, int], None] | None = None) -> str:
        """Enrol known people: a folder of ``Name/photo.jpg``, or one photo under ``name``.
        Pending faces are matched again by :meth:`finish_deferred` (the caller's to run).
        Returns a one-line summary."""
        path = Path(path).expanduser()
        if path.is_dir():
            report = import_people(self.bank, path, progress)
        elif name:
            report = import_photo(self.bank, path, name)
        else:
            raise FaceIdError(f"{path} is a file: give the name of the person it shows")
        with self._lock:
            if report.enrolled:
                self._bank_changed()
        return report.summary()

    def identity_count(self) -> int:
        """Identities in the bank (cached until the bank changes)."""
        if self._identity_count is not None:  # without the lock, as counts()
            return self._identity_count
        with self._lock:
            if self._identity_count is None:
                self._identity_count = len(self.bank.store.identity_names())
            return self._identity_count

    # -- decisions ------------------------------------------------------------------------
    # Each decision updates its own photo at once. What may follow is slower: a photo fully
    # decided gets its annotated copy written, and a decision that changed the bank (a name,
    # a confirmation, undoing either) leaves every other pending face to be matched again.
    # Inline by default; with ``defer=True`` (the app) both wait for :meth:`finish_deferred`,
    # so the screen shows the decided face first and the rest when that is done.

    def confirm(self, face_id: int, *, defer: bool = False) -> None:
        """Accept the suggested name (enrols the face)."""
        face = self._view(face_id)
        if face.name is None:
            raise FaceIdError("this face has no suggestion to confirm; press n to name it")
        self.name_face(face_id, face.name, defer=defer)

    def name_face(self, face_id: int, name: str, *, defer: bool = False) -> None:
        """Name a face (a new name creates the identity) and enrol it into the bank."""
        with self._lock:
            face = self.ledger.face(face_id)
            photo = self.ledger.photo(face.photo_sha)
            source = self._existing_path(face.photo_sha)
            if photo is None or source is None:
                raise FaceIdError("the photo is no longer in the inbox; it cannot be enrolled")
            face_count = len(self._face_rows.get(face.photo_sha, ())) or 1
            enrolment = self.bank.enrol_face(name, source, face.box, face.embedding,
                                             face_count=face_count, face_number=face.index + 1)
            self.ledger.decide(face_id, CONFIRMED, enrolment.rel_path.split("/", 1)[0],
                               None if enrolment.already_enrolled else enrolment.rel_path,
                               enrolment.created_identity)
            self._bank_changed()
            self._decided(face.photo_sha, defer)

    def reject(self, face_id: int, *, defer: bool = False) -> None:
        self._decide_without_enrolment(face_id, REJECTED, defer)

    def leave_unknown(self, face_id: int, *, defer: bool = False) -> None:
        self._decide_without_enrolment(face_id, LEFT_UNKNOWN, defer)

    def _decide_without_enrolment(self, face_id: int, decision: str, defer: bool) -> None:
        with self._lock:
            face = self.ledger.face(face_id)
            self.ledger.decide(face_id, decision, None)
            self._decided(face.photo_sha, defer)

    def _decided(self, sha: str, defer: bool) -> None:
        self._reread_photo(sha)
        self._outputs_due.add(sha)
        if not defer:
            self.finish_deferred()

    def finish_deferred(self) -> set[str]:
        """Write the annotated copies of the photos decisions completed, and match the pending
        faces again if the bank changed; return the photos whose view changed."""
        with self._lock:
            due = [sha for sha in self._outputs_due
                   if (row := self._photos.get(sha)) is not None and row.state == REVIEWED]
            self._outputs_due.clear()
        for sha in due:
            self._write_output(sha)
        self._settle_groups()
        return self.rematch() if self.rematch_pending else set()

    def confirm_all_known(self, sha: str, *, defer: bool = False) -> int:
        with self._lock:
            count = 0
            for face in self.faces(sha):
                if not face.decided and face.status == KNOWN:
                    self.confirm(face.face_id, defer=True)
                    count += 1
            if not defer:
                self.finish_deferred()
            return count

    def undo(self, *, defer: bool = False) -> str | None:
        """Undo the latest decision (removing what it enrolled) or group action (all of its
        decisions, and the groups as they were); say what was undone."""
        with self._lock:
            self._settle_groups()  # a group action's snapshot is put back over today's groups
            decision = self.ledger.last_decision()
            action = self.ledger.last_action()
            # A group action is recorded before its decisions, so a later time is a later act.
            if action is not None and (decision is None or action[1] > decision.at):
                return self._undo_action(action[0], defer)
            if decision is not None and decision.action_id is not None:
                return self._undo_action(decision.action_id, defer)
            if decision is None:
                return None
            self._take_back(decision)
            face = self.ledger.face(decision.face_id)
            self.touched_photos = {face.photo_sha}
            self._decided(face.photo_sha, defer)
            label = decision.name or decision.decision
            return f"undid {decision.decision} of face {face.index + 1} ({label})"

    def _take_back(self, decision: DecisionRow) -> None:
        """Undo one decision in the ledger and remove the sample it enrolled."""
        if decision.enrolled_path:
            with contextlib.suppress(FaceIdError, OSError):
                self.bank.remove_sample(decision.enrolled_path,
                                        drop_empty_identity=decision.created_identity)
            self._bank_changed()
        self.ledger.undo_decision(decision)

    def _undo_action(self, action_id: int, defer: bool) -> str:
        kind, detail = self.ledger.action(action_id) or ("action", {})
        decisions = self.ledger.action_decisions(action_id)
        faces = {decision.face_id: self.ledger.face(decision.face_id)
                 for decision in decisions}
        with self.ledger.transaction():
            for decision in decisions:
                self._take_back(decision)
            self.ledger.finish_undo_action(action_id)
        shas = sorted({face.photo_sha for face in faces.values()})
        for sha in shas:
            self._reread_photo(sha, build=False)
        self._refresh_views(shas, regroup=False)
        rows = {face.id: face for sha in shas for face in self._face_rows.get(sha, ())}
        groups = detail.get("groups", {})
        if isinstance(groups, dict):
            for members in groups.values():
                for face_id in members:
                    if face_id not in rows and (face := self._ledger_face(face_id)):
                        rows[face_id] = face
        with self._groups_lock:
            self.people.put_back(detail, rows)
        self._regroup(shas)  # faces the snapshot did not hold (none, normally)
        self._outputs_due.update(shas)
        self.touched_photos = set(shas)
        if not defer:
            self.finish_deferred()
        what = {"name": "naming", "reject": "rejection", "merge": "merge",
                "detach": "removal"}.get(kind, kind)
        label = detail.get("name")
        return f"undid the group {what}" + (f" ({label})" if label else "")

    def _ledger_face(self, face_id: int) -> FaceRow | None:
        try:
            return self.ledger.face(face_id)
        except KeyError:
            return None

    # -- people to name (groups of undecided faces) ---------------------------------------
    def group_views(self, groups: list[int] | None = None) -> list[GroupView]:
        """The groups of undecided faces, largest first, each with its best identity."""
        with self._lock, self._settled_groups():
            matcher = self.matcher if self.identity_count() else None
            return self.people.views(matcher, groups)

    def group_of(self, face_id: int) -> int | None:
        with self._lock, self._settled_groups():
            return self.people.group_of(face_id)

    def name_group(self, group: int, name: str, *, defer: bool = False) -> int:
        """Name a whole group: its most typical faces are enrolled under ``name`` (created
        or extended), every face of it is confirmed; one undo takes it all back. Returns
        the faces named."""
        with self._lock, self._settled_groups():
            view = self._group(group)
            sources = {face.photo_sha: self._existing_path(face.photo_sha) for face in view.faces}
            if any(path is None for path in sources.values()):
                raise FaceIdError("a photo of this group is no longer in the inbox; "
                                  "name its faces one by one")
            canonical = validate_identity_name(name)
            # One ledger transaction: a crash or a failed enrolment leaves the group
            # undecided (samples already enrolled are found again by content when the group
            # is named again, and the matcher is told the bank changed either way).
            try:
                with self.ledger.transaction():
                    action = self.ledger.start_action(
                        "name", {"name": canonical, **self.people.snapshot([group])})
                    for number, face in enumerate(view.faces):
                        row = self._face_row(face)
                        if number >= ENROL_PER_GROUP:
                            self.ledger.decide(face.face_id, CONFIRMED, canonical, action_id=action)
                            continue
                        enrolment = self.bank.enrol_face(
                            canonical, sources[face.photo_sha], row.box, row.embedding,
                            face_count=len(self._face_rows.get(face.photo_sha, ())) or 1,
                            face_number=row.index + 1)
                        enrolled = None if enrolment.already_enrolled else enrolment.rel_path
                        self.ledger.decide(face.face_id, CONFIRMED, canonical, enrolled,
                                           enrolment.created_identity, action_id=action)
            finally:
                self._bank_changed()
            self._group_decided(view, defer)
            return view.size

    def reject_group(self, group: int, *, defer: bool = False) -> int:
        """Reject every face of a group (people the user does not care about)."""
        with self._lock, self._settled_groups():
            view = self._group(group)
            with self.ledger.transaction():
                action = self.ledger.start_action("reject", self.people.snapshot([group]))
                for face in view.faces:
                    self.ledger.decide(face.face_id, REJECTED, None, action_id=action)
            self._group_decided(view, defer)
            return view.size

    def detach_from_group(self, face_id: int) -> int | None:
        """Take one face out of its group (it never rejoins it); returns the group."""
        with self._lock, self._settled_groups():
            group = self.people.group_of(face_id)
            if group is None:
                raise FaceIdError("that face is in no group")
            # Undo puts the group back as it was; the face leaves wherever it went.
            snapshot = self.people.snapshot([group])
            with self.ledger.transaction():
                self.people.detach(face_id)
                self.ledger.start_action("detach", {**snapshot, "face": face_id})
            self.touched_photos = set()  # no photo's faces changed
            return group

    def merge_groups(self, keep: int, other: int) -> int:
        """The user says two groups are one person; returns the merged group's id."""
        with self._lock, self._settled_groups():
            snapshot = self.people.snapshot([keep, other])
            with self.ledger.transaction():
                self.people.merge(keep, other)
                self.ledger.start_action("merge", snapshot)
            self.touched_photos = set()
            return keep

    @contextlib.contextmanager
    def _settled_groups(self) -> Iterator[None]:
        """The groups in step with every photo, held for a group read or action (the
        session's lock is held by the caller)."""
        self._settle_groups()
        with self._groups_lock:
            yield

    def _group(self, group: int) -> GroupView:
        views = self.people.views(self.matcher if self.identity_count() else None, [group])
        if not views:
            raise FaceIdError(f"there is no group {group} any more")
        return views[0]

    def _face_row(self, face: GroupFace) -> FaceRow:
        return next(row for row in self._face_rows[face.photo_sha] if row.id == face.face_id)

    def _group_decided(self, view: GroupView, defer: bool) -> None:
        shas = sorted({face.photo_sha for face in view.faces})
        for sha in shas:
            self._reread_photo(sha, build=False)
        self._refresh_views(shas)
        self._outputs_due.update(shas)
        self.touched_photos = set(shas)
        if not defer:
            self.finish_deferred()

    def last_decided_photo(self) -> str | None:
        """The photo of the latest decision that is not undone (what undo would change)."""
        # The ledger's own lock is enough for two reads: the undo key must not wait for a
        # re-match holding the session's.
        decision = self.ledger.last_decision()
        return self.ledger.face(decision.face_id).photo_sha if decision else None

    def _view(self, face_id: int) -> FaceView:
        face = self.ledger.face(face_id)
        return next(v for v in self.faces(face.photo_sha) if v.face_id == face_id)

    @property
    def rematch_pending(self) -> bool:
        """True when the bank changed since the pending faces were matched."""
        return self._stale

    def _bank_changed(self) -> None:
        self._matcher_dirty = True
        self._stale = True
        # Counted now, by the thread that changed the bank: the status line reads the count
        # without the lock, and must not wait for the re-match that follows a decision.
        self._identity_count = len(self.bank.store.identity_names())

    def watch_bank(self, on_change: Callable[[], None]) -> bool:
        """With a shared bank, follow other stations' changes: each one reloads the faces
        and matches again (in the listener's thread), then ``on_change()`` is called. Returns
        whether the bank can be watched (a folder bank cannot: it is this station's own)."""
        watch = getattr(self.bank, "watch", None)
        if watch is None:
            return False

        def changed() -> None:
            self.bank_changed()
            on_change()

        watch(changed)
        return True

    def bank_changed(self) -> None:
        """The bank was edited elsewhere (the bank screen: renames reach decided faces too):
        read the faces back and match everything again."""
        with self._lock:
            self._matcher_dirty = True
            self._reload()

    # -- threshold ------------------------------------------------------------------------
    def set_threshold(self, threshold: float) -> set[str]:
        """Rescore every pending face from stored embeddings; return the photos whose view
        changed."""
        with self._lock:
            self._threshold_override = round(min(0.99, max(0.0, threshold)), 4)
            return self.rematch()

    # -- output ---------------------------------------------------------------------------
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

