"""The bank screen: identities with their samples and thumbnails; rename, merge, delete a
sample or an identity (each destructive step confirmed, every step undoable with z)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from PIL import Image as PILImage
from textual import on, work
from textual.binding import Binding
from textual.widgets import DataTable, Static

from faceid_tui.engine.decode import load_rgb
from faceid_tui.errors import FaceIdError
from faceid_tui.tui.messages import DecisionsChanged, WorkerFailed
from faceid_tui.tui.modals import ConfirmScreen
from faceid_tui.tui.preview import FacePreview
from faceid_tui.tui.two_tables import TwoTableScreen


class BankScreen(TwoTableScreen):
    TOP = ("identities", "Identities")
    BOTTOM = ("samples", "Samples")

    BINDINGS = [
        Binding("r", "rename", "Rename"),
        Binding("m", "merge", "Merge"),
        Binding("d", "delete_sample", "Del sample"),
        Binding("D", "delete_identity", "Del id"),
        Binding("z", "undo", "Undo"),
        Binding("escape,b", "app.pop_screen", "Back"),
        Binding("question_mark", "app.show_help_panel", "Keys"),
        Binding("q", "app.quit", "Quit"),
    ]


    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None
        self._samples: list[str] = []

    def on_mount(self) -> None:
        self.query_one("#identities", DataTable).add_columns("name", "samples", "seen in",
                                                             "last seen")
        self.query_one("#samples", DataTable).add_columns("sample")
        self.query_one("#identities", DataTable).focus()
        self.refresh_tables()

    def refresh_tables(self) -> None:
        session = self.app.session
        activity = session.ledger.identity_activity()
        table = self.query_one("#identities", DataTable)
        table.clear()
        names = []
        for identity in session.bank.identities():
            seen, last = activity.get(identity.name, (0, None))
            when = dt.datetime.fromtimestamp(last).strftime("%Y-%m-%d") if last else "-"
            table.add_row(identity.name, str(identity.samples), str(seen), when,
                          key=identity.name)
            names.append(identity.name)
        edits = len(self.app.journal.entries)
        self.query_one("#status", Static).update(
            f"bank: {len(names)} identities · {edits} edit(s) undoable with z")
        if names:
            if self.current not in names:
                self.current = names[0]
            table.move_cursor(row=names.index(self.current), animate=False)
        else:
            self.current = None
        self.refresh_samples()

    def refresh_samples(self) -> None:
        table = self.query_one("#samples", DataTable)
        table.clear()
        records = self.app.session.bank.identity_photos(self.current) if self.current else []
        self._samples = [record.rel_path for record in records]
        for rel_path in self._samples:
            table.add_row(rel_path.split("/", 1)[1], key=rel_path)
        table.border_title = f"Samples · {self.current or '-'}"
        self.load_thumbnail()

    @on(DataTable.RowHighlighted, "#identities")
    def identity_highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value if event.row_key else None
        if name and name != self.current:
            self.current = name
            self.refresh_samples()

    @on(DataTable.RowHighlighted, "#samples")
    def sample_highlighted(self) -> None:
        self.load_thumbnail()

    def selected_sample(self) -> str | None:
        row = self.query_one("#samples", DataTable).cursor_row
        return self._samples[row] if 0 <= row < len(self._samples) else None

    @work(thread=True, exclusive=True, group="thumbnail", exit_on_error=False)
    def load_thumbnail(self) -> None:
        rel_path = self.selected_sample()
        thumbnail = None
        if rel_path:
            try:
                image = load_rgb(self.app.session.bank.sample_image(rel_path))
                thumbnail = PILImage.fromarray(image)
                thumbnail.thumbnail((320, 320))
            except (FaceIdError, OSError):  # removed meanwhile, or damaged
                thumbnail = None
        self.app.call_from_thread(self.query_one(FacePreview).show, thumbnail, None)

    # -- edits ------------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="bank-edits")
    def run_edit(self, edit: Callable[[], str]) -> None:
        try:
            note = edit()
        except (FaceIdError, OSError) as exc:
            self.app.post_message(WorkerFailed(str(exc)))
            return
        self.app.session.bank_changed()
        self.app.post_message(DecisionsChanged(note))

    def _ask(self, question: str, then: Callable[[], None]) -> None:
        self.app.push_screen(ConfirmScreen(question), lambda yes: then() if yes else None)

    def action_rename(self) -> None:
        old = self.current
        if old is None:
            return
        journal = self.app.journal

        def renamed(new: str | None) -> None:
            if new and new != old:
                def edit() -> str:
                    journal.rename(old, new)
                    self.current = new
                    return f"renamed {old} → {new}"
                self.run_edit(edit)

        self.app.ask_name(f"Rename {old} to", [], renamed, old)

    def action_merge(self) -> None:
        source = self.current
        if source is None:
            return
        names = [n for n in self.app.session.identity_names() if n != source]
        journal = self.app.journal

        def chosen(target: str | None) -> None:
            if not target or target == source:
                return
            if target not in names:
                self.notify(f"no identity named {target}", severity="error")
                return

            def edit() -> str:
                moved = journal.merge(source, target)
                self.current = target
                return f"merged {source} into {target} ({moved} samples)"

            self._ask(f"Merge {source} into {target}?", lambda: self.run_edit(edit))

        self.app.ask_name(f"Merge {source} into", names, chosen)

    def action_delete_sample(self) -> None:
        rel_path = self.selected_sample()
        if rel_path:
            journal = self.app.journal
            self._ask(f"Delete sample {rel_path}?", lambda: self.run_edit(
                lambda: journal.delete_sample(rel_path) or f"deleted {rel_path}"))

    def action_delete_identity(self) -> None:
        name = self.current
        if name:
            journal = self.app.journal
            self._ask(f"Delete identity {name} and all its samples?", lambda: self.run_edit(
                lambda: journal.delete_identity(name) or f"deleted identity {name}"))

    def action_undo(self) -> None:
        journal = self.app.journal
        self.run_edit(lambda: journal.undo() or "nothing to undo")
