"""Face detectors behind one small protocol: what a detector returns, the scale a photo is
searched at, and dlib's HOG (and dlib-bin's CNN, the tests' reference). The registry that
knows every detector by name is :mod:`detectors`.

* ``hog`` — dlib's HOG + linear SVM frontal detector (default; fast on the CPU).
* ``cnn`` — dlib's CNN (MMOD) detector (more robust to pose), converted from its ``.dat`` to
  ONNX Runtime on the CPU and torch on CUDA (:mod:`dlib_mmod`, ``MmodDetector``): dlib-bin's
  boxes and confidences, 12–18× faster on one thread (0.25 s for a 640×480 photo instead of
  3.0 s; benchmarks/mmod_speed.py). dlib-bin's own :class:`CnnDetector` stays as the reference
  the tests compare it with; it is not registered.
* ``hog+cnn`` — HOG, then the CNN on the photos where HOG found no face: HOG's speed on the
  photos it handles, and a face for most of those it misses (turned heads, hard light), for
  0.2–0.35 core-seconds each (:data:`RETRY_MAX_SEARCH_PIXELS`). On LFW, HOG finds no face in 40 of
  7,701 images and the CNN finds one in each: the accurate mode's 10-fold accuracy goes from
  0.9880 to 0.9917 (``faceid eval lfw ../shared/lfw --embedder facenet+dlib [--detector
  hog]``; README, Accuracy).
* ``hog,cnn`` — the accurate mode's default since the group-photo measurements (issue 12):
  portraits as ``hog``, every other photo searched for faces from 18 px
  (:func:`small_face_options`) plus the CNN; see :mod:`detectors`.

Every detector returns :class:`DetectedBox` objects in ``(x, y, w, h)`` pixels of the image it
was given, clipped to the image; landmarks are found afterwards by :mod:`alignment`, on that
same full-resolution image.

**Detection scale.** Both detectors find faces of about :data:`SMALLEST_FACE_AT_SCALE_1`
pixels and up in the image they search. So, unless an explicit ``upsample`` count is given, the
photo is searched on a copy resized by ``s = SMALLEST_FACE_AT_SCALE_1 / min_face_size``
(capped at :data:`MAX_AUTO_SCALE`): a 40-px minimum magnifies twice, an 80-px minimum searches
the photo as it is, and a 160-px minimum searches a half-size copy (a quarter of the pixels).
Boxes found on the copy are mapped back to the photo's pixels.

**Default smallest face.** Unless the user sets ``min_face_size``, it follows the photo:
:data:`AUTO_MIN_FACE_FRACTION` of its short side, and never less than
:data:`DEFAULT_MIN_FACE_SIZE`. Small photos (short side up to 533 px: LFW, web images, group
shots) are searched for 40-px faces at twice their size, as before; a 1080p photo for faces of
81 px and up at its own size; a 4K or 24-Mpx camera photo on a downscaled copy. A face a
fourteenth of the photo's height is still a face in a crowd; smaller ones need ``--min-face``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np

from faceid_tui.engine.models import MMOD_DETECTOR, ModelStore

#: Side (px) of the smallest face that dlib's HOG and MMOD detectors find in an image searched
#: at its own size (dlib upsample 0). Measured on 19 of the development portraits resized so that
#: the face box had a given side: HOG found 15 of 19 at 60 px, 18 at 65, all from 70; MMOD 5 at
#: 60, 18 at 70, all from 80. 80 (HOG's sliding window) leaves HOG a margin for harder faces.
SMALLEST_FACE_AT_SCALE_1 = 80

#: The smallest face looked for by default (px): what upsample 1 finds on ordinary photos.
DEFAULT_MIN_FACE_SIZE = 40
#: With no explicit ``min_face_size``, faces smaller than this share of the photo's short side
#: are not looked for (but never a limit below DEFAULT_MIN_FACE_SIZE). Searching a 1080p photo
#: for 40-px faces would cost four times the pixels of searching it for 81-px ones
#: (benchmarks/large_photos.py), for faces that small in a photo that large.
AUTO_MIN_FACE_FRACTION = 0.075

#: The most an automatic scale magnifies (the same as dlib upsample 1, the old default for small
#: photos): past it the cost grows with s² while HOG searches interpolated blur. A smaller
#: ``min_face_size`` still filters boxes; finding such faces takes an explicit ``upsample``.
MAX_AUTO_SCALE = 2.0

#: The smallest face (px) the default detector (``hog,cnn``, :mod:`detectors`) looks for with
#: HOG, whatever the photo's size: group shots have faces of 17–37 px (office_warehouse_cast,
#: infinity_war_wakanda in ../shared/faces/groups), which a share of the short side cannot
#: reach (2–5 % there, while 7.5 % keeps LFW at 40 px). 20 px is the floor of what the
#: 5-point alignment and a 160-px chip still make a face of. 18, not 20: searched at 4×, HOG's
#: smallest window (80 px) gives 19-px boxes, which a minimum of 20 would drop (4 of the 16
#: faces of office_warehouse_cast); the scale stays at its cap of 4.
SMALL_FACE_MIN_SIZE = 18
#: How far the small-face search magnifies: 4 is dlib's upsample 2, what the annotations of the
#: 19–37 px faces were found with (MANIFEST.md, ``dlib_hog_up2``).
SMALL_FACE_MAX_SCALE = 4.0
#: The most pixels the small-face search looks at: the work is bounded by it, not by the photo.
#: 16 Mpx is a 1280×720 photo magnified 4× (every dev group photo is searched for 20-px faces);
#: a 12-Mpx photo is searched at 1.15× (faces from 69 px), a 2880×2160 one at 1.6× (from 50
#: px), a 1440×1080 one at 2.3× (from 35 px). On the 11 dev group photos the HOG pass then
#: costs about the same at 1080p, 4K and 12 Mpx (1.9–2.0 CPU s a photo), recall 0.90–0.92
#: (benchmarks/detector_recall.py --big); 8 Mpx halves the cost on big photos.
SMALL_FACE_MAX_SEARCH_PIXELS = 16_000_000


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
    """How small a face the detectors look for.

    ``min_face_size``: faces smaller than this many pixels (box side, in the photo) are not
    looked for and boxes smaller than it are dropped; it also sets the detection scale (see
    the module docstring). None: :data:`AUTO_MIN_FACE_FRACTION` of the photo's short side, at
    least :data:`DEFAULT_MIN_FACE_SIZE`. ``upsample``: when given, the photo is searched at its
    own size with that many dlib doublings; ``min_face_size`` then only filters.
    """

    upsample: int | None = None
    min_face_size: int | None = None
    #: The most an automatic search magnifies the photo (:data:`MAX_AUTO_SCALE` unless a
    #: detector looks for smaller faces: :data:`SMALL_FACE_MAX_SCALE`).
    max_scale: float = MAX_AUTO_SCALE
    #: When set, an automatic search never looks at more pixels than this: the photo is
    #: shrunk further, and faces below the size that then remains findable are not looked for.
    max_search_pixels: int | None = None
    #: Where the CNN runs: "cpu" (ONNX Runtime), "cuda" (torch), or "auto" (CUDA where a GPU
    #: driver and torch's CUDA are there). CPU by default: the detect pool runs one detector
    #: per core, and each would hold its own CUDA context.
    device: str = "cpu"
    #: ONNX Runtime threads of the CNN. A second thread makes one photo 1.4–1.8× faster for
    #: the same CPU time (benchmarks/mmod_speed.py, 2 cores), but on long runs the detect
    #: pool already runs one detector per core, so one is the default.
    threads: int = 1

    def min_face_for(self, image: np.ndarray | None = None) -> int:
        """The smallest face (px) looked for in ``image``."""
        if self.min_face_size is not None:
            return self.min_face_size
        if image is None:
            return DEFAULT_MIN_FACE_SIZE
        return max(DEFAULT_MIN_FACE_SIZE, round(AUTO_MIN_FACE_FRACTION * min(image.shape[:2])))

    def scale(self, image: np.ndarray | None = None) -> float:
        """The factor the photo is resized by before an automatic search."""
        scale = min(SMALLEST_FACE_AT_SCALE_1 / max(1, self.min_face_for(image)), self.max_scale)
        if self.max_search_pixels is not None and image is not None:
            pixels = image.shape[0] * image.shape[1]
            scale = min(scale, (self.max_search_pixels / max(1, pixels)) ** 0.5)
        return scale


def small_face_options(options: DetectorOptions) -> DetectorOptions:
    """``options`` for the small-face search: the automatic minimum becomes
    :data:`SMALL_FACE_MIN_SIZE` px, magnified up to :data:`SMALL_FACE_MAX_SCALE` and within
    :data:`SMALL_FACE_MAX_SEARCH_PIXELS` (a tighter ``max_search_pixels`` stays). An explicit
    ``upsample`` or ``min_face_size`` is kept: the user asked for that search."""
    if options.upsample is not None:
        return options
    cap = SMALL_FACE_MAX_SEARCH_PIXELS
    if options.max_search_pixels is not None:
        cap = min(cap, options.max_search_pixels)
    min_face = options.min_face_size if options.min_face_size is not None else SMALL_FACE_MIN_SIZE
    return replace(options, min_face_size=min_face, max_scale=SMALL_FACE_MAX_SCALE,
                   max_search_pixels=cap)


class Detector(Protocol):
    """Finds face rectangles in an RGB ``uint8`` image."""

    name: str

    def detect(self, image: np.ndarray) -> list[DetectedBox]: ...


@dataclass(frozen=True)
class _SearchPlan:
    """What dlib searches, with its upsample count, and how its pixels map to the photo's."""

    image: np.ndarray
    upsample: int
    back_x: float = 1.0
    back_y: float = 1.0


