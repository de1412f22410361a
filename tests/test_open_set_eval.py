"""Open-set evaluations (faceid_tui/bank/open_set_eval.py, ``faceid eval identification`` and
``faceid eval groups``) on real photos: the figures are recomputed here by hand from the same
embeddings and boxes, independently of the module's own arithmetic."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.bank.matching import KNOWN, TIERS, UNKNOWN
from faceid_tui.bank.open_set_eval import (
    LfwEmbeddings,
    evaluate_groups,
    evaluate_identification,
    list_lfw_images,
    load_or_embed_lfw,
    pair_boxes,
    read_gallery_csv,
    read_gallery_dir,
    split_identification,
    threshold_at_fpir,
)
from faceid_tui.bank.thresholds import bank_thresholds
from faceid_tui.engine.pipeline import Pipeline
from tests.conftest import FACES, iou

FACEID = Path(sys.executable).with_name("faceid")
#: The dev set's LFW people: two have 5 photos; at 4, eight are enrolled and seven (3 photos
#: each) are strangers.
MIN_IMAGES = 4


def faceid(*args: str | Path, models: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([str(FACEID), "--models", str(models), *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def lfw_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LFW photos of shared/faces/identities laid out as LFW is: images/<Name>/<file>
    (symlinks; the large face_recognition photos are left out, they are slow to embed)."""
    root = tmp_path_factory.mktemp("lfw_like")
    with open(FACES / "identities.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source"] != "lfw":
                continue
            photo = FACES / row["path"]
            (root / "images" / row["identity"]).mkdir(parents=True, exist_ok=True)
            (root / "images" / row["identity"] / photo.name).symlink_to(photo)
    return root


