"""dlib's MMOD CNN face detector, converted from its ``.dat`` file to ONNX Runtime and torch.

``mmod_human_face_detector.dat`` (from ``face-recognition-models``) is read with
:mod:`dlib_dat` and checked against the network dlib's Python binding defines for it
(``net_type`` in ``tools/python/src/cnn_face_detector.cpp``): three 5×5/2 convolutions
(16, 32, 32 filters), three 5×5 convolutions of 45 filters, each followed by an affine layer
(a frozen batch norm, folded here into the convolution) and a ReLU, then one 9×9 convolution
whose single output channel scores an 80×80 sliding window at every position.

What dlib does around the network is reimplemented in numpy, not called:

* **Upsampling** (the binding's ``upsample_num_times``): dlib's ``pyramid_up`` with
  ``pyramid_down<2>`` — a bilinear resize (corners aligned) to ``2·rows+1 × 2·cols+2``, once per
  doubling; boxes come back through ``pyramid_down<2>::rect_down``.
* **The input layer** (``input_rgb_image_pyramid<pyramid_down<6>>``): the image and every
  5/6-scaled copy of it down to 5 rows, tiled into one image (the first column down the left,
  the rest right-aligned up from the bottom) with the file's padding between copies and around
  them; ``(pixel - mean) / 256``; each copy resized bilinearly from the one before, as dlib's
  ``tt::resize_bilinear`` does, float for float (its SIMD and scalar paths alike).
* **The loss layer's** ``to_label``: every position scoring above 0 (``adjust_threshold`` 0, as
  the binding uses) is a window centred where that output maps in the input tensor
  (``output_tensor_to_input_tensor``), mapped to image space through the copy of the pyramid
  nearest its centre (``tiled_pyramid_to_image``), rounded to integer corners; then dlib's
  greedy non-maximum suppression with the file's ``overlaps_nms`` test (IoU over the bounding
  box of the pair, or the share of either box covered).

:func:`detect` ties these to a :class:`MmodNetwork` and returns what
``dlib.cnn_face_detection_model_v1(path)(image, upsample_num_times)`` returns: the same
rectangles (inclusive corners) and confidences, the network's float noise aside: on all 104
photos of ../shared/faces at upsample 0 (80 of them at upsample 1) every rectangle was dlib's
own and confidences agreed to 2.5e-6 (tests/test_dlib_mmod.py checks a selection). Images
too small for its filters (a few pixels across), where dlib-bin raises, give no detection here.
On one thread it is 12–18× faster than dlib-bin (benchmarks/mmod_speed.py).
:class:`MmodDetector` is the ``cnn`` detector of :mod:`detection`.

The network runs on ONNX Runtime on the CPU (``face_models/mmod_human_face_detector.onnx``,
written by :func:`prepare_mmod_onnx` with :mod:`onnx.helper`, no torch needed, and rebuilt when
the ``.dat`` or the recipe changes) or on torch for CUDA (:func:`torch_module`); torch is
imported only on that path.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceid_tui.engine.detection import DetectedBox, DetectorOptions, plan_search, to_photo_box
from faceid_tui.engine.dlib_dat import DlibFormatError, Layer, Network, load_checked
from faceid_tui.engine.model_records import is_current, write_model
from faceid_tui.engine.models import MMOD_DETECTOR, ModelStore
from faceid_tui.fsutil import sha256_file

INPUT_NAME = "pyramid"
OUTPUT_NAME = "scores"
#: Bumped whenever the conversion recipe changes, so older ONNX files are rebuilt.
RECIPE_VERSION = 1
#: Conv and Relu are all the graph needs; opset 17 runs on every onnxruntime this project takes.
OPSET = 17
EXPORT_SETTINGS: dict[str, Any] = {
    "recipe": RECIPE_VERSION,
    "network": "dlib cnn_face_detection_model_v1 net_type (cnn_face_detector.cpp)",
    "exporter": "onnx.helper",
    "opset": OPSET,
    "input": f"{INPUT_NAME}: batch×3×height×width float32, dlib's tiled pyramid",
    "output": f"{OUTPUT_NAME}: batch×1×rows×cols float32 window scores (stride 8)",
    "affine": "folded into the convolutions (float64, stored float32)",
}

#: The binding's network, input first: (filters, kernel, stride, padding, followed by
#: affine + relu). dlib's ``con`` pads a stride-1 layer by half its kernel, a strided one not.
ARCHITECTURE: tuple[tuple[int, int, int, int, bool], ...] = (
    (16, 5, 2, 0, True), (32, 5, 2, 0, True), (32, 5, 2, 0, True),
    (45, 5, 1, 2, True), (45, 5, 1, 2, True), (45, 5, 1, 2, True),
    (1, 9, 1, 4, False),
)
#: ``input_rgb_image_pyramid<pyramid_down<6>>``: each copy is 5/6 of the one before. The
#: pyramid type is a C++ template argument, not in the file.
PYRAMID_N = 6
#: dlib stops the pyramid before a copy would have fewer rows than this.
PYRAMID_MIN_ROWS = 5

#: An inclusive dlib rectangle: (left, top, right, bottom).
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Conv:
    """A convolution with its affine layer folded in (OIHW weights, per-filter bias)."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int
    relu: bool


