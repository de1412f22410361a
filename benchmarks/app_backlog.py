"""The triage app with a backlog: N photos dropped into its inbox at once, the real app driven
with Textual's Pilot in an 80×24 terminal, beside ``faceid scan`` on the same photos.

    .venv/bin/python benchmarks/app_backlog.py [--photos 10000] [--presses 50] [--json FILE]

The photos are the first N distinct images of ``../shared/lfw/pairs.csv`` (then the rest of
``lfw/images`` when N is larger), copied to a temporary folder. Both contenders use a bank
seeded from ``../shared/faces/identities`` (most of them LFW people), so faces get names.

* **scan** — ``faceid scan DIR --json`` in a subprocess, the whole process timed (model load
  and bank load included); two one-photo scans before it sync the bank's embeddings and give
  the start-up time, so images/s is also shown without start-up. By default (``--order``) a
  scan runs before the app and another after it, and the app is compared with their mean:
  this machine's speed drifts by several percent over the half hour of a 10,000-photo run,
  and a scan on one side only would count that drift for or against the app.
* **app** — ``FaceIdApp(session, watch=True)`` under ``App.run_test(size=(80, 24))``; once its
  models are loaded the N photos are copied into the inbox (the drop, timed) and the ledger is
  polled (every 0.5 s at most, off the event loop) until every photo is registered and none is
  queued or processing. App images/s runs from the first photo copied to the poll that saw the
  last one processed; app/scan is the ratio of the two rates (target ≥ 0.90). The keys below
  are pressed while it drains, so the rate is also split at the moment they began;
  ``--skip drain`` gives the rate with no keys at all.
* **key → screen** — while the queue drains (from 20 % processed) and again with every photo in
  review: time from a key to the first frame rendered after the screen shows its effect,
  p50/p95/max over ``--presses`` presses each: ``j``/``k`` (the photo table's cursor moved),
  ``f`` (the photo table's row count or title changed; "n/a" without an ``f`` binding), ``x``
  (that face's status cell says "rejected", or its photo's state cell changed when the app
  moved on to another photo) then ``z`` (undone), and ``n`` + a name + ``enter`` (the modal's
  input focused; the face's row shows the name; then every re-match done: no worker of group
  "decisions" or "*match*" running and their messages handled), then ``z``. Frames are
  counted by wrapping ``App._display``; a key's first effect is timed to the first frame that
  starts rendering with it visible (checked in ``Screen._compositor_refresh``), later stages
  (all re-matched) to the first frame after the poll saw them, a repaint of the screen asked
  for then (else, when the re-match changed nothing on screen, the next frame may be seconds
  away and unrelated). With ``--keys pilot`` each figure is
  ``await pilot.press(...)`` + polling + ``await pilot.pause()`` instead; note that Pilot
  waits for the whole process to go idle (up to 1 s, twice per key), so under load that mode
  measures Pilot more than the app. ``--keys driver`` (the default) posts the key event as the
  terminal driver does and returns at once.
* **memory** — resident set (VmRSS) after processing, and after 20 full refreshes
  (``app.refresh_screens()``), with each refresh's time to its frame.

The lists are read as the next frame draws them, whether a ``DataTable`` or a list drawn line
by line (``cells_for``). Figures are printed (and written with ``--json FILE``), never asserted;
a feature the app does not have prints "n/a" and the run goes on; an app that makes no progress
for ``--stall`` seconds is reported as stalled (``kill -USR1 PID`` prints every thread's stack).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import faulthandler
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # --shared changes it
FACEID = REPO / ".venv" / "bin" / "faceid"

#: The photo states of the ledger.
WAITING = ("queued", "processing")
DONE = ("to review", "reviewed", "error")
NAME = "Bench_Person"
POLL_S = 0.5


def set_shared(folder: Path) -> None:
    global SHARED
    SHARED = folder


def lfw_images(count: int) -> list[Path]:
    """The first ``count`` distinct images of pairs.csv, then the rest of lfw/images."""
    seen: dict[Path, None] = {}
    with open(SHARED / "lfw" / "pairs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("path_a", "path_b"):
                seen.setdefault(SHARED / "lfw" / row[key], None)
            if len(seen) >= count:
                break
    if len(seen) < count:
        for path in sorted((SHARED / "lfw" / "images").rglob("*.jpg")):
            seen.setdefault(path, None)
            if len(seen) >= count:
                break
    return list(seen)[:count]


def seed_bank(folder: Path, names: list[str] | None) -> list[str]:
    identities = SHARED / "faces" / "identities"
    chosen = sorted(p.name for p in identities.iterdir() if p.is_dir()
                    and (names is None or p.name in names))
    for name in chosen:
        shutil.copytree(identities / name, folder / name)
    return chosen


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def engine_flags(args: argparse.Namespace) -> list[str]:
    return ["--models", str(REPO / "face_models"), "--detector", args.detector,
            "--embedder", args.embedder, "--device", args.device]


# -- faceid scan --------------------------------------------------------------------------------
def run_scan(args: argparse.Namespace, photo_dir: Path, bank: Path, first: Path,
             rounds: list[dict[str, object]]) -> None:
    """One timed ``faceid scan`` of ``photo_dir``; its figures are appended to ``rounds``."""
    base = [str(FACEID), "scan", "--bank", str(bank), *engine_flags(args), "--json"]
    for _ in range(2):  # the first embeds the bank's photos, the second is timed
        started = time.perf_counter()
        subprocess.run([*base, str(first)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        startup = time.perf_counter() - started
    print(f"scan: start-up (1 photo, bank synced) {startup:.1f} s", flush=True)
    photos = faces = named = 0
    with tempfile.TemporaryFile("w+") as errors:
        started = time.perf_counter()
        with subprocess.Popen([*base, str(photo_dir)], stdout=subprocess.PIPE, stderr=errors,
                              text=True) as process:
            assert process.stdout is not None
            for line in process.stdout:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    photos += 1
                    faces += len(record.get("faces", []))
                    named += sum(1 for f in record.get("faces", []) if f.get("name"))
        wall = time.perf_counter() - started
        if process.returncode not in (0, 1) or photos == 0:
            errors.seek(0)
            print(f"scan: exit {process.returncode}: {errors.read()[-2000:]}", flush=True)
    rounds.append({
        "scan_startup_s": startup, "scan_s": wall, "scan_photos": photos, "scan_faces": faces,
        "scan_named_faces": named, "scan_images_per_s": photos / wall if wall else None,
        "scan_images_per_s_without_startup":
            photos / (wall - startup) if wall > startup else None,
    })
    print(f"scan: {photos} photos, {faces} faces ({named} named) in {wall:.1f} s", flush=True)


def scan_figures(rounds: list[dict[str, object]]) -> dict[str, object]:
    """The scan's figures over its rounds: rates and times are means (a scan before and one
    after the app cancel a drift of the machine's speed during the run, to first order), the
    rates of each round are kept too; counts are the first round's."""
    if not rounds:
        return {}
    figures = dict(rounds[0])
    for key in ("scan_startup_s", "scan_s", "scan_images_per_s",
                "scan_images_per_s_without_startup"):
        values = [r[key] for r in rounds if isinstance(r.get(key), float)]
        figures[key] = float(np.mean(values)) if values else None
    figures["scan_rounds_images_per_s"] = [r.get("scan_images_per_s") for r in rounds]
    return figures


