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
