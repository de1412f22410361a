"""dlib's MMOD CNN face detector: dlib-bin against the conversion (faceid_tui/engine/dlib_mmod.py).

    .venv/bin/python benchmarks/mmod_speed.py [--rounds 3] [--threads 1 2] [--no-retry]

Photos (real, from ``../shared/faces``, resized in memory with cv2, area or cubic):

* ``640×480`` — ``groups/group_photos/zuckerberg_chan.jpg`` (1000×709) shrunk to 677×480 and
  centre-cropped to 640×480 (2 faces);
* ``640×427`` — ``groups/group_photos/obama_family.jpg`` as it is (4 faces);
* ``1080p`` — ``groups/group_photos/office_cpr.jpg`` (1280×720) enlarged to 1920×1080.

Each is searched as ``dlib.cnn_face_detection_model_v1(path)(image, 0)`` searches it: dlib-bin
itself (its convolutions run on one thread), and the converted network on ONNX Runtime with
each ``--threads`` count (``onnxruntime.SessionOptions`` as faceid opens it: that many intra-op
threads, no spinning). Every (detector, photo) runs once per round, all of them interleaved, and
the median over ``--rounds`` is printed: wall ms per photo, CPU ms per photo (the process's own,
so a second thread shows as extra CPU), faces found, faces/s and the speed-up over dlib-bin on
the same photo in the same run. For the conversion the split between building the tiled
pyramid (numpy) and the network (ONNX Runtime) is printed too, and whether its boxes equal
dlib-bin's.

``--no-retry`` skips the second table: what the CNN pass of ``hog+cnn`` costs on a faceless
photo (where it always runs) under faceid's scale policy, for ``RETRY_MAX_SEARCH_PIXELS`` in
detection.py: a 250×250 crop of ``non_faces/hubble_ultra_deep_field.jpg`` (searched at twice its
size), ``non_faces/eagle.jpg`` enlarged to 1080p searched at its own size, and the same with the
retry's pixel cap; ``CnnDetector`` (dlib-bin) against ``MmodDetector`` with one thread.

The machine's load average is printed before and after: compare ratios, not times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    CnnDetector,
    DetectorOptions,
)
from faceid_tui.engine.detectors import RETRY_MAX_SEARCH_PIXELS
from faceid_tui.engine.dlib_mmod import (
    MmodDetector,
    MmodNetwork,
    detections,
    pyramid_tensor,
)
from faceid_tui.engine.models import MMOD_DETECTOR, ModelStore

REPO = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("FACEID_SHARED", REPO.parent / "shared")) / "faces"

Rect = tuple[int, int, int, int]


def cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to cover ``width×height`` and centre-cropped to it."""
    scale = max(width / image.shape[1], height / image.shape[0])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, size, interpolation=interpolation)
    top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[top:top + height, left:left + width])


def photos() -> dict[str, np.ndarray]:
    groups = FACES / "groups" / "group_photos"
    return {
        "640×480": cover(load_rgb(groups / "zuckerberg_chan.jpg"), 640, 480),
        "640×427": load_rgb(groups / "obama_family.jpg"),
        "1080p": cover(load_rgb(groups / "office_cpr.jpg"), 1920, 1080),
    }


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    pyramid: list[float] = field(default_factory=list)
    network: list[float] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)


def run_dlib(detector, image: np.ndarray, timing: Timing) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    found = detector(image, 0)
    timing.wall.append(time.perf_counter() - wall)
    timing.cpu.append(time.process_time() - cpu)
    timing.rects = sorted((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom())
                          for d in found)


def run_converted(network: MmodNetwork, image: np.ndarray, timing: Timing) -> None:
    # detect() split in two: the tiled pyramid (numpy), then the network and the boxes.
    wall, cpu = time.perf_counter(), time.process_time()
    tensor, rects = pyramid_tensor(image, network.spec)
    middle = time.perf_counter()
    scores = network.scores(tensor)
    after_network = time.perf_counter()
    found = detections(scores[0, 0], rects, network.spec)
    timing.wall.append(time.perf_counter() - wall)
    timing.cpu.append(time.process_time() - cpu)
    timing.pyramid.append(middle - wall)
    timing.network.append(after_network - middle)
    timing.rects = sorted(d.rect for d in found)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def ms(values: list[float]) -> float:
    return 1e3 * statistics.median(values)


