"""dlib's face-descriptor ResNet, converted from its ``.dat`` file to torch and ONNX.

``dlib_face_recognition_resnet_model_v1.dat`` (from ``face-recognition-models``) is read with
:mod:`dlib_dat` and checked against the network dlib defines for it (``anet_type`` in
``tools/python/src/face_recognition.cpp``): a 7×7/2 convolution, max pooling, 14 residual
blocks of two 3×3 convolutions (four of them downsampling, whose shortcut is a 2×2 average
pooling), global average pooling and a 128-d linear layer without bias; 150×150 RGB input,
``(pixel - mean) / 256``. Each ``affine`` layer (a batch norm frozen after training) is folded
into the convolution before it. A shortcut is added as dlib's ``add_prev`` adds: the smaller
tensor is zero-padded at the end of each dimension (channels, rows, columns) to the larger one.

* :func:`torch_module` — the network as a torch module (the CUDA path; torch is imported only
  here);
* :func:`prepare_resnet_onnx` — the ONNX file ``face_models/<dat stem>.onnx`` that ONNX Runtime
  runs on the CPU, exported from that module and rebuilt when the ``.dat`` or the recipe
  changes (:mod:`model_records`);
* :class:`DlibDescriptor` — descriptors of 150×150 chips on either runtime, batched.

Both runtimes give dlib-bin's ``compute_face_descriptor`` to about 1e-6 (tests/test_dlib_resnet.py
compares them on real chips), so the fused model id and its impostor curve stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid_tui.engine.dlib_dat import DlibFormatError, Layer, Network, load_checked
from faceid_tui.engine.model_records import is_current, write_model
from faceid_tui.engine.models import DLIB_RESNET, ModelStore
from faceid_tui.fsutil import sha256_file

INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptors"
#: Bumped whenever the conversion recipe changes, so older ONNX files are rebuilt.
RECIPE_VERSION = 1
OPSET = 18
EXPORT_SETTINGS: dict[str, Any] = {
    "recipe": RECIPE_VERSION,
    "network": "dlib anet_type (face_recognition.cpp)",
    "exporter": "torch.onnx.export(dynamo=True)",
    "opset": OPSET,
    "input": f"{INPUT_NAME}: batch×3×{INPUT_SIZE}×{INPUT_SIZE} float32 RGB 0-255",
    "output": f"{OUTPUT_NAME}: batch×{DESCRIPTOR_SIZE} float32 (not normalised)",
    "affine": "folded into the convolutions",
}


@dataclass(frozen=True)
class Conv:
    """A convolution with its affine layer folded in (OIHW weights, per-filter bias)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class ResidualBlock:
    """``relu(block(x) + shortcut(x))`` with ``block = conv, relu, conv``; a downsampling
    block's shortcut is a 2×2/2 average pooling, otherwise the identity."""

    first: Conv
    second: Conv
    downsample: bool


@dataclass(frozen=True)
class ResNetSpec:
    """The converted network, as plain arrays: what both runtimes are built from."""

    mean_rgb: tuple[float, float, float]
    stem: Conv
    blocks: tuple[ResidualBlock, ...]
    #: ``inputs × 128``: dlib multiplies row vectors by it.
    projection: np.ndarray


class _Layers:
    """A cursor over the parsed layers that checks each one's type as it is taken."""

    def __init__(self, layers: list[Layer]) -> None:
        self._layers = layers
        self.index = 0

    def take(self, family: str) -> Layer:
        if self.index >= len(self._layers):
            raise DlibFormatError(f"the network ends where a {family} layer was expected: "
                                  "not dlib's face descriptor ResNet")
        layer = self._layers[self.index]
        if layer.family != family:
            raise DlibFormatError(f"layer {self.index} is {layer.kind!r} where a {family} layer "
                                  "was expected: not dlib's face descriptor ResNet")
        self.index += 1
        return layer

    def peek_family(self) -> str | None:
        return self._layers[self.index].family if self.index < len(self._layers) else None


def _folded_conv(layers: _Layers) -> Conv:
    conv = layers.take("con")
    affine = layers.take("affine")
    if conv.settings["pad_y"] != conv.settings["pad_x"] or \
            conv.settings["stride_y"] != conv.settings["stride_x"]:
        raise DlibFormatError("an asymmetric convolution: not dlib's face descriptor ResNet")
    if affine.settings["mode"] != 0 or affine.settings["disabled"]:
        raise DlibFormatError("an affine layer not in convolution mode: not dlib's ResNet")
    gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
    weight = conv.arrays["weight"]
    if gamma.shape != (weight.shape[0],):
        raise DlibFormatError("an affine layer does not match its convolution's filters")
    bias = conv.arrays.get("bias", np.zeros(weight.shape[0], dtype=np.float32))
    # affine(conv(x)) = gamma * (W x + b) + beta: fold in float64, store float32.
    folded_weight = weight.astype(np.float64) * gamma.astype(np.float64)[:, None, None, None]
    folded_bias = bias.astype(np.float64) * gamma + beta
    return Conv(folded_weight.astype(np.float32), folded_bias.astype(np.float32),
                int(conv.settings["stride_y"]), int(conv.settings["pad_y"]))


