"""The triage session and inbox rules without a terminal: intake, processing, decisions,
enrolment of crops, output files, and the bank journal's undo."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from faceid_tui.bank.journal import BankJournal
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.inbox import ArrivalTracker, existing_photos, is_inbox_photo
from faceid_tui.triage.ledger import LEDGER_NAME

from .tui_helpers import make_session, seed_bank


def test_inbox_rules_skip_hidden_partial_and_escaping_files(tmp_path: Path,
                                                            faces_dir: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    (inbox / ".hidden").mkdir()
    photo = faces_dir / "identities/Juanes/Juanes_0001.jpg"
    for name in ("a.jpg", "sub/b.JPG", ".hidden/c.jpg", ".d.jpg", "e.jpg.part", "f.jpg~",
                 "notes.txt", ".DS_Store"):
        shutil.copy2(photo, inbox / name)
    (inbox / "inside-link.jpg").symlink_to(inbox / "a.jpg")
    (inbox / "outside-link.jpg").symlink_to(photo)
    found = sorted(str(p.relative_to(inbox)) for p in existing_photos(inbox))
    assert found == ["a.jpg", "inside-link.jpg", "sub/b.JPG"]
    assert not is_inbox_photo(photo, inbox)


def test_arrival_tracker_waits_until_a_file_stops_changing(tmp_path: Path) -> None:
    now = [0.0]
    tracker = ArrivalTracker(stable_for=0.5, clock=lambda: now[0])
    growing, vanishing = tmp_path / "growing.jpg", tmp_path / "gone.jpg"
    growing.write_bytes(b"x" * 10)
    vanishing.write_bytes(b"y")
    for path in (growing, growing, vanishing):  # several events for one file count once
        tracker.touch(path)
    assert tracker.ready() == [] and len(tracker) == 2
    vanishing.unlink()
    now[0] = 0.3
    with open(growing, "ab") as handle:
        handle.write(b"more")  # still being written
    assert tracker.ready() == [] and len(tracker) == 1
    now[0] = 0.6
    assert tracker.ready() == []  # changed 0.3 s ago
    now[0] = 1.2
    assert tracker.ready() == [growing] and len(tracker) == 0


def test_processing_errors_duplicates_and_vanished_files(tmp_path: Path, pipeline: Pipeline,
                                                         identity_photos) -> None:
    session = make_session(tmp_path, pipeline)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(identity_photos["Juanes"][0], inbox / "one.jpg")
    shutil.copy2(identity_photos["Juanes"][0], inbox / "same-content.jpg")
    shutil.copy2(identity_photos["Juanes"][1], inbox / "goes-away.jpg")
    (inbox / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    registered = [session.register(p) for p in sorted(inbox.iterdir())]
    assert sum(sha is not None for sha in registered) == 3  # the duplicate is one photo
    (inbox / "goes-away.jpg").unlink()
    session.process(session.queued())
    photos = {Path(p.path).name: p for p in session.photos()}
    assert set(photos) == {"bad.jpg", "one.jpg"}  # the vanished file was dropped quietly
    assert photos["bad.jpg"].state == "error" and photos["bad.jpg"].error
    assert photos["one.jpg"].state == "to review"
    session.close()
    with sqlite3.connect(tmp_path / "id_bank" / LEDGER_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM photo_paths").fetchone()[0] == 3


def test_a_burst_of_arrivals_is_registered_in_one_transaction(tmp_path: Path,
                                                               pipeline: Pipeline,
                                                               identity_photos) -> None:
    session = make_session(tmp_path, pipeline)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    photos = [photo for name in ("Juanes", "George_Clooney")
              for photo in identity_photos[name][:3]]
    for index, photo in enumerate(photos):
        shutil.copy2(photo, inbox / f"{index}.jpg")
    shutil.copy2(photos[0], inbox / "same-content.jpg")
    burst = [inbox / f"{index}.jpg" for index in range(len(photos))]
    burst += [inbox / "same-content.jpg", inbox / "never-written.jpg"]
    statements: list[str] = []
    session.ledger._database.connection.set_trace_callback(statements.append)
    registered = session.register_many(burst)
    commits_for_the_burst = statements.count("COMMIT")
    statements.clear()
    # The intake asks ten times a second, mostly with nothing new: that writes nothing.
    assert session.register_many([]) == []
    assert session.register_many([inbox / "never-written.jpg"]) == [None]
    session.ledger._database.connection.set_trace_callback(None)
    assert statements == []
    assert all(registered[:len(photos)]) and len(set(registered[:len(photos)])) == len(photos)
    assert registered[len(photos):] == [None, None]  # known content; a file that is not there
    assert commits_for_the_burst == 1  # one disk sync
    assert [view.path for view in session.photos()] == [str(path) for path in burst[:-2]]
    assert session.counts() == {"queued": len(photos)}
    session.close()


def test_the_ledger_finds_the_next_photo_and_its_paths_by_index(tmp_path: Path) -> None:
    """A drop of 10,000 photos must not scan the table once per photo."""
    from faceid_tui.triage.ledger import Ledger

    ledger = Ledger(tmp_path / LEDGER_NAME)
    plans = {sql: " ".join(row[3] for row in ledger._database.connection.execute(
        f"EXPLAIN QUERY PLAN {sql}", parameters))
        for sql, parameters in (("SELECT COALESCE(MAX(seq), 0) + 1 FROM photos", ()),
                                ("SELECT path FROM photo_paths WHERE sha256=?", ("x",)))}
    ledger.close()
    assert all("INDEX" in plan for plan in plans.values()), plans


def test_naming_a_face_in_a_group_photo_enrols_a_detectable_crop(tmp_path: Path,
                                                                 pipeline: Pipeline,
                                                                 faces_dir: Path) -> None:
    session = make_session(tmp_path, pipeline)
    (tmp_path / "inbox").mkdir()
    group = tmp_path / "inbox/group.jpg"
    shutil.copy2(faces_dir / "group_photos/2008_001322.jpg", group)
    session.register(group)
    session.process(session.queued())
    sha = session.photos()[0].sha256
    faces = session.faces(sha)
    assert len(faces) == 3
    session.name_face(faces[1].face_id, "Someone")
    (crop,) = (tmp_path / "id_bank/Someone").iterdir()
    assert crop.name == "group-face2.jpg"
    # The crop holds the face with margin, so a later sync finds it again.
    found = pipeline.find_faces(load_rgb(crop))
    assert len(found) == 1
    report = session.bank.sync()
    assert report.embedded == []  # its embedding was stored with it
    assert session.faces(sha)[1].status == "confirmed"


def test_finished_photos_get_annotated_copies_and_can_move(tmp_path: Path, pipeline: Pipeline,
                                                           identity_photos) -> None:
    seed_bank(tmp_path, identity_photos, "Juanes")
    session = make_session(tmp_path, pipeline)
    session.paths.move_done = tmp_path / "done"
    (tmp_path / "inbox/sub").mkdir(parents=True)
    photo = tmp_path / "inbox/sub/juanes.jpg"
    shutil.copy2(identity_photos["Juanes"][0], photo)
    session.start()
    session.register(photo)
    session.process(session.queued())
    sha = session.photos()[0].sha256
    (face,) = session.faces(sha)
    assert face.status == "known" and face.name == "Juanes"
    session.reject(face.face_id)
    sidecar = json.loads((tmp_path / "out/juanes.faceid.json").read_text())
    assert sidecar["faces"][0]["decision"] == "rejected" and sidecar["faces"][0]["name"] is None
    assert (tmp_path / "out/juanes.faceid.jpg").is_file()
    assert (tmp_path / "done/sub/juanes.jpg").is_file() and not photo.exists()
    assert session.undo() is not None
    assert session.faces(sha)[0].decided is False
    session.close()


def test_bank_journal_undoes_deletes_and_renames(tmp_path: Path, pipeline: Pipeline,
                                                 identity_photos) -> None:
    seed_bank(tmp_path, identity_photos, "Juanes", "Jon_Voight")
    session = make_session(tmp_path, pipeline)
    session.start()
    journal = BankJournal(session.bank)
    bank = tmp_path / "id_bank"
    sample = f"Juanes/{identity_photos['Juanes'][0].name}"
    journal.delete_sample(sample)
    assert not (bank / sample).exists()
    assert {i.name: i.samples for i in session.bank.identities()}["Juanes"] == 2
    journal.delete_identity("Jon_Voight")
    journal.rename("Juanes", "Juan Esteban")
    assert sorted(p.name for p in bank.iterdir() if not p.name.startswith(".")) == \
        ["Juan Esteban"]
    assert journal.undo() and journal.undo() and journal.undo()
    assert {i.name: i.samples for i in session.bank.identities()} == {"Jon_Voight": 3,
                                                                     "Juanes": 3}
    assert journal.undo() is None
    journal.empty_trash()
    assert not (bank / ".trash").exists()
    session.close()


def test_threshold_changes_report_changed_photos(tmp_path: Path, pipeline: Pipeline,
                                                 identity_photos) -> None:
    seed_bank(tmp_path, {"Juanes": identity_photos["Juanes"][1:]}, "Juanes")
    session = make_session(tmp_path, pipeline)
    (tmp_path / "inbox").mkdir()
    photo = tmp_path / "inbox/j.jpg"
    shutil.copy2(identity_photos["Juanes"][0], photo)
    session.start()
    session.register(photo)
    session.process(session.queued())
    sha = session.photos()[0].sha256
    score = session.faces(sha)[0].score
    assert session.set_threshold(session.threshold + 0.01) == set()
    assert session.set_threshold(score + 0.01) == {sha}
    # Above the suggestion threshold, below the open-set one: the name stays, as "likely";
    # `a` (confirm every known face) leaves it, enter (confirm this face) takes it.
    face = session.faces(sha)[0]
    assert (face.name, face.status) == ("Juanes", "likely")
    assert score >= session.matcher.likely_threshold
    assert session.confirm_all_known(sha) == 0
    session.confirm(face.face_id)
    assert session.faces(sha)[0].status == "confirmed"
    session.close()


def test_photos_embedded_by_another_model_are_processed_again(tmp_path: Path,
                                                              pipeline: Pipeline,
                                                              identity_photos) -> None:
    session = make_session(tmp_path, pipeline)
    (tmp_path / "inbox").mkdir()
    photo = tmp_path / "inbox/j.jpg"
    shutil.copy2(identity_photos["Juanes"][0], photo)
    session.register(photo)
    session.process(session.queued())
    sha = session.photos()[0].sha256
    with session.ledger.transaction():  # as if an earlier embedder had made these
        session.ledger._db.execute("UPDATE faces SET model_id='old-model'")
    session.start()
    assert [p.sha256 for p in session.queued()] == [sha]
    session.process(session.queued())
    assert session.ledger.faces(sha)[0].model_id == pipeline.model_id
    assert session.photos()[0].state == "to review"
    session.close()
