"""dlib's MMOD face detector converted (faceid_tui/engine/dlib_mmod.py) against dlib-bin itself,
on the real photos of ../shared/faces: the same boxes and confidences, torch equal to ONNX
Runtime, damaged model files refused in one line, and the ONNX file rebuilt when stale.

dlib-bin takes about 0.5 s per 250×250 photo (2.7 s at upsample 1), so the photos are few and
small, and cropped where they are searched at upsample 1."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dlib
import numpy as np
import pytest

from faceid_tui.engine import dlib_mmod
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.detection import (
    CnnDetector,
    DetectorOptions,
)
from faceid_tui.engine.detectors import (
    DETECTORS,
    RETRY_MAX_SEARCH_PIXELS,
    RetryDetector,
    create_detector,
)
from faceid_tui.engine.dlib_mmod import (
    EXPORT_SETTINGS,
    MmodDetection,
    MmodDetector,
    MmodNetwork,
    load_spec,
    mmod_onnx_path,
    prepare_mmod_onnx,
    pyramid_tensor,
)
from faceid_tui.engine.model_records import record_path
from faceid_tui.engine.models import DLIB_RESNET, MMOD_DETECTOR, ModelStore
from faceid_tui.errors import ModelError
from faceid_tui.fsutil import sha256_file

from .conftest import REPO, iou

# (photo under ../shared/faces, upsample, crop (top, bottom, left, right) or None, faces
# dlib-bin finds there): portraits (one with a second face), group photos, and a photo with no
# face. Crops keep dlib-bin's upsample-1 runs to a few seconds.
CASES = [
    ("identities/Juanes/Juanes_0001.jpg", 0, None, 1),
    ("identities/Marc_Grossman/Marc_Grossman_0003.jpg", 0, None, 2),
    ("identities/alex_lacamoire/alex-lacamoire.png", 0, None, 1),
    ("groups/group_photos/longoria_cooper.jpg", 0, None, 2),
    ("groups/group_photos/obama_family.jpg", 0, None, 4),
    ("non_faces/hubble_ultra_deep_field.jpg", 0, None, 0),
    ("identities/Marc_Grossman/Marc_Grossman_0003.jpg", 1, None, 2),
    ("groups/group_photos/longoria_cooper.jpg", 1, (20, 240, 20, 260), 2),
    ("non_faces/hubble_ultra_deep_field.jpg", 1, (0, 160, 0, 180), 0),
]


def photo(faces_dir: Path, path: str, crop: tuple[int, int, int, int] | None = None):
    image = load_rgb(faces_dir / path)
    if crop is not None:
        top, bottom, left, right = crop
        image = np.ascontiguousarray(image[top:bottom, left:right])
    return image


def corners(found) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a dlib mmod_rectangle or an MmodDetection."""
    if isinstance(found, MmodDetection):
        return found.rect
    rect = found.rect
    return rect.left(), rect.top(), rect.right(), rect.bottom()


