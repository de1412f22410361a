"""Detection time on camera-sized photos: searching the photo itself vs a resized copy.

    .venv/bin/python benchmarks/large_photos.py [--repeat 2] [--detector hog|cnn]

The 4 group photos of ``../shared/faces/group_photos`` (18 annotated faces, 9 of them >= 40 px)
and the 12 face_recognition photos of ``../shared/faces/identities`` (one face each, up to
1434x2333) are resized in memory with cv2 (bicubic) so that their short side is 1080 ("1080p")
or 2160 ("4K"). Each version is detected with:

* ``old auto`` — the previous default: the photo itself, dlib upsample 1 up to 1.5 Mpx, else 0;
* ``photo, upsample 1`` — the photo itself, doubled: what finding 40-px faces takes there;
* ``new default`` — ``DetectorOptions()``: the smallest face follows the photo (7.5 % of its
  short side, at least 40 px: 81 px at 1080p, so the photo is searched at its own size; 162 px
  at 4K, a half-size copy);
* ``new, min = 40 px x blow-up`` — min_face_size set to what 40 px of the original became
  (~115 px at 1080p for the group photos), so the copy searched is smaller than the photo.

A third set pastes each group photo, at its own size, on a grey 1080p or 4K canvas: a wide shot
whose faces stay 37 to 108 px, which the old default (no upsampling above 1.5 Mpx) cannot find.

It prints ms per photo (best of ``--repeat`` runs, resizing included), the speed-up against the
first two rows, and recall: annotated group faces matched by a box (IoU >= 0.4, one box per
face), those >= 40 px in the original, and face_recognition photos where a face was found.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    DEFAULT_MIN_FACE_SIZE,
    DetectedBox,
    DetectorOptions,
)
from faceid_tui.engine.detectors import create_detector
from faceid_tui.engine.models import ModelStore

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
SHORT_SIDES = {"1080p": 1080, "4K": 2160}
OLD_AUTO_MAX_PIXELS = 1_500_000
MATCH_IOU = 0.4

Box = tuple[int, int, int, int]


@dataclass
class Photo:
    name: str
    image: np.ndarray
    #: How much the original was resized to make ``image``.
    factor: float
    #: Annotated faces in ``image`` pixels, with their side in the original.
    faces: list[tuple[Box, int]]


@dataclass
class Method:
    label: str
    options: Callable[[Photo], DetectorOptions]


METHODS = [
    Method("old auto", lambda p: DetectorOptions(
        upsample=int(p.image.shape[0] * p.image.shape[1] <= OLD_AUTO_MAX_PIXELS),
        min_face_size=20)),
    Method("photo, upsample 1", lambda p: DetectorOptions(upsample=1, min_face_size=40)),
    Method("new default", lambda p: DetectorOptions()),
    Method("new, min = 40 px x blow-up",
           lambda p: DetectorOptions(min_face_size=round(DEFAULT_MIN_FACE_SIZE * p.factor))),
]


def iou(a: Box, b: Box) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def matched(truth: list[Box], found: list[DetectedBox]) -> list[bool]:
    """Which annotated boxes got a detection (greedy one-to-one, best IoU first)."""
    pairs = sorted(((iou(t, tuple(b.as_list())), i, j) for i, t in enumerate(truth)
                    for j, b in enumerate(found)), reverse=True)
    hit = [False] * len(truth)
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if not hit[i] and j not in used:
            hit[i] = True
            used.add(j)
    return hit


def resized(image: np.ndarray, short_side: int) -> tuple[np.ndarray, float]:
    factor = short_side / min(image.shape[:2])
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), factor


def on_canvas(image: np.ndarray, short_side: int) -> tuple[np.ndarray, int, int]:
    """The image unscaled in the middle of a grey canvas of the 4:3 frame with that short
    side (portrait when the image is), and the image's offset in it."""
    height, width = image.shape[:2]
    long_side = short_side * 4 // 3
    frame_h, frame_w = (long_side, short_side) if height > width else (short_side, long_side)
    top, left = (frame_h - height) // 2, (frame_w - width) // 2
    canvas = np.full((frame_h, frame_w, 3), 128, np.uint8)
    canvas[top:top + height, left:left + width] = image
    return canvas, left, top


