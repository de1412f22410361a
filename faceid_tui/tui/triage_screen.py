"""The triage screen: the queue of photos, the faces of the selected photo with their best
matches, a preview, and every decision on a key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widget import Widget
from textual.widgets import DataTable, ProgressBar, Static
from textual.worker import get_current_worker

from faceid_tui.engine.alignment import crop_with_margin
from faceid_tui.engine.annotation import FaceLabel, draw_annotations
from faceid_tui.engine.decode import load_rgb
from faceid_tui.errors import FaceIdError
from faceid_tui.triage.ledger import REVIEW
from faceid_tui.triage.photo_list import (
    PHOTO_WIDTH,
    STATE_WIDTH,
    ListSettings,
    ellipsize_middle,
    first_run_text,
    row_cells,
)
from faceid_tui.triage.session import THRESHOLD_STEP, FaceView, PhotoView
from faceid_tui.tui.messages import DecisionsChanged, WorkerFailed
from faceid_tui.tui.modals import TextScreen
from faceid_tui.tui.preview import FacePreview
from faceid_tui.tui.row_list import Column, RowList
from faceid_tui.tui.two_tables import TwoTableScreen

#: Longest side of the preview image handed to the terminal renderer.
PREVIEW_PIXELS = 480


def fmt_score(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


class TriageScreen(TwoTableScreen):
    TOP = ("queue", "Photos")
    BOTTOM = ("faces", "Faces")

    BINDINGS = [
        Binding("enter", "confirm", "OK", priority=True, tooltip="Confirm the suggested name"),
        Binding("n", "name", "Name", tooltip="Name the face (enrols it)"),
        Binding("x", "reject", "Reject", tooltip="Not this person / not a face"),
        Binding("u", "unknown", "Unknown", show=False, tooltip="Leave the face unknown"),
        Binding("a", "confirm_all", "All", tooltip="Confirm every known face of the photo"),
        Binding("z", "undo", "Undo", tooltip="Undo the last decision"),
        Binding("space", "next_open", "Next", key_display="␣",
                tooltip="The next undecided face, any photo"),
        Binding("f", "filter(1)", "Filter", tooltip="Show: all / to review / known / likely "
                "/ unknown / errors / reviewed"),
        Binding("F", "filter(-1)", "Filter back", show=False),
        Binding("s", "sort", "Sort", show=False, tooltip="By time / by best score"),
        # Off the footer, which holds 80 columns: the people screen's key took its place.
        Binding("slash", "search", "Find", show=False,
                tooltip="Photos showing a name (or file name)"),
        Binding("escape", "clear_search", "Clear find", show=False),
        Binding("i", "import_people", "Import", show=False,
                tooltip="Enrol known people: a folder of Name/photo.jpg, or one photo"),
        Binding("plus,equals_sign", "threshold(1)", "Thr+", show=False,
                tooltip="Raise the threshold"),
        Binding("minus", "threshold(-1)", "Thr-", show=False, tooltip="Lower the threshold"),
        Binding("p", "open_people", "People", tooltip="People to name: groups of unknown "
                "faces that look alike, named with one key"),
        Binding("b", "open_bank", "Bank", tooltip="The identity bank"),
        Binding("question_mark", "app.show_help_panel", "Keys", tooltip="Every key"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.current_sha: str | None = None
        #: Photos the latest change touched (marked with a dot in the list).
        self.changed_rows: frozenset[str] = frozenset()
        self.settings = ListSettings()
        self._faces: list[FaceView] = []
        self._last_seq = 0  # of the last row in the table (rows are appended in order)
        self._first_run_shown: tuple[bool, bool, int | None] | None = None

    def compose_above_tables(self) -> ComposeResult:
        yield ProgressBar(id="progress", show_eta=True)
        yield Static("", id="hint", markup=False)
        yield Static("", id="welcome", markup=False)

    def make_table(self, table_id: str) -> Widget:
        if table_id != "queue":
            return super().make_table(table_id)
        # The photo list can hold 10⁵ photos: a list drawn on demand, not a DataTable.
        return RowList([Column("photo", PHOTO_WIDTH), Column("state", STATE_WIDTH),
                        Column("#f", 2), Column("best", 4), Column("names", None)],
                       self._cells_for, id="queue")

    @property
    def photo_list(self) -> RowList:
        return self.query_one("#queue", RowList)

    def on_mount(self) -> None:
        self.query_one("#faces", DataTable).add_columns("#", "name", "score", "margin", "status")
        self.query_one("#progress", ProgressBar).display = False
        self.photo_list.focus()
        self.refresh_tables()

    # -- refreshing -------------------------------------------------------------------------
    def display_name(self, view: PhotoView) -> str:
        path = Path(view.path)
        try:
            return str(path.relative_to(self.app.session.paths.inbox))
        except ValueError:
            return path.name

    def _cells_for(self, sha: str) -> tuple[str, ...]:
        """One photo row's cells (the list asks only for the rows it draws)."""
        view = self.app.session.photo(sha)
        if view is None:
            return ("", "", "", "", "")
        names_width = max(8, self.photo_list.column_widths()[-1])
        photo, *rest = row_cells(view, self.display_name(view), names_width)
        if sha in self.changed_rows:  # the dot takes a column: cut the name in the middle
            photo = "•" + ellipsize_middle(self.display_name(view), PHOTO_WIDTH - 1)
        return (photo, *rest)

    def refresh_tables(self, changed: set[str] | frozenset[str] | None = None, *,
                       decided: bool = False, marked: frozenset[str] | None = None) -> None:
        """Rebuild the photo list (``changed`` None) or update only the rows of ``changed``;
        ``marked``: the rows whose names a re-match changed (dotted); ``decided``: move to the next
        open face."""
        if changed is None:
            self._rebuild()
        else:
            if marked is not None:  # the dots move to these rows
                changed, self.changed_rows = (set(changed) | self.changed_rows, marked)
            if changed:
                self._update_rows(changed)
        if decided:
            self.after_decision()

    def _rebuild(self) -> None:
        views = self.app.session.photos()
        visible = self.settings.visible(views)
        self.photo_list.set_rows(view.sha256 for view in visible)
        self._last_seq = max((view.seq for view in visible), default=0)
        self._title(len(visible), len(views))
        self._select_current()

    def _select_current(self) -> None:
        """Keep the selected photo when it is still listed, else the first to review."""
        photos = self.photo_list
        if not photos.row_count:
            self.current_sha = None
            self.refresh_faces()
            return
        if self.current_sha not in photos:
            session = self.app.session
            self.current_sha = next(
                (sha for sha in photos.keys
                 if (view := session.photo(sha)) is not None and view.state == REVIEW),
                photos.keys[0])
        photos.move_cursor(photos.index_of(self.current_sha))
        self.refresh_faces()

    def _update_rows(self, changed: set[str] | frozenset[str]) -> None:
        photos = self.photo_list
        session, settings = self.app.session, self.settings
        views = {sha: session.photo(sha) for sha in changed}
        removed = False
        cursor = photos.cursor_row
        for sha in sorted(changed, key=lambda sha: views[sha].seq if views[sha] else 0):
            view = views[sha]
            keep = view is not None and settings.keeps(view)
            if sha in photos:
                if keep:
                    continue  # redrawn below
                photos.remove(sha)
                removed = True
            elif keep and view is not None:
                if view.seq < self._last_seq and settings.sort_key == "time":
                    self._rebuild()  # it belongs between rows (a filter's new member)
                    return
                photos.append(sha)
                self._last_seq = max(self._last_seq, view.seq)
        photos.refresh_rows(changed)
        if settings.sort_key == "score":
            photos.sort(lambda sha: settings.order(session.photo(sha)))
        self._title(photos.row_count, sum(session.counts().values()))
        if self.current_sha not in photos:
            # The selected photo left the list (a filter): the one that took its place.
            if photos.row_count:
                photos.move_cursor(min(cursor, photos.row_count - 1))
                self.current_sha = photos.cursor_key
                self.refresh_faces(select_face=self._first_open(self.current_sha))
            else:
                self._select_current()
        else:
            if removed or settings.sort_key == "score":
                photos.move_cursor(photos.index_of(self.current_sha))
            if self.current_sha in changed:
                self.refresh_faces()

    def _first_open(self, sha: str | None) -> int:
        faces = self.app.session.faces(sha) if sha else []
        return next((i for i, f in enumerate(faces) if not f.decided), 0)

    def _title(self, shown: int, total: int) -> None:
        self.photo_list.border_title = self.settings.title(shown, total)

    def show_first_run(self, *, photos: int, identities: int) -> None:
        """With no photo yet, say where photos go and how to enrol people; with an empty bank,
        a line on how to fill it."""
        paths = self.app.session.paths
        bank = self.app.session.bank.shown_location
        welcome = self.query_one("#welcome", Static)
        hint = self.query_one("#hint", Static)
        first_run = photos == 0
        shown = (first_run, identities == 0, identities if first_run else None)
        if shown == self._first_run_shown:
            return  # asked on every status update: a change of display is a new layout
        self._first_run_shown = shown
        welcome.display = first_run
        self.query_one("#main").display = not first_run
        hint.display = not first_run and identities == 0
        if first_run:
            welcome.update(first_run_text(paths.inbox, bank, paths.out, identities))
        elif identities == 0:
            hint.update("Empty bank: n names a face (enrols it) · i imports Name/photo.jpg")

    def refresh_faces(self, select_face: int | None = None) -> None:
        faces_table = self.query_one("#faces", DataTable)
        previous = faces_table.cursor_row
        faces_table.clear()
        self._faces = self.app.session.faces(self.current_sha) if self.current_sha else []
        for face in self._faces:
            faces_table.add_row(str(face.number), face.name or "?", fmt_score(face.score),
                                fmt_score(face.margin), face.status, key=str(face.face_id))
        view = self.app.session.photo(self.current_sha) if self.current_sha else None
        title = ellipsize_middle(self.display_name(view), 40) if view else "no photo"
        if view and view.error:
            title += f" · error: {view.error}"
        faces_table.border_title = f"Faces · {title}"
        if self._faces:
            row = select_face if select_face is not None else min(previous, len(self._faces) - 1)
            faces_table.move_cursor(row=max(0, row), animate=False)
        self.load_preview()

    def selected_face(self) -> FaceView | None:
        row = self.query_one("#faces", DataTable).cursor_row
        return self._faces[row] if 0 <= row < len(self._faces) else None

    @on(RowList.Highlighted, "#queue")
    def photo_highlighted(self, event: RowList.Highlighted) -> None:
        if event.key and event.key != self.current_sha:
            self.current_sha = event.key
            self.refresh_faces(select_face=self._first_open(event.key))

    @on(DataTable.RowHighlighted, "#faces")
    def face_highlighted(self) -> None:
        self.load_preview()

    def on_resize(self) -> None:
        self.photo_list.refresh_rows(self.photo_list.keys)  # the names column's width follows

    # -- the list: filter, sort, find, next ---------------------------------------------------
    def action_filter(self, step: int) -> None:
        self.settings = self.settings.next_filter(step)
        self._rebuild()

    def action_sort(self) -> None:
        self.settings = self.settings.next_sort()
        self._rebuild()

    def action_search(self) -> None:
        def found(text: str | None) -> None:
            if text is not None:
                self.settings = replace(self.settings, search=text.strip())
                self._rebuild()

        self.app.push_screen(TextScreen("Find photos showing a name (or a file name)",
                                        self.settings.search, self.app.session.identity_names()),
                             found)

    def action_clear_search(self) -> None:
        if self.settings.search:
            self.settings = replace(self.settings, search="")
            self._rebuild()

    def action_next_open(self) -> None:
        """The next undecided face: in this photo after the selected one, else the first of the
        next photo in the list that has one (wrapping around)."""
        row = self.query_one("#faces", DataTable).cursor_row
        later = [i for i, f in enumerate(self._faces) if not f.decided and i > row]
        if later:
            self.query_one("#faces", DataTable).move_cursor(row=later[0], animate=False)
            return
        photos = self.photo_list
        keys = photos.keys
        if not keys:
            return
        start = photos.index_of(self.current_sha) if self.current_sha in photos else -1
        session = self.app.session
        for offset in range(1, len(keys) + 1):
            sha = keys[(start + offset) % len(keys)]
            view = session.photo(sha)
            if view is not None and view.pending:
                self.current_sha = sha
                photos.move_cursor(photos.index_of(sha))
                self.refresh_faces(select_face=self._first_open(sha))
                return
        self.notify("every face in this list is decided", timeout=3)

    # -- preview ----------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def load_preview(self) -> None:
        sha, faces = self.current_sha, list(self._faces)
        selected = self.selected_face()
        photo_image = face_image = None
        path = self.app.session.photo_path(sha) if sha else None
        if path is not None:
            try:
                image = load_rgb(path)
            except FaceIdError:
                image = None
            if image is not None:
                # Draw on a small copy with bold lines: the terminal shows few pixels.
                factor = min(1.0, PREVIEW_PIXELS / max(image.shape[:2]))
                small = np.asarray(PILImage.fromarray(image).resize(
                    (max(1, round(image.shape[1] * factor)),
                     max(1, round(image.shape[0] * factor)))))
                labels = [FaceLabel(tuple(round(v * factor) for v in f.box), None, None,
                                    f.status) for f in faces]
                index = faces.index(selected) if selected in faces else None
                drawn = draw_annotations(small, labels, scale=2.0, highlight=index,
                                         numbers_only=True)
                photo_image = PILImage.fromarray(drawn[:, :, ::-1])
                if selected is not None:
                    crop, _ = crop_with_margin(image, selected.box, margin=0.2)
                    face_image = PILImage.fromarray(crop)
                    face_image.thumbnail((PREVIEW_PIXELS // 2, PREVIEW_PIXELS // 2))
        self.app.call_from_thread(self.query_one(FacePreview).show, photo_image, face_image)

    # -- decisions --------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="decisions")
    def run_step(self, step: Callable[[], str | None], sha: str | None) -> None:
        """Make one decision off the UI thread: its photo is shown at once, then every pending
        face is matched again (one product) if the bank changed, and those rows follow."""
        session = self.app.session
        try:
            note = step()
        except FaceIdError as exc:
            self.app.post_message(WorkerFailed(str(exc)))
            # Redraw the photo's rows as they are (undoing what _show_decided showed).
            self.app.post_message(DecisionsChanged("", frozenset({sha} if sha else ())))
            return
        self.app.post_message(DecisionsChanged(note or "", frozenset({sha} if sha else ()),
                                               decided=sha is not None))
        if not get_current_worker().is_cancelled:
            changed = session.finish_deferred()  # annotated copies, then the re-match
            if changed:
                self.app.post_message(DecisionsChanged("", frozenset(changed),
                                                       marked=frozenset(session.renamed)))

    def _show_decided(self, face: FaceView, name: str | None, status: str) -> None:
        """Show the decision on the face's row at once; the worker's result follows (and puts
        the row back, with the error, if the step fails)."""
        table = self.query_one("#faces", DataTable)
        if face not in self._faces:
            return
        row = self._faces.index(face)
        if name is not None:
            table.update_cell_at(Coordinate(row, 1), name)
        table.update_cell_at(Coordinate(row, 4), f"{status}…")

    def action_confirm(self) -> None:
        face = self.selected_face()
        if face is None or face.decided:
            return
        if face.name is None:
            self.notify("no suggestion for this face: press n to name it", severity="warning")
            return
        session = self.app.session
        self._show_decided(face, face.name, "confirmed")
        self.run_step(lambda: session.confirm(face.face_id, defer=True)
                      or f"face {face.number}: {face.name}", self.current_sha)

    def action_name(self) -> None:
        face = self.selected_face()
        if face is None:
            return
        session, sha = self.app.session, self.current_sha

        def named(name: str | None) -> None:
            if name:
                self._show_decided(face, name, "confirmed")
                self.run_step(lambda: session.name_face(face.face_id, name, defer=True)
                              or f"face {face.number}: {name}", sha)

        self.app.ask_name(f"Name face {face.number}", session.identity_names(), named,
                          face.name or "")

    def action_reject(self) -> None:
        self._decide_selected(self.app.session.reject, "rejected", "rejected")

    def action_unknown(self) -> None:
        self._decide_selected(self.app.session.leave_unknown, "left unknown", "unknown")

    def _decide_selected(self, decide: Callable[..., None], label: str, status: str) -> None:
        face = self.selected_face()
        if face is not None and not face.decided:
            self._show_decided(face, None, status)
            self.run_step(lambda: decide(face.face_id, defer=True)
                          or f"face {face.number}: {label}", self.current_sha)

    def action_confirm_all(self) -> None:
        if self.current_sha:
            sha, session = self.current_sha, self.app.session
            self.run_step(lambda: f"confirmed {session.confirm_all_known(sha, defer=True)} "
                          "face(s)", sha)

    def action_undo(self) -> None:
        session = self.app.session
        self.run_step(lambda: session.undo(defer=True) or "nothing to undo",
                      session.last_decided_photo())

    def action_threshold(self, direction: int) -> None:
        session = self.app.session
        target = session.threshold + direction * THRESHOLD_STEP

        @work(thread=True, exit_on_error=False, group="decisions")
        def rescore(screen: TriageScreen) -> None:
            changed = session.set_threshold(target)
            screen.app.post_message(DecisionsChanged(
                f"threshold {session.threshold:.2f}: {len(changed)} photo(s) changed",
                frozenset(changed), marked=frozenset(session.renamed)))

        rescore(self)

    def action_import_people(self) -> None:
        """Enrol known people from a folder of Name/photo.jpg, or one photo under a name."""
        session = self.app.session

        def run(path: Path, name: str | None) -> None:
            self.notify(f"importing {path} …", timeout=3)
            self.run_step(lambda: session.import_people(path, name), None)

        def chosen(text: str | None) -> None:
            if not text or not text.strip():
                return
            path = Path(text.strip()).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            if path.is_file():
                self.app.ask_name(f"Who is in {path.name}?", session.identity_names(),
                                  lambda name: name and run(path, name))
            elif path.is_dir():
                run(path, None)
            else:
                self.notify(f"{path} does not exist", severity="error")

        self.app.push_screen(TextScreen(
            "Import known people: a folder of Name/photo.jpg, or one photo",
            placeholder="path (relative to where faceid runs)"), chosen)

    def after_decision(self) -> None:
        """Move to the next face (or photo) waiting for a decision."""
        open_faces = [i for i, f in enumerate(self._faces) if not f.decided]
        if open_faces:
            self.query_one("#faces", DataTable).move_cursor(row=open_faces[0], animate=False)
            return
        self.action_next_open()

    # -- navigation -------------------------------------------------------------------------

    def action_open_bank(self) -> None:
        self.app.open_bank_screen()

    def action_open_people(self) -> None:
        self.app.open_people_screen()
