"""Which match thresholds are in force, and why.

Two thresholds split a face's best score into tiers (:mod:`~faceid_tui.bank.matching`):

* **known** — open-set: a stranger's face is compared with every identity in the bank, so the
  chance that it is wrongly named grows with the bank. With a per-comparison false-accept rate
  FAR and ``n_eff`` effective independent comparisons, the false-positive identification rate
  is ``FPIR = 1 - (1 - FAR) ** n_eff``; faceid picks the threshold that keeps FPIR at
  :data:`DEFAULT_FPIR` for the bank in use, from impostor scores measured once per model
  (:data:`IMPOSTOR_CURVES`). ``n_eff`` is not the number of samples: it was *measured*
  (:data:`STRANGER_MODELS`) by drawing banks of n identities × m samples from LFW and reading
  off where exactly 1 % of strangers pass. An identity scored by its centroid gives a stranger
  0.8 comparisons' worth of chances with one sample, 3 with two, 5 with three and ~8.5 from five
  on, so enrolling more photos of the people you know raises the threshold a little, then not
  at all, instead of in proportion to the samples.
* **likely** — a suggestion: one comparison's FAR :data:`SUGGESTION_FAR`, whatever the bank's
  size. Its names are shown and confirmed one face at a time, never in bulk.

Precedence for ``known``: ``--threshold`` given by the user, else a threshold saved by
``faceid calibrate --save`` for this model in ``<bank>/faceid.toml``, else the measured model
above (for a model with no measured stranger model: ``n_eff`` = samples, the independence
assumption, which the measurement shows to be cautious for best-sample scoring).
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from faceid_tui.bank.matching import AMBIGUOUS_MARGIN, DEFAULT_THRESHOLD
from faceid_tui.engine.evaluation import far_for_fpir
from faceid_tui.fsutil import atomic_write_bytes

#: Target share of strangers that may be given a name.
DEFAULT_FPIR = 0.01
#: Per-comparison false-accept rate of the ``likely`` (suggestion) threshold: the model's
#: operating point for one pair of photos (``faceid eval pairs``), where a genuine pair passes
#: 99 % of the time on LFW (fused model: TAR 0.992 at FAR 1e-2). A true match that the
#: open-set threshold holds back is then still shown with its name; the price is that many
#: strangers are shown a name too, marked ``likely``, which is why it never goes through ``a``.
SUGGESTION_FAR = 0.01
#: ... and for large banks, where a stranger's best of hundreds of comparisons would pass one
#: comparison's FAR 1 % almost always (85 % of LFW strangers against 421 people), the
#: suggestion threshold rises to the open-set threshold at this FPIR: at most half of the
#: strangers are shown a tentative name, while 95 % of the LFW probes still show the right one
#: (benchmarks/README.md, open-set tiers).
SUGGESTION_FPIR = 0.5
#: Grouping unknown faces (``people to name``, :mod:`faceid_tui.triage.clustering`): two
#: groups merge when the mean score over every pair of their faces reaches the model's
#: impostor-curve threshold at a per-pair FAR of GROUP_PAIR_BUDGET / (faces being grouped).
#: Among n faces there are ~n²/2 stranger pairs but only ~n·m/2 pairs of one person, so the
#: share of wrong merges stays put only if the FAR falls as 1/n. The budget was chosen on LFW
#: (8,476 faces: FAR 2.9e-5, threshold 0.915 for the fused model) by ``faceid eval clusters
#: ../shared/lfw``: of 0.2, 0.25, 0.3, 0.42, 0.6 and 1.0, the largest that keeps pairwise
#: precision >= 0.99 both for all faces at once and for faces fed 64 at a time as the app
#: does (0.3: 0.9913 and 0.9897; 0.25: 0.9916 and 0.9911), since a wrong merge costs the user
#: more than a split. A small drop gets a lower threshold: its few strangers give few chances
#: to err.
GROUP_PAIR_BUDGET = 0.25
#: ... and never more than this FAR, however few the faces: on the 67 dev photos
#: (../shared/faces/identities, tests/test_people.py) FAR 6e-3 merged two people's groups,
#: 1e-3 (fused threshold 0.883) keeps all 19 people apart and each one whole.
GROUP_MAX_FAR = 1e-3
#: The model whose score scale :data:`AMBIGUOUS_MARGIN` was set in.
MARGIN_REFERENCE_MODEL = "facenet-casia-webface-20180408/dlib5-chip160-pad0.4"
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
class StrangerModel:
    """How many independent comparisons a stranger effectively gets against one identity of
    ``m`` samples (scored by its centroid), measured on simulated LFW banks."""

    source: str
    #: ``(m, comparisons)``, m ascending, comparisons not falling; log-log interpolation
    #: between points, the last value beyond the last point (it levels off there).
    per_identity: tuple[tuple[int, float], ...]

    def comparisons(self, identities: int, samples: int) -> float:
        """Effective comparisons for a bank of ``identities`` with ``samples`` in all. Mixed
        banks use the mean samples per identity: the curve is concave, so that never counts
        fewer comparisons than summing identity by identity would."""
        if identities <= 0:
            return 1.0
        mean = max(1.0, samples / identities)
        points = self.per_identity
        if mean <= points[0][0]:
            return identities * points[0][1]
        for (m_lo, c_lo), (m_hi, c_hi) in itertools.pairwise(points):
            if mean <= m_hi:
                share = math.log(mean / m_lo) / math.log(m_hi / m_lo)
                return identities * math.exp(math.log(c_lo) + share * math.log(c_hi / c_lo))
        return identities * points[-1][1]


#: Per-model stranger models, from
#:     .venv/bin/python benchmarks/open_set_thresholds.py --embeddings LFW.npz [--embedder …]
#: ("comparisons per identity of m samples (centroid)"; 4 draws of banks of 10-1,000
#: identities per m, strangers = 2,000 images of people not in the bank; the values were read
#: off one set of draws and checked on another: FPIR 0.7-1.5 % measured where 1 % was asked,
#: against 1.2-2.5 % for counting samples with centroid scoring). Rerun it when a curve changes.
STRANGER_MODELS: dict[str, StrangerModel] = {
    "facenet-casia-webface-20180408+dlib-resnet-v1-w0.1/dlib5-chip360-pad0.4": StrangerModel(
        "LFW banks, benchmarks/open_set_thresholds.py",
        ((1, 0.81), (2, 3.10), (3, 5.03), (5, 8.53)),  # 8 samples: 7.88
    ),
    "facenet-casia-webface-20180408/dlib5-chip160-pad0.4": StrangerModel(
        "LFW banks, benchmarks/open_set_thresholds.py --embedder facenet",
        ((1, 0.86), (2, 1.70), (3, 2.18), (5, 3.25)),  # 8 samples: 2.77
    ),
}


@dataclass(frozen=True)
class ThresholdChoice:
    value: float
    source: str  # "--threshold", "calibrated", "impostor curve", "fallback"
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"value": round(self.value, 4), "source": self.source, "detail": self.detail}


def effective_comparisons(model_id: str, identities: int, samples: int) -> float:
    """How many independent comparisons a stranger gets against this bank: the model's
    measured :class:`StrangerModel`, else one per sample."""
    model = STRANGER_MODELS.get(model_id)
    return model.comparisons(identities, samples) if model else float(samples)


def open_set_threshold(model_id: str, identities: int, samples: int,
                       fpir: float = DEFAULT_FPIR) -> ThresholdChoice:
    """The ``known`` threshold that keeps FPIR at ``fpir`` for a bank of ``identities`` people
    with ``samples`` photos in all (the model's measured :class:`StrangerModel`, else one
    comparison per sample)."""
    model = STRANGER_MODELS.get(model_id)
    if model is None or model_id not in IMPOSTOR_CURVES:
        return curve_threshold(model_id, samples, fpir)
    comparisons = effective_comparisons(model_id, identities, samples)
    curve = IMPOSTOR_CURVES[model_id]
    far = far_for_fpir(fpir, max(1, round(comparisons)))
    value, measured = curve.threshold_at(far)
    detail = (f"FPIR {fpir:.0%} for {identities} identit{'y' if identities == 1 else 'ies'} / "
              f"{samples} sample(s) = {comparisons:.0f} effective comparison(s) "
              f"({model.source}) → FAR {far:.1e} per comparison ({curve.source})")
    if not measured:
        detail += "; beyond the measured range, the curve's last point is used"
    return ThresholdChoice(value, "impostor curve", detail)


def curve_threshold(model_id: str, comparisons: int,
                    fpir: float = DEFAULT_FPIR) -> ThresholdChoice:
    """The threshold that keeps FPIR at ``fpir`` over ``comparisons`` independent comparisons
    (one per sample: what a model without a measured stranger model gets)."""
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


@dataclass(frozen=True)
class BankThresholds:
    """What matching needs from the policy: ``known`` (open-set: strangers rarely pass it, so
    its matches may be confirmed in bulk), ``likely`` (a suggestion: the name is shown, to be
    confirmed one face at a time) and the ``margin`` under which the runner-up makes a
    match ``ambiguous``."""

    known: ThresholdChoice
    likely: ThresholdChoice
    margin: float = AMBIGUOUS_MARGIN

    def as_dict(self) -> dict[str, object]:
        return {"known": self.known.as_dict(), "likely": self.likely.as_dict(),
                "ambiguous_margin": round(self.margin, 4)}


def likely_threshold(model_id: str, identities: int = 1, samples: int = 1) -> ThresholdChoice:
    """The suggestion threshold: the higher of one comparison's FAR :data:`SUGGESTION_FAR`
    and the bank's open-set threshold at FPIR :data:`SUGGESTION_FPIR` (see both for why)."""
    curve = IMPOSTOR_CURVES.get(model_id)
    if curve is None:
        return ThresholdChoice(FALLBACK_THRESHOLD, "fallback",
                               f"no impostor curve measured for {model_id}")
    value, _ = curve.threshold_at(SUGGESTION_FAR)
    by_bank = open_set_threshold(model_id, identities, samples, SUGGESTION_FPIR)
    if by_bank.value > value:
        return ThresholdChoice(by_bank.value, "impostor curve",
                               f"{by_bank.detail} (at most {SUGGESTION_FPIR:.0%} of strangers "
                               "shown a name)")
    return ThresholdChoice(value, "impostor curve",
                           f"FAR {SUGGESTION_FAR:.0e} per comparison ({curve.source})")


