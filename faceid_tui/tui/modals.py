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
    """Asks for an identity name; returns it validated, or None when cancelled.

    The app keeps one installed instance and :meth:`ask` sets it up for each question (see
    ``FaceIdApp.ask_name``): building and tearing down the dialog's widgets on every name took
    the keyboard's thread 70-150 ms per face while a queue drained.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    HINT = "enter: save · esc: cancel"

    def __init__(self, title: str = "Name", names: list[str] | None = None,
                 initial: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.names = names or []
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="dialog-title")
            yield Input(value=self.initial, placeholder="name (→ completes a known name)",
                        suggester=SuggestFromList(self.names, case_sensitive=False),
                        id="name-input")
            yield Label(self.HINT, id="dialog-error")

    def ask(self, title: str, names: list[str], initial: str = "") -> None:
        """Set up the next question (before the screen is pushed again)."""
        self.title_text, self.names, self.initial = title, names, initial
        if not self.is_mounted:
            return  # compose reads them
        self.query_one("#dialog-title", Label).update(title)
        self.query_one("#dialog-error", Label).update(self.HINT)
        field = self.query_one("#name-input", Input)
        field.suggester = SuggestFromList(names, case_sensitive=False)
        field.value = initial
        field.select_all()  # typing replaces the suggested name, as in a new dialog
        self.set_focus(field)

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