@dataclass(frozen=True)
class MmodSpec:
    """The converted detector as plain values: what both runtimes and the numpy parts of dlib
    around the network are built from."""

    convs: tuple[Conv, ...]
    mean_rgb: tuple[float, float, float]
    pyramid_padding: int
    pyramid_outer_padding: int
    #: The detector window (width, height) in pixels of the searched copy.
    window: tuple[int, int]
    #: ``overlaps_nms``: boxes overlapping more than this IoU (over the pair's bounding box),
    #: or covering more than this share of either box, are suppressed.
    nms_iou: float
    nms_covered: float

    def output_size(self, rows: int, cols: int) -> tuple[int, int] | None:
        """The score map's size for a ``rows×cols`` input tensor; None when a filter does not
        fit in its padded input (dlib raises there; such an image is too small for a face)."""
        for conv in self.convs:
            kernel = conv.weight.shape[-1]
            if min(rows, cols) + 2 * conv.padding < kernel:
                return None
            rows = (rows + 2 * conv.padding - kernel) // conv.stride + 1
            cols = (cols + 2 * conv.padding - kernel) // conv.stride + 1
        return rows, cols

    def output_to_input(self, index: np.ndarray) -> np.ndarray:
        """Where output positions map in the input tensor (dlib's ``map_output_to_input`` of
        each layer, last layer first): ``p·stride − padding + kernel // 2``."""
        point = index.astype(np.float64)
        for conv in reversed(self.convs):
            point = point * conv.stride - conv.padding + conv.weight.shape[-1] // 2
        return point


@dataclass(frozen=True)
class MmodDetection:
    """One detection as the binding returns it: inclusive corners and the window's score."""

    left: int
    top: int
    right: int
    bottom: int
    confidence: float

    @property
    def rect(self) -> Rect:
        return (self.left, self.top, self.right, self.bottom)


# -- the network --------------------------------------------------------------------------

def _folded_conv(conv: Layer, affine: Layer | None, expected: tuple[int, int, int, int, bool],
                 in_channels: int, index: int) -> Conv:
    filters, kernel, stride, padding, _ = expected
    settings = conv.settings
    weight = conv.arrays.get("weight")
    found = (settings.get("num_filters"), settings.get("rows"), settings.get("cols"),
             settings.get("stride_y"), settings.get("stride_x"), settings.get("pad_y"),
             settings.get("pad_x"))
    if found != (filters, kernel, kernel, stride, stride, padding, padding) or weight is None \
            or weight.shape != (filters, in_channels, kernel, kernel):
        raise DlibFormatError(
            f"convolution {index} has {found[0]} {found[1]}×{found[2]} filters, stride "
            f"{found[3]}, padding {found[5]} (weights {None if weight is None else weight.shape})"
            f" where dlib's MMOD face detector has {filters} {kernel}×{kernel}, stride {stride}, "
            f"padding {padding} over {in_channels} channels")
    bias = conv.arrays.get("bias", np.zeros(filters, dtype=np.float32))
    if bias.shape != (filters,):
        raise DlibFormatError(f"convolution {index} has {bias.shape} biases for {filters} "
                              "filters: the file is damaged")
    folded_weight = weight.astype(np.float64)
    folded_bias = bias.astype(np.float64)
    if affine is not None:
        gamma, beta = affine.arrays["gamma"], affine.arrays["beta"]
        if affine.settings.get("mode") != 0 or affine.settings.get("disabled") or \
                gamma.shape != (filters,) or beta.shape != (filters,):
            raise DlibFormatError(f"the affine layer after convolution {index} does not scale "
                                  f"its {filters} channels: not dlib's MMOD face detector")
        # affine(conv(x)) = gamma·(W∗x + b) + beta: folded in float64, stored float32.
        folded_weight = folded_weight * gamma.astype(np.float64)[:, None, None, None]
        folded_bias = folded_bias * gamma + beta
    values = np.concatenate([folded_weight.ravel(), folded_bias])
    if not np.isfinite(values).all():
        raise DlibFormatError(f"convolution {index} holds non-finite weights: the file is "
                              "damaged")
    return Conv(folded_weight.astype(np.float32), folded_bias.astype(np.float32), stride,
                padding, affine is not None)