# -- driving the app ------------------------------------------------------------------------------
class FrameClock:
    """Times every frame the app renders (its ``_display`` wrapped), and the first frame that
    draws what a key should change.

    The condition of :meth:`watch` is checked as each frame starts rendering (``Screen.
    _compositor_refresh``, the step every frame goes through before ``_display``): a frame that
    begins with it true draws it. Polling from the benchmark's own task alone would miss a
    frame rendered between the key's handler and the poll, and then count the next frame, which
    on a quiet screen may come a second later, not drawn for this key at all.
    """

    def __init__(self, app) -> None:
        from textual.screen import Screen

        self.times: list[float] = []
        self._conditions: list[Callable[[], bool]] = []
        self._true_at_render: list[bool] = []
        #: For each watched condition, the first frame drawn with it true (None: none yet).
        self.shown_at: list[float | None] = []
        original = app._display

        def display(screen, renderable) -> None:
            if renderable is not None:
                now = time.perf_counter()
                self.times.append(now)
                for number, drawn in enumerate(self._true_at_render):
                    if drawn and self.shown_at[number] is None:
                        self.shown_at[number] = now
            return original(screen, renderable)

        app._display = display
        refresh = Screen._compositor_refresh

        def compositor_refresh(screen) -> None:
            self._true_at_render = [shown is None and _holds(condition) for condition, shown
                                    in zip(self._conditions, self.shown_at, strict=True)]
            return refresh(screen)

        Screen._compositor_refresh = compositor_refresh

    def watch(self, conditions: list[Callable[[], bool]]) -> None:
        """Watch for the first frame that draws each condition true ([]: stop watching)."""
        self._conditions = list(conditions)
        self.shown_at = [None] * len(conditions)
        self._true_at_render = [False] * len(conditions)

    async def after(self, moment: float, timeout: float = 2.0) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.times and self.times[-1] > moment:
                return next(t for t in self.times[-50:] if t > moment)
            await asyncio.sleep(0.002)
        return None

    async def shown(self, number: int, timeout: float = 2.0) -> float | None:
        """When the first frame drawing watched condition ``number`` was displayed (waiting
        for it)."""
        deadline = time.perf_counter() + timeout
        while self.shown_at[number] is None and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        return self.shown_at[number]


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return bool(condition())
    except Exception:  # a widget in flux: not shown yet
        return False


