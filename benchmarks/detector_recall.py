"""Recall of the annotated faces against CPU time, for each detector and search policy.

    .venv/bin/python benchmarks/detector_recall.py [--repeat 1] [--big] [--only LABEL ...]

The photos (``../shared/faces``):

* ``group_photos``: 4 photos, 18 annotated faces (37–108 px), ``group_photos/faces.csv``;
* ``groups``: 7 photos, 53 faces (17–109 px, turned heads, film stills), ``groups/faces.csv``;
* ``portraits``: the 67 single-person photos of ``identities.csv`` (55 of them LFW's 250×250):
  a portrait counts as found when at least one box is returned; ``>1 box`` counts those with
  more (a bystander or a false box);
* ``non_faces``: 3 photos with no face (dogs, an eagle, the Hubble deep field): every box is
  false.

A face counts as found when a box overlaps it with IoU >= 0.4, one box per face (greedy, best
IoU first); ``unmatched`` counts the boxes that match no annotated face. Each detector runs in
this process on one thread (ONNX Runtime's CNN with 1 intra-op thread, as in a detect worker),
photo by photo; times are CPU ms per photo (median over ``--repeat`` runs), decoding excluded.

``--big`` adds camera-sized photos: the 11 group photos resized (cv2, bicubic) so that their
short side is 1080 or 2160 px, and to 12 Mpx (about 4000×3000), with ms/photo and recall of the
(scaled) annotated faces.

Candidates:

* ``hog`` — HOG, the smallest face 7.5 % of the short side and at least 40 px, at most 2×
  (the fast setting);
* ``hog+cnn`` — the previous default: ``hog``, then the CNN (same policy, searching at most
  0.5 Mpx) on photos where HOG found nothing;
* ``cnn`` — the CNN on every photo under ``hog``'s policy;
* ``hog x4`` — HOG looking for faces from 18 px on every photo (absolute minimum), up to 4×
  (dlib upsample 2), searching at most 16 Mpx (``hog x4, 8 Mpx``: at most 8);
* ``hog x4 + cnn retry`` — that, then the CNN where it found nothing (as ``hog+cnn``);
* ``hog x4 ∪ cnn`` — both on every photo, the CNN (``hog``'s policy, at most 2 Mpx) adding
  the faces HOG missed (a CNN box with IoU >= 0.3 to a HOG box is the same face);
* ``hog,cnn`` — ``hog`` first; where it found one face of at least 0.15 of the short side (a
  portrait) that is all, elsewhere ``hog x4 ∪ cnn`` (the new default).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    DetectedBox,
    Detector,
    DetectorOptions,
    HogDetector,
    small_face_options,
)
from faceid_tui.engine.detectors import (
    RETRY_MAX_SEARCH_PIXELS,
    UNION_CNN_MAX_SEARCH_PIXELS,
    RetryDetector,
    UnionDetector,
    create_detector,
)
from faceid_tui.engine.models import ModelStore

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"
MATCH_IOU = 0.4
BIG_SIZES = {"1080p": ("short", 1080), "4K": ("short", 2160), "12 Mpx": ("pixels", 12e6)}

Box = tuple[int, int, int, int]


def iou(a: Box, b: Box) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / float(a[2] * a[3] + b[2] * b[3] - inter)


def matched(truth: list[Box], found: list[DetectedBox]) -> tuple[int, int]:
    """(faces matched, boxes matching no face): one-to-one, greedily, best IoU first."""
    pairs = sorted(((iou(t, tuple(b.as_list())), i, j) for i, t in enumerate(truth)
                    for j, b in enumerate(found)), reverse=True)
    hit: set[int] = set()
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if i not in hit and j not in used:
            hit.add(i)
            used.add(j)
    return len(hit), len(found) - len(used)


def annotated(csv_path: Path, folder: Path) -> dict[Path, list[Box]]:
    boxes: dict[Path, list[Box]] = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(folder / row["path"], []).append(
                (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])))
    return boxes


def candidates(store: ModelStore) -> dict[str, Callable[[], Detector]]:
    """Label -> a factory of the detector (built once per table)."""
    plain = DetectorOptions()
    small = small_face_options(plain)

    def cnn(max_pixels: int) -> Detector:
        return create_detector("cnn", replace(plain, max_search_pixels=max_pixels), store)

    return {
        "hog": lambda: create_detector("hog", plain, store),
        "hog+cnn": lambda: create_detector("hog+cnn", plain, store),
        "cnn": lambda: create_detector("cnn", plain, store),
        "hog x4": lambda: HogDetector(small),
        "hog x4, 8 Mpx": lambda: HogDetector(replace(small, max_search_pixels=8_000_000)),
        "hog x4 + cnn retry": lambda: RetryDetector(HogDetector(small),
                                                    cnn(RETRY_MAX_SEARCH_PIXELS)),
        "hog x4 ∪ cnn": lambda: UnionDetector(HogDetector(small),
                                              cnn(UNION_CNN_MAX_SEARCH_PIXELS)),
        "hog,cnn": lambda: create_detector("hog,cnn", plain, store),
    }


@dataclass
class Tally:
    faces: int = 0
    found: int = 0
    unmatched: int = 0
    photos: int = 0
    with_face: int = 0
    several: int = 0
    ms: list[float] = field(default_factory=list)


def run_set(detector: Detector, photos: list[tuple[np.ndarray, list[Box]]],
            repeat: int) -> Tally:
    tally = Tally(photos=len(photos))
    for run in range(repeat):
        started = time.process_time()
        results = [detector.detect(image) for image, _ in photos]
        tally.ms.append(1000 * (time.process_time() - started) / len(photos))
        if run:
            continue
        for (_image, truth), found in zip(photos, results, strict=True):
            hits, left_over = matched(truth, found)
            tally.faces += len(truth)
            tally.found += hits
            tally.unmatched += left_over
            tally.with_face += bool(found)
            tally.several += len(found) > 1
    return tally


def resized(image: np.ndarray, boxes: list[Box], kind: str,
            size: float) -> tuple[np.ndarray, list[Box]]:
    height, width = image.shape[:2]
    factor = size / min(height, width) if kind == "short" else (size / (height * width)) ** 0.5
    copy = cv2.resize(image, (round(width * factor), round(height * factor)),
                      interpolation=cv2.INTER_CUBIC)
    return copy, [tuple(round(v * factor) for v in box) for box in boxes]  # type: ignore[misc]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--big", action="store_true", help="also 1080p, 4K and 12 Mpx copies")
    parser.add_argument("--only", nargs="*", help="candidate labels to run (default: all)")
    parser.add_argument("--skip-small", action="store_true",
                        help="only the --big table (the dev photos at their own size skipped)")
    args = parser.parse_args()

    store = ModelStore(REPO / "face_models")
    sets = {
        "group_photos": annotated(FACES / "group_photos/faces.csv", FACES),
        "groups": annotated(FACES / "groups/faces.csv", FACES / "groups"),
    }
    photos = {name: [(load_rgb(path), boxes) for path, boxes in faces.items()]
              for name, faces in sets.items()}
    with open(FACES / "identities.csv", newline="") as handle:
        portraits = [(load_rgb(FACES / row["path"]), []) for row in csv.DictReader(handle)]
    non_faces = [(load_rgb(path), []) for path in sorted((FACES / "non_faces").glob("*.jpg"))]
    chosen = {label: make for label, make in candidates(store).items()
              if not args.only or label in args.only}

    if not args.skip_small:
        print(f"CPU ms/photo, 1 thread, median of {args.repeat}; found = annotated faces "
              "matched (IoU >= 0.4); unmatched = boxes matching no annotated face\n")
        print("| detector | group_photos found | unm. | ms | groups found | unm. | ms "
              "| portraits with a face | >1 box | ms | non_faces boxes | ms |")
        print("| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
        for label, make in chosen.items():
            detector = make()
            detector.detect(non_faces[0][0][:200, :200])  # loads the network outside the timing
            first = run_set(detector, photos["group_photos"], args.repeat)
            second = run_set(detector, photos["groups"], args.repeat)
            single = run_set(detector, portraits, args.repeat)
            empty = run_set(detector, non_faces, args.repeat)
            print(f"| {label} "
                  f"| {first.found}/{first.faces} ({first.found / first.faces:.2f}) "
                  f"| {first.unmatched} | {statistics.median(first.ms):.0f} "
                  f"| {second.found}/{second.faces} ({second.found / second.faces:.2f}) "
                  f"| {second.unmatched} | {statistics.median(second.ms):.0f} "
                  f"| {single.with_face}/{single.photos} | {single.several} "
                  f"| {statistics.median(single.ms):.0f} "
                  f"| {empty.unmatched} | {statistics.median(empty.ms):.0f} |", flush=True)

    if args.big:
        every = photos["group_photos"] + photos["groups"]
        print("\nThe 11 group photos resized: CPU ms/photo and annotated faces found "
              f"(of {sum(len(boxes) for _, boxes in every)})\n")
        print("| detector | " + " | ".join(f"{size} ms | {size} found" for size in BIG_SIZES)
              + " |")
        print("| --- |" + " ---: | --- |" * len(BIG_SIZES))
        copies = {size: [resized(image, boxes, kind, value) for image, boxes in every]
                  for size, (kind, value) in BIG_SIZES.items()}
        for label, make in chosen.items():
            detector = make()
            detector.detect(non_faces[0][0][:200, :200])
            cells = []
            for size in BIG_SIZES:
                tally = run_set(detector, copies[size], args.repeat)
                cells.append(f"{statistics.median(tally.ms):.0f} | {tally.found}/{tally.faces}"
                             f" ({tally.found / tally.faces:.2f})")
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
