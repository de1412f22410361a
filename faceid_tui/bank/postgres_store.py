"""The identity bank in PostgreSQL + pgvector: one bank shared by several stations.

Same :class:`~faceid_tui.bank.store.BankStore` protocol as the SQLite store, with two
differences that make it the source of truth instead of a cache of ``id_bank/<Name>/``:

* each sample keeps its image bytes (``photos.image``), so every station can show it and
  re-embed it for another model, and ``faceid bank export`` can write the folder layout back;
* embeddings are pgvector ``vector`` values, with one HNSW index (``vector_cosine_ops``) per
  model id built once a model has :data:`HNSW_MIN_SAMPLES` samples (a partial expression
  index, since models differ in dimension), for :meth:`PostgresBankStore.nearest_samples`.

Concurrency: every change is one transaction at READ COMMITTED; names are unique, identity
rows are locked (``SELECT … FOR UPDATE``, in name order so two stations cannot deadlock) before
a rename, merge or delete, and a statement trigger sends ``NOTIFY faceid_bank`` with the
transaction (delivered when it commits), so other stations know the bank changed
(:class:`BankListener`).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from faceid_tui.bank.store import CachedEmbedding, IdentitySummary, PhotoRecord
from faceid_tui.errors import BankError

SCHEMA_VERSION = 1
NOTIFY_CHANNEL = "faceid_bank"
#: A model's samples get an HNSW index, and the matcher asks it for candidates, from this many
#: on. Below it the in-process matcher is faster per face (benchmarks/pgvector_bank.py: 2.2 ms
#: exact at 2·10⁴ samples against 5.7 ms through pgvector, 2.9 ms at 10⁵ through usearch),
#: but from 10⁵ on the in-process matcher needs its own approximate index, rebuilt after every
#: change of the bank (79 s at 10⁵), and in a shared bank every station's enrolments change
#: it; the database's index is kept up to date by the server instead.
HNSW_MIN_SAMPLES = 100_000
#: HNSW build settings (pgvector's defaults) and the search beam; benchmarks/pgvector_bank.py
#: measures recall and time with them.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
HNSW_EF_SEARCH = 100
# Any change notifies the other stations, which then rebuild their matcher.
_SCHEMA = f"""
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS faceid_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO faceid_meta VALUES ('schema', '{SCHEMA_VERSION}') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS identities (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS photos (
    rel_path TEXT PRIMARY KEY,
    identity_id BIGINT NOT NULL REFERENCES identities(id) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    added_at DOUBLE PRECISION NOT NULL,
    image BYTEA
);
CREATE INDEX IF NOT EXISTS photos_identity ON photos(identity_id);
CREATE INDEX IF NOT EXISTS photos_sha ON photos(sha256);
CREATE TABLE IF NOT EXISTS embeddings (
    sha256 TEXT NOT NULL,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector vector,
    box JSONB,
    face_count INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sha256, model_id)
);
-- Which HNSW index serves which model (the index name is derived, the model id is free text).
CREATE TABLE IF NOT EXISTS vector_indexes (
    model_id TEXT PRIMARY KEY,
    index_name TEXT NOT NULL UNIQUE,
    dim INTEGER NOT NULL
);
CREATE OR REPLACE FUNCTION faceid_bank_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER identities_changed AFTER INSERT OR UPDATE OR DELETE ON identities
    FOR EACH STATEMENT EXECUTE FUNCTION faceid_bank_changed();
CREATE OR REPLACE TRIGGER photos_changed AFTER INSERT OR UPDATE OR DELETE ON photos
    FOR EACH STATEMENT EXECUTE FUNCTION faceid_bank_changed();
CREATE OR REPLACE TRIGGER embeddings_changed AFTER INSERT OR UPDATE OR DELETE ON embeddings
    FOR EACH STATEMENT EXECUTE FUNCTION faceid_bank_changed();
