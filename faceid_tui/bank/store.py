"""Storage behind the identity bank: the :class:`BankStore` protocol and its SQLite store.

The folders ``id_bank/<Name>/`` are the source of truth; the store caches what is expensive
to recompute (embeddings, keyed by file content hash *and* model id) and what the folders
cannot say (when an identity was created). The shared bank's store
(:mod:`faceid_tui.bank.postgres_store`) implements the same protocol and also keeps each
sample's image, since a shared bank has no folders.

SQLite runs in WAL mode with a busy timeout, so readers never block the writer and a second
process waits instead of failing; every change happens inside a transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from faceid_tui.database import Database
from faceid_tui.errors import BankError

DATABASE_NAME = ".faceid-bank.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);
-- One row per photo file in id_bank/<Name>/ (rel_path is "<Name>/<file>").
CREATE TABLE IF NOT EXISTS photos (
    rel_path TEXT PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_identity ON photos(identity_id);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256);
-- Embedding cache: one row per (content, model). vector is NULL when no face was found.
CREATE TABLE IF NOT EXISTS embeddings (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB,
    box TEXT,
    face_count INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sha256, model_id)
);
"""


@dataclass(frozen=True)
class PhotoRecord:
    rel_path: str
    identity: str
    sha256: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class IdentitySummary:
    name: str
    photos: int
    samples: int  # photos with a usable embedding for the model asked about
    created_at: float


@dataclass(frozen=True)
class CachedEmbedding:
    vector: np.ndarray | None
    box: list[int] | None
    face_count: int


class BankStore(Protocol):
    """What the identity bank needs from a storage back end."""

    def transaction(self) -> Iterator[None]: ...
    def identity_names(self) -> list[str]: ...
    def ensure_identity(self, name: str) -> None: ...
    def delete_identity(self, name: str) -> None: ...
    def rename_identity(self, old: str, new: str) -> None: ...
    def photos(self) -> list[PhotoRecord]: ...
    def put_photo(self, record: PhotoRecord) -> None: ...
    def delete_photo(self, rel_path: str) -> None: ...
    def cached_embedding(self, sha256: str, model_id: str) -> CachedEmbedding | None: ...
    def put_embedding(self, sha256: str, model_id: str, cached: CachedEmbedding) -> None: ...
    def samples(self, model_id: str) -> tuple[list[str], list[str], np.ndarray]: ...
    def summaries(self, model_id: str) -> list[IdentitySummary]: ...
    def close(self) -> None: ...


