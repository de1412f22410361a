"""The faceid app: owns the triage session, the inbox watcher and the two long-running thread
workers (intake: wait for complete files and register them; processing: load models once, then
stream the queue — and every arrival — through one pipelined run). Screens only read the
session and post decisions.

Results reach the screen in coalesced messages: the processing thread collects the hashes it
stored and posts one :class:`PhotosProcessed` while none is waiting, so a fast drain costs the
UI one refresh per frame, not one per photo, and each refresh touches only those rows.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.widgets import ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from faceid_tui.bank.journal import BankJournal
from faceid_tui.engine.detect_pool import prepare_for_workers
from faceid_tui.engine.models import CASIA_WEBFACE
from faceid_tui.engine.priority import lower_thread_priority
from faceid_tui.triage.inbox import ArrivalTracker, InboxWatcher, existing_photos
from faceid_tui.triage.ledger import ERROR, PROCESSING, QUEUED, REVIEW
from faceid_tui.triage.session import TriageSession
from faceid_tui.tui.bank_screen import BankScreen
from faceid_tui.tui.host import TriageHost
from faceid_tui.tui.messages import (
    BankEmbedding,
    DecisionsChanged,
    ModelsLoading,
    ModelsReady,
    PhotosProcessed,
    QueueChanged,
    WorkerFailed,
)
from faceid_tui.tui.modals import NameScreen
from faceid_tui.tui.people_screen import PeopleScreen
from faceid_tui.tui.triage_screen import TriageScreen

#: The processing rate shown is measured over this many most recent seconds.
RATE_WINDOW_S = 10.0
#: How long quitting waits for the processing thread to finish the chunk it is embedding.
PROCESSING_STOP_S = 20.0
#: How often a station with a shared ledger looks for photos whose station stopped (their
#: claims' lease ran out: triage/shared_ledger.py).
TAKEOVER_EVERY_S = 10.0


class FaceIdApp(TriageHost):
    CSS_PATH = "faceid.tcss"
    TITLE = "faceid"
    # Every action has its own key; the palette's ctrl+p would only take footer space.
    ENABLE_COMMAND_PALETTE = False

    def __init__(self, session: TriageSession, *, images: str = "auto",
                 watch: bool = True) -> None:
        super().__init__()
        prepare_for_workers()  # before Textual takes over stderr
        self.session = session
        self.images = images
        self.watch_inbox = watch
        self.journal = BankJournal(session.bank, on_rename=session.ledger.rename_identity)
        self.model_state = "starting"
        self.rate: float | None = None
        self._arrivals: queue.Queue[Path] = queue.Queue()
        self._watcher: InboxWatcher | None = None
        self.triage = TriageScreen()
        self._name_screen: NameScreen | None = None
        self._status_text = ""
        # Hashes stored by the processing thread and not shown yet (see the module docstring).
        self._stored_lock = threading.Lock()
        self._stored: set[str] = set()
        self._stored_posted = False
        #: Photos processed since the app started; with the drain's start, the progress bar.
        self.processed = 0
        self._drain_base: int | None = None
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._processing_idle = threading.Event()
        self._processing_idle.set()

    # -- lifecycle --------------------------------------------------------------------------
    def on_mount(self) -> None:
        paths = self.session.paths
        self.sub_title = f"inbox {paths.inbox.name}/ · bank {self.session.bank.short_name}"
        self.push_screen(self.triage)
        # Another station's enrolment or edit reaches this one's lists within a second.
        self.session.watch_bank(lambda: self.post_message(
            DecisionsChanged("the shared bank changed on another station")))
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
        # The processing thread stops between two chunks; let it finish the one it is storing
        # (and close its detect processes) before the caller closes the ledger.
        self._processing_idle.wait(timeout=PROCESSING_STOP_S)
        self.journal.empty_trash()

    # -- workers ----------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="intake", description="inbox intake")
    def intake(self) -> None:
        """Register photos once they are complete: those present at start, then arrivals."""
        worker = get_current_worker()
        tracker = ArrivalTracker()
        next_takeover = time.monotonic() + TAKEOVER_EVERY_S
        for path in existing_photos(self.session.paths.inbox):
            tracker.touch(path)
        while not worker.is_cancelled:
            try:
                tracker.touch(self._arrivals.get(timeout=0.1))
                while True:  # take every event already waiting
                    tracker.touch(self._arrivals.get_nowait())
            except queue.Empty:
                pass
            added = [sha for sha in self.session.register_many(tracker.ready()) if sha]
            if time.monotonic() >= next_takeover:  # photos of a shared-inbox station that died
                added += self.session.take_abandoned()
                next_takeover = time.monotonic() + TAKEOVER_EVERY_S
            if added:
                self.post_message(QueueChanged(frozenset(added)))

    @work(thread=True, exit_on_error=False, group="processing", description="face processing")
    def process_queue(self) -> None:
        self._processing_idle.clear()
        try:
            self._process_queue(get_current_worker())
        finally:
            self._processing_idle.set()

    def _process_queue(self, worker: Worker) -> None:
        # The drain is bulk work: this thread, the model thread pools it creates and the detect
        # processes it spawns yield the CPU to the keyboard and the screen (with 2 cores and
        # 3 busy threads, layouts took 2-4x longer than when idle).
        lower_thread_priority()
        self.post_message(ModelsLoading())
        self.session.pipeline.load()
        self.session.start(progress=lambda done, total: self.post_message(
            BankEmbedding(done, total)))
        # What exists now (modules, models, the app's widgets, the session's mirror) lives as
        # long as the app: the collector's full passes need not walk it again. Each pass stops
        # every thread, the keyboard's included: measured while 2,000 photos drained, the
        # median pass took 133 ms before this and 99 ms after.
        gc.freeze()
        embedder = self.session.pipeline.embedder
        weights = self.session.pipeline.models.active_weights()
        label = "FaceNet+dlib" if embedder.name == "facenet+dlib" else "FaceNet"
        if weights is not CASIA_WEBFACE:  # the shipped weights go unsaid: 80 columns are few
            label += f" {weights.key}"
        self.post_message(ModelsReady(label, embedder.device))
        # One run until the app quits: arrivals join it through session.register.
        self.session.process_stream(lambda: worker.is_cancelled, self._photo_stored)

    def _photo_stored(self, sha: str) -> None:
        """Called by the processing thread for each stored photo."""
        with self._stored_lock:
            self._stored.add(sha)
            self.processed += 1
            if self._stored_posted:
                return
            self._stored_posted = True
        self.post_message(PhotosProcessed())

    def take_stored(self) -> set[str]:
        with self._stored_lock:
            stored, self._stored = self._stored, set()
            self._stored_posted = False
            return stored

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

    def on_queue_changed(self, message: QueueChanged) -> None:
        self.refresh_screens(message.added)

    def on_photos_processed(self, _: PhotosProcessed) -> None:
        self.refresh_screens(self.take_stored())

    def on_decisions_changed(self, message: DecisionsChanged) -> None:
        if message.note:
            self.notify(message.note, timeout=3)
        self.refresh_screens(message.changed, decided=message.decided, marked=message.marked)

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

    def refresh_screens(self, changed: set[str] | frozenset[str] | None = None, *,
                        decided: bool = False, marked: frozenset[str] | None = None) -> None:
        """Show what changed: the rows of ``changed`` (None: rebuild every list)."""
        if self.triage.is_mounted:
            self.triage.refresh_tables(changed, decided=decided, marked=marked)
        if isinstance(self.screen, BankScreen) and changed is None:
            self.screen.refresh_tables()
        if isinstance(self.screen, PeopleScreen):
            self.screen.refresh_groups()
        self.update_status()

    def update_status(self) -> None:
        session = self.session
        counts = session.counts()  # kept by the session: nothing is recounted
        waiting = counts.get(QUEUED, 0) + counts.get(PROCESSING, 0)
        to_review = counts.get(REVIEW, 0)
        errors = counts.get(ERROR, 0)
        self._follow_drain(waiting)
        activity = f"{self.rate:.1f} photos/s" if waiting and self.rate else "idle"
        if waiting and not self.rate:
            activity = "working…"
        text = (f"{self.model_state} · queue {waiting} · review {to_review} · {activity} · "
                f"errors {errors} · thr {session.threshold:.2f} {session.threshold_source}")
        if not self.triage.is_mounted:
            return
        if text != self._status_text:
            self._status_text = text
            # One line of fixed size: a repaint, not a layout of the screen (asked for several
            # times a second while a queue drains).
            self.triage.query_one("#status", Static).update(text, layout=False)
        self.triage.show_first_run(photos=sum(counts.values()),
                                   identities=session.identity_count())

    def _follow_drain(self, waiting: int) -> None:
        """Rate over the last seconds and the progress bar of the current drain."""
        now = time.monotonic()
        samples = self._rate_samples
        samples.append((now, self.processed))
        while len(samples) > 2 and now - samples[0][0] > RATE_WINDOW_S:
            samples.popleft()
        span = samples[-1][0] - samples[0][0]
        done_in_span = samples[-1][1] - samples[0][1]
        self.rate = done_in_span / span if span > 1.0 and done_in_span else self.rate
        if not self.triage.is_mounted:
            return
        bar = self.triage.query_one("#progress", ProgressBar)
        if waiting == 0:
            self._drain_base = None
            self.rate = None
            samples.clear()
            bar.display = False
            return
        if self._drain_base is None:
            self._drain_base = self.processed
            bar.display = True
        done = self.processed - self._drain_base
        bar.update(total=done + waiting, progress=done)

    def ask_name(self, title: str, names: list[str], then: Callable[[str | None], None],
                 initial: str = "") -> None:
        if self._name_screen is None:  # one dialog, installed: popping it keeps its widgets
            self._name_screen = NameScreen()
            self.install_screen(self._name_screen, name="name")
        if self._name_screen in self.screen_stack:
            return  # already asking: one question at a time
        self._name_screen.ask(title, names, initial)
        self.push_screen(self._name_screen, then)

    def open_bank_screen(self) -> None:
        self.push_screen(BankScreen())

    def open_people_screen(self) -> None:
        self.push_screen(PeopleScreen())
