"""The one registry of embedders: each name, how to build it and its model id.

Implementations never import each other; this module builds them (their modules load on use,
so listing a bank or naming a model id loads no network, torch or onnxruntime):

* ``facenet`` — FaceNet alone: onnxruntime on the CPU, torch on CUDA (:func:`create_facenet`);
* ``facenet+dlib`` — the default (``auto``): FaceNet fused with dlib's ResNet descriptor
  (:mod:`fusion`), both on the same runtimes;
* ``facenet-onnx`` / ``facenet-onnx-int8`` — FaceNet on onnxruntime by name, fp32 or int8.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from faceid_tui.engine.alignment import FACENET_CHIP, FUSED_CHIP, ChipSpec
from faceid_tui.engine.embedding import (
    Embedder,
    EmbedderOptions,
    FacenetEmbedder,
    available_cores,
    facenet_model_id,
    facenet_runtime,
    resolve_device,
)
from faceid_tui.engine.models import ModelStore

#: What ``--embedder auto`` means: the accurate mode (LFW 0.9917 against 0.9752 for FaceNet
#: alone; README, Accuracy), now that dlib's network runs converted (engine/dlib_resnet.py).
DEFAULT_EMBEDDER = "facenet+dlib"
AUTO = "auto"


@dataclass(frozen=True)
class EmbedderEntry:
    """How to build an embedder, and how to name its model id without building it."""

    create: Callable[[EmbedderOptions, ModelStore], Embedder]
    model_id: Callable[[ModelStore], str]
    #: The chip the aligner cuts for this embedder.
    chip: ChipSpec = FACENET_CHIP


def create_facenet(options: EmbedderOptions, models: ModelStore) -> Embedder:
    """FaceNet on the runtime :func:`facenet_runtime` picks."""
    if facenet_runtime(options) == "onnx":
        return _onnx_fp32(options, models)
    return FacenetEmbedder(options, models)


def _onnx_fp32(options: EmbedderOptions, models: ModelStore) -> Embedder:
    from faceid_tui.engine.onnx_embedder import create_onnx

    return create_onnx(options, models)


def _onnx_int8(options: EmbedderOptions, models: ModelStore) -> Embedder:
    from faceid_tui.engine.onnx_embedder import create_onnx_int8

    return create_onnx_int8(options, models)


def _onnx_int8_model_id(models: ModelStore) -> str:
    from faceid_tui.engine.onnx_embedder import onnx_int8_model_id

    return onnx_int8_model_id(models)


def _fused(options: EmbedderOptions, models: ModelStore) -> Embedder:
    from faceid_tui.engine.dlib_resnet import DlibDescriptor
    from faceid_tui.engine.fusion import FusedEmbedder

    facenet = create_facenet(options, models)
    # Both networks on one runtime: onnxruntime on the CPU, torch on CUDA (or where asked).
    descriptor = DlibDescriptor(models, runtime=facenet_runtime(options), device=facenet.device,
                                threads=options.threads or available_cores(),
                                batch_size=options.batch_size)
    return FusedEmbedder(facenet, descriptor, models)


def _fused_model_id(models: ModelStore) -> str:
    from faceid_tui.engine.fusion import fused_model_id

    return fused_model_id(models)


EMBEDDERS: dict[str, EmbedderEntry] = {
    "facenet": EmbedderEntry(create_facenet, facenet_model_id),
    "facenet+dlib": EmbedderEntry(_fused, _fused_model_id, chip=FUSED_CHIP),
    # The same FaceNet weights on onnxruntime's CPU provider (engine/onnx_embedder.py), by
    # name. fp32 equals torch to float noise and shares its model id (it is what `facenet`
    # runs on the CPU by default); int8 has its own ("…+int8").
    "facenet-onnx": EmbedderEntry(_onnx_fp32, facenet_model_id),
    "facenet-onnx-int8": EmbedderEntry(_onnx_int8, _onnx_int8_model_id),
}
#: What ``--embedder`` accepts.
EMBEDDER_CHOICES = (AUTO, *sorted(EMBEDDERS))


def resolve_embedder(name: str) -> str:
    """The registry name ``name`` stands for (``auto`` is :data:`DEFAULT_EMBEDDER`)."""
    return DEFAULT_EMBEDDER if name == AUTO else name


def embedder_entry(name: str) -> EmbedderEntry:
    try:
        return EMBEDDERS[resolve_embedder(name)]
    except KeyError:
        raise ValueError(f"unknown embedder {name!r}; choose one of "
                         f"{list(EMBEDDER_CHOICES)}") from None


def create_embedder(name: str, options: EmbedderOptions, models: ModelStore) -> Embedder:
    """Build the embedder registered under ``name``."""
    return embedder_entry(name).create(options, models)


__all__ = ["AUTO", "DEFAULT_EMBEDDER", "EMBEDDERS", "EMBEDDER_CHOICES", "EmbedderEntry",
           "create_embedder", "create_facenet", "embedder_entry", "resolve_device",
           "resolve_embedder"]