@dataclass
class Progress:
    """The ledger's photo states, read off the event loop at most every POLL_S."""

    session: object
    counts: Counter = field(default_factory=Counter)
    seen_at: float = 0.0
    #: The first poll of the current streak that saw nothing queued or processing.
    idle_since: float | None = None
    stop: bool = False

    def read(self) -> Counter:
        counts = getattr(self.session, "counts", None)
        if callable(counts):
            return Counter(counts())
        return Counter(photo.state for photo in self.session.ledger.photos())

    async def run(self) -> None:
        while not self.stop:
            counts = await asyncio.to_thread(self.read)
            waiting = sum(counts[state] for state in WAITING)
            # Decisions move photos between "to review" and "reviewed": not processing.
            if (sum(counts.values()), waiting) != (self.registered, self.waiting) or (
                    self.idle_since is None):
                self.idle_since = None if waiting or not counts else time.perf_counter()
            self.counts, self.seen_at = counts, time.perf_counter()
            await asyncio.sleep(POLL_S)

    @property
    def registered(self) -> int:
        return sum(self.counts.values())

    @property
    def waiting(self) -> int:
        return sum(self.counts[state] for state in WAITING)

    @property
    def processed(self) -> int:
        return sum(self.counts[state] for state in DONE)


def key_event(key: str):
    from textual import events

    char = {"enter": "\r", "escape": "\x1b", "tab": "\t"}.get(key, key if len(key) == 1 else None)
    return events.Key(key, char)


# The photo and face lists may be DataTables or a list drawn line by line (keys, a cursor row
# and ``cells_for(key)``, with what it drew cached in ``_cells``): both are read here.
def find_table(app, table_id: str):
    for screen in reversed(app.screen_stack):
        with contextlib.suppress(Exception):
            return screen.query_one(f"#{table_id}")
    return None


def column(table, label: str) -> int | None:
    if table is None:
        return None
    columns = getattr(table, "ordered_columns", None)
    if columns is None:
        columns = getattr(table, "columns", None) or []
        columns = list(columns.values()) if isinstance(columns, dict) else list(columns)
    for index, col in enumerate(columns):
        if str(getattr(col, "label", "")).strip() == label:
            return index
    return None


def cursor_key(table):
    if table is None or not getattr(table, "row_count", 0):
        return None
    if hasattr(table, "coordinate_to_cell_key"):  # a DataTable
        from textual.coordinate import Coordinate

        with contextlib.suppress(Exception):
            return table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key
        return None
    return getattr(table, "cursor_key", None)


def row_cells(table, key) -> list[str] | None:
    """The cells the list holds for this row: what its next frame draws (None: no such row)."""
    if table is None or key is None:
        return None
    try:
        if hasattr(table, "get_row"):  # a DataTable
            return [str(cell) for cell in table.get_row(key)]
        if key not in table:
            return None
        drawn = getattr(table, "_cells", {})
        # A row not in the cache was changed (or is off screen): the next frame asks again.
        return [str(cell) for cell in (drawn[key] if key in drawn else table.cells_for(key))]
    except Exception:
        return None


@dataclass
class Series:
    label: str
    phase: str
    frames: list[float] = field(default_factory=list)  # key -> frame showing it, seconds
    states: list[float] = field(default_factory=list)  # key -> state visible in the tables
    draining: int = 0
    timeouts: int = 0
    note: str = ""

    def summary(self) -> dict[str, object]:
        values = np.array(self.frames) * 1000
        out: dict[str, object] = {"label": self.label, "phase": self.phase,
                                  "n": len(self.frames), "while_draining": self.draining,
                                  "timeouts": self.timeouts, "note": self.note}
        if len(values):
            out.update({"p50_ms": float(np.percentile(values, 50)),
                        "p95_ms": float(np.percentile(values, 95)),
                        "max_ms": float(values.max()),
                        "state_p50_ms": float(np.percentile(np.array(self.states) * 1000, 50))})
        return out


