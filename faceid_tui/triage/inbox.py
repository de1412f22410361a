"""The inbox: which files count as photos, when a file is complete, and watching for new ones.

* Photos are files with an image extension, anywhere below the inbox. Hidden files and
  folders (``.DS_Store``, ``.partial/``), editor backups (``~``) and download or copy leftovers
  (``.part``, ``.tmp``, ``.crdownload``) are ignored; a symlink is followed only when its
  target lies inside the inbox.
* A file is read only once its size and modification time have stayed the same for a short
  while, so a photo still being copied in is not read half-written.
* New files are found by watchdog (inotify on Linux), subfolders included.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from faceid_tui.engine.decode import is_image_name

STABLE_FOR_S = 0.5
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", "~")


def is_inbox_photo(path: Path, inbox: Path) -> bool:
    """True for a photo faceid should read: see the module docstring for the rules."""
    try:
        relative = path.relative_to(inbox)
    except ValueError:
        return False
    if any(part.startswith(".") for part in relative.parts):
        return False
    if path.name.lower().endswith(IGNORED_SUFFIXES) or not is_image_name(path):
        return False
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except OSError:
            return False
        if not target.is_relative_to(inbox.resolve()):
            return False
    return path.is_file()


def existing_photos(inbox: Path) -> list[Path]:
    """Every photo already in the inbox, oldest first (so the queue follows arrival)."""
    if not inbox.is_dir():
        return []
    found = [path for path in inbox.rglob("*") if is_inbox_photo(path, inbox)]

    def mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=lambda path: (mtime(path), str(path)))


class ArrivalTracker:
    """Debounces file events. A path is *ready* once its size and modification time have
    not changed for ``stable_for`` seconds (and it is not empty); a path that vanishes is
    dropped. Many events for one file (created, modified…, closed) collapse into one."""

    def __init__(self, stable_for: float = STABLE_FOR_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stable_for = stable_for
        self._clock = clock
        self._pending: dict[Path, tuple[tuple[int, int] | None, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def touch(self, path: Path) -> None:
        self._pending[path] = (None, self._clock())

    def ready(self) -> list[Path]:
        now = self._clock()
        done = []
        for path, (seen, since) in list(self._pending.items()):
            try:
                stat = os.stat(path)
            except OSError:
                del self._pending[path]  # deleted or renamed away before it was read
                continue
            current = (stat.st_size, stat.st_mtime_ns)
            if current != seen:
                self._pending[path] = (current, now)
            elif stat.st_size > 0 and now - since >= self.stable_for:
                del self._pending[path]
                done.append(path)
        return done


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: Path, on_file: Callable[[Path], None]) -> None:
        self.inbox = inbox
        self.on_file = on_file

    def _maybe(self, raw: str | bytes) -> None:
        path = Path(os.fsdecode(raw))
        if is_inbox_photo(path, self.inbox):
            self.on_file(path)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._maybe(event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._maybe(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        # A download renamed from photo.jpg.part to photo.jpg arrives here.
        if event.is_directory:
            for path in existing_photos(Path(os.fsdecode(event.dest_path))):
                self.on_file(path)
        else:
            self._maybe(event.dest_path)


class InboxWatcher:
    """Calls ``on_file(path)`` (from watchdog's thread) for photos that appear or change."""

    def __init__(self, inbox: Path, on_file: Callable[[Path], None]) -> None:
        self.inbox = Path(inbox)
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(_Handler(self.inbox, on_file), str(self.inbox), recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
