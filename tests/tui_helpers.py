"""Helpers for driving the triage app in tests."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from textual.pilot import Pilot

from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.ledger import LEDGER_NAME, Ledger
from faceid_tui.triage.session import TriagePaths, TriageSession


def make_session(root: Path, pipeline: Pipeline) -> TriageSession:
    bank = IdentityBank(root / "id_bank", pipeline)
    ledger = Ledger(root / "id_bank" / LEDGER_NAME)
    return TriageSession(pipeline, bank, ledger, TriagePaths(root / "inbox", root / "out"))


def seed_bank(root: Path, identity_photos: dict[str, list[Path]], *names: str) -> None:
    for name in names:
        folder = root / "id_bank" / name
        folder.mkdir(parents=True, exist_ok=True)
        for photo in identity_photos[name]:
            shutil.copy2(photo, folder / photo.name)


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            app = pilot.app
            failed = [f"{w.name}: {w.error!r}" for w in app.workers if w.error]
            raise AssertionError(
                "the app did not reach the expected state in time (models: "
                f"{getattr(app, 'model_state', '?')}; photos: "
                f"{getattr(getattr(app, 'session', None), 'counts', dict)()}; "
                f"failed workers: {failed or 'none'})")
        await pilot.pause(0.1)
    await pilot.pause(0.2)


class EmbedCounter:
    """Counts faces sent to the embedder (to prove that a step embeds nothing)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.embedder = pipeline.embedder
        self.original = self.embedder.embed
        self.faces = 0

    def __enter__(self) -> EmbedCounter:
        def counting(chips: np.ndarray) -> np.ndarray:
            self.faces += len(chips)
            return self.original(chips)

        self.embedder.embed = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.embedder.embed = self.original  # type: ignore[method-assign]
