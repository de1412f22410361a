"""FaceNet on ONNX Runtime: the same weights as the ``facenet`` embedder, run faster on the CPU.

The torch network is exported once to ONNX (torch's ``torch.export``-based exporter, dynamic
batch axis) and written into ``face_models/`` next to its ``.pt``:

* ``<weights>.onnx`` — fp32. Its embeddings equal torch's to float noise (cosine ≥ 0.99999 on
  real chips), so it shares torch's model id and thresholds.
* ``<weights>.int8.onnx`` — static int8 (QDQ, per-channel int8 weights, uint8 activations),
  quantized from the fp32 file with activation ranges calibrated on real face chips. Its
  embeddings differ slightly (cosine ≈ 0.999 to fp32), so its model id ends in ``+int8``.
  The package ships no face photos, so the first build needs chips: pass
  ``calibration_chips`` or run ``python -m faceid_tui.engine.onnx_embedder --int8 PHOTO_DIR``.

Each file has a ``.json`` record beside it with the SHA-256 of the ``.pt`` it came from, its
own SHA-256 and the export settings. A file is reused only when that record matches the
current weights, the settings and the file itself; otherwise it is rebuilt. Files are written
to a temporary name and renamed, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from faceid_tui.engine.alignment import CHIP_SIZE, standardise
from faceid_tui.engine.embedding import EmbedderOptions, available_cores, facenet_model_id
from faceid_tui.engine.model_records import is_current, record_path, write_model
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.onnx_session import export_dynamic_batch, session_options
from faceid_tui.errors import ModelError
from faceid_tui.fsutil import sha256_bytes, sha256_file

Precision = Literal["fp32", "int8"]

INPUT_NAME = "chips"
OUTPUT_NAME = "embeddings"
#: Bumped whenever the export or quantization recipe changes, so older files are rebuilt.
RECIPE_VERSION = 2
#: Opset 18 is the lowest the torch.export-based exporter emits and runs on every
#: onnxruntime this project accepts.
OPSET = 18
#: Fewer faces than this give activation ranges that miss the spread of real photos.
MIN_CALIBRATION_CHIPS = 16
INT8_SUFFIX = "+int8"

EXPORT_SETTINGS: dict[str, Any] = {
    "recipe": RECIPE_VERSION,
    "exporter": "torch.onnx.export(dynamo=True)",
    "opset": OPSET,
    "input": f"{INPUT_NAME}: batch×3×{CHIP_SIZE}×{CHIP_SIZE} float32, (x-127.5)/128",
    "output": f"{OUTPUT_NAME}: batch×512 float32",
    "dynamic_batch": True,
}
QUANTIZATION_SETTINGS: dict[str, Any] = {
    **EXPORT_SETTINGS,
    "quantization": "static",
    "format": "QDQ",
    "per_channel": True,
    "weights": "QInt8",
    "activations": "QUInt8",
    "calibration": "MinMax",
    "float_layers": "the convolution on the input chips",
}


def onnx_model_id(models: ModelStore) -> str:
    """fp32 ORT gives torch's embeddings to float noise, so it shares torch's model id."""
    return facenet_model_id(models)


def onnx_int8_model_id(models: ModelStore) -> str:
    return facenet_model_id(models) + INT8_SUFFIX


def onnx_path(models: ModelStore, precision: Precision) -> Path:
    """Where the ONNX file for the active weights lives (``<weights stem>[.int8].onnx``)."""
    stem = Path(models.active_weights().model_file.name).stem
    suffix = ".onnx" if precision == "fp32" else ".int8.onnx"
    return models.folder / f"{stem}{suffix}"


def _write_model(model_path: Path, data: bytes, source: Path, source_sha256: str,
                 settings: dict[str, Any], extra: dict[str, Any]) -> None:
    import onnxruntime
    import torch

    write_model(model_path, data, source, source_sha256, settings, extra,
                {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__})


def torch_network(weights_path: Path):  # -> InceptionResnetV1, kept untyped for lazy import
    import torch
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    # As in FacenetEmbedder: a release file's training classifier is not part of embedding.
    state = {key: value for key, value in state.items() if not key.startswith("logits.")}
    network = InceptionResnetV1(pretrained=None, classify=False)
    network.load_state_dict(state, strict=True)
    return network.eval()


def export_fp32(weights_path: Path) -> bytes:
    """The torch network of ``weights_path`` as serialised ONNX, batch axis dynamic."""
    return export_dynamic_batch(torch_network(weights_path), (2, 3, CHIP_SIZE, CHIP_SIZE),
                                INPUT_NAME, OUTPUT_NAME, OPSET)


def quantize_int8(fp32_path: Path, chips: np.ndarray) -> bytes:
    """Static int8 QDQ of the fp32 ONNX file, activation ranges from ``chips`` (N×160×160×3)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        """Feeds standardised chips to the calibrator a few at a time (bounded memory)."""

        def __init__(self, batch_size: int = 8) -> None:
            self._batches = (chips[i:i + batch_size] for i in range(0, len(chips), batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: standardise(batch)}

    # The first convolution stays float: its input uses the whole uint8 range, and on x86 CPUs
    # without VNNI onnxruntime's u8s8 kernels (VPMADDUBSW) saturate int16 pair sums there
    # (cosine to fp32 fell to 0.48). Every other layer stays int8.
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    first_convs = [node.name for node in graph.node
                   if node.op_type == "Conv" and INPUT_NAME in node.input]
    if not first_convs:
        raise ModelError(f"{fp32_path}: no convolution reads {INPUT_NAME!r}; delete the file "
                         "and run `faceid models` to export it again")

    # quantize_static writes its augmented model and result to paths; keep them private.
    with tempfile.TemporaryDirectory(prefix="faceid-quant-") as scratch:
        output = Path(scratch) / "int8.onnx"
        quantize_static(
            str(fp32_path), str(output), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=first_convs,
        )
        return output.read_bytes()


def check_chips(chips: np.ndarray) -> np.ndarray:
    chips = np.asarray(chips)
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
        raise ValueError(f"calibration chips must be N×{CHIP_SIZE}×{CHIP_SIZE}×3 uint8, "
                         f"not {chips.shape} {chips.dtype}")
    if len(chips) < MIN_CALIBRATION_CHIPS:
        raise ValueError(f"int8 calibration needs at least {MIN_CALIBRATION_CHIPS} face chips, "
                         f"got {len(chips)}")
    return chips


def prepare_onnx(models: ModelStore, precision: Precision = "fp32",
                 calibration_chips: np.ndarray | None = None) -> tuple[Path, bool]:
    """The ONNX file for the active weights, built if missing or stale; returns
    ``(path, built)``. int8 needs ``calibration_chips`` only when it has to be (re)built."""
    weights_path = models.verified_path(models.active_weights().model_file)
    source_sha256 = sha256_file(weights_path)
    fp32_path = onnx_path(models, "fp32")
    built = False
    if not is_current(fp32_path, source_sha256, EXPORT_SETTINGS):
        _write_model(fp32_path, export_fp32(weights_path), weights_path, source_sha256,
                     EXPORT_SETTINGS, {})
        built = True
    if precision == "fp32":
        return fp32_path, built
    int8_path = onnx_path(models, "int8")
    if is_current(int8_path, source_sha256, QUANTIZATION_SETTINGS):
        return int8_path, False
    if calibration_chips is None:
        raise ModelError(
            f"{int8_path} is missing or was built from other weights or settings; int8 needs "
            "face chips to calibrate on: run `python -m faceid_tui.engine.onnx_embedder --int8 "
            "PHOTO_DIR` with a folder of face photos (50 or more faces)"
        )
    chips = check_chips(calibration_chips)
    calibration = {"calibration_chips": len(chips),
                   "calibration_sha256": sha256_bytes(np.ascontiguousarray(chips).tobytes())}
    _write_model(int8_path, quantize_int8(fp32_path, chips), weights_path, source_sha256,
                 QUANTIZATION_SETTINGS, calibration)
    return int8_path, True


class OnnxFacenetEmbedder:
    """FaceNet (the model store's active weights) on onnxruntime's CPU execution provider."""

    dimension = 512

    def __init__(self, options: EmbedderOptions, models: ModelStore,
                 precision: Precision = "fp32",
                 calibration_chips: np.ndarray | None = None) -> None:
        import onnxruntime

        if options.device == "cuda":
            raise ValueError("the ONNX FaceNet embedders run on the CPU; use the `facenet` "
                             "embedder for --device cuda")
        if precision not in ("fp32", "int8"):
            raise ValueError(f"unknown precision {precision!r}; choose fp32 or int8")
        self.options = options
        self.precision = precision
        self.name = "facenet-onnx" if precision == "fp32" else "facenet-onnx-int8"
        self.device = "cpu"
        self.threads = options.threads or available_cores()
        self.model_path, self.built = prepare_onnx(models, precision, calibration_chips)
        self.weights_key = models.active_weights().key
        self.model_id = onnx_model_id(models) if precision == "fp32" else onnx_int8_model_id(models)
        self._session = onnxruntime.InferenceSession(
            str(self.model_path), session_options(self.threads),
            providers=["CPUExecutionProvider"],
        )

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        outputs = []
        for start in range(0, len(chips), self.options.batch_size):
            batch = standardise(chips[start:start + self.options.batch_size])
            outputs.append(self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
        vectors = np.concatenate(outputs).astype(np.float32, copy=False)
        # The network normalises already; int8 leaves norms a hair off 1, so do it again.
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def create_onnx(options: EmbedderOptions, models: ModelStore) -> OnnxFacenetEmbedder:
    return OnnxFacenetEmbedder(options, models, "fp32")


def create_onnx_int8(options: EmbedderOptions, models: ModelStore) -> OnnxFacenetEmbedder:
    return OnnxFacenetEmbedder(options, models, "int8")


def chips_from_photos(models: ModelStore, folder: Path, limit: int = 500) -> np.ndarray:
    """The largest face's chip of every photo under ``folder`` (at most ``limit``), cut by
    faceid's own detector and aligner so calibration sees what embedding will see."""
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.engine.pipeline import Pipeline
    from faceid_tui.errors import ImageDecodeError

    pipeline = Pipeline(models)
    chips = []
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif"}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes):
        try:
            faces = pipeline.find_faces(load_rgb(path))
        except (ImageDecodeError, RuntimeError):
            continue
        real = [face for face in faces if face.chip is not None]
        if real:
            chips.append(max(real, key=lambda face: face.box.area).chip)
        if len(chips) >= limit:
            break
    if not chips:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    return np.stack(chips)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Export FaceNet to ONNX in face_models/ (and, with --int8, quantize it "
                    "with chips from a folder of face photos).")
    parser.add_argument("--models", type=Path, default=Path("face_models"))
    parser.add_argument("--int8", type=Path, metavar="PHOTO_DIR",
                        help="calibrate int8 on the faces in these photos")
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    args = parser.parse_args(argv)
    models = ModelStore(args.models)
    if args.force:
        for precision in ("fp32", "int8"):
            record_path(onnx_path(models, precision)).unlink(missing_ok=True)
    path, built = prepare_onnx(models, "fp32")
    print(f"{path}: {'exported' if built else 'current'}")
    if args.int8 is not None:
        chips = chips_from_photos(models, args.int8)
        path, built = prepare_onnx(models, "int8", chips)
        print(f"{path}: {'quantized on ' + str(len(chips)) + ' chips' if built else 'current'}")


if __name__ == "__main__":
    main()