def mmod_spec(network: Network) -> MmodSpec:
    """Check that ``network`` is dlib's MMOD face detector and fold it into a spec; anything
    else raises :class:`DlibFormatError` saying what differs."""
    if network.loss.kind != "loss_mmod_":
        raise DlibFormatError(f"loss {network.loss.kind!r}: not dlib's MMOD face detector")
    options = network.loss.settings
    windows = options.get("detector_windows", [])
    if len(windows) != 1:
        raise DlibFormatError(f"{len(windows)} detector windows: dlib's MMOD face detector "
                              "has one")
    width, height = windows[0]
    if not (1 <= width <= 4096 and 1 <= height <= 4096):
        raise DlibFormatError(f"a {width}×{height} detector window: the file is damaged")
    if options.get("use_bounding_box_regression"):
        raise DlibFormatError("bounding box regression is on: not dlib's MMOD face detector")
    nms_iou, nms_covered = options["overlaps_nms"]
    if not (0 <= nms_iou <= 1 and 0 <= nms_covered <= 1):
        raise DlibFormatError(f"overlaps_nms {options['overlaps_nms']} is not a pair of "
                              "thresholds in [0, 1]: the file is damaged")
    if network.input.kind not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise DlibFormatError(f"input {network.input.kind!r}: not dlib's MMOD face detector")
    mean = tuple(float(value) for value in network.input.settings["avg_rgb"])
    padding = int(network.input.settings["pyramid_padding"])
    outer_padding = int(network.input.settings["pyramid_outer_padding"])
    if not all(0 <= value <= 255 for value in mean) or not 0 <= padding <= 1000 \
            or not 0 <= outer_padding <= 1000:
        raise DlibFormatError(f"input mean {mean}, pyramid padding {padding}/{outer_padding}: "
                              "the file is damaged")
    layers = list(network.layers)
    convs: list[Conv] = []
    in_channels = 3
    position = 0
    for index, expected in enumerate(ARCHITECTURE):
        # The file holds the batch norms as trained (bn_con2); dlib's affine layer loads them
        # as the per-channel scale and shift that dlib_dat has already folded them into.
        kinds = [{"bn_con": "affine"}.get(layer.family, layer.family)
                 for layer in layers[position:position + 3]]
        wanted = ["con", "affine", "relu"] if expected[4] else ["con"]
        if kinds[:len(wanted)] != wanted:
            raise DlibFormatError(f"layers {position}… are {kinds[:len(wanted)]} where dlib's "
                                  f"MMOD face detector has {wanted}")
        affine = layers[position + 1] if expected[4] else None
        if expected[4] and layers[position + 2].settings.get("disabled"):
            raise DlibFormatError(f"the ReLU after convolution {index} is disabled: not dlib's "
                                  "MMOD face detector")
        convs.append(_folded_conv(layers[position], affine, expected, in_channels, index))
        in_channels = expected[0]
        position += len(wanted)
    if position != len(layers):
        raise DlibFormatError(f"{len(layers)} layers where dlib's MMOD face detector has "
                              f"{position}")
    return MmodSpec(tuple(convs), (mean[0], mean[1], mean[2]), padding, outer_padding,
                    (int(width), int(height)), float(nms_iou), float(nms_covered))


def load_spec(path: Path) -> MmodSpec:
    """The spec of the ``.dat`` at ``path``; a damaged or foreign file raises
    :class:`ModelError`, one line naming the file and the command that restores it."""
    return load_checked(path, mmod_spec)


