"""How well a clustering of faces recovers the people in them: the evaluation behind
``faceid eval clusters DIR``.

Two standard scores, both computed from the contingency table of (identity, cluster) counts
rather than from the n² pairs, so 10⁴ faces cost milliseconds:

* **pairwise** precision / recall / F: of the pairs of faces put in one cluster, the share that
  are one person; of the pairs that are one person, the share put in one cluster. Pairs grow
  with the square of a cluster's size, so this is dominated by the big clusters — and one
  wrong merge of two big groups shows up at once, which is what the precision target guards.
* **BCubed** precision / recall / F (Amigó et al. 2009, "A comparison of extrinsic clustering
  evaluation metrics"): per face, the share of its cluster that is its person (precision) and
  the share of its person that is in its cluster (recall), averaged over faces. Every face
  weighs the same, so it rewards getting the many small groups right.

Label convention (every function here): ``labels`` holds one int per face; ``-1`` means "not
clustered", i.e. a cluster of its own — two ``-1`` faces are *not* one cluster. That is what
an app showing only groups of two or more amounts to, and how HDBSCAN / DBSCAN mark noise.

Baselines run on the same unit vectors: dlib's Chinese whispers, scikit-learn's HDBSCAN and
DBSCAN (scikit-learn is the optional ``eval`` extra, imported only when a baseline runs).
faceid's own clusterer is one more method (:func:`faceid_method`), so the CLI compares them
on equal terms: every method is a callable ``(vectors, param) -> labels`` plus a parameter
grid, scored at every grid point by :func:`evaluate_clustering`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceid_tui.bank.thresholds import GROUP_PAIR_BUDGET
from faceid_tui.triage.clustering import HUB_WEIGHT

#: The pairwise precision a usable operating point must reach: a wrong merge (two people
#: shown as one) costs the user more than a split, so methods are compared at this precision.
MIN_PRECISION = 0.99


@dataclass(frozen=True)
class ClusterScores:
    precision: float
    recall: float
    f: float

    def as_dict(self) -> dict[str, float]:
        return {"precision": self.precision, "recall": self.recall, "f": self.f}


@dataclass(frozen=True)
class Clustering:
    """What a baseline returns: a label per face and the seconds the clustering took."""

    labels: np.ndarray
    seconds: float


#: A clustering method under test: ``run(vectors, param)`` gives a label per face (or a
#: :class:`Clustering`, whose own timing then replaces the wall time around the call).
ClusterRun = Callable[[np.ndarray, Any], "np.ndarray | Clustering"]


@dataclass(frozen=True)
class ClusterMethod:
    """A method and the parameter values to try (JSON-able: numbers or small dicts)."""

    run: ClusterRun
    grid: Sequence[Any]
    #: What ``param`` means, for the report (e.g. "cosine threshold").
    param_name: str = "param"


# -- scores ------------------------------------------------------------------------------------
def _singletons_apart(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every ``-1`` replaced by a fresh label of its own (a singleton)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    alone = labels < 0
    # Fresh labels above every real one, so a -1 face never joins a real cluster or another -1.
    start = int(labels.max(initial=-1)) + 1
    labels[alone] = start + np.arange(int(alone.sum()))
    return labels


def _contingency(truth: Sequence[Hashable] | np.ndarray,
                 labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(cell, cell_of_item, class_size_of_item, cluster_size_of_item)``: the non-empty cells
    of the identity × cluster table, and for each face the index of its cell and the sizes of
    its identity and of its cluster."""
    labels = _singletons_apart(labels)
    _, true_ids = np.unique(np.asarray(truth), return_inverse=True)
    true_ids = true_ids.ravel()
    if len(true_ids) != len(labels):
        raise ValueError(f"{len(true_ids)} identities for {len(labels)} labels")
    _, cluster_ids = np.unique(labels, return_inverse=True)
    cluster_ids = cluster_ids.ravel()
    # One int per (identity, cluster) pair; np.unique counts the cells without a dense table
    # (4k identities × 8k clusters would be 34M mostly empty cells).
    pair = true_ids * (int(cluster_ids.max(initial=0)) + 1) + cluster_ids
    _, cell_of_item, cell = np.unique(pair, return_inverse=True, return_counts=True)
    class_size = np.bincount(true_ids)[true_ids]
    cluster_size = np.bincount(cluster_ids)[cluster_ids]
    return cell, cell_of_item.ravel(), class_size, cluster_size


