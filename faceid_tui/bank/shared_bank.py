"""The identity bank shared by several stations: photos, embeddings and thresholds in
PostgreSQL + pgvector (:mod:`faceid_tui.bank.postgres_store`), no folder at all.

It offers what :class:`~faceid_tui.bank.identity_bank.IdentityBank` offers, so the CLI and the
triage app run on it unchanged; every edit is one database transaction. ``sync`` has no
folders to read: it embeds the stored samples that the current model has not embedded yet
(another station may have enrolled them with another model) and refreshes nothing else,
since the database is always current. Another station's changes are announced through
:meth:`SharedBank.watch` (PostgreSQL LISTEN/NOTIFY).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceid_tui.bank.bank_base import BankBase, SyncReport
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.postgres_store import (
    BankListener,
    PgvectorIndex,
    PostgresBankStore,
)
from faceid_tui.bank.store import CachedEmbedding, PhotoRecord
from faceid_tui.bank.thresholds import DEFAULT_FPIR, ThresholdChoice
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import BankError
from faceid_tui.fsutil import sha256_bytes


class SharedBank(BankBase):
    def __init__(self, url: str, pipeline: Pipeline, *, store: PostgresBankStore | None = None,
                 threshold: float | None = None, ambiguous_margin: float | None = None,
                 fpir: float = DEFAULT_FPIR) -> None:
        store = store or PostgresBankStore(url)
        self.url = url
        self.location = store.location
        super().__init__(pipeline, store, threshold=threshold,
                         ambiguous_margin=ambiguous_margin, fpir=fpir)
        self.store: PostgresBankStore = store
        self._listener: BankListener | None = None

    def watch(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change()`` (from a listener thread) whenever another station changes the
        bank; stopped by :meth:`close`."""
        if self._listener is None:
            self._listener = BankListener(self.url, on_change,
                                          ignore_pid=self.store.backend_pid)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        super().close()

    @property
    def short_name(self) -> str:
        """The database and its server, short enough for the title bar at 80 columns."""
        info = self.store.connection_info
        host = "" if info.host.startswith("/") else f"@{info.host}"
        return f"{info.dbname}{host} (PostgreSQL)"

    def sample_image(self, rel_path: str) -> bytes:
        return self.store.photo_image(rel_path)

    def identity_photos(self, name: str) -> list[PhotoRecord]:
        name = validate_identity_name(name)
        if name not in self.store.identity_names():
            raise BankError(f"no identity named {name!r} in {self.location}")
        return self.store.identity_photos(name)

    def _index_options(self, names: list[str], paths: list[str],
                       matrix: np.ndarray) -> dict[str, object]:
        """From :data:`~faceid_tui.bank.postgres_store.HNSW_MIN_SAMPLES` samples on, the
        matcher's candidates come from the database's HNSW index."""
        model_id = self.pipeline.model_id
        if not names or self.store.ensure_vector_index(model_id, matrix.shape[1]) is None:
            return {}
        # The bank's matcher scores by centroid (Matcher's default): one row per identity,
        # in name order.
        identity_row = {name: row for row, name in enumerate(sorted(set(names)))}
        return {"index_min_samples": 1,
                "index_builder": lambda _rows: PgvectorIndex(
                    self.store, model_id, lambda name, _rel_path: identity_row.get(name))}

    def saved_threshold(self, model_id: str) -> ThresholdChoice | None:
        return None  # calibrated thresholds are kept per folder bank (faceid.toml) only

    # -- sync -------------------------------------------------------------------------------
    def sync(self, progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Embed the stored samples the current model has not embedded yet."""
        report = SyncReport()
        model_id = self.pipeline.model_id
        missing = self.store.missing_embeddings(model_id)
        if not missing:
            return report
        # The pipeline reads files: the stored images are written to a private folder for
        # the length of the run (and gone after it, whatever happens).
        with tempfile.TemporaryDirectory(prefix="faceid-sync-") as scratch:
            todo: dict[Path, tuple[str, str]] = {}
            for number, (digest, rel_path) in enumerate(missing):
                suffix = Path(rel_path).suffix or ".jpg"
                path = Path(scratch) / f"{number}{suffix}"
                path.write_bytes(self.store.photo_image(rel_path))
                todo[path] = (digest, rel_path)
            self._embed_files(todo, report, progress)
        return report

    # -- changes ----------------------------------------------------------------------------
    def _store_sample(self, name: str, filename: str, data: bytes,
                      embedding: CachedEmbedding | None) -> str:
        digest = sha256_bytes(data)
        with self.store.transaction():
            self.store.ensure_identity(name)
            self.store.lock_identities([name])  # two stations never pick the same file name
            rel_path = self._free_rel_path(name, filename)
            if embedding is not None:
                self.store.put_embedding(digest, self.pipeline.model_id, embedding)
            self.store.put_photo(PhotoRecord(rel_path, name, digest, len(data), 0), data)
        return rel_path

    def _free_rel_path(self, name: str, filename: str) -> str:
        """``name/filename``, or ``stem-2.ext``, ``stem-3.ext``… when that is taken."""
        stem, suffix = Path(filename).stem, Path(filename).suffix
        candidate, counter = f"{name}/{filename}", 2
        while self.store.rel_path_taken(candidate):
            candidate = f"{name}/{stem}-{counter}{suffix}"
            counter += 1
        return candidate

    def add_sample(self, name: str, filename: str, data: bytes,
                   embedding: CachedEmbedding | None = None) -> str:
        """Store an image under ``name`` as it is (import); embedded now when ``embedding``
        is given, else by the next :meth:`sync`. Content already there is not stored twice."""
        name = validate_identity_name(name)
        if existing := self._enrolled_copy(name, sha256_bytes(data)):
            return existing
        return self._store_sample(name, filename, data, embedding)

    def _enrolled_copy(self, name: str, digest: str) -> str | None:
        return next((record.rel_path for record in self.store.identity_photos(name)
                     if record.sha256 == digest), None)

    def remove_sample(self, rel_path: str, *, drop_empty_identity: bool = False) -> None:
        name = rel_path.split("/", 1)[0]
        with self.store.transaction():
            self.store.lock_identities([name])
            self.store.delete_photo(rel_path)
            if drop_empty_identity and not self.store.identity_photos(name):
                self.store.delete_identity(name)

    def rename(self, old: str, new: str) -> None:
        old, new = validate_identity_name(old), validate_identity_name(new)
        if old == new:
            return
        with self.store.transaction():
            self._existing(old)
            if new in self.store.identity_names():
                raise BankError(f"an identity named {new!r} exists already; use `faceid bank "
                                f"merge {old!r} {new!r}` to join them")
            self.store.rename_identity(old, new)

    def merge(self, source_name: str, target_name: str) -> int:
        """Move every photo of ``source_name`` into ``target_name``; return how many moved."""
        source_name = validate_identity_name(source_name)
        target_name = validate_identity_name(target_name)
        if source_name == target_name:
            raise BankError("cannot merge an identity into itself")
        moved = 0
        with self.store.transaction():
            self.store.lock_identities([source_name, target_name])
            self._existing(source_name)
            self._existing(target_name)
            for record in self.store.identity_photos(source_name):
                data = self.store.photo_image(record.rel_path)
                self.store.delete_photo(record.rel_path)
                rel_path = self._free_rel_path(target_name, record.rel_path.split("/", 1)[1])
                self.store.put_photo(PhotoRecord(rel_path, target_name, record.sha256,
                                                 record.size, record.mtime_ns), data)
                moved += 1
            self.store.delete_identity(source_name)
        return moved

    def remove(self, name: str) -> int:
        """Delete an identity and its photos; return how many photos were deleted."""
        name = validate_identity_name(name)
        with self.store.transaction():
            self.store.lock_identities([name])
            self._existing(name)
            count = len(self.store.identity_photos(name))
            self.store.delete_identity(name)
        return count

    def _existing(self, name: str) -> None:
        if name not in self.store.identity_names():
            raise BankError(f"no identity named {name!r} in {self.location}")

