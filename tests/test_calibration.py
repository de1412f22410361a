"""Thresholds that hold in an open set: FPIR arithmetic, impostor curves, `faceid calibrate`,
and strangers left unnamed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.bank.calibration import calibrate
from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.thresholds import (
    IMPOSTOR_CURVES,
    ImpostorCurve,
    curve_threshold,
    save_threshold,
    saved_threshold,
)
from faceid_tui.engine.evaluation import (
    far_for_fpir,
    fpir_for_far,
    highest_first,
    impostor_curve,
    open_set_points,
    pair_scores,
)
from faceid_tui.engine.pipeline import Pipeline

from .conftest import copy_identity
from .test_cli import faceid


@pytest.fixture(scope="module")
def identity_bank(tmp_path_factory: pytest.TempPathFactory, identity_photos,
                  pipeline: Pipeline) -> tuple[list[str], np.ndarray]:
    """Every identity of ../shared/faces enrolled once: (sample names, sample matrix)."""
    bank = IdentityBank(tmp_path_factory.mktemp("bank"), pipeline)
    for name, photos in identity_photos.items():
        copy_identity(bank.folder, name, photos)
    bank.sync()
    names, _paths, samples = bank.store.samples(pipeline.model_id)
    bank.close()
    return names, samples


def test_fpir_arithmetic() -> None:
    assert far_for_fpir(0.01, 1) == pytest.approx(0.01)
    far = far_for_fpir(0.01, 1000)
    assert far == pytest.approx(1.005e-5, rel=1e-3)
    assert fpir_for_far(far, 1000) == pytest.approx(0.01)
    # The example: a threshold fine for one pair is far too loose for hundreds.
    assert fpir_for_far(0.01, 421) > 0.98


def test_impostor_curve_interpolates_in_log_far() -> None:
    curve = ImpostorCurve("test", ((1e-2, 0.5), (1e-3, 0.6), (1e-4, 0.7)))
    assert curve.threshold_at(1e-3) == (pytest.approx(0.6), True)
    value, measured = curve.threshold_at(10 ** -3.5)
    assert measured and value == pytest.approx(0.65)
    assert curve.threshold_at(0.5) == (0.5, True)  # looser than measured: the first point
    assert curve.threshold_at(1e-6) == (0.7, False)  # beyond the measured range: flagged


def test_impostor_scores_and_curve_on_known_vectors() -> None:
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = vectors[0]  # rows 0 and 1 are one person: their pair is not an impostor
    genuine, scores = pair_scores(vectors, ["a", "a", "b", "c"], block=3)
    assert len(scores) == 5 and np.all(scores == 0)  # 6 pairs minus the genuine one
    assert genuine.tolist() == [1.0]
    ranked = np.linspace(0, 1, 1001)
    curve = dict(impostor_curve(highest_first(ranked), fars=(1e-1, 1e-2, 1e-3)))
    assert set(curve) == {1e-1, 1e-2}  # 1e-3 would rest on a single impostor: left out
    assert (ranked >= curve[1e-2]).sum() == 10
    impostors = np.linspace(0, 1, 100_001)
    points = open_set_points(np.array([0.995, 0.9995, 0.5]), highest_first(impostors))
    assert [p.bank_samples for p in points] == [1, 10, 100]  # 1,000 needs 10x the impostors
    assert [p.genuine_accepted for p in points] == pytest.approx([2 / 3, 1 / 3, 0.0], abs=1e-3)
    for point in points:  # each threshold lets through the share of impostors it promises
        assert (impostors >= point.threshold).mean() <= point.far


def test_default_threshold_rises_with_the_bank() -> None:
    assert IMPOSTOR_CURVES, "the default model needs its measured impostor curve"
    model_id = next(iter(IMPOSTOR_CURVES))
    values = [curve_threshold(model_id, n).value for n in (1, 10, 100, 1000)]
    assert values == sorted(values) and values[0] < values[-1]
    assert curve_threshold("unknown-model", 10).source == "fallback"


def test_calibration_sits_between_genuine_and_impostor_scores(
        identity_bank: tuple[list[str], np.ndarray], pipeline: Pipeline) -> None:
    names, samples = identity_bank
    result = calibrate(names, samples, pipeline.model_id)
    assert result.identities == 19 and result.samples == 67
    assert len(result.genuine) == 90  # every within-identity pair, as pairs.csv counts them
    assert result.impostor.max() < result.threshold.value < np.median(result.genuine)
    # 67 samples give ~2,100 impostor pairs: too few to read FAR 1.5e-4; the curve is used.
    assert result.bank_threshold is None and result.threshold.source == "impostor curve"
    assert any("impostor curve" in note for note in result.notes)
    assert result.unnamed_share is not None and 0.0 <= result.unnamed_share < 0.5


def test_calibration_threshold_rises_with_identities(
        identity_bank: tuple[list[str], np.ndarray], pipeline: Pipeline) -> None:
    names, samples = identity_bank
    identities = sorted(set(names))
    thresholds = []
    for count in (3, 8, 19):
        keep = [i for i, name in enumerate(names) if name in identities[:count]]
        result = calibrate([names[i] for i in keep], samples[keep], pipeline.model_id)
        thresholds.append(result.threshold.value)
    assert thresholds[0] < thresholds[1] < thresholds[2]


def test_a_big_enough_bank_is_read_directly(identity_bank: tuple[list[str], np.ndarray],
                                            pipeline: Pipeline) -> None:
    names, samples = identity_bank
    # A loose target needs few impostor pairs: then the bank's own impostors decide.
    result = calibrate(names, samples, pipeline.model_id, fpir=0.5)
    assert result.threshold.source == "calibrated" and result.bank_threshold is not None
    above = (result.impostor >= result.threshold.value).mean()
    assert above <= result.far and above > result.far / 3


def test_a_one_identity_bank_says_it_cannot_tell(identity_bank: tuple[list[str], np.ndarray],
                                                 pipeline: Pipeline) -> None:
    names, samples = identity_bank
    keep = [i for i, name in enumerate(names) if name == names[0]]
    result = calibrate([names[i] for i in keep], samples[keep], pipeline.model_id)
    assert len(result.impostor) == 0 and result.threshold.source == "impostor curve"
    assert any("fewer than 2 identities" in note for note in result.notes)


def test_strangers_are_never_known(bank_factory, identity_photos, pipeline: Pipeline) -> None:
    """Open set: enrol half the identities, scan every photo of the other half. A stranger may
    be shown a tentative name (likely, ambiguous, conflict), never one safe for `a`."""
    identities = sorted(identity_photos)
    enrolled, strangers = identities[::2], identities[1::2]
    bank = bank_factory()
    for name in enrolled:
        copy_identity(bank.folder, name, identity_photos[name])
    bank.sync()
    matcher = bank.matcher()
    assert bank.threshold_in_force.source == "impostor curve"
    photos = [photo for name in strangers for photo in identity_photos[name]]
    known, tentative = [], 0
    for result in pipeline.run(photos):
        assert result.error is None and result.faces
        for match in matcher.match_photo(np.stack([f.embedding for f in result.faces])):
            if match.status == "known":
                known.append((result.path.name, match.name, match.score))
            elif match.name is not None:
                assert match.status in ("likely", "ambiguous", "conflict")
                tentative += 1
    assert known == [], f"strangers were named known: {known}"
    assert tentative < len(photos)  # most strangers stay unknown


def test_saved_threshold_takes_precedence(bank_factory, pipeline: Pipeline) -> None:
    bank = bank_factory()
    assert bank.threshold_choice(samples=10).source == "impostor curve"
    save_threshold(bank.folder, pipeline.model_id, 0.555, 0.01, 10)
    save_threshold(bank.folder, "other-model", 0.3, 0.01, 5)
    choice = bank.threshold_choice()
    assert (choice.source, choice.value) == ("calibrated", 0.555)
    assert saved_threshold(bank.folder, "other-model").value == 0.3
    (bank.folder / "faceid.toml").write_text("[threshold\nbroken")
    with pytest.raises(ValueError, match=r"faceid\.toml"):
        bank.threshold_choice()


def test_calibrate_and_eval_pairs_commands(tmp_path: Path, identity_photos, models_dir: Path,
                                           faces_dir: Path) -> None:
    bank = tmp_path / "id_bank"
    for name in sorted(identity_photos)[:4]:
        copy_identity(bank, name, identity_photos[name])
    run = faceid("--bank", bank, "calibrate", "--save", "--json", cwd=tmp_path,
                 models=models_dir)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["identities"] == 4 and report["saved_to"] == str(bank / "faceid.toml")
    scan = faceid("--bank", bank, "scan", "--json", identity_photos["barack_obama"][0],
                  cwd=tmp_path, models=models_dir)
    record = json.loads(scan.stdout)
    assert record["threshold_source"] == "calibrated"
    assert record["threshold"] == report["threshold"]["value"]

    pairs = faceid("eval", "pairs", faces_dir / "pairs.csv", "--json",
                   "--plot", tmp_path / "pairs.png", cwd=tmp_path, models=models_dir)
    assert pairs.returncode == 0, pairs.stderr
    evaluation = json.loads(pairs.stdout)
    assert evaluation["pairs"] == 180 and evaluation["accuracy"] >= 0.97
    assert (tmp_path / "pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
