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

import io
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from faceid_tui.bank.matching import Matcher
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.store import (
    DATABASE_NAME,
    BankStore,
    CachedEmbedding,
    IdentitySummary,
    PhotoRecord,
    SqliteBankStore,
)
from faceid_tui.bank.thresholds import (
    DEFAULT_FPIR,
    ThresholdChoice,
    ambiguous_margin,
    bank_thresholds,
    likely_threshold,
    saved_threshold,
)
from faceid_tui.engine.alignment import crop_with_margin
from faceid_tui.engine.decode import is_image_name, load_rgb
from faceid_tui.engine.pipeline import PhotoResult, Pipeline
from faceid_tui.errors import BankError, FaceIdError
from faceid_tui.fsutil import (
    atomic_write_bytes,
    remove_stale_temp_files,
    sha256_bytes,
    sha256_file,
)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: list[str] = field(default_factory=list)
    no_face: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.removed)


@dataclass(frozen=True)
class FaceEnrolment:
    rel_path: str
    created_identity: bool
    already_enrolled: bool = False


@dataclass(frozen=True)
class EnrolResult:
    path: Path
    rel_path: str | None
    error: str | None = None
    already_enrolled: bool = False


class IdentityBank:
    """Operations on one bank folder. ``pipeline`` is only loaded when something needs
    embedding, so listing a bank that is in sync costs no model load."""

    def __init__(self, folder: Path, pipeline: Pipeline, *, store: BankStore | None = None,
                 threshold: float | None = None,
                 ambiguous_margin: float | None = None,
                 fpir: float = DEFAULT_FPIR) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pipeline = pipeline
        self.store: BankStore = store or SqliteBankStore(self.folder / DATABASE_NAME)
        self.requested_threshold = threshold  # None: chosen from the bank's size
        self.fpir = fpir
        self.requested_margin = ambiguous_margin  # None: the model's (bank/thresholds.py)
        self._threshold_choice: ThresholdChoice | None = None

    def close(self) -> None:
        self.store.close()

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
        for done, result in enumerate(self.pipeline.run(list(todo)), start=1):
            digest, rel_path = todo[result.path]
            if progress:
                progress(done, len(todo))
            if result.error:
                report.errors[rel_path] = result.error
                continue
            self.store.put_embedding(digest, model_id, _cache_entry(result))
            report.embedded.append(rel_path)
            if not result.faces:
                report.no_face.append(rel_path)

    # -- queries --------------------------------------------------------------------------
    def identities(self) -> list[IdentitySummary]:
        return self.store.summaries(self.pipeline.model_id)

    def identity_photos(self, name: str) -> list[PhotoRecord]:
        name = validate_identity_name(name)
        if name not in self.store.identity_names():
            raise BankError(f"no identity named {name!r} in {self.folder}")
        return [record for record in self.store.photos() if record.identity == name]

    def threshold_choice(self, samples: int | None = None,
                         identities: int | None = None) -> ThresholdChoice:
        """The open-set (``known``) threshold in force and why
        (see :mod:`faceid_tui.bank.thresholds`)."""
        if self.requested_threshold is not None:
            return ThresholdChoice(self.requested_threshold, "--threshold", "given by the user")
        model_id = self.pipeline.model_id
        saved = saved_threshold(self.folder, model_id)
        if saved is not None:
            return saved
        if samples is None or identities is None:
            names = self.store.samples(model_id)[0]
            samples, identities = len(names), len(set(names))
        return bank_thresholds(model_id, identities, samples, self.fpir).known

    @property
    def ambiguous_margin(self) -> float:
        if self.requested_margin is not None:
            return self.requested_margin
        return ambiguous_margin(self.pipeline.model_id)

    def likely_threshold_choice(self, samples: int, identities: int) -> ThresholdChoice:
        """The suggestion (``likely``) threshold and why."""
        return likely_threshold(self.pipeline.model_id, identities, samples)

    @property
    def threshold_in_force(self) -> ThresholdChoice:
        """What the last matcher used (or the bank as it is now), with its reason."""
        if self._threshold_choice is None:
            self._threshold_choice = self.threshold_choice()
        return self._threshold_choice

    @property
    def threshold(self) -> float:
        return self.threshold_in_force.value

    def matcher(self) -> Matcher:
        names, _paths, matrix = self.store.samples(self.pipeline.model_id)
        self._threshold_choice = self.threshold_choice(len(names), len(set(names)))
        return Matcher(names, matrix, threshold=self._threshold_choice.value,
                       likely_threshold=self.likely_threshold_choice(
                           len(names), len(set(names))).value,
                       ambiguous_margin=self.ambiguous_margin)

    # -- changes --------------------------------------------------------------------------
    def enrol_photos(self, name: str, paths: Iterable[Path]) -> list[EnrolResult]:
        """Copy photos of ``name`` into the bank (creating the identity) with their embedding.

        The largest face of each photo is enrolled; a photo with no face is refused, since
        the bank would learn nothing from it.
        """
        return list(self.iter_enrol_photos(name, paths))

    def iter_enrol_photos(self, name: str, paths: Iterable[Path]) -> Iterator[EnrolResult]:
        """:meth:`enrol_photos`, yielding each result once it is committed (so a caller can
        acknowledge it: a yielded enrolment survives a crash)."""
        name = validate_identity_name(name)
        folder = self.identity_folder(name)
        for result in self.pipeline.run([Path(p) for p in paths], chunk_size=8):
            yield self._enrol_one(name, folder, result)

    def _enrol_one(self, name: str, folder: Path, result: PhotoResult) -> EnrolResult:
        if result.error:
            return EnrolResult(result.path, None, result.error)
        if not result.faces:
            return EnrolResult(result.path, None,
                               "no face found; enrol a photo where the face is clearly visible")
        try:
            data = result.path.read_bytes()
        except OSError as exc:
            return EnrolResult(result.path, None, f"cannot read file: {exc.strerror or exc}")
        digest = sha256_bytes(data)
        if existing := self._enrolled_copy(name, digest):
            return EnrolResult(result.path, existing, already_enrolled=True)
        target = _free_name(folder, _bank_file_name(result.path))
        rel_path = f"{name}/{target.name}"
        with self.store.transaction():
            self.store.ensure_identity(name)
            self.store.put_embedding(digest, self.pipeline.model_id, _cache_entry(result))
            folder.mkdir(exist_ok=True)
            atomic_write_bytes(target, data)
            stat = target.stat()
            self.store.put_photo(PhotoRecord(rel_path, name, digest, stat.st_size,
                                             stat.st_mtime_ns))
        return EnrolResult(result.path, rel_path)

    def enrol_face(self, name: str, source: Path, box: tuple[int, int, int, int],
                   embedding: np.ndarray, *, face_count: int, face_number: int) -> FaceEnrolment:
        """Enrol one face found in ``source`` (the triage app's confirm / name).

        A single-face photo is copied whole; from a photo with several faces a crop of this
        face is saved, with enough margin around it to be detected again on a later sync.
        The embedding already computed is stored with the file, in one transaction.
        """
        name = validate_identity_name(name)
        folder = self.identity_folder(name)
        created = name not in self.store.identity_names()
        if face_count == 1:
            data = Path(source).read_bytes()
            filename = _bank_file_name(Path(source))
            stored_box = list(box)
        else:
            crop, stored_box = crop_with_margin(load_rgb(Path(source)), box)
            data = encode_jpeg(crop)
            filename = f"{Path(source).stem.lstrip('.') or 'photo'}-face{face_number}.jpg"
        digest = sha256_bytes(data)
        if existing := self._enrolled_copy(name, digest):
            return FaceEnrolment(existing, False, already_enrolled=True)
        target = _free_name(folder, filename)
        rel_path = f"{name}/{target.name}"
        with self.store.transaction():
            self.store.ensure_identity(name)
            self.store.put_embedding(digest, self.pipeline.model_id,
                                     CachedEmbedding(np.asarray(embedding, np.float32),
                                                     stored_box, 1))
            folder.mkdir(exist_ok=True)
            atomic_write_bytes(target, data)
            stat = target.stat()
            self.store.put_photo(PhotoRecord(rel_path, name, digest, stat.st_size,
                                             stat.st_mtime_ns))
        return FaceEnrolment(rel_path, created)

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

    def _enrolled_copy(self, name: str, digest: str) -> str | None:
        """The bank photo of ``name`` with this content, if it is enrolled already."""
        return next((record.rel_path for record in self.store.photos()
                     if record.identity == name and record.sha256 == digest), None)

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


def _cache_entry(result: PhotoResult) -> CachedEmbedding:
    face = result.largest_face()
    if face is None or face.embedding is None:
        return CachedEmbedding(None, None, len(result.faces))
    return CachedEmbedding(face.embedding, face.box.as_list(), len(result.faces))


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _bank_file_name(source: Path) -> str:
    """A file name sync will pick up again: not hidden, with an image extension."""
    stem = source.stem.lstrip(".") or "photo"
    suffix = source.suffix.lower() if is_image_name(Path(f"x{source.suffix}")) else ".jpg"
    return f"{stem}{suffix}"


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
