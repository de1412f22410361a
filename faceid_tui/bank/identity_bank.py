"""The identity bank: ``id_bank/<Name>/`` photo folders kept in step with the store.

The folders are the source of truth: :meth:`IdentityBank.sync` picks up photos that were added,
changed or removed by hand and embeds only content it has not seen (embeddings are cached by
file hash and model id). The largest face of each bank photo is taken to be that person.

Every change faceid makes itself (enrol, rename, merge, remove) runs inside one store
transaction around the file operation: if the file operation fails the transaction rolls
back, and if the process dies after the files moved, the next sync reconciles the store with
the folders.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from faceid_tui.bank.bank_base import (
    BankBase,
    EnrolResult,
    FaceEnrolment,
    SyncReport,
    encode_jpeg,
)
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.store import (
    DATABASE_NAME,
    BankStore,
    CachedEmbedding,
    PhotoRecord,
    SqliteBankStore,
)
from faceid_tui.bank.thresholds import DEFAULT_FPIR, ThresholdChoice, saved_threshold
from faceid_tui.engine.decode import is_image_name
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import BankError, FaceIdError
from faceid_tui.fsutil import (
    atomic_write_bytes,
    remove_stale_temp_files,
    sha256_bytes,
    sha256_file,
)

# Re-exported: callers import the results with the bank.
__all__ = ["EnrolResult", "FaceEnrolment", "IdentityBank", "SyncReport", "encode_jpeg"]


class IdentityBank(BankBase):
    """Operations on one bank folder. ``pipeline`` is only loaded when something needs
    embedding, so listing a bank that is in sync costs no model load."""

    def __init__(self, folder: Path, pipeline: Pipeline, *, store: BankStore | None = None,
                 threshold: float | None = None,
                 ambiguous_margin: float | None = None,
                 fpir: float = DEFAULT_FPIR) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.location = str(self.folder)
        super().__init__(pipeline, store or SqliteBankStore(self.folder / DATABASE_NAME),
                         threshold=threshold, ambiguous_margin=ambiguous_margin, fpir=fpir)

    def sample_image(self, rel_path: str) -> bytes:
        name, filename = rel_path.split("/", 1)
        return (self.identity_folder(name) / filename).read_bytes()

    @property
    def shown_location(self) -> Path:
        return self.folder

    @property
    def short_name(self) -> str:
        return f"{self.folder.name}/"

    def sample_location(self, rel_path: str) -> str:
        return str(self.folder / rel_path)

    def saved_threshold(self, model_id: str) -> ThresholdChoice | None:
        return saved_threshold(self.folder, model_id)

    # -- folders ------------------------------------------------------------------------
    def identity_folder(self, name: str) -> Path:
        """The folder of a (validated) identity, guaranteed to sit directly in the bank."""
        name = validate_identity_name(name)
        folder = self.folder / name
        if folder.resolve().parent != self.folder.resolve():
            raise BankError(f"identity name {name!r} does not map to a folder inside {self.folder}")
        return folder

    def _identity_folders(self) -> list[Path]:
        """Every folder that is an identity: visible, not a link, with a valid NFC name
        (faceid never creates other folders; anything else is left alone)."""
        folders = []
        for entry in sorted(self.folder.iterdir()):
            if not entry.is_dir() or entry.is_symlink() or entry.name.startswith("."):
                continue
            try:
                if validate_identity_name(entry.name) == entry.name:
                    folders.append(entry)
            except FaceIdError:
                continue
        return folders

    def _disk_photos(self, folders: list[Path]) -> dict[str, tuple[str, Path]]:
        """``rel_path -> (identity, path)`` for every photo in the given identity folders."""
        found: dict[str, tuple[str, Path]] = {}
        for folder in folders:
            remove_stale_temp_files(folder)  # left by a write that was killed
            for photo in sorted(folder.iterdir()):
                if photo.is_file() and not photo.is_symlink() and is_image_name(photo):
                    found[f"{folder.name}/{photo.name}"] = (folder.name, photo)
        return found

    # -- sync -----------------------------------------------------------------------------
    def sync(self, progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Bring the store in step with the folders; embed only content not seen before.

        ``progress(done, total)`` is called as new photos are embedded."""
        report = SyncReport()
        identity_folders = self._identity_folders()
        folders = [folder.name for folder in identity_folders]
        on_disk = self._disk_photos(identity_folders)
        known = {record.rel_path: record for record in self.store.photos()}
        updates: list[PhotoRecord] = []
        for rel_path, (identity, path) in on_disk.items():
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked
            old = known.get(rel_path)
            if old and old.identity == identity and old.size == stat.st_size \
                    and old.mtime_ns == stat.st_mtime_ns:
                continue
            digest = sha256_file(path)
            updates.append(PhotoRecord(rel_path, identity, digest, stat.st_size, stat.st_mtime_ns))
            if old is None:
                report.added.append(rel_path)
            elif old.sha256 != digest:
                report.changed.append(rel_path)
        gone = sorted(set(known) - set(on_disk))
        with self.store.transaction():
            for name in folders:
                self.store.ensure_identity(name)
            for record in updates:
                self.store.put_photo(record)
            for rel_path in gone:
                self.store.delete_photo(rel_path)
            for name in set(self.store.identity_names()) - set(folders):
                self.store.delete_identity(name)
        report.removed = gone
        self._embed_missing(on_disk, report, progress)
        return report

    def _embed_missing(self, on_disk: dict[str, tuple[str, Path]], report: SyncReport,
                       progress: Callable[[int, int], None] | None) -> None:
        model_id = self.pipeline.model_id
        todo: dict[Path, tuple[str, str]] = {}  # path -> (content hash, rel_path)
        seen: set[str] = set()
        for record in self.store.photos():
            if record.sha256 in seen or record.rel_path not in on_disk:
                continue
            seen.add(record.sha256)
            if self.store.cached_embedding(record.sha256, model_id) is None:
                todo[on_disk[record.rel_path][1]] = (record.sha256, record.rel_path)
        self._embed_files(todo, report, progress)

    # -- changes --------------------------------------------------------------------------
    def _check_enrol_target(self, name: str) -> None:
        self.identity_folder(name)

    def _store_sample(self, name: str, filename: str, data: bytes,
                      embedding: CachedEmbedding) -> str:
        folder = self.identity_folder(name)
        target = _free_name(folder, filename)
        rel_path = f"{name}/{target.name}"
        with self.store.transaction():
            self.store.ensure_identity(name)
            self.store.put_embedding(sha256_bytes(data), self.pipeline.model_id, embedding)
            folder.mkdir(exist_ok=True)
            atomic_write_bytes(target, data)
            stat = target.stat()
            self.store.put_photo(PhotoRecord(rel_path, name, sha256_bytes(data), stat.st_size,
                                             stat.st_mtime_ns))
        return rel_path

    def remove_sample(self, rel_path: str, *, drop_empty_identity: bool = False) -> None:
        """Delete one bank photo (undoing an enrolment); optionally its identity when that
        leaves it empty."""
        name = rel_path.split("/", 1)[0]
        path = self.identity_folder(name) / rel_path.split("/", 1)[1]
        with self.store.transaction():
            self.store.delete_photo(rel_path)
            path.unlink(missing_ok=True)
            if drop_empty_identity and not self.identity_photos(name):
                self.store.delete_identity(name)
                _remove_folder(path.parent)

    def rename(self, old: str, new: str) -> None:
        old, new = validate_identity_name(old), validate_identity_name(new)
        source, target = self._existing_folder(old), self.identity_folder(new)
        if old == new:
            return
        if target.exists() or new in self.store.identity_names():
            raise BankError(f"an identity named {new!r} exists already; use `faceid bank merge "
                            f"{old!r} {new!r}` to join them")
        with self.store.transaction():
            self.store.rename_identity(old, new)
            os.rename(source, target)

    def merge(self, source_name: str, target_name: str) -> int:
        """Move every photo of ``source_name`` into ``target_name``; return how many moved."""
        source_name = validate_identity_name(source_name)
        target_name = validate_identity_name(target_name)
        if source_name == target_name:
            raise BankError("cannot merge an identity into itself")
        source = self._existing_folder(source_name)
        target = self._existing_folder(target_name)
        moved = 0
        with self.store.transaction():
            for record in self.identity_photos(source_name):
                photo = self.folder / record.rel_path
                destination = _free_name(target, photo.name)
                self.store.delete_photo(record.rel_path)
                os.rename(photo, destination)
                stat = destination.stat()
                self.store.put_photo(PhotoRecord(f"{target_name}/{destination.name}",
                                                 target_name, record.sha256, stat.st_size,
                                                 stat.st_mtime_ns))
                moved += 1
            self.store.delete_identity(source_name)
            _remove_folder(source)
        return moved

    def remove(self, name: str) -> int:
        """Delete an identity and its photos; return how many photos were deleted."""
        name = validate_identity_name(name)
        folder = self._existing_folder(name)
        count = len(self.identity_photos(name))
        with self.store.transaction():
            self.store.delete_identity(name)
            _remove_folder(folder)
        return count

    def _existing_folder(self, name: str) -> Path:
        folder = self.identity_folder(name)
        if not folder.is_dir() or name not in self.store.identity_names():
            raise BankError(f"no identity named {name!r} in {self.folder}")
        return folder


def _free_name(folder: Path, filename: str) -> Path:
    """``folder/filename``, or ``stem-2.ext``, ``stem-3.ext``… when that is taken."""
    candidate = folder / filename
    stem, suffix = candidate.stem, candidate.suffix
    counter = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{counter}{suffix}"
        counter += 1
    return candidate


def _remove_folder(folder: Path) -> None:
    # Rename first so that a crash mid-delete leaves a hidden folder sync ignores, never a
    # half-deleted identity.
    trash = folder.with_name(f".deleted-{folder.name}-{os.getpid()}")
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)
