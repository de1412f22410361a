"""Reading dlib's serialised DNN files (``.dat``) with numpy alone.

The format is dlib's own (``dlib/serialize.h``, ``dlib/cuda/tensor.h``, ``dlib/dnn/core.h``,
``dlib/dnn/layers.h``, ``dlib/dnn/input.h``, ``dlib/dnn/loss.h``); this module reads it, it
shares no code with dlib:

* an integer is a control byte (low 4 bits: how many bytes follow, 0x80: negative) and then
  that many little-endian bytes; a float is an integer mantissa and an integer exponent
  (``mantissa * 2**exponent``); a bool is the character ``'0'`` or ``'1'``; a string is its
  length and then its bytes;
* a tensor is a version (2), four dimensions (samples, k, rows, columns) and raw
  little-endian float32 values;
* a network is written outside in: the loss layer's details, then each layer's subnetwork
  *before* the layer's own details, so the file holds first one version number per nesting
  level (outermost first), then the input layer, then every computational layer's details in
  the order data flows through them (input first). Tag and skip layers leave only their
  version number: the topology (which tag an ``add_prev`` adds) is not in the file, so each
  converter knows its network and checks the file against it.

:func:`read_network` returns the layers as plain records (:class:`Layer`, numpy arrays for the
parameters). Anything unexpected — a truncated file, a layer this reader does not know, a
version number out of range — raises :class:`DlibFormatError` with the byte offset.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from faceid_tui.errors import ModelError

SpecT = TypeVar("SpecT")
#: What restores a damaged or foreign dlib file in the model folder.
FORCE_HINT = "run `faceid models --force` to copy it again from face-recognition-models"


class DlibFormatError(ValueError):
    """The bytes are not a dlib DNN file of a kind this reader understands."""


@dataclass
class Layer:
    """One computational layer: dlib's type string (``con_4``, ``affine_``, ``relu_``, …), its
    hyper-parameters and its parameter arrays."""

    kind: str
    settings: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The type without its version suffix: ``con``, ``affine``, ``relu``, ``fc``, …"""
        return self.kind.rstrip("0123456789").rstrip("_")


@dataclass
class Network:
    """A whole network: loss details, input details and the layers, input first."""

    loss: Layer
    input: Layer
    layers: list[Layer]
    #: One version number per nesting level, outermost first (add_layer, tag, skip, …).
    nesting: list[int]


