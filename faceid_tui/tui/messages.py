"""Messages the workers post to the app (thread-safe ``post_message``)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class ModelsLoading(Message):
    """The processing worker started loading models (can take several seconds)."""


@dataclass
class ModelsReady(Message):
    embedder: str
    device: str


@dataclass
class QueueChanged(Message):
    """Photos were added to the ledger (or dropped)."""


@dataclass
class PhotosProcessed(Message):
    shas: list[str]
    seconds: float


@dataclass
class DecisionsChanged(Message):
    """Decisions or the bank changed: every table must be refreshed."""

    note: str = ""
    changed: frozenset[str] = frozenset()


@dataclass
class WorkerFailed(Message):
    message: str
