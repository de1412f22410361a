"""The embedder protocol, its options, where it runs, and FaceNet on torch.

``facenet`` is facenet-pytorch's ``InceptionResnetV1`` with the weights the model store says
are active (VGGFace2 when supplied, otherwise the converted CASIA-WebFace). It embeds every
chip of a call in batches: with torch under ``torch.inference_mode()`` on the GPU when there is
one, and on the CPU, by default, with the same weights exported to onnxruntime
(:mod:`onnx_embedder`; see :func:`facenet_runtime`). The registry that knows every embedder
by name is :mod:`embedders`.

Every embedder has a ``model_id`` that names the weights *and* the alignment: embeddings with
different ids live in different spaces and are never compared.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from faceid_tui.engine.alignment import ALIGNMENT_ID, standardise
from faceid_tui.engine.models import ModelStore


@dataclass(frozen=True)
class EmbedderOptions:
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 32
    #: Torch CPU threads; None uses every core this process may run on. Torch's threads
    #: collapse when the cores are oversubscribed, so this is set once, deliberately.
    threads: int | None = None
    #: How FaceNet runs: "torch", "onnx" (onnxruntime, CPU only) or "auto" (see
    #: :func:`facenet_runtime`).
    runtime: str = "auto"


RUNTIMES = ("auto", "torch", "onnx")


def facenet_runtime(options: EmbedderOptions) -> str:
    """Where FaceNet runs: "onnx" or "torch". Auto picks onnxruntime on the CPU when it is
    installed: the same weights, the same model id, embeddings equal to torch's to 1e-7, and
    about 1.5x faster per face on 2 cores (``benchmarks/embed_speed.py``); torch on CUDA."""
    if options.runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {options.runtime!r}; choose one of {RUNTIMES}")
    if options.runtime != "auto":
        return options.runtime
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    return "onnx" if resolve_device(options.device) == "cpu" else "torch"


class Embedder(Protocol):
    """Turns aligned RGB chips (N×160×160×3 uint8) into L2-normalised float32 vectors."""

    name: str
    model_id: str
    dimension: int
    device: str

    def embed(self, chips: np.ndarray) -> np.ndarray: ...


class ChipStage(Protocol):
    """The part of an embedder that runs where faces are found (in the detect worker
    processes on long runs): chips in, one feature vector per chip out. An embedder whose
    registry entry has one takes those features back: ``embed(chips, features=...)``."""

    def __call__(self, chips: np.ndarray) -> np.ndarray: ...


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: What a GPU driver leaves where torch.cuda can reach a device: NVIDIA's kernel module files
#: (bare metal, and containers run with the NVIDIA runtime), Jetson's GPU device, WSL 2's GPU
#: paravirtual device, and AMD's compute device (ROCm builds of torch answer through
#: torch.cuda too). `--device cuda` always asks torch, whatever is found here.
GPU_DRIVER_MARKERS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvhost-ctrl-gpu",
                      "/dev/dxg", "/dev/kfd")


def gpu_driver_present() -> bool:
    """False when no GPU driver is visible, so torch could find no CUDA device. Asking torch
    instead costs its import (~1.4 s and ~0.6 GB of memory here) in a process that, on the
    CPU, runs FaceNet on onnxruntime and never needs torch otherwise."""
    return any(os.path.exists(marker) for marker in GPU_DRIVER_MARKERS)


def resolve_device(requested: str) -> str:
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; choose auto, cpu or cuda")
    if requested == "cpu" or (requested == "auto" and not gpu_driver_present()):
        return "cpu"
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu"
        )
    return requested


def facenet_model_id(models: ModelStore) -> str:
    """The model id FaceNet will have with these model files, without loading the network."""
    return f"{models.active_weights().model_id}/{ALIGNMENT_ID}"


class FacenetEmbedder:
    """facenet-pytorch ``InceptionResnetV1`` loaded from verified local weights."""

    name = "facenet"
    dimension = 512

    def __init__(self, options: EmbedderOptions, models: ModelStore) -> None:
        import torch
        from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

        self._torch = torch
        self.options = options
        torch.set_num_threads(options.threads or available_cores())
        weights = models.active_weights()
        path = models.verified_path(weights.model_file)
        state = torch.load(path, map_location="cpu", weights_only=True)
        # The VGGFace2 release file carries its training classifier; embeddings don't use it.
        state = {key: value for key, value in state.items() if not key.startswith("logits.")}
        network = InceptionResnetV1(pretrained=None, classify=False)
        network.load_state_dict(state, strict=True)
        self.device = resolve_device(options.device)
        network = network.eval().to(self.device)
        if self.device == "cuda":
            network = network.half().to(memory_format=torch.channels_last)
        self._network = network
        self.weights_key = weights.key
        self.model_id = facenet_model_id(models)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        torch = self._torch
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(chips), self.options.batch_size):
                stop = start + self.options.batch_size
                batch = torch.from_numpy(standardise(chips[start:stop]))
                if self.device == "cuda":
                    batch = batch.pin_memory().to("cuda", non_blocking=True).half()
                    batch = batch.contiguous(memory_format=torch.channels_last)
                vectors = self._network(batch).float()
                outputs.append(vectors.cpu().numpy())
        vectors = np.concatenate(outputs).astype(np.float32, copy=False)
        # Re-normalise in float32: fp16 inference leaves norms a hair off 1.
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
