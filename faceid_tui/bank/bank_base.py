"""What every identity bank does the same way, wherever its photos live: thresholds, the
matcher, listing, and the outline of enrolment.

Two banks build on it: :class:`~faceid_tui.bank.identity_bank.IdentityBank` (photos in
``id_bank/<Name>/`` folders, SQLite beside them) and
:class:`~faceid_tui.bank.shared_bank.SharedBank` (photos and embeddings in PostgreSQL, for
several stations). Callers (the CLI, the triage session) use only what is defined here plus
the edits both implement (``enrol_face``, ``remove_sample``, ``rename``, ``merge``, ``remove``,
``sync``)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from faceid_tui.bank.matching import Matcher
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.store import BankStore, CachedEmbedding, IdentitySummary, PhotoRecord
from faceid_tui.bank.thresholds import (
    DEFAULT_FPIR,
    ThresholdChoice,
    ambiguous_margin,
    bank_thresholds,
    likely_threshold,
)
from faceid_tui.engine.alignment import crop_with_margin
from faceid_tui.engine.decode import is_image_name, load_rgb
from faceid_tui.engine.pipeline import PhotoResult, Pipeline
from faceid_tui.errors import BankError
from faceid_tui.fsutil import sha256_bytes


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


class BankBase:
    """Thresholds, matching and queries over a :class:`BankStore`. ``pipeline`` is only
    loaded when something needs embedding, so listing a bank costs no model load."""

    #: Where the bank is, for messages (a folder, or a database URL without its password).
    location: str

    def __init__(self, pipeline: Pipeline, store: BankStore, *,
                 threshold: float | None = None,
                 ambiguous_margin: float | None = None,
                 fpir: float = DEFAULT_FPIR) -> None:
        self.pipeline = pipeline
        self.store = store
        self.requested_threshold = threshold  # None: chosen from the bank's size
        self.fpir = fpir
        self.requested_margin = ambiguous_margin  # None: the model's (bank/thresholds.py)
        self._threshold_choice: ThresholdChoice | None = None

    def close(self) -> None:
        self.store.close()

    def sync(self, progress: Callable[[int, int], None] | None = None) -> SyncReport:
        raise NotImplementedError

    def sample_image(self, rel_path: str) -> bytes:
        """The image file of one bank sample (for thumbnails and export)."""
        raise NotImplementedError

    @property
    def shown_location(self) -> Path | str:
        """The bank as the first-run screen names it (a folder, or a redacted URL)."""
        return self.location

    @property
    def short_name(self) -> str:
        """The bank in the app's title bar."""
        return self.location

    def sample_location(self, rel_path: str) -> str:
        """Where a sample is, as a user would look for it (a file path, or its name in a
        shared bank)."""
        return rel_path

    def saved_threshold(self, model_id: str) -> ThresholdChoice | None:
        """A threshold ``faceid calibrate --save`` stored for this bank and model."""
        return None

    def _embed_files(self, todo: dict[Path, tuple[str, str]], report: SyncReport,
                     progress: Callable[[int, int], None] | None) -> None:
        """Embed sample files (``path -> (content hash, rel_path)``) with the current model
        and store each embedding as it comes."""
        model_id = self.pipeline.model_id
        for done, result in enumerate(self.pipeline.run(list(todo)), start=1):
            digest, rel_path = todo[result.path]
            if progress:
                progress(done, len(todo))
            if result.error:
                report.errors[rel_path] = result.error
                continue
            self.store.put_embedding(digest, model_id, cache_entry(result))
            report.embedded.append(rel_path)
            if not result.faces:
                report.no_face.append(rel_path)

    # -- queries --------------------------------------------------------------------------
    def identities(self) -> list[IdentitySummary]:
        return self.store.summaries(self.pipeline.model_id)

    def identity_photos(self, name: str) -> list[PhotoRecord]:
        name = validate_identity_name(name)
        if name not in self.store.identity_names():
            raise BankError(f"no identity named {name!r} in {self.location}")
        return [record for record in self.store.photos() if record.identity == name]

    def threshold_choice(self, samples: int | None = None,
                         identities: int | None = None) -> ThresholdChoice:
        """The open-set (``known``) threshold in force and why
        (see :mod:`faceid_tui.bank.thresholds`)."""
        if self.requested_threshold is not None:
            return ThresholdChoice(self.requested_threshold, "--threshold", "given by the user")
        model_id = self.pipeline.model_id
        saved = self.saved_threshold(model_id)
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
        names, paths, matrix = self.store.samples(self.pipeline.model_id)
        self._threshold_choice = self.threshold_choice(len(names), len(set(names)))
        return Matcher(names, matrix, threshold=self._threshold_choice.value,
                       likely_threshold=self.likely_threshold_choice(
                           len(names), len(set(names))).value,
                       ambiguous_margin=self.ambiguous_margin,
                       **self._index_options(names, paths, matrix))

    def _index_options(self, names: list[str], paths: list[str],
                       matrix: np.ndarray) -> dict[str, object]:
        """How the matcher searches large banks (default: its own usearch index)."""
        return {}

    # -- enrolment ------------------------------------------------------------------------
    def enrol_photos(self, name: str, paths: Iterable[Path]) -> list[EnrolResult]:
        """Add photos of ``name`` to the bank (creating the identity) with their embedding.

        The largest face of each photo is enrolled; a photo with no face is refused, since
        the bank would learn nothing from it.
        """
        return list(self.iter_enrol_photos(name, paths))

    def iter_enrol_photos(self, name: str, paths: Iterable[Path]) -> Iterator[EnrolResult]:
        """:meth:`enrol_photos`, yielding each result once it is committed (so a caller can
        acknowledge it: a yielded enrolment survives a crash)."""
        name = validate_identity_name(name)
        self._check_enrol_target(name)
        for result in self.pipeline.run([Path(p) for p in paths], chunk_size=8):
            yield self._enrol_result(name, result)

    def _check_enrol_target(self, name: str) -> None:
        """Refuse a name before any work (the folder bank checks the folder stays inside)."""

    def _enrol_result(self, name: str, result: PhotoResult) -> EnrolResult:
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
        rel_path = self._store_sample(name, bank_file_name(result.path), data,
                                      cache_entry(result))
        return EnrolResult(result.path, rel_path)

    def enrol_face(self, name: str, source: Path, box: tuple[int, int, int, int],
                   embedding: np.ndarray, *, face_count: int, face_number: int) -> FaceEnrolment:
        """Enrol one face found in ``source`` (the triage app's confirm / name).

        A single-face photo is kept whole; from a photo with several faces a crop of this
        face is kept, with enough margin around it to be detected again on a later sync.
        The embedding already computed is stored with the image, in one transaction.
        """
        name = validate_identity_name(name)
        self._check_enrol_target(name)
        created = name not in self.store.identity_names()
        if face_count == 1:
            data = Path(source).read_bytes()
            filename = bank_file_name(Path(source))
            stored_box = list(box)
        else:
            crop, stored_box = crop_with_margin(load_rgb(Path(source)), box)
            data = encode_jpeg(crop)
            filename = f"{Path(source).stem.lstrip('.') or 'photo'}-face{face_number}.jpg"
        digest = sha256_bytes(data)
        if existing := self._enrolled_copy(name, digest):
            return FaceEnrolment(existing, False, already_enrolled=True)
        rel_path = self._store_sample(
            name, filename, data,
            CachedEmbedding(np.asarray(embedding, np.float32), stored_box, 1))
        return FaceEnrolment(rel_path, created)

    def _store_sample(self, name: str, filename: str, data: bytes,
                      embedding: CachedEmbedding) -> str:
        """Keep one sample image and its embedding in one transaction; return its rel_path."""
        raise NotImplementedError

    def _enrolled_copy(self, name: str, digest: str) -> str | None:
        """The bank photo of ``name`` with this content, if it is enrolled already."""
        return next((record.rel_path for record in self.store.photos()
                     if record.identity == name and record.sha256 == digest), None)


def cache_entry(result: PhotoResult) -> CachedEmbedding:
    """The embedding kept for a bank photo: its largest face's."""
    face = result.largest_face()
    if face is None or face.embedding is None:
        return CachedEmbedding(None, None, len(result.faces))
    return CachedEmbedding(face.embedding, face.box.as_list(), len(result.faces))


def bank_file_name(source: Path) -> str:
    """A file name sync will pick up again: not hidden, with an image extension."""
    stem = source.stem.lstrip(".") or "photo"
    suffix = source.suffix.lower() if is_image_name(Path(f"x{source.suffix}")) else ".jpg"
    return f"{stem}{suffix}"


def encode_jpeg(image_rgb: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
