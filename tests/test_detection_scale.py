"""Detection on a resized copy of the photo (``DetectorOptions.scale``): every annotated face of
the group photos is still found, at their own size and blown up to camera sizes (1080p, 4K),
and the boxes come back in the photo's own pixels.

A face counts as found when one detected box overlaps its annotated box with IoU >= 0.4, each
box matching one face at most: the criterion under which MANIFEST.md states that dlib at
upsample 1 finds all 18 boxes. Annotated faces are 37 to 108 px; dlib's boxes are squares of
its pyramid's sizes, so a right detection of a 37-px face may still differ by a few pixels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    DEFAULT_MIN_FACE_SIZE,
    MAX_AUTO_SCALE,
    SMALL_FACE_MAX_SCALE,
    SMALL_FACE_MAX_SEARCH_PIXELS,
    SMALL_FACE_MIN_SIZE,
    SMALLEST_FACE_AT_SCALE_1,
    DetectedBox,
    DetectorOptions,
    plan_search,
    small_face_options,
)
from faceid_tui.engine.detectors import RETRY_MAX_SEARCH_PIXELS, create_detector
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.pipeline import Pipeline

from .conftest import FACES, iou

Box = tuple[int, int, int, int]
MATCH_IOU = 0.4


def _annotations() -> dict[str, list[Box]]:
    faces: dict[str, list[Box]] = {}
    with open(FACES / "group_photos/faces.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            box = (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"]))
            faces.setdefault(Path(row["path"]).name, []).append(box)
    return faces


ANNOTATED = _annotations()
GROUP_PHOTOS = sorted(ANNOTATED)


def faces_at_least(boxes: list[Box], side: float) -> list[Box]:
    return [box for box in boxes if min(box[2], box[3]) >= side]


def unmatched(truth: list[Box], found: list[DetectedBox]) -> list[Box]:
    """Annotated boxes left without a detection (greedy one-to-one, best IoU first)."""
    pairs = sorted(((iou(t, tuple(b.as_list())), i, j) for i, t in enumerate(truth)
                    for j, b in enumerate(found)), reverse=True)
    used_truth: set[int] = set()
    used_found: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if i not in used_truth and j not in used_found:
            used_truth.add(i)
            used_found.add(j)
    return [t for i, t in enumerate(truth) if i not in used_truth]


def blown_up(image: np.ndarray, short_side: int) -> tuple[np.ndarray, float]:
    """The photo resized (bicubic) so that its short side is ``short_side``, and the factor."""
    factor = short_side / min(image.shape[:2])
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC), factor


def scaled(boxes: list[Box], factor: float) -> list[Box]:
    return [tuple(round(v * factor) for v in box) for box in boxes]  # type: ignore[misc]


def inside(box: DetectedBox, image: np.ndarray) -> bool:
    height, width = image.shape[:2]
    return box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height


@pytest.fixture(scope="module")
def hog(models_dir: Path):
    return create_detector("hog", DetectorOptions(), ModelStore(models_dir))


def test_scale_follows_the_smallest_face_asked_for() -> None:
    assert DEFAULT_MIN_FACE_SIZE == 40
    assert DetectorOptions().scale() == SMALLEST_FACE_AT_SCALE_1 / 40 == 2.0
    assert DetectorOptions(min_face_size=SMALLEST_FACE_AT_SCALE_1).scale() == 1.0
    assert DetectorOptions(min_face_size=160).scale() == 0.5
    # Tiny minimums would magnify 4x and more: capped, they only filter.
    assert DetectorOptions(min_face_size=20).scale() == MAX_AUTO_SCALE
    assert DetectorOptions(min_face_size=0).scale() == MAX_AUTO_SCALE


@pytest.mark.parametrize("photo", GROUP_PHOTOS)
def test_default_options_find_every_face_of_40_px_or_more(hog, photo: str) -> None:
    image = load_rgb(FACES / "group_photos" / photo)
    found = hog.detect(image)
    wanted = faces_at_least(ANNOTATED[photo], DEFAULT_MIN_FACE_SIZE)
    assert wanted  # every group photo has some
    assert unmatched(wanted, found) == []
    assert all(inside(box, image) and min(box.w, box.h) >= DEFAULT_MIN_FACE_SIZE
               for box in found)


@pytest.mark.parametrize("short_side", [1080, 2160], ids=["1080p", "4K"])
@pytest.mark.parametrize("photo", GROUP_PHOTOS)
def test_camera_sized_copies_yield_every_annotated_face(hog, photo: str,
                                                        short_side: int) -> None:
    image, factor = blown_up(load_rgb(FACES / "group_photos" / photo), short_side)
    found = hog.detect(image)
    assert unmatched(scaled(ANNOTATED[photo], factor), found) == []
    assert all(inside(box, image) for box in found)


@pytest.mark.parametrize("short_side", [1080, 2160], ids=["1080p", "4K"])
@pytest.mark.parametrize("photo", GROUP_PHOTOS)
def test_downscaled_search_maps_boxes_to_full_resolution(models_dir: Path, photo: str,
                                                         short_side: int) -> None:
    # Asking for the faces that were >= 40 px before the blow-up (>= 115 px at 1080p) makes the
    # detector search a copy smaller than the photo; the boxes must still be in photo pixels.
    image, factor = blown_up(load_rgb(FACES / "group_photos" / photo), short_side)
    options = DetectorOptions(min_face_size=round(DEFAULT_MIN_FACE_SIZE * factor))
    assert options.scale() < 1.0
    found = create_detector("hog", options, ModelStore(models_dir)).detect(image)
    wanted = scaled(faces_at_least(ANNOTATED[photo], DEFAULT_MIN_FACE_SIZE), factor)
    assert unmatched(wanted, found) == []
    assert all(inside(box, image) for box in found)


def test_a_magnification_below_two_resizes_and_maps_back(models_dir: Path) -> None:
    # 60 px -> s = 4/3: not a dlib doubling, so the photo is resized by cv2 before the search.
    image = load_rgb(FACES / "group_photos/kit_with_rose.jpg")
    options = DetectorOptions(min_face_size=60)
    assert 1.0 < options.scale() < 2.0
    found = create_detector("hog", options, ModelStore(models_dir)).detect(image)
    assert unmatched(ANNOTATED["kit_with_rose.jpg"], found) == []
    assert all(inside(box, image) and min(box.w, box.h) >= 60 for box in found)


def test_explicit_upsample_searches_the_photo_itself(models_dir: Path) -> None:
    image = load_rgb(FACES / "group_photos/2008_002079.jpg")
    ours = create_detector("hog", DetectorOptions(upsample=1, min_face_size=1),
                           ModelStore(models_dir)).detect(image)
    rects, _scores, _ = dlib.get_frontal_face_detector().run(image, 1, 0.0)
    assert sorted(box.as_list()[:2] for box in ours) == sorted([r.left(), r.top()] for r in rects)


def test_cnn_downscaled_finds_both_faces_of_a_4k_photo(models_dir: Path) -> None:
    # Both faces are >= 70 px in the original; asking for that much keeps the CPU-bound CNN
    # to a copy of about 0.5 Mpx.
    image, factor = blown_up(load_rgb(FACES / "group_photos/kit_with_rose.jpg"), 2160)
    options = DetectorOptions(min_face_size=round(70 * factor))
    assert options.scale() < 0.3
    found = create_detector("cnn", options, ModelStore(models_dir)).detect(image)
    assert unmatched(scaled(ANNOTATED["kit_with_rose.jpg"], factor), found) == []
    assert all(inside(box, image) for box in found)


def test_pipeline_aligns_full_resolution_faces_of_a_downscaled_search(pipeline: Pipeline) -> None:
    image, factor = blown_up(load_rgb(FACES / "group_photos/kit_with_rose.jpg"), 1080)
    faces = pipeline.find_faces(image)
    assert unmatched(scaled(ANNOTATED["kit_with_rose.jpg"], factor), [f.box for f in faces]) == []
    for face in faces:
        x, y, w, h = face.box.as_list()
        # landmarks are found on the full-resolution photo, inside their (scaled) box
        assert (face.landmarks[:, 0] >= x - 0.2 * w).all()
        assert (face.landmarks[:, 0] <= x + 1.2 * w).all()
        assert (face.landmarks[:, 1] >= y - 0.2 * h).all()
        assert (face.landmarks[:, 1] <= y + 1.2 * h).all()


@pytest.mark.parametrize("short_side", [1080, 2160], ids=["1080p", "4K"])
def test_the_cnn_retry_searches_a_bounded_copy_and_still_finds_big_faces(
        models_dir: Path, short_side: int) -> None:
    # hog+cnn's CNN pass on a camera-sized photo: a copy of at most RETRY_MAX_SEARCH_PIXELS,
    # in which kit_with_rose's two faces are still big enough to be found.
    image, factor = blown_up(load_rgb(FACES / "group_photos/kit_with_rose.jpg"), short_side)
    options = DetectorOptions(max_search_pixels=RETRY_MAX_SEARCH_PIXELS)
    searched = options.scale(image) ** 2 * image.shape[0] * image.shape[1]
    assert 0.99 * RETRY_MAX_SEARCH_PIXELS < searched < 1.01 * RETRY_MAX_SEARCH_PIXELS
    retry = create_detector("hog+cnn", DetectorOptions(), ModelStore(models_dir)).retry
    found = retry.detect(image)
    assert unmatched(scaled(ANNOTATED["kit_with_rose.jpg"], factor), found) == []
    assert all(inside(box, image) for box in found)
    # A small photo is searched as before (LFW's 250×250: twice its size, 0.25 Mpx).
    small = load_rgb(FACES / "identities/Juanes/Juanes_0001.jpg")
    assert options.scale(small) == DetectorOptions().scale(small) == 2.0


def test_the_small_face_search_magnifies_4x_and_caps_the_pixels() -> None:
    # LFW's 250×250: 18-px faces, dlib upsample 2 (the 4x search the 19-37 px faces need).
    small = small_face_options(DetectorOptions())
    portrait = np.zeros((250, 250, 3), np.uint8)
    assert small.min_face_for(portrait) == SMALL_FACE_MIN_SIZE
    assert small.scale(portrait) == SMALL_FACE_MAX_SCALE == 4.0
    assert plan_search(portrait, small).upsample == 2
    # A 12-Mpx photo: the search is bounded by the pixel cap, not by the photo.
    camera = np.zeros((3000, 4000, 3), np.uint8)
    searched = small.scale(camera) ** 2 * 3000 * 4000
    assert 0.99 * SMALL_FACE_MAX_SEARCH_PIXELS < searched <= SMALL_FACE_MAX_SEARCH_PIXELS
    # An explicit choice stays the user's.
    assert small_face_options(DetectorOptions(upsample=1)) == DetectorOptions(upsample=1)
    assert small_face_options(DetectorOptions(min_face_size=50)).min_face_for(camera) == 50
