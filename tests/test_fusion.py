"""The accurate mode: FaceNet fused with dlib's ResNet, one vector whose dot product is the
fused score."""

from __future__ import annotations

import math
from pathlib import Path

import dlib
import numpy as np
import pytest

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.embedding import EmbedderOptions
from faceid_tui.engine.fusion import FACENET_WEIGHT
from faceid_tui.engine.models import DLIB_RESNET, SHAPE_PREDICTOR_5, ModelStore
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions


@pytest.fixture(scope="module")
def fused(models_dir: Path) -> Pipeline:
    pipeline = Pipeline(ModelStore(models_dir), PipelineOptions(
        embedder="facenet+dlib", embedder_options=EmbedderOptions(device="cpu")))
    pipeline.load()
    return pipeline


def test_the_fused_vector_is_the_weighted_concatenation(fused: Pipeline,
                                                        facenet_pipeline: Pipeline,
                                                        identity_photos,
                                                        models_dir: Path) -> None:
    store = ModelStore(models_dir)
    resnet = dlib.face_recognition_model_v1(str(store.verified_path(DLIB_RESNET)))
    predictor = dlib.shape_predictor(str(store.verified_path(SHAPE_PREDICTOR_5)))
    photos = identity_photos["George_Clooney"][:2] + identity_photos["Juanes"][:1]
    fused_vectors, facenet_vectors, dlib_vectors = [], [], []
    for photo in photos:
        image = load_rgb(photo)
        face = fused.analyze_image(image).largest_face()
        fused_vectors.append(face.embedding)
        facenet_vectors.append(
            facenet_pipeline.analyze_image(image).largest_face().embedding)
        box = face.box
        shape = predictor(image, dlib.rectangle(box.x, box.y, box.x + box.w - 1,
                                                box.y + box.h - 1))
        descriptor = np.array(resnet.compute_face_descriptor(image, shape))
        dlib_vectors.append(descriptor / np.linalg.norm(descriptor))
    fused_matrix = np.stack(fused_vectors)
    assert fused_matrix.shape == (3, 640) and fused.model_id != facenet_pipeline.model_id
    np.testing.assert_allclose(np.linalg.norm(fused_matrix, axis=1), 1.0, atol=1e-5)
    # Each half is its network's vector (cut from the shared master chip: resampling only).
    for row, facenet, descriptor in zip(fused_matrix, facenet_vectors, dlib_vectors,
                                        strict=True):
        assert row[:512] @ facenet / math.sqrt(FACENET_WEIGHT) > 0.995
        assert row[512:] @ descriptor / math.sqrt(1 - FACENET_WEIGHT) > 0.995
    # A dot product is the fused score, and the same person still scores highest.
    scores = fused_matrix @ fused_matrix.T
    facenet_scores = np.stack(facenet_vectors) @ np.stack(facenet_vectors).T
    dlib_scores = np.stack(dlib_vectors) @ np.stack(dlib_vectors).T
    expected = FACENET_WEIGHT * facenet_scores + (1 - FACENET_WEIGHT) * dlib_scores
    np.testing.assert_allclose(scores, expected, atol=0.01)
    assert scores[0, 1] > max(scores[0, 2], scores[1, 2])


def test_pipelined_and_in_process_runs_give_the_same_fused_vectors(
        fused: Pipeline, identity_photos) -> None:
    """Detect workers cut the 360-px master chips; the main process embeds them with both
    networks in batches: the vectors equal those of a run in this process."""
    photos = [path for name in ("George_Clooney", "Juanes", "Martha_Burk")
              for path in identity_photos[name][:2]]
    in_process = list(fused.run(photos, workers=0))
    in_workers = list(fused.run(photos, workers=2, chunk_size=4))
    compared = 0
    for here, there in zip(in_process, in_workers, strict=True):
        assert [f.box.as_list() for f in here.faces] == [f.box.as_list() for f in there.faces]
        for face_here, face_there in zip(here.faces, there.faces, strict=True):
            assert face_there.embedding is not None and face_there.embedding.shape == (640,)
            np.testing.assert_allclose(face_there.embedding, face_here.embedding, atol=1e-5)
            compared += 1
    assert compared >= len(photos)