def plan_search(image: np.ndarray, options: DetectorOptions) -> _SearchPlan:
    if options.upsample is not None:
        return _SearchPlan(image, options.upsample)
    scale = options.scale(image)
    doublings = round(math.log2(scale)) if scale >= 2.0 else 0
    if doublings and scale == 2.0 ** doublings:
        # dlib's own doubling costs what a cv2 resize does and keeps the boxes of dlib's
        # upsample 1 and 2 (those the annotations of ../shared/faces were made with).
        return _SearchPlan(image, doublings)
    if scale == 1.0:
        return _SearchPlan(image, 0)
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # INTER_AREA averages the pixels a shrunk pixel covers (no aliasing for HOG's gradients).
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    copy = cv2.resize(image, size, interpolation=interpolation)
    return _SearchPlan(copy, 0, width / size[0], height / size[1])


def to_photo_box(plan: _SearchPlan, left: int, top: int, right: int, bottom: int,
                  score: float, image: np.ndarray, min_face_size: int) -> DetectedBox | None:
    """Map a dlib rectangle (inclusive corners, in the searched copy) to a clipped box of the
    photo; None when it falls outside or is smaller than ``min_face_size``."""
    height, width = image.shape[:2]
    x0 = max(0, round(left * plan.back_x))
    y0 = max(0, round(top * plan.back_y))
    x1 = min(width, round((right + 1) * plan.back_x))
    y1 = min(height, round((bottom + 1) * plan.back_y))
    if x1 - x0 < 2 or y1 - y0 < 2 or min(x1 - x0, y1 - y0) < min_face_size:
        return None
    return DetectedBox(x0, y0, x1 - x0, y1 - y0, float(score))


