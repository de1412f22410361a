"""Open-set evaluations a user can run: identification on LFW and annotated group photos.

Both embed through the real :class:`~faceid_tui.engine.pipeline.Pipeline` and match with the
real :class:`~faceid_tui.bank.matching.Matcher` at the thresholds faceid would put in force
for the bank they build (:func:`policy_thresholds`), so their figures measure what a user gets.

* :func:`evaluate_identification` (``faceid eval identification DIR``): a k-shot gallery of
  the LFW people with at least ``min_images`` images, their other images as probes (mated
  searches) and one image of each person with fewer as strangers (non-mated searches; one
  image per person, so every stranger search is a different person). Rank-1, TPIR at fixed
  FPIR read off the strangers, and the tiers the matcher gives probes and strangers.
* :func:`evaluate_groups` (``faceid eval groups FACES_CSV GALLERY_CSV``): enrol a gallery,
  run the pipeline on annotated group photos, pair detected boxes with the annotated faces
  (IoU ≥ :data:`MATCH_IOU`, greedy) and count who was named how.

:func:`load_or_embed_lfw` embeds LFW images (largest face, centre crop when none is found)
and keeps the vectors in an ``.npz`` cache keyed by model id and detector, since embedding
all 8,476 images takes about ten minutes on two cores.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid_tui.bank.matching import (
    AMBIGUOUS,
    KNOWN,
    LIKELY,
    TIERS,
    UNKNOWN,
    FaceMatch,
    Matcher,
    matched_chunks,
)
from faceid_tui.bank.thresholds import (
    DEFAULT_FPIR,
    BankThresholds,
    ThresholdChoice,
    bank_thresholds,
)
from faceid_tui.engine.decode import is_image_name
from faceid_tui.engine.pipeline import PhotoResult, Pipeline
from faceid_tui.errors import FaceIdError
from faceid_tui.fsutil import atomic_write_bytes

#: LFW people with at least this many images are enrolled (the usual open-set protocol).
MIN_IMAGES = 5
DEFAULT_SHOTS = 1
DEFAULT_STRANGERS = 1000
#: FPIRs at which TPIR is read off the strangers' best scores.
REPORT_FPIRS = (0.01, 0.001)
#: A detected box and an annotated face are the same face at this IoU or more.
MATCH_IOU = 0.4
CACHE_FORMAT = 1
#: Images embedded between two writes of the cache, so an interrupted run keeps its work.
CACHE_CHECKPOINT = 1000

OnPhoto = Callable[[], None]


# -- thresholds in force ----------------------------------------------------------------------
def policy_thresholds(model_id: str, identities: int, samples: int,
                      fpir: float = DEFAULT_FPIR,
                      threshold: float | None = None) -> BankThresholds:
    """The thresholds faceid uses for a bank of ``identities`` identities and ``samples``
    samples (``threshold``: the user's ``--threshold``, which replaces ``known``)."""
    chosen = bank_thresholds(model_id, identities, samples, fpir)
    if threshold is not None:
        chosen = dataclasses.replace(
            chosen, known=ThresholdChoice(threshold, "--threshold", "given by the user"))
    return chosen


def make_matcher(names: list[str], vectors: np.ndarray, policy: BankThresholds,
                 ambiguous_margin: float | None = None) -> Matcher:
    """The matcher the policy gives (``ambiguous_margin``: the user's, else the model's)."""
    margin = policy.margin if ambiguous_margin is None else ambiguous_margin
    return Matcher(names, vectors, threshold=policy.known.value,
                   likely_threshold=policy.likely.value, ambiguous_margin=margin)


def shows_name(match: FaceMatch, truth: str) -> bool:
    """Whether the user sees ``truth`` for this face: the name in every named tier, and for
    ``ambiguous`` (two names offered) ``truth`` among the top two candidates."""
    if match.status == UNKNOWN:
        return False
    if match.status == AMBIGUOUS:
        return truth in [candidate.name for candidate in match.candidates[:2]]
    return match.name == truth


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


# -- LFW embeddings and their cache -----------------------------------------------------------
def lfw_images_dir(lfw_dir: Path) -> Path:
    lfw_dir = Path(lfw_dir)
    return lfw_dir / "images" if (lfw_dir / "images").is_dir() else lfw_dir


def list_lfw_images(lfw_dir: Path) -> dict[str, list[str]]:
    """person -> their image paths relative to ``lfw_dir`` (as in pairs.csv), sorted."""
    lfw_dir = Path(lfw_dir)
    people: dict[str, list[str]] = {}
    for folder in sorted(p for p in lfw_images_dir(lfw_dir).iterdir()
                         if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p.relative_to(lfw_dir).as_posix() for p in folder.iterdir()
                        if p.is_file() and is_image_name(p))
        if images:
            people[folder.name] = images
    return people


def detector_key(pipeline: Pipeline) -> str:
    """The detector and the options that change which boxes it finds."""
    options = pipeline.options.detector_options
    key = pipeline.options.detector
    if options.upsample is not None:
        key += f"/upsample={options.upsample}"
    if options.min_face_size is not None:
        key += f"/min_face={options.min_face_size}"
    return key


@dataclass
class LfwEmbeddings:
    """One vector per image (largest face; centre crop when none was found)."""

    paths: list[str]  # relative to the LFW folder
    vectors: np.ndarray  # float32, N × D, L2-normalised
    identities: list[str]
    no_face: np.ndarray  # bool per image: embedded from the centre crop
    errors: dict[str, str] = field(default_factory=dict)  # images that could not be read
    notes: list[str] = field(default_factory=list)  # what happened to the cache
    embedded_now: int = 0  # images this call embedded (the others came from the cache)

    @property
    def no_face_count(self) -> int:
        return int(self.no_face.sum())

    def __iter__(self):  # ``paths, vectors, identities, no_face_count = load_or_embed_lfw(…)``
        return iter((self.paths, self.vectors, self.identities, self.no_face_count))


def _read_cache(cache_path: Path, model_id: str, detector: str,
                notes: list[str]) -> dict[str, tuple[np.ndarray, bool]]:
    if not cache_path.is_file():
        notes.append(f"{cache_path}: no cache yet, embedding")
        return {}
    try:
        with np.load(cache_path, allow_pickle=False) as data:
            cached_model, cached_detector = str(data["model_id"]), str(data["detector"])
            if cached_model != model_id or cached_detector != detector:
                notes.append(f"{cache_path} was made with model {cached_model}, detector "
                             f"{cached_detector}; this run uses {model_id}, {detector}: "
                             "recomputing")
                return {}
            paths, vectors, no_face = data["paths"], data["vectors"], data["no_face"]
            return {str(p): (v, bool(n)) for p, v, n in zip(paths, vectors, no_face,
                                                            strict=True)}
    except (OSError, ValueError, KeyError) as exc:
        notes.append(f"{cache_path} cannot be read ({exc}); recomputing")
        return {}


def _write_cache(cache_path: Path, model_id: str, detector: str,
                 known: dict[str, tuple[np.ndarray, bool]]) -> None:
    paths = sorted(known)
    buffer = io.BytesIO()
    np.savez(buffer, format=np.int64(CACHE_FORMAT), model_id=np.str_(model_id),
             detector=np.str_(detector), paths=np.array(paths, dtype=str),
             vectors=np.stack([known[p][0] for p in paths]).astype(np.float32),
             no_face=np.array([known[p][1] for p in paths], dtype=bool))
    atomic_write_bytes(cache_path, buffer.getvalue())


def load_or_embed_lfw(pipeline: Pipeline, lfw_dir: Path, cache_path: Path | None = None,
                      paths: Iterable[str] | None = None,
                      on_photo: OnPhoto | None = None) -> LfwEmbeddings:
    """Vectors of LFW images (``paths`` relative to ``lfw_dir``; None: every image).

    With ``cache_path``, vectors cached for this pipeline's model id and detector are reused,
    the missing ones embedded and the cache rewritten atomically (every
    :data:`CACHE_CHECKPOINT` images too); a cache made with another model or detector is
    replaced. Images that cannot be read are left out and listed in ``errors``.
    """
    lfw_dir = Path(lfw_dir)
    if paths is None:
        wanted = [p for images in list_lfw_images(lfw_dir).values() for p in images]
    else:
        wanted = sorted(set(paths))
    model_id, detector = pipeline.model_id, detector_key(pipeline)
    notes: list[str] = []
    known: dict[str, tuple[np.ndarray, bool]] = {}
    if cache_path is not None:
        known = _read_cache(Path(cache_path), model_id, detector, notes)
    missing = [p for p in wanted if p not in known]
    errors: dict[str, str] = {}
    embedded = 0
    results = pipeline.run([lfw_dir / p for p in missing], fallback_center=True) if missing \
        else iter(())  # a warm cache must not even start the pipeline's workers
    for result in results:
        rel = result.path.relative_to(lfw_dir).as_posix()
        face = None if result.error else PhotoResult.largest_face(result)
        if face is None or face.embedding is None:
            errors[rel] = result.error or "no face and no centre crop"
        else:
            known[rel] = (np.asarray(face.embedding, dtype=np.float32), face.fallback)
            embedded += 1
            if cache_path is not None and embedded % CACHE_CHECKPOINT == 0:
                _write_cache(Path(cache_path), model_id, detector, known)
        if on_photo is not None:
            on_photo()
    if cache_path is not None and embedded:
        _write_cache(Path(cache_path), model_id, detector, known)
        notes.append(f"{cache_path}: {embedded} image(s) embedded and cached, "
                     f"{len(wanted) - len(missing)} reused")
    elif cache_path is not None:
        notes.append(f"{cache_path}: all {len(wanted)} image(s) reused")
    kept = [p for p in wanted if p in known]
    dim = next(iter(known.values()))[0].shape[0] if known else 0
    vectors = (np.stack([known[p][0] for p in kept]).astype(np.float32) if kept
               else np.zeros((0, dim), np.float32))
    return LfwEmbeddings(kept, vectors, [Path(p).parent.name for p in kept],
                         np.array([known[p][1] for p in kept], dtype=bool), errors, notes,
                         embedded)


# -- identification on LFW ----------------------------------------------------------------------
@dataclass(frozen=True)
class IdentificationSplit:
    """Who is enrolled with which images, and who is probed (paths relative to the LFW folder)."""

    gallery: list[str]
    probes: list[str]
    strangers: list[str]
    enrolled_people: list[str]
    stranger_people_available: int
    shots: int = DEFAULT_SHOTS
    seed: int = 0
    min_images: int = MIN_IMAGES

    @property
    def paths(self) -> list[str]:
        return sorted({*self.gallery, *self.probes, *self.strangers})


def split_identification(people: dict[str, list[str]], *, shots: int = DEFAULT_SHOTS,
                         strangers: int = DEFAULT_STRANGERS, seed: int = 0,
                         limit: int | None = None,
                         min_images: int = MIN_IMAGES) -> IdentificationSplit:
    """A seeded split: ``shots`` random gallery images of each person with at least
    ``min_images`` images (``limit`` of those people, drawn at random, when given), their
    other images as probes, and one random image of each of up to ``strangers`` people with
    fewer images."""
    if shots < 1:
        raise ValueError("--shots must be 1 or more")
    if min_images < 2:
        raise ValueError("--min-images must be at least 2 (one gallery image, one probe)")
    rng = np.random.default_rng(seed)
    enrolled = sorted(name for name, images in people.items() if len(images) >= min_images)
    others = sorted(name for name, images in people.items() if len(images) < min_images)
    if limit is not None and limit < len(enrolled):
        enrolled = sorted(rng.choice(enrolled, size=limit, replace=False).tolist())
    gallery, probes = [], []
    for name in enrolled:
        images = [people[name][i] for i in rng.permutation(len(people[name]))]
        gallery += images[:shots]
        probes += images[shots:]
    chosen = others
    if strangers < len(others):
        chosen = sorted(rng.choice(others, size=max(0, strangers), replace=False).tolist())
    stranger_images = [people[name][int(rng.integers(len(people[name])))] for name in chosen]
    return IdentificationSplit(sorted(gallery), sorted(probes), stranger_images, enrolled,
                               len(others), shots, seed, min_images)


def threshold_at_fpir(stranger_best: np.ndarray, fpir: float) -> float:
    """The lowest threshold that at most ``fpir`` of the strangers' best scores reach (a
    search is accepted at ``score >= threshold``)."""
    if not len(stranger_best):
        return float("nan")
    ranked = np.sort(stranger_best)[::-1]
    allowed = int(np.floor(fpir * len(ranked)))
    if allowed >= len(ranked):
        return float(ranked[-1])
    return float(ranked[allowed]) + 1e-6


@dataclass(frozen=True)
class OperatingPoint:
    fpir_target: float
    threshold: float
    fpir: float | None  # measured on the strangers at that threshold
    tpir: float | None
    #: Strangers above the threshold; under about 10 the point rests on few searches.
    strangers_passing: int

    def as_dict(self) -> dict[str, object]:
        return {"fpir_target": self.fpir_target, "threshold": round(self.threshold, 4),
                "fpir": self.fpir, "tpir": self.tpir,
                "strangers_passing": self.strangers_passing}


@dataclass
class IdentificationEvaluation:
    model: str
    detector: str
    shots: int
    seed: int
    min_images: int
    people_enrolled: int
    gallery_samples: int
    probes: int
    strangers: int
    stranger_people_available: int
    images_used: int
    no_face_center_crop: int
    rank1: float | None
    operating_points: list[OperatingPoint]
    thresholds: BankThresholds
    #: At the thresholds in force (the real policy):
    strangers_known: float | None  # measured FPIR of ``known``
    strangers_named: float | None  # strangers shown a name in any tier
    probes_known_right: float | None  # TPIR of ``known``
    probes_known_wrong: float | None  # probes bulk-confirmable under someone else's name
    probes_shown_right: float | None  # the true name is shown in some tier
    probe_statuses: dict[str, int]
    stranger_statuses: dict[str, int]
    errors: dict[str, str] = field(default_factory=dict)
    cache_notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # For the DET plot and for tests; not part of the JSON report.
    split: IdentificationSplit | None = field(default=None, repr=False)
    probe_best: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    probe_correct: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    stranger_best: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def as_dict(self) -> dict[str, object]:
        hidden = {"split", "probe_best", "probe_correct", "stranger_best", "operating_points",
                  "thresholds"}
        report = {key: value for key, value in self.__dict__.items() if key not in hidden}
        report["operating_points"] = [point.as_dict() for point in self.operating_points]
        report["thresholds"] = self.thresholds.as_dict()
        return report


def _status_counts(matches: list[FaceMatch]) -> dict[str, int]:
    return {tier: sum(match.status == tier for match in matches) for tier in TIERS}


def score_identification(split: IdentificationSplit, embeddings: LfwEmbeddings,
                         model_id: str, *, detector: str = "", fpir: float = DEFAULT_FPIR,
                         threshold: float | None = None,
                         ambiguous_margin: float | None = None,
                         fpirs: tuple[float, ...] = REPORT_FPIRS,
                         ) -> IdentificationEvaluation:
    """The figures of :func:`evaluate_identification` from vectors already made."""
    row = {path: index for index, path in enumerate(embeddings.paths)}
    # An image that could not be embedded drops out of its role.
    gallery = [p for p in split.gallery if p in row]
    gallery_names = [Path(p).parent.name for p in gallery]
    enrolled = set(gallery_names)
    probes = [p for p in split.probes if p in row and Path(p).parent.name in enrolled]
    strangers = [p for p in split.strangers if p in row]
    policy = policy_thresholds(model_id, len(enrolled), len(gallery), fpir, threshold)
    matcher = make_matcher(gallery_names, embeddings.vectors[[row[p] for p in gallery]],
                           policy, ambiguous_margin)

    def vectors(paths: list[str]) -> np.ndarray:
        return embeddings.vectors[[row[p] for p in paths]].reshape(len(paths), -1)

    probe_scores = matcher.identity_scores(vectors(probes))
    stranger_scores = matcher.identity_scores(vectors(strangers))
    truth = np.array([matcher.identities.index(Path(p).parent.name) for p in probes],
                     dtype=np.intp)
    probe_best = probe_scores.max(axis=1) if len(probes) else np.zeros(0, np.float32)
    correct = (probe_scores.argmax(axis=1) == truth) if len(probes) else np.zeros(0, bool)
    stranger_best = (stranger_scores.max(axis=1) if len(strangers)
                     else np.zeros(0, np.float32))
    points = []
    for target in fpirs:
        cut = threshold_at_fpir(stranger_best, target)
        passing = int((stranger_best >= cut).sum())
        points.append(OperatingPoint(target, cut, _share(passing, len(strangers)),
                                     _share(int((correct & (probe_best >= cut)).sum()),
                                            len(probes)), passing))
    # The real policy: every search is a photo of one face, matched as `faceid scan` does.
    probe_matches = [m[0] for m in matcher.match_photos(list(vectors(probes)))]
    stranger_matches = [m[0] for m in matcher.match_photos(list(vectors(strangers)))]
    names = [Path(p).parent.name for p in probes]
    known_right = sum(m.status == KNOWN and m.name == n for m, n in zip(probe_matches, names,
                                                                         strict=True))
    known_wrong = sum(m.status == KNOWN and m.name != n for m, n in zip(probe_matches, names,
                                                                         strict=True))
    shown = sum(shows_name(m, n) for m, n in zip(probe_matches, names, strict=True))
    used = set(gallery) | set(probes) | set(strangers)
    return IdentificationEvaluation(
        model=model_id, detector=detector, shots=split.shots, seed=split.seed,
        min_images=split.min_images,
        people_enrolled=len(enrolled), gallery_samples=len(gallery), probes=len(probes),
        strangers=len(strangers), stranger_people_available=split.stranger_people_available,
        images_used=len(used),
        no_face_center_crop=int(sum(embeddings.no_face[row[p]] for p in used)),
        rank1=_share(int(correct.sum()), len(probes)), operating_points=points,
        thresholds=policy,
        strangers_known=_share(sum(m.status == KNOWN for m in stranger_matches),
                               len(strangers)),
        strangers_named=_share(sum(m.named for m in stranger_matches), len(strangers)),
        probes_known_right=_share(known_right, len(probes)),
        probes_known_wrong=_share(known_wrong, len(probes)),
        probes_shown_right=_share(shown, len(probes)),
        probe_statuses=_status_counts(probe_matches),
        stranger_statuses=_status_counts(stranger_matches),
        split=split, probe_best=probe_best, probe_correct=correct, stranger_best=stranger_best,
    )


def evaluate_identification(pipeline: Pipeline, lfw_dir: Path, *, shots: int = DEFAULT_SHOTS,
                            strangers: int = DEFAULT_STRANGERS, seed: int = 0,
                            limit: int | None = None, min_images: int = MIN_IMAGES,
                            cache_path: Path | None = None, fpir: float = DEFAULT_FPIR,
                            threshold: float | None = None,
                            ambiguous_margin: float | None = None,
                            on_photo: OnPhoto | None = None) -> IdentificationEvaluation:
    """Open-set identification on an LFW-style folder (``images/<Name>/<file>``).

    With ``cache_path`` and no ``limit`` every image is embedded (so the cache serves any
    seed, shot count or stranger count later); otherwise only the images this split uses.
    """
    started = time.perf_counter()
    people = list_lfw_images(lfw_dir)
    if not people:
        raise FaceIdError(f"{lfw_dir} has no person folders with images")
    split = split_identification(people, shots=shots, strangers=strangers, seed=seed,
                                 limit=limit, min_images=min_images)
    if not split.enrolled_people:
        raise FaceIdError(f"{lfw_dir}: nobody has {min_images} or more images to enrol")
    wanted = None if cache_path is not None and limit is None else split.paths
    embeddings = load_or_embed_lfw(pipeline, lfw_dir, cache_path, wanted, on_photo)
    result = score_identification(split, embeddings, pipeline.model_id,
                                  detector=detector_key(pipeline), fpir=fpir,
                                  threshold=threshold, ambiguous_margin=ambiguous_margin)
    result.errors, result.cache_notes = embeddings.errors, embeddings.notes
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def det_points(probe_best: np.ndarray, probe_correct: np.ndarray,
               stranger_best: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(thresholds, FPIR, FNIR)`` at every distinct score, from the loosest threshold."""
    cuts = np.unique(np.concatenate([probe_best, stranger_best]))
    strangers = np.sort(stranger_best)
    hits = np.sort(probe_best[probe_correct])
    fpir = 1.0 - np.searchsorted(strangers, cuts, side="left") / max(1, len(strangers))
    tpir = (len(hits) - np.searchsorted(hits, cuts, side="left")) / max(1, len(probe_best))
    return cuts, fpir, 1.0 - tpir


def write_det_plot(path: Path, result: IdentificationEvaluation, title: str) -> Path:
    """A PNG of the DET curve (FNIR against FPIR, log axes) with the thresholds in force."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FaceIdError("--plot needs matplotlib: pip install 'faceid-tui[plot]' "
                          "(make run / make test install it)") from exc
    cuts, fpir, fnir = det_points(result.probe_best, result.probe_correct, result.stranger_best)
    floor = 1.0 / max(1, result.strangers)
    figure, axes = plt.subplots(figsize=(6.5, 5))
    axes.plot(np.maximum(fpir, floor), np.maximum(fnir, 1.0 / max(1, result.probes)),
              color="tab:blue", label="every threshold")
    for tier, choice, colour in ((KNOWN, result.thresholds.known, "tab:red"),
                                 (LIKELY, result.thresholds.likely, "tab:orange")):
        at = int(np.searchsorted(cuts, choice.value, side="left"))
        if at < len(cuts):
            axes.plot(max(fpir[at], floor), fnir[at], "o", color=colour,
                      label=f"{tier} threshold {choice.value:.3f} ({choice.source})")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("FPIR (strangers given a name)")
    axes.set_ylabel("FNIR (enrolled people not named right)")
    axes.set_title(title, fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    from faceid_tui.engine.plots import save_png

    return save_png(figure, path)


# -- annotated group photos ---------------------------------------------------------------------
STRANGER = "unknown"  # the identity of a face nobody could name in faces.csv


@dataclass(frozen=True)
class AnnotatedFace:
    path: str  # as written in faces.csv
    face_id: str
    box: tuple[int, int, int, int]
    identity: str


def read_faces_csv(csv_path: Path) -> list[AnnotatedFace]:
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "face_id", "x", "y", "w", "h", "identity"} - set(
            reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        return [AnnotatedFace(row["path"], row["face_id"],
                              (int(row["x"]), int(row["y"]), int(row["w"]), int(row["h"])),
                              row["identity"].strip() or STRANGER) for row in reader]


def photo_root(csv_path: Path, rel_paths: Iterable[str]) -> Path:
    """The folder the CSV's paths are relative to: its own folder, else the one above when
    every path exists only from there (shared/faces/group_photos/faces.csv names
    ``group_photos/…`` from shared/faces)."""
    rel_paths = list(rel_paths)
    here = Path(csv_path).parent
    for root in (here, here.parent):
        if all((root / p).is_file() for p in rel_paths):
            return root
    return here


def read_gallery_csv(csv_path: Path) -> tuple[dict[str, list[Path]], set[str]]:
    """``(identity -> gallery photos, identities listed with no photo)`` from
    ``identity,path,source``; paths are relative to the CSV's folder."""
    photos: dict[str, list[Path]] = {}
    listed: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"identity", "path"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks the column(s) {sorted(missing)}")
        rows = list(reader)
    root = photo_root(csv_path, [r["path"] for r in rows if r["path"].strip()])
    for row in rows:
        listed.add(row["identity"])
        if row["path"].strip():
            photos.setdefault(row["identity"], []).append(root / row["path"].strip())
    return photos, listed - set(photos)


def read_gallery_dir(folder: Path) -> dict[str, list[Path]]:
    """``Name/photo.jpg`` folders, as a bank is laid out."""
    photos: dict[str, list[Path]] = {}
    for person in sorted(p for p in Path(folder).iterdir()
                         if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in person.iterdir() if p.is_file() and is_image_name(p))
        if images:
            photos[person.name] = images
    return photos


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter = (max(0, min(ax + aw, bx + bw) - max(ax, bx))
             * max(0, min(ay + ah, by + bh) - max(ay, by)))
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def pair_boxes(annotated: list[tuple[int, int, int, int]],
               detected: list[tuple[int, int, int, int]],
               min_iou: float = MATCH_IOU) -> dict[int, tuple[int, float]]:
    """annotated index -> (detected index, IoU): pairs at ``min_iou`` or more, greedily from
    the highest IoU, each box used once."""
    pairs = sorted(((iou(a, d), i, j) for i, a in enumerate(annotated)
                    for j, d in enumerate(detected)), key=lambda t: (-t[0], t[1], t[2]))
    taken_a: dict[int, tuple[int, float]] = {}
    taken_d: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i in taken_a or j in taken_d:
            continue
        taken_a[i] = (j, overlap)
        taken_d.add(j)
    return taken_a


@dataclass(frozen=True)
class DetectedFace:
    box: tuple[int, int, int, int]
    name: str | None
    status: str
    score: float | None
    candidates: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"box": list(self.box), "name": self.name, "status": self.status,
                "score": None if self.score is None else round(self.score, 4),
                "candidates": list(self.candidates)}


@dataclass(frozen=True)
class FaceOutcome:
    face: AnnotatedFace
    enrolled: bool  # the identity has samples in the bank
    detected: DetectedFace | None
    iou: float | None
    shown_right: bool  # the true name is shown (see shows_name)
    known_right: bool

    @property
    def stranger(self) -> bool:
        return not self.enrolled

    @property
    def status(self) -> str:
        """The detected box's status; ``unknown`` when no box was found."""
        return UNKNOWN if self.detected is None else self.detected.status

    @property
    def name(self) -> str | None:
        return None if self.detected is None else self.detected.name

    def as_dict(self) -> dict[str, object]:
        return {"face_id": self.face.face_id, "box": list(self.face.box),
                "identity": self.face.identity, "enrolled": self.enrolled,
                "iou": None if self.iou is None else round(self.iou, 3),
                "detected": None if self.detected is None else self.detected.as_dict(),
                "shown_right": self.shown_right, "known_right": self.known_right}


@dataclass
class PhotoOutcome:
    path: str
    faces: list[FaceOutcome]
    detected: list[DetectedFace]
    unmatched: list[DetectedFace]  # boxes that match no annotated face
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "error": self.error,
                "faces": [face.as_dict() for face in self.faces],
                "unmatched_boxes": [box.as_dict() for box in self.unmatched]}


