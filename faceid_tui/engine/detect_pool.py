"""Decode + detect + align in worker processes, so the CPU-bound stages that release no GIL
(PIL decoding, dlib HOG, landmarks) run on every core while the main process embeds.

Workers are started with ``spawn``: they import numpy, Pillow and dlib but never torch, so they
start in about a second, hold no copy of FaceNet, and are not forked from a process that
already runs torch's thread pool (fork after threads can deadlock).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from faceid_tui.engine.detection import DetectorOptions
from faceid_tui.engine.face_finder import FaceFinder, PhotoResult
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.photo_feed import END, FeedEnd, PhotoFeed
from faceid_tui.engine.priority import lower_process_priority

_WORKER: FaceFinder | None = None  # this worker process's own
#: How long an idle stream waits for a new photo before it checks for cancellation again.
IDLE_WAIT_S = 0.2


def prepare_for_workers() -> None:
    """Start multiprocessing's resource tracker now, while ``sys.stderr`` is still the real
    one. A full-screen UI (Textual) replaces it with an object whose ``fileno()`` is -1, and a
    tracker started later, when the first pool spawns, then fails with "bad value(s) in
    fds_to_keep". Call it before such a UI starts."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _start_worker(detector: str, options: DetectorOptions, embedder: str,
                  models_dir: str) -> None:
    global _WORKER
    _follow_parent()
    lower_process_priority()  # below the embedding it feeds (see engine/priority.py)
    _WORKER = FaceFinder(ModelStore(Path(models_dir)), detector, options, embedder)


def _follow_parent() -> None:
    """Make this worker end with the process that started it, and let go of its output.

    A worker inherits the parent's stdout and stderr; were it to outlive a parent killed with
    SIGKILL, whoever reads the parent's output (a pipe in a script, the terminal) would wait for
    the orphan, and the orphan itself would wait forever on the pool's queue. So the worker
    writes nowhere (results travel through the pool's pipes), asks Linux to kill it when the
    parent dies, and watches the parent's sentinel, which also covers a parent that died
    before this worker got here (``os.getppid()`` would then already name the reaper).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to follow
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if not parent.is_alive():  # the parent died before the request took hold
        os._exit(1)

    def watch() -> None:
        parent.join()  # returns when the parent's end of the sentinel pipe closes
        os._exit(1)

    threading.Thread(target=watch, name="faceid-parent-watch", daemon=True).start()


def _find_in_worker(path: Path, fallback_center: bool, keep_image: bool) -> PhotoResult:
    assert _WORKER is not None, "the pool's initializer builds the finder first"
    return _WORKER.find(path, fallback_center, keep_image)


def single_threaded_blas() -> None:
    """BLAS (numpy's OpenBLAS, and the one OpenCV bundles) runs on the calling thread alone
    in this process from now on.

    Once detect processes keep every core busy, BLAS helper threads only take cores from them:
    the products here are small (a chunk of faces against the bank or the pending faces), and
    OpenBLAS's helpers spin after each call, at the priority of the thread that imported numpy
    (above the detect processes). Measured in the app, 1,000 photos dropped, alternated
    rounds: 68-72 s with OpenBLAS's default two threads, 62-66 s with one.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # kept: not used as a context manager


class DetectPool:
    """A pool of ``workers`` processes, each with its own detector and aligner (cutting the
    chip the embedder ``embedder`` reads). Starting one makes this process's BLAS single-
    threaded for good (see :func:`single_threaded_blas`)."""

    def __init__(self, workers: int, detector: str, options: DetectorOptions, embedder: str,
                 models_dir: Path) -> None:
        single_threaded_blas()
        self.workers = workers
        #: Photos this pool's processes found faces in (not counting any done here instead).
        self.worker_results = 0
        self._executor = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker, initargs=(detector, options, embedder, str(models_dir)))

    def map_ordered(self, paths: Iterator[Path], *, fallback_center: bool, keep_images: bool,
                    window: int, should_stop: Callable[[], bool] | None = None,
                    on_broken: Callable[[Path], PhotoResult] | None = None
                    ) -> Iterator[PhotoResult]:
        """Results in the order of ``paths``, with at most ``window`` photos in flight (that
        bounds memory; a window of a few batches keeps every worker busy while the caller
        embeds). If a worker dies (a native crash in a decoder or dlib), the photos still in
        flight and the rest go to ``on_broken`` in this process instead."""

        def take(_timeout: float) -> Path | FeedEnd:
            path = next(paths, None)
            return END if path is None else Path(path)

        for result in self._map(take, fallback_center, keep_images, window, should_stop,
                                on_broken):
            if result is not None:
                yield result

    def map_feed(self, feed: PhotoFeed, *, fallback_center: bool, keep_images: bool,
                 window: int, should_stop: Callable[[], bool] | None = None,
                 on_broken: Callable[[Path], PhotoResult] | None = None
                 ) -> Iterator[PhotoResult | None]:
        """Like :meth:`map_ordered` for a feed that grows while it runs; yields None whenever
        nothing is in flight and nothing waits (the caller may flush what it holds), until
        the feed is closed and drained or ``should_stop`` says so."""
        yield from self._map(feed.take, fallback_center, keep_images, window, should_stop,
                             on_broken)

    def _map(self, take: Callable[[float], Path | FeedEnd | None], fallback_center: bool,
             keep_images: bool, window: int, should_stop: Callable[[], bool] | None,
             on_broken: Callable[[Path], PhotoResult] | None
             ) -> Iterator[PhotoResult | None]:
        pending: deque[tuple[Path, Future | None]] = deque()  # None: not sent to a worker
        broken = False
        ended = False

        def top_up(wait: float) -> None:
            nonlocal broken, ended
            while not ended and len(pending) < window:
                # Wait only when idle: finished results must not wait for new arrivals.
                path = take(0.0 if pending else wait)
                if path is END:
                    ended = True
                    return
                if path is None:
                    return
                assert isinstance(path, Path)
                future = None
                if not broken:
                    try:
                        future = self._executor.submit(_find_in_worker, path,
                                                       fallback_center, keep_images)
                    except BrokenProcessPool:
                        broken = True
                pending.append((path, future))

        top_up(IDLE_WAIT_S)
        while pending or not ended:
            if should_stop and should_stop():
                return
            if not pending:
                yield None  # idle
                top_up(IDLE_WAIT_S)
                continue
            path, future = pending.popleft()
            result = None
            if future is not None:
                try:
                    result = future.result()
                    self.worker_results += 1
                except BrokenProcessPool:
                    broken = True
            if result is None:
                if on_broken is None:
                    raise BrokenProcessPool(f"a detect worker died before {path} was read")
                result = on_broken(path)
            yield result
            top_up(IDLE_WAIT_S)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DetectPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
