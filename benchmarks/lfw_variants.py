"""Try variants of faceid's pipeline on LFW View 2 and print one table of what each gives.

    .venv/bin/python benchmarks/lfw_variants.py [../shared/lfw] [--limit N] [--cache DIR]

Stage 1 finds one face per image (dlib HOG at upsample 1; when none, upsample 2; when still
none, a centre crop) and its 5 landmarks. Stage 2 embeds every image once per variant (FaceNet
chips of several paddings, a box crop with a margin, flipped chips, dlib's own ResNet).
Stage 3 scores single variants and combinations (flip averaging, score fusion with dlib,
mean-centred cosine) with the same 10-fold protocol as ``faceid eval lfw``.

Stages 1-2 are cached as ``.npy`` files under ``--cache`` (default ``.cache/lfw-variants``),
so rerunning to change the scoring costs seconds; delete the folder to start again.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NO_FACE, FOUND_UPSAMPLE_1, FOUND_UPSAMPLE_2 = 0, 1, 2

# FaceNet variants: name -> (kind, parameter). "chip" = dlib 5-point chip 160 px at a padding;
# "box" = the detector's box grown by a margin (fraction of its side), resized to 160.
FACENET_VARIANTS = {
    "fn_pad0.4": ("chip", 0.4),
    "fn_pad0.5": ("chip", 0.5),
    "fn_pad0.6": ("chip", 0.6),
    "fn_pad0.7": ("chip", 0.7),
    "fn_box0.2": ("box", 0.2),
}
FLIPPED = ("fn_pad0.5",)
#: Fusion weights of FaceNet the nested rows choose from.
NESTED_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)


def _worker_init() -> None:
    global _DETECTOR, _PREDICTOR, _RESNET
    import dlib

    from faceid_tui.engine.models import DLIB_RESNET, SHAPE_PREDICTOR_5, ModelStore

    store = ModelStore(REPO / "face_models")
    _DETECTOR = dlib.get_frontal_face_detector()
    _PREDICTOR = dlib.shape_predictor(str(store.verified_path(SHAPE_PREDICTOR_5)))
    _RESNET = dlib.face_recognition_model_v1(str(store.verified_path(DLIB_RESNET)))


def _detect_one(path: str) -> tuple[int, list[float], list[float]]:
    """``(status, box xywh, 10 landmark coordinates)`` for the face nearest the centre."""
    from faceid_tui.engine.decode import load_rgb

    image = load_rgb(Path(path))
    status, rects = NO_FACE, []
    for upsample, found in ((1, FOUND_UPSAMPLE_1), (2, FOUND_UPSAMPLE_2)):
        rects = _DETECTOR(image, upsample)
        if len(rects):
            status = found
            break
    if status == NO_FACE:
        return NO_FACE, [0.0] * 4, [0.0] * 10
    cx, cy = image.shape[1] / 2, image.shape[0] / 2
    rect = min(rects, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
    shape = _PREDICTOR(image, rect)
    box = [rect.left(), rect.top(), rect.width(), rect.height()]
    return status, box, [c for p in shape.parts() for c in (p.x, p.y)]


def _shape(box: np.ndarray, points: np.ndarray):
    import dlib

    x, y, w, h = (int(v) for v in box)
    rect = dlib.rectangle(x, y, x + w - 1, y + h - 1)
    return dlib.full_object_detection(
        rect, [dlib.point(int(points[2 * i]), int(points[2 * i + 1])) for i in range(5)])


def _dlib_descriptor(job: tuple[str, int, list[float], list[float], bool]) -> np.ndarray:
    """dlib's descriptor of the face, of its mirror image when ``flipped``."""
    import cv2
    import dlib

    from faceid_tui.engine.alignment import center_crop_chip
    from faceid_tui.engine.decode import load_rgb

    path, status, box, points, flipped = job
    image = load_rgb(Path(path))
    if status == NO_FACE:
        chip = cv2.resize(center_crop_chip(image)[0], (150, 150))
    else:
        chip = dlib.get_face_chip(image, _shape(np.array(box), np.array(points)), size=150,
                                  padding=0.25)
    if flipped:
        chip = np.ascontiguousarray(chip[:, ::-1])
    return np.array(_RESNET.compute_face_descriptor(chip), dtype=np.float32)