_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class Reader:
    """A cursor over the bytes of one file, reading dlib's serialised primitives."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def _take(self, count: int, what: str) -> memoryview:
        end = self.offset + count
        if count < 0 or end > len(self.data):
            raise DlibFormatError(f"the file ends inside {what} (byte {self.offset} of "
                                  f"{len(self.data)}): it is truncated")
        chunk = self.data[self.offset:end]
        self.offset = end
        return chunk

    def at_end(self) -> bool:
        return self.offset >= len(self.data)

    def peek_byte(self) -> int:
        if self.at_end():
            raise DlibFormatError(f"the file ends at byte {self.offset}: it is truncated")
        return self.data[self.offset]

    def integer(self, what: str = "an integer") -> int:
        start = self.offset
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"byte {start} is not an integer's control byte "
                                  f"(0x{control:02x}) while reading {what}")
        value = int.from_bytes(self._take(size, what), "little") if size else 0
        return -value if control & 0x80 else value

    def floating(self, what: str = "a float") -> float:
        if self.peek_byte() & 0x70:
            raise DlibFormatError(f"byte {self.offset} holds a float in dlib's old text format, "
                                  "which this reader does not read")
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if exponent == _FLOAT_INF:
            return math.inf
        if exponent == _FLOAT_NINF:
            return -math.inf
        if exponent == _FLOAT_NAN:
            return math.nan
        return math.ldexp(mantissa, exponent)

    def boolean(self, what: str = "a bool") -> bool:
        start = self.offset
        char = bytes(self._take(1, what))
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"byte {start} is not a bool ({char!r}) while reading {what}")
        return char == b"1"

    def string(self, what: str = "a string", limit: int = 256) -> str:
        start = self.offset
        length = self.integer(what)
        if not 0 <= length <= limit:
            raise DlibFormatError(f"byte {start}: a string of {length} bytes while reading "
                                  f"{what}: not a dlib DNN file, or a damaged one")
        raw = bytes(self._take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"byte {start}: {what} is not text: the file is damaged") \
                from None

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        start = self.offset
        version = self.integer(what)
        if version != 2:
            raise DlibFormatError(f"byte {start}: tensor version {version} (expected 2) while "
                                  f"reading {what}")
        shape = tuple(self.integer(what) for _ in range(4))
        if any(dim < 0 for dim in shape):
            raise DlibFormatError(f"byte {start}: negative tensor dimensions {shape} in {what}")
        count = math.prod(shape)
        raw = self._take(4 * count, what)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self, what: str = "an alias tensor") -> tuple[int, ...]:
        """An alias tensor holds only a shape (and an offset into its layer's ``params``)."""
        start = self.offset
        version = self.integer(what)
        if version != 1:
            raise DlibFormatError(f"byte {start}: alias tensor version {version} (expected 1)")
        return tuple(self.integer(what) for _ in range(4))


# -- layer details ------------------------------------------------------------------------

def _read_con(reader: Reader, kind: str) -> Layer:
    if kind not in ("con_4", "con_5", "con_6"):
        raise DlibFormatError(f"convolution version {kind!r} is not one this reader knows")
    params = reader.tensor("con params")
    settings = {name: reader.integer(f"con {name}") for name in
                ("num_filters", "rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x")}
    filters = reader.alias_tensor("con filters")
    biases = reader.alias_tensor("con biases")
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        reader.floating(f"con {name}")
    settings["use_bias"] = reader.boolean("con use_bias") if kind in ("con_5", "con_6") else True
    if kind == "con_6":
        settings["use_relu"] = reader.boolean("con use_relu")
    flat = params.reshape(-1)
    filter_count = math.prod(filters)
    if filter_count > flat.size:
        raise DlibFormatError(f"a convolution's filters {filters} exceed its {flat.size} "
                              "parameters: the file is damaged")
    arrays = {"weight": flat[:filter_count].reshape(filters)}
    bias_count = math.prod(biases)
    if settings["use_bias"] and bias_count:
        arrays["bias"] = flat[filter_count:filter_count + bias_count].copy()
    return Layer(kind, settings, arrays)


def _read_affine(reader: Reader, kind: str) -> Layer:
    if kind not in ("affine_", "affine_2"):
        raise DlibFormatError(f"affine version {kind!r} is not one this reader knows")
    params = reader.tensor("affine params")
    gamma = reader.alias_tensor("affine gamma")
    reader.alias_tensor("affine beta")
    mode = reader.integer("affine mode")
    disabled = reader.boolean("affine disabled") if kind == "affine_2" else False
    flat = params.reshape(-1)
    count = math.prod(gamma)
    if flat.size != 2 * count:
        raise DlibFormatError(f"an affine layer holds {flat.size} values for {count} channels: "
                              "the file is damaged")
    return Layer(kind, {"mode": mode, "disabled": disabled},
                 {"gamma": flat[:count].copy(), "beta": flat[count:].copy()})


def _read_bn(reader: Reader, kind: str) -> Layer:
    """Batch normalisation as saved after training, folded into gamma/beta as dlib's own
    ``affine_(const bn_&)`` does: ``gamma / sqrt(running_var + eps)``."""
    params = reader.tensor("bn params")
    gamma_shape = reader.alias_tensor("bn gamma")
    reader.alias_tensor("bn beta")
    for name in ("means", "invstds", "running_means", "running_variances"):
        if name == "running_means":
            running_means = reader.tensor(f"bn {name}")
        elif name == "running_variances":
            running_variances = reader.tensor(f"bn {name}")
        else:
            reader.tensor(f"bn {name}")
    reader.integer("bn num_updates")
    reader.integer("bn running_stats_window_size")
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        reader.floating(f"bn {name}")
    eps = reader.floating("bn eps")
    flat = params.reshape(-1)
    count = math.prod(gamma_shape)
    gamma = flat[:count] / np.sqrt(running_variances.reshape(-1) + eps)
    beta = flat[count:2 * count] - gamma * running_means.reshape(-1)
    # dlib's layer_mode: CONV_MODE = 0 (one gamma per channel), FC_MODE = 1.
    return Layer(kind, {"mode": 0 if kind == "bn_con2" else 1},
                 {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)})


