"""Undoable edits of the bank for the app's bank screen: rename, merge, delete a sample, delete
an identity. In a folder bank deleted files go to ``id_bank/.trash/`` (hidden, so sync ignores
it) and come back on undo; the trash is emptied when the app closes. In a shared bank the
deleted samples (image and embeddings) are held in memory until the app closes, and undo
stores them again."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.store import CachedEmbedding, PhotoRecord

TRASH = ".trash"


@dataclass(frozen=True)
class JournalEntry:
    description: str
    undo: Callable[[], None]


@dataclass(frozen=True)
class _HeldSample:
    """A shared bank's sample taken out by a delete, to be stored again by undo."""

    record: PhotoRecord
    image: bytes
    embedding: CachedEmbedding | None


class BankJournal:
    def __init__(self, bank: BankBase,
                 on_rename: Callable[[str, str], None] | None = None) -> None:
        """``on_rename(old, new)`` keeps other records (the triage ledger) in step."""
        self.bank = bank
        self.on_rename = on_rename or (lambda old, new: None)
        self.entries: list[JournalEntry] = []
        self.trash = bank.folder / TRASH if isinstance(bank, IdentityBank) else None

    def _trash_slot(self) -> Path:
        assert self.trash is not None
        slot = self.trash / f"{time.time_ns()}"
        slot.mkdir(parents=True)
        return slot

    def rename(self, old: str, new: str) -> None:
        old, new = validate_identity_name(old), validate_identity_name(new)
        self.bank.rename(old, new)
        self.on_rename(old, new)

        def undo() -> None:
            self.bank.rename(new, old)
            self.on_rename(new, old)

        self.entries.append(JournalEntry(f"rename {old} → {new}", undo))

    def merge(self, source: str, target: str) -> int:
        source, target = validate_identity_name(source), validate_identity_name(target)
        before = {record.rel_path for record in self.bank.identity_photos(target)}
        moved = self.bank.merge(source, target)
        self.on_rename(source, target)
        arrived = [record.rel_path for record in self.bank.identity_photos(target)
                   if record.rel_path not in before]

        if not isinstance(self.bank, IdentityBank):
            def undo_shared() -> None:
                held = self._take(arrived)
                self._put_back(held, name=source)

            self.entries.append(JournalEntry(f"merge {source} into {target}", undo_shared))
            return moved

        def undo() -> None:
            assert isinstance(self.bank, IdentityBank)
            folder = self.bank.identity_folder(source)
            folder.mkdir(exist_ok=True)
            for rel_path in arrived:
                path = self.bank.folder / rel_path
                if path.exists():
                    os.rename(path, folder / path.name)
            self.bank.sync()

        self.entries.append(JournalEntry(f"merge {source} into {target}", undo))
        return moved

    def delete_sample(self, rel_path: str) -> None:
        name, filename = rel_path.split("/", 1)
        if not isinstance(self.bank, IdentityBank):
            held = self._take([rel_path])
            self.entries.append(JournalEntry(f"delete {rel_path}",
                                             lambda: self._put_back(held)))
            return
        path = self.bank.identity_folder(name) / filename
        slot = self._trash_slot()
        os.rename(path, slot / filename)
        self.bank.sync()

        def undo() -> None:
            folder = self.bank.identity_folder(name)
            folder.mkdir(exist_ok=True)
            os.rename(slot / filename, folder / filename)
            self.bank.sync()

        self.entries.append(JournalEntry(f"delete {rel_path}", undo))

    def delete_identity(self, name: str) -> None:
        if not isinstance(self.bank, IdentityBank):
            name = validate_identity_name(name)
            held = self._take([r.rel_path for r in self.bank.identity_photos(name)])
            self.bank.remove(name)
            self.entries.append(JournalEntry(f"delete identity {name}",
                                             lambda: self._put_back(held)))
            return
        folder = self.bank.identity_folder(validate_identity_name(name))
        slot = self._trash_slot()
        os.rename(folder, slot / folder.name)
        self.bank.sync()

        def undo() -> None:
            os.rename(slot / folder.name, folder)
            self.bank.sync()

        self.entries.append(JournalEntry(f"delete identity {name}", undo))

    def undo(self) -> str | None:
        """Undo the latest edit; return what was undone (None when nothing is left)."""
        if not self.entries:
            return None
        entry = self.entries.pop()
        entry.undo()
        return entry.description

    def _take(self, rel_paths: list[str]) -> list[_HeldSample]:
        """Remove samples of a shared bank, keeping what undo needs to store them again."""
        store = self.bank.store
        records = {record.rel_path: record
                   for name in {rel_path.split("/", 1)[0] for rel_path in rel_paths}
                   for record in self.bank.identity_photos(name)}
        held = []
        for rel_path in rel_paths:
            record = records[rel_path]
            held.append(_HeldSample(record, self.bank.sample_image(rel_path),
                                    store.cached_embedding(record.sha256,
                                                           self.bank.pipeline.model_id)))
        with store.transaction():
            for rel_path in rel_paths:
                self.bank.remove_sample(rel_path)
        return held

    def _put_back(self, held: list[_HeldSample], name: str | None = None) -> None:
        from faceid_tui.bank.shared_bank import SharedBank

        assert isinstance(self.bank, SharedBank)
        with self.bank.store.transaction():
            for sample in held:
                self.bank.add_sample(name or sample.record.identity,
                                     sample.record.rel_path.split("/", 1)[1], sample.image,
                                     sample.embedding)

    def empty_trash(self) -> None:
        if self.trash is not None:
            shutil.rmtree(self.trash, ignore_errors=True)