class HogDetector:
    """dlib's frontal HOG detector. Needs no model file."""

    name = "hog"

    def __init__(self, options: DetectorOptions) -> None:
        import dlib

        self.options = options
        self._detector = dlib.get_frontal_face_detector()

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        # RGB, not grayscale: a gray copy is searched ~1.3x faster, but HOG then scores faces
        # differently (on the development photos one portrait lost its face, one gained a
        # false one).
        plan = plan_search(image, self.options)
        rects, scores, _ = self._detector.run(plan.image, plan.upsample, 0.0)
        boxes = []
        for rect, score in zip(rects, scores, strict=True):
            box = to_photo_box(plan, rect.left(), rect.top(), rect.right(), rect.bottom(),
                                score, image, self.options.min_face_for(image))
            if box:
                boxes.append(box)
        return boxes


class CnnDetector:
    """dlib-bin's own MMOD CNN detector (``mmod_human_face_detector.dat``): the reference the
    converted ``cnn`` detector (:class:`dlib_mmod.MmodDetector`) is tested against
    (tests/test_dlib_mmod.py). Not registered: it finds the same boxes 12–18× slower."""

    name = "cnn-dlib"

    def __init__(self, options: DetectorOptions, models: ModelStore) -> None:
        import dlib

        self.options = options
        self._detector = dlib.cnn_face_detection_model_v1(str(models.verified_path(MMOD_DETECTOR)))

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        plan = plan_search(image, self.options)
        boxes = []
        for detection in self._detector(plan.image, plan.upsample):
            rect = detection.rect
            box = to_photo_box(plan, rect.left(), rect.top(), rect.right(), rect.bottom(),
                                detection.confidence, image,
                                self.options.min_face_for(image))
            if box:
                boxes.append(box)
        return boxes
