"""Messages the workers post to the app (thread-safe ``post_message``)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class ModelsLoading(Message):
    """The processing worker started loading models (can take several seconds)."""


@dataclass
class BankEmbedding(Message):
    """The bank's photos are being embedded (new ones, or all after a change of model)."""

    done: int
    total: int


@dataclass
class ModelsReady(Message):
    #: What the status line shows: the networks and FaceNet's weights.
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
