"""The one registry of face detectors: each name and how to build it.

* ``hog`` — dlib's HOG (:class:`detection.HogDetector`);
* ``cnn`` — dlib's MMOD CNN, converted (:class:`dlib_mmod.MmodDetector`);
* ``hog+cnn`` — HOG, then the CNN on the photos where HOG found no face (:class:`RetryDetector`).

The CNN's module loads on use, so a HOG-only run never imports onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from faceid_tui.engine.detection import DetectedBox, Detector, DetectorOptions, HogDetector
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


class RetryDetector:
    """One detector, then another on the photos where the first found nothing."""

    def __init__(self, first: Detector, retry: Detector) -> None:
        self.name = f"{first.name}+{retry.name}"
        self.first = first
        self.retry = retry

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        return self.first.detect(image) or self.retry.detect(image)


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
}


def create_detector(name: str, options: DetectorOptions, models: ModelStore) -> Detector:
    """Build the detector registered under ``name`` (``hog``, ``cnn`` or ``hog+cnn``)."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r}; choose one of {sorted(DETECTORS)}") from None
    return factory(options, models)
