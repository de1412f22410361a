"""What the screens need of the app: the session, the bank journal (undo of bank edits), the
preview mode and the bank screen. The app subclasses :class:`TriageHost`; screens annotate
``app: TriageHost`` and import this module, never ``app.py`` (which imports them)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import App

from faceid_tui.bank.journal import BankJournal
from faceid_tui.triage.session import TriageSession


class TriageHost(App[None]):
    session: TriageSession
    journal: BankJournal
    #: Preview mode: auto | halfcell | unicode | none.
    images: str

    def open_bank_screen(self) -> None:
        raise NotImplementedError

    def open_people_screen(self) -> None:
        raise NotImplementedError

    def ask_name(self, title: str, names: list[str], then: Callable[[str | None], None],
                 initial: str = "") -> None:
        """Ask for an identity name in the name dialog; ``then`` gets it (None: cancelled)."""
        raise NotImplementedError