def speed_table(rounds: int, thread_counts: list[int], store: ModelStore) -> None:
    import dlib

    images = photos()
    reference = dlib.cnn_face_detection_model_v1(str(store.verified_path(MMOD_DETECTOR)))
    converted = {threads: MmodNetwork(store, "cpu", threads) for threads in thread_counts}
    runners: dict[str, Callable[[np.ndarray, Timing], None]] = {
        "dlib-bin": lambda image, timing: run_dlib(reference, image, timing)}
    for threads, network in converted.items():
        runners[f"onnxruntime {threads} thread{'s' if threads > 1 else ''}"] = \
            lambda image, timing, network=network: run_converted(network, image, timing)
    for image in images.values():  # warm-up: first-call allocations, ORT's arenas
        for runner in runners.values():
            runner(image, Timing())
    timings = {(label, name): Timing() for label in runners for name in images}
    for _ in range(rounds):
        for name, image in images.items():
            for label, runner in runners.items():
                runner(image, timings[(label, name)])
    print("\n## MMOD CNN, upsample 0: dlib-bin vs the conversion\n")
    print("| photo | detector | ms/photo | CPU ms/photo | pyramid ms | network ms | faces | "
          "faces/s | speed-up | boxes = dlib's |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, image in images.items():
        base = timings[("dlib-bin", name)]
        for label in runners:
            timing = timings[(label, name)]
            faces = len(timing.rects)
            split = (f"{ms(timing.pyramid):.0f} | {ms(timing.network):.0f}" if timing.pyramid
                     else "– | –")
            same = "–" if label == "dlib-bin" else ("yes" if timing.rects == base.rects
                                                    else "NO")
            print(f"| {name} ({image.shape[1]}×{image.shape[0]}) | {label} | "
                  f"{ms(timing.wall):.0f} | {ms(timing.cpu):.0f} | {split} | {faces} | "
                  f"{faces / statistics.median(timing.wall):.1f} | "
                  f"{ms(base.wall) / ms(timing.wall):.1f}× | {same} |")


def retry_table(rounds: int, store: ModelStore) -> None:
    """The CNN half of hog+cnn on faceless photos, under the scale policy."""
    hubble = load_rgb(FACES / "non_faces" / "hubble_ultra_deep_field.jpg")
    eagle = cover(load_rgb(FACES / "non_faces" / "eagle.jpg"), 1920, 1080)
    cases = {
        "250×250, at twice its size": (np.ascontiguousarray(hubble[:250, :250]),
                                       DetectorOptions()),
        "1080p, at its own size": (eagle, DetectorOptions(upsample=0)),
        f"1080p, capped at {RETRY_MAX_SEARCH_PIXELS / 1e6:.1f} Mpx": (
            eagle, DetectorOptions(max_search_pixels=RETRY_MAX_SEARCH_PIXELS)),
    }
    detectors = {
        label: {case: build(options) for case, (_, options) in cases.items()}
        for label, build in (("dlib-bin CnnDetector", lambda o: CnnDetector(o, store)),
                             ("MmodDetector, 1 thread", lambda o: MmodDetector(o, store)))}
    times: dict[tuple[str, str], list[float]] = {}
    found: dict[tuple[str, str], int] = {}
    for _ in range(rounds):
        for case, (image, _) in cases.items():
            for label, built in detectors.items():
                cpu = time.process_time()
                found[(label, case)] = len(built[case].detect(image))
                times.setdefault((label, case), []).append(time.process_time() - cpu)
    print("\n## The CNN pass of hog+cnn on a faceless photo (CPU seconds)\n")
    print("| photo, search | " + " | ".join(detectors) + " | speed-up |")
    print("| --- | " + " | ".join("---:" for _ in detectors) + " | ---: |")
    for case in cases:
        cells = [statistics.median(times[(label, case)]) for label in detectors]
        boxes = [found[(label, case)] for label in detectors]
        print(f"| {case} | " + " | ".join(f"{cpu:.2f} s ({count} boxes)"
                                          for cpu, count in zip(cells, boxes, strict=True))
              + f" | {cells[0] / cells[1]:.1f}× |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-retry", action="store_true")
    parser.add_argument("--models", type=Path, default=REPO / "face_models")
    args = parser.parse_args()
    store = ModelStore(args.models)
    print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
    speed_table(args.rounds, args.threads, store)
    if not args.no_retry:
        retry_table(args.rounds, store)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
