"""dlib's face-descriptor ResNet: dlib-bin against the converted network, faces per second.

    .venv/bin/python benchmarks/dlib_resnet_speed.py [--rounds 5] [--faces 64]

The same real chips (150 px, cut by faceid's fused aligner from ``../shared/faces``; repeated
up to ``--faces``) go through dlib-bin's ``compute_face_descriptor`` (one call for all of
them, dlib's own batching) and through the converted network (engine/dlib_resnet.py) on ONNX
Runtime at 1 and 2 threads and on torch fp32 (CPU) at 2 threads, in batches of 32. Every
contender runs once per round, interleaved, and the median over the rounds is printed with
the speed-up over dlib-bin from the same run; the largest difference to dlib-bin's
descriptors is printed too. Compare ratios, not times: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_chips(faces: int) -> np.ndarray:
    from faceid_tui.engine.decode import is_image_name
    from faceid_tui.engine.fusion import dlib_chips
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline, PipelineOptions

    finder = Pipeline(ModelStore(REPO / "face_models"),
                      PipelineOptions(embedder="facenet+dlib")).finder
    chips = []
    folder = REPO.parent / "shared" / "faces" / "identities"
    for photo in sorted(p for p in folder.rglob("*") if is_image_name(p)):
        chips += [face.chip for face in finder.find(photo, False, False).faces]
        if len(chips) >= faces:
            break
    master = np.stack(chips)
    repeated = np.concatenate([master] * (faces // len(master) + 1))[:faces]
    return dlib_chips(repeated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--faces", type=int, default=64)
    args = parser.parse_args()

    import dlib
    import torch

    from faceid_tui.engine.dlib_resnet import DlibDescriptor
    from faceid_tui.engine.models import DLIB_RESNET, ModelStore

    store = ModelStore(REPO / "face_models")
    chips = real_chips(args.faces)
    network = dlib.face_recognition_model_v1(str(store.verified_path(DLIB_RESNET)))
    as_list = [np.ascontiguousarray(chip) for chip in chips]
    torch.set_num_threads(2)
    contenders = {
        "dlib-bin (compute_face_descriptor)":
            lambda: np.array(network.compute_face_descriptor(as_list), dtype=np.float32),
        "converted, ONNX Runtime, 1 thread": DlibDescriptor(store, threads=1).raw,
        "converted, ONNX Runtime, 2 threads": DlibDescriptor(store, threads=2).raw,
        "converted, torch fp32 CPU, 2 threads":
            DlibDescriptor(store, runtime="torch", device="cpu").raw,
    }
    reference = contenders["dlib-bin (compute_face_descriptor)"]()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    differences = {}
    for name, run in contenders.items():  # warm-up, and the accuracy check
        descriptors = run() if "dlib-bin" in name else run(chips)
        differences[name] = float(np.abs(descriptors - reference).max())
    for _ in range(args.rounds):
        for name, run in contenders.items():
            started = time.perf_counter()
            run() if "dlib-bin" in name else run(chips)
            times[name].append(time.perf_counter() - started)
    print(f"{len(chips)} real face chips, median of {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| contender | ms / face | faces/s | vs dlib-bin | max abs diff to dlib-bin |")
    print("| --- | --- | --- | --- | --- |")
    base = statistics.median(times["dlib-bin (compute_face_descriptor)"])
    for name in contenders:
        median = statistics.median(times[name])
        print(f"| {name} | {1000 * median / len(chips):.1f} | {len(chips) / median:.0f} | "
              f"{base / median:.1f}× | {differences[name]:.1e} |")


if __name__ == "__main__":
    main()