class Driver:
    """Sends keys to the app and times press → screen."""

    def __init__(self, app, pilot, clock: FrameClock, progress: Progress,
                 args: argparse.Namespace) -> None:
        self.app, self.pilot, self.clock, self.progress = app, pilot, clock, progress
        self.mode, self.timeout, self.gap = args.keys, args.key_timeout, args.gap

    async def send(self, *keys: str) -> None:
        if self.mode == "pilot":
            await self.pilot.press(*keys)
        else:
            for key in keys:
                self.app.post_message(key_event(key))

    async def timed(self, keys: list[str],
                    conditions: list[Callable[[], bool]]) -> list[tuple[float, float]] | None:
        """Press ``keys``; for each condition in turn, (until it held, until the frame after
        it) in seconds from the press; None on a timeout."""
        started = time.perf_counter()
        # Only the first stage is checked at each frame: later ones (Settled) keep state and
        # queue callbacks, so they are polled here in turn and timed to the frame after.
        self.clock.watch(conditions[:1])
        await self.send(*keys)
        stages = []
        try:
            for number, condition in enumerate(conditions):
                while not condition():
                    if time.perf_counter() - started > self.timeout:
                        return None
                    await asyncio.sleep(0.002)
                state = time.perf_counter()
                if self.mode == "pilot":
                    await self.pilot.pause()
                    frame: float | None = time.perf_counter()
                else:
                    if number == 0:
                        frame = await self.clock.shown(number)
                    else:
                        # The rows are updated in the widgets; ask for a frame so that the one
                        # timed is drawn after them, not whatever next thing changes the
                        # screen (that may be seconds away when the re-match changed nothing
                        # on screen): an upper bound of when they are drawn.
                        self.app.screen.refresh()
                        frame = await self.clock.after(state)
                stages.append((state - started, (frame or state) - started))
        finally:
            self.clock.watch([])
        return stages

    def record(self, series: Series, stage: tuple[float, float] | None) -> None:
        if stage is None:
            series.timeouts += 1
            return
        series.states.append(stage[0])
        series.frames.append(stage[1])
        if self.progress.waiting:
            series.draining += 1

    async def settle(self) -> None:
        await asyncio.sleep(self.gap)

    async def untimed(self, *keys: str, until: Callable[[], bool] | None = None,
                      timeout: float | None = None) -> bool:
        await self.send(*keys)
        deadline = time.perf_counter() + (timeout or self.timeout)
        while until is not None and not until():
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True


def decisions_busy(app) -> bool:
    from textual.worker import WorkerState

    return any(
        (worker.group == "decisions" or "match" in (worker.group or ""))
        and worker.state in (WorkerState.PENDING, WorkerState.RUNNING)
        for worker in app.workers)


class Settled:
    """A condition: no decision worker running, then every message they posted handled (a
    callback queued behind them has run)."""

    def __init__(self, app) -> None:
        self.app, self.queued, self.ran = app, False, False

    def __call__(self) -> bool:
        if not self.queued:
            if decisions_busy(self.app):
                return False
            self.queued = True
            self.app.call_later(self._mark)
        return self.ran

    def _mark(self) -> None:
        if decisions_busy(self.app):  # a new worker came from the messages: wait again
            self.queued = False
        else:
            self.ran = True


async def focus_queue(app, driver: Driver) -> bool:
    queue = find_table(app, "queue")
    if queue is None:
        return False
    queue.focus()
    await asyncio.sleep(0.05)
    return True


async def ensure_open_face(app, driver: Driver, tries: int = 60) -> bool:
    """Move down the photo list until the face table shows an undecided face."""
    for _ in range(tries):
        faces = find_table(app, "faces")
        if faces is None:
            return False
        status = column(faces, "status")
        cells = row_cells(faces, cursor_key(faces))
        if cells is not None and status is not None and cells[status] not in (
                "rejected", "confirmed"):
            return True
        queue = find_table(app, "queue")
        if queue is None or queue.row_count < 2:
            return False
        row = queue.cursor_row
        key = "j" if row < queue.row_count - 1 else "k"
        if not await driver.untimed(key, until=lambda r=row, q=queue: q.cursor_row != r,
                                    timeout=5):
            return False
        await asyncio.sleep(0.05)
    return False


