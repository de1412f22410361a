"""Undoable edits of the bank for the app's bank screen: rename, merge, delete a sample, delete
an identity. Deleted files go to ``id_bank/.trash/`` (hidden, so sync ignores it) and come back
on undo; the trash is emptied when the app closes."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.names import validate_identity_name

TRASH = ".trash"


@dataclass(frozen=True)
class JournalEntry:
    description: str
    undo: Callable[[], None]


class BankJournal:
    def __init__(self, bank: IdentityBank,
                 on_rename: Callable[[str, str], None] | None = None) -> None:
        """``on_rename(old, new)`` keeps other records (the triage ledger) in step."""
        self.bank = bank
        self.on_rename = on_rename or (lambda old, new: None)
        self.entries: list[JournalEntry] = []
        self.trash = bank.folder / TRASH

    def _trash_slot(self) -> Path:
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

        def undo() -> None:
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

    def empty_trash(self) -> None:
        shutil.rmtree(self.trash, ignore_errors=True)
