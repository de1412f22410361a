"""Exceptions that faceid shows to people: each says what went wrong, where, and how to fix it."""

from __future__ import annotations


class FaceIdError(Exception):
    """Base class for errors that are reported to the user as one clear line (no traceback)."""


class ModelError(FaceIdError):
    """A model file is missing, corrupt or cannot be prepared."""


class ImageDecodeError(FaceIdError):
    """A photo cannot be read or decoded; the message is a one-line reason."""


class InvalidNameError(FaceIdError):
    """An identity name is not allowed (it could escape the bank folder, or is empty)."""


class BankError(FaceIdError):
    """The identity bank refused an operation (unknown identity, name taken, ...)."""
