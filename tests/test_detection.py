"""Detection and alignment on real photos: annotated group photos and photos with no face."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid_tui.engine.alignment import CHIP_SIZE
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    DetectedBox,
    Detector,
    DetectorOptions,
    HogDetector,
)
from faceid_tui.engine.detectors import (
    DETECTORS,
    CascadeDetector,
    RetryDetector,
    UnionDetector,
    create_detector,
    merge,
)
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.pipeline import FaceFinder, Pipeline

from .conftest import iou

VOC_PHOTOS = ("2007_007763.jpg", "2008_001322.jpg", "2008_002079.jpg")


def annotated_boxes(faces_dir: Path, photo: str) -> list[tuple[int, int, int, int]]:
    with open(faces_dir / "group_photos/faces.csv", newline="") as handle:
        return [(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))
                for r in csv.DictReader(handle) if r["path"] == f"group_photos/{photo}"]


def test_hog_upsample_1_finds_all_16_annotated_voc_faces(faces_dir: Path,
                                                         models_dir: Path) -> None:
    # 9 of the 16 faces are 37 px: keep boxes down to 20 px (the default is 40).
    detector = create_detector("hog", DetectorOptions(upsample=1, min_face_size=20),
                               ModelStore(models_dir))
    found = total = 0
    for photo in VOC_PHOTOS:
        boxes = [box.as_list() for box in detector.detect(load_rgb(faces_dir / "group_photos"
                                                                   / photo))]
        truth = annotated_boxes(faces_dir, photo)
        total += len(truth)
        found += sum(any(iou(t, tuple(b)) >= 0.4 for b in boxes) for t in truth)
    assert total == 16
    assert found == 16


@pytest.mark.parametrize("name", ["hog", "hog,cnn"])
def test_no_face_in_the_three_non_face_photos(faces_dir: Path, models_dir: Path,
                                              name: str) -> None:
    # hog,cnn: no portrait face, so all three get the 4x HOG search and the CNN.
    options = DetectorOptions(upsample=1) if name == "hog" else DetectorOptions()
    detector = create_detector(name, options, ModelStore(models_dir))
    photos = sorted((faces_dir / "non_faces").glob("*.jpg"))
    assert len(photos) == 3
    for photo in photos:
        assert detector.detect(load_rgb(photo)) == [], photo.name


def test_cnn_detector_finds_the_face_of_a_portrait(faces_dir: Path, models_dir: Path) -> None:
    image = load_rgb(faces_dir / "identities/Juanes/Juanes_0001.jpg")  # 250×250
    detector = create_detector("cnn", DetectorOptions(upsample=0), ModelStore(models_dir))
    boxes = detector.detect(image)
    assert len(boxes) == 1
    hog = create_detector("hog", DetectorOptions(upsample=1), ModelStore(models_dir))
    assert iou(tuple(boxes[0].as_list()), tuple(hog.detect(image)[0].as_list())) > 0.4


def test_min_face_size_drops_small_faces(faces_dir: Path, models_dir: Path) -> None:
    image = load_rgb(faces_dir / "group_photos/2007_007763.jpg")
    store = ModelStore(models_dir)
    all_faces = create_detector("hog", DetectorOptions(upsample=1, min_face_size=20),
                                store).detect(image)
    big_only = create_detector("hog", DetectorOptions(upsample=1, min_face_size=42),
                               store).detect(image)
    assert len(big_only) < len(all_faces)
    assert all(min(box.w, box.h) >= 42 for box in big_only)


def test_unknown_detector_name_lists_the_choices(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="hog"):
        create_detector("yolo", DetectorOptions(), ModelStore(models_dir))
    assert set(DETECTORS) == {"hog", "cnn", "hog+cnn", "hog,cnn"}


def tilted(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` turned about its centre (edges mirrored, as a camera would not leave them
    black), and the 2×3 matrix that maps its pixels."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height),
                          borderMode=cv2.BORDER_REFLECT), matrix


# HOG only finds upright faces: this portrait turned by 35° has a face HOG no longer sees.
TILTED_PORTRAIT = "identities/George_Clooney/George_Clooney_0002.jpg"


def test_hog_then_cnn_finds_the_tilted_face_hog_misses(faces_dir: Path,
                                                       models_dir: Path) -> None:
    store = ModelStore(models_dir)
    upright = load_rgb(faces_dir / TILTED_PORTRAIT)
    # The reference is the CNN's own box on the upright photo: HOG's box there is a weak,
    # off-centre one (score 0.05) on this turned head.
    [face] = create_detector("cnn", DetectorOptions(), store).detect(upright)
    image, matrix = tilted(upright, 35)
    assert create_detector("hog", DetectorOptions(), store).detect(image) == []
    [found] = create_detector("hog+cnn", DetectorOptions(), store).detect(image)
    # Where the upright face's centre went when the photo turned.
    centre = matrix @ np.array([face.x + face.w / 2, face.y + face.h / 2, 1.0])
    assert abs(found.x + found.w / 2 - centre[0]) < found.w / 4
    assert abs(found.y + found.h / 2 - centre[1]) < found.h / 4


class CountingDetector:
    def __init__(self, detector: Detector) -> None:
        self.detector, self.calls, self.name = detector, 0, detector.name

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        self.calls += 1
        return self.detector.detect(image)


def test_the_cnn_runs_only_on_photos_where_hog_found_nothing(faces_dir: Path,
                                                             models_dir: Path) -> None:
    store = ModelStore(models_dir)
    hog = create_detector("hog", DetectorOptions(), store)
    cnn = CountingDetector(create_detector("cnn", DetectorOptions(), store))
    detector = RetryDetector(hog, cnn)
    portrait = load_rgb(faces_dir / "identities/Juanes/Juanes_0001.jpg")
    assert detector.detect(portrait) == hog.detect(portrait)
    assert cnn.calls == 0
    assert detector.detect(load_rgb(faces_dir / "non_faces/eagle.jpg")) == []
    assert cnn.calls == 1


def test_the_face_found_on_retry_is_recognised(faces_dir: Path, models_dir: Path,
                                                pipeline: Pipeline,
                                                identity_photos: dict[str, list[Path]]) -> None:
    """End to end: the CNN's box is aligned and embedded like any other, and the tilted
    portrait is nearest to its own identity's other photos among one photo of everyone.
    30° (HOG finds nothing from 20°): at 35° the 5-point landmarks fail on this face and no
    model recognises it (FaceNet alone: 0.175 for him against 0.174 for the next person)."""
    finder = FaceFinder(ModelStore(models_dir), "hog+cnn", DetectorOptions())
    image, _ = tilted(load_rgb(faces_dir / TILTED_PORTRAIT), 30)
    assert HogDetector(DetectorOptions()).detect(image) == []
    [face] = finder.find_faces(image)
    pipeline.embed_faces([face])
    assert face.embedding is not None
    gallery = {name: photos[0] for name, photos in identity_photos.items()}
    assert gallery["George_Clooney"] != faces_dir / TILTED_PORTRAIT
    names = sorted(gallery)
    results = list(pipeline.run([gallery[name] for name in names], workers=0))
    scores = {name: float(result.largest_face().embedding @ face.embedding)
              for name, result in zip(names, results, strict=True)}
    assert max(scores, key=scores.__getitem__) == "George_Clooney", scores


def test_chips_are_aligned_rgb_160(facenet_pipeline: Pipeline, faces_dir: Path) -> None:
    image = load_rgb(faces_dir / "group_photos/kit_with_rose.jpg")
    faces = facenet_pipeline.find_faces(image)
    assert len(faces) == 2
    assert faces[0].box.x < faces[1].box.x  # numbered left to right
    for face in faces:
        assert face.chip.shape == (CHIP_SIZE, CHIP_SIZE, 3) and face.chip.dtype == np.uint8
        assert face.landmarks.shape == (5, 2)
        x, _y, w, _h = face.box.as_list()
        # landmarks lie inside (or at the edge of) their face box
        assert (face.landmarks[:, 0] >= x - w * 0.2).all()
        assert (face.landmarks[:, 0] <= x + w * 1.2).all()


def test_batched_embeddings_equal_one_at_a_time(pipeline: Pipeline, faces_dir: Path) -> None:
    paths = sorted((faces_dir / "identities/George_Clooney").glob("*.jpg"))
    batched = [r.faces[0].embedding for r in pipeline.run(paths)]
    single = [pipeline.analyze_image(load_rgb(p), p).faces[0].embedding for p in paths]
    for a, b in zip(batched, single, strict=True):
        assert np.allclose(a, b, atol=1e-5)
        assert abs(np.linalg.norm(a) - 1.0) < 1e-5


def groups_boxes(faces_dir: Path, photo: str) -> list[tuple[int, int, int, int]]:
    with open(faces_dir / "groups/faces.csv", newline="") as handle:
        return [(int(r["x"]), int(r["y"]), int(r["w"]), int(r["h"]))
                for r in csv.DictReader(handle) if r["path"] == f"group_photos/{photo}"]


def one_to_one(truth: list[tuple[int, int, int, int]],
               found: list[DetectedBox]) -> tuple[int, int]:
    """(annotated faces matched at IoU >= 0.4, boxes matching none), best IoU first."""
    pairs = sorted(((iou(t, tuple(b.as_list())), i, j) for i, t in enumerate(truth)
                    for j, b in enumerate(found)), reverse=True)
    hit: set[int] = set()
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap >= 0.4 and i not in hit and j not in used:
            hit.add(i)
            used.add(j)
    return len(hit), len(found) - len(used)


@pytest.fixture(scope="module")
def default_detector(models_dir: Path) -> Detector:
    return create_detector("hog,cnn", DetectorOptions(), ModelStore(models_dir))


def test_the_default_finds_the_small_faces_of_a_cast_photo(faces_dir: Path, models_dir: Path,
                                                           default_detector: Detector) -> None:
    # 16 faces of 19-37 px in 899x399: `hog` finds none (measured: hog,cnn all 16, no other box).
    image = load_rgb(faces_dir / "groups/group_photos/office_warehouse_cast.jpg")
    truth = groups_boxes(faces_dir, "office_warehouse_cast.jpg")
    assert len(truth) == 16
    hog = create_detector("hog", DetectorOptions(), ModelStore(models_dir))
    assert one_to_one(truth, hog.detect(image)) == (0, 0)
    found, unmatched = one_to_one(truth, default_detector.detect(image))
    assert found >= 14
    assert unmatched == 0


def test_the_default_adds_the_turned_faces_hog_misses(faces_dir: Path,
                                                      default_detector: Detector) -> None:
    # office_bullpen: HOG at 4x finds 10 of the 12 faces; two turned heads are the CNN's.
    image = load_rgb(faces_dir / "groups/group_photos/office_bullpen.jpg")
    truth = groups_boxes(faces_dir, "office_bullpen.jpg")
    assert isinstance(default_detector, CascadeDetector)
    thorough = default_detector.thorough
    assert isinstance(thorough, UnionDetector)
    hog_only, _ = one_to_one(truth, thorough.first.detect(image))
    found, unmatched = one_to_one(truth, default_detector.detect(image))
    assert found >= hog_only + 1
    assert found >= 11
    assert unmatched == 0


def test_a_portrait_skips_the_small_face_and_cnn_passes(faces_dir: Path,
                                                        default_detector: Detector) -> None:
    assert isinstance(default_detector, CascadeDetector)
    counted = CountingDetector(default_detector.thorough)
    detector = CascadeDetector(default_detector.fast, counted, default_detector.enough)
    portrait = load_rgb(faces_dir / "identities/Juanes/Juanes_0001.jpg")  # LFW, 250×250
    [face] = detector.detect(portrait)
    assert counted.calls == 0
    assert face == HogDetector(DetectorOptions()).detect(portrait)[0]
    # A group photo is not a portrait: the thorough passes run.
    assert len(detector.detect(load_rgb(faces_dir / "group_photos/2008_001322.jpg"))) == 3
    assert counted.calls == 1


def test_the_union_keeps_one_box_per_face(faces_dir: Path, models_dir: Path) -> None:
    # 2008_001322: HOG and the CNN both find the 3 faces, with differently framed boxes.
    store = ModelStore(models_dir)
    image = load_rgb(faces_dir / "group_photos/2008_001322.jpg")
    hog = create_detector("hog", DetectorOptions(), store)
    cnn = create_detector("cnn", DetectorOptions(), store)
    truth = annotated_boxes(faces_dir, "2008_001322.jpg")
    assert one_to_one(truth, hog.detect(image)) == one_to_one(truth, cnn.detect(image)) == (3, 0)
    union = UnionDetector(hog, cnn).detect(image)
    assert len(union) == 3
    assert one_to_one(truth, union) == (3, 0)


def test_merge_adds_only_boxes_of_new_faces() -> None:
    hog = [DetectedBox(100, 100, 80, 80, 1.0)]
    same = DetectedBox(106, 92, 69, 69, 0.9)  # how MMOD frames HOG's face: IoU 0.61
    other = DetectedBox(200, 100, 70, 70, 0.8)
    assert merge(hog, [same, other]) == [hog[0], other]
    assert merge([], [same]) == [same]