def onnx_model(spec: MmodSpec) -> bytes:
    """The network of ``spec`` as a serialised ONNX model: Conv (+ Relu) nodes with the folded
    weights as initialisers; batch, height and width dynamic."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = []
    initializers = []
    current = INPUT_NAME
    for index, conv in enumerate(spec.convs):
        weight, bias = f"conv{index}.weight", f"conv{index}.bias"
        initializers += [numpy_helper.from_array(conv.weight, weight),
                         numpy_helper.from_array(conv.bias, bias)]
        last = index == len(spec.convs) - 1
        output = OUTPUT_NAME if last else f"conv{index}"
        kernel = conv.weight.shape[-1]
        nodes.append(helper.make_node(
            "Conv", [current, weight, bias], [output], name=f"conv{index}",
            kernel_shape=[kernel, kernel], strides=[conv.stride, conv.stride],
            pads=[conv.padding] * 4, dilations=[1, 1], group=1))
        current = output
        if conv.relu:
            nodes.append(helper.make_node("Relu", [current], [f"relu{index}"],
                                          name=f"relu{index}"))
            current = f"relu{index}"
    graph = helper.make_graph(
        nodes, "dlib_mmod_face_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                       ["batch", 1, "rows", "cols"])],
        initializers)
    model = helper.make_model(graph, producer_name="faceid",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    # The IR version of the opset, not of this onnx package, so older runtimes load it too.
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torch_module(spec: MmodSpec):  # -> torch.nn.Sequential; torch is imported only here
    """The network as a torch module: the tiled pyramid (N×3×H×W float32) in, window scores
    (N×1×H'×W') out, the same function as the ONNX file's."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    for conv in spec.convs:
        out_channels, in_channels, kernel, _ = conv.weight.shape
        layer = nn.Conv2d(in_channels, out_channels, kernel, stride=conv.stride,
                          padding=conv.padding)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(conv.weight))
            layer.bias.copy_(torch.from_numpy(conv.bias))
        layers.append(layer)
        if conv.relu:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def mmod_onnx_path(models: ModelStore) -> Path:
    return models.folder / (Path(MMOD_DETECTOR.name).stem + ".onnx")


def prepare_mmod_onnx(models: ModelStore, *, force: bool = False) -> tuple[Path, bool]:
    """The ONNX file of dlib's MMOD detector, converted if missing, stale (another ``.dat``
    digest, another recipe, or bytes that no longer hash to its record) or ``force``; returns
    ``(path, built)``."""
    source = models.verified_path(MMOD_DETECTOR)
    source_sha256 = sha256_file(source)
    target = mmod_onnx_path(models)
    if not force and is_current(target, source_sha256, EXPORT_SETTINGS):
        return target, False
    import onnx

    data = onnx_model(load_spec(source))
    write_model(target, data, source, source_sha256, EXPORT_SETTINGS, {},
                {"onnx": onnx.__version__})
    return target, True


# -- dlib's bilinear resize ---------------------------------------------------------------
#
# dlib's resize_image (interpolation.h) maps output pixel c to input x = c·(in−1)/(out−1)
# (corners aligned, unlike cv2's half-pixel centres). Its grayscale and RGB versions run four
# columns at a time in float SIMD registers, accumulating x in float, and finish each row in
# scalar double code from the first group whose right neighbour would fall outside the image.
# Both paths are reproduced operation for operation, so the pyramid is dlib's to the bit.

@dataclass(frozen=True)
class _Axis:
    """Per output index along one axis: the two input neighbours and the weights."""

    low: np.ndarray
    high: np.ndarray
    #: float32 fraction and 1 − fraction as the SIMD path computes them.
    frac32: np.ndarray
    inv32: np.ndarray
    #: Columns from here on take the scalar path (frac64: its double fraction).
    tail: int
    frac64: np.ndarray


def _rows(in_n: int, out_n: int) -> _Axis:
    scale = (in_n - 1) / max(out_n - 1, 1)
    # y = −scale, then y += scale before each row: a running double sum, as dlib keeps it.
    steps = np.full(out_n + 1, scale)
    steps[0] = -scale
    y = np.cumsum(steps)[1:]
    top = np.floor(y).astype(np.int64)
    frac = y - top
    return _Axis(top, np.minimum(top + 1, in_n - 1), frac.astype(np.float32),
                 (1 - frac).astype(np.float32), out_n, frac)


