"""Snapshot tests of the triage and bank screens at 80×24 and 120×40 (real photos).

Update after an intended change with ``pytest tests/test_snapshots.py --snapshot-update`` and
look at the SVGs in ``tests/__snapshots__/`` before committing them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.pilot import Pilot

from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.tui.app import FaceIdApp
from faceid_tui.tui.bank_screen import BankScreen

from .tui_helpers import make_session, seed_bank, wait_for


@pytest.fixture
def triage_app(tmp_path: Path, pipeline: Pipeline, identity_photos, faces_dir: Path):
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie", "Juanes")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", inbox / "1-kit_with_rose.jpg")
    shutil.copy2(identity_photos["barack_obama"][0], inbox / "2-stranger.jpg")
    (inbox / "3-broken.jpg").write_bytes(b"not a photo")
    app = FaceIdApp(make_session(tmp_path, pipeline), images="halfcell", watch=False)
    yield app
    app.session.close()


def processed(app: FaceIdApp) -> bool:
    photos = app.session.photos()
    return len(photos) == 3 and all(p.state in ("to review", "error") for p in photos)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_triage_screen(snap_compare, triage_app: FaceIdApp, size: tuple[int, int]) -> None:
    async def ready(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: processed(triage_app))
        await pilot.pause(0.5)  # the preview worker draws the photo

    assert snap_compare(triage_app, terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_bank_screen(snap_compare, triage_app: FaceIdApp, size: tuple[int, int]) -> None:
    async def open_bank(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: processed(triage_app))
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(triage_app.screen, BankScreen))
        await pilot.press("tab", "j")
        await pilot.pause(0.5)

    assert snap_compare(triage_app, terminal_size=size, run_before=open_bank)


@pytest.fixture
def empty_app(tmp_path: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch):
    """The first run: no photo in the inbox, nobody in the bank (run from the folder that
    holds them, as `make run` does, so the paths shown are short and stable)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inbox").mkdir()
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    yield app
    app.session.close()


def test_first_run_with_an_empty_bank(snap_compare, empty_app: FaceIdApp) -> None:
    async def ready(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: "FaceNet" in empty_app.model_state)

    assert snap_compare(empty_app, terminal_size=(80, 24), run_before=ready)


def test_first_run_with_people_enrolled(snap_compare, tmp_path: Path, pipeline: Pipeline,
                                        identity_photos, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    (tmp_path / "inbox").mkdir()
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)

    async def ready(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: "FaceNet" in app.model_state)

    try:
        assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
    finally:
        app.session.close()


def test_photo_list_filtered_to_errors(snap_compare, triage_app: FaceIdApp) -> None:
    async def filtered(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: processed(triage_app))
        # all → to review → known → likely/ambiguous → unknown → errors
        await pilot.press("f", "f", "f", "f", "f")
        await pilot.pause(0.5)

    assert snap_compare(triage_app, terminal_size=(80, 24), run_before=filtered)
