"""The faceid app: owns the triage session, the inbox watcher and the two long-running thread
workers (intake: wait for complete files and register them; processing: load models once, then
detect and embed queued photos). Screens only read the session and post decisions."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

from textual import work
from textual.app import App
from textual.widgets import Static
from textual.worker import Worker, WorkerState, get_current_worker

from faceid_tui.bank.journal import BankJournal
from faceid_tui.engine.models import CASIA_WEBFACE
from faceid_tui.triage.inbox import ArrivalTracker, InboxWatcher, existing_photos
from faceid_tui.triage.session import TriageSession
from faceid_tui.tui.bank_screen import BankScreen
from faceid_tui.tui.messages import (
    BankEmbedding,
    DecisionsChanged,
    ModelsLoading,
    ModelsReady,
    PhotosProcessed,
    QueueChanged,
    WorkerFailed,
)
from faceid_tui.tui.triage_screen import TriageScreen

#: Photos detected and embedded together (their chips form one batch).
PROCESS_BATCH = 8


class FaceIdApp(App[None]):
    CSS_PATH = "faceid.tcss"
    TITLE = "faceid"
    # Every action has its own key; the palette's ctrl+p would only take footer space.
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, session: TriageSession, *, images: str = "auto",
                 watch: bool = True) -> None:
        super().__init__()
        self.session = session
        self.images = images
        self.watch_inbox = watch
        self.journal = BankJournal(session.bank, on_rename=session.ledger.rename_identity)
        self.model_state = "starting"
        self.rate: float | None = None
        self._arrivals: queue.Queue[Path] = queue.Queue()
        self._work_ready = threading.Event()
        self._watcher: InboxWatcher | None = None
        self.triage = TriageScreen()

    # -- lifecycle --------------------------------------------------------------------------
    def on_mount(self) -> None:
        paths = self.session.paths
        self.sub_title = f"inbox {paths.inbox.name}/ · bank {self.session.bank.folder.name}/"
        self.push_screen(self.triage)
        self.session.paths.inbox.mkdir(parents=True, exist_ok=True)
        if self.watch_inbox:
            self._watcher = InboxWatcher(self.session.paths.inbox, self._arrivals.put)
            self._watcher.start()
        self.intake()
        self.process_queue()
        self.update_status()

    def on_unmount(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        self.workers.cancel_all()
        self.journal.empty_trash()

    # -- workers ----------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="intake", description="inbox intake")
    def intake(self) -> None:
        """Register photos once they are complete: those present at start, then arrivals."""
        worker = get_current_worker()
        tracker = ArrivalTracker()
        for path in existing_photos(self.session.paths.inbox):
            tracker.touch(path)
        while not worker.is_cancelled:
            try:
                tracker.touch(self._arrivals.get(timeout=0.1))
                while True:  # take every event already waiting
                    tracker.touch(self._arrivals.get_nowait())
            except queue.Empty:
                pass
            added = [path for path in tracker.ready() if self.session.register(path)]
            if added:
                self.post_message(QueueChanged())
                self._work_ready.set()

    @work(thread=True, exit_on_error=False, group="processing", description="face processing")
    def process_queue(self) -> None:
        worker = get_current_worker()
        self.post_message(ModelsLoading())
        self.session.pipeline.load()
        self.session.start(progress=lambda done, total: self.post_message(
            BankEmbedding(done, total)))
        embedder = self.session.pipeline.embedder
        weights = self.session.pipeline.models.active_weights()
        label = "FaceNet+dlib" if embedder.name == "facenet+dlib" else "FaceNet"
        if weights is not CASIA_WEBFACE:  # the shipped weights go unsaid: 80 columns are few
            label += f" {weights.key}"
        self.post_message(ModelsReady(label, embedder.device))
        while not worker.is_cancelled:
            batch = self.session.queued()[:PROCESS_BATCH]
            if not batch:
                self._work_ready.wait(timeout=0.3)
                self._work_ready.clear()
                continue
            started = time.perf_counter()
            done = self.session.process(batch, should_stop=lambda: worker.is_cancelled)
            self.post_message(PhotosProcessed(done, time.perf_counter() - started))

    # -- messages ---------------------------------------------------------------------------
    def on_models_loading(self, _: ModelsLoading) -> None:
        self.model_state = "loading models…"
        self.update_status()

    def on_bank_embedding(self, message: BankEmbedding) -> None:
        self.model_state = f"embedding the bank {message.done}/{message.total}…"
        self.update_status()

    def on_models_ready(self, message: ModelsReady) -> None:
        self.model_state = f"{message.embedder} · {message.device}"
        self.refresh_screens()

    def on_queue_changed(self, _: QueueChanged) -> None:
        self.refresh_screens()

    def on_photos_processed(self, message: PhotosProcessed) -> None:
        if message.shas and message.seconds > 0:
            self.rate = len(message.shas) / message.seconds
        self.refresh_screens()

    def on_decisions_changed(self, message: DecisionsChanged) -> None:
        if message.note:
            self.notify(message.note, timeout=3)
        self.refresh_screens(message.changed or None)
        if isinstance(self.screen, TriageScreen):
            self.screen.after_decision()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Any worker that dies with an exception says so, instead of failing silently."""
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if event.worker.group == "processing":
            self.model_state = f"stopped: {reason}"
            self.update_status()
        self.notify(f"{event.worker.description or event.worker.name}: {reason}",
                    severity="error", timeout=10)

    def on_worker_failed(self, message: WorkerFailed) -> None:
        self.notify(message.message, severity="error", timeout=6)

    def refresh_screens(self, changed: frozenset[str] | None = None) -> None:
        if self.triage.is_mounted:
            self.triage.refresh_tables(changed)
        if isinstance(self.screen, BankScreen):
            self.screen.refresh_tables()
        self.update_status()

    def update_status(self) -> None:
        session = self.session
        photos = session.ledger.photos()  # states only: no matching needed here
        waiting = sum(p.state in ("queued", "processing") for p in photos)
        to_review = sum(p.state == "to review" for p in photos)
        errors = sum(p.state == "error" for p in photos)
        activity = f"{self.rate:.1f} photos/s" if waiting and self.rate else "idle"
        if waiting and not self.rate:
            activity = "working…"
        text = (f"{self.model_state} · queue {waiting} · review {to_review} · {activity} · "
                f"errors {errors} · thr {session.threshold:.2f} {session.threshold_source}")
        if self.triage.is_mounted:
            self.triage.query_one("#status", Static).update(text)

    def open_bank_screen(self) -> None:
        self.push_screen(BankScreen())
