"""The onnxruntime FaceNet embedders against torch on the real chips of ../shared/faces, and
when their exported files in ``face_models/`` are reused or rebuilt.

The ONNX files are built in a temporary models folder that links the repository's ``.pt``
(94 MB) instead of copying it; export and int8 calibration run once per module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.engine import embedding, onnx_embedder
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.dlib_mmod import mmod_onnx_path
from faceid_tui.engine.dlib_resnet import resnet_onnx_path
from faceid_tui.engine.embedders import EMBEDDERS, create_embedder
from faceid_tui.engine.embedding import (
    EmbedderOptions,
    FacenetEmbedder,
    facenet_runtime,
    resolve_device,
)
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.onnx_embedder import (
    OnnxFacenetEmbedder,
    onnx_path,
    record_path,
)
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import ModelError

pytest.importorskip("onnxruntime")

#: fp32 onnxruntime computes the same graph in the same precision: measured 1 - cosine
#: ≤ 1.2e-7 on these chips, so 1e-4 leaves room only for kernel-order noise.
FP32_MIN_COSINE = 0.9999
#: Static int8 measured min cosine 0.9987 on these chips and 0.9976 over the 7,701 chips of
#: LFW (out of sample; LFW accuracy unchanged at 0.9765). 0.99 allows 4× that worst error,
#: for CPUs whose int8 kernels round differently, and still fails a broken calibration
#: (dynamic ranges off by a few ×, or a layer left unquantized wrongly, gives < 0.98).
INT8_MIN_COSINE = 0.99
#: Largest change in a pair's cosine score: measured 1e-7 (fp32) and 0.014 (int8).
SCORE_TOLERANCE = {"fp32": 1e-4, "int8": 0.03}
OPTIONS = EmbedderOptions(device="cpu", threads=2)


def link_models(source: Path, target: Path, *extra: Path) -> ModelStore:
    """A models folder with the manifest copied and the weights (and ``extra``) hard-linked,
    or symlinked across filesystems; atomic writes replace links, never the originals."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "manifest.json", target / "manifest.json")
    store = ModelStore(source)
    weights = store.verified_path(store.active_weights().model_file)
    for path in (weights, *extra):
        destination = target / path.name
        if path.suffix == ".json":
            shutil.copyfile(path, destination)
            continue
        try:
            os.link(path, destination)
        except OSError:
            destination.symlink_to(path.resolve())
    return ModelStore(target)


