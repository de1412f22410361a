"""Annotated copies of photos: numbered boxes, names and scores drawn with OpenCV, written
atomically beside a JSON sidecar that lists every face."""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from faceid_tui.fsutil import atomic_write_bytes, atomic_write_text

#: BGR colours by match status: green named, yellow likely, amber unsure, red unknown.
STATUS_COLOURS = {
    "known": (60, 180, 75),
    "confirmed": (60, 180, 75),
    "likely": (0, 225, 225),
    "ambiguous": (0, 190, 255),
    "conflict": (200, 60, 200),
    "unknown": (60, 60, 230),
    "rejected": (128, 128, 128),
}
#: Statuses whose name is a suggestion: drawn with a question mark after it.
TENTATIVE_STATUSES = frozenset({"likely", "ambiguous", "conflict"})


@dataclass(frozen=True)
class FaceLabel:
    box: tuple[int, int, int, int]  # x, y, w, h
    name: str | None
    score: float | None
    status: str


def draw_annotations(image_rgb: np.ndarray, labels: list[FaceLabel], *,
                     scale: float | None = None, highlight: int | None = None,
                     numbers_only: bool = False) -> np.ndarray:
    """A BGR copy of the image with one numbered, labelled box per face.

    ``scale`` sets text size and line width (default: from the image size); the face at index
    ``highlight`` gets a white box and ``numbers_only`` leaves names out, for small previews.
    """
    canvas = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    if scale is None:
        scale = max(0.4, min(2.0, max(canvas.shape[:2]) / 1000))
    thickness = max(1, round(2 * scale))
    for number, label in enumerate(labels, start=1):
        x, y, w, h = label.box
        colour = STATUS_COLOURS.get(label.status, (255, 255, 255))
        if highlight == number - 1:
            colour = (255, 255, 255)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        name = label.name if label.name else "unknown"
        if label.name and label.status in TENTATIVE_STATUSES:
            name += "?"
        text = f"{number} {name}" + (f" {label.score:.2f}" if label.score is not None else "")
        if numbers_only:
            text = str(number)
        # OpenCV's Hershey fonts draw ASCII only: keep the letters' base forms (é → e).
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode() or "?"
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                     thickness)
        top = y - text_h - baseline - 4
        if top < 0:  # no room above the box: write inside it
            top = y
        cv2.rectangle(canvas, (x, top), (x + text_w + 4, top + text_h + baseline + 4), colour,
                      cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + text_h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas


def annotated_paths(out_dir: Path, source: Path) -> tuple[Path, Path]:
    """Where the annotated copy and the sidecar of ``source`` go."""
    stem = source.stem or "photo"
    return out_dir / f"{stem}.faceid.jpg", out_dir / f"{stem}.faceid.json"


def write_annotated(out_dir: Path, source: Path, image_rgb: np.ndarray,
                    labels: list[FaceLabel], record: dict[str, object]) -> tuple[Path, Path]:
    """Write the annotated JPEG and its JSON sidecar atomically; return both paths."""
    image_path, sidecar_path = annotated_paths(Path(out_dir), source)
    ok, encoded = cv2.imencode(".jpg", draw_annotations(image_rgb, labels),
                               [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise OSError(f"OpenCV could not encode the annotated copy of {source}")
    atomic_write_bytes(image_path, encoded.tobytes())
    atomic_write_text(sidecar_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return image_path, sidecar_path


def contact_sheet(faces_rgb: list[np.ndarray], *, columns: int = 4, cell: int = 96,
                  highlight: int | None = None) -> np.ndarray:
    """The faces side by side in a grid of square cells (RGB), the one at ``highlight``
    framed in white: a group's faces at a glance in a terminal preview."""
    count = max(1, len(faces_rgb))
    columns = max(1, min(columns, count))
    rows = (count + columns - 1) // columns
    sheet = np.full((rows * cell, columns * cell, 3), 32, dtype=np.uint8)
    for number, face in enumerate(faces_rgb):
        top, left = (number // columns) * cell, (number % columns) * cell
        height, width = face.shape[:2]
        factor = (cell - 4) / max(height, width, 1)
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        small = cv2.resize(face, size, interpolation=cv2.INTER_AREA)
        y, x = top + (cell - size[1]) // 2, left + (cell - size[0]) // 2
        sheet[y:y + size[1], x:x + size[0]] = small
        if number == highlight:
            cv2.rectangle(sheet, (left + 1, top + 1), (left + cell - 2, top + cell - 2),
                          (255, 255, 255), 2)
    return sheet