async def key_suite(app, driver: Driver, phase: str, presses: int,
                    budget: float) -> list[Series]:
    from textual.widgets import Input

    out: list[Series] = []
    await focus_queue(app, driver)

    # moving in the photo list
    move = Series("move (j/k, photo list)", phase)
    out.append(move)
    queue = find_table(app, "queue")
    started = time.perf_counter()
    if queue is None or queue.row_count < 2:
        move.note = "n/a: fewer than 2 photos in the list"
    else:
        for i in range(presses):
            if time.perf_counter() - started > budget:
                move.note = "budget spent"
                break
            row, last = queue.cursor_row, queue.row_count - 1
            key = ("j" if row < last else "k") if i % 2 == 0 else ("k" if row > 0 else "j")
            driver.record(move, (await driver.timed(
                [key], [lambda r=row: queue.cursor_row != r]) or [None])[0])
            await driver.settle()
            if move.timeouts >= 3:
                move.note = "stopped after 3 timeouts"
                break

    # filtering the photo list
    flt = Series("filter (f, photo list)", phase)
    out.append(flt)
    queue = find_table(app, "queue")
    try:
        has_f = "f" in app.active_bindings
    except Exception:
        has_f = False
    if queue is None or not has_f:
        flt.note = "n/a: no f binding"
    else:
        def view() -> tuple[int, str]:
            table = find_table(app, "queue")
            return (table.row_count, str(table.border_title)) if table else (0, "")

        original = view()
        started = time.perf_counter()
        for _ in range(presses):
            if time.perf_counter() - started > budget:
                flt.note = "budget spent"
                break
            before = view()
            driver.record(flt, (await driver.timed(
                ["f"], [lambda b=before: view() != b]) or [None])[0])
            await driver.settle()
            if flt.timeouts >= 3:
                flt.note = "stopped after 3 timeouts"
                break
        for _ in range(8):  # cycle back to the unfiltered list
            if view() == original:
                break
            before = view()
            await driver.untimed("f", until=lambda b=before: view() != b)
        if view() != original:
            flt.note = "could not cycle back to the first view"
        await focus_queue(app, driver)

    # reject, then undo
    reject, undo = Series("reject (x)", phase), Series("undo reject (z)", phase)
    out += [reject, undo]
    started = time.perf_counter()
    for _ in range(presses):
        if time.perf_counter() - started > budget:
            reject.note = "budget spent"
            break
        if not await ensure_open_face(app, driver):
            reject.note = undo.note = "n/a: no undecided face reachable"
            break
        faces, queue = find_table(app, "faces"), find_table(app, "queue")
        face_key, photo_key = cursor_key(faces), cursor_key(queue)
        status, state = column(faces, "status"), column(queue, "state")

        cells = row_cells(queue, photo_key)
        before = cells[state] if cells is not None and state is not None else ""

        def shows(wanted_face: Callable[[str], bool], photo_changed: bool, fk=face_key,
                  pk=photo_key, si=status, pi=state, was=before) -> Callable[[], bool]:
            """The face's status cell, or (the app moved to another photo) its photo's state
            cell: changed from before the reject, or back to it."""
            def check() -> bool:
                face = row_cells(find_table(app, "faces"), fk)
                if face is not None:
                    return wanted_face(face[si])
                photo = row_cells(find_table(app, "queue"), pk)
                if photo is None or pi is None:
                    return False
                return (photo[pi] != was) if photo_changed else (photo[pi] == was)
            return check

        driver.record(reject, (await driver.timed(
            ["x"], [shows(lambda s: s == "rejected", True)]) or [None])[0])
        await driver.settle()
        driver.record(undo, (await driver.timed(
            ["z"], [shows(lambda s: s != "rejected", False)]) or [None])[0])
        await driver.settle()
        if reject.timeouts + undo.timeouts >= 3:
            reject.note = "stopped after 3 timeouts"
            break

    # naming, then undo
    modal = Series("name: n → input ready", phase)
    named = Series("name: enter → face row named", phase)
    idle = Series("name: enter → all re-matched", phase)
    unname = Series("undo name (z) → all re-matched", phase)
    out += [modal, named, idle, unname]
    started = time.perf_counter()
    for _ in range(presses):
        if time.perf_counter() - started > budget:
            modal.note = "budget spent"
            break
        if not await ensure_open_face(app, driver):
            modal.note = "n/a: no undecided face reachable"
            break
        faces, queue = find_table(app, "faces"), find_table(app, "queue")
        face_key, photo_key = cursor_key(faces), cursor_key(queue)
        name_col = column(faces, "name")

        def has_name(fk=face_key, pk=photo_key, nc=name_col) -> bool:
            if isinstance(app.focused, Input):
                return False
            face = row_cells(find_table(app, "faces"), fk)
            if face is not None and nc is not None:
                return face[nc] == NAME
            photo = row_cells(find_table(app, "queue"), pk)
            return photo is not None and any(NAME in cell for cell in photo)

        opened = await driver.timed(["n"], [lambda: isinstance(app.focused, Input)])
        driver.record(modal, opened[0] if opened else None)
        if not opened:
            modal.note = "n/a: n opened no input"
            break
        app.focused.value = ""
        await driver.untimed(*NAME, until=lambda: getattr(app.focused, "value", "") == NAME)
        stages = await driver.timed(["enter"], [has_name, Settled(app)])
        driver.record(named, stages[0] if stages else None)
        driver.record(idle, stages[1] if stages else None)
        if stages is None:
            if isinstance(app.focused, Input):
                await driver.untimed("escape")
            break
        await driver.settle()
        stages = await driver.timed(["z"], [lambda h=has_name: not h(), Settled(app)])
        driver.record(unname, stages[1] if stages else None)
        await driver.settle()
    return out