@pytest.fixture(scope="module")
def photos(faces_dir: Path) -> list[str]:
    with open(faces_dir / "identities.csv", newline="") as handle:
        return [row["path"] for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def chips(facenet_pipeline: Pipeline, faces_dir: Path, photos: list[str]) -> np.ndarray:
    """The largest face's FaceNet chip of every identity photo, cut by faceid's own pipeline."""
    cut = []
    for photo in photos:
        faces = facenet_pipeline.find_faces(load_rgb(faces_dir / photo))
        cut.append(max(faces, key=lambda face: face.box.area).chip)
    return np.stack(cut)


@pytest.fixture(scope="module")
def torch_vectors(torch_facenet: FacenetEmbedder, chips: np.ndarray) -> np.ndarray:
    return torch_facenet.embed(chips)


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> ModelStore:
    return link_models(models_dir, tmp_path_factory.mktemp("onnx_models"))


@pytest.fixture(scope="module")
def embedders(onnx_models: ModelStore, chips: np.ndarray) -> dict[str, OnnxFacenetEmbedder]:
    # Calibrate on every other chip, so half the chips checked below are unseen by it.
    return {
        "fp32": OnnxFacenetEmbedder(OPTIONS, onnx_models, "fp32"),
        "int8": OnnxFacenetEmbedder(OPTIONS, onnx_models, "int8", chips[::2]),
    }


def test_first_construction_builds_the_files(embedders: dict[str, OnnxFacenetEmbedder],
                                             onnx_models: ModelStore) -> None:
    for precision, embedder in embedders.items():
        assert embedder.built
        assert embedder.model_path == onnx_path(onnx_models, precision)
        assert embedder.model_path.parent == onnx_models.folder
        record = json.loads(record_path(embedder.model_path).read_text())
        weights = onnx_models.folder / onnx_models.active_weights().model_file.name
        assert record["source"] == weights.name
        assert record["source_sha256"] == onnx_embedder.sha256_file(weights)
        assert record["sha256"] == onnx_embedder.sha256_file(embedder.model_path)
    assert json.loads(record_path(embedders["int8"].model_path).read_text())[
        "calibration_chips"] == 34
    # No temporary files left behind by the atomic writes or the quantizer.
    assert not list(onnx_models.folder.glob(".*.tmp"))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_vectors_match_torch(precision: str, embedders: dict[str, OnnxFacenetEmbedder],
                             chips: np.ndarray, torch_vectors: np.ndarray) -> None:
    vectors = embedders[precision].embed(chips)
    assert vectors.shape == torch_vectors.shape and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.einsum("ij,ij->i", vectors, torch_vectors)
    bound = FP32_MIN_COSINE if precision == "fp32" else INT8_MIN_COSINE
    assert cosines.min() >= bound, f"{precision}: min cosine {cosines.min():.6f}"


def test_batching_does_not_change_vectors(embedders: dict[str, OnnxFacenetEmbedder],
                                          chips: np.ndarray) -> None:
    embedder = embedders["fp32"]
    whole = embedder.embed(chips[:5])
    one_by_one = np.concatenate([embedder.embed(chips[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-5)
    assert embedder.embed(chips[:0]).shape == (0, 512)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_pairs_keep_their_ranking(precision: str, embedders: dict[str, OnnxFacenetEmbedder],
                                  chips: np.ndarray, torch_vectors: np.ndarray,
                                  faces_dir: Path, photos: list[str]) -> None:
    index = {photo: i for i, photo in enumerate(photos)}
    with open(faces_dir / "pairs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    a = np.array([index[row["path_a"]] for row in rows])
    b = np.array([index[row["path_b"]] for row in rows])
    same = np.array([row["same"] == "1" for row in rows])
    vectors = embedders[precision].embed(chips)
    expected = np.einsum("ij,ij->i", torch_vectors[a], torch_vectors[b])
    scores = np.einsum("ij,ij->i", vectors[a], vectors[b])
    assert np.abs(scores - expected).max() <= SCORE_TOLERANCE[precision]
    # Every (same-person pair, different-person pair) that torch ranks right stays ranked
    # right (90 × 90 combinations; torch itself gets all but 7 right).
    torch_right = expected[same][:, None] > expected[~same][None, :]
    onnx_right = scores[same][:, None] > scores[~same][None, :]
    assert torch_right.sum() > 0.99 * torch_right.size
    assert not (torch_right & ~onnx_right).any()


def test_model_ids(embedders: dict[str, OnnxFacenetEmbedder], facenet_pipeline: Pipeline,
                   onnx_models: ModelStore) -> None:
    # fp32 equals torch to float noise, so it shares torch's id (and its thresholds).
    assert embedders["fp32"].model_id == facenet_pipeline.embedder.model_id
    assert embedders["int8"].model_id == facenet_pipeline.embedder.model_id + "+int8"
    assert EMBEDDERS["facenet-onnx"].model_id(onnx_models) == embedders["fp32"].model_id
    assert EMBEDDERS["facenet-onnx-int8"].model_id(onnx_models) == embedders["int8"].model_id
    assert embedders["fp32"].device == "cpu" and embedders["fp32"].dimension == 512


def test_second_construction_reuses_the_files(embedders: dict[str, OnnxFacenetEmbedder],
                                              onnx_models: ModelStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rebuild(*_args: object) -> bytes:
        raise AssertionError("a current ONNX file was rebuilt")

    monkeypatch.setattr(onnx_embedder, "export_fp32", no_rebuild)
    monkeypatch.setattr(onnx_embedder, "quantize_int8", no_rebuild)
    before = {p: p.stat().st_mtime_ns for p in onnx_models.folder.iterdir()}
    for name in ("facenet-onnx", "facenet-onnx-int8"):
        # Through the registry, and int8 without calibration chips: it has its file already.
        again = create_embedder(name, OPTIONS, onnx_models)
        assert isinstance(again, OnnxFacenetEmbedder) and not again.built
    assert {p: p.stat().st_mtime_ns for p in onnx_models.folder.iterdir()} == before


def test_rebuilt_when_the_record_does_not_match(embedders: dict[str, OnnxFacenetEmbedder],
                                                onnx_models: ModelStore, models_dir: Path,
                                                tmp_path: Path, chips: np.ndarray,
                                                torch_vectors: np.ndarray,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fp32_path = embedders["fp32"].model_path
    store = link_models(models_dir, tmp_path / "models", fp32_path, record_path(fp32_path))
    copied = onnx_path(store, "fp32")
    # A known-good export stands in for torch's exporter (slow); what is tested is the
    # decision to rebuild and that the rebuilt file is written and recorded.
    exports: list[Path] = []

    def export(weights: Path) -> bytes:
        exports.append(weights)
        return fp32_path.read_bytes()

    monkeypatch.setattr(onnx_embedder, "export_fp32", export)
    assert not OnnxFacenetEmbedder(OPTIONS, store).built  # the linked copy is current
    assert exports == []

    record = json.loads(record_path(copied).read_text())
    record["source_sha256"] = "0" * 64  # as if exported from other weights
    record_path(copied).write_text(json.dumps(record))
    rebuilt = OnnxFacenetEmbedder(OPTIONS, store)
    assert rebuilt.built and len(exports) == 1
    record = json.loads(record_path(copied).read_text())
    assert record["source_sha256"] == onnx_embedder.sha256_file(exports[0])
    cosines = np.einsum("ij,ij->i", rebuilt.embed(chips[:4]), torch_vectors[:4])
    assert cosines.min() >= FP32_MIN_COSINE

    # Other export settings (an older recipe) and a damaged file are rebuilt too.
    record["settings"] = {**record["settings"], "recipe": 0}
    record_path(copied).write_text(json.dumps(record))
    assert OnnxFacenetEmbedder(OPTIONS, store).built and len(exports) == 2
    # Rebuilds replaced the link by a new file, so this damages no other folder's file.
    assert not os.path.samefile(copied, fp32_path)
    with open(copied, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\0" * 16)
    assert OnnxFacenetEmbedder(OPTIONS, store).built and len(exports) == 3
    assert not OnnxFacenetEmbedder(OPTIONS, store).built and len(exports) == 3


def test_int8_without_a_current_file_needs_calibration_chips(
        embedders: dict[str, OnnxFacenetEmbedder], models_dir: Path, tmp_path: Path,
        chips: np.ndarray) -> None:
    fp32_path = embedders["fp32"].model_path
    store = link_models(models_dir, tmp_path / "models", fp32_path, record_path(fp32_path))
    with pytest.raises(ModelError, match="onnx_embedder --int8"):
        OnnxFacenetEmbedder(OPTIONS, store, "int8")
    with pytest.raises(ValueError, match="at least"):
        OnnxFacenetEmbedder(OPTIONS, store, "int8", chips[:3])
    assert not onnx_path(store, "int8").exists()


def test_cuda_is_refused(onnx_models: ModelStore) -> None:
    with pytest.raises(ValueError, match="CPU"):
        OnnxFacenetEmbedder(EmbedderOptions(device="cuda"), onnx_models)


def test_registry_does_not_load_onnxruntime() -> None:
    code = ("import sys; from faceid_tui.engine.embedders import EMBEDDERS; "
            "assert 'facenet-onnx' in EMBEDDERS; print('onnxruntime' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_facenet_runs_on_onnxruntime_on_the_cpu_unless_asked_for_torch(
        onnx_models: ModelStore, chips: np.ndarray, torch_vectors: np.ndarray,
        torch_facenet: FacenetEmbedder) -> None:
    default = create_embedder("facenet", EmbedderOptions(device="cpu"), onnx_models)
    assert isinstance(default, OnnxFacenetEmbedder) and default.precision == "fp32"
    # Same weights, same id (so banks and thresholds carry over), same vectors.
    assert default.model_id == torch_facenet.model_id
    cosines = np.einsum("ij,ij->i", default.embed(chips), torch_vectors)
    assert cosines.min() >= FP32_MIN_COSINE
    forced = create_embedder("facenet", EmbedderOptions(device="cpu", runtime="torch"),
                             onnx_models)
    assert isinstance(forced, FacenetEmbedder)
    assert facenet_runtime(EmbedderOptions(device="cpu", runtime="onnx")) == "onnx"
    with pytest.raises(ValueError, match="runtime"):
        facenet_runtime(EmbedderOptions(runtime="tensorflow"))


def test_faceid_models_exports_the_cpu_runtime_once(tmp_path: Path, models_dir: Path) -> None:
    """`faceid models` (what `make run` and `make test` call) builds the ONNX files the default
    embedder runs on (FaceNet exported, dlib's ResNet converted), so the first scan does not
    wait for them; not when torch is asked for."""
    store = link_models(models_dir, tmp_path / "models")

    def models(*args: str) -> list[str]:
        run = subprocess.run([sys.executable, "-m", "faceid_tui", "--models", str(store.folder),
                              "models", "--json", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        return [action for action in json.loads(run.stdout)["actions"] if "onnx" in action]

    assert models("--runtime", "torch") == []
    assert not onnx_path(store, "fp32").exists()
    assert not resnet_onnx_path(store).exists()
    built = models()  # FaceNet exported; dlib's ResNet and CNN detector converted
    assert sorted(path.name for path in (onnx_path(store, "fp32"), resnet_onnx_path(store),
                                         mmod_onnx_path(store))
                  if any(path.name in action for action in built)) == sorted(
        [onnx_path(store, "fp32").name, resnet_onnx_path(store).name,
         mmod_onnx_path(store).name])
    assert len(built) == 3
    assert json.loads(record_path(onnx_path(store, "fp32")).read_text())["sha256"] == \
        onnx_embedder.sha256_file(onnx_path(store, "fp32"))
    assert models() == []  # current: reused, not exported again


def test_a_scan_on_a_machine_without_a_gpu_never_imports_torch(
        pipeline: Pipeline, models_dir: Path, identity_photos: dict[str, list[Path]],
        tmp_path: Path) -> None:
    """Without a GPU driver, `--device auto` resolves to the CPU without asking torch, and
    FaceNet runs on onnxruntime: the process never pays torch's import (measured 2.6 s →
    1.2 s and 0.98 → 0.37 GB peak for a one-photo scan). The session pipeline has already
    exported the ONNX file into ``models_dir``."""
    photo = identity_photos["George_Clooney"][0]
    script = "\n".join([
        "import json, sys",
        "from faceid_tui.engine import embedding",
        # As on a machine with no GPU driver, whatever this one has.
        "embedding.GPU_DRIVER_MARKERS = ('/nonexistent/nvidia',)",
        "from faceid_tui.cli import main",
        f"code = main(['--models', {str(models_dir)!r}, '--bank', {str(tmp_path / 'bank')!r},"
        f" 'scan', '--json', {str(photo)!r}])",
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules}), file=sys.stderr)",
    ])
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    outcome = json.loads(run.stderr.strip().splitlines()[-1])
    [scanned] = [json.loads(line) for line in run.stdout.splitlines()]
    assert outcome == {"code": 0, "torch": False}
    assert scanned["error"] is None and len(scanned["faces"]) == 1


def test_the_device_is_asked_of_torch_only_where_a_gpu_driver_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(embedding, "GPU_DRIVER_MARKERS", (str(tmp_path / "no-driver"),))
    assert resolve_device("auto") == "cpu"
    (tmp_path / "no-driver").touch()  # now a driver seems present: torch decides
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        resolve_device("gpu")
