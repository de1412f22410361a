"""Identity names: what is allowed, so that no name can escape ``id_bank/``.

A name becomes a folder name, so it is validated strictly: Unicode letters and digits, space,
and ``_ - . '``; no path separators, no ``..``, no leading dot or space, no control characters.
Names are normalised to Unicode NFC, so names that differ only by normalisation are one name.
"""

from __future__ import annotations

import unicodedata

from faceid_tui.errors import InvalidNameError

MAX_NAME_LENGTH = 100
_ALLOWED_PUNCTUATION = frozenset(" _-.'")


def validate_identity_name(raw: str) -> str:
    """Return the normalised name, or raise :class:`InvalidNameError` saying what is wrong."""
    if not isinstance(raw, str):
        raise InvalidNameError("an identity name must be text")
    name = unicodedata.normalize("NFC", raw)
    shown = ascii(raw)
    if not name.strip():
        raise InvalidNameError("an identity name cannot be empty")
    if name != name.strip():
        raise InvalidNameError(f"identity name {shown} starts or ends with a space; remove it")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"identity name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if "/" in name or "\\" in name:
        raise InvalidNameError(
            f"identity name {shown} contains a path separator; names cannot hold / or \\"
        )
    if ".." in name:
        raise InvalidNameError(f"identity name {shown} contains '..'; use another name")
    if name.startswith("."):
        raise InvalidNameError(f"identity name {shown} starts with a dot; remove the dot")
    for char in name:
        if char in _ALLOWED_PUNCTUATION:
            continue
        category = unicodedata.category(char)
        if category[0] == "L" or category in ("Nd", "Mn", "Mc"):
            continue  # letters, digits, and the combining marks of letters
        reason = "a control character" if category[0] == "C" else f"the character {char!r}"
        raise InvalidNameError(
            f"identity name {shown} contains {reason}; use letters, digits, space and _ - . '"
        )
    return name