"""
# Serialises schema creation when several stations open a new database at once.
_SCHEMA_LOCK_KEY = 0x6661636569640001


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and re.match(r"postgres(ql)?://", location) is not None


def redact_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _psycopg() -> Any:
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:  # pragma: no cover - both are dependencies of faceid
        raise BankError(f"a PostgreSQL bank needs psycopg and pgvector ({exc}); "
                        "pip install 'psycopg[binary]' pgvector") from None
    return psycopg, register_vector


class PostgresBankStore:
    """:class:`~faceid_tui.bank.store.BankStore` in a PostgreSQL database with pgvector."""

    holds_images = True

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        psycopg, register_vector = _psycopg()
        self.url = url
        self.location = redact_url(url)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            self._db = psycopg.connect(url, autocommit=True,
                                       connect_timeout=max(1, int(connect_timeout_s)))
        except psycopg.Error as exc:
            raise BankError(f"cannot connect to the bank at {self.location}: "
                            f"{str(exc).strip()}; check the URL (--bank or $FACEID_BANK) and "
                            "that the server is running") from None
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                for statement in _split_statements(_SCHEMA):
                    self._db.execute(statement)
            register_vector(self._db)
            self._check_version()
        except psycopg.Error as exc:
            self._db.close()
            hint = (" (the pgvector extension is not installed on that server: "
                    "https://github.com/pgvector/pgvector#installation)"
                    if "vector" in str(exc) else "")
            raise BankError(f"{self.location} cannot hold a faceid bank: "
                            f"{str(exc).strip()}{hint}") from None

    # -- plumbing ---------------------------------------------------------------------------
    def _check_version(self) -> None:
        row = self._execute("SELECT value FROM faceid_meta WHERE key='schema'").fetchone()
        if int(row[0]) > SCHEMA_VERSION:
            raise BankError(f"the bank at {self.location} was written by a newer faceid "
                            f"(schema {row[0]}); upgrade faceid")

    def _execute(self, sql: str, parameters: tuple[object, ...] | list[object] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, parameters)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work; nested uses join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            try:
                with self._db.transaction():
                    yield
            finally:
                self._depth = 0

    @property
    def connection_info(self) -> Any:
        """psycopg's ``ConnectionInfo`` (database name, host…) of this store's connection."""
        return self._db.info

    @property
    def backend_pid(self) -> int:
        """The server process of this store's connection (it signs its notifications)."""
        return int(self._db.info.backend_pid)

    def _identity_id(self, name: str, *, lock: bool = False) -> int:
        sql = "SELECT id FROM identities WHERE name=%s" + (" FOR UPDATE" if lock else "")
        row = self._execute(sql, (name,)).fetchone()
        if row is None:
            raise BankError(f"no identity named {name!r} in the bank at {self.location}")
        return int(row[0])

    def lock_identities(self, names: list[str]) -> None:
        """Row locks on these identities until the transaction ends, taken in name order."""
        self._execute("SELECT id FROM identities WHERE name = ANY(%s) ORDER BY name FOR UPDATE",
                      (sorted(names),))

    # -- identities -------------------------------------------------------------------------
    def identity_names(self) -> list[str]:
        return [row[0] for row in self._execute(
            "SELECT name FROM identities ORDER BY name").fetchall()]

    def ensure_identity(self, name: str) -> None:
        self._execute("INSERT INTO identities(name, created_at) VALUES (%s, %s) "
                      "ON CONFLICT (name) DO NOTHING", (name, time.time()))

    def delete_identity(self, name: str) -> None:
        self._execute("DELETE FROM identities WHERE name=%s", (name,))

    def rename_identity(self, old: str, new: str) -> None:
        with self.transaction():
            self.lock_identities([old])
            identity_id = self._identity_id(old, lock=True)
            self._execute("UPDATE identities SET name=%s WHERE id=%s", (new, identity_id))
            # rel_path keeps the <Name>/<file> shape of the folder bank (export writes it).
            self._execute("UPDATE photos SET rel_path = %s || substr(rel_path, %s) "
                          "WHERE identity_id=%s", (new, len(old) + 1, identity_id))

    # -- photos -----------------------------------------------------------------------------
    def photos(self) -> list[PhotoRecord]:
        rows = self._execute(
            "SELECT p.rel_path, i.name, p.sha256, p.size, p.mtime_ns FROM photos p "
            "JOIN identities i ON i.id = p.identity_id ORDER BY p.rel_path").fetchall()
        return [PhotoRecord(*row) for row in rows]

    def identity_photos(self, name: str) -> list[PhotoRecord]:
        rows = self._execute(
            "SELECT p.rel_path, i.name, p.sha256, p.size, p.mtime_ns FROM photos p "
            "JOIN identities i ON i.id = p.identity_id WHERE i.name=%s ORDER BY p.rel_path",
            (name,)).fetchall()
        return [PhotoRecord(*row) for row in rows]

    def put_photo(self, record: PhotoRecord, image: bytes | None = None) -> None:
        with self.transaction():
            self.ensure_identity(record.identity)
            identity_id = self._identity_id(record.identity)
            self._execute(
                "INSERT INTO photos(rel_path, identity_id, sha256, size, mtime_ns, added_at, "
                "image) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (rel_path) DO UPDATE "
                "SET identity_id=EXCLUDED.identity_id, sha256=EXCLUDED.sha256, "
                "size=EXCLUDED.size, mtime_ns=EXCLUDED.mtime_ns, "
                "image=COALESCE(EXCLUDED.image, photos.image)",
                (record.rel_path, identity_id, record.sha256, record.size, record.mtime_ns,
                 time.time(), image))

    def photo_image(self, rel_path: str) -> bytes:
        row = self._execute("SELECT image FROM photos WHERE rel_path=%s", (rel_path,)).fetchone()
        if row is None or row[0] is None:
            raise BankError(f"the bank at {self.location} has no image for {rel_path}")
        return bytes(row[0])

    def rel_path_taken(self, rel_path: str) -> bool:
        return self._execute("SELECT 1 FROM photos WHERE rel_path=%s",
                             (rel_path,)).fetchone() is not None

    def delete_photo(self, rel_path: str) -> None:
        self._execute("DELETE FROM photos WHERE rel_path=%s", (rel_path,))

    # -- embeddings -------------------------------------------------------------------------
    def cached_embedding(self, sha256: str, model_id: str) -> CachedEmbedding | None:
        row = self._execute("SELECT vector, box, face_count FROM embeddings "
                            "WHERE sha256=%s AND model_id=%s", (sha256, model_id)).fetchone()
        if row is None:
            return None
        vector, box, face_count = row
        return CachedEmbedding(None if vector is None else _as_array(vector),
                               box, int(face_count))

    def put_embedding(self, sha256: str, model_id: str, cached: CachedEmbedding) -> None:
        vector = None if cached.vector is None else np.asarray(cached.vector, np.float32)
        self._execute(
            "INSERT INTO embeddings(sha256, model_id, dim, vector, box, face_count, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256, model_id) DO UPDATE SET "
            "dim=EXCLUDED.dim, vector=EXCLUDED.vector, box=EXCLUDED.box, "
            "face_count=EXCLUDED.face_count, created_at=EXCLUDED.created_at",
            (sha256, model_id, 0 if vector is None else vector.size, vector,
             None if cached.box is None else json.dumps(cached.box), cached.face_count,
             time.time()))

    def missing_embeddings(self, model_id: str) -> list[tuple[str, str]]:
        """``(sha256, a rel_path)`` of every sample content not yet embedded by ``model_id``."""
        return [(sha, rel_path) for sha, rel_path in self._execute(
            "SELECT DISTINCT ON (p.sha256) p.sha256, p.rel_path FROM photos p "
            "LEFT JOIN embeddings e ON e.sha256 = p.sha256 AND e.model_id = %s "
            "WHERE e.sha256 IS NULL ORDER BY p.sha256, p.rel_path", (model_id,)).fetchall()]

    def samples(self, model_id: str) -> tuple[list[str], list[str], np.ndarray]:
        """``(identity names, rel_paths, N×D matrix)`` of every usable sample of ``model_id``."""
        with self._lock, self._db.cursor(binary=True) as cursor:
            rows = cursor.execute(
                "SELECT i.name, p.rel_path, e.vector FROM photos p "
                "JOIN identities i ON i.id = p.identity_id "
                "JOIN embeddings e ON e.sha256 = p.sha256 AND e.model_id = %s "
                "WHERE e.vector IS NOT NULL ORDER BY i.name, p.rel_path", (model_id,)).fetchall()
        if not rows:
            return [], [], np.zeros((0, 0), dtype=np.float32)
        matrix = np.stack([_as_array(row[2]) for row in rows])
        return [row[0] for row in rows], [row[1] for row in rows], matrix

    def sample_count(self, model_id: str) -> int:
        return int(self._execute("SELECT count(*) FROM embeddings e JOIN photos p "
                                 "ON p.sha256 = e.sha256 WHERE e.model_id=%s "
                                 "AND e.vector IS NOT NULL", (model_id,)).fetchone()[0])

    def summaries(self, model_id: str) -> list[IdentitySummary]:
        rows = self._execute(
            "SELECT i.name, COUNT(p.rel_path), COUNT(e.vector), i.created_at FROM identities i "
            "LEFT JOIN photos p ON p.identity_id = i.id "
            "LEFT JOIN embeddings e ON e.sha256 = p.sha256 AND e.model_id = %s "
            "GROUP BY i.id ORDER BY i.name", (model_id,)).fetchall()
        return [IdentitySummary(name, int(photos), int(samples), float(created))
                for name, photos, samples, created in rows]

    # -- nearest-neighbour search -------------------------------------------------------------
    def ensure_vector_index(self, model_id: str, dim: int, *,
                            min_samples: int = HNSW_MIN_SAMPLES) -> str | None:
        """Build the HNSW index of ``model_id`` once it has ``min_samples`` samples; return its
        name (None while the model has fewer)."""
        row = self._execute("SELECT index_name FROM vector_indexes WHERE model_id=%s",
                            (model_id,)).fetchone()
        if row is not None:
            return str(row[0])
        if self.sample_count(model_id) < min_samples:
            return None
        existing = self._execute("SELECT count(*) FROM vector_indexes").fetchone()[0]
        index_name = f"embeddings_hnsw_{int(existing) + 1}"
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            row = self._execute("SELECT index_name FROM vector_indexes WHERE model_id=%s",
                                (model_id,)).fetchone()
            if row is not None:  # another station built it meanwhile
                return str(row[0])
            self._execute(f"SET LOCAL maintenance_work_mem = '{_maintenance_memory()}'")
            from psycopg import sql

            # DDL takes no parameters: the model id goes in as a quoted literal.
            self._execute(sql.SQL(
                "CREATE INDEX {name} ON embeddings USING hnsw "
                "((vector::vector({dim})) vector_cosine_ops) WITH (m = {m}, "
                "ef_construction = {ef}) WHERE model_id = {model} AND dim = {dim}"
            ).format(name=sql.Identifier(index_name), dim=sql.Literal(int(dim)),
                     m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION),
                     model=sql.Literal(model_id)))
            self._execute("INSERT INTO vector_indexes VALUES (%s, %s, %s)",
                          (model_id, index_name, int(dim)))
        return index_name

    def nearest_samples(self, model_id: str, query: np.ndarray, count: int,
                        *, ef_search: int = HNSW_EF_SEARCH) -> list[tuple[str, str, float]]:
        """``(identity, rel_path, cosine similarity)`` of the ``count`` samples nearest to
        ``query``, best first: through the model's HNSW index when it has one (approximate),
        by a sequential scan otherwise (exact)."""
        from psycopg import sql

        query = np.asarray(query, np.float32).ravel()
        dim = int(query.size)
        # The model id and dimension are literals, not parameters: the planner can use a
        # partial index only when it sees the values its predicate names.
        statement = sql.SQL(
            "WITH near AS (SELECT sha256, vector::vector({dim}) <=> %s::vector({dim}) AS d "
            "FROM embeddings WHERE model_id = {model} AND dim = {dim} "
            "ORDER BY vector::vector({dim}) <=> %s::vector({dim}) LIMIT %s) "
            "SELECT i.name, p.rel_path, 1 - near.d FROM near "
            "JOIN photos p ON p.sha256 = near.sha256 "
            "JOIN identities i ON i.id = p.identity_id ORDER BY near.d"
        ).format(dim=sql.Literal(dim), model=sql.Literal(model_id))
        with self.transaction():
            self._execute(f"SET LOCAL hnsw.ef_search = {max(int(ef_search), int(count))}")
            # The joins happen after the index scan picked the nearest embeddings.
            rows = self._execute(statement, (query, query, int(count))).fetchall()
        return [(name, rel_path, float(score)) for name, rel_path, score in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PgvectorIndex:
    """:class:`~faceid_tui.bank.index.SampleIndex` answered by the database's HNSW index: the
    matcher's rows are the identities (centroid scoring) or the samples (best-sample scoring),
    and ``row_of(identity, rel_path)`` says which row a sample found by pgvector stands for."""

    def __init__(self, store: PostgresBankStore, model_id: str,
                 row_of: Callable[[str, str], int | None]) -> None:
        self._store = store
        self._model_id = model_id
        self._row_of = row_of

    @property
    def nbytes(self) -> int:
        return 0  # the graph lives in the database server

    def search(self, queries: np.ndarray, count: int) -> np.ndarray:
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        rows = np.full((len(queries), count), -1, dtype=np.intp)
        for number, query in enumerate(queries):
            found: list[int] = []
            for name, rel_path, _score in self._store.nearest_samples(self._model_id, query,
                                                                      count):
                row = self._row_of(name, rel_path)
                if row is not None and row not in found:
                    found.append(row)
            rows[number, : len(found)] = found
        return rows


class BankListener:
    """Calls ``on_change()`` (from its own thread) when another connection changes the bank:
    notifications sent by ``ignore_pid`` (this station's own store connection) are skipped,
    since the station already knows what it changed."""

    def __init__(self, url: str, on_change: Callable[[], None], *,
                 ignore_pid: int | None = None) -> None:
        psycopg, _ = _psycopg()
        self._connection = psycopg.connect(url, autocommit=True)
        self._connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        self._on_change = on_change
        self._ignore_pid = ignore_pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="faceid-bank-listener",
                                        daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                # Wakes at least twice a second to see whether it should stop.
                notes = list(self._connection.notifies(timeout=0.5))
            except Exception:  # the connection went away: stop listening, never crash
                return
            if any(note.pid != self._ignore_pid for note in notes):
                self._on_change()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)
        self._connection.close()


def _as_array(value: Any) -> np.ndarray:
    """A pgvector value as float32 (binary transfers give ``Vector`` objects, text numpy)."""
    to_numpy = getattr(value, "to_numpy", None)
    return np.asarray(to_numpy() if to_numpy else value, dtype=np.float32)


def _split_statements(schema: str) -> list[str]:
    """Statements of ``schema``; ``$$ … $$`` bodies keep their own semicolons."""
    statements, current, in_body = [], [], False
    for part in re.split(r"(\$\$|;)", schema):
        if part == "$$":
            in_body = not in_body
            current.append(part)
        elif part == ";" and not in_body:
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
        else:
            current.append(part)
    tail = "".join(current).strip()
    return [*statements, tail] if tail else statements


def _maintenance_memory() -> str:
    """Memory for an index build: enough to keep a 10⁶-sample graph in memory (pgvector
    builds far faster when it fits), at most a quarter of this machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "1GB"
    return f"{max(64, min(8192, total // 4 // 2**20))}MB"