@pytest.fixture(scope="module")
def lfw_cache(lfw_like: Path, pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[Path, LfwEmbeddings]:
    """Every image of ``lfw_like`` embedded once, into a cache the tests reuse."""
    cache = tmp_path_factory.mktemp("cache") / "vectors.npz"
    return cache, load_or_embed_lfw(pipeline, lfw_like, cache)


def test_split_is_seeded_and_follows_the_protocol() -> None:
    people = {f"p{i:02d}": [f"images/p{i:02d}/{j}.jpg" for j in range(1 + i % 7)]
              for i in range(40)}
    split = split_identification(people, shots=2, strangers=5, seed=7, min_images=5)
    assert split == split_identification(people, shots=2, strangers=5, seed=7, min_images=5)
    assert split.gallery != split_identification(people, shots=2, strangers=5, seed=8,
                                                 min_images=5).gallery
    big = sorted(n for n, images in people.items() if len(images) >= 5)
    assert split.enrolled_people == big
    # Two gallery images per enrolled person, every other image of theirs a probe.
    for name in big:
        mine = [p for p in split.gallery if p.split("/")[1] == name]
        theirs = [p for p in split.probes if p.split("/")[1] == name]
        assert len(mine) == 2 and sorted(mine + theirs) == sorted(people[name])
    # Five strangers, five different people, none enrolled.
    owners = [p.split("/")[1] for p in split.strangers]
    assert len(set(owners)) == 5 and not set(owners) & set(big)
    assert split.stranger_people_available == 40 - len(big)
    limited = split_identification(people, shots=1, seed=0, limit=3, min_images=5)
    assert len(limited.enrolled_people) == 3 and set(limited.enrolled_people) <= set(big)


def test_threshold_at_fpir_lets_that_share_of_strangers_pass() -> None:
    best = np.linspace(0.0, 0.999, 1000)
    for fpir in (0.01, 0.001, 0.1):
        cut = threshold_at_fpir(best, fpir)
        assert int((best >= cut).sum()) == round(fpir * 1000)


def test_identification_figures_match_a_hand_computation(
        lfw_like: Path, lfw_cache: tuple[Path, LfwEmbeddings], pipeline: Pipeline,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cache, embedded = lfw_cache
    assert len(embedded.paths) == 55 and embedded.vectors.dtype == np.float32
    # The cache holds every image: this run must not embed one.
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("re-embedded"))
    result = evaluate_identification(pipeline, lfw_like, shots=1, strangers=100, seed=3,
                                     min_images=MIN_IMAGES, cache_path=cache)
    assert any("reused" in note for note in result.cache_notes)

    people = list_lfw_images(lfw_like)
    enrolled = sorted(n for n, images in people.items() if len(images) >= MIN_IMAGES)
    assert len(enrolled) == 8 and result.people_enrolled == 8
    assert result.gallery_samples == 8
    assert result.probes == sum(len(people[n]) - 1 for n in enrolled) == 34 - 8
    assert result.strangers == len(people) - 8 == 7

    row = {path: i for i, path in enumerate(embedded.paths)}
    split = result.split
    gallery = embedded.vectors[[row[p] for p in split.gallery]]
    owners = [Path(p).parent.name for p in split.gallery]
    probes = embedded.vectors[[row[p] for p in split.probes]]
    truth = [Path(p).parent.name for p in split.probes]
    strangers = embedded.vectors[[row[p] for p in split.strangers]]
    scores = probes @ gallery.T  # one gallery image per person: columns are identities
    best = scores.max(axis=1)
    right = np.array([owners[j] == t for j, t in zip(scores.argmax(axis=1), truth,
                                                      strict=True)])
    assert result.rank1 == round(right.mean(), 4)
    assert result.rank1 >= 0.9  # the accurate default embedder on clean portraits

    # Seven strangers: FPIR 1 % lets none pass, so the cut lies just above the best of them.
    top_stranger = (strangers @ gallery.T).max()
    point = result.operating_points[0]
    assert point.fpir_target == 0.01 and point.strangers_passing == 0
    assert point.threshold == pytest.approx(top_stranger, abs=1e-5)
    assert point.tpir == round((right & (best > top_stranger)).mean(), 4)

    # The policy: faceid's own thresholds for 8 identities / 8 samples.
    policy = bank_thresholds(pipeline.model_id, 8, 8)
    assert result.thresholds.known == policy.known
    assert result.thresholds.likely == policy.likely
    # `known` needs the best score at the threshold (and a clear margin), so it can only
    # be fewer than the plain score test.
    at_known = (right & (best >= policy.known.value)).mean()
    assert result.probes_known_right <= round(at_known, 4)
    assert result.probes_known_right + result.probes_known_wrong <= \
        round((best >= policy.known.value).mean(), 4)
    assert result.probes_known_wrong == 0.0
    assert result.strangers_known <= round(((strangers @ gallery.T).max(axis=1)
                                            >= policy.known.value).mean(), 4)
    assert result.probes_shown_right >= result.probes_known_right
    assert result.strangers_named >= result.strangers_known
    assert sum(result.probe_statuses.values()) == result.probes
    assert sum(result.stranger_statuses.values()) == result.strangers
    assert set(result.probe_statuses) == set(TIERS)
    assert result.probe_statuses[KNOWN] == round(
        (result.probes_known_right + result.probes_known_wrong) * result.probes)


def test_cache_from_another_model_is_recomputed(lfw_like: Path, pipeline: Pipeline,
                                                tmp_path: Path) -> None:
    few = ["images/Juanes/" + p.name for p in sorted((lfw_like / "images/Juanes").iterdir())]
    cache = tmp_path / "few.npz"
    first = load_or_embed_lfw(pipeline, lfw_like, cache, few)
    assert first.embedded_now == 3 and first.no_face_count == 0
    with np.load(cache, allow_pickle=False) as data:
        arrays = dict(data)
    assert list(arrays["paths"]) == sorted(few)
    arrays["model_id"] = np.str_("some-other-model")
    np.savez(cache, **arrays)
    again = load_or_embed_lfw(pipeline, lfw_like, cache, few)
    assert again.embedded_now == 3
    assert any("recomputing" in note for note in again.notes)
    np.testing.assert_allclose(again.vectors, first.vectors, atol=1e-5)
    paths, vectors, identities, no_face = load_or_embed_lfw(pipeline, lfw_like, cache, few)
    assert paths == sorted(few) and identities == ["Juanes"] * 3 and no_face == 0
    np.testing.assert_array_equal(vectors, again.vectors)


def test_cli_identification_reuses_the_cache(lfw_like: Path,
                                             lfw_cache: tuple[Path, LfwEmbeddings],
                                             pipeline: Pipeline, models_dir: Path) -> None:
    cache, _ = lfw_cache
    # --detector hog: the cache was made by the HOG test pipeline.
    done = faceid("eval", "identification", lfw_like, "--embeddings", cache, "--detector",
                  "hog", "--min-images", str(MIN_IMAGES), "--seed", "3", "--strangers", "100",
                  "--json", models=models_dir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    same = evaluate_identification(pipeline, lfw_like, seed=3, strangers=100,
                                   min_images=MIN_IMAGES, cache_path=cache)
    assert report["model"] == pipeline.model_id
    assert report["rank1"] == same.rank1 and report["probes"] == same.probes
    assert report["thresholds"]["known"]["value"] == round(same.thresholds.known.value, 4)
    assert any("reused" in note for note in report["cache_notes"])


def _annotations(faces_csv: Path, photos: set[str]) -> dict[str, list[dict[str, str]]]:
    rows: dict[str, list[dict[str, str]]] = {}
    with open(faces_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["path"] in photos:
                rows.setdefault(row["path"], []).append(row)
    return rows


def test_groups_figures_match_the_boxes(pipeline: Pipeline) -> None:
    faces_csv = FACES / "groups" / "faces.csv"
    photos = {"group_photos/longoria_cooper.jpg", "group_photos/obama_family.jpg",
              "group_photos/zuckerberg_chan.jpg", "group_photos/office_cpr.jpg"}
    gallery, open_set = read_gallery_csv(FACES / "groups" / "gallery.csv")
    assert "Priscilla_Chan" in open_set and "Priscilla_Chan" not in gallery
    assert all(p.is_file() for paths in gallery.values() for p in paths)
    result = evaluate_groups(pipeline, faces_csv, gallery, photos=photos)
    assert result.gallery_identities == 15 and not result.gallery_no_face

    annotated = _annotations(faces_csv, photos)
    found = annotated_total = 0
    for photo in result.photos:
        rows = annotated[photo.path]
        annotated_total += len(rows)
        boxes = [tuple(int(r[k]) for k in "xywh") for r in rows]
        # Greedy by IoU, one box per face, by hand.
        pairs = sorted(((iou(a, d.box), i, j) for i, a in enumerate(boxes)
                        for j, d in enumerate(photo.detected)), reverse=True)
        used_a, used_d = set(), set()
        for overlap, i, j in pairs:
            if overlap >= 0.4 and i not in used_a and j not in used_d:
                used_a.add(i)
                used_d.add(j)
        found += len(used_a)
        assert [f.detected is not None for f in photo.faces] == \
            [i in used_a for i in range(len(rows))]
        assert len(photo.unmatched) == len(photo.detected) - len(used_d)
    summary = result.summary()
    assert (summary.found, summary.annotated) == (found, annotated_total) == (found, 12)
    # HOG made the boxes of the first three photos: HOG finds all 8 of their faces.
    assert all(f.detected is not None for photo in result.photos for f in photo.faces
               if "office" not in photo.path)

    by_identity = {f.face.identity: f for photo in result.photos for f in photo.faces
                   if f.face.identity != "unknown"}
    for name in ("Bradley_Cooper", "Eva_Longoria", "Michelle_Obama", "barack_obama",
                 "Mark_Zuckerberg"):
        face = by_identity[name]
        assert face.enrolled and face.known_right and face.name == name, name
    chan = by_identity["Priscilla_Chan"]
    assert chan.stranger and chan.detected is not None and chan.status != KNOWN
    faces = [f for photo in result.photos for f in photo.faces]
    found_enrolled = [f for f in faces if f.enrolled and f.detected is not None]
    assert summary.known_right.count == sum(f.known_right for f in found_enrolled)
    assert summary.known_right.of == len(found_enrolled)
    assert summary.strangers_named.count == sum(
        f.status != UNKNOWN for f in faces if f.stranger and f.detected is not None)
    assert summary.strangers_known.count == 0
    report = result.as_dict()
    assert report["detection_recall"] == round(found / annotated_total, 4)
    json.dumps(report)  # a plain JSON object


def test_groups_with_a_gallery_folder(pipeline: Pipeline, tmp_path: Path) -> None:
    # shared/faces/group_photos/faces.csv names its photos from shared/faces.
    for name in ("kit_harington", "rose_leslie", "alex_lacamoire"):
        (tmp_path / name).symlink_to(FACES / "identities" / name)
    gallery = read_gallery_dir(tmp_path)
    assert sorted(gallery) == ["alex_lacamoire", "kit_harington", "rose_leslie"]
    result = evaluate_groups(pipeline, FACES / "group_photos" / "faces.csv", gallery,
                             photos={"group_photos/kit_with_rose.jpg",
                                     "group_photos/2008_001322.jpg"})
    assert not result.errors
    faces = {f.face.identity: f for photo in result.photos for f in photo.faces}
    assert faces["kit_harington"].known_right and faces["rose_leslie"].known_right
    strangers = [f for photo in result.photos for f in photo.faces if f.stranger]
    assert len(strangers) == 3 and all(f.status != KNOWN for f in strangers)


def test_pair_boxes_is_greedy_and_one_to_one() -> None:
    annotated = [(0, 0, 10, 10), (5, 0, 10, 10)]
    detected = [(4, 0, 10, 10), (100, 100, 5, 5)]
    # Detected box 0 overlaps annotated 1 more (IoU 0.82) than annotated 0 (0.43).
    assert pair_boxes(annotated, detected) == {1: (0, pytest.approx(9 * 10 / 110))}


def test_cli_groups_wants_one_gallery(models_dir: Path) -> None:
    done = faceid("eval", "groups", FACES / "groups" / "faces.csv",
                  FACES / "groups" / "gallery.csv", "--gallery-dir", FACES / "identities",
                  models=models_dir)
    assert done.returncode == 2 and "either" in done.stderr