def _f(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, dtype=np.int64)
    return int((counts * (counts - 1) // 2).sum())


def pairwise_scores(truth: Sequence[Hashable] | np.ndarray, labels: np.ndarray) -> ClusterScores:
    """Pair-counting precision / recall / F (each unordered pair of faces once).

    With no pair put together, precision is 1 (no claim made, none wrong); with no pair of one
    identity, recall is 1 (nothing to find). Both conventions keep "everything a singleton"
    scoring P = 1, R = 0 on real data rather than a division by zero.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return ClusterScores(1.0, 1.0, 1.0)
    cell, _, class_size, cluster_size = _contingency(truth, labels)
    together = _pairs(cell)  # same identity and same cluster
    # Item-level sizes list each class / cluster once per member: sum C(s, 2) / s per item.
    clustered = _pairs_from_item_sizes(cluster_size)
    same = _pairs_from_item_sizes(class_size)
    precision = together / clustered if clustered else 1.0
    recall = together / same if same else 1.0
    return ClusterScores(precision, recall, _f(precision, recall))


def _pairs_from_item_sizes(size_of_item: np.ndarray) -> int:
    """Σ over groups of C(size, 2), from each item's group size (a group of s appears s
    times, each contributing (s − 1) / 2)."""
    size_of_item = np.asarray(size_of_item, dtype=np.int64)
    return int((size_of_item - 1).sum()) // 2


def bcubed_scores(truth: Sequence[Hashable] | np.ndarray, labels: np.ndarray) -> ClusterScores:
    """BCubed precision / recall averaged over faces, F their harmonic mean (Amigó et al.)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return ClusterScores(1.0, 1.0, 1.0)
    cell, cell_of_item, class_size, cluster_size = _contingency(truth, labels)
    # A face's correct companions (itself included) are the faces of its cell.
    correct = cell[cell_of_item].astype(np.float64)
    precision = float(np.mean(correct / cluster_size))
    recall = float(np.mean(correct / class_size))
    return ClusterScores(precision, recall, _f(precision, recall))


# -- the data set ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClusterDataset:
    """What there is to find: a clustering can only pair faces of people seen twice or more."""

    faces: int
    identities: int
    identities_with_pairs: int  # identities with >= 2 faces
    singleton_faces: int  # faces whose identity has no other face
    genuine_pairs: int

    @property
    def singleton_share(self) -> float:
        return self.singleton_faces / self.faces if self.faces else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"faces": self.faces, "identities": self.identities,
                "identities_with_pairs": self.identities_with_pairs,
                "singleton_faces": self.singleton_faces,
                "singleton_share": self.singleton_share, "genuine_pairs": self.genuine_pairs}


def describe_dataset(identities: Sequence[Hashable] | np.ndarray) -> ClusterDataset:
    _, counts = np.unique(np.asarray(identities), return_counts=True)
    return ClusterDataset(faces=int(counts.sum()), identities=len(counts),
                          identities_with_pairs=int((counts >= 2).sum()),
                          singleton_faces=int((counts == 1).sum()),
                          genuine_pairs=_pairs(counts))


# -- baselines ---------------------------------------------------------------------------------
def cosine_to_euclidean(cosine: float) -> float:
    """Distance between unit vectors whose cosine similarity is ``cosine``: √(2 − 2·cos)."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * float(cosine)))


def chinese_whispers(vectors: np.ndarray, cosine: float) -> Clustering:
    """dlib's Chinese whispers: faces closer than the threshold are linked, then labels spread
    along the links (so it chains, like single linkage). Every face gets a label; a face with
    no link is a cluster of one."""
    import dlib

    # dlib wants its own vector type; the conversion is part of using it, so it is timed.
    start = time.perf_counter()
    descriptors = [dlib.vector(row) for row in np.asarray(vectors, dtype=np.float64).tolist()]
    labels = dlib.chinese_whispers_clustering(descriptors, cosine_to_euclidean(cosine))
    return Clustering(np.asarray(labels, dtype=np.int64), time.perf_counter() - start)


def hdbscan(vectors: np.ndarray, param: int | Mapping[str, Any]) -> Clustering:
    """scikit-learn's HDBSCAN, Euclidean on unit vectors (the order of cosine distances).
    It has no distance threshold: ``param`` is ``min_cluster_size``, or ``{"min_cluster_size":
    m, "selection": "eom" | "leaf"}`` ("leaf" keeps the finest clusters, for precision)."""
    from sklearn.cluster import HDBSCAN

    if not isinstance(param, Mapping):
        param = {"min_cluster_size": param}
    vectors = np.asarray(vectors, dtype=np.float64)
    start = time.perf_counter()
    # "brute": at 8.5k × 640 dims a full distance matrix (0.6 GB) is much faster than KD /
    # ball trees, which degrade to scanning everything in this many dimensions. copy=True
    # states scikit-learn's future default and keeps our array untouched.
    model = HDBSCAN(min_cluster_size=int(param["min_cluster_size"]), algorithm="brute",
                    cluster_selection_method=str(param.get("selection", "eom")), copy=True)
    labels = model.fit_predict(vectors)
    return Clustering(np.asarray(labels, dtype=np.int64), time.perf_counter() - start)


def dbscan(vectors: np.ndarray, param: Mapping[str, float]) -> Clustering:
    """scikit-learn's DBSCAN; ``param`` is ``{"cosine": c, "min_samples": m}`` and eps the
    Euclidean distance of cosine ``c``. Noise faces (-1) are singletons."""
    from sklearn.cluster import DBSCAN

    vectors = np.asarray(vectors, dtype=np.float32)
    start = time.perf_counter()
    model = DBSCAN(eps=cosine_to_euclidean(param["cosine"]),
                   min_samples=int(param["min_samples"]), algorithm="brute", n_jobs=2)
    labels = model.fit_predict(vectors)
    return Clustering(np.asarray(labels, dtype=np.int64), time.perf_counter() - start)


def cosine_grid(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, … ≤ high``, rounded so the values print and compare cleanly."""
    count = round((high - low) / step) + 1
    return [round(low + i * step, 4) for i in range(count)]


