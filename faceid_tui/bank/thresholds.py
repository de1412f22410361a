"""Which match threshold is in force, and why.

A stranger's face is compared with every sample in the bank, so the chance that it is wrongly
named grows with the bank: with ``n`` comparisons at a per-comparison false-accept rate FAR,
the false-positive identification rate is ``FPIR = 1 - (1 - FAR) ** n``. faceid therefore picks
the threshold that keeps FPIR at :data:`DEFAULT_FPIR` for the bank in use, from impostor scores
measured once per model (:data:`IMPOSTOR_CURVES`); the threshold rises as the bank grows.

Precedence: ``--threshold`` given by the user, else a threshold saved by ``faceid calibrate
--save`` for this model in ``<bank>/faceid.toml``, else the impostor curve.

``n`` counts samples, not identities: an identity with three photos gives a stranger three
chances. Assuming independent comparisons is a (slightly pessimistic) simplification.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from faceid_tui.bank.matching import DEFAULT_THRESHOLD
from faceid_tui.engine.evaluation import far_for_fpir
from faceid_tui.fsutil import atomic_write_bytes

#: Target share of strangers that may be given a name.
DEFAULT_FPIR = 0.01
#: Used for models with no measured curve (e.g. VGGFace2 weights supplied by the user).
FALLBACK_THRESHOLD = DEFAULT_THRESHOLD
SAVED_THRESHOLDS_FILE = "faceid.toml"


@dataclass(frozen=True)
class ImpostorCurve:
    """Per-comparison FAR at a few thresholds, measured on impostor (different-person) pairs."""

    source: str
    #: ``(far, threshold)``, FAR falling: ``far`` of impostor scores are ``>= threshold``.
    points: tuple[tuple[float, float], ...]

    def threshold_at(self, far: float) -> tuple[float, bool]:
        """The threshold for ``far`` (log-linear between measured points) and whether ``far``
        lies inside the measured range (beyond it the last point's threshold is used,
        which then under-states the threshold needed)."""
        fars = [math.log10(f) for f, _ in self.points]
        values = [t for _, t in self.points]
        target = math.log10(max(far, 1e-300))
        if target >= fars[0]:
            return values[0], True
        for (f_hi, t_lo), (f_lo, t_hi) in zip(zip(fars, values, strict=True),
                                              zip(fars[1:], values[1:], strict=True),
                                              strict=False):
            if f_lo <= target <= f_hi:
                share = (f_hi - target) / (f_hi - f_lo)
                return t_lo + share * (t_hi - t_lo), True
        return values[-1], False


#: Per-model impostor curves from LFW: every pair of the 7,701 View 2 images of different
#: people (29,640,749 impostor pairs, so even FAR 1e-6 rests on 29 pairs above the threshold).
#: Produced on 2026-11-28 (dlib HOG detection, faceid's own pipeline) by
#:     faceid eval lfw ../shared/lfw --json [--embedder NAME]   (key "impostor_curve")
#: Rerun it after changing alignment or weights: a model id missing here gets FALLBACK_THRESHOLD.
IMPOSTOR_CURVES: dict[str, ImpostorCurve] = {
    "facenet-casia-webface-20180408/dlib5-chip160-pad0.4": ImpostorCurve(
        "LFW impostors, faceid eval lfw",
        (
            (0.1, 0.3203), (0.03, 0.4117), (0.01, 0.4774), (0.003, 0.5365), (0.001, 0.5817),
            (0.0003, 0.6249), (0.0001, 0.6599), (3e-05, 0.6934), (1e-05, 0.7218), (3e-06, 0.7541),
            (1e-06, 0.7783),
        ),
    ),
    "facenet-casia-webface-20180408+dlib-resnet-v1-w0.1/dlib5-chip360-pad0.4": ImpostorCurve(
        # Its auto detector, hog+cnn (remeasured so; with hog alone every point was within
        # 0.0011 of these).
        "LFW impostors, faceid eval lfw --embedder facenet+dlib",
        (
            (0.1, 0.8177), (0.03, 0.8408), (0.01, 0.8569), (0.003, 0.8716), (0.001, 0.8834),
            (0.0003, 0.895), (0.0001, 0.9047), (3e-05, 0.9139), (1e-05, 0.922), (3e-06, 0.9307),
            (1e-06, 0.9374),
        ),
    ),
    # int8 calibrated on ../shared/faces/identities (python -m faceid_tui.engine.onnx_embedder
    # --int8 ../shared/faces/identities); another calibration set gives a slightly different model.
    "facenet-casia-webface-20180408/dlib5-chip160-pad0.4+int8": ImpostorCurve(
        "LFW impostors, faceid eval lfw --embedder facenet-onnx-int8",
        (
            (0.1, 0.3198), (0.03, 0.4111), (0.01, 0.4767), (0.003, 0.5357), (0.001, 0.5808),
            (0.0003, 0.6238), (0.0001, 0.6589), (3e-05, 0.6922), (1e-05, 0.7204),
            (3e-06, 0.7528), (1e-06, 0.7776),
        ),
    ),
}

@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    source: str  # "--threshold", "calibrated", "impostor curve", "fallback"
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"value": round(self.value, 4), "source": self.source, "detail": self.detail}


def curve_threshold(model_id: str, comparisons: int,
                    fpir: float = DEFAULT_FPIR) -> ThresholdChoice:
    """The threshold that keeps FPIR at ``fpir`` for a bank of ``comparisons`` samples."""
    curve = IMPOSTOR_CURVES.get(model_id)
    if curve is None:
        return ThresholdChoice(FALLBACK_THRESHOLD, "fallback",
                               f"no impostor curve measured for {model_id}; run "
                               "`faceid calibrate` on your bank")
    far = far_for_fpir(fpir, comparisons)
    value, measured = curve.threshold_at(far)
    detail = (f"FPIR {fpir:.0%} over {max(1, comparisons)} sample(s) → FAR {far:.1e} "
              f"per comparison ({curve.source})")
    if not measured:
        detail += "; beyond the measured range, the curve's last point is used"
    return ThresholdChoice(value, "impostor curve", detail)


def pair_threshold(model_id: str) -> ThresholdChoice:
    """The threshold for judging one pair of photos (``faceid eval pairs``): the model's
    impostor curve at FAR 1 % for a single comparison."""
    return curve_threshold(model_id, 1, DEFAULT_FPIR)


# -- thresholds saved by `faceid calibrate --save` -----------------------------------------------
def saved_threshold(bank_dir: Path, model_id: str) -> ThresholdChoice | None:
    path = Path(bank_dir) / SAVED_THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        entry = tomllib.loads(path.read_text(encoding="utf-8")).get("threshold", {}).get(model_id)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path} cannot be read ({exc}); fix or delete it") from exc
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
        return None
    return ThresholdChoice(float(entry["value"]), "calibrated",
                           f"saved in {path} by `faceid calibrate` "
                           f"({entry.get('measured', 'date unknown')})")


def save_threshold(bank_dir: Path, model_id: str, value: float, fpir: float,
                   samples: int) -> Path:
    """Record a calibrated threshold for ``model_id``, keeping the other models' entries."""
    path = Path(bank_dir) / SAVED_THRESHOLDS_FILE
    entries: dict[str, dict[str, object]] = {}
    if path.is_file():
        entries = dict(tomllib.loads(path.read_text(encoding="utf-8")).get("threshold", {}))
    entries[model_id] = {"value": round(value, 4), "fpir": fpir, "samples": samples,
                         "measured": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    lines = ["# Match thresholds written by `faceid calibrate --save`, one table per model.",
             "# Delete an entry to go back to the built-in threshold.", ""]
    for key, entry in sorted(entries.items()):
        lines.append(f"[threshold.{_toml_string(key)}]")
        for field, value_ in entry.items():
            rendered = _toml_string(value_) if isinstance(value_, str) else repr(value_)
            lines.append(f"{field} = {rendered}")
        lines.append("")
    atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    return path


def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
