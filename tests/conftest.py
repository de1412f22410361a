"""Shared fixtures: the real photos in ../shared/faces, the prepared models, and one loaded
pipeline for the whole session (loading FaceNet takes seconds)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.engine.detection import DetectorOptions
from faceid_tui.engine.embedding import EmbedderOptions, FacenetEmbedder
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions

REPO = Path(__file__).resolve().parents[1]


def _shared_folder() -> Path:
    """``$FACEID_SHARED``, else the ``shared/`` beside this checkout, else (a clone made
    elsewhere, e.g. in a temporary folder) the one beside the checkout it was cloned from."""
    if "FACEID_SHARED" in os.environ:
        return Path(os.environ["FACEID_SHARED"])
    beside = REPO.parent / "shared"
    if not beside.is_dir():
        try:
            origin = subprocess.run(["git", "-C", str(REPO), "config", "remote.origin.url"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            origin = ""
        if origin and Path(origin).is_dir() and (Path(origin).parent / "shared").is_dir():
            return Path(origin).resolve().parent / "shared"
    return beside


SHARED = _shared_folder()
FACES = SHARED / "faces"


def pytest_configure(config: pytest.Config) -> None:
    if not (FACES / "MANIFEST.md").is_file():
        raise pytest.UsageError(
            f"the test photos are missing: expected {FACES}/MANIFEST.md "
            "(set FACEID_SHARED to the folder that holds faces/)"
        )


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES


@pytest.fixture(scope="session")
def identity_photos() -> dict[str, list[Path]]:
    """identity -> its photos, from identities.csv."""
    photos: dict[str, list[Path]] = {}
    with open(FACES / "identities.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            photos.setdefault(row["identity"], []).append(FACES / row["path"])
    return {name: sorted(paths) for name, paths in photos.items()}


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The repository's face_models/, prepared (make test prepares it before pytest)."""
    folder = REPO / "face_models"
    ModelStore(folder).prepare()
    return folder


@pytest.fixture(scope="session")
def pipeline(models_dir: Path) -> Pipeline:
    """The default pipeline (FaceNet + dlib's converted ResNet), with HOG."""
    options = PipelineOptions(detector_options=DetectorOptions(),
                              embedder_options=EmbedderOptions(device="cpu"))
    loaded = Pipeline(ModelStore(models_dir), options)
    loaded.load()
    return loaded


@pytest.fixture(scope="session")
def facenet_pipeline(models_dir: Path) -> Pipeline:
    """FaceNet alone (``--embedder facenet``, the fast mode), with HOG."""
    options = PipelineOptions(embedder="facenet", detector_options=DetectorOptions(),
                              embedder_options=EmbedderOptions(device="cpu"))
    loaded = Pipeline(ModelStore(models_dir), options)
    loaded.load()
    return loaded


@pytest.fixture(scope="session")
def torch_facenet(models_dir: Path) -> FacenetEmbedder:
    """FaceNet on torch, the reference the other runtimes are checked against (the session
    pipeline runs FaceNet on onnxruntime, the CPU default)."""
    return FacenetEmbedder(EmbedderOptions(device="cpu", runtime="torch"), ModelStore(models_dir))


@pytest.fixture
def bank_factory(tmp_path: Path, pipeline: Pipeline):
    """Opens IdentityBank objects on one temporary folder (reopen = a restart)."""
    folder = tmp_path / "id_bank"
    opened: list[IdentityBank] = []

    def open_bank() -> IdentityBank:
        bank = IdentityBank(folder, pipeline)
        opened.append(bank)
        return bank

    yield open_bank
    for bank in opened:
        bank.close()


def copy_identity(bank_folder: Path, name: str, photos: list[Path]) -> None:
    """Lay photos into id_bank/<name>/ by hand, as a user would."""
    target = bank_folder / name
    target.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy2(photo, target / photo.name)


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    left, top = max(ax, bx), max(ay, by)
    right, bottom = min(ax + aw, bx + bw), min(ay + ah, by + bh)
    inter = max(0, right - left) * max(0, bottom - top)
    return inter / float(aw * ah + bw * bh - inter)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real PostgreSQL 16 + pgvector (pgserver, from PyPI) for the whole run, stopped at the
    end; the URL of its ``postgres`` database."""
    from faceid_tui.bank.local_postgres import start_local_postgres

    return start_local_postgres(tmp_path_factory.mktemp("pg"), database="postgres",
                                keep_running=False)


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A new, empty database on the test server for each test."""
    import re

    import psycopg

    from faceid_tui.bank.local_postgres import database_url

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + \
        f"_{os.getpid()}_{len(_databases)}"
    _databases.append(name)
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return database_url(postgres_server, name)


_databases: list[str] = []