@dataclass(frozen=True)
class Tally:
    count: int
    of: int

    @property
    def share(self) -> float | None:
        return _share(self.count, self.of)

    def __str__(self) -> str:
        return f"{self.count}/{self.of}" + ("" if self.share is None else f" ({self.share:.1%})")

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "of": self.of, "share": self.share}


@dataclass(frozen=True)
class GroupsSummary:
    """The counts of :class:`GroupsEvaluation`; "enrolled" faces are those whose identity has
    samples in the bank, strangers the rest (open-set people and ``unknown``)."""

    annotated: int
    found: int  # annotated faces with a detected box at IoU >= MATCH_IOU
    enrolled_faces: int
    stranger_faces: int
    #: Over the enrolled faces found:
    known_right: Tally  # the right name, ``known``
    shown_right: Tally  # the right name shown in some tier (see shows_name)
    named_wrong: Tally  # a name shown, the right one not
    known_wrong: Tally  # ``known`` under another's name: the costly error
    #: Over the strangers found:
    strangers_known: Tally
    strangers_named: Tally  # any tier but unknown
    unmatched_boxes: int  # detected boxes that pair with no annotated face
    unmatched_named: int

    @property
    def detection_recall(self) -> Tally:
        return Tally(self.found, self.annotated)

    def as_dict(self) -> dict[str, object]:
        report: dict[str, object] = {
            key: value.as_dict() if isinstance(value, Tally) else value
            for key, value in self.__dict__.items()}
        report["detection_recall"] = self.detection_recall.share
        return report


