"""dlib's ResNet converted from its .dat: the same descriptors as dlib-bin on real faces, on
ONNX Runtime and on torch, so the fused model id (and its impostor curve, measured with
dlib-bin) still holds; damaged files are refused with the fix."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import dlib
import numpy as np
import pytest

from faceid_tui.engine import dlib_resnet
from faceid_tui.engine.dlib_dat import pack_integer, read_network
from faceid_tui.engine.dlib_resnet import (
    DESCRIPTOR_SIZE,
    DlibDescriptor,
    load_spec,
    network_input,
    prepare_resnet_onnx,
    resnet_onnx_path,
)
from faceid_tui.engine.embedding import EmbedderOptions
from faceid_tui.engine.fusion import FACENET_WEIGHT, FusedEmbedder, dlib_chips
from faceid_tui.engine.model_records import record_path
from faceid_tui.engine.models import DLIB_RESNET, MMOD_DETECTOR, ModelStore
from faceid_tui.engine.onnx_embedder import create_onnx
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions
from faceid_tui.errors import ModelError

#: The issue's bound for "the same vectors": descriptors within 1e-5 of dlib-bin's.
SAME_VECTORS = 1e-5


@pytest.fixture(scope="module")
def master_chips(models_dir: Path, identity_photos) -> np.ndarray:
    """The 360-px master chips the fused embedder reads, of real faces of 8 people."""
    finder = Pipeline(ModelStore(models_dir), PipelineOptions(embedder="facenet+dlib")).finder
    chips = []
    for name in sorted(identity_photos)[:8]:
        for photo in identity_photos[name][:2]:
            result = finder.find(photo, fallback_center=False, keep_image=False)
            chips += [face.chip for face in result.faces]
    assert len(chips) >= 12
    return np.stack(chips)


@pytest.fixture(scope="module")
def reference(models_dir: Path, master_chips: np.ndarray) -> np.ndarray:
    """dlib-bin's own descriptors of the same 150-px chips (not normalised)."""
    network = dlib.face_recognition_model_v1(
        str(ModelStore(models_dir).verified_path(DLIB_RESNET)))
    chips = [np.ascontiguousarray(chip) for chip in dlib_chips(master_chips)]
    return np.array(network.compute_face_descriptor(chips), dtype=np.float32)


def test_onnx_runtime_gives_dlib_bins_descriptors(models_dir: Path, master_chips: np.ndarray,
                                                  reference: np.ndarray) -> None:
    descriptor = DlibDescriptor(ModelStore(models_dir), threads=2, batch_size=5)
    raw = descriptor.raw(dlib_chips(master_chips))  # several batches, the last one short
    assert raw.shape == (len(master_chips), DESCRIPTOR_SIZE)
    assert np.abs(raw - reference).max() < SAME_VECTORS
    normalised = descriptor(dlib_chips(master_chips))
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=1), 1.0, atol=1e-6)


def test_the_torch_module_gives_dlib_bins_descriptors(models_dir: Path,
                                                      master_chips: np.ndarray,
                                                      reference: np.ndarray) -> None:
    """The CUDA path's module, run on the CPU build of torch."""
    descriptor = DlibDescriptor(ModelStore(models_dir), runtime="torch", device="cpu")
    raw = descriptor.raw(dlib_chips(master_chips))
    assert np.abs(raw - reference).max() < SAME_VECTORS


def test_fused_vectors_are_those_of_dlib_bin(models_dir: Path, master_chips: np.ndarray,
                                             reference: np.ndarray) -> None:
    """The fused embedder with the converted ResNet gives the vectors it gave with dlib-bin:
    the model id, the stored embeddings and the impostor curve carry over."""
    store = ModelStore(models_dir)
    facenet = create_onnx(EmbedderOptions(device="cpu", threads=2), store)
    converted = FusedEmbedder(facenet, DlibDescriptor(store, threads=2), store)
    bin_descriptor = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    with_dlib_bin = FusedEmbedder(facenet, lambda _chips: bin_descriptor, store)
    assert converted.model_id == with_dlib_bin.model_id
    vectors = converted.embed(master_chips)
    assert np.abs(vectors - with_dlib_bin.embed(master_chips)).max() < SAME_VECTORS
    np.testing.assert_allclose(np.linalg.norm(vectors[:, 512:], axis=1),
                               math.sqrt(1 - FACENET_WEIGHT), atol=1e-6)


