"""Finding the faces of one photo: decode, detect, align — everything before the embedder.

The pipeline has one :class:`FaceFinder`; each worker process of :mod:`detect_pool` has its own.
A photo that cannot be read becomes a :class:`PhotoResult` with a one-line ``error``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid_tui.engine.alignment import Aligner, ChipSpec, center_crop_chip
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import DetectedBox, Detector, DetectorOptions
from faceid_tui.engine.detectors import create_detector
from faceid_tui.engine.embedders import AUTO, embedder_entry
from faceid_tui.engine.models import ModelStore
from faceid_tui.errors import ImageDecodeError


@dataclass
class FaceResult:
    box: DetectedBox
    embedding: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    #: True for the centre-crop stand-in used when no face was detected and one was asked for.
    fallback: bool = False
    chip: np.ndarray | None = field(default=None, repr=False)


@dataclass
class PhotoResult:
    path: Path
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] = field(default_factory=list)
    error: str | None = None
    #: The decoded RGB image, kept only when the caller asks (annotation needs it).
    image: np.ndarray | None = field(default=None, repr=False)

    def central_face(self) -> FaceResult | None:
        """The face whose centre lies nearest the image centre (the subject of a portrait
        crop such as LFW's)."""
        if not self.faces or self.width is None or self.height is None:
            return None
        cx, cy = self.width / 2, self.height / 2
        return min(self.faces, key=lambda f: (f.box.x + f.box.w / 2 - cx) ** 2
                   + (f.box.y + f.box.h / 2 - cy) ** 2)

    def largest_face(self) -> FaceResult | None:
        real = [face for face in self.faces if not face.fallback] or self.faces
        return max(real, key=lambda face: face.box.area, default=None)


class FaceFinder:
    """Decode, detect and align one photo: everything before the embedder. The pipeline has
    one; each worker process of :mod:`detect_pool` has its own."""

    def __init__(self, models: ModelStore, detector: str, options: DetectorOptions,
                 embedder: str = AUTO) -> None:
        self.models = models
        self.detector_name = detector
        self.detector_options = options
        self.chip: ChipSpec = embedder_entry(embedder).chip
        self._detector: Detector | None = None
        self._aligner: Aligner | None = None
        self._load_lock = threading.Lock()

    @property
    def detector(self) -> Detector:
        with self._load_lock:
            if self._detector is None:
                self._detector = create_detector(self.detector_name, self.detector_options,
                                                 self.models)
            return self._detector

    @property
    def aligner(self) -> Aligner:
        with self._load_lock:
            if self._aligner is None:
                self._aligner = Aligner(self.models, self.chip)
            return self._aligner

    def find_faces(self, image: np.ndarray, *, fallback_center: bool = False) -> list[FaceResult]:
        """Detect and align every face of one image (no embeddings yet), left to right."""
        boxes = sorted(self.detector.detect(image), key=lambda box: (box.x, box.y))
        faces = []
        for box in boxes:
            aligned = self.aligner.align(image, box)
            faces.append(FaceResult(box=box, landmarks=aligned.landmarks, chip=aligned.chip))
        if not faces and fallback_center:
            chip, box = center_crop_chip(image, self.chip.size)
            faces.append(FaceResult(box=box, chip=chip, fallback=True))
        return faces

    def find(self, path: Path, fallback_center: bool, keep_image: bool) -> PhotoResult:
        """One photo's faces, or its one-line error."""
        result = PhotoResult(path)
        try:
            image = load_rgb(path)
        except ImageDecodeError as exc:
            result.error = str(exc)
            return result
        result.height, result.width = image.shape[:2]
        try:
            result.faces = self.find_faces(image, fallback_center=fallback_center)
        except (RuntimeError, ValueError, MemoryError) as exc:
            # dlib raises RuntimeError on images it cannot process; keep the queue moving.
            result.error = f"face detection failed: {str(exc).splitlines()[0] if str(exc) else exc}"
        if keep_image:
            result.image = image
        return result