def resnet_spec(network: Network) -> ResNetSpec:
    """Check that ``network`` is dlib's face descriptor ResNet and fold it into a spec."""
    if network.loss.kind not in ("loss_metric_", "loss_metric_2"):
        raise DlibFormatError(f"loss {network.loss.kind!r}: not dlib's face descriptor ResNet")
    if network.input.kind != "input_rgb_image_sized" or \
            (network.input.settings["rows"], network.input.settings["cols"]) != \
            (INPUT_SIZE, INPUT_SIZE):
        raise DlibFormatError(f"input {network.input.kind!r} {network.input.settings}: not "
                              f"dlib's {INPUT_SIZE}×{INPUT_SIZE} face descriptor ResNet")
    layers = _Layers(network.layers)
    stem = _folded_conv(layers)
    layers.take("relu")
    pool = layers.take("max_pool")
    if (pool.settings["rows"], pool.settings["stride_y"], pool.settings["pad_y"]) != (3, 2, 0):
        raise DlibFormatError("the stem's pooling is not 3×3/2: not dlib's ResNet")
    blocks = []
    while layers.peek_family() == "con":
        first = _folded_conv(layers)
        layers.take("relu")
        second = _folded_conv(layers)
        downsample = layers.peek_family() == "avg_pool"
        if downsample:
            shortcut = layers.take("avg_pool")
            if (shortcut.settings["rows"], shortcut.settings["stride_y"]) != (2, 2) or \
                    first.stride != 2:
                raise DlibFormatError("a downsampling block that is not 2×2/2: not dlib's ResNet")
        layers.take("add_prev")
        layers.take("relu")
        blocks.append(ResidualBlock(first, second, downsample))
    pool = layers.take("avg_pool")
    if pool.settings["rows"] != 0 or pool.settings["cols"] != 0:
        raise DlibFormatError("the head's pooling is not global: not dlib's ResNet")
    fc = layers.take("fc")
    if fc.settings["bias"] or fc.settings["num_outputs"] != DESCRIPTOR_SIZE:
        raise DlibFormatError("the head is not a 128-d projection: not dlib's ResNet")
    if layers.peek_family() is not None or len(blocks) != 14:
        raise DlibFormatError(f"{len(blocks)} residual blocks and {len(network.layers)} layers: "
                              "not dlib's face descriptor ResNet")
    mean = network.input.settings["avg_rgb"]
    return ResNetSpec((float(mean[0]), float(mean[1]), float(mean[2])), stem, tuple(blocks),
                      fc.arrays["weight"])


def load_spec(path: Path) -> ResNetSpec:
    """The spec of the ``.dat`` at ``path``; a damaged or foreign file raises
    :class:`ModelError` naming the file and the command that restores it."""
    return load_checked(path, resnet_spec)


def network_input(chips: np.ndarray) -> np.ndarray:
    """RGB uint8 chips (N×150×150×3) as the network's input: float32 pixel values, NCHW (the
    network subtracts dlib's mean and divides by 256 itself)."""
    if chips.ndim != 4 or chips.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"dlib's ResNet reads N×{INPUT_SIZE}×{INPUT_SIZE}×3 chips, "
                         f"not {chips.shape}")
    return np.ascontiguousarray(chips.transpose(0, 3, 1, 2), dtype=np.float32)