def as_xywh(rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    left, top, right, bottom = rect
    return left, top, right - left + 1, bottom - top + 1


def assert_same_detections(ours: list, theirs: list, what: str) -> None:
    """Same count; each dlib box has its own converted box with IoU >= 0.9 and a confidence
    within 1e-4 (float noise of the convolutions: 2.5e-6 at most on ../shared/faces)."""
    assert len(ours) == len(theirs), (what, [corners(d) for d in ours],
                                      [corners(d) for d in theirs])
    unmatched = list(ours)
    for reference in theirs:
        best = max(unmatched, key=lambda d: iou(as_xywh(corners(d)), as_xywh(corners(reference))))
        overlap = iou(as_xywh(corners(best)), as_xywh(corners(reference)))
        assert overlap >= 0.9, (what, corners(best), corners(reference))
        assert abs(best.confidence - reference.confidence) < 1e-4, (what, best, reference)
        unmatched.remove(best)


@pytest.fixture(scope="module")
def network(models_dir: Path) -> MmodNetwork:
    return MmodNetwork(ModelStore(models_dir), "cpu", threads=2)


@pytest.fixture(scope="module")
def dlib_cnn(models_dir: Path):
    return dlib.cnn_face_detection_model_v1(str(models_dir / MMOD_DETECTOR.name))


@pytest.mark.parametrize(("path", "upsample", "crop", "faces"), CASES,
                         ids=[f"{Path(p).stem}-up{u}" for p, u, _, _ in CASES])
def test_boxes_match_dlib_bin(faces_dir: Path, network: MmodNetwork, dlib_cnn, path: str,
                              upsample: int, crop: tuple[int, int, int, int] | None,
                              faces: int) -> None:
    image = photo(faces_dir, path, crop)
    theirs = list(dlib_cnn(image, upsample))
    ours = network(image, upsample)
    assert len(theirs) == faces
    assert_same_detections(ours, theirs, f"{path} upsample {upsample}")
    # In practice the pyramid is dlib's to the bit and the scores agree to float noise, so
    # the rectangles are dlib's own.
    assert sorted(corners(d) for d in ours) == sorted(corners(d) for d in theirs)


@pytest.mark.parametrize("size", [(1, 1), (9, 4), (7, 7), (2, 300), (30, 41), (62, 200),
                                  (200, 20)])
def test_tiny_and_thin_crops_match_dlib_bin(faces_dir: Path, network: MmodNetwork, dlib_cnn,
                                            size: tuple[int, int]) -> None:
    # Crops too small for the network or for a pyramid, or too thin for the tiling's first
    # column: the layout's edge cases (dlib's unsigned arithmetic). Where dlib-bin raises
    # (a filter wider than its padded input), the converted detector finds nothing. Where
    # dlib's layout puts a copy outside the tiled image, dlib-bin writes past its tensor
    # (it crashed this process later) and is not called: the conversion finds nothing there.
    rows, cols = size
    image = photo(faces_dir, "groups/group_photos/obama_family.jpg",
                  (100, 100 + rows, 150, 150 + cols))
    for upsample in (0, 1):
        searched = dlib_mmod.upsample(image, upsample)
        rects, total_rows, total_cols = dlib_mmod.pyramid_layout(
            *searched.shape[:2], network.spec.pyramid_padding,
            network.spec.pyramid_outer_padding)
        if not all(0 <= left <= right < total_cols and 0 <= top <= bottom < total_rows
                   for left, top, right, bottom in rects):
            assert network(image, upsample) == []
            continue
        try:
            theirs = list(dlib_cnn(image, upsample))
        except RuntimeError as exc:
            assert "Filter windows must be small enough" in str(exc)
            theirs = []
        assert_same_detections(network(image, upsample), theirs, f"{size} up {upsample}")


def test_a_grayscale_image_is_searched_as_dlib_searches_it(faces_dir: Path,
                                                           network: MmodNetwork,
                                                           dlib_cnn) -> None:
    image = photo(faces_dir, "identities/Juanes/Juanes_0001.jpg")[:, :, 1].copy()
    theirs = list(dlib_cnn(image, 0))
    assert len(theirs) == 1
    assert_same_detections(network(image), theirs, "grayscale")


def test_resizes_equal_dlib_resize_image_bit_for_bit(faces_dir: Path) -> None:
    image = photo(faces_dir, "groups/group_photos/longoria_cooper.jpg")
    # pyramid_up's resize of the binding's upsampling: RGB uint8, truncated.
    rows, cols = dlib_mmod.upsampled_size(*image.shape[:2])
    assert (rows, cols) == (2 * image.shape[0] + 1, 2 * image.shape[1] + 2)
    assert np.array_equal(dlib_mmod.resize_rgb(image, rows, cols),
                          dlib.resize_image(image, rows, cols))
    # One pyramid step (5/6) of a float plane, as tt::resize_bilinear runs it.
    plane = (image[:, :, 0].astype(np.float32) - 122.782) / 256
    for out_rows, out_cols in ((394, 244), (329, 203), (7, 5)):
        ours = dlib_mmod.resize_float(plane[None], out_rows, out_cols)[0]
        assert np.array_equal(ours, dlib.resize_image(plane, out_rows, out_cols))


def test_the_pyramid_tiles_every_copy_inside_the_tensor(faces_dir: Path,
                                                        network: MmodNetwork) -> None:
    image = photo(faces_dir, "groups/group_photos/obama_family.jpg")
    tensor, rects = pyramid_tensor(image, network.spec)
    assert tensor.shape[:2] == (1, 3) and tensor.dtype == np.float32
    # The full-size copy sits inside the outer padding, each copy is 5/6 of the one before,
    # none overlaps another, and the pixels between them are zero.
    outer = network.spec.pyramid_outer_padding
    assert rects[0] == (outer, outer, outer + 639, outer + 426)
    sizes = [(r[2] - r[0] + 1, r[3] - r[1] + 1) for r in rects]
    for (width, height), (next_width, next_height) in itertools.pairwise(sizes):
        # pyramid_down<6>'s output size: floor(5/6 · n), in double as dlib computes it.
        assert (next_width, next_height) == (math.floor(5 / 6 * width),
                                             math.floor(5 / 6 * height))
    assert min(height for _, height in sizes) >= 5
    covered = np.zeros(tensor.shape[2:], dtype=int)
    for left, top, right, bottom in rects:
        covered[top:bottom + 1, left:right + 1] += 1
    assert covered.max() == 1
    assert not tensor[0][:, covered == 0].any()
    mean = np.asarray(network.spec.mean_rgb, dtype=np.float32)
    first = tensor[0, :, outer:outer + 427, outer:outer + 640].transpose(1, 2, 0)
    assert np.array_equal(first, (image.astype(np.float32) - mean) / 256)


def test_the_cnn_detector_gives_dlib_bins_boxes_under_the_scale_policy(
        faces_dir: Path, models_dir: Path) -> None:
    store = ModelStore(models_dir)
    image = load_rgb(faces_dir / "identities/kit_harington/john2.jpeg")  # 630×374, one face
    # A 160-px smallest face: both search a half-size copy; boxes come back in the photo.
    options = DetectorOptions(min_face_size=160)
    assert options.scale(image) == 0.5
    converted = create_detector("cnn", options, store)
    assert isinstance(converted, MmodDetector) and converted.name == "cnn"
    ours = converted.detect(image)
    theirs = CnnDetector(options, store).detect(image)
    assert len(ours) == len(theirs) == 1
    assert ours[0].w >= 160
    assert [box.as_list() for box in ours] == [box.as_list() for box in theirs]
    for box, reference in zip(ours, theirs, strict=True):
        assert abs(box.score - reference.score) < 1e-4
    # hog+cnn's CNN half is the converted one, capped for the retry.
    retry = create_detector("hog+cnn", DetectorOptions(), store)
    assert isinstance(retry, RetryDetector) and isinstance(retry.retry, MmodDetector)
    assert retry.retry.options.max_search_pixels == RETRY_MAX_SEARCH_PIXELS
    assert set(DETECTORS) == {"hog", "cnn", "hog+cnn", "hog,cnn"}


def test_torch_module_equals_onnx_runtime(faces_dir: Path, models_dir: Path,
                                          network: MmodNetwork) -> None:
    torch_network = MmodNetwork(ModelStore(models_dir), "torch-cpu")
    # Tensors of several sizes through one session: height and width are dynamic.
    for path in ("identities/Juanes/Juanes_0001.jpg", "groups/group_photos/longoria_cooper.jpg"):
        image = photo(faces_dir, path)
        tensor, _ = pyramid_tensor(image, network.spec)
        onnx_scores = network.scores(tensor)
        torch_scores = torch_network.scores(tensor)
        rows, cols = tensor.shape[2:]
        for _ in range(3):  # the three unpadded 5×5/2 convolutions; the rest keep the size
            rows, cols = (rows - 5) // 2 + 1, (cols - 5) // 2 + 1
        assert onnx_scores.shape == torch_scores.shape == (1, 1, rows, cols)
        assert np.abs(onnx_scores - torch_scores).max() < 1e-4
        on_torch, on_onnx = torch_network(image), network(image)
        assert [d.rect for d in on_torch] == [d.rect for d in on_onnx]
        assert np.allclose([d.confidence for d in on_torch], [d.confidence for d in on_onnx],
                           atol=1e-4)
    # A batch of two: the batch axis is dynamic too.
    batch = np.concatenate([tensor, tensor])
    assert np.abs(network.scores(batch) - torch_network.scores(batch)).max() < 1e-4


def damaged_copies(models_dir: Path, faces_dir: Path, folder: Path) -> dict[str, Path]:
    data = (models_dir / MMOD_DETECTOR.name).read_bytes()
    copies = {
        "truncated": data[:len(data) // 2],
        "header cut": data[:40],
        "empty": b"",
        # The loss layer's version, a byte of its type name, the loss options' version.
        "version byte flipped": bytes([data[0] ^ 0x80]) + data[1:],
        "type name byte flipped": data[:8] + bytes([data[8] ^ 0x04]) + data[9:],
        "options byte flipped": data[:16] + bytes([data[16] ^ 0x40]) + data[17:],
        "a JPEG": (faces_dir / "identities/Juanes/Juanes_0001.jpg").read_bytes(),
    }
    paths = {}
    for name, content in copies.items():
        path = folder / f"{name.replace(' ', '_')}.dat"
        path.write_bytes(content)
        paths[name] = path
    # A dlib DNN file of another network: the face descriptor ResNet.
    paths["the ResNet .dat"] = models_dir / DLIB_RESNET.name
    return paths


def test_damaged_or_foreign_dat_files_raise_one_line_naming_the_file_and_the_fix(
        models_dir: Path, faces_dir: Path, tmp_path: Path) -> None:
    for what, path in damaged_copies(models_dir, faces_dir, tmp_path).items():
        with pytest.raises(ModelError) as caught:
            load_spec(path)
        message = str(caught.value)
        assert str(path) in message, what
        assert "faceid models --force" in message, what
        assert "\n" not in message, what
    with pytest.raises(ModelError, match="cannot be read"):
        load_spec(tmp_path / "missing.dat")
    with pytest.raises(ModelError, match="not dlib's MMOD face detector"):
        load_spec(models_dir / DLIB_RESNET.name)


def scratch_store(models_dir: Path, folder: Path) -> ModelStore:
    folder.mkdir()
    shutil.copyfile(models_dir / MMOD_DETECTOR.name, folder / MMOD_DETECTOR.name)
    return ModelStore(folder)


def test_the_onnx_file_is_built_once_and_rebuilt_when_its_record_does_not_match(
        models_dir: Path, tmp_path: Path) -> None:
    store = scratch_store(models_dir, tmp_path / "models")
    path, built = prepare_mmod_onnx(store)
    assert built and path == mmod_onnx_path(store) == store.folder / \
        "mmod_human_face_detector.onnx"
    record = json.loads(record_path(path).read_text())
    assert record["source"] == MMOD_DETECTOR.name
    assert record["source_sha256"] == sha256_file(store.folder / MMOD_DETECTOR.name)
    assert record["sha256"] == sha256_file(path)
    assert record["settings"] == EXPORT_SETTINGS
    assert prepare_mmod_onnx(store) == (path, False)
    first_bytes = path.read_bytes()

    def tamper(change) -> None:
        data = json.loads(record_path(path).read_text())
        change(data)
        record_path(path).write_text(json.dumps(data))

    # Another .dat digest, another recipe, a file that no longer hashes to its record, a
    # missing record: each is rebuilt, to the same bytes.
    tamper(lambda data: data.update(source_sha256="0" * 64))
    assert prepare_mmod_onnx(store) == (path, True)
    tamper(lambda data: data["settings"].update(recipe=0))
    assert prepare_mmod_onnx(store) == (path, True)
    path.write_bytes(first_bytes + b"\0")
    assert prepare_mmod_onnx(store) == (path, True)
    record_path(path).unlink()
    assert prepare_mmod_onnx(store) == (path, True)
    assert path.read_bytes() == first_bytes
    assert prepare_mmod_onnx(store, force=True) == (path, True)
    assert prepare_mmod_onnx(store) == (path, False)
    # No temporary files are left beside it.
    assert sorted(p.name for p in store.folder.iterdir()) == sorted(
        [MMOD_DETECTOR.name, path.name, record_path(path).name])


def test_the_onnx_graph_has_dynamic_batch_height_and_width(models_dir: Path) -> None:
    import onnx

    path, _ = prepare_mmod_onnx(ModelStore(models_dir))
    model = onnx.load(str(path))
    dims = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (model.graph.input[0], model.graph.output[0])]
    assert dims == [["batch", 3, "height", "width"], ["batch", 1, "rows", "cols"]]
    assert [node.op_type for node in model.graph.node].count("Conv") == 7


def test_cpu_detection_never_imports_torch(models_dir: Path, faces_dir: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from faceid_tui.engine.decode import load_rgb\n"
        "from faceid_tui.engine.detection import DetectorOptions\n"
        "from faceid_tui.engine.detectors import create_detector\n"
        "from faceid_tui.engine.models import ModelStore\n"
        f"store = ModelStore(Path({str(models_dir)!r}))\n"
        "detector = create_detector('cnn', DetectorOptions(device='auto'), store)\n"
        f"image = load_rgb(Path({str(faces_dir / 'identities/Juanes/Juanes_0001.jpg')!r}))\n"
        "print(len(detector.detect(image)), detector.device, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=REPO, env=env, timeout=120, check=True)
    count, device, imported = result.stdout.split()
    assert int(count) == 1
    if device == "cpu":  # no GPU driver here: auto must not have asked torch
        assert imported == "False"
