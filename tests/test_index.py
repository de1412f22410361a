"""Index-backed matching agrees with exact matching; small banks stay on the exact path."""

from __future__ import annotations

import numpy as np
import pytest

import faceid_tui.bank.index as index_module
import faceid_tui.bank.matching as matching
from faceid_tui.bank.index import CANDIDATE_SAMPLES, INDEX_MIN_SAMPLES, build_index
from faceid_tui.bank.matching import BEST_SAMPLE, CENTROID, MISSING_SCORE, FaceMatch, Matcher

DIM = 512
BANK_SAMPLES = 20_000
SAMPLES_PER_IDENTITY = 3
# Cosine ~0.8 to the source sample, a same-person similarity for FaceNet. Random vectors are
# the hardest data for a graph index: at cosine 0.7 about 1 query in 1,000 misses its source
# (see benchmarks/bank_size.py), which would make an exact-agreement test a lottery.
NOISE = 0.75


def unit_rows(rng: np.random.Generator, count: int, dim: int = DIM) -> np.ndarray:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def noisy_copies(rng: np.random.Generator, rows: np.ndarray, noise: float) -> np.ndarray:
    """Rows moved by a random vector of norm ``noise`` (cosine ~ 1/sqrt(1+noise²))."""
    moved = rows + noise * unit_rows(rng, len(rows), rows.shape[1])
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def bank() -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(6)
    samples = unit_rows(rng, BANK_SAMPLES)
    # Names in shuffled order, so the matcher's sort by identity really reorders rows.
    names = [f"id{i // SAMPLES_PER_IDENTITY:05d}" for i in rng.permutation(BANK_SAMPLES)]
    return names, samples


@pytest.fixture(scope="module")
def matchers(bank: tuple[list[str], np.ndarray]) -> tuple[Matcher, Matcher]:
    names, samples = bank
    # Best-sample scoring: the index then searches every sample (the harder case; with
    # centroids it searches one row per identity).
    exact = Matcher(names, samples, index_min_samples=BANK_SAMPLES + 1, scoring=BEST_SAMPLE)
    approximate = Matcher(names, samples, index_min_samples=1_000, scoring=BEST_SAMPLE)
    assert not exact.uses_index and exact.sample_index is None
    assert approximate.uses_index and approximate.sample_index is not None
    return exact, approximate


def same_decision(a: FaceMatch, b: FaceMatch) -> bool:
    return a.name == b.name and a.status == b.status


def test_noisy_copies_get_the_same_identity_as_exact(
        bank: tuple[list[str], np.ndarray], matchers: tuple[Matcher, Matcher]) -> None:
    names, samples = bank
    exact, approximate = matchers
    rng = np.random.default_rng(1)
    picked = rng.choice(BANK_SAMPLES, size=300, replace=False)
    queries = noisy_copies(rng, samples[picked], noise=NOISE)
    for source, query in zip(picked, queries, strict=True):
        (want,) = exact.match_photo(query[None])
        (got,) = approximate.match_photo(query[None])
        assert want.status == "known" and want.name == names[source]
        assert same_decision(got, want)
        assert got.score == pytest.approx(want.score, abs=1e-5)
        # Runner-ups among random vectors are noise the index need not find in order, but
        # it only proposes real samples: never a runner-up better than exact search's.
        assert len(got.candidates) == len(want.candidates) == approximate.top_k
        assert got.margin is not None and want.margin is not None
        assert got.margin >= want.margin - 1e-5


def test_several_faces_in_one_photo_match_as_exact(
        bank: tuple[list[str], np.ndarray], matchers: tuple[Matcher, Matcher]) -> None:
    _, samples = bank
    exact, approximate = matchers
    rng = np.random.default_rng(2)
    for _ in range(30):
        picked = rng.choice(BANK_SAMPLES, size=5, replace=False)
        # Two faces of one sample: the conflict rule must act the same way.
        picked[1] = picked[0]
        photo = noisy_copies(rng, samples[picked], noise=NOISE)
        want = exact.match_photo(photo)
        got = approximate.match_photo(photo)
        assert [(m.name, m.status) for m in got] == [(m.name, m.status) for m in want]


def test_strangers_stay_unknown(matchers: tuple[Matcher, Matcher]) -> None:
    exact, approximate = matchers
    strangers = unit_rows(np.random.default_rng(3), 100)
    want = exact.match_photo(strangers[:1]) + exact.match_photo(strangers[1:])
    got = approximate.match_photo(strangers[:1]) + approximate.match_photo(strangers[1:])
    for a, b in zip(got, want, strict=True):
        assert a.status == b.status == "unknown"
        assert a.name is b.name is None
        # The index only proposes samples that exact search would also score.
        assert a.score is not None and b.score is not None and a.score <= b.score + 1e-5
        assert len(a.candidates) == approximate.top_k


def test_identity_scores_through_the_index(
        bank: tuple[list[str], np.ndarray], matchers: tuple[Matcher, Matcher]) -> None:
    _, samples = bank
    exact, approximate = matchers
    rng = np.random.default_rng(4)
    queries = noisy_copies(rng, samples[rng.choice(BANK_SAMPLES, size=20)], noise=NOISE)
    want = exact.identity_scores(queries)
    got = approximate.identity_scores(queries)
    assert got.shape == want.shape == (20, len(exact.identities))
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
    assert np.allclose(got.max(axis=1), want.max(axis=1), atol=1e-5)
    proposed = got != MISSING_SCORE
    # Only the identities of the CANDIDATE_SAMPLES proposals are scored, each by its best
    # proposed sample: at most its exact score (its best sample may not be proposed).
    assert (proposed.sum(axis=1) <= CANDIDATE_SAMPLES).all() and proposed.any(axis=1).all()
    assert (got[proposed] <= want[proposed] + 1e-5).all()
    # A name chosen by hand gets its exact score even when the index did not propose it.
    stranger = approximate.identities[int(np.argmin(want[0]))]
    assert approximate.identity_score(queries[0], stranger) == pytest.approx(
        float(want[0].min()), abs=1e-5)