@dataclass
class GroupsEvaluation:
    model: str
    detector: str
    photos: list[PhotoOutcome]
    gallery_identities: int
    gallery_samples: int
    gallery_no_face: list[str]
    thresholds: BankThresholds
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def _faces(self) -> list[FaceOutcome]:
        return [face for photo in self.photos for face in photo.faces]

    def summary(self) -> GroupsSummary:
        faces = self._faces()
        found = [f for f in faces if f.detected is not None]
        enrolled = [f for f in found if f.enrolled]
        strangers = [f for f in found if f.stranger]
        unmatched = [box for photo in self.photos for box in photo.unmatched]
        return GroupsSummary(
            annotated=len(faces), found=len(found),
            enrolled_faces=sum(f.enrolled for f in faces),
            stranger_faces=sum(f.stranger for f in faces),
            known_right=Tally(sum(f.known_right for f in enrolled), len(enrolled)),
            shown_right=Tally(sum(f.shown_right for f in enrolled), len(enrolled)),
            named_wrong=Tally(sum(f.status != UNKNOWN and not f.shown_right
                                  for f in enrolled), len(enrolled)),
            known_wrong=Tally(sum(f.status == KNOWN and f.name != f.face.identity
                                  for f in enrolled), len(enrolled)),
            strangers_known=Tally(sum(f.status == KNOWN for f in strangers), len(strangers)),
            strangers_named=Tally(sum(f.status != UNKNOWN for f in strangers),
                                  len(strangers)),
            unmatched_boxes=len(unmatched),
            unmatched_named=sum(box.status != UNKNOWN for box in unmatched),
        )

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "detector": self.detector,
                "gallery_identities": self.gallery_identities,
                "gallery_samples": self.gallery_samples,
                "gallery_no_face": self.gallery_no_face,
                "thresholds": self.thresholds.as_dict(), **self.summary().as_dict(),
                "photos": [photo.as_dict() for photo in self.photos],
                "errors": self.errors, "seconds": self.seconds}