def load_photos(short_side: int) -> tuple[list[Photo], list[Photo], list[Photo]]:
    annotations: dict[str, list[Box]] = {}
    with open(FACES / "group_photos/faces.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            box = (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            annotations.setdefault(row["path"], []).append(box)
    groups, wide = [], []
    for path, boxes in sorted(annotations.items()):
        original = load_rgb(FACES / path)
        image, factor = resized(original, short_side)
        faces = [(tuple(round(v * factor) for v in box), min(box[2:])) for box in boxes]
        groups.append(Photo(Path(path).name, image, factor, faces))  # type: ignore[arg-type]
        canvas, left, top = on_canvas(original, short_side)
        faces = [((x + left, y + top, w, h), min(w, h)) for x, y, w, h in boxes]
        wide.append(Photo(Path(path).name, canvas, 1.0, faces))
    portraits = []
    with open(FACES / "identities.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == "face_recognition_examples":
                image, factor = resized(load_rgb(FACES / row["path"]), short_side)
                portraits.append(Photo(Path(row["path"]).name, image, factor, []))
    return groups, wide, portraits


@dataclass
class Tally:
    """One method's results over one set of photos."""

    seconds: float = 0.0
    pixels: float = 0.0
    hits: list[bool] = field(default_factory=list)
    big_hits: list[bool] = field(default_factory=list)
    with_face: int = 0


def measure(detector_name: str, photos: list[Photo], repeat: int) -> dict[str, Tally]:
    """Best-of-``repeat`` time of every method on every photo. The methods take turns on each
    photo, so load from other processes falls on all of them alike."""
    store = ModelStore(REPO / "face_models")
    tallies = {method.label: Tally() for method in METHODS}
    for photo in photos:
        detectors = {}
        for method in METHODS:
            options = method.options(photo)
            detectors[method.label] = (create_detector(detector_name, options, store), options)
        best = dict.fromkeys(detectors, float("inf"))
        found: dict[str, list[DetectedBox]] = {}
        for _ in range(repeat):
            for label, (detector, _options) in detectors.items():
                start = time.perf_counter()
                found[label] = detector.detect(photo.image)
                best[label] = min(best[label], time.perf_counter() - start)
        for label, (_detector, options) in detectors.items():
            tally = tallies[label]
            tally.seconds += best[label]
            area = photo.image.shape[0] * photo.image.shape[1]
            tally.pixels += area * _area_factor(options, photo.image)
            got = matched([box for box, _side in photo.faces], found[label])
            tally.hits += got
            tally.big_hits += [hit for hit, (_box, side) in zip(got, photo.faces, strict=True)
                               if side >= DEFAULT_MIN_FACE_SIZE]
            tally.with_face += bool(found[label])
    return tallies


def run(detector_name: str, repeat: int) -> None:
    print(f"detector {detector_name}; ms/photo = best of {repeat}; speed-up = that row's time / "
          "this row's\n")
    print("| photos | size | search | Mpx searched | ms/photo | x vs old auto "
          "| x vs photo up 1 | faces found (>= 40 px orig.) | photos with a face |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- |")
    for size_label, short_side in SHORT_SIDES.items():
        groups, wide, portraits = load_photos(short_side)
        for set_label, photos in (("group, blown up (4)", groups),
                                  ("group at own size on canvas (4)", wide),
                                  ("face_recognition (12)", portraits)):
            tallies = measure(detector_name, photos, repeat)
            old = tallies["old auto"].seconds
            doubled = tallies["photo, upsample 1"].seconds
            for label, tally in tallies.items():
                recall = (f"{sum(tally.hits)}/{len(tally.hits)} "
                          f"({sum(tally.big_hits)}/{len(tally.big_hits)})"
                          if tally.hits else "–")
                with_face = "–" if tally.hits else f"{tally.with_face}/{len(photos)}"
                print(f"| {set_label} | {size_label} | {label} "
                      f"| {tally.pixels / len(photos) / 1e6:.1f} "
                      f"| {1000 * tally.seconds / len(photos):.0f} | {old / tally.seconds:.2f} "
                      f"| {doubled / tally.seconds:.2f} | {recall} | {with_face} |", flush=True)


def _area_factor(options: DetectorOptions, image: np.ndarray) -> float:
    """Pixels of the first pyramid level searched, as a multiple of the photo's."""
    if options.upsample is not None:
        return 4.0 ** options.upsample
    return options.scale(image) ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per photo (best kept)")
    parser.add_argument("--detector", choices=["hog", "cnn"], default="hog")
    args = parser.parse_args()
    run(args.detector, max(1, args.repeat))


if __name__ == "__main__":
    main()
