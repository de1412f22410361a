"""The identity bank: folder sync, enrolment, rename / merge / remove, names, model ids."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.bank.names import validate_identity_name
from faceid_tui.bank.store import DATABASE_NAME
from faceid_tui.errors import BankError, InvalidNameError

from .conftest import copy_identity


def test_sync_picks_up_added_changed_and_removed_photos(bank_factory, identity_photos) -> None:
    bank = bank_factory()
    clooney = identity_photos["George_Clooney"]
    copy_identity(bank.folder, "George_Clooney", clooney[:3])
    first = bank.sync()
    assert len(first.added) == 3 and len(first.embedded) == 3

    # A restart with nothing changed embeds nothing.
    again = bank_factory().sync()
    assert again.changes == 0 and again.embedded == []

    shutil.copy2(clooney[3], bank.folder / "George_Clooney" / clooney[3].name)  # added
    (bank.folder / "George_Clooney" / clooney[0].name).unlink()  # removed
    changed = bank.folder / "George_Clooney" / clooney[1].name
    changed.write_bytes(clooney[4].read_bytes())  # changed content under the same name
    report = bank_factory().sync()
    assert report.added == [f"George_Clooney/{clooney[3].name}"]
    assert report.removed == [f"George_Clooney/{clooney[0].name}"]
    assert report.changed == [f"George_Clooney/{clooney[1].name}"]
    assert len(report.embedded) == 2  # only the new contents
    (summary,) = bank_factory().identities()
    assert (summary.name, summary.photos, summary.samples) == ("George_Clooney", 3, 3)


def test_a_folder_deleted_by_hand_removes_the_identity(bank_factory, identity_photos) -> None:
    bank = bank_factory()
    copy_identity(bank.folder, "Juanes", identity_photos["Juanes"])
    copy_identity(bank.folder, "Jon_Voight", identity_photos["Jon_Voight"])
    bank.sync()
    shutil.rmtree(bank.folder / "Juanes")
    bank.sync()
    assert [i.name for i in bank.identities()] == ["Jon_Voight"]
    assert set(bank.matcher().identities) == {"Jon_Voight"}


def test_enrol_copies_the_photo_and_stores_its_embedding(bank_factory, identity_photos) -> None:
    bank = bank_factory()
    photos = identity_photos["Martha_Burk"]
    results = bank.enrol_photos("Martha Burk", photos[:2])
    assert all(r.error is None for r in results)
    assert sorted(p.name for p in (bank.folder / "Martha Burk").iterdir()) == \
        sorted(p.name for p in photos[:2])
    assert bank.enrol_photos("Martha Burk", photos[:1])[0].already_enrolled
    # Nothing to embed on the next start: enrolment stored the embeddings.
    restarted = bank_factory()
    assert restarted.sync().embedded == []
    assert restarted.matcher().sample_count == 2


def test_enrol_refuses_a_photo_without_a_face(bank_factory, faces_dir: Path) -> None:
    bank = bank_factory()
    (result,) = bank.enrol_photos("Dog", [faces_dir / "non_faces/dogs.jpg"])
    assert result.error and "no face" in result.error
    assert not any((bank.folder / "Dog").glob("*"))


def test_rename_merge_remove_survive_a_restart(bank_factory, identity_photos) -> None:
    bank = bank_factory()
    copy_identity(bank.folder, "Tubby", identity_photos["Tubby_Smith"][:2])
    copy_identity(bank.folder, "Tubby_Smith", identity_photos["Tubby_Smith"][2:])
    copy_identity(bank.folder, "Juanes", identity_photos["Juanes"])
    bank.sync()

    bank.rename("Juanes", "Juanes Esteban")
    assert bank.merge("Tubby", "Tubby_Smith") == 2
    with pytest.raises(BankError, match="exists already"):
        bank.rename("Juanes Esteban", "Tubby_Smith")

    restarted = bank_factory()
    report = restarted.sync()
    assert report.changes == 0 and report.embedded == []
    summaries = {i.name: i.samples for i in restarted.identities()}
    assert summaries == {"Juanes Esteban": 3, "Tubby_Smith": 3}
    assert not (bank.folder / "Tubby").exists() and not (bank.folder / "Juanes").exists()

    assert restarted.remove("Juanes Esteban") == 3
    assert [i.name for i in bank_factory().identities()] == ["Tubby_Smith"]
    assert not (bank.folder / "Juanes Esteban").exists()
    with pytest.raises(BankError, match="no identity"):
        restarted.remove("Juanes Esteban")


@pytest.mark.parametrize(
    "bad",
    ["../x", "a/b", "a\\b", "..", ".hidden", "", "   ", "nul\x00byte", "tab\tname", "x" * 101,
     " padded", "semi;colon"],
)
def test_names_that_could_escape_or_confuse_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_identity_name(bad)


def test_unicode_names_are_allowed_and_normalised() -> None:
    assert validate_identity_name("Zoë O'Brien-Núñez Jr.") == "Zoë O'Brien-Núñez Jr."
    decomposed = "Zoe\u0308"  # e + combining diaeresis
    assert validate_identity_name(decomposed) == "Zo\u00eb"
    assert validate_identity_name("李小龍 2") == "李小龍 2"


def test_enrol_with_a_bad_name_creates_nothing(bank_factory, identity_photos) -> None:
    bank = bank_factory()
    with pytest.raises(InvalidNameError):
        bank.enrol_photos("../escaped", identity_photos["Juanes"][:1])
    assert not (bank.folder.parent / "escaped").exists()
    assert [p.name for p in bank.folder.iterdir()] == [DATABASE_NAME] or all(
        p.name.startswith(DATABASE_NAME) for p in bank.folder.iterdir())


def test_the_database_uses_wal(bank_factory) -> None:
    bank = bank_factory()
    with sqlite3.connect(bank.folder / DATABASE_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_facenet_only_bank_is_re_embedded_once_for_the_default_model(
        tmp_path: Path, identity_photos, pipeline, facenet_pipeline) -> None:
    """A bank built with FaceNet alone (the old default) is embedded again, once, when the
    default (fused) model first opens it, with progress; the FaceNet vectors stay for a
    switch back, and nothing is embedded twice."""
    from faceid_tui.bank.identity_bank import IdentityBank

    folder = tmp_path / "id_bank"
    for name in ("George_Clooney", "Juanes", "Martha_Burk"):
        copy_identity(folder, name, identity_photos[name][:2])
    old = IdentityBank(folder, facenet_pipeline)
    assert len(old.sync().embedded) == 6
    old.close()

    bank = IdentityBank(folder, pipeline)
    progress: list[tuple[int, int]] = []
    report = bank.sync(progress=lambda done, total: progress.append((done, total)))
    assert len(report.embedded) == 6 and progress[-1] == (6, 6)
    assert pipeline.model_id != facenet_pipeline.model_id
    names, _paths, matrix = bank.store.samples(pipeline.model_id)
    assert matrix.shape == (6, 640) and sorted(set(names)) == ["George_Clooney", "Juanes",
                                                                "Martha_Burk"]
    held_back = next(pipeline.run([identity_photos["Juanes"][-1]]))
    match = bank.matcher().match_photo(np.stack([held_back.largest_face().embedding]))[0]
    assert match.name == "Juanes"
    assert bank.sync().embedded == []  # once only
    bank.close()
    reopened = IdentityBank(folder, facenet_pipeline)  # and back: nothing to embed
    assert reopened.sync().embedded == []
    reopened.close()
