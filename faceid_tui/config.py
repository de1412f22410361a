"""Settings shared by every front end (the CLI and the TUI) and the factories that turn them into
a pipeline and a bank, so both front ends build the engine the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.thresholds import DEFAULT_FPIR
from faceid_tui.engine.detection import DetectorOptions
from faceid_tui.engine.embedders import AUTO, resolve_embedder
from faceid_tui.engine.embedding import EmbedderOptions
from faceid_tui.engine.models import ModelStore, default_models_dir
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions
from faceid_tui.triage.ledger import LEDGER_NAME, Ledger
from faceid_tui.triage.session import TriagePaths, TriageSession

#: What ``detector="auto"`` means for each embedder (others: HOG, the fast setting for
#: portraits). The accurate mode (the default embedder) uses ``hog,cnn`` (engine/detectors.py):
#: HOG alone on portraits, and on every other photo HOG searched for faces from 18 px plus the
#: CNN for turned heads. On the dev group photos it finds 18/18 and 51/53 faces (hog+cnn, the
#: previous default: 10/18 and 12/53), no false box on them or on the non-face photos, for
#: 1.4–2.2 CPU s a group photo against 0.1–0.3 (benchmarks/detector_recall.py). The CNN on
#: photos HOG finds no face in (hog+cnn) lifted LFW's 10-fold accuracy from 0.9880 to 0.9917;
#: hog,cnn still runs it there (README, Accuracy). FaceNet alone, the fast mode, does not.
AUTO_DETECTOR = {"facenet+dlib": "hog,cnn"}


def detector_for(detector: str, embedder: str) -> str:
    """``detector`` with "auto" resolved for ``embedder`` (itself possibly "auto")."""
    if detector != "auto":
        return detector
    return AUTO_DETECTOR.get(resolve_embedder(embedder), "hog")


#: Where a station keeps its own triage ledger when the bank is shared (a PostgreSQL URL),
#: relative to the folder faceid runs in.
STATION_DIR = Path(".faceid-station")


@dataclass(frozen=True)
class Settings:
    #: The folder bank, or with ``bank_url`` this station's own folder (its triage ledger).
    bank_dir: Path = field(default_factory=lambda: Path("id_bank"))
    #: A shared bank in PostgreSQL (``--bank postgresql://…`` or ``$FACEID_BANK``).
    bank_url: str | None = None
    #: This station's name in a shared ledger (None: the host name).
    station: str | None = None
    models_dir: Path = field(default_factory=lambda: default_models_dir()[0])
    detector: str = "auto"  # "hog", "cnn", "hog+cnn", or "auto": AUTO_DETECTOR
    #: "auto" (FaceNet + dlib, engine/embedders.py), "facenet" (the fast mode), …
    embedder: str = AUTO
    upsample: int | None = None
    min_face_size: int | None = None  # None: follows the photo's size (engine/detection.py)
    device: str = "auto"
    runtime: str = "auto"  # "torch" or "onnx"; auto: engine/embedding.py facenet_runtime
    threads: int | None = None
    batch_size: int = 32
    threshold: float | None = None  # None: chosen for the bank's size (bank/thresholds.py)
    fpir: float = DEFAULT_FPIR
    ambiguous_margin: float | None = None  # None: the model's (bank/thresholds.py)

    @property
    def bank_location(self) -> str:
        """What ``--bank`` names: the folder, or the URL."""
        return self.bank_url or str(self.bank_dir)

    @property
    def embedder_name(self) -> str:
        """The embedder in force ("auto" resolved)."""
        return resolve_embedder(self.embedder)

    @property
    def detector_name(self) -> str:
        """The detector in force ("auto" resolved for the embedder)."""
        return detector_for(self.detector, self.embedder)

    def pipeline_options(self) -> PipelineOptions:
        return PipelineOptions(
            detector=self.detector_name,
            embedder=self.embedder_name,
            # The CNN follows --device (CUDA where asked or found); HOG is CPU-only.
            detector_options=DetectorOptions(upsample=self.upsample,
                                             min_face_size=self.min_face_size,
                                             device=self.device),
            embedder_options=EmbedderOptions(device=self.device, batch_size=self.batch_size,
                                             threads=self.threads, runtime=self.runtime),
        )


def open_session(settings: Settings, inbox: Path, out: Path,
                 move_done: Path | None = None) -> TriageSession:
    """Everything the triage app drives; no model is loaded yet (the app's worker does it)."""
    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    Path(settings.bank_dir).mkdir(parents=True, exist_ok=True)
    ledger = Ledger(Path(settings.bank_dir) / LEDGER_NAME)
    if settings.bank_url:
        from faceid_tui.triage.shared_ledger import SharedLedger

        ledger.shared = SharedLedger(settings.bank_url, station=settings.station)
    return TriageSession(pipeline, bank, ledger, TriagePaths(inbox, out, move_done))


def build_pipeline(settings: Settings) -> Pipeline:
    return Pipeline(ModelStore(settings.models_dir), settings.pipeline_options())


def open_bank(settings: Settings, pipeline: Pipeline) -> BankBase:
    """The folder bank, or the shared PostgreSQL bank when ``settings.bank_url`` is set."""
    if settings.bank_url:
        from faceid_tui.bank.shared_bank import SharedBank  # psycopg only for shared banks

        return SharedBank(settings.bank_url, pipeline, threshold=settings.threshold,
                          ambiguous_margin=settings.ambiguous_margin, fpir=settings.fpir)
    return IdentityBank(settings.bank_dir, pipeline, threshold=settings.threshold,
                        ambiguous_margin=settings.ambiguous_margin, fpir=settings.fpir)
