"""``faceid bank export DIR``: any bank (a folder bank, a shared PostgreSQL bank) written out as
the ``Name/photo.jpg`` layout of ``id_bank/``, which ``faceid bank import`` (or ``--bank DIR``
itself) reads back.

Each file is written atomically; a file already there with the same content is left alone and
one with other content is kept, the sample going beside it as ``photo-2.jpg``, so exporting
twice, or into a folder that holds other photos, loses nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.fsutil import atomic_write_bytes, sha256_file


@dataclass
class ExportReport:
    written: int = 0
    unchanged: int = 0
    identities: int = 0


def export_bank(bank: BankBase, folder: Path,
                progress: Callable[[int, int], None] | None = None) -> ExportReport:
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    records = bank.store.photos()
    report = ExportReport(identities=len({record.identity for record in records}))
    for done, record in enumerate(records, start=1):
        name, filename = record.rel_path.split("/", 1)
        # Names come from the bank, but a database is edited by others: check again.
        target_folder = folder / validate_identity_name(name)
        target = target_folder / Path(filename).name
        stem, suffix, counter = target.stem, target.suffix, 2
        while target.exists() and sha256_file(target) != record.sha256:
            target = target_folder / f"{stem}-{counter}{suffix}"
            counter += 1
        if target.exists():
            report.unchanged += 1
        else:
            target_folder.mkdir(exist_ok=True)
            atomic_write_bytes(target, bank.sample_image(record.rel_path))
            report.written += 1
        if progress:
            progress(done, len(records))
    return report
