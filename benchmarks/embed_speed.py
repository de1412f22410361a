"""Speed and accuracy of CPU inference paths for the same FaceNet weights; one Markdown table.

    .venv/bin/python benchmarks/embed_speed.py [--lfw] [--compile] [--repeats 5] [--threads 1 2]

Paths: torch fp32 (``FacenetEmbedder``, the baseline), torch fp32 channels_last, optionally
``torch.compile`` (inductor), onnxruntime fp32, onnxruntime static int8 (QDQ, per-channel,
calibrated on the chips of ``../shared/faces/identities``) and onnxruntime dynamic int8
(ConvInteger, no calibration). ONNX files are built in a scratch copy of ``face_models/``
(``.cache/embed-speed/models``, the ``.pt`` linked, not copied) so ``face_models/`` is untouched.

Speed: ms per face for one call of 32 chips and for 8 calls of 1 chip, at each thread count.
Every (path, threads, batch) is measured once per round, all of them interleaved, and the median
over ``--repeats`` rounds is reported, so that load from other jobs hits every path alike. The
speed-up is torch fp32's time at the same threads and batch divided by the path's, both from
this run. The machine's load average is printed before and after: compare ratios, not times.

Accuracy: cosine between each path's embeddings and torch fp32's of the same chips (the 67 real
chips of ``../shared/faces``; for static int8 these are also its calibration chips, so the LFW
columns are the out-of-sample check). With ``--lfw``, every LFW image is embedded by every path
(minutes): chips are cut as ``benchmarks/lfw_variants.py`` cuts its default ``fn_pad0.4`` from
its cached detections (``.cache/lfw-variants/all/detections.npz``; run that script first), and
the 10-fold accuracy of ``faceid eval lfw`` is reported with the cosine to torch on those chips.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

EmbedFn = Callable[[np.ndarray], np.ndarray]
SINGLE_CALLS = 8  # batch-1 timing: this many one-chip calls per measurement


@dataclass
class Variant:
    """One inference path: its label and an embed function per thread count."""

    label: str
    embed: dict[int, EmbedFn]


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def scratch_models(source: Path, scratch: Path):  # -> ModelStore
    """A models folder holding a link to the active ``.pt`` and a copy of the manifest, so the
    ONNX files built here never land in the real ``face_models/``."""
    from faceid_tui.engine.models import ModelStore

    store = ModelStore(source)
    weights = store.verified_path(store.active_weights().model_file)
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.manifest_path, scratch / store.manifest_path.name)
    target = scratch / weights.name
    if not target.exists():
        try:
            os.link(weights, target)
        except OSError:  # another filesystem: a symlink still hashes to the same digest
            target.symlink_to(weights.resolve())
    return ModelStore(scratch)


def shared_chips(models_dir: Path, faces: Path) -> np.ndarray:
    """The largest face's chip of every photo in ``identities.csv``, cut by faceid's pipeline."""
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline

    pipeline = Pipeline(ModelStore(models_dir))
    chips = []
    with open(faces / "identities.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            found = pipeline.find_faces(load_rgb(faces / row["path"]))
            if found:
                chips.append(max(found, key=lambda face: face.box.area).chip)
    return np.stack(chips)


def lfw_chips(lfw: Path, detections: Path, cache: Path) -> tuple[np.ndarray, list]:
    """LFW chips at padding 0.4 (cached as .npy) and the View 2 pairs."""
    from faceid_tui.engine.evaluation import read_lfw_pairs

    pairs = read_lfw_pairs(lfw)
    file = cache / "lfw-chips-pad0.4.npy"
    if not file.exists():
        from lfw_variants import facenet_chip

        from faceid_tui.engine.decode import load_rgb

        if not detections.exists():
            raise SystemExit(f"{detections} is missing; run benchmarks/lfw_variants.py first")
        paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
        found = np.load(detections)
        status, boxes, points = found["status"], found["boxes"].astype(int), found["points"]
        if len(status) != len(paths):
            raise SystemExit(f"{detections} holds {len(status)} images, LFW pairs {len(paths)}")
        chips = np.stack([facenet_chip(load_rgb(path), status[i], boxes[i], points[i], "chip", 0.4)
                          for i, path in enumerate(paths)])
        np.save(file, chips)
    return np.load(file, mmap_mode="r"), pairs


def lfw_accuracy(vectors: np.ndarray, pairs: list) -> float:
    from faceid_tui.engine.evaluation import fold_accuracies

    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    index = {path: i for i, path in enumerate(paths)}
    a = np.array([index[p.path_a] for p in pairs])
    b = np.array([index[p.path_b] for p in pairs])
    scores = np.einsum("ij,ij->i", vectors[a], vectors[b])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    return float(np.mean(fold_accuracies(scores, same, folds)))


def torch_paths(store, threads: list[int], compile_: bool) -> list[Variant]:
    import torch

    from faceid_tui.engine.alignment import standardise
    from faceid_tui.engine.embedding import EmbedderOptions, FacenetEmbedder
    from faceid_tui.engine.onnx_embedder import torch_network

    baseline = FacenetEmbedder(EmbedderOptions(device="cpu"), store)

    def with_threads(count: int, embed: EmbedFn) -> EmbedFn:
        # torch has one process-wide pool; set it before every call of this variant.
        def run(chips: np.ndarray) -> np.ndarray:
            torch.set_num_threads(count)
            return embed(chips)
        return run

    def network_embed(network, channels_last: bool) -> EmbedFn:
        def run(chips: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                batch = torch.from_numpy(standardise(chips))
                if channels_last:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                return normalise(network(batch).numpy())
        return run

    weights = store.verified_path(store.active_weights().model_file)
    paths = [Variant("torch fp32", {t: with_threads(t, baseline.embed) for t in threads})]
    channels_last = torch_network(weights).to(memory_format=torch.channels_last)
    embed_cl = network_embed(channels_last, True)
    paths.append(Variant("torch fp32 channels_last",
                       {t: with_threads(t, embed_cl) for t in threads}))
    if compile_:
        # Default dynamic=None: compiled for the first shape, recompiled once with a dynamic
        # batch when another size arrives (each compile takes minutes on 2 cores).
        compiled = torch.compile(torch_network(weights))
        embed_compiled = network_embed(compiled, False)
        paths.append(Variant("torch.compile fp32", {t: with_threads(t, embed_compiled)
                                                  for t in threads}))
    return paths


def onnx_paths(store, threads: list[int], calibration: np.ndarray) -> list[Variant]:
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from faceid_tui.engine.alignment import standardise
    from faceid_tui.engine.embedding import EmbedderOptions
    from faceid_tui.engine.onnx_embedder import (
        INPUT_NAME,
        OnnxFacenetEmbedder,
        onnx_path,
        session_options,
    )

    def embedder(precision: str, count: int) -> EmbedFn:
        options = EmbedderOptions(device="cpu", threads=count)
        return OnnxFacenetEmbedder(options, store, precision, calibration).embed

    paths = [Variant("onnxruntime fp32", {t: embedder("fp32", t) for t in threads}),
             Variant("onnxruntime int8 static QDQ", {t: embedder("int8", t) for t in threads})]
    # Dynamic quantization needs no calibration; onnxruntime runs its convs as ConvInteger.
    dynamic = store.folder / "dynamic-int8.onnx"
    if not dynamic.exists():
        quantize_dynamic(onnx_path(store, "fp32"), dynamic, per_channel=True,
                         weight_type=QuantType.QUInt8, op_types_to_quantize=["Conv", "Gemm"])

    def session_embed(count: int) -> EmbedFn:
        session = onnxruntime.InferenceSession(str(dynamic), session_options(count),
                                               providers=["CPUExecutionProvider"])
        return lambda chips: normalise(session.run(None, {INPUT_NAME: standardise(chips)})[0])

    paths.append(Variant("onnxruntime int8 dynamic", {t: session_embed(t) for t in threads}))
    return paths


def time_call(embed: EmbedFn, chips: np.ndarray, batch: int) -> float:
    """ms per face for one call of ``batch`` chips (batch 32) or SINGLE_CALLS one-chip calls."""
    started = time.perf_counter()
    if batch == 1:
        for i in range(SINGLE_CALLS):
            embed(chips[i:i + 1])
        count = SINGLE_CALLS
    else:
        embed(chips[:batch])
        count = batch
    return 1000 * (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--lfw", action="store_true", help="also embed LFW (minutes per path)")
    parser.add_argument("--lfw-dir", type=Path, default=REPO.parent / "shared" / "lfw")
    parser.add_argument("--detections", type=Path,
                        default=REPO / ".cache" / "lfw-variants" / "all" / "detections.npz")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "faces")
    parser.add_argument("--models", type=Path, default=REPO / "face_models")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "embed-speed")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    store = scratch_models(args.models, args.cache / "models")
    chips = shared_chips(args.models, args.faces)
    print(f"{len(chips)} chips from {args.faces / 'identities'}; load average before "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    paths = torch_paths(store, args.threads, args.compile)
    paths += onnx_paths(store, args.threads, chips)
    top = max(args.threads)
    baseline = paths[0]

    # Accuracy on the shared chips (and warm-up: first calls allocate, compile, tune).
    reference = baseline.embed[top](chips)
    cosines: dict[str, np.ndarray] = {}
    for path in paths:
        for embed in path.embed.values():
            embed(chips[:32])
            embed(chips[:1])
        cosines[path.label] = np.einsum("ij,ij->i", path.embed[top](chips), reference)

    # Speed: all variants interleaved within every round.
    batches = (32, 1)
    times: dict[tuple[str, int, int], list[float]] = {}
    for _ in range(args.repeats):
        for path in paths:
            for count in args.threads:
                for batch in batches:
                    key = (path.label, count, batch)
                    times.setdefault(key, []).append(time_call(path.embed[count], chips, batch))
    load_after = os.getloadavg()[0]

    lfw: dict[str, tuple[float, float, float]] = {}
    if args.lfw:
        lfw_set, pairs = lfw_chips(args.lfw_dir, args.detections, args.cache)
        lfw_reference: np.ndarray | None = None
        for path in paths:
            # Threads do not change the vectors; use the count that was fastest here.
            best = min(args.threads, key=lambda count: statistics.median(
                times[(path.label, count, 32)]))
            started = time.perf_counter()
            vectors = np.concatenate([path.embed[best](np.asarray(lfw_set[i:i + 256]))
                                      for i in range(0, len(lfw_set), 256)])
            if lfw_reference is None:
                lfw_reference = vectors
            similarity = np.einsum("ij,ij->i", vectors, lfw_reference)
            lfw[path.label] = (float(similarity.min()), float(similarity.mean()),
                               lfw_accuracy(vectors, pairs))
            print(f"LFW: {path.label} embedded {len(lfw_set)} chips in "
                  f"{time.perf_counter() - started:.0f} s at {best} threads", flush=True)

    print(f"\nload average after timing {load_after:.1f}; ms/face = median of {args.repeats} "
          f"interleaved rounds; batch 1 = {SINGLE_CALLS} one-chip calls; cosine on "
          f"{len(chips)} shared chips" + (f", LFW on {len(lfw_set)} chips / 6,000 pairs"
                                          if args.lfw else "") + "\n")
    print("| path | threads | batch | ms/face | speed-up vs torch | cos vs torch min / mean "
          "| LFW cos vs torch min / mean | LFW accuracy |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    for path in paths:
        similarity = cosines[path.label]
        cos_text = f"{similarity.min():.6f} / {similarity.mean():.6f}"
        if path.label in lfw:
            low, mean, accuracy = lfw[path.label]
            lfw_text = f"{low:.6f} / {mean:.6f} | {accuracy:.4f}"
        else:
            lfw_text = "— | —"
        for count in args.threads:
            for batch in batches:
                ms = statistics.median(times[(path.label, count, batch)])
                base = statistics.median(times[(baseline.label, count, batch)])
                print(f"| {path.label} | {count} | {batch} | {ms:.1f} | {base / ms:.2f}× | "
                      f"{cos_text} | {lfw_text} |")


if __name__ == "__main__":
    main()
