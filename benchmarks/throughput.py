"""End-to-end throughput of faceid's pipeline beside a naive loop and face_recognition.

    .venv/bin/python benchmarks/throughput.py [--photos DIR ...] [--lfw-images 500] [--runs 3]

The photo set defaults to every photo under ``../shared/faces`` plus the first 500 distinct
images of ``../shared/lfw/pairs.csv``. Every contender processes the same photos on the same
cores, identifies each face against a bank made from ``../shared/faces/identities`` and
writes one JSON line per photo; runs are interleaved and the median is reported:

* **faceid** — ``Pipeline.run``: decode + detect + align in one process per core, FaceNet
  embedding in large batches in the main process while the workers go on, one matrix product
  per photo for matching;
* **naive loop** — the same models one photo at a time, each face embedded alone (batch 1),
  nothing overlapped: how the seed's tutorial does it;
* **face_recognition** — when installed (``.venv/bin/pip install --no-deps
  face_recognition==1.3.0``; it runs on the dlib-bin already installed): HOG at upsample 1 +
  its own 128-d encodings, a process pool of ``--cpus`` = the same core count, as its CLI does.

Then a single-process pass splits faceid's time by stage (decode, detect, align, embed, match,
write). Peak memory is the maximum resident set of this process and of its children.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import multiprocessing
import resource
import statistics
import sys
import time
import types
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # --shared changes it


def default_photos(lfw_images: int) -> list[Path]:
    from faceid_tui.engine.decode import is_image_name

    photos = sorted(p for p in (SHARED / "faces").rglob("*") if p.is_file() and is_image_name(p))
    seen: dict[Path, None] = {}
    with open(SHARED / "lfw" / "pairs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            for key in ("path_a", "path_b"):
                seen.setdefault(SHARED / "lfw" / row[key], None)
            if len(seen) >= lfw_images:
                break
    return photos + list(seen)[:lfw_images]


def set_shared(folder: Path) -> None:
    global SHARED
    SHARED = folder


def embedding_only(pipeline, chips: np.ndarray, batches: list[int]) -> list[tuple[int, float]]:
    """``(batch size, faces/s)`` of the embedder alone on real chips (median of 3 passes)."""
    import torch

    figures = []
    # The fused embedder batches each of its two networks.
    batched = getattr(pipeline.embedder, "facenet", pipeline.embedder)
    descriptor = getattr(pipeline.embedder, "descriptor", None)  # and its dlib half's
    for batch in batches:
        batched.options = dataclasses.replace(batched.options, batch_size=batch)
        if descriptor is not None:
            descriptor.batch_size = batch
        count = max(batch * 4, 256 if batch > 1 else 64)
        work = chips[np.arange(count) % len(chips)]
        pipeline.embedder.embed(work[:batch])  # warm-up
        passes = []
        for _ in range(3):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            started = time.perf_counter()
            pipeline.embedder.embed(work)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            passes.append(time.perf_counter() - started)
        figures.append((batch, count / statistics.median(passes)))
    return figures


def peak_rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


# -- the contenders -------------------------------------------------------------------------------
def run_faceid(pipeline, matcher, photos: list[Path], out: io.StringIO, workers: int) -> int:
    from faceid_tui.bank.matching import matched_chunks
    from faceid_tui.engine.pipeline import DEFAULT_CHUNK

    faces = 0
    results = pipeline.run(photos, workers=workers, chunk_size=DEFAULT_CHUNK)
    for result, embedded, matches in matched_chunks(results, matcher, DEFAULT_CHUNK):
        faces += len(embedded)
        out.write(json.dumps({"path": str(result.path), "faces": [
            {"box": f.box.as_list(), "name": m.name, "score": m.score}
            for f, m in zip(embedded, matches, strict=True)]}) + "\n")
    return faces


def run_naive(pipeline, matcher, photos: list[Path], out: io.StringIO) -> int:
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.errors import ImageDecodeError

    faces = 0
    for path in photos:
        try:
            image = load_rgb(path)
        except ImageDecodeError:
            continue
        records = []
        for box in pipeline.detector.detect(image):
            chip = pipeline.aligner.align(image, box).chip
            vector = pipeline.embedder.embed(chip[None])  # one face at a time
            match = matcher.match_photo(vector)[0]
            records.append({"box": box.as_list(), "name": match.name, "score": match.score})
            faces += 1
        out.write(json.dumps({"path": str(path), "faces": records}) + "\n")
    return faces


_FR_KNOWN: np.ndarray | None = None


def _install_pkg_resources_shim() -> None:
    """face_recognition_models asks pkg_resources (gone from setuptools ≥ 81) for its files."""
    if "pkg_resources" in sys.modules:
        return
    import importlib.util

    def resource_filename(package: str, resource_name: str) -> str:
        spec = importlib.util.find_spec(package)
        return str(Path(spec.origin).parent / resource_name)

    sys.modules["pkg_resources"] = types.SimpleNamespace(resource_filename=resource_filename)


def _fr_init(known: np.ndarray) -> None:
    global _FR_KNOWN
    _install_pkg_resources_shim()
    _FR_KNOWN = known


def _fr_one(path: str) -> str:
    import face_recognition

    image = face_recognition.load_image_file(path)
    encodings = face_recognition.face_encodings(image)  # HOG, upsample 1, then encodings
    records = []
    for encoding in encodings:
        distances = face_recognition.face_distance(_FR_KNOWN, encoding)
        records.append({"best": int(np.argmin(distances)), "distance": float(distances.min())})
    return json.dumps({"path": path, "faces": records})


def face_recognition_available() -> bool:
    _install_pkg_resources_shim()
    try:
        import face_recognition  # noqa: F401
    except ImportError:
        return False
    return True


def face_recognition_bank(paths: list[Path]) -> np.ndarray:
    import face_recognition

    encodings = []
    for path in paths:
        found = face_recognition.face_encodings(face_recognition.load_image_file(str(path)))
        if found:
            encodings.append(found[0])
    return np.array(encodings)


def run_face_recognition(pool: ProcessPoolExecutor, photos: list[Path],
                         out: io.StringIO) -> int:
    faces = 0
    for line in pool.map(_fr_one, map(str, photos), chunksize=4):
        faces += len(json.loads(line)["faces"])
        out.write(line + "\n")
    return faces


# -- stage split ----------------------------------------------------------------------------------
def stage_split(pipeline, matcher, photos: list[Path]) -> dict[str, float]:
    """Seconds per stage for one photo at a time in this process (chips batched per photo)."""
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.errors import ImageDecodeError

    totals = dict.fromkeys(("decode", "detect", "align", "embed", "match", "write"), 0.0)
    sink = io.StringIO()

    def timed(stage: str, call: Callable[[], object]) -> object:
        started = time.perf_counter()
        value = call()
        totals[stage] += time.perf_counter() - started
        return value

    for path in photos:
        try:
            image = timed("decode", lambda p=path: load_rgb(p))
        except ImageDecodeError:
            continue
        boxes = timed("detect", lambda i=image: pipeline.detector.detect(i))
        chips = timed("align", lambda i=image, b=boxes: [pipeline.aligner.align(i, x).chip
                                                          for x in b])
        if not chips:
            continue
        vectors = timed("embed", lambda c=chips: pipeline.embedder.embed(np.stack(c)))
        matches = timed("match", lambda v=vectors: matcher.match_photo(v))
        timed("write", lambda m=matches, p=path: sink.write(json.dumps(
            {"path": str(p), "names": [x.name for x in m]}) + "\n"))
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, nargs="*", help="folders or files instead of "
                        "the default set")
    parser.add_argument("--lfw-images", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, help="detect processes (default: one per core)")
    parser.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    parser.add_argument("--embedder", default="auto",
                        help="as faceid's --embedder (auto: the default, facenet+dlib)")
    parser.add_argument("--detector", default="auto",
                        help="as faceid's --detector (auto: the embedder's own, e.g. hog+cnn "
                             "for facenet+dlib)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"],
                        help="FaceNet's runtime (auto: onnx on the CPU)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["naive", "face_recognition"])
    parser.add_argument("--shared", type=Path, default=SHARED,
                        help="folder holding faces/ and lfw/ (default: ../shared)")
    parser.add_argument("--embed-batches", type=int, nargs="*", default=[1, 32, 128],
                        help="batch sizes for the embedding-only figure")
    args = parser.parse_args()
    set_shared(args.shared)

    from faceid_tui.bank.matching import Matcher
    from faceid_tui.config import detector_for
    from faceid_tui.engine.decode import is_image_name
    from faceid_tui.engine.embedders import resolve_embedder
    from faceid_tui.engine.embedding import EmbedderOptions, available_cores, facenet_runtime
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline, PipelineOptions

    if args.photos:
        photos = [p for root in args.photos for p in
                  (sorted(x for x in root.rglob("*") if x.is_file() and is_image_name(x))
                   if root.is_dir() else [root])]
    else:
        photos = default_photos(args.lfw_images)
    cores = available_cores()
    workers = cores if args.workers is None else args.workers
    detector = detector_for(args.detector, args.embedder)
    options = PipelineOptions(detector=detector, embedder=resolve_embedder(args.embedder),
                              embedder_options=EmbedderOptions(device=args.device,
                                                               threads=args.threads,
                                                               runtime=args.runtime))
    pipeline = Pipeline(ModelStore(REPO / "face_models"), options)
    started = time.perf_counter()
    pipeline.load()
    load_s = time.perf_counter() - started
    import torch

    bank_photos = sorted(p for p in (SHARED / "faces" / "identities").rglob("*")
                         if is_image_name(p))
    names, vectors = [], []
    for result in pipeline.run(bank_photos, workers=0):
        face = result.largest_face()
        if face is not None and face.embedding is not None:
            names.append(result.path.parent.name)
            vectors.append(face.embedding)
    matcher = Matcher(names, np.stack(vectors))

    contenders: dict[str, Callable[[io.StringIO], int]] = {
        "faceid": lambda out: run_faceid(pipeline, matcher, photos, out, workers)}
    if "naive" not in args.skip:
        contenders["naive loop"] = lambda out: run_naive(pipeline, matcher, photos, out)
    pool = None
    if "face_recognition" not in args.skip and face_recognition_available():
        known = face_recognition_bank(bank_photos)
        # As its CLI does: forkserver, not fork, since this process already runs torch threads.
        pool = ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_fr_init, initargs=(known,))
        list(pool.map(_fr_one, map(str, photos[:cores])))  # start the workers first
        contenders["face_recognition"] = lambda out: run_face_recognition(pool, photos, out)

    print(f"{len(photos)} photos · {cores} cores · torch threads {torch.get_num_threads()} · "
          f"detect workers {workers} · detector {detector} · embedder {pipeline.model_id} "
          f"on {args.device} ({facenet_runtime(options.embedder_options)}) · "
          f"model load {load_s:.1f} s", flush=True)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    faces: dict[str, int] = {}
    for run in range(args.runs):
        for name, contender in contenders.items():
            sink = io.StringIO()
            started = time.perf_counter()
            faces[name] = contender(sink)
            seconds[name].append(time.perf_counter() - started)
            print(f"  run {run + 1} {name}: {seconds[name][-1]:.2f} s", flush=True)
    if pool is not None:
        pool.shutdown()

    faceid_s = statistics.median(seconds["faceid"])
    print("\n| contender | images/s | faces/s | median s | faceid speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {len(photos) / median:.1f} | {faces[name] / median:.1f} | "
              f"{median:.2f} | {median / faceid_s:.2f}× |")

    totals = stage_split(pipeline, matcher, photos)
    total = sum(totals.values())
    print(f"\nstage split, one photo at a time in one process ({total:.1f} s):")
    print("| stage | ms/photo | share |")
    print("| --- | --- | --- |")
    for stage, value in totals.items():
        print(f"| {stage} | {1000 * value / len(photos):.1f} | {value / total:.0%} |")
    chips = np.stack([face.chip for result in pipeline.run(photos[:200], workers=0,
                                                           keep_chips=True)
                      for face in result.faces])
    print(f"\nembedding alone ({pipeline.model_id} on {args.device}, real chips):")
    print("| batch | faces/s |")
    print("| --- | --- |")
    for batch, rate in embedding_only(pipeline, chips, args.embed_batches):
        print(f"| {batch} | {rate:.1f} |")
    if torch.cuda.is_available():
        print(f"GPU peak memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MB "
              f"({torch.cuda.get_device_name()})")
    own, children = peak_rss_mb()
    print(f"\npeak memory: this process {own:.0f} MB, largest child {children:.0f} MB")


if __name__ == "__main__":
    main()
