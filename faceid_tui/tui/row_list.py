"""A table for long lists: rows are keys, their cells come from a callback and only the lines
on screen are drawn (Textual's Line API), so 10⁵ rows cost what 20 do.

Textual's ``DataTable`` keeps every cell of every row and re-measures on each change: at
10,000 rows adding them takes about a second and each update or removal tens of milliseconds
(measured here, Textual 8.2), too slow for a photo list that is rebuilt on every filter change
and updated many times a second while a queue drains. This widget holds only the order of the
keys; an update drops one row's cached cells and redraws that line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

CellsFor = Callable[[str], tuple[str, ...]]


@dataclass(frozen=True)
class Column:
    label: str
    #: Cells are cut or padded to this many characters; None: whatever the others leave.
    width: int | None


class RowList(ScrollView, can_focus=True):
    """Rows of text cells under a fixed header, one cursor row, keyboard only."""

    BINDINGS = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]
    COMPONENT_CLASSES = {"row-list--header", "row-list--cursor", "row-list--even-row"}
    DEFAULT_CSS = """
    RowList {
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .row-list--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
        }
        & > .row-list--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .row-list--even-row {
            background: $surface-lighten-1 50%;
        }
        &:dark > .row-list--even-row {
            background: $surface-darken-1 40%;
        }
        & > .row-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    class Highlighted(Message):
        """The cursor moved to another row (``key`` None: the list is empty)."""

        def __init__(self, row_list: RowList, key: str | None) -> None:
            super().__init__()
            self.row_list = row_list
            self.key = key

        @property
        def control(self) -> RowList:
            return self.row_list

    def __init__(self, columns: list[Column], cells_for: CellsFor, *, id: str | None = None,
                 padding: int = 1) -> None:
        super().__init__(id=id)
        self.columns = columns
        self.cells_for = cells_for
        self.padding = padding
        self._keys: list[str] = []
        self._index: dict[str, int] | None = {}
        self._cells: dict[str, tuple[str, ...]] = {}  # cache of what cells_for gave
        self.cursor_row = 0
        self._announced: str | None = None

    # -- rows -------------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return self._keys

    @property
    def row_count(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._positions()

    def index_of(self, key: str) -> int:
        return self._positions()[key]

    @property
    def cursor_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = {key: number for number, key in enumerate(self._keys)}
        return self._index

    def set_rows(self, keys: Iterable[str]) -> None:
        """Show these rows (in this order), keeping the cursor on its key when it stays."""
        current = self.cursor_key
        self._keys = list(keys)
        self._index = None
        self._cells.clear()
        self._resized()
        if current in self:
            self.cursor_row = self.index_of(current)
        self._clamp_and_show()

    def append(self, key: str) -> None:
        self._keys.append(key)
        if self._index is not None:
            self._index[key] = len(self._keys) - 1
        self._resized()
        if len(self._keys) == 1:
            self._clamp_and_show()
        elif len(self._keys) - self.scroll_offset.y <= self._body_height():
            self.refresh_line(len(self._keys))  # the new row is on screen (the header is line 0)

    def remove(self, key: str) -> None:
        position = self.index_of(key)
        current = self.cursor_key
        del self._keys[position]
        self._cells.pop(key, None)
        self._index = None
        self._resized()
        if current != key and current is not None:
            self.cursor_row = self.index_of(current)
        self._clamp_and_show()  # a removed cursor row passes to the next one
        self.refresh()

    def refresh_rows(self, keys: Iterable[str]) -> None:
        """Ask ``cells_for`` again for these rows, and redraw those on screen."""
        positions = self._positions()
        top = self.scroll_offset.y
        for key in keys:
            self._cells.pop(key, None)
            row = positions.get(key)
            if row is not None and top <= row < top + self._body_height():
                self.refresh_line(row + 1)  # a virtual line: the header is line 0

    def sort(self, order: Callable[[str], object]) -> None:
        self.set_rows(sorted(self._keys, key=order))

    # -- cursor -----------------------------------------------------------------------------
    def move_cursor(self, row: int) -> None:
        self.cursor_row = row
        self._clamp_and_show()

    def action_cursor_down(self) -> None:
        self.move_cursor(self.cursor_row + 1)

    def action_cursor_up(self) -> None:
        self.move_cursor(self.cursor_row - 1)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor_row + direction * max(1, self._body_height() - 1))

    def action_jump(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self._keys) - 1)

    def _clamp_and_show(self) -> None:
        self.cursor_row = max(0, min(self.cursor_row, len(self._keys) - 1))
        body = self._body_height()
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif body > 0 and self.cursor_row >= top + body:
            self.scroll_to(y=self.cursor_row - body + 1, animate=False, immediate=True)
        self.refresh()
        key = self.cursor_key
        if key != self._announced:
            self._announced = key
            self.post_message(self.Highlighted(self, key))

    # -- drawing ----------------------------------------------------------------------------
    def _body_height(self) -> int:
        return max(0, self.scrollable_content_region.height - 1)

    def _resized(self) -> None:
        size = Size(self.scrollable_content_region.width, len(self._keys) + 1)
        if size == self.virtual_size:
            return
        if not self.is_mounted or size.width != self.virtual_size.width:
            self.virtual_size = size  # a layout of the screen
            return
        # Rows came or went: nothing around the list moves, so no layout of the whole screen
        # (a drain appends many rows a second, and each layout cost the keyboard 10-40 ms on
        # a busy machine). The scrollbars follow here; should one appear or vanish,
        # ``_scroll_update`` asks for the layout that needs.
        self.set_reactive(RowList.virtual_size, size)
        self._scroll_update(size)

    def on_resize(self) -> None:
        self._resized()
        self._clamp_and_show()

    def column_widths(self) -> list[int]:
        """Each column's width in characters now (the open one takes what the others leave)."""
        return self._widths(self.scrollable_content_region.width)

    def _widths(self, total: int) -> list[int]:
        fixed = sum(c.width or 0 for c in self.columns) + 2 * self.padding * len(self.columns)
        rest = max(1, total - fixed)
        return [c.width if c.width is not None else rest for c in self.columns]

    def _line(self, cells: tuple[str, ...], width: int, style: Style) -> Strip:
        pad = " " * self.padding
        text = "".join(pad + cell[:w].ljust(w) + pad
                       for cell, w in zip(cells, self._widths(width), strict=False))
        return Strip([Segment(text[:width].ljust(width), style)], width)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("row-list--header")
            return self._line(tuple(c.label for c in self.columns), width, header)
        row = self.scroll_offset.y + y - 1
        if row >= len(self._keys):
            return Strip.blank(width, base)
        key = self._keys[row]
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = self.cells_for(key)
        style = base
        if row % 2:
            style += self.get_component_rich_style("row-list--even-row")
        if row == self.cursor_row:
            style += self.get_component_rich_style("row-list--cursor")
        return self._line(cells, width, style)

    def get_cell(self, key: str, column: int) -> str:
        """What a row shows in one column (for tests and callers that read the list)."""
        return self.cells_for(key)[column]
