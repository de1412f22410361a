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
    """Photos were added to the ledger."""

    added: frozenset[str] = frozenset()


@dataclass
class PhotosProcessed(Message):
    """Photos were stored; the app takes their hashes from its own set (coalesced)."""


@dataclass
class DecisionsChanged(Message):
    """Decisions, the bank or the threshold changed the rows of these photos (None: every
    row, after edits elsewhere)."""

    note: str = ""
    changed: frozenset[str] | None = None
    #: True for the photo a decision was just made on: the screen moves to what is open next.
    decided: bool = False
    #: Rows whose names or tiers a re-match changed (new name, threshold): they get the dot.
    marked: frozenset[str] | None = None


@dataclass
class WorkerFailed(Message):
    message: str