def _columns(in_n: int, out_n: int) -> _Axis:
    scale = (in_n - 1) / max(out_n - 1, 1)
    x = -4 * scale
    groups = (out_n + 3) // 4 + 1
    lanes = np.empty((groups + 1, 4), dtype=np.float32)
    lanes[0] = np.array([x, x + scale, x + 2 * scale, x + 3 * scale], dtype=np.float32)
    lanes[1:] = np.float32(4 * scale)
    # Each group adds 4·scale to its four float lanes: a running float32 sum per lane.
    xs = np.cumsum(lanes, axis=0, dtype=np.float32)[1:]
    left = xs.astype(np.int32)  # truncation, as _mm_cvttps_epi32
    overflow = np.nonzero(left[:, 3] + 1 >= in_n)[0]
    tail = 4 * int(overflow[0]) if len(overflow) else 4 * groups
    tail = min(tail, out_n)
    simd_x = xs.reshape(-1)[:tail]
    simd_left = left.reshape(-1)[:tail].astype(np.int64)
    frac32 = np.empty(out_n, dtype=np.float32)
    frac32[:tail] = simd_x - simd_left.astype(np.float32)
    # The scalar tail restarts from x = −scale + tail·scale and adds scale per column.
    count = out_n - tail
    steps = np.full(count + 1, scale)
    steps[0] = -scale + tail * scale
    tail_x = np.cumsum(steps)[1:]
    tail_left = np.floor(tail_x).astype(np.int64)
    low = np.concatenate([simd_left, tail_left])
    high = np.concatenate([simd_left + 1, np.minimum(tail_left + 1, in_n - 1)])
    frac64 = np.zeros(out_n)
    frac64[tail:] = tail_x - tail_left
    frac32[tail:] = frac64[tail:].astype(np.float32)
    return _Axis(low, high, frac32, np.float32(1) - frac32, tail, frac64)


#: Output rows resampled at a time: the working arrays of a band stay in the CPU's cache
#: (a 1080p pyramid took half the time it did in whole-image passes).
_BAND_ROWS = 16


def _resample(planes: np.ndarray, out_rows: int, out_cols: int, rgb: bool,
              out: np.ndarray | None = None) -> np.ndarray:
    """dlib's bilinear ``resize_image`` of each plane (``C×rows×cols``, float32 or uint8) into
    ``out`` (float32, ``C×out_rows×out_cols``; a view into the pyramid tensor will do): the
    grayscale-float version, or with ``rgb`` the RGB-uint8 one (integer values)."""
    channels, in_rows, in_cols = planes.shape
    rows = _rows(in_rows, out_rows)
    cols = _columns(in_cols, out_cols)
    n = cols.tail
    if out is None:
        out = np.empty((channels, out_rows, out_cols), dtype=np.float32)
    # Per column, shared by every band: the SIMD path's float32 weights, and the scalar
    # path's fractions (float for grayscale, double for RGB) for the last few columns.
    inv_lr, lr = cols.inv32[None, :n], cols.frac32[None, :n]
    lr_tail = cols.frac64[None, n:] if rgb else cols.frac32[None, n:]
    one = 1.0 if rgb else np.float32(1)
    for start in range(0, out_rows, _BAND_ROWS):
        band = slice(start, min(start + _BAND_ROWS, out_rows))
        low, high = rows.low[band], rows.high[band]
        first = int(low[0])
        # The input rows this band reads, then its four neighbours, one axis at a time
        # (np.take is several times faster than 2-D fancy indexing).
        source = planes[:, first:int(high[-1]) + 1]
        left = np.take(source, cols.low, axis=2)
        right = np.take(source, cols.high, axis=2)
        tl, bl = (np.take(left, index - first, axis=1).astype(np.float32, copy=False)
                  for index in (low, high))
        tr, br = (np.take(right, index - first, axis=1).astype(np.float32, copy=False)
                  for index in (low, high))
        # SIMD columns: four float32 weights per pixel, summed in float32 in the order dlib
        # writes the expression.
        inv_tb, tb = rows.inv32[band, None], rows.frac32[band, None]
        acc = np.multiply(inv_tb * inv_lr, tl[..., :n])
        for weight, corner in ((inv_tb * lr, tr), (tb * inv_lr, bl), (tb * lr, br)):
            acc += weight * corner[..., :n]
        # simd4i(simd4f) truncates the RGB version.
        out[:, band, :n] = np.trunc(acc) if rgb else acc
        if n == out_cols:
            continue
        # Scalar columns. Grayscale: float lerps along the row, a double lerp between them;
        # RGB: all in double, truncated by static_cast<unsigned char> before any float32
        # rounding could carry 127.99999 up to 128.
        upper = (one - lr_tail) * tl[..., n:] + lr_tail * tr[..., n:]
        lower = (one - lr_tail) * bl[..., n:] + lr_tail * br[..., n:]
        tb64 = rows.frac64[band, None]
        value = (1 - tb64) * upper + tb64 * lower
        out[:, band, n:] = np.trunc(value) if rgb else value
    return out


