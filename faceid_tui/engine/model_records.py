"""Derived model files and the records that say what they were built from.

A file that faceid builds from another (FaceNet's ONNX export from its ``.pt``, dlib's
networks converted from their ``.dat``) gets a ``<file>.json`` record beside it: the SHA-256
of its source, its own SHA-256 and the recipe's settings. It is reused only while all three
still match; otherwise it is rebuilt. The model is written first and the record last, both
atomically, so a crash in between leaves a record that does not match the new file and the
next start rebuilds rather than trusting it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceid_tui.fsutil import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file


def record_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def read_record(model_path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(model_path).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_current(model_path: Path, source_sha256: str, settings: dict[str, Any]) -> bool:
    """True when ``model_path`` was built from this source with these settings and is intact
    (its bytes still hash to what was recorded when it was written)."""
    record = read_record(model_path)
    if record is None or not model_path.is_file():
        return False
    return (record.get("source_sha256") == source_sha256
            and record.get("settings") == settings
            and record.get("sha256") == sha256_file(model_path))


def write_model(model_path: Path, data: bytes, source: Path, source_sha256: str,
                settings: dict[str, Any], extra: dict[str, Any],
                built_with: dict[str, str]) -> None:
    """Write a derived model file and then its record (``built_with``: tool versions)."""
    atomic_write_bytes(model_path, data)
    record = {
        "format": 1,
        "source": source.name,
        "source_sha256": source_sha256,
        "sha256": sha256_bytes(data),
        "settings": settings,
        "built_with": built_with,
        **extra,
    }
    atomic_write_text(record_path(model_path), json.dumps(record, indent=2, sort_keys=True) + "\n")