def baseline_methods(cosines: Sequence[float] | None = None) -> dict[str, ClusterMethod]:
    """The three baselines and their grids. ``cosines``: the similarity thresholds to sweep for
    the two threshold methods; the default spans the fused facenet+dlib model's scale, whose
    impostor scores are high (on LFW the median impostor pair scores 0.76, 1 in 10⁴ above 0.905;
    single-linkage methods chain at anything much lower)."""
    cosines = list(cosines) if cosines is not None else cosine_grid(0.88, 0.985, 0.005)
    return {
        "chinese-whispers": ClusterMethod(chinese_whispers, cosines, "cosine threshold"),
        "hdbscan": ClusterMethod(
            hdbscan, [{"min_cluster_size": m, "selection": how}
                      for how in ("eom", "leaf") for m in (2, 3, 5)],
            "min_cluster_size, selection"),
        "dbscan": ClusterMethod(
            dbscan, [{"cosine": c, "min_samples": m} for m in (2, 3) for c in cosines],
            "cosine eps, min_samples"),
    }


#: faceid's points: its defaults first (what the app uses), then other pair budgets, and
#: without the hub correction (plain average linkage) to show what the correction buys.
FACEID_GRID: list[dict[str, float]] = [
    {"budget": GROUP_PAIR_BUDGET, "hub": HUB_WEIGHT},
    *({"budget": b, "hub": HUB_WEIGHT} for b in (0.2, 0.3, 0.42, 0.6, 1.0)),
    *({"budget": b, "hub": 0.0} for b in (0.02, 0.05, 0.1, 0.42)),
]
#: The defaults with the faces arriving in three random orders (seeds 0–2): how much the
#: groups depend on who arrives first.
SHUFFLED_GRID: list[dict[str, float]] = [
    {"budget": GROUP_PAIR_BUDGET, "hub": HUB_WEIGHT, "shuffle": seed} for seed in range(3)]


def faceid_method(model_id: str, photo_keys: Sequence[Hashable] | None,
                  grid: Sequence[Mapping[str, float]], *,
                  chunk: int | None = None) -> ClusterMethod:
    """faceid's own grouping (:mod:`faceid_tui.triage.clustering`) as one more method: the
    hook ``faceid eval clusters`` adds to :func:`baseline_methods`. Each grid point is a
    ``{"budget": …, "hub": …}``: the pair budget that sets the merge threshold for this many
    faces (:func:`~faceid_tui.bank.thresholds.group_threshold`) and the hub correction's
    weight, and optionally ``"shuffle": seed``: the faces arrive in that random order instead
    of the folder's (LFW's is by name, so a person's photos come together; a real drop's need
    not). ``photo_keys`` say which faces share a photo (never one person); ``chunk`` adds the
    faces that many at a time, as the app does (None: all at once)."""

    def run(vectors: np.ndarray, param: Mapping[str, float]) -> np.ndarray:
        from faceid_tui.bank.thresholds import group_threshold
        from faceid_tui.triage.clustering import cluster_vectors

        def threshold(faces: int) -> float:
            return group_threshold(model_id, faces, float(param["budget"])).value

        order = np.arange(len(vectors))
        if "shuffle" in param:
            order = np.random.default_rng(int(param["shuffle"])).permutation(len(vectors))
        keys = None if photo_keys is None else [photo_keys[i] for i in order]
        labels = np.empty(len(vectors), dtype=np.int64)
        labels[order] = cluster_vectors(vectors[order], keys, threshold,
                                        hub_weight=float(param["hub"]), chunk=chunk)
        return labels

    return ClusterMethod(run, list(grid), "pair budget, hub weight")


