"""Face detectors behind one small protocol, found by name in a registry.

* ``hog`` — dlib's HOG + linear SVM frontal detector (default; fast on the CPU).
* ``cnn`` — dlib's CNN (MMOD) detector (more robust to pose, slow without CUDA).

Every detector returns :class:`DetectedBox` objects in ``(x, y, w, h)`` pixels of the image it
was given, clipped to the image; landmarks are found afterwards by :mod:`alignment`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from faceid_tui.engine.models import MMOD_DETECTOR, ModelStore

#: Photos up to this many pixels are upsampled once by default (finds faces down to ~40 px);
#: larger photos are searched at their own size, where faces are big enough already and an
#: upsampled pass would cost four times as much.
AUTO_UPSAMPLE_MAX_PIXELS = 1_500_000


@dataclass(frozen=True)
class DetectedBox:
    """A face rectangle in image pixels, top-left ``(x, y)`` plus width and height."""

    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass(frozen=True)
class DetectorOptions:
    """``upsample=None`` picks 1 for photos up to 1.5 Mpx and 0 above."""

    upsample: int | None = None
    min_face_size: int = 20

    def upsample_for(self, image: np.ndarray) -> int:
        if self.upsample is not None:
            return self.upsample
        return 1 if image.shape[0] * image.shape[1] <= AUTO_UPSAMPLE_MAX_PIXELS else 0


class Detector(Protocol):
    """Finds face rectangles in an RGB ``uint8`` image."""

    name: str

    def detect(self, image: np.ndarray) -> list[DetectedBox]: ...


def _clip_box(left: int, top: int, right: int, bottom: int, score: float,
              image: np.ndarray) -> DetectedBox | None:
    height, width = image.shape[:2]
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, right), min(height, bottom)
    if right - left < 2 or bottom - top < 2:
        return None
    return DetectedBox(left, top, right - left, bottom - top, float(score))


class HogDetector:
    """dlib's frontal HOG detector. Needs no model file."""

    name = "hog"

    def __init__(self, options: DetectorOptions) -> None:
        import dlib

        self.options = options
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        rects, scores, _ = self._detector.run(image, self.options.upsample_for(image), 0.0)
        boxes = []
        for rect, score in zip(rects, scores, strict=True):
            box = _clip_box(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1,
                            score, image)
            if box and min(box.w, box.h) >= self.options.min_face_size:
                boxes.append(box)
        return boxes


class CnnDetector:
    """dlib's MMOD CNN detector (``mmod_human_face_detector.dat``)."""

    name = "cnn"

    def __init__(self, options: DetectorOptions, models: ModelStore) -> None:
        import dlib

        self.options = options
        self._detector = dlib.cnn_face_detection_model_v1(str(models.verified_path(MMOD_DETECTOR)))

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        detections = self._detector(image, self.options.upsample_for(image))
        boxes = []
        for detection in detections:
            rect = detection.rect
            box = _clip_box(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1,
                            detection.confidence, image)
            if box and min(box.w, box.h) >= self.options.min_face_size:
                boxes.append(box)
        return boxes


DetectorFactory = Callable[[DetectorOptions, ModelStore], Detector]

DETECTORS: dict[str, DetectorFactory] = {
    "hog": lambda options, _models: HogDetector(options),
    "cnn": lambda options, models: CnnDetector(options, models),
}


def create_detector(name: str, options: DetectorOptions, models: ModelStore) -> Detector:
    """Build the detector registered under ``name`` (``hog`` or ``cnn``)."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return factory(options, models)
