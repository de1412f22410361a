"""The accurate mode, faceid's default: FaceNet and dlib's ResNet descriptor fused at the
score level.

Each face gets one vector, the weighted concatenation of the two L2-normalised embeddings,
``[sqrt(w) * facenet, sqrt(1 - w) * dlib]``. Its norm is 1, and the dot product of two such
vectors is ``w * cos_facenet + (1 - w) * cos_dlib``: the fused score. So the bank, the matcher
and ``faceid embed`` treat it like any other embedding.

Both networks read their own chip of the same aligned face. The aligner cuts one master chip
(:data:`FUSED_CHIP`, 360 px, dlib padding 0.4) and both chips are downscaled from it with
area averaging: FaceNet's 160 px chip covers the whole master (padding 0.4); dlib's 150 px chip
(padding 0.25, as dlib computes its descriptor) is the central 300 px, exactly 2:1. The FaceNet
half therefore differs from the fast mode's directly cut chip by resampling only.

dlib's network runs converted from its ``.dat`` (:mod:`dlib_resnet`): on ONNX Runtime on the
CPU, torch on CUDA, batched in the process that runs FaceNet, with dlib-bin's descriptors to
about 1e-6, so the model id (and the impostor curve measured with dlib-bin) still holds.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from faceid_tui.engine.alignment import FACENET_CHIP, FUSED_CHIP, ChipSpec
from faceid_tui.engine.embedding import Embedder
from faceid_tui.engine.models import ModelStore

#: Share of the fused score that comes from FaceNet. dlib's cosines spread about four times
#: less than FaceNet's (impostor std 0.035 vs 0.138 on LFW), so a small weight already gives
#: FaceNet an equal say: 0.1 is the best of 0.1-0.6 on a 2,000-pair LFW subset
#: (.venv/bin/python benchmarks/lfw_variants.py --limit 2000: 0.9855 against 0.9810 for
#: dlib alone and 0.9710 for FaceNet alone; the README's table has the full 6,000 pairs).
FACENET_WEIGHT = 0.1
DLIB_CHIP_SIZE = 150
_DLIB_PADDING = 0.25


def _dlib_crop(chip: ChipSpec) -> tuple[int, int]:
    """``(start, side)`` in master-chip pixels of the region dlib's padding-0.25 chip covers."""
    pixels_per_unit = chip.size / (1 + 2 * chip.padding)
    start = (chip.padding - _DLIB_PADDING) * pixels_per_unit
    side = (1 + 2 * _DLIB_PADDING) * pixels_per_unit
    return round(start), round(side)


def fused_model_id(models: ModelStore) -> str:
    return (f"{models.active_weights().model_id}+dlib-resnet-v1-w{FACENET_WEIGHT:g}/"
            f"{FUSED_CHIP.alignment_id}")


def dlib_chips(master_chips: np.ndarray) -> np.ndarray:
    """dlib's 150-px padding-0.25 chips, cut from master chips (N×360×360×3)."""
    start, side = _dlib_crop(FUSED_CHIP)
    return np.stack([cv2.resize(chip[start:start + side, start:start + side],
                                (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE), interpolation=cv2.INTER_AREA)
                     for chip in master_chips])


def facenet_chips(master_chips: np.ndarray) -> np.ndarray:
    """FaceNet's 160-px chips: each whole master chip, area-averaged."""
    size = FACENET_CHIP.size
    return np.stack([cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA)
                     for chip in master_chips])


class FusedEmbedder:
    """FaceNet + dlib ResNet, one unit vector per face whose dot products are fused scores.

    ``descriptor`` maps 150-px chips to L2-normalised 128-d vectors
    (:class:`faceid_tui.engine.dlib_resnet.DlibDescriptor`, or dlib-bin's network in tests)."""

    name = "facenet+dlib"

    def __init__(self, facenet: Embedder, descriptor, models: ModelStore) -> None:
        self.facenet = facenet
        self.descriptor = descriptor
        self.device = facenet.device
        self.dimension = facenet.dimension + 128
        self.model_id = fused_model_id(models)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Fused vectors of master chips (N×360×360×3)."""
        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        descriptors = self.descriptor(dlib_chips(chips))
        facenet = self.facenet.embed(facenet_chips(chips))
        return np.hstack([math.sqrt(FACENET_WEIGHT) * facenet,
                          math.sqrt(1 - FACENET_WEIGHT) * descriptors]).astype(np.float32)