def test_the_onnx_file_is_rebuilt_when_its_record_does_not_match(
        models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = ModelStore(models_dir)
    built_path, _ = prepare_resnet_onnx(source)
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (DLIB_RESNET.name, "manifest.json", built_path.name,
                 record_path(built_path).name):
        shutil.copy2(models_dir / name, folder / name)
    store = ModelStore(folder)
    exports: list[int] = []

    def export(spec: dlib_resnet.ResNetSpec) -> bytes:  # the real export takes ~11 s
        exports.append(len(spec.blocks))
        return built_path.read_bytes()

    monkeypatch.setattr(dlib_resnet, "export_onnx", export)
    assert prepare_resnet_onnx(store) == (resnet_onnx_path(store), False)
    record = json.loads(record_path(resnet_onnx_path(store)).read_text())
    record["source_sha256"] = "0" * 64  # as if converted from another .dat
    record_path(resnet_onnx_path(store)).write_text(json.dumps(record))
    assert prepare_resnet_onnx(store)[1] and exports == [14]
    record = json.loads(record_path(resnet_onnx_path(store)).read_text())
    assert record["source_sha256"] == record["source_sha256"] and record["source"] == \
        DLIB_RESNET.name
    assert not prepare_resnet_onnx(store)[1]  # current again
    with open(resnet_onnx_path(store), "r+b") as handle:  # a damaged ONNX file
        handle.seek(500)
        handle.write(b"\0" * 8)
    assert prepare_resnet_onnx(store)[1] and exports == [14, 14]


def _damaged_files(models_dir: Path, folder: Path) -> dict[str, Path]:
    data = (models_dir / DLIB_RESNET.name).read_bytes()
    header_flipped = bytearray(data)
    header_flipped[2] ^= 0x40  # inside the loss layer's type string
    files = {
        "truncated": data[: len(data) // 2],
        "bit-flipped header": bytes(header_flipped),
        "another network": (models_dir / MMOD_DETECTOR.name).read_bytes(),
        "not a dlib file": b"\x89PNG\r\n\x1a\n" + bytes(200),
    }
    paths = {}
    for label, content in files.items():
        path = folder / f"{label.replace(' ', '_')}.dat"
        path.write_bytes(content)
        paths[label] = path
    return paths


def test_a_damaged_dat_is_refused_naming_the_file_and_the_fix(models_dir: Path,
                                                              tmp_path: Path) -> None:
    for label, path in _damaged_files(models_dir, tmp_path).items():
        with pytest.raises(ModelError) as raised:
            load_spec(path)
        message = str(raised.value)
        assert "\n" not in message, label
        assert str(path) in message and "faceid models --force" in message, (label, message)


def test_a_damaged_dat_in_the_models_folder_is_refused_before_it_is_parsed(
        models_dir: Path, tmp_path: Path) -> None:
    """In face_models/ the file is checked against the package's SHA-256 first."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in (DLIB_RESNET.name, "manifest.json"):
        shutil.copy2(models_dir / name, folder / name)
    target = folder / DLIB_RESNET.name
    target.write_bytes(target.read_bytes()[:-1000])
    with pytest.raises(ModelError) as raised:
        DlibDescriptor(ModelStore(folder))
    assert str(target) in str(raised.value) and "faceid models --force" in str(raised.value)


def test_the_reader_reads_dlibs_integer_encoding() -> None:
    """Integers as dlib writes them (a control byte, then little-endian bytes); a network
    whose loss layer is unknown is refused."""
    from faceid_tui.engine.dlib_dat import DlibFormatError, Reader

    for value in (0, 1, -1, 127, 128, 300, -70000, 2**40):
        assert Reader(pack_integer(value)).integer() == value
    junk = pack_integer(1) + pack_integer(9) + b"loss_what"
    with pytest.raises(DlibFormatError, match="loss_what"):
        read_network(junk)


def test_network_input_rejects_the_wrong_chip_size() -> None:
    with pytest.raises(ValueError, match="150"):
        network_input(np.zeros((1, 160, 160, 3), dtype=np.uint8))
