"""Alignment: 5-point landmarks and the 160×160 face chips FaceNet reads.

A chip is cut with ``dlib.get_face_chip`` from the 5 landmarks (eyes' corners, nose), which
rotates and scales the face to a canonical position. ``CHIP_PADDING`` is the seed recipe's
value; it is part of the embedder's model id because thresholds depend on the crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from faceid_tui.engine.detection import DetectedBox
from faceid_tui.engine.models import SHAPE_PREDICTOR_5, ModelStore

CHIP_SIZE = 160
CHIP_PADDING = 0.4


@dataclass(frozen=True)
class ChipSpec:
    """How a chip is cut: its side in pixels and dlib's padding around the landmark template
    (the chip spans ``1 + 2 * padding`` template units)."""

    size: int
    padding: float

    @property
    def alignment_id(self) -> str:
        return f"dlib5-chip{self.size}-pad{self.padding:g}"


#: FaceNet's chip; each embedder names the chip it reads in its registry entry.
FACENET_CHIP = ChipSpec(CHIP_SIZE, CHIP_PADDING)
ALIGNMENT_ID = FACENET_CHIP.alignment_id
#: The accurate mode's master chip: both of its networks' chips are downscaled from it.
FUSED_CHIP = ChipSpec(360, CHIP_PADDING)


@dataclass(frozen=True)
class AlignedFace:
    """A face chip ready for the embedder, with the landmarks it was cut from."""

    chip: np.ndarray  # size × size × 3, RGB uint8, as the aligner's ChipSpec says
    landmarks: np.ndarray  # 5 × 2 float, image pixels


class Aligner:
    """Finds 5 landmarks in a face box and cuts the aligned chip."""

    def __init__(self, models: ModelStore, chip: ChipSpec = FACENET_CHIP) -> None:
        import dlib

        self._dlib = dlib
        self.chip = chip
        self._predictor = dlib.shape_predictor(str(models.verified_path(SHAPE_PREDICTOR_5)))

    def align(self, image: np.ndarray, box: DetectedBox) -> AlignedFace:
        rect = self._dlib.rectangle(box.x, box.y, box.x + box.w - 1, box.y + box.h - 1)
        shape = self._predictor(image, rect)
        chip = self._dlib.get_face_chip(image, shape, size=self.chip.size,
                                        padding=self.chip.padding)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        return AlignedFace(np.ascontiguousarray(chip, dtype=np.uint8), landmarks)


def center_crop_chip(image: np.ndarray,
                     size: int = CHIP_SIZE) -> tuple[np.ndarray, DetectedBox]:
    """A chip from the central square of the image, for photos where no face was detected
    but the caller knows one is there (e.g. pre-cropped, pre-aligned face photos)."""
    import cv2

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top : top + side, left : left + side]
    chip = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(chip), DetectedBox(left, top, side, side, 0.0)


def standardise(chips: np.ndarray) -> np.ndarray:
    """RGB uint8 chips (N×H×W×3) to FaceNet's input: float32 ``(x - 127.5) / 128``, NCHW.

    This fixed standardisation is what the 2018 FaceNet weights were trained with; BGR input
    or per-image prewhitening measurably hurt.
    """
    scaled = (chips.astype(np.float32) - 127.5) / 128.0
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))


def crop_with_margin(image: np.ndarray, box: tuple[int, int, int, int],
                     margin: float = 0.6) -> tuple[np.ndarray, list[int]]:
    """The face box grown by ``margin`` × its size on every side (clipped to the image), and
    the face's box inside that crop. The margin keeps enough context for the detector."""
    x, y, w, h = box
    pad = round(margin * max(w, h))
    left, top = max(0, x - pad), max(0, y - pad)
    right, bottom = min(image.shape[1], x + w + pad), min(image.shape[0], y + h + pad)
    return image[top:bottom, left:right].copy(), [x - left, y - top, w, h]