def test_a_crowded_identity_falls_back_to_exact_scores() -> None:
    rng = np.random.default_rng(5)
    # 200 near-identical samples of one person take every proposal the index makes.
    crowd = noisy_copies(rng, np.repeat(unit_rows(rng, 1), 200, axis=0), noise=0.1)
    others = unit_rows(rng, 1_800)
    names = ["crowd"] * len(crowd) + [f"id{i}" for i in range(len(others))]
    samples = np.concatenate([crowd, others])
    query = noisy_copies(rng, crowd[:1], noise=0.5)
    (want,) = Matcher(names, samples, index_min_samples=len(samples) + 1,
                      scoring=BEST_SAMPLE).match_photo(query)
    (got,) = Matcher(names, samples, index_min_samples=1, scoring=BEST_SAMPLE).match_photo(query)
    assert got.name == want.name == "crowd"
    assert got.status == want.status
    assert got.candidates == want.candidates and len(got.candidates) == 3


def test_small_banks_never_build_an_index(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a small bank built an index")

    monkeypatch.setattr(matching, "build_index", refuse)
    rng = np.random.default_rng(7)
    samples = unit_rows(rng, 1_000)
    matcher = Matcher([f"id{i // 3}" for i in range(len(samples))], samples,
                      scoring=BEST_SAMPLE)
    assert len(samples) < INDEX_MIN_SAMPLES
    assert not matcher.uses_index and matcher.sample_index is None
    (match,) = matcher.match_photo(noisy_copies(rng, samples[:1], noise=NOISE))
    assert match.name == "id0" and match.status == "known"


def reference_matches(matcher: Matcher, queries: np.ndarray) -> list[tuple[object, ...]]:
    """Exact matching done the slow way: every identity of every face ranked by a full sort
    (each face keeps its own ranking: the faces of a photo never take identities away)."""
    scores = matcher.identity_scores(queries)
    return [tuple((matcher.identities[j], float(row[j]))
                  for j in np.argsort(-row, kind="stable")[: matcher.top_k]) for row in scores]


def test_exact_path_ranks_like_a_full_sort_even_with_ties() -> None:
    rng = np.random.default_rng(8)
    # Few distinct directions in 4-d give many exactly equal scores between identities.
    directions = unit_rows(rng, 6, dim=4)
    samples = directions[rng.integers(0, len(directions), size=300)]
    matcher = Matcher([f"id{i % 97}" for i in range(len(samples))], samples, threshold=0.2)
    assert not matcher.uses_index
    for faces in (1, 2, 4, 8):
        photo = directions[rng.integers(0, len(directions), size=faces)]
        got = [tuple((c.name, c.score) for c in m.candidates) for m in matcher.match_photo(photo)]
        assert got == reference_matches(matcher, photo)


def test_index_search_pads_missing_results() -> None:
    samples = unit_rows(np.random.default_rng(9), 5, dim=8)
    rows = build_index(samples).search(samples[:2], 8)
    assert rows.shape == (2, 5)
    assert (rows[:, 0] == [0, 1]).all()
    assert sorted(rows[0].tolist()) == [0, 1, 2, 3, 4]


def test_every_indexed_row_is_found_by_its_own_vector(monkeypatch: pytest.MonkeyPatch) -> None:
    # usearch's concurrent add left 1-5 rows of such an index unreachable on 2 cores
    # (unum-cloud/USearch#735); searching may use every thread, building must not.
    monkeypatch.setattr(index_module, "THREADS", 0)
    rows = unit_rows(np.random.default_rng(11), 2_000, dim=64)
    found = build_index(rows).search(rows, CANDIDATE_SAMPLES)
    unreachable = np.flatnonzero((found != np.arange(len(rows))[:, None]).all(axis=1))
    assert unreachable.tolist() == []


def test_centroids_through_the_index_match_exact_centroids() -> None:
    rng = np.random.default_rng(10)
    # 2,000 people of 3 samples each around their own direction, as real faces cluster.
    people = unit_rows(rng, 2_000, dim=64)
    samples = noisy_copies(rng, np.repeat(people, 3, axis=0), noise=0.5)
    names = [f"id{i // 3:04d}" for i in range(len(samples))]
    exact = Matcher(names, samples, index_min_samples=len(samples) + 1, scoring=CENTROID)
    approximate = Matcher(names, samples, index_min_samples=1_000, scoring=CENTROID)
    # One row per identity is indexed, not one per sample.
    assert approximate.uses_index and not exact.uses_index
    assert approximate.sample_count == len(samples)
    queries = noisy_copies(rng, people[:200], noise=0.6)
    for number, query in enumerate(queries):
        (want,) = exact.match_photo(query[None])
        (got,) = approximate.match_photo(query[None])
        assert want.name == got.name == f"id{number:04d}"
        assert got.score == pytest.approx(want.score, abs=1e-5)