def ambiguous_margin(model_id: str) -> float:
    """:data:`AMBIGUOUS_MARGIN` (set for FaceNet's scores) in this model's score scale: scaled
    by the spread of its impostor curve (FAR 1e-1 to 1e-6) against FaceNet's. The fused
    model's scores are squeezed into 0.82-0.94 where FaceNet's spread over 0.32-0.78, so 0.05
    there made 45 % of LFW probes that passed the open-set threshold ``ambiguous``
    (benchmarks/README.md, open-set tiers); 0.013 keeps 0.04 % of them named wrong."""
    curve = IMPOSTOR_CURVES.get(model_id)
    reference = IMPOSTOR_CURVES[MARGIN_REFERENCE_MODEL]
    if curve is None:
        return AMBIGUOUS_MARGIN
    return AMBIGUOUS_MARGIN * _spread(curve) / _spread(reference)


def _spread(curve: ImpostorCurve) -> float:
    return curve.points[-1][1] - curve.points[0][1]


def bank_thresholds(model_id: str, identities: int, samples: int,
                    fpir: float = DEFAULT_FPIR) -> BankThresholds:
    """The thresholds for a bank of ``identities`` people with ``samples`` photos in all."""
    return BankThresholds(open_set_threshold(model_id, identities, samples, fpir),
                          likely_threshold(model_id, identities, samples),
                          ambiguous_margin(model_id))


def group_threshold(model_id: str, faces: int,
                    budget: float = GROUP_PAIR_BUDGET) -> ThresholdChoice:
    """The average-linkage threshold for grouping ``faces`` unknown faces (see
    :data:`GROUP_PAIR_BUDGET`; ``budget`` to try another operating point)."""
    far = min(GROUP_MAX_FAR, budget / max(1, faces))
    curve = IMPOSTOR_CURVES.get(model_id)
    if curve is None:
        return ThresholdChoice(FALLBACK_THRESHOLD, "fallback",
                               f"no impostor curve measured for {model_id}")
    value, measured = curve.threshold_at(far)
    detail = f"FAR {far:.0e} per comparison, average linkage ({curve.source})"
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