def resize_float(src: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """dlib's ``resize_image`` of float32 grayscale planes (``C×rows×cols``): what
    ``tt::resize_bilinear`` does to each channel of a pyramid copy."""
    return _resample(src.astype(np.float32, copy=False), out_rows, out_cols, rgb=False)


def resize_rgb(image: np.ndarray, out_rows: int, out_cols: int) -> np.ndarray:
    """dlib's ``resize_image`` of an RGB ``uint8`` image (what ``pyramid_up`` runs)."""
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    resized = _resample(planes, out_rows, out_cols, rgb=True)
    return np.ascontiguousarray(resized.astype(np.uint8).transpose(1, 2, 0))


# -- the binding's upsampling -------------------------------------------------------------

def _lround(value: float) -> int:
    """std::lround: halves away from zero (Python's round() goes to even)."""
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)


def upsampled_size(rows: int, cols: int) -> tuple[int, int]:
    """The size ``pyramid_up`` with ``pyramid_down<2>`` gives: the image rectangle's
    corners through ``point_up`` ((p + (1.25, 0.75))·2), rounded; bottom-right + 1."""
    right = _lround((cols - 1 + 1.25) * 2)
    bottom = _lround((rows - 1 + 0.75) * 2)
    return bottom + 1, right + 1


def upsample(image: np.ndarray, times: int) -> np.ndarray:
    """What the binding searches for ``upsample_num_times=times``: ``pyramid_up`` that many
    times."""
    for _ in range(times):
        image = resize_rgb(image, *upsampled_size(*image.shape[:2]))
    return image


def _rect_down(rect: Rect, levels: int) -> Rect:
    """``pyramid_down<2>::rect_down``: each corner p → p/2 − (1.25, 0.75) per level, then
    rounded to a rectangle."""
    left, top, right, bottom = (float(value) for value in rect)
    for _ in range(levels):
        left, right = left / 2.0 - 1.25, right / 2.0 - 1.25
        top, bottom = top / 2.0 - 0.75, bottom / 2.0 - 0.75
    return (_lround(left), _lround(top), _lround(right), _lround(bottom))


# -- the input layer: dlib's tiled image pyramid -------------------------------------------

def pyramid_layout(rows: int, cols: int, padding: int,
                   outer_padding: int) -> tuple[list[Rect], int, int]:
    """Where each copy of a ``rows×cols`` image goes in the tiled pyramid, and the tiled
    image's rows and columns (dlib's ``compute_tiled_image_pyramid_details``)."""
    if rows * cols == 0:
        return [], 0, 0
    sizes = [(cols, rows)]  # (width, height) of each copy
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    while True:
        rows, cols = math.floor(rate * rows), math.floor(rate * cols)
        if rows * cols == 0 or rows < PYRAMID_MIN_ROWS:
            break
        sizes.append((cols, rows))
    # dlib does this arithmetic with unsigned long widths and heights: emulate the wrap.
    wrap = 1 << 64
    width0, height0 = sizes[0]
    total_height = sum(height + padding for _, height in sizes) - 2 * padding
    height = prev_width = 0
    for width, level_height in sizes:
        # Down the first column until the next copy fits beside the previous one and the
        # column holds at least half of what is left, so the rest can double back up.
        fits = width <= (width0 - prev_width - padding) % wrap
        half = ((height - height0) % wrap * 2) % wrap >= (total_height - height0) % wrap
        if fits and half:
            break
        height += level_height + padding
        prev_width = width
    height -= padding
    total_rows, total_cols = height + 2 * outer_padding, width0 + 2 * outer_padding
    # dlib moves the copies in place in one list: a copy not yet placed is still its own
    # (0, 0, width − 1, height − 1), which matters below when the first column is empty.
    rects: list[Rect] = [(0, 0, width - 1, level_height - 1) for width, level_height in sizes]
    y = outer_padding
    index = 0
    while y < height + outer_padding and index < len(sizes):
        width, level_height = sizes[index]
        rects[index] = (outer_padding, y, outer_padding + width - 1, y + level_height - 1)
        y += level_height + padding
        index += 1
    y -= padding
    while index < len(sizes):
        width, level_height = sizes[index]
        right, bottom = outer_padding + width0 - 1, y - 1
        rect = (right - width + 1, bottom - level_height + 1, right, bottom)
        # The second column climbs from the bottom, right-aligned, and stops before it
        # would overlap the full-size copy.
        first = rects[0]
        if max(first[0], rect[0]) <= min(first[2], rect[2]) and \
                max(first[1], rect[1]) <= min(first[3], rect[3]):
            break
        rects[index] = rect
        y -= level_height + padding
        index += 1
    del rects[index:]
    return rects, total_rows, total_cols