async def run_app(args: argparse.Namespace, photos: list[Path], root: Path,
                  figures: dict[str, object]) -> list[Series]:
    from faceid_tui.config import Settings, open_session
    from faceid_tui.tui.app import FaceIdApp

    seed_bank(root / "id_bank", args.identities)
    inbox = root / "inbox"
    inbox.mkdir()
    settings = Settings(bank_dir=root / "id_bank", models_dir=REPO / "face_models",
                        detector=args.detector, embedder=args.embedder, device=args.device)
    session = open_session(settings, inbox, root / "out")
    with contextlib.suppress(ImportError):  # as the CLI does before Textual takes stderr
        from faceid_tui.engine.detect_pool import prepare_for_workers

        prepare_for_workers()
    try:
        app = FaceIdApp(session, images=args.images, watch=True)
    except TypeError:
        app = FaceIdApp(session)
    series: list[Series] = []
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            series = await drive(app, pilot, args, photos, inbox, figures)
    finally:
        with contextlib.suppress(Exception):
            session.close()
    return series


async def drive(app, pilot, args: argparse.Namespace, photos: list[Path], inbox: Path,
                figures: dict[str, object]) -> list[Series]:
    started = time.perf_counter()
    while True:
        state = str(getattr(app, "model_state", ""))
        if state.startswith("stopped"):
            raise RuntimeError(f"the app's processing stopped: {state}")
        if state and state != "starting" and not state.endswith("…"):
            break
        if time.perf_counter() - started > args.stall:
            raise RuntimeError(f"models not ready after {args.stall:.0f} s ({state})")
        await asyncio.sleep(0.2)
    figures["app_ready_s"] = time.perf_counter() - started
    print(f"app: ready in {figures['app_ready_s']:.1f} s ({app.model_state})", flush=True)
    clock = FrameClock(app)
    progress = Progress(app.session)
    poller = asyncio.create_task(progress.run())
    driver = Driver(app, pilot, clock, progress, args)
    series: list[Series] = []
    try:
        moments: dict[str, float] = {}

        def drop() -> None:
            moments["start"] = time.perf_counter()
            for index, photo in enumerate(photos):
                shutil.copyfile(photo, inbox / photo.name)
                if index == 0:
                    moments["first"] = time.perf_counter()
            moments["end"] = time.perf_counter()

        dropping = asyncio.create_task(asyncio.to_thread(drop))
        total = len(photos)
        start_keys_at = int(0.2 * total)
        drain_done = False
        last_print = time.perf_counter()
        stable_since, last_registered = time.perf_counter(), -1
        progress_changed = (-1, time.perf_counter())

        def finished() -> bool:
            nonlocal stable_since, last_registered
            if progress.registered != last_registered:
                last_registered, stable_since = progress.registered, time.perf_counter()
            if not dropping.done() or progress.waiting:
                return False
            # Identical files count once: accept fewer when nothing new came for 10 s.
            return (progress.registered >= total
                    or time.perf_counter() - stable_since > 10)

        stalled = False
        while not (finished() and progress.seen_at > moments.get("end", float("inf"))):
            if time.perf_counter() - stable_since > args.stall and progress.registered and (
                    time.perf_counter() - progress_changed[1] > args.stall):
                stalled = True
                print(f"app: no progress for {args.stall:.0f} s: giving up the wait", flush=True)
                break
            if progress.processed != progress_changed[0]:
                progress_changed = (progress.processed, time.perf_counter())
            if time.perf_counter() - last_print > 10:
                last_print = time.perf_counter()
                print(f"app: {progress.processed}/{total} processed, "
                      f"{progress.waiting} waiting", flush=True)
            if (not drain_done and "drain" not in args.skip
                    and progress.processed >= max(1, start_keys_at)):
                drain_done = True
                moments["keys"], moments["keys_processed"] = (progress.seen_at,
                                                              progress.processed)
                print(f"app: keys while draining (from {progress.processed}/{total} "
                      "processed)…", flush=True)
                series += await key_suite(app, driver, "draining", args.presses, args.budget)
                continue
            await asyncio.sleep(0.05)
        if not drain_done and "drain" not in args.skip:
            series.append(Series("keys while draining", "draining",
                                 note="n/a: the queue drained before a poll saw 20 %"))
        done_at = progress.idle_since or progress.seen_at
        await dropping
        span = done_at - moments["first"]
        figures["app_stalled"] = stalled
        figures.update({
            "drop_s": moments["end"] - moments["start"],
            "app_s": None if stalled else span,
            "app_photos": progress.processed,
            "app_errors": progress.counts["error"],
            "app_images_per_s": None if stalled or span <= 0 else progress.registered / span,
            "app_poll_resolution_s": POLL_S,
            "keys_while_draining": "drain" not in args.skip,
        })
        if "keys" in moments and not stalled and moments["keys"] > moments["first"]:
            before_keys = moments["keys"] - moments["first"]
            figures["app_images_per_s_before_keys"] = moments["keys_processed"] / before_keys
            if done_at > moments["keys"]:
                figures["app_images_per_s_during_keys"] = (
                    (progress.processed - moments["keys_processed"]) / (done_at - moments["keys"]))
        with contextlib.suppress(Exception):
            figures["app_faces"] = len(app.session.ledger.faces())
        print(f"app: {progress.processed}/{total} photos processed "
              + ("(stalled)" if stalled else f"in {span:.1f} s from the first copy")
              + f" (drop {figures['drop_s']:.2f} s)", flush=True)

        await pilot.pause()
        figures["rss_after_processing_mb"] = rss_mb()
        refresh = getattr(app, "refresh_screens", None)
        if callable(refresh):
            times = []
            for _ in range(20):
                began = time.perf_counter()
                refresh()
                frame = await clock.after(time.perf_counter(), timeout=30)
                times.append((frame or time.perf_counter()) - began)
                await pilot.pause()
            figures["rss_after_20_refreshes_mb"] = rss_mb()
            figures["refresh_to_frame_ms_p50"] = float(np.median(times) * 1000)
            figures["refresh_to_frame_ms_max"] = float(max(times) * 1000)
        else:
            figures["rss_after_20_refreshes_mb"] = None

        if "review" not in args.skip:
            print(f"app: keys with {progress.registered} photos in review…", flush=True)
            series += await key_suite(app, driver, "in review", args.presses, args.budget)
        figures["rss_end_mb"] = rss_mb()
    finally:
        progress.stop = True
        with contextlib.suppress(Exception):
            await poller
    return series


