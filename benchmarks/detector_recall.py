"""Recall of the annotated faces against CPU time, for each detector and search policy.

    .venv/bin/python benchmarks/detector_recall.py [--repeat 1]

The photos: the 4 group photos of ``../shared/faces/group_photos`` (18 faces) and the 7 of
``../shared/faces/groups`` (53 faces, 17–109 px wide), every box from their ``faces.csv``;
and the 67 single-person portraits of ``../shared/faces/identities`` (a face is found when at
least one box is returned). Each detector runs in this process on one thread (ONNX Runtime's
CNN with 1 intra-op thread, as in a detect worker), photo by photo; a face counts as found
when a box overlaps it with IoU >= 0.4 (one box per face). Printed: faces found, boxes that
match no annotated face, and CPU ms per photo (median over ``--repeat`` runs).

Candidates: ``hog``, ``cnn`` and ``hog+cnn`` under the default scale policy (the smallest face
7.5 % of the short side, at least 40 px), and each with ``--min-face 20`` (every photo searched
for faces from 20 px, at most twice its size).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = REPO.parent / "shared" / "faces"


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    left, top = max(ax, bx), max(ay, by)
    right, bottom = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / float(aw * ah + bw * bh - inter)


def annotated() -> dict[Path, list[tuple[int, int, int, int]]]:
    boxes: dict[Path, list[tuple[int, int, int, int]]] = {}
    for folder in (FACES, FACES / "groups"):
        csv_path = folder / ("group_photos/faces.csv" if folder == FACES else "faces.csv")
        with open(csv_path, newline="") as handle:
            for row in csv.DictReader(handle):
                path = folder / row["path"]
                boxes.setdefault(path, []).append(
                    (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])))
    return boxes


def matched(truth: list[tuple[int, int, int, int]], found: list) -> tuple[int, int]:
    """(faces matched, boxes left over), greedily by IoU."""
    free = [box.as_list() for box in found]
    hits = 0
    for face in truth:
        best = max(range(len(free)), key=lambda i: iou(face, free[i]), default=None)
        if best is not None and iou(face, free[best]) >= 0.4:
            hits += 1
            free.pop(best)
    return hits, len(free)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.engine.detection import DetectorOptions
    from faceid_tui.engine.detectors import create_detector
    from faceid_tui.engine.models import ModelStore

    store = ModelStore(REPO / "face_models")
    groups = {path: (load_rgb(path), boxes) for path, boxes in annotated().items()}
    with open(FACES / "identities.csv", newline="") as handle:
        portraits = [load_rgb(FACES / row["path"]) for row in csv.DictReader(handle)]
    total_faces = sum(len(boxes) for _, boxes in groups.values())
    print(f"{len(groups)} group photos ({total_faces} faces), {len(portraits)} portraits")
    print("| detector | search | group faces found | extra boxes | portraits with a face | "
          "ms / group photo | ms / portrait |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ("hog", "hog+cnn", "cnn"):
        for label, options in (("default", DetectorOptions()),
                               ("--min-face 20", DetectorOptions(min_face_size=20))):
            detector = create_detector(name, options, store)
            group_ms, portrait_ms = [], []
            for _ in range(args.repeat):
                hits = extra = 0
                started = time.process_time()
                for image, boxes in groups.values():
                    found = detector.detect(image)
                    got, left_over = matched(boxes, found)
                    hits, extra = hits + got, extra + left_over
                group_ms.append(1000 * (time.process_time() - started) / len(groups))
                started = time.process_time()
                with_face = sum(bool(detector.detect(image)) for image in portraits)
                portrait_ms.append(1000 * (time.process_time() - started) / len(portraits))
            print(f"| {name} | {label} | {hits}/{total_faces} | {extra} | "
                  f"{with_face}/{len(portraits)} | {statistics.median(group_ms):.0f} | "
                  f"{statistics.median(portrait_ms):.0f} |")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
