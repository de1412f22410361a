"""Time ``faceid scan`` per photo on a folder: whole command, then stage by stage.

    .venv/bin/python benchmarks/scan_time.py [FOLDER] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO.parent / "shared" / "faces" / "identities"


def command_wall_times(folder: Path, runs: int) -> list[float]:
    faceid = Path(sys.executable).with_name("faceid")
    times = []
    with tempfile.TemporaryDirectory() as bank:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([str(faceid), "--bank", bank, "--models", str(REPO / "face_models"),
                            "scan", "--json", str(folder)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
    return times


def stage_times(folder: Path) -> dict[str, float]:
    import numpy as np

    from faceid_tui.bank.matching import Matcher
    from faceid_tui.engine.decode import is_image_name, load_rgb
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline

    photos = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p))
    start = time.perf_counter()
    pipeline = Pipeline(ModelStore(REPO / "face_models"))
    pipeline.load()
    totals = {"model load": time.perf_counter() - start, "decode": 0.0, "detect+align": 0.0,
              "embed": 0.0, "match": 0.0}
    faces = []
    for path in photos:
        t0 = time.perf_counter()
        image = load_rgb(path)
        t1 = time.perf_counter()
        faces.extend(pipeline.find_faces(image))
        totals["decode"] += t1 - t0
        totals["detect+align"] += time.perf_counter() - t1
    t0 = time.perf_counter()
    pipeline.embed_faces(faces)
    totals["embed"] = time.perf_counter() - t0
    vectors = np.stack([face.embedding for face in faces])
    matcher = Matcher([f"id{i % 50}" for i in range(len(vectors))], vectors)
    t0 = time.perf_counter()
    for vector in vectors:
        matcher.match_photo(vector[None])
    totals["match"] = time.perf_counter() - t0
    totals["photos"] = len(photos)
    totals["faces"] = len(faces)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import torch

    print(f"cores available: {len(os.sched_getaffinity(0))}, torch threads: "
          f"{torch.get_num_threads()}, folder: {args.folder}")
    stages = stage_times(args.folder)
    photos = int(stages.pop("photos"))
    faces = int(stages.pop("faces"))
    print(f"{photos} photos, {faces} faces")
    for stage, seconds in stages.items():
        per_photo = "" if stage == "model load" else f"  ({1000 * seconds / photos:.1f} ms/photo)"
        print(f"  {stage:<13} {seconds:7.2f} s{per_photo}")
    work = sum(v for k, v in stages.items() if k != "model load")
    print(f"  in-process, models loaded: {1000 * work / photos:.1f} ms/photo")
    walls = command_wall_times(args.folder, args.runs)
    median = statistics.median(walls)
    print(f"faceid scan --json (empty bank), median of {len(walls)}: {median:.2f} s "
          f"= {1000 * median / photos:.0f} ms/photo including start-up "
          f"(runs: {', '.join(f'{w:.2f}' for w in walls)})")


if __name__ == "__main__":
    main()