def pyramid_tensor(image: np.ndarray, spec: MmodSpec) -> tuple[np.ndarray, list[Rect]]:
    """The input tensor (1×3×rows×cols float32) dlib's ``input_rgb_image_pyramid`` makes of an
    RGB ``uint8`` image, and where each copy lies in it."""
    rows, cols = image.shape[:2]
    rects, total_rows, total_cols = pyramid_layout(rows, cols, spec.pyramid_padding,
                                                   spec.pyramid_outer_padding)
    # For images a few pixels across, dlib's layout can put a copy outside the tiled image
    # (dlib then fails on an out-of-range offset); such an image has no face to find.
    if not all(0 <= left <= right < total_cols and 0 <= top <= bottom < total_rows
               for left, top, right, bottom in rects):
        rects = []
    tensor = np.zeros((1, 3, max(total_rows, 0), max(total_cols, 0)), dtype=np.float32)
    if not rects:
        return tensor, rects
    planes = tensor[0]
    mean = np.asarray(spec.mean_rgb, dtype=np.float32).reshape(3, 1, 1)
    left, top, right, bottom = rects[0]
    # (pixel − mean) in float, / 256 (exact in binary), as dlib fills the first copy.
    planes[:, top:bottom + 1, left:right + 1] = \
        (image.transpose(2, 0, 1).astype(np.float32) - mean) / np.float32(256)
    for before, rect in itertools.pairwise(rects):
        # Each copy from the one before, read from and written into the tensor, as
        # tt::resize_bilinear does.
        source = planes[:, before[1]:before[3] + 1, before[0]:before[2] + 1]
        target = planes[:, rect[1]:rect[3] + 1, rect[0]:rect[2] + 1]
        _resample(source, target.shape[1], target.shape[2], rgb=False, out=target)
    return tensor, rects


# -- the loss layer: scores to rectangles ---------------------------------------------------

def _nearest_copy(rects: list[Rect], x: int, y: int) -> int:
    """dlib's ``nearest_rect``: the first copy containing the point, else the nearest."""
    best, best_distance = 0, math.inf
    for index, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return index
        dx = x - min(max(x, left), right)
        dy = y - min(max(y, top), bottom)
        distance = math.hypot(dx, dy)
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def _area(rect: Rect) -> int:
    return max(0, rect[2] - rect[0] + 1) * max(0, rect[3] - rect[1] + 1)


def overlaps(a: Rect, b: Rect, iou: float, covered: float) -> bool:
    """dlib's ``test_box_overlap``: the intersection over the pair's *bounding box* (not their
    union) above ``iou``, or over either box above ``covered``."""
    inner = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    if inner == 0:
        return False
    outer = _area((min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])))
    return inner / outer > iou or inner / _area(a) > covered or inner / _area(b) > covered


def detections(scores: np.ndarray, rects: list[Rect], spec: MmodSpec,
               threshold: float = 0.0) -> list[MmodDetection]:
    """dlib's ``to_label`` for one score map (rows×cols): windows scoring above
    ``threshold`` in image space, best first, after non-maximum suppression."""
    if not rects:
        return []
    rows, cols = np.nonzero(scores > threshold)
    values = scores[rows, cols].astype(np.float64)
    centre_x = spec.output_to_input(cols)
    centre_y = spec.output_to_input(rows)
    half_w, half_h = (spec.window[0] - 1) / 2, (spec.window[1] - 1) / 2
    ratio = PYRAMID_N / (PYRAMID_N - 1.0)
    found = []
    for cx, cy, score in zip(centre_x, centre_y, values, strict=True):
        # centered_drect, then the copy nearest its centre (rounded to a pixel), then back
        # up that many pyramid levels: p·6/5 + 0.3 per level.
        level = _nearest_copy(rects, math.floor(cx + 0.5), math.floor(cy + 0.5))
        origin_x, origin_y = rects[level][0], rects[level][1]
        corners = [cx - half_w - origin_x, cy - half_h - origin_y,
                   cx + half_w - origin_x, cy + half_h - origin_y]
        for _ in range(level):
            corners = [value * ratio + 0.3 for value in corners]
        left, top, right, bottom = (_lround(value) for value in corners)
        found.append(MmodDetection(left, top, right, bottom, float(score)))
    # std::sort by confidence, best first; then greedy suppression.
    found.sort(key=lambda detection: detection.confidence, reverse=True)
    kept: list[MmodDetection] = []
    for detection in found:
        if not any(overlaps(other.rect, detection.rect, spec.nms_iou, spec.nms_covered)
                   for other in kept):
            kept.append(detection)
    return kept


# -- running the network --------------------------------------------------------------------

