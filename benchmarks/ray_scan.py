"""``faceid scan --ray`` against the local pipelined ``faceid scan`` on the same photos, and a
Ray worker killed mid-run.

    .venv/bin/python benchmarks/ray_scan.py [--photos 1000] [--workers 2] [--rounds 3]

1. Throughput: the first ``--photos`` LFW images (sorted by path) scanned twice per round,
   ``--rounds`` rounds (the median ratio is printed), whole process each (``faceid scan
   --json`` with its detect processes, then ``faceid scan --ray --workers N --json`` with a
   local Ray cluster started by the command), same bank (empty), same models.
   Printed: seconds, photos/s, and Ray's rate as a share of the local one. Ray's start-up
   (~5-10 s here) is inside its figure, as a user would live it.
2. Steady state: in this process, the photos through the loaded local pipeline and through
   :class:`RayScan` with its actors up, first to last result (a long backlog's rate),
   alternated ``--rounds`` times (the median ratio is printed).
3. Fault tolerance: the same photos through :class:`RayScan`, one worker killed (SIGKILL)
   after the first results: printed, photos returned, distinct, missing.

Numbers are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FACEID = Path(sys.executable).with_name("faceid")


def timed_scan(photos_file: Path, extra: list[str], bank: Path, photos: list[Path]) -> float:
    with open(photos_file, "w") as records:
        started = time.perf_counter()
        ran = subprocess.run([str(FACEID), "--bank", str(bank), "--models",
                              str(REPO / "face_models"), "scan", "--json", *extra,
                              *map(str, photos)],
                             stdout=records, stderr=subprocess.PIPE, text=True, check=False)
        seconds = time.perf_counter() - started
    if ran.returncode not in (0, 1):
        raise SystemExit(f"faceid scan {' '.join(extra)} failed: {ran.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "lfw")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-kill", action="store_true")
    args = parser.parse_args()
    photos = sorted(p for p in args.lfw.rglob("*.jpg"))[: args.photos]
    print(f"{len(photos)} LFW photos, {os.cpu_count()} cores, {args.workers} Ray workers",
          flush=True)
    ratios = []
    with tempfile.TemporaryDirectory() as scratch:
        bank = Path(scratch) / "id_bank"
        for round_number in range(1, args.rounds + 1):  # alternated: the machine drifts
            local = timed_scan(Path(scratch) / "local.jsonl", [], bank, photos)
            ray = timed_scan(Path(scratch) / "ray.jsonl",
                             ["--ray", "--workers", str(args.workers)], bank, photos)
            ratios.append(local / ray)
            lines = [(Path(scratch) / f"{name}.jsonl").read_text().count("\n")
                     for name in ("local", "ray")]
            print(f"round {round_number}: faceid scan (local, pipelined) {local:.1f} s = "
                  f"{len(photos) / local:.1f} photos/s; --ray --workers {args.workers} "
                  f"{ray:.1f} s = {len(photos) / ray:.1f} photos/s: {local / ray:.2f} of the "
                  f"local rate (records {lines[0]} / {lines[1]})", flush=True)
    print(f"Ray / local rate, median of {args.rounds}: {statistics.median(ratios):.2f}",
          flush=True)

    from faceid_tui.config import Settings, build_pipeline
    from faceid_tui.engine.ray_scan import RayScan

    # Steady state: models loaded on both sides, the same photos timed from the first to the
    # last result (what a backlog far longer than the start-up sees), alternated in rounds
    # like the whole-process figures above.
    settings = Settings(models_dir=REPO / "face_models")
    pipeline = build_pipeline(settings)
    pipeline.load()
    scan = RayScan(settings.models_dir, settings.pipeline_options(), workers=args.workers)
    steady = []
    for round_number in range(1, args.rounds + 1):
        started = time.perf_counter()
        count = sum(1 for _ in pipeline.run(photos))
        local_steady = time.perf_counter() - started
        started = time.perf_counter()
        count_ray = sum(1 for _ in scan.run(photos))
        ray_steady = time.perf_counter() - started
        steady.append(local_steady / ray_steady)
        print(f"round {round_number}, models loaded, {count}/{count_ray} photos: local pipeline "
              f"{local_steady:.1f} s, Ray {ray_steady:.1f} s: {local_steady / ray_steady:.2f} "
              "of the local rate", flush=True)
    print(f"steady state, Ray / local rate, median of {args.rounds}: "
          f"{statistics.median(steady):.2f}", flush=True)
    if args.skip_kill:
        scan.close()
        return
    results = scan.run(photos)
    first = next(results)
    victim = scan.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    paths = [first.path, *(result.path for result in results)]
    print(f"worker {victim} killed after the first batch: {len(paths)} results, "
          f"{len(set(paths))} distinct, {len(set(photos) - set(paths))} missing", flush=True)
    scan.close()


if __name__ == "__main__":
    main()
