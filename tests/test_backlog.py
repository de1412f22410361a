"""The app at backlog scale, driven with Pilot on real photos: a drop of a few hundred photos
goes through the pipelined path (detect processes) once each, the list's filters and the
jump to the next open face work while it drains, a decision made meanwhile is kept, and
quitting mid-stream loses nothing stored: a restart carries on with the rest."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.ledger import QUEUED, REVIEW, REVIEWED
from faceid_tui.triage.photo_list import ListSettings
from faceid_tui.triage.session import TriageSession
from faceid_tui.tui.app import FaceIdApp

from .tui_helpers import make_session, seed_bank, wait_for

#: Variants of each identity photo: distinct files (and hashes) of the same real faces.
VARIANTS = ("as is", "mirrored", "cropped")


def drop_variants(identity_photos: dict[str, list[Path]], inbox: Path) -> list[Path]:
    """Write every identity photo three ways into ``inbox``: ~200 distinct real photos."""
    inbox.mkdir(parents=True, exist_ok=True)
    written = []
    for name, photos in sorted(identity_photos.items()):
        for photo in photos:
            image = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
            image.thumbnail((400, 400))  # the big ones would only slow the test
            for number, variant in enumerate(VARIANTS):
                if variant == "mirrored":
                    shown = ImageOps.mirror(image)
                elif variant == "cropped":
                    w, h = image.size
                    shown = image.crop((w // 25, h // 25, w - w // 25, h - h // 25))
                else:
                    shown = image
                target = inbox / f"{name}-{photo.stem}-{number}.jpg"
                shown.save(target, quality=92)
                written.append(target)
    return written


class StoreCounter:
    """Counts how often the session stores each photo's result."""

    def __init__(self, session: TriageSession) -> None:
        self.counts: Counter[str] = Counter()
        original = session._store

        def counting(sha, result, **options):
            self.counts[sha] += 1
            return original(sha, result, **options)

        session._store = counting  # type: ignore[method-assign]


def open_photos(app: FaceIdApp) -> int:
    counts = app.session.counts()
    return counts.get(QUEUED, 0) + counts.get("processing", 0)


@pytest.fixture
def dropped(tmp_path: Path, identity_photos) -> list[Path]:
    seed_bank(tmp_path, identity_photos, "Juanes", "Jon_Voight", "Martha_Burk")
    return drop_variants(identity_photos, tmp_path / "inbox")


async def test_a_drop_of_a_few_hundred_photos_streams_through_the_detect_processes(
        tmp_path: Path, pipeline: Pipeline, dropped: list[Path]) -> None:
    session = make_session(tmp_path, pipeline)
    stored = StoreCounter(session)
    before = pipeline.worker_photos
    app = FaceIdApp(session, images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        triage = app.triage
        queue = triage.query_one("#queue")
        # While it drains: decide a face of the first photo to review, and filter the list.
        await wait_for(pilot, lambda: app.session.counts().get(REVIEW, 0) >= 5)
        decided_sha = triage.current_sha
        assert decided_sha is not None and open_photos(app) > 0, "the drain ended too soon"
        (decided_face,) = [f for f in app.session.faces(decided_sha)][:1]
        await pilot.press("x")
        await wait_for(pilot, lambda: app.session.faces(decided_sha)[0].decided)
        await pilot.press("f")  # all → to review
        assert triage.settings.filter_key == "review"
        await wait_for(pilot, lambda: open_photos(app) == 0, timeout=300)
        await pilot.pause(0.3)

        views = app.session.photos()
        assert len(views) == len(dropped)
        assert all(view.state in (REVIEW, REVIEWED) for view in views)
        # Every photo once, and through the detect processes, not in the app's process.
        assert set(stored.counts.values()) == {1} and len(stored.counts) == len(dropped)
        assert pipeline.worker_photos - before == len(dropped)
        # The decision made mid-stream is still there.
        assert app.session.faces(decided_sha)[0].status == "rejected"
        assert app.session.faces(decided_sha)[0].face_id == decided_face.face_id
        # The filtered list holds exactly the photos to review, in arrival order.
        expected = [v.sha256 for v in ListSettings(filter_key="review").visible(views)]
        assert list(queue.keys) == expected
        assert decided_sha not in expected or app.session.photo(decided_sha).pending

        # Known people (3 identities enrolled): the "known" filter shows only photos with
        # an open known face, and the jump goes to the next undecided face across photos.
        await pilot.press("f")
        assert triage.settings.filter_key == "known"
        known_rows = list(queue.keys)
        assert known_rows and all("known" in app.session.photo(sha).pending
                                  for sha in known_rows)
        assert len(known_rows) < len(expected)
        first = triage.current_sha
        await pilot.press("space")
        assert triage.current_sha != first
        assert triage.current_sha in known_rows
        assert not triage.selected_face().decided


async def test_quitting_mid_stream_keeps_what_was_stored_and_a_restart_resumes(
        tmp_path: Path, pipeline: Pipeline, dropped: list[Path]) -> None:
    session = make_session(tmp_path, pipeline)
    first = StoreCounter(session)
    app = FaceIdApp(session, images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: sum(first.counts.values()) >= 20)
        await pilot.press("q")
    session.close()
    assert sum(first.counts.values()) < len(dropped), "the stream ended before the quit"
    stored_first = set(first.counts)

    again = make_session(tmp_path, pipeline)
    counts = again.counts()
    # Everything stored before the quit is there, the rest waits in the queue.
    assert counts.get(REVIEW, 0) + counts.get(REVIEWED, 0) >= len(stored_first)
    assert counts.get(QUEUED, 0) == len(dropped) - len(stored_first)
    second = StoreCounter(again)
    app = FaceIdApp(again, images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: open_photos(app) == 0, timeout=300)
    again.close()
    assert not stored_first & set(second.counts), "a stored photo was processed again"
    assert len(stored_first) + len(second.counts) == len(dropped)
