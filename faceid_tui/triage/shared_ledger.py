"""The part of the triage ledger that stations share, in the shared bank's PostgreSQL database:
who is working on which photo (claims with a lease), and every decision with the station and
the person who made it.

Each station keeps its own SQLite ledger (faces, matches, its undo history); this adds what
several stations need to work one inbox (a shared folder) together:

* **claims** — a photo is processed and reviewed by one station at a time. A station claims a
  photo before it queues it; a photo claimed by another station is not shown. Claims carry a
  lease renewed by a heartbeat thread; when a station dies its leases run out and the others
  take its photos over (:meth:`SharedLedger.take_abandoned`, ``FOR UPDATE SKIP LOCKED`` so two
  stations never take the same one). A photo whose faces are all decided is marked done and
  never claimed again.
* **decisions** — one row per decision (photo, face box, decision, name, station, operator),
  marked undone when its station undoes it (undo stays per station: a station's undo only ever
  takes back its own decisions).
"""

from __future__ import annotations

import getpass
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from faceid_tui.errors import BankError

#: Seconds a claim lasts without a heartbeat; the heartbeat renews it every third of that.
LEASE_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photo_claims (
    sha256 TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    station TEXT NOT NULL,
    operator TEXT NOT NULL,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ NOT NULL,
    done_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS photo_claims_open ON photo_claims(lease_until) WHERE done_at IS NULL;
CREATE TABLE IF NOT EXISTS station_decisions (
    id BIGSERIAL PRIMARY KEY,
    sha256 TEXT NOT NULL,
    box JSONB NOT NULL,
    decision TEXT NOT NULL,
    name TEXT,
    station TEXT NOT NULL,
    operator TEXT NOT NULL,
    decided_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    undone_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS station_decisions_photo ON station_decisions(sha256);
"""
_SCHEMA_LOCK_KEY = 0x6661636569640002


@dataclass(frozen=True)
class SharedDecision:
    sha256: str
    box: list[int]
    decision: str
    name: str | None
    station: str
    operator: str
    undone: bool


def default_station() -> str:
    return socket.gethostname() or "station"


class SharedLedger:
    """Claims and decisions of one station (``station``, worked by ``operator``)."""

    def __init__(self, url: str, *, station: str | None = None, operator: str | None = None,
                 lease_s: float = LEASE_S, heartbeat: bool = True) -> None:
        import psycopg

        from faceid_tui.bank.postgres_store import redact_url

        self.station = station or default_station()
        self.operator = operator or getpass.getuser()
        self.lease_s = float(lease_s)
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise BankError(f"cannot connect to the shared ledger at {redact_url(url)}: "
                            f"{str(exc).strip()}") from None
        with self._db.transaction():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if heartbeat:
            self._heartbeat = threading.Thread(target=self._renew_forever, daemon=True,
                                               name="faceid-claims-heartbeat")
            self._heartbeat.start()

    def _execute(self, sql: str, parameters: tuple[object, ...] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, parameters)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock, self._db.transaction():
            yield

    # -- claims -----------------------------------------------------------------------------
    def claim(self, sha256: str, path: str) -> bool:
        """Claim a photo for this station: True when it is (or already was) this station's;
        False when another station holds a live lease on it, or it is done."""
        row = self._execute(
            "INSERT INTO photo_claims (sha256, path, station, operator, lease_until) "
            "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) "
            "ON CONFLICT (sha256) DO UPDATE SET station = EXCLUDED.station, "
            "operator = EXCLUDED.operator, lease_until = EXCLUDED.lease_until, "
            "path = EXCLUDED.path "
            "WHERE photo_claims.done_at IS NULL AND (photo_claims.station = EXCLUDED.station "
            "OR photo_claims.lease_until < now()) RETURNING station",
            (sha256, path, self.station, self.operator, self.lease_s)).fetchone()
        return row is not None

    def take_abandoned(self, limit: int = 64) -> list[tuple[str, str]]:
        """Claim photos whose station's lease ran out (it died, or lost its network):
        ``(sha256, path)`` of each. Rows another station is taking at this moment are skipped
        (``SKIP LOCKED``), so no photo is handed to two stations."""
        with self._transaction():
            rows = self._execute(
                "SELECT sha256, path FROM photo_claims WHERE done_at IS NULL AND "
                "lease_until < now() AND station <> %s ORDER BY claimed_at "
                "LIMIT %s FOR UPDATE SKIP LOCKED", (self.station, limit)).fetchall()
            for sha256, _path in rows:
                self._execute(
                    "UPDATE photo_claims SET station = %s, operator = %s, claimed_at = now(), "
                    "lease_until = now() + make_interval(secs => %s) WHERE sha256 = %s",
                    (self.station, self.operator, self.lease_s, sha256))
        return [(sha256, path) for sha256, path in rows]

    def renew(self) -> int:
        """Extend the lease of every open claim of this station; return how many."""
        return int(self._execute(
            "UPDATE photo_claims SET lease_until = now() + make_interval(secs => %s) "
            "WHERE station = %s AND done_at IS NULL", (self.lease_s, self.station)).rowcount)

    def finish(self, sha256: str) -> None:
        """Every face of the photo is decided: nobody claims it again."""
        self._execute("UPDATE photo_claims SET done_at = now() WHERE sha256 = %s AND "
                      "station = %s", (sha256, self.station))

    def reopen(self, sha256: str) -> None:
        """An undo made the photo undecided again: it is this station's open claim again."""
        self._execute("UPDATE photo_claims SET done_at = NULL, lease_until = now() + "
                      "make_interval(secs => %s) WHERE sha256 = %s AND station = %s",
                      (self.lease_s, sha256, self.station))

    def release(self, sha256: str) -> None:
        self._execute("DELETE FROM photo_claims WHERE sha256 = %s AND station = %s AND "
                      "done_at IS NULL", (sha256, self.station))

    def holder(self, sha256: str) -> str | None:
        row = self._execute("SELECT station FROM photo_claims WHERE sha256 = %s",
                            (sha256,)).fetchone()
        return None if row is None else str(row[0])

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception:  # the database is away: the next beat tries again
                continue

    # -- decisions --------------------------------------------------------------------------
    def record_decision(self, sha256: str, box: tuple[int, int, int, int] | list[int],
                        decision: str, name: str | None) -> None:
        self._execute(
            "INSERT INTO station_decisions (sha256, box, decision, name, station, operator) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (sha256, json.dumps(list(box)), decision, name, self.station, self.operator))

    def record_undo(self, sha256: str, box: tuple[int, int, int, int] | list[int]) -> None:
        """This station took back its latest live decision on that face."""
        self._execute(
            "UPDATE station_decisions SET undone_at = now() WHERE id = (SELECT id FROM "
            "station_decisions WHERE sha256 = %s AND box = %s AND station = %s AND "
            "undone_at IS NULL ORDER BY id DESC LIMIT 1)",
            (sha256, json.dumps(list(box)), self.station))

    def decisions(self, sha256: str | None = None) -> list[SharedDecision]:
        rows = self._execute(
            "SELECT sha256, box, decision, name, station, operator, undone_at IS NOT NULL "
            "FROM station_decisions WHERE %s::text IS NULL OR sha256 = %s ORDER BY id",
            (sha256, sha256)).fetchall()
        return [SharedDecision(*row) for row in rows]

    def close(self) -> None:
        """Stop the heartbeat. Open claims are kept until their lease runs out, so a station
        that restarts at once keeps its photos; after that others take them over."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=3)
        with self._lock:
            self._db.close()