def enrol_gallery(pipeline: Pipeline, gallery: dict[str, list[Path]],
                  ) -> tuple[list[str], np.ndarray, list[str], dict[str, str]]:
    """``(names, vectors, photos with no face, errors)``: the largest face of each photo, as
    ``faceid enrol`` keeps it."""
    owner = {photo: name for name, photos in gallery.items() for photo in photos}
    names, vectors, no_face, errors = [], [], [], {}
    for result in pipeline.run(list(owner)):
        face = None if result.error else result.largest_face()
        if result.error:
            errors[str(result.path)] = result.error
        elif face is None or face.embedding is None:
            no_face.append(str(result.path))
        else:
            names.append(owner[result.path])
            vectors.append(np.asarray(face.embedding, dtype=np.float32))
    matrix = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    return names, matrix, no_face, errors


def _detected(box: list[int], match: FaceMatch) -> DetectedFace:
    x, y, w, h = box
    return DetectedFace((x, y, w, h), match.name, match.status, match.score,
                        tuple(candidate.name for candidate in match.candidates))


def evaluate_groups(pipeline: Pipeline, faces_csv: Path, gallery: dict[str, list[Path]], *,
                    fpir: float = DEFAULT_FPIR, threshold: float | None = None,
                    ambiguous_margin: float | None = None,
                    photos: Iterable[str] | None = None) -> GroupsEvaluation:
    """Enrol ``gallery``, identify the faces of every photo of ``faces_csv`` (or of
    ``photos``, paths as written there) and compare with the annotations."""
    started = time.perf_counter()
    annotations = read_faces_csv(faces_csv)
    if photos is not None:
        keep = set(photos)
        annotations = [a for a in annotations if a.path in keep]
    by_photo: dict[str, list[AnnotatedFace]] = {}
    for face in annotations:
        by_photo.setdefault(face.path, []).append(face)
    root = photo_root(faces_csv, by_photo)
    names, samples, no_face, errors = enrol_gallery(pipeline, gallery)
    if not names:
        raise FaceIdError("no gallery photo gave a face; nothing to match against")
    enrolled = set(names)
    policy = policy_thresholds(pipeline.model_id, len(enrolled), len(names), fpir, threshold)
    matcher = make_matcher(names, samples, policy, ambiguous_margin)
    outcomes = []
    paths = [root / rel for rel in by_photo]
    rel_of = dict(zip(paths, by_photo, strict=True))
    for result, embedded, matches in matched_chunks(pipeline.run(paths), matcher, 16):
        rel = rel_of[result.path]
        faces = by_photo[rel]
        if result.error:
            errors[str(result.path)] = result.error
        detected = [_detected(face.box.as_list(), match)
                    for face, match in zip(embedded, matches, strict=True)]
        pairs = pair_boxes([f.box for f in faces], [d.box for d in detected])
        face_outcomes = []
        for index, face in enumerate(faces):
            hit, overlap = pairs.get(index, (None, None))
            found = None if hit is None else detected[hit]
            match = None if hit is None else matches[hit]
            is_enrolled = face.identity in enrolled
            face_outcomes.append(FaceOutcome(
                face, is_enrolled, found, overlap,
                shown_right=bool(is_enrolled and match is not None
                                 and shows_name(match, face.identity)),
                known_right=bool(is_enrolled and match is not None and match.status == KNOWN
                                 and match.name == face.identity)))
        used = {hit for hit, _ in pairs.values()}
        outcomes.append(PhotoOutcome(rel, face_outcomes, detected,
                                     [d for j, d in enumerate(detected) if j not in used],
                                     result.error))
    return GroupsEvaluation(pipeline.model_id, detector_key(pipeline), outcomes,
                            len(enrolled), len(names), no_face, policy, errors,
                            round(time.perf_counter() - started, 1))