# -- report ------------------------------------------------------------------------------------
def fmt(value: object, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def report(command: str, figures: dict[str, object], series: list[Series]) -> None:
    scan, app = figures.get("scan_images_per_s"), figures.get("app_images_per_s")
    bare = figures.get("scan_images_per_s_without_startup")
    figures["app_over_scan"] = app / scan if app and scan else None
    figures["app_over_scan_without_startup"] = app / bare if app and bare else None
    early = figures.get("app_images_per_s_before_keys")
    figures["app_before_keys_over_scan"] = early / scan if early and scan else None
    print(f"\n{command}")
    print(f"{figures.get('photos')} LFW photos · {os.cpu_count()} cores · detector "
          f"{figures.get('detector')} · embedder {figures.get('embedder')} · device "
          f"{figures.get('device')} · textual {figures.get('textual')} · keys via "
          f"{figures.get('keys')}\n")
    rows = [
        ("scan start-up (1 photo)", fmt(figures.get("scan_startup_s"), " s")),
        ("scan whole process", fmt(figures.get("scan_s"), " s")),
        ("scan images/s" + (" (mean of the rounds: " + " / ".join(
            fmt(rate) for rate in figures["scan_rounds_images_per_s"]) + ")"
            if len(figures.get("scan_rounds_images_per_s") or []) > 1 else ""), fmt(scan)),
        ("scan images/s without start-up", fmt(bare)),
        ("scan faces (named)", f"{fmt(figures.get('scan_faces'))} "
                               f"({fmt(figures.get('scan_named_faces'))})"),
        ("app models + bank ready", fmt(figures.get("app_ready_s"), " s")),
        ("drop: copy into the inbox", fmt(figures.get("drop_s"), " s", 2)),
        ("app first copy → last processed", fmt(figures.get("app_s"), " s")),
        ("app images/s", fmt(app) + (" (keys pressed while draining)"
                                     if app and figures.get("keys_while_draining") else "")),
        ("app images/s until the keys began", fmt(figures.get("app_images_per_s_before_keys"))),
        ("app images/s after the keys began", fmt(figures.get("app_images_per_s_during_keys"))),
        ("app photos processed", f"{fmt(figures.get('app_photos'))}"
                                 + (" — stalled" if figures.get("app_stalled") else "")),
        ("app faces · errors", f"{fmt(figures.get('app_faces'))} · "
                               f"{fmt(figures.get('app_errors'))}"),
        ("app/scan (target ≥ 0.90)", fmt(figures.get("app_over_scan"), "", 2)),
        ("app/scan, app until the keys began", fmt(figures.get("app_before_keys_over_scan"),
                                                   "", 2)),
        ("app/scan without scan start-up", fmt(figures.get("app_over_scan_without_startup"),
                                               "", 2)),
        ("RSS after processing", fmt(figures.get("rss_after_processing_mb"), " MB", 0)),
        ("RSS after 20 refreshes", fmt(figures.get("rss_after_20_refreshes_mb"), " MB", 0)),
        ("full refresh → frame p50 / max",
         f"{fmt(figures.get('refresh_to_frame_ms_p50'), ' ms')} / "
         f"{fmt(figures.get('refresh_to_frame_ms_max'), ' ms')}"),
        ("RSS at the end", fmt(figures.get("rss_end_mb"), " MB", 0)),
    ]
    print("| figure | value |")
    print("| --- | --- |")
    for label, value in rows:
        print(f"| {label} | {value} |")
    print("\nkey → frame showing it (ms; state = the tables show it, before the frame)")
    print("| action | phase | n (draining) | p50 | p95 | max | state p50 | timeouts | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for item in series:
        s = item.summary()
        print(f"| {s['label']} | {s['phase']} | {s['n']} ({s['while_draining']}) | "
              f"{fmt(s.get('p50_ms'))} | {fmt(s.get('p95_ms'))} | {fmt(s.get('max_ms'))} | "
              f"{fmt(s.get('state_p50_ms'))} | {s['timeouts']} | {s['note']} |")


async def main_async(args: argparse.Namespace) -> None:
    import textual

    command = shlex.join([".venv/bin/python", "benchmarks/app_backlog.py", *sys.argv[1:]])
    photos = lfw_images(args.photos)
    if len(photos) < args.photos:
        print(f"only {len(photos)} LFW images available (asked {args.photos})", flush=True)
    figures: dict[str, object] = {
        "command": command, "photos": len(photos), "detector": args.detector,
        "embedder": args.embedder, "device": args.device, "keys": args.keys,
        "textual": textual.__version__, "cores": os.cpu_count()}
    series: list[Series] = []
    with tempfile.TemporaryDirectory(prefix="faceid-backlog-") as work:
        root = Path(work)
        photo_dir = root / "photos"
        photo_dir.mkdir()
        for photo in photos:
            shutil.copyfile(photo, photo_dir / photo.name)
        staged = sorted(photo_dir.iterdir())
        scans: list[dict[str, object]] = []
        bank = root / "scan" / "id_bank"
        for step in args.order.split(","):
            if step == "scan" and "scan" not in args.skip:
                if not bank.exists():
                    seed_bank(bank, args.identities)
                run_scan(args, photo_dir, bank, staged[0], scans)
            elif step == "app":
                (root / "app").mkdir()
                series = await run_app(args, staged, root / "app", figures)
        figures.update(scan_figures(scans))
    report(command, figures, series)
    if args.json:
        args.json.write_text(json.dumps(
            {**figures, "latency": [s.summary() for s in series]}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=10000, help="LFW photos (N)")
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help="folder holding faces/ and lfw/ (default: ../shared)")
    parser.add_argument("--presses", type=int, default=50, help="presses per action and phase")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds at most per action and phase")
    parser.add_argument("--key-timeout", type=float, default=60.0,
                        help="seconds a key may take before it counts as a timeout")
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between presses")
    parser.add_argument("--keys", choices=["driver", "pilot"], default="driver",
                        help="post key events as the terminal driver does (default), or "
                             "time await pilot.press() + pilot.pause()")
    parser.add_argument("--order", choices=["scan,app,scan", "scan,app", "app,scan"],
                        default="scan,app,scan",
                        help="the default times a scan before and after the app and "
                             "compares the app with their mean (the machine's speed drifts)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["scan", "drain", "review"],
                        help="leave out the scan, or the key figures of one phase")
    parser.add_argument("--identities", nargs="*",
                        help="bank identities from faces/identities (default: all)")
    parser.add_argument("--detector", default="auto")
    parser.add_argument("--embedder", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", default="none", choices=["auto", "halfcell", "unicode",
                                                             "none"],
                        help="the app's previews (default none: no terminal graphics here)")
    parser.add_argument("--stall", type=float, default=600.0,
                        help="give up waiting for the app after this many seconds without "
                             "progress")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the figures here too")
    args = parser.parse_args()
    set_shared(args.shared)
    # `kill -USR1 <pid>` prints every thread's stack (to the real stderr, not Textual's).
    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
