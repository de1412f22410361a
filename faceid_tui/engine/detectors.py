"""The one registry of face detectors: each name and how to build it.

* ``hog`` — dlib's HOG (:class:`detection.HogDetector`);
* ``cnn`` — dlib's MMOD CNN, converted (:class:`dlib_mmod.MmodDetector`);
* ``hog+cnn`` — HOG, then the CNN on the photos where HOG found no face (:class:`RetryDetector`);
* ``hog,cnn`` — the default of the accurate mode (config.AUTO_DETECTOR): HOG; on a portrait
  (one face of at least :data:`PORTRAIT_MIN_FACE_FRACTION` of the short side) that is all;
  on any other photo HOG again, for faces from 18 px (``detection.small_face_options``: up
  to 4×, at most 16 Mpx), with the CNN adding the turned faces HOG misses
  (:class:`CascadeDetector` of a :class:`UnionDetector`). On the dev group photos it finds
  18/18 and 51/53 faces (hog+cnn: 10/18, 12/53) with no false box there or on the non-face
  photos, for 1.4–2.2 CPU s a group photo (hog+cnn: 0.1–0.3 s) and about a portrait's HOG
  time on portraits; 0.97 of the group faces at 1080p, 4K and 12 Mpx, 3.5 s a photo
  (benchmarks/detector_recall.py [--big], one thread).

The CNN's module loads on use, so a HOG-only run never imports onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from faceid_tui.engine.detection import (
    DetectedBox,
    Detector,
    DetectorOptions,
    HogDetector,
    small_face_options,
)
from faceid_tui.engine.models import ModelStore

#: The most pixels the CNN searches when it retries a photo HOG found no face in. MMOD's cost
#: grows with the pixels searched: with the converted detector on one thread, 0.22 s for a
#: 250×250 photo searched at twice its size (0.25 Mpx), 1.4 s for a 1920×1080 photo at its own
#: size, 0.33 s with this cap (half size: faces from about 165 px); dlib-bin's own took 2.5 s,
#: 21 s and 5.0 s (faceless photos of ../shared/faces, CPU seconds, benchmarks/mmod_speed.py,
#: cores shared with other jobs). The cap was set when dlib-bin ran the retry; HOG's misses are
#: mostly turned heads in portraits, and a faceless photo, the usual case for a retry, costs a
#: third of a second rather than seconds.
RETRY_MAX_SEARCH_PIXELS = 500_000
#: The most pixels the CNN of ``hog,cnn`` searches.
UNION_CNN_MAX_SEARCH_PIXELS = 2_000_000


class RetryDetector:
    """One detector, then another on the photos where the first found nothing."""

    def __init__(self, first: Detector, retry: Detector) -> None:
        self.name = f"{first.name}+{retry.name}"
        self.first = first
        self.retry = retry

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        return self.first.detect(image) or self.retry.detect(image)


#: A box of the second detector of a :class:`UnionDetector` is the same face as a box of the
#: first when their IoU reaches this. HOG and MMOD frame a face differently (MMOD's box is
#: smaller or shifted up): on the dev photos (71 group faces, 22 portraits) the two boxes of
#: one face had IoU 0.56–0.93 (covering 76–100 % of the smaller box), while a box and its
#: nearest box of another face never overlapped at all (IoU 0).
UNION_SAME_FACE_IOU = 0.3

#: :func:`is_portrait`: a photo where HOG found one face at least this share of the short side
#: is a portrait, and the small-face and CNN passes are skipped. On the 64 dev portraits where
#: HOG finds one face it is 0.20–0.45 of the short side (LFW: 0.38–0.45); the faces of the 11
#: group photos are 0.03–0.26 of theirs, and HOG finds one face in none of them.
PORTRAIT_MIN_FACE_FRACTION = 0.15


def box_iou(a: DetectedBox, b: DetectedBox) -> float:
    left, top = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inner = max(0, right - left) * max(0, bottom - top)
    return inner / float(a.area + b.area - inner) if inner else 0.0


def merge(first: list[DetectedBox], second: list[DetectedBox],
          same_face_iou: float = UNION_SAME_FACE_IOU) -> list[DetectedBox]:
    """``first``'s boxes, then those of ``second`` that overlap none of them (one per face)."""
    return first + [box for box in second
                    if all(box_iou(box, other) < same_face_iou for other in first)]


class UnionDetector:
    """Two detectors on every photo: the first one's boxes, and the second one's boxes of the
    faces the first missed (:func:`merge`)."""

    def __init__(self, first: Detector, second: Detector) -> None:
        self.name = f"{first.name}|{second.name}"
        self.first = first
        self.second = second

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        return merge(self.first.detect(image), self.second.detect(image))


def is_portrait(image: np.ndarray, boxes: list[DetectedBox]) -> bool:
    """One face, and a big one: at least :data:`PORTRAIT_MIN_FACE_FRACTION` of the short side."""
    return len(boxes) == 1 and \
        min(boxes[0].w, boxes[0].h) >= PORTRAIT_MIN_FACE_FRACTION * min(image.shape[:2])


class CascadeDetector:
    """A fast detector, then a thorough one on the photos where the fast one's boxes are not
    ``enough(image, boxes)``; the thorough one's boxes then stand alone."""

    def __init__(self, fast: Detector, thorough: Detector,
                 enough: Callable[[np.ndarray, list[DetectedBox]], bool],
                 name: str | None = None) -> None:
        self.name = name or f"{fast.name},{thorough.name}"
        self.fast = fast
        self.thorough = thorough
        self.enough = enough

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        found = self.fast.detect(image)
        return found if self.enough(image, found) else self.thorough.detect(image)


DetectorFactory = Callable[[DetectorOptions, ModelStore], Detector]


def _mmod(options: DetectorOptions, models: ModelStore) -> Detector:
    from faceid_tui.engine.dlib_mmod import MmodDetector

    return MmodDetector(options, models)


DETECTORS: dict[str, DetectorFactory] = {
    "hog": lambda options, _models: HogDetector(options),
    "cnn": _mmod,
    "hog+cnn": lambda options, models: RetryDetector(
        HogDetector(options),
        _mmod(replace(options, max_search_pixels=RETRY_MAX_SEARCH_PIXELS), models)),
    "hog,cnn": lambda options, models: CascadeDetector(
        HogDetector(options),
        UnionDetector(
            HogDetector(small_face_options(options)),
            _mmod(replace(options, max_search_pixels=UNION_CNN_MAX_SEARCH_PIXELS), models)),
        is_portrait, name="hog,cnn"),
}


#: The registered detectors that run dlib's CNN (so ``faceid models`` converts it for them).
CNN_DETECTORS = frozenset({"cnn", "hog+cnn", "hog,cnn"})


def create_detector(name: str, options: DetectorOptions, models: ModelStore) -> Detector:
    """Build the detector registered under ``name`` (``hog``, ``cnn`` or ``hog+cnn``)."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return factory(options, models)