class SqliteBankStore:
    """:class:`BankStore` in one SQLite file inside the bank folder."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        try:
            self._database = Database(self.path, busy_timeout_s=busy_timeout_s)
            self._database.create_schema(_SCHEMA)
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise BankError(
                f"{self.path} is not a usable faceid bank database ({exc}); move it away and "
                "faceid rebuilds it from the photos in the bank folder"
            ) from None
        self._db = self._database.connection
        self._lock = self._database.lock

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit of work; nested uses join the outer transaction."""
        return self._database.transaction()

    def _check_version(self) -> None:
        with self._database.transaction():
            row = self._database.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._database.execute("INSERT INTO meta VALUES ('schema', ?)",
                                       (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise BankError(
                    f"{self.path} was written by a newer faceid (schema {row[0]}); "
                    "upgrade faceid"
                )

    def _identity_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM identities WHERE name=?", (name,)).fetchone()
        if row is None:
            raise BankError(f"no identity named {name!r} in the bank")
        return int(row[0])

    def identity_names(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT name FROM identities ORDER BY name").fetchall()
        return [row[0] for row in rows]

    def ensure_identity(self, name: str) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO identities(name, created_at) VALUES (?, ?)",
                (name, time.time()),
            )

    def delete_identity(self, name: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM identities WHERE name=?", (name,))

    def rename_identity(self, old: str, new: str) -> None:
        with self.transaction():
            identity_id = self._identity_id(old)
            self._db.execute("UPDATE identities SET name=? WHERE id=?", (new, identity_id))
            rows = self._db.execute(
                "SELECT rel_path FROM photos WHERE identity_id=?", (identity_id,)
            ).fetchall()
            for (rel_path,) in rows:
                new_path = f"{new}/{rel_path.split('/', 1)[1]}"
                self._db.execute(
                    "UPDATE photos SET rel_path=? WHERE rel_path=?", (new_path, rel_path)
                )

    def photos(self) -> list[PhotoRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.rel_path, i.name, p.sha256, p.size, p.mtime_ns "
                "FROM photos p JOIN identities i ON i.id = p.identity_id ORDER BY p.rel_path"
            ).fetchall()
        return [PhotoRecord(*row) for row in rows]

    def put_photo(self, record: PhotoRecord) -> None:
        with self.transaction():
            self.ensure_identity(record.identity)
            identity_id = self._identity_id(record.identity)
            self._db.execute(
                "INSERT INTO photos(rel_path, identity_id, sha256, size, mtime_ns, added_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(rel_path) DO UPDATE SET "
                "identity_id=excluded.identity_id, sha256=excluded.sha256, "
                "size=excluded.size, mtime_ns=excluded.mtime_ns",
                (record.rel_path, identity_id, record.sha256, record.size, record.mtime_ns,
                 time.time()),
            )

    def delete_photo(self, rel_path: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM photos WHERE rel_path=?", (rel_path,))

    def cached_embedding(self, sha256: str, model_id: str) -> CachedEmbedding | None:
        with self._lock:
            row = self._db.execute(
                "SELECT vector, dim, box, face_count FROM embeddings "
                "WHERE sha256=? AND model_id=?", (sha256, model_id),
            ).fetchone()
        if row is None:
            return None
        blob, dim, box, face_count = row
        vector = None if blob is None else np.frombuffer(blob, dtype="<f4", count=dim).copy()
        return CachedEmbedding(vector, json.loads(box) if box else None, int(face_count))

    def put_embedding(self, sha256: str, model_id: str, cached: CachedEmbedding) -> None:
        vector = cached.vector
        blob = None if vector is None else np.asarray(vector, dtype="<f4").tobytes()
        dim = 0 if vector is None else int(np.asarray(vector).size)
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO embeddings"
                "(sha256, model_id, dim, vector, box, face_count, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha256, model_id, dim, blob, json.dumps(cached.box) if cached.box else None,
                 cached.face_count, time.time()),
            )

    def samples(self, model_id: str) -> tuple[list[str], list[str], np.ndarray]:
        """``(identity names, rel_paths, N×D matrix)`` of every usable sample of ``model_id``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, p.rel_path, e.vector, e.dim FROM photos p "
                "JOIN identities i ON i.id = p.identity_id "
                "JOIN embeddings e ON e.sha256 = p.sha256 AND e.model_id = ? "
                "WHERE e.vector IS NOT NULL ORDER BY i.name, p.rel_path", (model_id,),
            ).fetchall()
        if not rows:
            return [], [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.stack([np.frombuffer(blob, dtype="<f4", count=dim) for _, _, blob, dim in rows])
        return [row[0] for row in rows], [row[1] for row in rows], matrix

    def summaries(self, model_id: str) -> list[IdentitySummary]:
        with self._lock:
            rows = self._db.execute(
                "SELECT i.name, COUNT(p.rel_path), "
                "COUNT(e.vector), i.created_at FROM identities i "
                "LEFT JOIN photos p ON p.identity_id = i.id "
                "LEFT JOIN embeddings e ON e.sha256 = p.sha256 AND e.model_id = ? "
                "GROUP BY i.id ORDER BY i.name", (model_id,),
            ).fetchall()
        return [IdentitySummary(name, photos, samples, created)
                for name, photos, samples, created in rows]

    def close(self) -> None:
        self._database.close()
