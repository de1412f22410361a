"""The layout both screens share: status line, two stacked tables, a preview pane, footer;
with `tab` to switch tables and `j`/`k` to move in the focused one."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Header, Static

from faceid_tui.tui.host import TriageHost
from faceid_tui.tui.key_footer import KeyFooter
from faceid_tui.tui.preview import FacePreview


class TwoTableScreen(Screen[None]):
    TOP: ClassVar[tuple[str, str]] = ("top", "Top")  # (id, border title)
    BOTTOM: ClassVar[tuple[str, str]] = ("bottom", "Bottom")

    BINDINGS = [
        Binding("tab", "switch_table", "Switch list", show=False),
        Binding("j", "cursor(1)", "Down", show=False),
        Binding("k", "cursor(-1)", "Up", show=False),
    ]

    app: TriageHost

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="status")
        yield from self.compose_above_tables()
        with Horizontal(id="main"):
            with Vertical(id="tables"):
                for table_id, title in (self.TOP, self.BOTTOM):
                    table = self.make_table(table_id)
                    table.border_title = title
                    yield table
            yield FacePreview(self.app.images, id="preview")
        yield KeyFooter(compact=True)  # every key shown fits 80 columns

    def compose_above_tables(self) -> ComposeResult:
        """Rows a screen adds between the status line and the tables (none here)."""
        yield from ()

    def make_table(self, table_id: str) -> Widget:
        """The widget of one list: a DataTable unless a screen needs another (a long list)."""
        return DataTable(id=table_id, cursor_type="row", zebra_stripes=True)

    def table(self, table_id: str) -> Widget:
        return self.query_one(f"#{table_id}")

    def action_switch_table(self) -> None:
        top, bottom = self.TOP[0], self.BOTTOM[0]
        target = bottom if self.focused is not None and self.focused.id == top else top
        self.table(target).focus()

    def action_cursor(self, step: int) -> None:
        focused = self.focused
        table = focused if hasattr(focused, "action_cursor_down") else self.table(self.TOP[0])
        if step > 0:
            table.action_cursor_down()
        else:
            table.action_cursor_up()
