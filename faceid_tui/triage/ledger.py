"""The ledger: every photo faceid has seen (by content hash), its faces and their embeddings,
and every decision the user made, in SQLite (WAL, one transaction per change).

A restart reads the same queue and decisions back and re-processes nothing; the same photo
under two names is one row in ``photos`` with two rows in ``photo_paths``.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from faceid_tui.database import Database

if TYPE_CHECKING:
    from faceid_tui.triage.shared_ledger import SharedLedger

LEDGER_NAME = ".faceid-ledger.sqlite3"

# Photo states, in the order a photo passes through them.
QUEUED, PROCESSING, REVIEW = "queued", "processing", "to review"
REVIEWED, ERROR = "reviewed", "error"
# Decisions on a face.
CONFIRMED, REJECTED, LEFT_UNKNOWN = "confirmed", "rejected", "unknown"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    sha256 TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    width INTEGER,
    height INTEGER,
    model_id TEXT,
    added_at REAL NOT NULL,
    processed_at REAL,
    finished_at REAL
);
-- Without these, each photo added scanned the table (the next seq, the paths of a photo):
-- registering 8,476 photos one by one took 5.3 s under the session's lock, 2.6 s with them.
CREATE INDEX IF NOT EXISTS photos_by_seq ON photos(seq);
CREATE TABLE IF NOT EXISTS photo_paths (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL REFERENCES photos(sha256) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS photo_paths_by_photo ON photo_paths(sha256);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    photo_sha TEXT NOT NULL REFERENCES photos(sha256) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    decision TEXT,
    decided_name TEXT,
    enrolled_path TEXT,
    decided_at REAL,
    UNIQUE (photo_sha, face_index)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    decision TEXT NOT NULL,
    name TEXT,
    enrolled_path TEXT,
    created_identity INTEGER NOT NULL DEFAULT 0,
    at REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    action_id INTEGER REFERENCES group_actions(id)
);
CREATE INDEX IF NOT EXISTS decisions_by_face ON decisions(face_id);
CREATE TABLE IF NOT EXISTS face_groups (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS face_groups_by_group ON face_groups(group_id);
CREATE TABLE IF NOT EXISTS face_offsets (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    offset REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_bars (
    face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL,
    PRIMARY KEY (face_id, group_id)
);
CREATE TABLE IF NOT EXISTS grouping (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS group_actions (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass(frozen=True)
class PhotoRow:
    sha256: str
    path: str
    state: str
    error: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class FaceRow:
    id: int
    photo_sha: str
    index: int
    box: tuple[int, int, int, int]
    model_id: str
    embedding: np.ndarray
    decision: str | None
    decided_name: str | None
    enrolled_path: str | None


@dataclass(frozen=True)
class DecisionRow:
    id: int
    face_id: int
    decision: str
    name: str | None
    enrolled_path: str | None
    created_identity: bool
    action_id: int | None = None
    at: float = 0.0


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # synchronous=FULL: a decision shown on screen is on disk, even after a power cut.
        self._database = Database(self.path, synchronous="FULL")
        self._database.create_schema(_SCHEMA)
        self._db = self._database.connection
        self._lock = self._database.lock
        self._add_missing_columns()
        #: With a shared bank: decisions and finished photos are also written there, in the
        #: same transaction (a decision the database refused is not kept here either).
        self.shared: SharedLedger | None = None
        with self.transaction():
            # A photo caught mid-processing by a crash is simply queued again.
            self._db.execute("UPDATE photos SET state=? WHERE state=?", (QUEUED, PROCESSING))

    def _add_missing_columns(self) -> None:
        """Ledgers written before group actions existed lack ``decisions.action_id``."""
        with self.transaction():
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
            if "action_id" not in columns:
                self._db.execute("ALTER TABLE decisions ADD COLUMN action_id INTEGER "
                                 "REFERENCES group_actions(id)")

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit of work; nested uses join the outer transaction."""
        return self._database.transaction()

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()
        self._database.close()

    # -- photos ---------------------------------------------------------------------------
    def add_photo(self, path: str, sha256: str) -> bool:
        """Record a photo found in the inbox; False when its content was seen before (the new
        path is remembered as another name of the same photo)."""
        return self.add_photos([(path, sha256)])[0]

    def add_photos(self, photos: list[tuple[str, str]]) -> list[bool]:
        """:meth:`add_photo` for many ``(path, sha256)`` in one transaction (one disk sync for
        a whole burst of arrivals, not one each)."""
        added = []
        with self.transaction():
            for path, sha256 in photos:
                known = self._db.execute("SELECT 1 FROM photos WHERE sha256=?",
                                         (sha256,)).fetchone()
                if not known:
                    seq = self._db.execute(
                        "SELECT COALESCE(MAX(seq), 0) + 1 FROM photos").fetchone()[0]
                    self._db.execute(
                        "INSERT INTO photos(sha256, seq, path, state, added_at)"
                        " VALUES (?, ?, ?, ?, ?)", (sha256, seq, path, QUEUED, time.time()))
                self._db.execute("INSERT OR REPLACE INTO photo_paths VALUES (?, ?)",
                                 (path, sha256))
                added.append(not known)
        return added

    def sha_for_path(self, path: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM photo_paths WHERE path=?",
                                   (path,)).fetchone()
        return row[0] if row else None

    def paths_of(self, sha256: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT path FROM photo_paths WHERE sha256=? ORDER BY path",
                                    (sha256,)).fetchall()
        return [row[0] for row in rows]

    def forget_photo(self, sha256: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM photos WHERE sha256=?", (sha256,))

    def set_state(self, sha256: str, state: str, error: str | None = None) -> None:
        now = time.time()
        with self.transaction():
            self._db.execute(
                "UPDATE photos SET state=?, error=?, finished_at=CASE WHEN ?=? THEN ? "
                "ELSE finished_at END WHERE sha256=?",
                (state, error, state, REVIEWED, now, sha256),
            )

    def photos(self) -> list[PhotoRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT sha256, path, state, error, width, height FROM photos ORDER BY seq"
            ).fetchall()
        return [PhotoRow(*row) for row in rows]

    def photo(self, sha256: str) -> PhotoRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256, path, state, error, width, height FROM photos WHERE sha256=?",
                (sha256,),
            ).fetchone()
        return PhotoRow(*row) if row else None

    def store_results(self, sha256: str, width: int, height: int, model_id: str,
                      faces: list[tuple[tuple[int, int, int, int], np.ndarray]]) -> None:
        """Save a processed photo's faces and embeddings; it then waits for review."""
        state = REVIEW if faces else REVIEWED
        now = time.time()
        with self.transaction():
            self._db.execute("DELETE FROM faces WHERE photo_sha=?", (sha256,))
            for index, (box, embedding) in enumerate(faces):
                self._db.execute(
                    "INSERT INTO faces(photo_sha, face_index, box, model_id, embedding) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (sha256, index, json.dumps(list(box)), model_id,
                     np.asarray(embedding, dtype="<f4").tobytes()),
                )
            self._db.execute(
                "UPDATE photos SET state=?, error=NULL, width=?, height=?, model_id=?, "
                "processed_at=?, finished_at=CASE WHEN ?=? THEN ? ELSE NULL END WHERE sha256=?",
                (state, width, height, model_id, now, state, REVIEWED, now, sha256),
            )

    def requeue_other_models(self, model_id: str) -> int:
        """Queue again the photos still under review whose faces were embedded by another
        model (the user switched embedders): their embeddings cannot be compared. A photo
        with any decision already made keeps its faces, so no decision is ever lost."""
        with self.transaction():
            cursor = self._db.execute(
                "UPDATE photos SET state=? WHERE state=? AND sha256 IN "
                "(SELECT photo_sha FROM faces WHERE model_id != ?) AND sha256 NOT IN "
                "(SELECT photo_sha FROM faces WHERE decision IS NOT NULL)",
                (QUEUED, REVIEW, model_id),
            )
            return cursor.rowcount

    # -- faces and decisions --------------------------------------------------------------
    def faces(self, sha256: str | None = None) -> list[FaceRow]:
        query = ("SELECT id, photo_sha, face_index, box, model_id, embedding, decision, "
                 "decided_name, enrolled_path FROM faces")
        args: tuple[object, ...] = ()
        if sha256 is not None:
            query += " WHERE photo_sha=?"
            args = (sha256,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY photo_sha, face_index", args).fetchall()
        return [FaceRow(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4],
                        np.frombuffer(row[5], dtype="<f4").copy(), row[6], row[7], row[8])
                for row in rows]

    def face(self, face_id: int) -> FaceRow:
        with self._lock:
            sha = self._db.execute("SELECT photo_sha FROM faces WHERE id=?",
                                   (face_id,)).fetchone()
        if sha is None:
            raise KeyError(face_id)
        return next(face for face in self.faces(sha[0]) if face.id == face_id)

    def decide(self, face_id: int, decision: str, name: str | None,
               enrolled_path: str | None = None, created_identity: bool = False,
               action_id: int | None = None) -> None:
        """Record a decision on a face; ``action_id``: part of one group action (undone
        together)."""
        with self.transaction():
            self._db.execute(
                "UPDATE faces SET decision=?, decided_name=?, enrolled_path=?, decided_at=? "
                "WHERE id=?", (decision, name, enrolled_path, time.time(), face_id),
            )
            self._db.execute(
                "INSERT INTO decisions(face_id, decision, name, enrolled_path, created_identity, "
                "at, action_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (face_id, decision, name, enrolled_path, int(created_identity), time.time(),
                 action_id),
            )
            if self.shared is not None:
                sha, box = self._face_key(face_id)
                self.shared.record_decision(sha, box, decision, name)
            self._refresh_photo_state(face_id)

    def _face_key(self, face_id: int) -> tuple[str, list[int]]:
        """A face as every station names it: its photo's content hash and its box."""
        sha, box = self._db.execute("SELECT photo_sha, box FROM faces WHERE id=?",
                                    (face_id,)).fetchone()
        return str(sha), list(json.loads(box))

    def _refresh_photo_state(self, face_id: int) -> None:
        sha = self._db.execute("SELECT photo_sha FROM faces WHERE id=?", (face_id,)).fetchone()[0]
        open_faces = self._db.execute(
            "SELECT COUNT(*) FROM faces WHERE photo_sha=? AND decision IS NULL", (sha,)
        ).fetchone()[0]
        state = REVIEW if open_faces else REVIEWED
        if self.shared is not None:
            before = self._db.execute("SELECT state FROM photos WHERE sha256=?",
                                      (sha,)).fetchone()[0]
            if state == REVIEWED:
                self.shared.finish(sha)
            elif before == REVIEWED:
                self.shared.reopen(sha)
        self._db.execute(
            "UPDATE photos SET state=?, finished_at=CASE WHEN ?=? THEN ? ELSE NULL END "
            "WHERE sha256=?", (state, state, REVIEWED, time.time(), sha),
        )

    def last_decision(self) -> DecisionRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, face_id, decision, name, enrolled_path, created_identity, action_id, "
                "at FROM decisions WHERE undone=0 ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return DecisionRow(*row[:5], bool(row[5]), row[6], row[7]) if row else None

    def last_action(self) -> tuple[int, float] | None:
        """``(id, time)`` of the latest group action not undone."""
        with self._lock:
            row = self._db.execute("SELECT id, at FROM group_actions WHERE undone=0 "
                                   "ORDER BY id DESC LIMIT 1").fetchone()
        return (int(row[0]), float(row[1])) if row else None

    def action_decisions(self, action_id: int) -> list[DecisionRow]:
        """The live decisions one group action made, the latest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, face_id, decision, name, enrolled_path, created_identity, action_id "
                "FROM decisions WHERE undone=0 AND action_id=? ORDER BY id DESC", (action_id,)
            ).fetchall()
        return [DecisionRow(*row[:5], bool(row[5]), row[6]) for row in rows]

    def undo_decision(self, decision: DecisionRow) -> None:
        """Mark a decision undone and put its face back to the previous live decision."""
        with self.transaction():
            self._db.execute("UPDATE decisions SET undone=1 WHERE id=?", (decision.id,))
            previous = self._db.execute(
                "SELECT decision, name, enrolled_path FROM decisions "
                "WHERE face_id=? AND undone=0 ORDER BY id DESC LIMIT 1", (decision.face_id,),
            ).fetchone()
            decision_value, name, enrolled = previous if previous else (None, None, None)
            if self.shared is not None:
                self.shared.record_undo(*self._face_key(decision.face_id))
            self._db.execute(
                "UPDATE faces SET decision=?, decided_name=?, enrolled_path=? WHERE id=?",
                (decision_value, name, enrolled, decision.face_id),
            )
            self._refresh_photo_state(decision.face_id)

    def identity_activity(self) -> dict[str, tuple[int, float]]:
        """name -> (photos it was confirmed in, last time), from the decisions made."""
        with self._lock:
            rows = self._db.execute(
                "SELECT decided_name, COUNT(DISTINCT photo_sha), MAX(decided_at) FROM faces "
                "WHERE decision=? AND decided_name IS NOT NULL GROUP BY decided_name",
                (CONFIRMED,),
            ).fetchall()
        return {name: (count, last) for name, count, last in rows}

    def rename_identity(self, old: str, new: str) -> None:
        with self.transaction():
            self._db.execute("UPDATE faces SET decided_name=? WHERE decided_name=?", (new, old))

    # -- groups of undecided faces (faceid_tui/triage/clustering.py) ------------------------
    def grouping_settings(self) -> dict[str, str]:
        """How the kept groups were made (model id, threshold) and the next group id."""
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM grouping").fetchall())

    def group_rows(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]],
                                  dict[int, float]]:
        """``(face id, group id)`` of every grouped face, every bar, and every face's
        offset (kept for decided faces too: an undo puts a face back as it was)."""
        with self._lock:
            members = self._db.execute("SELECT face_id, group_id FROM face_groups").fetchall()
            bars = self._db.execute("SELECT face_id, group_id FROM group_bars").fetchall()
            offsets = self._db.execute("SELECT face_id, offset FROM face_offsets").fetchall()
        return members, bars, dict(offsets)

    def save_groups(self, moved: dict[int, int], left: set[int], next_id: int,
                    bars: list[tuple[int, int]] | None = None,
                    settings: dict[str, str] | None = None,
                    offsets: dict[int, float] | None = None,
                    pinned: list[int] | None = None) -> None:
        """Record a change to the groups: faces that moved (face id → group), faces that
        left, the next id; ``bars`` replaces every bar, ``pinned`` the list of groups the user
        merged, ``settings`` the settings (with ``settings``, every group row is replaced: a
        regrouping from scratch)."""
        with self.transaction():
            if settings is not None:
                self._db.execute("DELETE FROM face_groups")
                self._db.execute("DELETE FROM face_offsets")
                self._db.execute("DELETE FROM grouping")
                self._db.executemany("INSERT INTO grouping VALUES (?, ?)", settings.items())
            self._db.executemany("DELETE FROM face_groups WHERE face_id=?",
                                 [(face,) for face in left])
            self._db.executemany("INSERT OR REPLACE INTO face_groups VALUES (?, ?)",
                                 list(moved.items()))
            if offsets:
                self._db.executemany("INSERT OR REPLACE INTO face_offsets VALUES (?, ?)",
                                     list(offsets.items()))
            if bars is not None:
                self._db.execute("DELETE FROM group_bars")
                self._db.executemany("INSERT OR IGNORE INTO group_bars VALUES (?, ?)", bars)
            self._db.execute("INSERT OR REPLACE INTO grouping VALUES ('next_id', ?)",
                             (str(next_id),))
            if pinned is not None:  # the groups the user merged
                self._db.execute("INSERT OR REPLACE INTO grouping VALUES ('pinned', ?)",
                                 (",".join(map(str, pinned)),))

    def start_action(self, kind: str, detail: dict[str, object]) -> int:
        """Record a group action (its decisions carry its id); ``detail`` holds what undo
        needs to put the groups back."""
        with self.transaction():
            cursor = self._db.execute(
                "INSERT INTO group_actions(kind, detail, at) VALUES (?, ?, ?)",
                (kind, json.dumps(detail), time.time()))
            return int(cursor.lastrowid or 0)

    def action(self, action_id: int) -> tuple[str, dict[str, object]] | None:
        with self._lock:
            row = self._db.execute("SELECT kind, detail FROM group_actions WHERE id=?",
                                   (action_id,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def finish_undo_action(self, action_id: int) -> None:
        with self.transaction():
            self._db.execute("UPDATE group_actions SET undone=1 WHERE id=?", (action_id,))
