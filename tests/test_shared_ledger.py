"""Stations working one inbox on one shared bank (a real PostgreSQL from pgserver): claims with
leases, take-over of a dead station's photos, decisions with station and operator, undo per
station, and the bank screen's journal on a shared bank."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from faceid_tui.bank.journal import BankJournal
from faceid_tui.bank.shared_bank import SharedBank
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.ledger import LEDGER_NAME, Ledger
from faceid_tui.triage.session import TriagePaths, TriageSession
from faceid_tui.triage.shared_ledger import SharedLedger


def station_session(root: Path, url: str, pipeline: Pipeline, station: str, inbox: Path,
                    lease_s: float = 60.0) -> TriageSession:
    """The app's session code for one station: its own ledger folder, the shared bank."""
    ledger = Ledger(root / station / LEDGER_NAME)
    ledger.shared = SharedLedger(url, station=station, operator=f"{station}-user",
                                 lease_s=lease_s, heartbeat=False)
    return TriageSession(pipeline, SharedBank(url, pipeline), ledger,
                         TriagePaths(inbox, root / station / "out"))


def test_a_claimed_photo_is_not_handed_to_a_second_station(postgres_url: str) -> None:
    first = SharedLedger(postgres_url, station="a", lease_s=0.5, heartbeat=False)
    second = SharedLedger(postgres_url, station="b", lease_s=0.5, heartbeat=False)
    assert first.claim("sha-1", "/inbox/1.jpg")
    assert not second.claim("sha-1", "/inbox/1.jpg")
    assert first.claim("sha-1", "/inbox/1.jpg")  # its own claim, again
    first.renew()
    assert second.take_abandoned() == []
    time.sleep(1.0)  # the lease runs out: station a stopped
    assert second.take_abandoned() == [("sha-1", "/inbox/1.jpg")]
    assert second.holder("sha-1") == "b" and not first.claim("sha-1", "/inbox/1.jpg")
    second.finish("sha-1")
    time.sleep(1.0)
    assert first.take_abandoned() == [] and not first.claim("sha-1", "/inbox/1.jpg")
    first.close()
    second.close()


