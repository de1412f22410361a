"""The real ``faceid`` command, run in a subprocess as scripts and people run it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO

FACEID = Path(sys.executable).with_name("faceid")


def faceid(*args: str | Path, cwd: Path, models: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(FACEID), "--models", str(models), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def obama_bank(tmp_path: Path, identity_photos) -> Path:
    bank = tmp_path / "id_bank" / "barack_obama"
    bank.mkdir(parents=True)
    for photo in identity_photos["barack_obama"][:3]:
        shutil.copy2(photo, bank / photo.name)
    return tmp_path / "id_bank"


def make_bad_inputs(folder: Path, photo: Path) -> dict[str, str]:
    """Damaged and unusual files made from a real photo -> expected outcome."""
    folder.mkdir()
    data = photo.read_bytes()
    image = Image.open(photo).convert("RGB")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo at all\n")
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 4])
    rgba = image.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(folder / "alpha.png")
    image.convert("L").save(folder / "gray.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; a viewer turns it upright
    image.transpose(Image.Transpose.ROTATE_270).save(folder / "rotated.jpg", exif=exif)
    return {"empty.jpg": "error", "notes.jpg": "error", "truncated.jpg": "error",
            "alpha.png": "barack_obama", "gray.jpg": "barack_obama",
            "rotated.jpg": "barack_obama"}


def test_scan_reports_bad_files_and_goes_on(tmp_path: Path, obama_bank: Path, identity_photos,
                                            models_dir: Path) -> None:
    expected = make_bad_inputs(tmp_path / "inbox", identity_photos["barack_obama"][3])
    run = faceid("--bank", obama_bank, "scan", "--json", tmp_path / "inbox", cwd=tmp_path,
                 models=models_dir)
    assert run.returncode == 1, run.stderr  # some files failed, the rest were processed
    records = {Path(r["path"]).name: r for r in json_lines(run.stdout)}
    assert set(records) == set(expected)
    for name, outcome in expected.items():
        record = records[name]
        assert set(record) >= {"path", "width", "height", "model", "error", "faces"}
        if outcome == "error":
            assert record["error"] and "\n" not in record["error"]
            assert record["faces"] == []
        else:
            assert record["error"] is None
            (face,) = record["faces"]
            assert face["name"] == outcome and face["status"] == "known"
            assert len(face["box"]) == 4 and face["candidates"][0]["name"] == outcome
    assert "empty" in records["empty.jpg"]["error"]
    assert "truncated" in records["truncated.jpg"]["error"]


def test_scan_table_and_annotated_copies(tmp_path: Path, obama_bank: Path, faces_dir: Path,
                                         identity_photos, models_dir: Path) -> None:
    out = tmp_path / "out"
    run = faceid("--bank", obama_bank, "scan", identity_photos["barack_obama"][3],
                 faces_dir / "non_faces/dogs.jpg", "--annotate", out, cwd=tmp_path,
                 models=models_dir)
    assert run.returncode == 0, run.stderr
    assert "barack_obama" in run.stdout and "threshold" in run.stdout
    written = sorted(p.name for p in out.iterdir())
    stem = identity_photos["barack_obama"][3].stem
    assert written == sorted([f"{stem}.faceid.jpg", f"{stem}.faceid.json",
                              "dogs.faceid.jpg", "dogs.faceid.json"])  # no temp files left
    sidecar = json.loads((out / f"{stem}.faceid.json").read_text())
    assert sidecar["faces"][0]["name"] == "barack_obama"
    annotated = Image.open(out / f"{stem}.faceid.jpg")
    assert annotated.size == (sidecar["width"], sidecar["height"])


def test_enroll_rename_and_list(tmp_path: Path, identity_photos, models_dir: Path) -> None:
    bank = tmp_path / "bank"
    enrol = faceid("--bank", bank, "enroll", "Rose", *identity_photos["rose_leslie"],
                   cwd=tmp_path, models=models_dir)
    assert enrol.returncode == 0, enrol.stderr
    assert len(list((bank / "Rose").iterdir())) == 2
    rename = faceid("bank", "rename", "Rose", "Rose Leslie", "--bank", bank, cwd=tmp_path,
                    models=models_dir)
    assert rename.returncode == 0, rename.stderr
    listing = faceid("--bank", bank, "bank", "list", "--json", cwd=tmp_path, models=models_dir)
    assert json_lines(listing.stdout) == [{"name": "Rose Leslie", "photos": 2, "samples": 2}]


def test_bad_names_and_usage_errors_exit_2(tmp_path: Path, identity_photos,
                                           models_dir: Path) -> None:
    bank = tmp_path / "bank"
    run = faceid("--bank", bank, "enroll", "../escape", identity_photos["Juanes"][0],
                 cwd=tmp_path, models=models_dir)
    assert run.returncode == 2
    assert "escape" in run.stderr and "path separator" in run.stderr
    assert not (tmp_path / "escape").exists()
    assert faceid("scan", cwd=tmp_path, models=models_dir).returncode == 2
    assert faceid("--bank", bank, "bank", "show", "Nobody", cwd=tmp_path,
                  models=models_dir).returncode == 2


def test_embed_prints_unit_vectors_and_a_marked_fallback(tmp_path: Path, faces_dir: Path,
                                                         identity_photos,
                                                         models_dir: Path) -> None:
    run = faceid("embed", "--json", "--fallback-center", identity_photos["Juanes"][0],
                 faces_dir / "non_faces/eagle.jpg", cwd=tmp_path, models=models_dir)
    assert run.returncode == 0, run.stderr
    face_photo, eagle = json_lines(run.stdout)
    # The default model: FaceNet (512) and dlib's descriptor (128), fused.
    assert face_photo["model"].startswith("facenet-casia-webface-20180408+dlib-resnet")
    (face,) = face_photo["faces"]
    assert len(face["embedding"]) == 640 and "fallback" not in face
    assert abs(np.linalg.norm(face["embedding"]) - 1) < 1e-4
    (stand_in,) = eagle["faces"]
    assert stand_in["fallback"] is True and len(stand_in["embedding"]) == 640


def test_models_json_reports_every_file(tmp_path: Path, models_dir: Path) -> None:
    run = faceid("models", "--json", cwd=tmp_path, models=models_dir)
    assert run.returncode == 0, run.stderr
    (report,) = json_lines(run.stdout)
    assert report["active_embedder"] == "casia-webface"
    statuses = {f["name"]: f["status"] for f in report["files"]}
    assert statuses["20180408-102900-casia-webface.pt"] == "ok"
    assert statuses["shape_predictor_5_face_landmarks.dat"] == "ok"
    assert all(len(f["sha256"]) == 64 for f in report["files"] if f["status"] == "ok")


def test_the_app_needs_a_terminal_and_python_m_works(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "faceid_tui"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert run.returncode == 2
    assert "needs a terminal" in run.stderr and "faceid scan" in run.stderr
    helped = subprocess.run([sys.executable, "-m", "faceid_tui", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0
    for command in ("scan", "enroll", "bank", "embed", "models", "serve", "--inbox", "--out"):
        assert command in helped.stdout


def test_serve_answers_on_loopback(tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(FACEID), "--models", str(models_dir), "serve", "--host",
                               "127.0.0.1", "--port", str(port)], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        page = ""
        while time.monotonic() < deadline and not page:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    page = reply.read().decode("utf-8", "replace")
            except OSError:
                time.sleep(0.3)
        assert "faceid" in page
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_the_auto_detector_adds_the_cnn_only_in_the_accurate_mode() -> None:
    from faceid_tui.cli import build_parser, settings_from

    def detector(*args: str) -> str:
        settings = settings_from(build_parser().parse_args([*args, "models"]))
        return settings.pipeline_options().detector

    assert detector() == "hog,cnn"  # the default embedder is the accurate mode
    assert detector("--embedder", "auto") == "hog,cnn"
    assert detector("--embedder", "facenet") == "hog"
    assert detector("--embedder", "facenet+dlib") == "hog,cnn"
    assert detector("--embedder", "facenet+dlib", "--detector", "hog") == "hog"
    assert detector("--detector", "hog+cnn") == "hog+cnn"


def test_cluster_groups_people_by_photo_with_json_and_annotations(
        tmp_path: Path, obama_bank: Path, identity_photos, models_dir: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    people = ("Juanes", "Jon_Voight", "Mary_Carey", "barack_obama")
    for name in people:
        for photo in identity_photos[name]:
            shutil.copy2(photo, photos / f"{name}--{photo.name}")
    run = faceid("cluster", photos, "--json", "--annotate", tmp_path / "out", cwd=tmp_path,
                 models=models_dir)
    assert run.returncode == 0, run.stderr
    records = json_lines(run.stdout)
    groups = [r for r in records if r["cluster"] is not None]
    assert len(groups) == len(people)
    for group in groups:
        names = {Path(face["path"]).name.split("--")[0] for face in group["faces"]}
        assert len(names) == 1 and group["size"] == len(group["faces"]) >= 2
        assert 0 < group["cohesion"] <= 1
        # The bank knows Obama: his group shows him as its best identity, nobody else's does.
        assert (group["best_identity"] == "barack_obama") == (names == {"barack_obama"})
    sidecar = json.loads((tmp_path / "out" / "Juanes--Juanes_0001.faceid.json").read_text())
    assert sidecar["faces"][0]["group"].startswith("group ")