# -- operating points --------------------------------------------------------------------------
@dataclass(frozen=True)
class OperatingPoint:
    method: str
    param: Any
    pairwise: ClusterScores
    bcubed: ClusterScores
    seconds: float
    clusters: int  # clusters of two or more faces
    clustered_faces: int  # faces in those clusters

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "param": self.param,
                "pairwise": self.pairwise.as_dict(), "bcubed": self.bcubed.as_dict(),
                "seconds": self.seconds, "clusters": self.clusters,
                "clustered_faces": self.clustered_faces}


def _run_timed(run: ClusterRun, vectors: np.ndarray, param: Any) -> Clustering:
    start = time.perf_counter()
    out = run(vectors, param)
    if isinstance(out, Clustering):
        return out
    return Clustering(np.asarray(out, dtype=np.int64), time.perf_counter() - start)


def score_point(method: str, param: Any, truth: Sequence[Hashable] | np.ndarray,
                clustering: Clustering) -> OperatingPoint:
    labels = _singletons_apart(clustering.labels)
    _, sizes = np.unique(labels, return_counts=True)
    return OperatingPoint(method=method, param=param,
                          pairwise=pairwise_scores(truth, labels),
                          bcubed=bcubed_scores(truth, labels), seconds=clustering.seconds,
                          clusters=int((sizes >= 2).sum()),
                          clustered_faces=int(sizes[sizes >= 2].sum()))


def operating_points(name: str, method: ClusterMethod, vectors: np.ndarray,
                     truth: Sequence[Hashable] | np.ndarray,
                     on_point: Callable[[OperatingPoint], None] | None = None,
                     ) -> list[OperatingPoint]:
    """Run ``method`` at every value of its grid and score each run. ``on_point`` is called
    after each run (a progress line: a sweep can take minutes)."""
    points = []
    for param in method.grid:
        point = score_point(name, param, truth, _run_timed(method.run, vectors, param))
        points.append(point)
        if on_point is not None:
            on_point(point)
    return points


def best_at_precision(points: Sequence[OperatingPoint],
                      min_precision: float = MIN_PRECISION) -> OperatingPoint | None:
    """The point with the best BCubed F among those with pairwise precision ≥
    ``min_precision`` (None when none reaches it). Ties go to the earlier point."""
    usable = [p for p in points if p.pairwise.precision >= min_precision]
    return max(usable, key=lambda p: p.bcubed.f, default=None)


def best_overall(points: Sequence[OperatingPoint]) -> OperatingPoint | None:
    """The point with the best BCubed F, whatever its precision."""
    return max(points, key=lambda p: p.bcubed.f, default=None)


# -- the whole comparison ----------------------------------------------------------------------
@dataclass
class ClusterEvaluation:
    dataset: ClusterDataset
    min_precision: float
    points: dict[str, list[OperatingPoint]] = field(default_factory=dict)

    def best(self, method: str) -> OperatingPoint | None:
        """``method``'s best point at the precision target."""
        return best_at_precision(self.points[method], self.min_precision)

    def best_any(self, method: str) -> OperatingPoint | None:
        return best_overall(self.points[method])

    def seconds(self, method: str) -> float:
        """Time of all of ``method``'s runs together."""
        return float(sum(p.seconds for p in self.points[method]))

    def as_dict(self) -> dict[str, Any]:
        def point(p: OperatingPoint | None) -> dict[str, Any] | None:
            return None if p is None else p.as_dict()

        return {
            "dataset": self.dataset.as_dict(),
            "min_precision": self.min_precision,
            "methods": {
                name: {"best_at_precision": point(self.best(name)),
                       "best_f": point(self.best_any(name)),
                       "seconds": self.seconds(name),
                       "points": [p.as_dict() for p in points]}
                for name, points in self.points.items()
            },
        }


def evaluate_clustering(vectors: np.ndarray, identities: Sequence[Hashable] | np.ndarray,
                        methods: Mapping[str, ClusterMethod] | None = None,
                        min_precision: float = MIN_PRECISION,
                        on_point: Callable[[OperatingPoint], None] | None = None,
                        ) -> ClusterEvaluation:
    """Every method over its grid on the same faces (``vectors``: one unit row per face,
    ``identities``: the person of each). ``methods`` defaults to :func:`baseline_methods`;
    the CLI passes those plus ``{"faceid": faceid_method(...)}``."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(vectors) != len(identities):
        raise ValueError(f"{len(vectors)} vectors for {len(identities)} identities")
    methods = baseline_methods() if methods is None else methods
    result = ClusterEvaluation(describe_dataset(identities), min_precision)
    for name, method in methods.items():
        result.points[name] = operating_points(name, method, vectors, identities, on_point)
    return result
