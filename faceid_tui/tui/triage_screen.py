"""The triage screen: the queue of photos, the faces of the selected photo with their best
matches, a preview, and every decision on a key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from textual import on, work
from textual.binding import Binding
from textual.widgets import DataTable

from faceid_tui.engine.alignment import crop_with_margin
from faceid_tui.engine.annotation import FaceLabel, draw_annotations
from faceid_tui.engine.decode import load_rgb
from faceid_tui.errors import FaceIdError
from faceid_tui.triage.session import THRESHOLD_STEP, FaceView, PhotoView
from faceid_tui.tui.messages import DecisionsChanged, WorkerFailed
from faceid_tui.tui.modals import NameScreen
from faceid_tui.tui.preview import FacePreview
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
        Binding("u", "unknown", "Unknown", tooltip="Leave the face unknown"),
        Binding("a", "confirm_all", "All", tooltip="Confirm every known face of the photo"),
        Binding("z", "undo", "Undo", tooltip="Undo the last decision"),
        Binding("plus,equals_sign", "threshold(1)", "Thr+", tooltip="Raise the threshold"),
        Binding("minus", "threshold(-1)", "Thr-", tooltip="Lower the threshold"),
        Binding("b", "open_bank", "Bank", tooltip="The identity bank"),
        Binding("question_mark", "app.show_help_panel", "Keys", tooltip="Every key"),
        Binding("q", "app.quit", "Quit"),
    ]


    def __init__(self) -> None:
        super().__init__()
        self.current_sha: str | None = None
        self.changed_rows: frozenset[str] = frozenset()
        self._views: dict[str, PhotoView] = {}
        self._faces: list[FaceView] = []

    def on_mount(self) -> None:
        queue = self.query_one("#queue", DataTable)
        queue.add_column("photo", width=16)
        queue.add_column("state", width=10)
        queue.add_column("#f", width=2)
        queue.add_column("best", width=4)
        queue.add_column("names")
        self.query_one("#faces", DataTable).add_columns("#", "name", "score", "margin", "status")
        queue.focus()
        self.refresh_tables()

    # -- refreshing -------------------------------------------------------------------------
    def display_name(self, view: PhotoView) -> str:
        path = Path(view.path)
        try:
            return str(path.relative_to(self.app.session.paths.inbox))
        except ValueError:
            return path.name

    def refresh_tables(self, changed: frozenset[str] | None = None) -> None:
        if changed is not None:
            self.changed_rows = changed
        views = self.app.session.photos()
        self._views = {view.sha256: view for view in views}
        queue = self.query_one("#queue", DataTable)
        queue.clear()
        for view in views:
            mark = "• " if view.sha256 in self.changed_rows else ""
            queue.add_row(mark + self.display_name(view), view.state,
                          str(view.faces) if view.state in ("to review", "reviewed") else "",
                          fmt_score(view.best_score),
                          view.error or ", ".join(view.names), key=view.sha256)
        if views:
            keys = [view.sha256 for view in views]
            if self.current_sha not in keys:
                waiting = [v.sha256 for v in views if v.state == "to review"]
                self.current_sha = waiting[0] if waiting else keys[0]
            queue.move_cursor(row=keys.index(self.current_sha), animate=False)
        else:
            self.current_sha = None
        self.refresh_faces()

    def refresh_faces(self, select_face: int | None = None) -> None:
        faces_table = self.query_one("#faces", DataTable)
        previous = faces_table.cursor_row
        faces_table.clear()
        self._faces = self.app.session.faces(self.current_sha) if self.current_sha else []
        for face in self._faces:
            faces_table.add_row(str(face.number), face.name or "?", fmt_score(face.score),
                                fmt_score(face.margin), face.status, key=str(face.face_id))
        view = self._views.get(self.current_sha or "")
        title = self.display_name(view) if view else "no photo"
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

    @on(DataTable.RowHighlighted, "#queue")
    def photo_highlighted(self, event: DataTable.RowHighlighted) -> None:
        sha = event.row_key.value if event.row_key else None
        if sha and sha != self.current_sha:
            self.current_sha = sha
            first_open = next((i for i, f in enumerate(self.app.session.faces(sha))
                               if not f.decided), 0)
            self.refresh_faces(select_face=first_open)

    @on(DataTable.RowHighlighted, "#faces")
    def face_highlighted(self) -> None:
        self.load_preview()

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
    def run_step(self, step: Callable[[], str | None]) -> None:
        try:
            note = step()
        except FaceIdError as exc:
            self.app.post_message(WorkerFailed(str(exc)))
            return
        self.app.post_message(DecisionsChanged(note or ""))

    def action_confirm(self) -> None:
        face = self.selected_face()
        if face is None or face.decided:
            return
        if face.name is None:
            self.notify("no suggestion for this face: press n to name it", severity="warning")
            return
        session = self.app.session
        self.run_step(lambda: session.confirm(face.face_id) or f"face {face.number}: {face.name}")

    def action_name(self) -> None:
        face = self.selected_face()
        if face is None:
            return
        session = self.app.session

        def named(name: str | None) -> None:
            if name:
                self.run_step(lambda: session.name_face(face.face_id, name)
                              or f"face {face.number}: {name}")

        self.app.push_screen(NameScreen(f"Name face {face.number}", session.identity_names(),
                                        face.name or ""), named)

    def action_reject(self) -> None:
        self._decide_selected(self.app.session.reject, "rejected")

    def action_unknown(self) -> None:
        self._decide_selected(self.app.session.leave_unknown, "left unknown")

    def _decide_selected(self, decide: Callable[[int], None], label: str) -> None:
        face = self.selected_face()
        if face is not None and not face.decided:
            self.run_step(lambda: decide(face.face_id) or f"face {face.number}: {label}")

    def action_confirm_all(self) -> None:
        if self.current_sha:
            sha, session = self.current_sha, self.app.session
            self.run_step(lambda: f"confirmed {session.confirm_all_known(sha)} face(s)")

    def action_undo(self) -> None:
        session = self.app.session
        self.run_step(lambda: session.undo() or "nothing to undo")

    def action_threshold(self, direction: int) -> None:
        session = self.app.session
        target = session.threshold + direction * THRESHOLD_STEP

        @work(thread=True, exit_on_error=False, group="decisions")
        def rescore(screen: TriageScreen) -> None:
            changed = session.set_threshold(target)
            screen.app.post_message(DecisionsChanged(
                f"threshold {session.threshold:.2f}: {len(changed)} photo(s) changed",
                frozenset(changed)))

        rescore(self)

    def after_decision(self) -> None:
        """Move to the next face (or photo) waiting for a decision."""
        open_faces = [i for i, f in enumerate(self._faces) if not f.decided]
        if open_faces:
            self.query_one("#faces", DataTable).move_cursor(row=open_faces[0], animate=False)
            return
        waiting = [sha for sha, v in self._views.items() if v.state == "to review"]
        if waiting and self.current_sha not in waiting:
            keys = list(self._views)
            after = [sha for sha in waiting if keys.index(sha) > keys.index(self.current_sha)]
            self.current_sha = (after or waiting)[0]
            self.query_one("#queue", DataTable).move_cursor(row=keys.index(self.current_sha),
                                                            animate=False)
            self.refresh_faces(select_face=0)

    # -- navigation -------------------------------------------------------------------------

    def action_open_bank(self) -> None:
        self.app.open_bank_screen()