class MmodNetwork:
    """The converted network on ONNX Runtime (``device="cpu"``) or torch (``"cuda"``, or
    ``"torch-cpu"`` for tests): the tiled pyramid in, its score map out."""

    def __init__(self, models: ModelStore, device: str = "cpu", threads: int = 1) -> None:
        if device not in ("cpu", "cuda", "torch-cpu"):
            raise ValueError(f"unknown device {device!r}; choose cpu or cuda")
        self.device = device
        self.threads = threads
        self.spec = load_spec(models.verified_path(MMOD_DETECTOR))
        self._session = None
        self._module = None
        if device == "cpu":
            import onnxruntime

            from faceid_tui.engine.onnx_session import session_options

            path, _ = prepare_mmod_onnx(models)
            self._session = onnxruntime.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"])
        else:
            import torch

            # fp32. fp16 (tried on torch's CPU kernels) moved scores by up to 6e-3 and kept
            # every box of 18 photos, but a window scoring that close to the 0 threshold would
            # appear or vanish, and no GPU was at hand to check cuDNN's own rounding.
            self._torch = torch
            self._module = torch_module(self.spec).to("cuda" if device == "cuda" else "cpu")

    def scores(self, tensor: np.ndarray) -> np.ndarray:
        """The window scores (N×1×rows×cols) of a tiled pyramid tensor."""
        if self._session is not None:
            return self._session.run([OUTPUT_NAME], {INPUT_NAME: tensor})[0]
        torch = self._torch
        device = "cuda" if self.device == "cuda" else "cpu"
        # cuDNN may run fp32 convolutions in TF32 (10-bit mantissa), which moves scores near
        # the 0 threshold by ~1e-3; this network is small enough to run in true fp32.
        with torch.inference_mode(), torch.backends.cudnn.flags(
                enabled=True, benchmark=False, deterministic=False, allow_tf32=False):
            return self._module(torch.from_numpy(tensor).to(device)).cpu().numpy()

    def __call__(self, image: np.ndarray, upsample_num_times: int = 0) -> list[MmodDetection]:
        """``dlib.cnn_face_detection_model_v1(path)(image, upsample_num_times)``."""
        return detect(self, image, upsample_num_times)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB ``uint8`` image, as the binding accepts it (a grayscale one is spread to RGB)."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or \
            (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"an 8-bit grayscale or RGB image is needed, not {image.dtype} "
                         f"{image.shape}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def detect(network: MmodNetwork, image: np.ndarray,
           upsample_num_times: int = 0) -> list[MmodDetection]:
    """What the binding's ``detect`` returns for ``image``: upsample, run, map the windows
    back to ``image``'s pixels."""
    if upsample_num_times < 0:
        raise ValueError("upsample_num_times must be 0 or more")
    searched = upsample(as_rgb(image), upsample_num_times)
    tensor, rects = pyramid_tensor(searched, network.spec)
    # An image a few pixels across: dlib's convolutions raise ("Filter windows must be small
    # enough to fit into the padded image"); it has no face.
    if not rects or network.spec.output_size(*tensor.shape[2:]) is None:
        return []
    scores = network.scores(tensor)[0, 0]
    return [MmodDetection(*_rect_down(found.rect, upsample_num_times), found.confidence)
            for found in detections(scores, rects, network.spec)]


# -- the detector -------------------------------------------------------------------------

def resolve_device(requested: str) -> str:
    """Where the network runs: "cpu" (ONNX Runtime) or "cuda" (torch); "auto" asks for CUDA
    only where a GPU driver is visible (:func:`embedding.resolve_device`), so a CPU-only
    machine never imports torch."""
    if requested in ("cpu", "torch-cpu"):
        return requested
    from faceid_tui.engine.embedding import resolve_device as resolve

    return resolve(requested)


class MmodDetector:
    """dlib's MMOD CNN face detector, converted (:class:`MmodNetwork`): the boxes of dlib-bin's
    ``CnnDetector`` under the same scale policy (:func:`detection.plan_search`), on ONNX
    Runtime with ``options.threads`` threads, or on torch for ``options.device`` cuda."""

    name = "cnn"

    def __init__(self, options: DetectorOptions, models: ModelStore) -> None:
        self.options = options
        self.device = resolve_device(options.device)
        self.network = MmodNetwork(models, self.device, options.threads)

    def detect(self, image: np.ndarray) -> list[DetectedBox]:
        plan = plan_search(image, self.options)
        boxes = []
        for found in self.network(plan.image, plan.upsample):
            box = to_photo_box(plan, found.left, found.top, found.right, found.bottom,
                                found.confidence, image, self.options.min_face_for(image))
            if box:
                boxes.append(box)
        return boxes
