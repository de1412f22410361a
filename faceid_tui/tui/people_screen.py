"""The "people to name" screen: groups of undecided faces that are probably one person, the
faces of the selected group, and a sheet of their thumbnails. One key names a whole group
(its most typical faces are enrolled, every face is confirmed), takes a face out, merges two
groups, adds a group to its best identity in the bank or rejects it; z undoes any of them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image as PILImage
from textual import on, work
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from faceid_tui.engine.alignment import crop_with_margin
from faceid_tui.engine.annotation import contact_sheet
from faceid_tui.engine.decode import load_rgb
from faceid_tui.errors import FaceIdError
from faceid_tui.triage.clustering import ClusterError
from faceid_tui.triage.people import GroupFace, GroupView, group_cells
from faceid_tui.triage.photo_list import ellipsize_middle
from faceid_tui.tui.messages import DecisionsChanged, WorkerFailed
from faceid_tui.tui.preview import FacePreview
from faceid_tui.tui.row_list import Column, RowList
from faceid_tui.tui.two_tables import TwoTableScreen

#: Faces shown on the thumbnail sheet (the most typical first; the list has them all).
SHEET_FACES = 12
SHEET_CELL = 96


class PeopleScreen(TwoTableScreen):
    TOP = ("groups", "People to name")
    BOTTOM = ("group-faces", "Faces")

    BINDINGS = [
        Binding("n", "name", "Name", tooltip="Name the group (enrols its most typical faces)"),
        Binding("enter", "join_best", "Join best", priority=True,
                tooltip="Add the group to its best identity in the bank"),
        Binding("x", "take_out", "Take out", tooltip="Take the selected face out of the group"),
        Binding("m", "merge", "Merge", tooltip="Mark a group, then m on another: one person"),
        Binding("r", "reject", "Reject", tooltip="Reject every face of the group"),
        Binding("z", "undo", "Undo", tooltip="Undo the last decision or group change"),
        Binding("escape,p", "app.pop_screen", "Back"),
        Binding("question_mark", "app.show_help_panel", "Keys", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._views: dict[str, GroupView] = {}
        self._faces: list[GroupFace] = []
        self.current: str | None = None
        self.marked: str | None = None  # the group a first m chose for a merge
        self._loading = False
        self._reload_again = False

    def make_table(self, table_id: str) -> Widget:
        if table_id != "groups":
            return super().make_table(table_id)
        return RowList([Column("#", 5), Column("faces", 5), Column("photos", 6),
                        Column("alike", 5), Column("best match", None)],
                       self._cells_for, id="groups")

    @property
    def group_list(self) -> RowList:
        return self.query_one("#groups", RowList)

    def on_mount(self) -> None:
        self.query_one("#group-faces", DataTable).add_columns("photo", "face", "fit")
        self.group_list.focus()
        self.query_one("#status", Static).update("grouping the undecided faces…")
        self.refresh_groups()

    def _cells_for(self, key: str) -> tuple[str, ...]:
        view = self._views.get(key)
        if view is None:
            return ("", "", "", "", "")
        cells = group_cells(view)
        return (("*" if key == self.marked else "") + cells[0], *cells[1:])

    # -- refreshing -------------------------------------------------------------------------
    def refresh_groups(self) -> None:
        """Read the groups again (off the UI thread) and update the rows that changed."""
        if self._loading:
            self._reload_again = True
            return
        self._loading = True
        self._load_groups()

    @work(thread=True, exclusive=True, group="people", exit_on_error=False)
    def _load_groups(self) -> None:
        try:
            views = self.app.session.group_views()
        finally:
            self.app.call_from_thread(self._loaded_flag)
        self.app.call_from_thread(self.show_groups, views)

    def _loaded_flag(self) -> None:
        self._loading = False
        if self._reload_again:
            self._reload_again = False
            self.refresh_groups()

    def show_groups(self, views: list[GroupView]) -> None:
        """Rows for new groups are added, rows of gone groups removed, the rest redrawn only
        where their view changed; the selection stays on its group."""
        fresh = {str(view.group_id): view for view in views}
        rows = self.group_list
        old = self._views
        self._views = fresh
        for key in [key for key in rows.keys if key not in fresh]:
            rows.remove(key)
        for view in views:
            key = str(view.group_id)
            if key not in rows:
                rows.append(key)
        rows.refresh_rows([key for key, view in fresh.items() if old.get(key) != view])
        if self.marked not in fresh:
            self.marked = None
        faces = sum(view.size for view in views)
        rows.border_title = (f"People to name · {len(views)} group{'s' * (len(views) != 1)} "
                             f"· {faces} faces")
        self.query_one("#status", Static).update(
            "n name · enter join best · x take a face out · m merge · r reject · z undo"
            if views else "No groups yet: a group forms when two undecided faces look alike.")
        if self.current not in fresh:
            self.current = rows.cursor_key
        elif rows.cursor_key != self.current:
            rows.move_cursor(rows.index_of(self.current))
        if self.current is None or old.get(self.current) != fresh.get(self.current):
            self.refresh_faces()

    def refresh_faces(self) -> None:
        table = self.query_one("#group-faces", DataTable)
        view = self._views.get(self.current) if self.current else None
        previous = table.cursor_row
        table.clear()
        self._faces = list(view.faces) if view else []
        session = self.app.session
        for face in self._faces:
            path = session.photo_path(face.photo_sha)
            name = ellipsize_middle(path.name if path else "(gone)", 28)
            table.add_row(name, str(face.index + 1), f"{face.score:.2f}", key=str(face.face_id))
        table.border_title = (f"Faces · group {view.group_id}" if view else "Faces")
        if self._faces:
            table.move_cursor(row=min(max(previous, 0), len(self._faces) - 1), animate=False)
        self.load_sheet()

    @on(RowList.Highlighted, "#groups")
    def group_highlighted(self, event: RowList.Highlighted) -> None:
        if event.key != self.current:
            self.current = event.key
            self.refresh_faces()

    @on(DataTable.RowHighlighted, "#group-faces")
    def face_highlighted(self) -> None:
        self.load_sheet()

    def selected_face(self) -> GroupFace | None:
        row = self.query_one("#group-faces", DataTable).cursor_row
        return self._faces[row] if 0 <= row < len(self._faces) else None

    def load_sheet(self) -> None:
        """The group's faces on one sheet, and the selected face larger (drawn off the UI
        thread from what is selected now)."""
        self._draw_sheet(self._faces[:SHEET_FACES], self.selected_face())

    @work(thread=True, exclusive=True, group="sheet", exit_on_error=False)
    def _draw_sheet(self, faces: list[GroupFace], selected: GroupFace | None) -> None:
        session = self.app.session
        crops: list[np.ndarray] = []
        chosen = None
        images: dict[str, np.ndarray] = {}
        worker = get_current_worker()
        for face in faces + ([selected] if selected and selected not in faces else []):
            if worker.is_cancelled:  # another group was selected meanwhile
                return
            path = session.photo_path(face.photo_sha)
            if path is None:
                continue
            try:
                image = images.get(face.photo_sha)
                if image is None:
                    image = images[face.photo_sha] = load_rgb(path)
            except FaceIdError:
                continue
            crop, _ = crop_with_margin(image, face.box, margin=0.15)
            if face in faces:
                crops.append(crop)
            if face == selected:
                chosen = PILImage.fromarray(crop)
                chosen.thumbnail((240, 240))
        highlight = faces.index(selected) if selected in faces else None
        sheet = (PILImage.fromarray(contact_sheet(crops, cell=SHEET_CELL, highlight=highlight))
                 if crops else None)
        if not worker.is_cancelled:
            self.app.call_from_thread(self.query_one(FacePreview).show, sheet, chosen)

    # -- the user's changes -----------------------------------------------------------------
    def _group(self) -> GroupView | None:
        return self._views.get(self.current) if self.current else None

    @work(thread=True, exit_on_error=False, group="decisions")
    def run_change(self, change: Callable[[], str]) -> None:
        """One change off the UI thread; the app then redraws the photos it touched and this
        screen's groups (and the other pending faces are matched again if the bank grew)."""
        session = self.app.session
        try:
            note = change()
        except (FaceIdError, ClusterError) as exc:
            self.app.post_message(WorkerFailed(str(exc)))
            self.app.call_from_thread(self.refresh_groups)
            return
        self.app.post_message(DecisionsChanged(note, frozenset(session.touched_photos)))
        changed = session.finish_deferred()
        if changed:
            self.app.post_message(DecisionsChanged("", frozenset(changed),
                                                   marked=frozenset(session.renamed)))

    def _hide(self, key: str) -> None:
        """Take a decided group's row away at once (the worker's result follows)."""
        rows = self.group_list
        if key in rows:
            rows.remove(key)
            self.current = rows.cursor_key
            # The list's frame first; the next group's faces right after it.
            self.call_after_refresh(self.refresh_faces)

    def action_name(self) -> None:
        view = self._group()
        if view is None:
            return
        session = self.app.session

        def named(name: str | None) -> None:
            if name:
                self._hide(str(view.group_id))
                self.run_change(lambda: self._named(view.group_id, name))

        self.app.ask_name(f"Name the {view.size} faces of group {view.group_id}",
                          session.identity_names(), named, view.best_name or "")

    def _named(self, group: int, name: str) -> str:
        count = self.app.session.name_group(group, name, defer=True)
        return f"named {count} faces {name}"

    def action_join_best(self) -> None:
        view = self._group()
        if view is None:
            return
        if view.best_name is None:
            self.notify("no identity in the bank matches this group: press n to name it",
                        severity="warning")
            return
        name = view.best_name
        self._hide(str(view.group_id))
        self.run_change(lambda: self._named(view.group_id, name))

    def action_reject(self) -> None:
        view = self._group()
        if view is None:
            return
        session = self.app.session
        self._hide(str(view.group_id))
        self.run_change(lambda: f"rejected the {session.reject_group(view.group_id, defer=True)}"
                        " faces of the group")

    def action_take_out(self) -> None:
        face = self.selected_face()
        if face is None:
            return
        session = self.app.session

        def take_out() -> str:
            group = session.detach_from_group(face.face_id)
            return f"face taken out of group {group}; it will not rejoin it"

        self.run_change(take_out)

    def action_merge(self) -> None:
        key = self.current
        if key is None:
            return
        if self.marked is None or self.marked == key:
            self.marked = None if self.marked == key else key
            self.group_list.refresh_rows([key])
            if self.marked:
                self.notify(f"group {key} marked: select the other group and press m",
                            timeout=4)
            return
        session, other = self.app.session, self.marked
        self.marked = None
        self.run_change(lambda: f"merged group {other} into group "
                        f"{session.merge_groups(int(key), int(other))}")

    def action_undo(self) -> None:
        session = self.app.session
        self.run_change(lambda: session.undo(defer=True) or "nothing to undo")