def _read_pool(reader: Reader, kind: str) -> Layer:
    if kind not in ("max_pool_2", "avg_pool_2"):
        raise DlibFormatError(f"pooling version {kind!r} is not one this reader knows")
    settings = {name: reader.integer(f"pool {name}") for name in
                ("rows", "cols", "stride_y", "stride_x", "pad_y", "pad_x")}
    return Layer(kind, settings)


def _read_fc(reader: Reader, kind: str) -> Layer:
    if kind not in ("fc_2", "fc_3"):
        raise DlibFormatError(f"fully connected version {kind!r} is not one this reader knows")
    outputs = reader.integer("fc num_outputs")
    inputs = reader.integer("fc num_inputs")
    params = reader.tensor("fc params")
    weights = reader.alias_tensor("fc weights")
    biases = reader.alias_tensor("fc biases")
    bias_mode = reader.integer("fc bias mode")
    for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
        reader.floating(f"fc {name}")
    use_bias = reader.boolean("fc use_bias") if kind == "fc_3" else True
    flat = params.reshape(-1)
    if math.prod(weights) != inputs * outputs or flat.size < inputs * outputs:
        raise DlibFormatError(f"a fully connected layer's weights {weights} do not hold "
                              f"{inputs}×{outputs} values: the file is damaged")
    # dlib multiplies row vectors by this (inputs × outputs) matrix.
    arrays = {"weight": flat[:inputs * outputs].reshape(inputs, outputs).copy()}
    has_bias = bias_mode == 0 and use_bias and math.prod(biases) == outputs
    if has_bias:
        arrays["bias"] = flat[inputs * outputs:inputs * outputs + outputs].copy()
    return Layer(kind, {"num_outputs": outputs, "num_inputs": inputs, "bias": has_bias}, arrays)


def _read_relu(reader: Reader, kind: str) -> Layer:
    disabled = reader.boolean("relu disabled") if kind == "relu_2" else False
    return Layer(kind, {"disabled": disabled})


def _read_nothing(_reader: Reader, kind: str) -> Layer:
    return Layer(kind)


_LAYER_READERS = {
    "con_4": _read_con, "con_5": _read_con, "con_6": _read_con,
    "affine_": _read_affine, "affine_2": _read_affine,
    "bn_con2": _read_bn, "bn_fc2": _read_bn,
    "max_pool_2": _read_pool, "avg_pool_2": _read_pool,
    "fc_2": _read_fc, "fc_3": _read_fc,
    "relu_": _read_relu, "relu_2": _read_relu,
    "add_prev_": _read_nothing,
}


def _read_input(reader: Reader) -> Layer:
    kind = reader.string("the input layer's type")
    if kind not in ("input_rgb_image", "input_rgb_image_sized", "input_rgb_image_pyramid",
                    "input_rgb_image_pyramid2"):
        raise DlibFormatError(f"input layer {kind!r} is not one this reader knows")
    settings: dict[str, Any] = {"avg_rgb": tuple(reader.floating("input mean") for _ in range(3))}
    if kind == "input_rgb_image_sized":
        settings["rows"] = reader.integer("input rows")
        settings["cols"] = reader.integer("input cols")
    if kind == "input_rgb_image_pyramid2":
        settings["pyramid_padding"] = reader.integer("pyramid padding")
        settings["pyramid_outer_padding"] = reader.integer("pyramid outer padding")
    elif kind == "input_rgb_image_pyramid":
        settings["pyramid_padding"], settings["pyramid_outer_padding"] = 10, 11
    return Layer(kind, settings)


def _read_box_overlap(reader: Reader) -> tuple[float, float]:
    return reader.floating("iou threshold"), reader.floating("percent covered threshold")


def _read_mmod_options(reader: Reader) -> dict[str, Any]:
    version = reader.integer("mmod options version")
    if not 1 <= version <= 4:
        raise DlibFormatError(f"mmod options version {version} is not one this reader knows")
    windows: list[tuple[int, int]] = []
    if version == 1:
        windows.append((reader.integer("window width"), reader.integer("window height")))
    else:
        for _ in range(reader.integer("window count")):
            window_version = reader.integer("window version")
            width, height = reader.integer("window width"), reader.integer("window height")
            if window_version == 2:
                reader.string("window label")
            windows.append((width, height))
    options: dict[str, Any] = {"detector_windows": windows}
    options["loss_per_false_alarm"] = reader.floating("loss per false alarm")
    options["loss_per_missed_target"] = reader.floating("loss per missed target")
    options["truth_match_iou_threshold"] = reader.floating("truth match iou")
    options["overlaps_nms"] = _read_box_overlap(reader)
    options["overlaps_ignore"] = _read_box_overlap(reader)
    if version >= 3:
        options["use_bounding_box_regression"] = reader.boolean("use bbr")
        options["bbr_lambda"] = reader.floating("bbr lambda")
    if version >= 4:
        options["assume_image_pyramid"] = reader.integer("assume image pyramid")
    return options


