"""The pipeline: photo paths in, faces with boxes, landmarks and embeddings out.

Decode → detect → align happen per photo (:mod:`face_finder`); the chips of a chunk of photos
are then embedded in one batched call. On long runs the per-photo stages run in worker
processes (:mod:`detect_pool`), one per core, while this process embeds the chunk before: the
stages overlap. Models load once, on first use, so commands that need no model (listing the
bank) stay instant. A photo that cannot be read becomes a :class:`PhotoResult` with a one-line
``error``; the run goes on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceid_tui.engine.alignment import Aligner
from faceid_tui.engine.detect_pool import IDLE_WAIT_S, DetectPool
from faceid_tui.engine.detection import Detector, DetectorOptions
from faceid_tui.engine.embedders import AUTO, create_embedder, embedder_entry
from faceid_tui.engine.embedding import Embedder, EmbedderOptions, available_cores
from faceid_tui.engine.face_finder import FaceFinder, FaceResult, PhotoResult
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.photo_feed import END, PhotoFeed

#: Photos whose chips are embedded together; bounds memory on long runs.
DEFAULT_CHUNK = 64
#: Runs of at least this many photos use worker processes for decode + detect + align (their
#: start, about a second, is then paid back; shorter runs stay in this process).
PARALLEL_MIN_PHOTOS = 32


@dataclass(frozen=True)
class PipelineOptions:
    detector: str = "hog"
    detector_options: DetectorOptions = field(default_factory=DetectorOptions)
    #: A name from :data:`faceid_tui.engine.embedders.EMBEDDERS`, or "auto" (the default).
    embedder: str = AUTO
    embedder_options: EmbedderOptions = field(default_factory=EmbedderOptions)
    #: Processes for decode + detect + align on long runs: None = one per core, 0 = none.
    detect_workers: int | None = None


ProgressCallback = Callable[[PhotoResult], None]


class Pipeline:
    """Detector, aligner and embedder, loaded lazily and shared by every caller."""

    def __init__(self, models: ModelStore, options: PipelineOptions | None = None) -> None:
        self.models = models
        self.options = options or PipelineOptions()
        self.finder = FaceFinder(models, self.options.detector, self.options.detector_options,
                                 self.options.embedder)
        self._embedder: Embedder | None = None
        self._load_lock = threading.Lock()
        self._pools: list[DetectPool] = []  # those of runs under way, for worker_photos
        self._finished_pool_photos = 0

    @property
    def worker_photos(self) -> int:
        """Photos whose faces detect processes found, over every run of this pipeline (how a
        caller can tell the parallel path was taken)."""
        return self._finished_pool_photos + sum(pool.worker_results for pool in self._pools)

    # -- lazily loaded parts --------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        return self.finder.detector

    @property
    def aligner(self) -> Aligner:
        return self.finder.aligner

    @property
    def embedder(self) -> Embedder:
        with self._load_lock:
            if self._embedder is None:
                self._embedder = create_embedder(
                    self.options.embedder, self.options.embedder_options, self.models
                )
            return self._embedder

    @property
    def model_id(self) -> str:
        """The id stamped on every embedding this pipeline makes (weights + alignment)."""
        if self._embedder is not None:
            return self._embedder.model_id
        return embedder_entry(self.options.embedder).model_id(self.models)

    def load(self) -> None:
        """Load every model now (for callers that want the wait up front)."""
        _ = self.detector, self.aligner, self.embedder

    # -- work -----------------------------------------------------------------------------
    def find_faces(self, image: np.ndarray, *, fallback_center: bool = False) -> list[FaceResult]:
        """Detect and align every face of one image (no embeddings yet), left to right."""
        return self.finder.find_faces(image, fallback_center=fallback_center)

    def embed_faces(self, faces: list[FaceResult]) -> None:
        """Fill ``embedding`` of every face that has a chip, in one batched call."""
        pending = [face for face in faces if face.chip is not None and face.embedding is None]
        if not pending:
            return
        vectors = self.embedder.embed(np.stack([face.chip for face in pending]))
        for face, vector in zip(pending, vectors, strict=True):
            face.embedding = vector

    def analyze_image(self, image: np.ndarray, path: Path | str = "<array>", *,
                      fallback_center: bool = False) -> PhotoResult:
        """Run the whole pipeline on one decoded image."""
        result = PhotoResult(Path(path), image.shape[1], image.shape[0])
        result.faces = self.find_faces(image, fallback_center=fallback_center)
        self.embed_faces(result.faces)
        return result

    def run(
        self,
        paths: Iterable[Path],
        *,
        fallback_center: bool = False,
        keep_images: bool = False,
        keep_chips: bool = False,
        chunk_size: int = DEFAULT_CHUNK,
        should_stop: Callable[[], bool] | None = None,
        workers: int | None = None,
    ) -> Iterator[PhotoResult]:
        """Yield one :class:`PhotoResult` per path, in order.

        Chips of up to ``chunk_size`` photos are embedded together. ``should_stop`` is polled
        between photos so a UI worker can cancel a long run. ``workers`` overrides
        ``options.detect_workers`` (None: one process per core for runs of at least
        :data:`PARALLEL_MIN_PHOTOS` photos given as a list; 0: all in this process).
        """
        workers = self._workers_for(paths, workers)
        if workers > 0:
            yield from self._run_parallel(paths, workers, fallback_center, keep_images,
                                          keep_chips, chunk_size, should_stop)
            return

        def found_here() -> Iterator[PhotoResult]:
            for path in paths:
                if should_stop and should_stop():
                    return
                yield self.finder.find(Path(path), fallback_center, keep_images)

        yield from self._embedded_chunks(found_here(), chunk_size, keep_chips)

    def _workers_for(self, paths: Iterable[Path] | None, requested: int | None) -> int:
        """Detect processes for a run over ``paths`` (None: a stream, whatever its length)."""
        if requested is None:
            requested = self.options.detect_workers
        if requested is not None:
            return max(0, requested)
        if paths is not None and (not isinstance(paths, Sized)
                                  or len(paths) < PARALLEL_MIN_PHOTOS):
            return 0
        cores = available_cores()
        return cores if cores > 1 else 0

    def _run_parallel(self, paths: Iterable[Path], workers: int, fallback_center: bool,
                      keep_images: bool, keep_chips: bool, chunk_size: int,
                      should_stop: Callable[[], bool] | None) -> Iterator[PhotoResult]:
        _ = self.embedder  # load FaceNet while the workers start
        # Decoded images are large: keep fewer photos in flight when the caller wants them.
        window = chunk_size + 4 * workers if not keep_images else 2 * workers + 2
        with self._detect_pool(workers) as pool:
            found = pool.map_ordered(
                iter(paths), fallback_center=fallback_center, keep_images=keep_images,
                window=window, should_stop=should_stop,
                on_broken=lambda path: self.finder.find(path, fallback_center, keep_images))
            yield from self._embedded_chunks(found, chunk_size,
                                             keep_chips)

    def stream(self, feed: PhotoFeed, *, fallback_center: bool = False,
               chunk_size: int = DEFAULT_CHUNK, should_stop: Callable[[], bool] | None = None,
               workers: int | None = None) -> Iterator[list[PhotoResult]]:
        """Like :meth:`run` for photos that keep arriving, one chunk at a time: one long run
        over ``feed`` (the detect processes start once), each chunk yielded as soon as it is
        embedded — a chunk is cut short whenever the feed runs dry, so the last photos of a
        drop never wait for the next. Ends when the feed is closed and drained, or
        ``should_stop``. ``workers``: as for :meth:`run`, but None means one process per core
        whatever the count (a stream has no length to judge by)."""
        workers = self._workers_for(None, workers)
        if workers > 0:
            _ = self.embedder  # load the networks while the workers start
            with self._detect_pool(workers) as pool:
                found = pool.map_feed(
                    feed, fallback_center=fallback_center, keep_images=False,
                    window=chunk_size + 4 * workers, should_stop=should_stop,
                    on_broken=lambda path: self.finder.find(path, fallback_center, False))
                yield from self._chunks(found, chunk_size, keep_chips=False)
            return

        def found_here() -> Iterator[PhotoResult | None]:
            while not (should_stop and should_stop()):
                path = feed.take(0.0)
                if path is None:
                    yield None  # dry: embed what is held
                    path = feed.take(IDLE_WAIT_S)
                if path is END:
                    return
                if path is not None:
                    yield self.finder.find(Path(path), fallback_center, False)

        yield from self._chunks(found_here(), chunk_size, keep_chips=False)

    @contextlib.contextmanager
    def _detect_pool(self, workers: int) -> Iterator[DetectPool]:
        with DetectPool(workers, self.options.detector, self.options.detector_options,
                        self.options.embedder, self.models.folder) as pool:
            self._pools.append(pool)
            try:
                yield pool
            finally:
                self._pools.remove(pool)
                self._finished_pool_photos += pool.worker_results

    def _embedded_chunks(self, found: Iterator[PhotoResult | None], chunk_size: int,
                         keep_chips: bool) -> Iterator[PhotoResult]:
        """The photos of ``found``, in order, each chunk's faces embedded in one call."""
        for chunk in self._chunks(found, chunk_size, keep_chips):
            yield from chunk

    def _chunks(self, found: Iterator[PhotoResult | None], chunk_size: int,
                keep_chips: bool) -> Iterator[list[PhotoResult]]:
        """:meth:`_embedded_chunks` a chunk at a time; a None from ``found`` (its source ran
        dry) ends the chunk early."""
        chunk: list[PhotoResult] = []
        for result in found:
            if result is not None:
                chunk.append(result)
            if chunk and (result is None or len(chunk) >= chunk_size):
                yield self._finish_chunk(chunk, keep_chips)
                chunk = []
        if chunk:
            yield self._finish_chunk(chunk, keep_chips)

    def _finish_chunk(self, chunk: list[PhotoResult], keep_chips: bool) -> list[PhotoResult]:
        self.embed_faces([face for result in chunk for face in result.faces])
        if not keep_chips:
            for result in chunk:
                for face in result.faces:
                    face.chip = None
        return chunk


__all__ = ["FaceFinder", "FaceResult", "PhotoResult", "Pipeline", "PipelineOptions"]
