"""One SQLite connection shared by threads, in WAL mode, with nested transactions.

Both the bank store and the triage ledger sit on this: WAL lets readers work while one writer
commits, the busy timeout makes a second process wait instead of failing, and every change
runs inside ``BEGIN IMMEDIATE … COMMIT`` (rolled back on any error)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Database:
    def __init__(self, path: Path, *, synchronous: str = "NORMAL",
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._depth = 0
        self.connection = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                          isolation_level=None, check_same_thread=False)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(f"PRAGMA synchronous={synchronous}")
        self.connection.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.connection.execute(sql, parameters)

    def create_schema(self, schema: str) -> None:
        """Run ``;``-separated statements in one transaction (executescript would commit)."""
        with self.transaction():
            for statement in schema.split(";"):
                if statement.strip():
                    self.connection.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of work; nested uses join the outer transaction."""
        with self.lock:
            outer = self._depth == 0
            if outer:
                self.connection.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self.connection.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self.connection.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.connection.close()