def _read_loss(reader: Reader) -> Layer:
    version = reader.integer("the loss layer's version")
    if version != 1:
        raise DlibFormatError(f"loss layer version {version} (expected 1): not a dlib DNN file")
    kind = reader.string("the loss layer's type")
    if kind == "loss_metric_":
        return Layer(kind, {"margin": 0.1, "distance_threshold": 0.75})
    if kind == "loss_metric_2":
        return Layer(kind, {"margin": reader.floating("margin"),
                            "distance_threshold": reader.floating("distance threshold")})
    if kind == "loss_mmod_":
        return Layer(kind, _read_mmod_options(reader))
    raise DlibFormatError(f"loss layer {kind!r} is not one this reader knows")


def _skip_trailer(reader: Reader, innermost_version: int | None) -> None:
    """What dlib writes after each layer's details: state flags and training buffers."""
    for name in ("setup called", "gradient stale", "output disabled"):
        reader.boolean(f"layer flag ({name})")
    reader.tensor("x_grad")
    reader.tensor("cached output")
    reader.tensor("gradient buffer")
    if innermost_version is not None and innermost_version >= 3:
        reader.integer("sample expansion factor")


def read_network(data: bytes) -> Network:
    """Parse a whole dlib DNN file (``net_type`` saved with ``serialize``)."""
    reader = Reader(data)
    loss = _read_loss(reader)
    nesting: list[int] = []
    # Version numbers of the nesting levels are 1-3; the first larger number is the length of
    # the input layer's type string, whose bytes follow.
    while True:
        start = reader.offset
        value = reader.integer("a nesting level's version")
        if value > 3:
            reader.offset = start
            break
        nesting.append(value)
        if len(nesting) > 10_000:
            raise DlibFormatError("no input layer found: not a dlib DNN file")
    if not nesting or nesting[-1] not in (2, 3):
        raise DlibFormatError("the innermost layer's version is missing: not a dlib DNN file")
    input_layer = _read_input(reader)
    layers: list[Layer] = []
    innermost = nesting[-1]
    while not reader.at_end():
        kind = reader.string("a layer's type")
        read = _LAYER_READERS.get(kind)
        if read is None:
            raise DlibFormatError(f"layer type {kind!r} (byte {reader.offset}) is not one this "
                                  "reader knows")
        layers.append(read(reader, kind))
        _skip_trailer(reader, innermost if len(layers) == 1 else None)
    # Every computational layer but the innermost was written by an add_layer of version 2;
    # the other levels (version 1) are tags and skips.
    if nesting[:-1].count(2) != len(layers) - 1:
        raise DlibFormatError(f"{len(layers)} layers for nesting {nesting}: the file is damaged")
    return Network(loss, input_layer, layers, nesting)


def read_network_file(path: Path) -> Network:
    """:func:`read_network` of a file; errors name the file."""
    try:
        return read_network(Path(path).read_bytes())
    except DlibFormatError as exc:
        raise DlibFormatError(f"{path}: {exc}") from None


def load_checked(path: Path, to_spec: Callable[[Network], SpecT]) -> SpecT:
    """``to_spec`` of the network in ``path``; a damaged, foreign or unreadable file raises
    :class:`ModelError`: one line naming the file and the command that restores it."""
    try:
        return to_spec(read_network_file(path))
    except DlibFormatError as exc:
        message = " ".join(str(exc).removeprefix(f"{path}: ").split())
        raise ModelError(f"{path}: {message}; {FORCE_HINT}") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot be read ({exc.strerror}); {FORCE_HINT}") from None


def pack_integer(value: int) -> bytes:
    """dlib's encoding of one integer (the inverse of :meth:`Reader.integer`; for tests)."""
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return struct.pack("B", len(body) | (0x80 if value < 0 else 0)) + body