def torch_module(spec: ResNetSpec):  # -> torch.nn.Module; torch is imported only here
    """The network as a torch module: NCHW float32 pixel values in (see
    :func:`network_input`), N×128 descriptors out (not normalised)."""
    import torch
    from torch import nn
    from torch.nn import functional

    def conv_layer(conv: Conv) -> nn.Conv2d:
        out_channels, in_channels, size, _ = conv.weight.shape
        layer = nn.Conv2d(in_channels, out_channels, size, stride=conv.stride,
                          padding=conv.padding)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(conv.weight))
            layer.bias.copy_(torch.from_numpy(conv.bias))
        return layer

    def zero_pad_to(tensor: torch.Tensor, channels: int, rows: int, cols: int) -> torch.Tensor:
        # dlib's add_prev: the smaller input counts as zeros past its end, in every dimension.
        pad = (0, cols - tensor.shape[3], 0, rows - tensor.shape[2],
               0, channels - tensor.shape[1])
        return functional.pad(tensor, pad) if any(pad) else tensor

    class Block(nn.Module):
        def __init__(self, block: ResidualBlock) -> None:
            super().__init__()
            self.first = conv_layer(block.first)
            self.second = conv_layer(block.second)
            self.downsample = block.downsample

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            residual = self.second(functional.relu(self.first(x)))
            shortcut = functional.avg_pool2d(x, 2, 2) if self.downsample else x
            channels = max(residual.shape[1], shortcut.shape[1])
            rows = max(residual.shape[2], shortcut.shape[2])
            cols = max(residual.shape[3], shortcut.shape[3])
            total = zero_pad_to(residual, channels, rows, cols) + \
                zero_pad_to(shortcut, channels, rows, cols)
            return functional.relu(total)

    class DlibResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            mean = torch.tensor(spec.mean_rgb, dtype=torch.float32).reshape(1, 3, 1, 1)
            self.register_buffer("mean", mean)
            self.stem = conv_layer(spec.stem)
            self.blocks = nn.Sequential(*(Block(block) for block in spec.blocks))
            self.projection = nn.Linear(spec.projection.shape[0], DESCRIPTOR_SIZE, bias=False)
            with torch.no_grad():
                self.projection.weight.copy_(torch.from_numpy(spec.projection.T.copy()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x - self.mean) / 256.0  # dlib's input_rgb_image_sized
            x = functional.max_pool2d(functional.relu(self.stem(x)), 3, 2)
            x = self.blocks(x)
            return self.projection(x.mean(dim=(2, 3)))

    return DlibResNet().eval()


def export_onnx(spec: ResNetSpec) -> bytes:
    """The torch module of ``spec`` as serialised ONNX, batch axis dynamic."""
    from faceid_tui.engine.onnx_session import export_dynamic_batch

    return export_dynamic_batch(torch_module(spec), (2, 3, INPUT_SIZE, INPUT_SIZE),
                                INPUT_NAME, OUTPUT_NAME, OPSET)


def resnet_onnx_path(models: ModelStore) -> Path:
    return models.folder / (Path(DLIB_RESNET.name).stem + ".onnx")


def prepare_resnet_onnx(models: ModelStore, *, force: bool = False) -> tuple[Path, bool]:
    """The ONNX file of dlib's ResNet, converted if missing, stale or ``force``; returns
    ``(path, built)``."""
    import onnxruntime

    source = models.verified_path(DLIB_RESNET)
    source_sha256 = sha256_file(source)
    target = resnet_onnx_path(models)
    if not force and is_current(target, source_sha256, EXPORT_SETTINGS):
        return target, False
    import torch

    data = export_onnx(load_spec(source))
    write_model(target, data, source, source_sha256, EXPORT_SETTINGS, {},
                {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__})
    return target, True


class DlibDescriptor:
    """dlib's 128-d descriptors of 150×150 chips, L2-normalised, batched.

    ``runtime="onnx"``: ONNX Runtime on the CPU. ``runtime="torch"``: the torch module on
    ``device`` (CUDA, or the CPU in tests). fp32 on both: fp16 moved raw descriptors by up to
    4e-4 (cosine 0.9999995) on real chips, past the 1e-5 that keeps the fused model id."""

    def __init__(self, models: ModelStore, *, runtime: str = "onnx", device: str = "cpu",
                 threads: int = 1, batch_size: int = 32) -> None:
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown runtime {runtime!r} for dlib's ResNet; onnx or torch")
        if runtime == "onnx" and device != "cpu":
            raise ValueError("dlib's ResNet runs on ONNX Runtime on the CPU only; use torch "
                             "for --device cuda")
        self.runtime = runtime
        self.device = device
        self.batch_size = batch_size
        self._session = None
        self._module = None
        if runtime == "torch":
            import torch

            if device == "cuda":
                # TF32 convolutions (torch's default on Ampere and later) round to ~1e-3.
                torch.backends.cudnn.allow_tf32 = False
            self._torch = torch
            spec = load_spec(models.verified_path(DLIB_RESNET))
            self._module = torch_module(spec).to(device)
        else:
            import onnxruntime

            from faceid_tui.engine.onnx_session import session_options

            path, _ = prepare_resnet_onnx(models)
            self._session = onnxruntime.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"])

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors as dlib returns them (not normalised)."""
        if len(chips) == 0:
            return np.zeros((0, DESCRIPTOR_SIZE), dtype=np.float32)
        outputs = []
        for start in range(0, len(chips), self.batch_size):
            batch = network_input(chips[start:start + self.batch_size])
            if self._session is not None:
                outputs.append(self._session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0])
            else:
                torch = self._torch
                with torch.inference_mode():
                    tensor = torch.from_numpy(batch).to(self.device)
                    outputs.append(self._module(tensor).cpu().numpy())
        return np.concatenate(outputs).astype(np.float32, copy=False)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        descriptors = self.raw(chips)
        return descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True).clip(min=1e-12)