def test_two_stations_taking_over_at_once_never_share_a_photo(postgres_url: str) -> None:
    dead = SharedLedger(postgres_url, station="dead", lease_s=0.2, heartbeat=False)
    for number in range(300):
        assert dead.claim(f"sha-{number}", f"/inbox/{number}.jpg")
    dead.close()
    time.sleep(0.5)
    stations = [SharedLedger(postgres_url, station=name, heartbeat=False) for name in "xy"]
    taken: dict[str, list[str]] = {"x": [], "y": []}

    def take(ledger: SharedLedger) -> None:
        while batch := ledger.take_abandoned(limit=7):
            taken[ledger.station] += [sha for sha, _ in batch]

    threads = [threading.Thread(target=take, args=(ledger,)) for ledger in stations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not set(taken["x"]) & set(taken["y"])
    assert sorted(taken["x"] + taken["y"]) == sorted(f"sha-{n}" for n in range(300))
    assert taken["x"] and taken["y"]  # both worked
    for ledger in stations:
        ledger.close()


def test_two_stations_on_one_inbox(postgres_url: str, pipeline: Pipeline, identity_photos,
                                   tmp_path: Path) -> None:
    inbox = tmp_path / "shared_inbox"
    inbox.mkdir()
    photos = [shutil.copy2(p, inbox / p.name) for p in identity_photos["Juanes"][:2]]
    desk_a = station_session(tmp_path, postgres_url, pipeline, "desk-a", inbox)
    desk_b = station_session(tmp_path, postgres_url, pipeline, "desk-b", inbox, lease_s=1.0)
    desk_a.start()
    desk_b.start()
    # Both watch the same folder: each photo goes to whichever registers it first.
    assert desk_b.register(Path(photos[0])) is not None
    assert desk_a.register(Path(photos[0])) is None
    assert desk_a.register(Path(photos[1])) is not None
    assert desk_b.register(Path(photos[1])) is None
    desk_a.process(desk_a.queued())
    desk_b.process(desk_b.queued())
    (sha_a,) = [view.sha256 for view in desk_a.photos()]
    (face,) = desk_a.faces(sha_a)
    desk_a.name_face(face.face_id, "Juanes")
    # Desk b's bank has the identity desk a enrolled, and its face now matches it.
    desk_b.bank_changed()
    (sha_b,) = [view.sha256 for view in desk_b.photos()]
    (other,) = desk_b.faces(sha_b)
    assert other.name == "Juanes"
    desk_b.reject(other.face_id)
    shared = desk_a.ledger.shared
    assert shared is not None
    decisions = shared.decisions()
    assert [(d.sha256, d.decision, d.name, d.station, d.operator, d.undone)
            for d in decisions] == [
        (sha_a, "confirmed", "Juanes", "desk-a", "desk-a-user", False),
        (sha_b, "rejected", None, "desk-b", "desk-b-user", False)]
    assert shared.holder(sha_a) == "desk-a"
    # Undo is per station: desk a's undo takes back its own decision, not desk b's later one.
    assert desk_a.undo() is not None
    assert [d.undone for d in shared.decisions()] == [True, False]
    # The name had created the identity: undoing it takes the identity back out of the bank.
    assert "Juanes" not in desk_a.bank.store.identity_names()
    desk_a.close()
    desk_b.close()


def test_a_dead_stations_photos_are_taken_over(postgres_url: str, pipeline: Pipeline,
                                               identity_photos, tmp_path: Path) -> None:
    inbox = tmp_path / "shared_inbox"
    inbox.mkdir()
    photo = Path(shutil.copy2(identity_photos["Jon_Voight"][0], inbox / "voight.jpg"))
    dying = station_session(tmp_path, postgres_url, pipeline, "dying", inbox, lease_s=0.5)
    dying.start()
    assert dying.register(photo) is not None
    dying.close()  # it stops before deciding anything, and its heartbeat with it
    taker = station_session(tmp_path, postgres_url, pipeline, "taker", inbox)
    taker.start()
    assert taker.register(photo) is None  # still claimed
    time.sleep(1.0)
    (sha,) = taker.take_abandoned()
    taker.process(taker.queued())
    assert [view.sha256 for view in taker.photos()] == [sha]
    # When the first station comes back, the photo has left its list.
    back = station_session(tmp_path, postgres_url, pipeline, "dying", inbox)
    back.start()
    assert back.photos() == []
    back.close()
    taker.close()


def test_the_journal_undoes_deletes_on_a_shared_bank(postgres_url: str, pipeline: Pipeline,
                                                     identity_photos) -> None:
    bank = SharedBank(postgres_url, pipeline)
    bank.enrol_photos("Juanes", identity_photos["Juanes"])
    bank.enrol_photos("Jon Voight", identity_photos["Jon_Voight"])
    journal = BankJournal(bank)
    sample = bank.identity_photos("Juanes")[0].rel_path
    journal.delete_sample(sample)
    assert {i.name: i.samples for i in bank.identities()} == {"Jon Voight": 3, "Juanes": 2}
    journal.delete_identity("Jon Voight")
    bank.enrol_photos("Juan", identity_photos["Juanes"][:1])
    assert journal.merge("Juanes", "Juan") == 2
    assert [i.name for i in bank.identities()] == ["Juan"]
    assert journal.undo() and journal.undo() and journal.undo()
    assert {i.name: i.samples for i in bank.identities()} == {"Jon Voight": 3, "Juan": 1,
                                                              "Juanes": 3}
    assert journal.undo() is None
    assert bank.sync().embedded == []  # undo stored the embeddings back with the images
    bank.close()


async def test_the_app_on_a_shared_bank_hears_another_station(postgres_url: str,
                                                              pipeline: Pipeline,
                                                              identity_photos,
                                                              tmp_path: Path) -> None:
    from faceid_tui.tui.app import FaceIdApp

    from .test_tui import states
    from .tui_helpers import wait_for

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    voight = identity_photos["Jon_Voight"]
    shutil.copy2(identity_photos["Juanes"][0], inbox / "a.jpg")
    shutil.copy2(voight[0], inbox / "c.jpg")
    app = FaceIdApp(station_session(tmp_path, postgres_url, pipeline, "desk", inbox),
                    images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: [s for s, _ in states(app).values()] == ["to review"] * 2)
        assert app.sub_title.endswith("(PostgreSQL)") and "postgresql://" not in app.sub_title
        app.triage.current_sha = next(v.sha256 for v in app.session.photos()
                                      if v.path.endswith("a.jpg"))
        app.triage.refresh_tables()
        await pilot.press("n", *"Juanes", "enter")
        await wait_for(pilot, lambda: states(app)["a.jpg"][0] == "reviewed")
        # Another station enrols Jon Voight: this one's pending face gets the name unasked.
        elsewhere = SharedBank(postgres_url, pipeline)
        assert elsewhere.store.identity_names() == ["Juanes"]
        elsewhere.enrol_photos("Jon Voight", voight[1:])
        await wait_for(pilot, lambda: states(app)["c.jpg"][1] == ("Jon Voight",), timeout=30)
        elsewhere.close()
