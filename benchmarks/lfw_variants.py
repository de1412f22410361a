"""Try alignment variants of the FaceNet pipeline on LFW View 2 and print a table.

    .venv/bin/python benchmarks/lfw_variants.py [../shared/lfw] [--limit N]

Faces are detected (dlib HOG, upsample 1) and 5-point landmarks found once per image; each
variant then cuts its own chips (size / padding, with or without horizontal-flip averaging)
and is scored with the same 10-fold protocol as `faceid eval lfw`. No face: centre crop.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

VARIANTS = [  # (chip size, padding, flip averaging)
    (160, 0.4, False),
    (160, 0.4, True),
    (160, 0.3, False),
    (160, 0.25, False),
    (160, 0.5, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("lfw", type=Path, nargs="?", default=REPO.parent / "shared" / "lfw")
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()

    import dlib

    from faceid_tui.engine.alignment import center_crop_chip
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.engine.evaluation import (
        equal_error_rate,
        fold_accuracies,
        read_lfw_pairs,
        roc_auc,
        subset,
    )
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline

    pairs = read_lfw_pairs(args.lfw)
    if args.limit:
        pairs = subset(pairs, args.limit)
    paths = sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})
    pipeline = Pipeline(ModelStore(REPO / "face_models"))
    pipeline.load()
    predictor = pipeline.aligner._predictor
    started = time.perf_counter()
    images, shapes = {}, {}
    no_face = 0
    for path in paths:
        image = load_rgb(path)
        boxes = pipeline.detector.detect(image)
        images[path] = image
        if not boxes:
            shapes[path] = None
            no_face += 1
            continue
        cx, cy = image.shape[1] / 2, image.shape[0] / 2
        box = min(boxes, key=lambda b: (b.x + b.w / 2 - cx) ** 2 + (b.y + b.h / 2 - cy) ** 2)
        shapes[path] = predictor(image, dlib.rectangle(box.x, box.y, box.x + box.w - 1,
                                                       box.y + box.h - 1))
    detect_s = time.perf_counter() - started
    print(f"{len(pairs)} pairs, {len(paths)} images, no face {no_face}; detection + landmarks "
          f"{1000 * detect_s / len(paths):.1f} ms/image")
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    print("| chip | padding | flip | accuracy ± std | ROC AUC | EER | embed ms/face |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size, padding, flip in VARIANTS:
        chips = []
        for path in paths:
            if shapes[path] is None:
                chip, _ = center_crop_chip(images[path])
                if size != chip.shape[0]:
                    import cv2
                    chip = cv2.resize(chip, (size, size))
            else:
                chip = dlib.get_face_chip(images[path], shapes[path], size=size, padding=padding)
            chips.append(chip)
        batch = np.stack(chips)
        t0 = time.perf_counter()
        vectors = pipeline.embedder.embed(batch)
        if flip:
            vectors = vectors + pipeline.embedder.embed(np.ascontiguousarray(batch[:, :, ::-1]))
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        per_face = 1000 * (time.perf_counter() - t0) / len(paths)
        index = {path: i for i, path in enumerate(paths)}
        scores = np.array([float(vectors[index[p.path_a]] @ vectors[index[p.path_b]])
                           for p in pairs])
        accuracies = fold_accuracies(scores, same, folds)
        print(f"| {size} | {padding} | {'yes' if flip else 'no'} | {np.mean(accuracies):.4f} ± "
              f"{np.std(accuracies):.4f} | {roc_auc(scores, same):.4f} | "
              f"{equal_error_rate(scores, same):.4f} | {per_face:.1f} |", flush=True)


if __name__ == "__main__":
    main()
