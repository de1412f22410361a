"""Enrolling known people in bulk: a folder laid out as ``Name/photo.jpg`` (one subfolder per
person, the layout of ``id_bank/`` itself), or one photo under a name.

Every photo goes through :meth:`BankBase.enrol_photos` (copied in, embedded, committed one
by one), so an import cut short keeps what it did and running it again adds only what is new
(a photo already enrolled under that name is recognised by its content).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.names import validate_identity_name
from faceid_tui.engine.decode import is_image_name
from faceid_tui.errors import FaceIdError, InvalidNameError


@dataclass
class ImportReport:
    enrolled: int = 0
    already: int = 0
    people: list[str] = field(default_factory=list)
    #: file or folder -> why it was not enrolled
    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        text = f"enrolled {self.enrolled} photo(s) of {len(self.people)} people"
        if self.already:
            text += f", {self.already} already in the bank"
        if self.skipped:
            first = next(iter(self.skipped.items()))
            text += f"; {len(self.skipped)} skipped (e.g. {Path(first[0]).name}: {first[1]})"
        return text


def people_in_folder(folder: Path) -> dict[str, list[Path]]:
    """``{subfolder name: its photos}`` for every non-hidden subfolder holding photos."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FaceIdError(f"{folder} is not a folder; give a folder of Name/photo.jpg or a photo")
    people = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = sorted(p for p in sub.rglob("*") if p.is_file() and is_image_name(p))
        if photos:
            people[sub.name] = photos
    if not people:
        raise FaceIdError(f"{folder} holds no Name/ subfolder with photos; lay it out as "
                          "Name/photo.jpg, one folder per person")
    return people


def import_people(bank: BankBase, folder: Path,
                  progress: Callable[[int, int], None] | None = None) -> ImportReport:
    """Enrol every ``Name/photo`` under ``folder``; names that are not valid identity names
    are skipped with the reason."""
    people = people_in_folder(folder)
    total = sum(len(photos) for photos in people.values())
    report, done = ImportReport(), 0
    for raw_name, photos in people.items():
        try:
            name = validate_identity_name(raw_name)
        except InvalidNameError as exc:
            report.skipped[str(Path(folder) / raw_name)] = str(exc)
            done += len(photos)
            continue
        enrolled_here = False
        for result in bank.iter_enrol_photos(name, photos):
            done += 1
            if result.error:
                report.skipped[str(result.path)] = result.error
            elif result.already_enrolled:
                report.already += 1
            else:
                report.enrolled += 1
                enrolled_here = True
            if progress:
                progress(done, total)
        if enrolled_here:
            report.people.append(name)
    return report


def import_photo(bank: BankBase, photo: Path, name: str) -> ImportReport:
    """Enrol one photo (its largest face) under ``name``."""
    photo = Path(photo).expanduser()
    if not photo.is_file() or not is_image_name(photo):
        raise FaceIdError(f"{photo} is not a photo file (jpg, png, …)")
    report = ImportReport()
    for result in bank.enrol_photos(validate_identity_name(name), [photo]):
        if result.error:
            raise FaceIdError(f"{photo.name}: {result.error}")
        if result.already_enrolled:
            report.already += 1
        else:
            report.enrolled += 1
            report.people.append(name)
    return report
