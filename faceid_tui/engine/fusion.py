"""The accurate mode: FaceNet and dlib's ResNet descriptor fused at the score level.

Each face gets one vector, the weighted concatenation of the two L2-normalised embeddings,
``[sqrt(w) * facenet, sqrt(1 - w) * dlib]``. Its norm is 1, and the dot product of two such
vectors is ``w * cos_facenet + (1 - w) * cos_dlib``: the fused score. So the bank, the matcher
and ``faceid embed`` treat it like any other embedding.

Both networks read their own chip of the same aligned face. The aligner cuts one master chip
(:data:`FUSED_CHIP`, 360 px, dlib padding 0.4) and both chips are downscaled from it with
area averaging: FaceNet's 160 px chip covers the whole master (padding 0.4); dlib's 150 px chip
(padding 0.25, as dlib computes its descriptor) is the central 300 px, exactly 2:1. The FaceNet
half therefore differs from the fast mode's directly cut chip by resampling only.

dlib's descriptor runs on the CPU (dlib-bin has no CUDA), about 110 ms a face on one core, so
it is this embedder's *chip stage* (:class:`DlibChipStage`): it runs where the face is found,
in the detect worker processes on long runs, beside detection, while this process runs FaceNet.
"""

from __future__ import annotations

import math

import numpy as np

from faceid_tui.engine.alignment import FACENET_CHIP, FUSED_CHIP, ChipSpec
from faceid_tui.engine.embedding import EmbedderOptions, create_facenet
from faceid_tui.engine.models import DLIB_RESNET, ModelStore

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


class DlibChipStage:
    """dlib's L2-normalised descriptor of each master chip; loads its network on first use."""

    def __init__(self, models: ModelStore) -> None:
        self._models = models
        self._network = None
        self._crop = _dlib_crop(FUSED_CHIP)

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        import cv2

        if len(chips) == 0:
            return np.zeros((0, 128), dtype=np.float32)
        if self._network is None:
            import dlib

            self._network = dlib.face_recognition_model_v1(
                str(self._models.verified_path(DLIB_RESNET)))
        start, side = self._crop
        dlib_chips = [np.ascontiguousarray(cv2.resize(
            chip[start:start + side, start:start + side], (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE),
            interpolation=cv2.INTER_AREA)) for chip in chips]
        descriptors = np.array(self._network.compute_face_descriptor(dlib_chips),
                               dtype=np.float32)
        return descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True).clip(min=1e-12)


class FusedEmbedder:
    """FaceNet + dlib ResNet, one unit vector per face whose dot products are fused scores."""

    name = "facenet+dlib"

    def __init__(self, options: EmbedderOptions, models: ModelStore) -> None:
        self.facenet = create_facenet(options, models)
        self.device = self.facenet.device
        self.dimension = self.facenet.dimension + 128
        self.model_id = fused_model_id(models)
        self._dlib = DlibChipStage(models)

    def embed(self, chips: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Fused vectors of master chips; ``features``: their dlib descriptors when the chip
        stage already computed them (otherwise they are computed here)."""
        import cv2

        if len(chips) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        size = FACENET_CHIP.size
        facenet_chips = np.stack([cv2.resize(chip, (size, size), interpolation=cv2.INTER_AREA)
                                  for chip in chips])
        descriptors = self._dlib(chips) if features is None else features
        facenet = self.facenet.embed(facenet_chips)
        return np.hstack([math.sqrt(FACENET_WEIGHT) * facenet,
                          math.sqrt(1 - FACENET_WEIGHT) * descriptors]).astype(np.float32)