def facenet_chip(image: np.ndarray, status: int, box: np.ndarray, points: np.ndarray,
                 kind: str, parameter: float) -> np.ndarray:
    import cv2
    import dlib

    from faceid_tui.engine.alignment import center_crop_chip

    if status == NO_FACE:
        return center_crop_chip(image)[0]
    if kind == "chip":
        return dlib.get_face_chip(image, _shape(box, points), size=160, padding=parameter)
    x, y, w, h = box
    pad = round(parameter * max(w, h))
    crop = image[max(0, y - pad): y + h + pad, max(0, x - pad): x + w + pad]
    return cv2.resize(crop, (160, 160), interpolation=cv2.INTER_AREA)


def normalise(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lfw", type=Path, nargs="?", default=REPO.parent / "shared" / "lfw")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "lfw-variants")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--variants", nargs="*", help="compute only these (e.g. dlib "
                        "fn_pad0.5); default: all; the table shows every cached one")
    args = parser.parse_args()
    wanted = set(args.variants) if args.variants else None

    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.engine.embedding import EmbedderOptions
    from faceid_tui.engine.evaluation import (
        accuracy_at,
        best_threshold_interval,
        equal_error_rate,
        fold_accuracies,
        read_lfw_pairs,
        roc_auc,
        subset,
        tar_at_far,
    )
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline, PipelineOptions

    pairs = read_lfw_pairs(args.lfw)
    if args.limit:
        pairs = subset(pairs, args.limit)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    cache = args.cache / (f"limit{args.limit}" if args.limit else "all")
    cache.mkdir(parents=True, exist_ok=True)
    costs: dict[str, float] = {}

    # Stage 1: detection + landmarks, in processes (dlib runs one thread each).
    detections_file = cache / "detections.npz"
    if not detections_file.exists():
        started = time.perf_counter()
        with ProcessPoolExecutor(args.processes, initializer=_worker_init) as pool:
            found = list(pool.map(_detect_one, map(str, paths), chunksize=16))
        np.savez(detections_file, status=np.array([f[0] for f in found]),
                 boxes=np.array([f[1] for f in found]), points=np.array([f[2] for f in found]),
                 seconds=time.perf_counter() - started)
    detections = np.load(detections_file)
    status, boxes, points = detections["status"], detections["boxes"].astype(int), \
        detections["points"]
    costs["detect"] = float(detections["seconds"]) * args.processes / len(paths)
    print(f"{len(pairs)} pairs, {len(paths)} images: found at upsample 1 "
          f"{int((status == FOUND_UPSAMPLE_1).sum())}, only at upsample 2 "
          f"{int((status == FOUND_UPSAMPLE_2).sum())}, none (centre crop) "
          f"{int((status == NO_FACE).sum())}; detection + landmarks "
          f"{1000 * costs['detect']:.1f} core-ms/image", flush=True)

    # Stage 2: one vector per image and variant.
    vectors: dict[str, np.ndarray] = {}
    pipeline: Pipeline | None = None
    for name, (kind, parameter) in FACENET_VARIANTS.items():
        for flipped in (False, True):
            if flipped and name not in FLIPPED:
                continue
            key = name + ("_flip" if flipped else "")
            file = cache / f"{key}.npz"
            if not file.exists():
                if wanted is not None and key not in wanted:
                    continue
                if pipeline is None:
                    pipeline = Pipeline(ModelStore(REPO / "face_models"), PipelineOptions(
                        embedder_options=EmbedderOptions(threads=args.threads)))
                    pipeline.load()
                chips = np.stack([
                    facenet_chip(load_rgb(path), status[i], boxes[i], points[i], kind, parameter)
                    for i, path in enumerate(paths)])
                if flipped:
                    chips = np.ascontiguousarray(chips[:, :, ::-1])
                started = time.perf_counter()
                embedded = pipeline.embedder.embed(chips)
                np.savez(file, vectors=embedded,
                         seconds=(time.perf_counter() - started) * (os.cpu_count() or 1))
            loaded = np.load(file)
            vectors[key], costs[key] = loaded["vectors"], float(loaded["seconds"]) / len(paths)
    for key, flipped in (("dlib", False), ("dlib_flip", True)):
        file = cache / ("dlib_resnet.npz" if not flipped else "dlib_resnet_flip.npz")
        if not file.exists() and (wanted is None or key in wanted):
            started = time.perf_counter()
            jobs = [(str(p), int(status[i]), boxes[i].tolist(), points[i].tolist(), flipped)
                    for i, p in enumerate(paths)]
            with ProcessPoolExecutor(args.processes, initializer=_worker_init) as pool:
                descriptors = np.stack(list(pool.map(_dlib_descriptor, jobs, chunksize=16)))
            np.savez(file, vectors=descriptors,
                     seconds=(time.perf_counter() - started) * args.processes)
        if file.exists():
            loaded = np.load(file)
            vectors[key] = normalise(loaded["vectors"])
            costs[key] = float(loaded["seconds"]) / len(paths)

    # Stage 3: score.
    index = {path: i for i, path in enumerate(paths)}
    a = np.array([index[p.path_a] for p in pairs])
    b = np.array([index[p.path_b] for p in pairs])
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])

    def cosine(v: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", v[a], v[b])

    def report(label: str, scores: np.ndarray, cost_ms: float) -> None:
        accuracies = fold_accuracies(scores, same, folds)
        print(f"| {label} | {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f} | "
              f"{roc_auc(scores, same):.4f} | {equal_error_rate(scores, same):.4f} | "
              f"{tar_at_far(scores, same, 1e-3)[0]:.3f} | {cost_ms:.0f} |", flush=True)

    print("\ncore-ms/face is the embedding cost alone, summed over cores "
          "(add detection + landmarks for the whole pipeline)\n")
    print("| variant | accuracy ± std | ROC AUC | EER | TAR@FAR1e-3 | core-ms/face |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, v in vectors.items():
        report(key, cosine(v), 1000 * costs[key])
    for name in FLIPPED:
        if name in vectors and name + "_flip" in vectors:
            averaged = normalise(vectors[name] + vectors[name + "_flip"])
            report(f"{name} + flip average", cosine(averaged),
                   1000 * (costs[name] + costs[name + "_flip"]))
    if "dlib" in vectors and "dlib_flip" in vectors:
        vectors["dlib+flip"] = normalise(vectors["dlib"] + vectors["dlib_flip"])
        costs["dlib+flip"] = costs["dlib"] + costs["dlib_flip"]
        report("dlib + flip average", cosine(vectors["dlib+flip"]), 1000 * costs["dlib+flip"])
    for name in ("fn_pad0.4", "fn_pad0.5", "fn_pad0.6"):
        if name not in vectors or "dlib" not in vectors:
            continue
        if "dlib+flip" in vectors:
            for weight in (0.1, 0.2):
                fused = (weight * cosine(vectors[name])
                         + (1 - weight) * cosine(vectors["dlib+flip"]))
                report(f"{weight:g}·{name} + {1 - weight:g}·(dlib + flip)", fused,
                       1000 * (costs[name] + costs["dlib+flip"]))
        for weight in (0.1, 0.2, 0.3, 0.5):
            fused = weight * cosine(vectors[name]) + (1 - weight) * cosine(vectors["dlib"])
            report(f"{weight:g}·{name} + {1 - weight:g}·dlib", fused,
                   1000 * (costs[name] + costs["dlib"]))
    for name in ("fn_pad0.4", "fn_pad0.5"):
        if name in vectors:
            centred = normalise(vectors[name] - vectors[name].mean(axis=0))
            report(f"{name} centred (LFW mean)", cosine(centred), 1000 * costs[name])

    # FaceNet's own LFW protocol (validate_on_lfw.py --subtract_mean): each fold's scores
    # come from vectors centred on the mean of the *other* nine folds' images, so nothing of
    # the scored fold leaks in. Only the accuracy is per fold, so only it is printed.
    def fold_centred(v: np.ndarray, train: np.ndarray) -> np.ndarray:
        mean = np.concatenate([v[a[train]], v[b[train]]]).mean(axis=0)
        return cosine(normalise(v - mean))

    def report_fold_centred(label: str, score: Callable[[np.ndarray], np.ndarray],
                            cost_ms: float) -> None:
        accuracies = []
        for fold in np.unique(folds):
            train = folds != fold
            scores = score(train)
            _, low, high = best_threshold_interval(scores[train], same[train])
            accuracies.append(accuracy_at(scores[~train], same[~train], (low + high) / 2))
        print(f"| {label} | {np.mean(accuracies):.4f} ± {np.std(accuracies):.4f} | – | – | – "
              f"| {cost_ms:.0f} |", flush=True)

    # The fusion weight chosen inside the cross-validation too (nested): for each fold, the
    # weight with the best accuracy on the other nine, then that fold scored with it. Tells
    # whether a fixed weight's figure owes anything to having been picked on these pairs.
    def report_nested_weight(label: str, facenet: Callable[[np.ndarray], np.ndarray],
                             dlib_scores: np.ndarray, cost_ms: float) -> None:
        accuracies, chosen = [], []
        for fold in np.unique(folds):
            train = folds != fold
            facenet_scores = facenet(train)
            best = max(((best_threshold_interval(w * facenet_scores[train]
                                                 + (1 - w) * dlib_scores[train],
                                                 same[train]), w) for w in NESTED_WEIGHTS),
                       key=lambda found: found[0][0])
            (_, low, high), weight = best
            scores = weight * facenet_scores + (1 - weight) * dlib_scores
            accuracies.append(accuracy_at(scores[~train], same[~train], (low + high) / 2))
            chosen.append(weight)
        print(f"| {label} (weights chosen: {' '.join(f'{w:g}' for w in chosen)}) | "
              f"{np.mean(accuracies):.4f} ± {np.std(accuracies):.4f} | – | – | – "
              f"| {cost_ms:.0f} |", flush=True)

    for name in ("fn_pad0.4", "fn_pad0.5"):
        if name in vectors and "dlib" in vectors:
            report_nested_weight(f"w·{name} + (1 − w)·dlib, w nested",
                                 lambda _train, v=vectors[name]: cosine(v),
                                 cosine(vectors["dlib"]), 1000 * (costs[name] + costs["dlib"]))
            report_nested_weight(f"w·{name} centred (other folds) + (1 − w)·dlib, w nested",
                                 lambda train, v=vectors[name]: fold_centred(v, train),
                                 cosine(vectors["dlib"]), 1000 * (costs[name] + costs["dlib"]))

    for name in ("fn_pad0.4", "fn_pad0.5"):
        if name not in vectors:
            continue
        report_fold_centred(f"{name} centred (mean of the other folds)",
                            lambda train, v=vectors[name]: fold_centred(v, train),
                            1000 * costs[name])
        for dlib_key in ("dlib", "dlib+flip"):
            if dlib_key not in vectors:
                continue
            for weight in (0.05, 0.1, 0.2):
                report_fold_centred(
                    f"{weight:g}·{name} centred (other folds) + {1 - weight:g}·{dlib_key}",
                    lambda train, v=vectors[name], d=vectors[dlib_key], w=weight:
                        w * fold_centred(v, train) + (1 - w) * cosine(d),
                    1000 * (costs[name] + costs[dlib_key]))


if __name__ == "__main__":
    main()
