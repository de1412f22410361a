"""Modal screens: naming a face (with suggestions from the bank), a line of text (a search, a
path), and confirming a step."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label

from faceid_tui.bank.names import validate_identity_name
from faceid_tui.errors import InvalidNameError


class NameScreen(ModalScreen[str | None]):
    """Asks for an identity name; returns it validated, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, names: list[str], initial: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.names = names
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Input(value=self.initial, placeholder="name (→ completes a known name)",
                        suggester=SuggestFromList(self.names, case_sensitive=False),
                        id="name-input")
            yield Label("enter: save · esc: cancel", id="dialog-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            name = validate_identity_name(event.value)
        except InvalidNameError as exc:
            self.query_one("#dialog-error", Label).update(f"[b red]{exc}[/]")
            return
        # A known name typed in another case means that identity.
        for known in self.names:
            if known.casefold() == name.casefold():
                name = known
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[str | None]):
    """Asks for one line of text (completing from ``suggestions``); None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, initial: str = "", suggestions: list[str] | None = None,
                 placeholder: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.initial = initial
        self.suggestions = suggestions or []
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Input(value=self.initial, placeholder=self.placeholder,
                        suggester=SuggestFromList(self.suggestions, case_sensitive=False)
                        if self.suggestions else None, id="text-input")
            yield Label("enter: done · esc: cancel", id="dialog-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question for destructive steps."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question, id="dialog-title")
            yield Label("y: yes · n / esc: no", id="dialog-error")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
