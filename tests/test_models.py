"""Model files: conversion fidelity, checksums, clear errors, and model ids on embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceid_tui.engine.alignment import standardise
from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.embedding import FacenetEmbedder
from faceid_tui.engine.models import (
    ALL_FILES,
    CONVERTED_FILES,
    FACENET_CASIA,
    SHAPE_PREDICTOR_5,
    ModelStore,
    facenet_graph_path,
)
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import ModelError


def test_converted_facenet_matches_opencv_on_a_real_face_chip(
        facenet_pipeline: Pipeline, faces_dir: Path, torch_facenet: FacenetEmbedder) -> None:
    image = load_rgb(faces_dir / "identities/George_Clooney/George_Clooney_0001.jpg")
    faces = facenet_pipeline.find_faces(image)
    assert len(faces) == 1
    blob = standardise(faces[0].chip[None])  # 1×3×160×160, (x - 127.5) / 128

    network = cv2.dnn.readNetFromTensorflow(str(facenet_graph_path()))
    network.setInput(blob)
    reference = network.forward().reshape(-1)

    torch_model = torch_facenet._network  # the converted weights, as loaded for use
    with torch.inference_mode():
        ours = torch_model(torch.from_numpy(blob)).numpy().reshape(-1)
    assert np.abs(ours - reference).max() < 1e-4
    assert float(ours @ reference) > 0.9999


def test_every_prepared_file_is_verified(models_dir: Path) -> None:
    report = {entry.name: entry for entry in ModelStore(models_dir).report()}
    for name in ("shape_predictor_5_face_landmarks.dat", "shape_predictor_68_face_landmarks.dat",
                 "mmod_human_face_detector.dat", FACENET_CASIA.name):
        assert report[name].status == "ok", report[name]
        assert report[name].size and report[name].size > 0
        assert report[name].sha256 and len(report[name].sha256) == 64
    assert ModelStore(models_dir).active_weights().key == "casia-webface"


def test_a_corrupt_model_file_is_refused_with_the_fix(tmp_path: Path, models_dir: Path) -> None:
    store = ModelStore(tmp_path)
    shutil.copy2(models_dir / "manifest.json", tmp_path / "manifest.json")
    target = tmp_path / SHAPE_PREDICTOR_5.name
    target.write_bytes((models_dir / SHAPE_PREDICTOR_5.name).read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError) as caught:
        store.verified_path(SHAPE_PREDICTOR_5)
    message = str(caught.value)
    assert SHAPE_PREDICTOR_5.name in message and "corrupt" in message
    assert "faceid models" in message


def test_a_corrupt_converted_facenet_is_refused(tmp_path: Path, models_dir: Path) -> None:
    store = ModelStore(tmp_path)
    shutil.copy2(models_dir / "manifest.json", tmp_path / "manifest.json")
    (tmp_path / FACENET_CASIA.name).write_bytes(b"not the weights")
    status = {entry.name: entry for entry in store.report()}[FACENET_CASIA.name]
    assert status.status == "corrupt"
    with pytest.raises(ModelError, match="faceid models"):
        store.verified_path(FACENET_CASIA)


def test_missing_files_are_prepared_offline_from_installed_packages(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    actions = store.prepare()
    assert any("converted" in action for action in actions)
    report = {entry.name: entry.status for entry in store.report()}
    assert all(report[model_file.name] in ("ok", "not present (optional)")
               for model_file in ALL_FILES)
    # The ONNX conversions are built by `faceid models` (cli) or on first use, not here.
    assert all(report[converted.name] == "not built yet" for converted in CONVERTED_FILES)
    assert store.prepare() == []  # a second run has nothing to do


def test_vggface2_file_becomes_the_active_embedder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    (tmp_path / "20180402-114759-vggface2.pt").write_bytes(b"placeholder")
    weights = store.active_weights()
    assert weights.key == "vggface2"
    assert weights.model_id != ModelStore(tmp_path / "empty").active_weights().model_id


def test_models_live_in_one_place_per_machine(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the checkout, every working directory shares the checkout's face_models/;
    an installed copy uses one per-user cache; FACEID_MODELS overrides both."""
    from faceid_tui.engine import models

    monkeypatch.delenv(models.MODELS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    folder, why = models.default_models_dir()
    assert folder == Path(__file__).resolve().parents[1] / "face_models" and "checkout" in why
    monkeypatch.setattr(models, "checkout_models_dir", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder, why = models.default_models_dir()
    assert folder == tmp_path / "cache" / "faceid" / "models" and "per-user" in why
    monkeypatch.setenv(models.MODELS_ENV, str(tmp_path / "mine"))
    assert models.default_models_dir() == (tmp_path / "mine", "$FACEID_MODELS")
    assert not (tmp_path / "face_models").exists()  # nothing left in the working directory
