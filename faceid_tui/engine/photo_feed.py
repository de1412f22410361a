"""A feed of photo paths for a long-running :meth:`Pipeline.stream
<faceid_tui.engine.pipeline.Pipeline.stream>`: producers (the app's inbox intake) ``put``
paths from any thread while the stream runs, so arrivals join the work already under way
instead of starting a new run (and new detect processes) per batch.

The stream asks with :meth:`PhotoFeed.take`: without blocking while it still has photos in
flight (so results already finished are handed on at once), blocking briefly once it is idle
(so it can notice cancellation). A closed feed ends the stream when it is drained.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from pathlib import Path


class FeedEnd:
    """The marker :meth:`PhotoFeed.take` returns once the feed is closed and drained."""

    def __repr__(self) -> str:
        return "END"


END = FeedEnd()


class PhotoFeed:
    def __init__(self, paths: Iterable[Path] = ()) -> None:
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._closed = threading.Event()
        for path in paths:
            self.put(path)

    def put(self, path: Path) -> None:
        if self._closed.is_set():
            raise RuntimeError("the photo feed is closed")
        self._queue.put(Path(path))

    def close(self) -> None:
        """No more photos: the stream ends once the ones already put are done."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def __len__(self) -> int:
        """Photos put and not taken yet (approximate while producers run)."""
        return self._queue.qsize()

    def take(self, timeout: float = 0.0) -> Path | FeedEnd | None:
        """The next path; None when none arrived within ``timeout`` seconds (0: don't wait);
        :data:`END` once the feed is closed and empty."""
        try:
            if timeout > 0:
                return self._queue.get(timeout=timeout)
            return self._queue.get_nowait()
        except queue.Empty:
            return END if self._closed.is_set() and self._queue.empty() else None
