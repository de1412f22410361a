"""Backlogs on a Ray cluster: the photos of a scan spread over Ray actors, one per worker, each
loading the models once and running the same :class:`~faceid_tui.engine.pipeline.Pipeline` as
``faceid scan`` (detect, align, embed) on batches of photos.

Ray does the placement, the transport and the fault tolerance: an actor that dies is restarted
and its batches retried (``max_restarts`` / ``max_task_retries``), and a batch's results come
back only when the whole batch is done, so a photo is never lost and never returned twice (the
caller's output also skips any path it has already written). This module only keeps two
batches queued per actor.

Photos travel as bytes, so the workers need no shared file system: only faceid and its models
on every node (``faceid models`` there). Matching against the bank stays in the caller: it is
a matrix product, far cheaper than what the workers do.

``ray`` is imported only here, only when asked for (``pip install 'faceid-tui[cluster]'``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from faceid_tui.engine.face_finder import PhotoResult
from faceid_tui.engine.models import ModelStore
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions
from faceid_tui.errors import FaceIdError

#: Photos per task: large enough that FaceNet embeds in full batches and the per-task overhead
#: of Ray (~1 ms) vanishes, small enough that a retried batch costs little.
BATCH_PHOTOS = 32
#: Restarts of a dead actor (and retries of its batch) before the scan gives up.
MAX_RESTARTS = 3
#: Batches handed to each actor at once: one running, one waiting its turn.
QUEUED_PER_WORKER = 2


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FaceIdError("--ray needs Ray: pip install 'faceid-tui[cluster]' "
                          "(or pip install ray)") from None
    return ray


class PhotoWorker:
    """One Ray actor: the models loaded once, then batches of ``(name, bytes)`` photos."""

    def __init__(self, models_dir: str, options: PipelineOptions) -> None:
        # One detect-and-embed thread per actor: Ray runs one actor per core, and more threads
        # than cores make torch and onnxruntime collapse.
        options = replace(options, detect_workers=0,
                          embedder_options=replace(options.embedder_options, threads=1))
        self.pipeline = Pipeline(ModelStore(Path(models_dir)), options)
        self.pipeline.load()

    def pid(self) -> int:
        return os.getpid()

    def model_id(self) -> str:
        return self.pipeline.model_id

    def run(self, batch: list[tuple[str, bytes | None]]) -> list[PhotoResult]:
        """Results for each photo of ``batch``, in order, under the caller's path names."""
        with tempfile.TemporaryDirectory(prefix="faceid-ray-") as scratch:
            local: dict[Path, str] = {}
            unreadable: dict[str, str] = {}
            for number, (name, data) in enumerate(batch):
                if data is None:
                    unreadable[name] = "cannot read file"
                    continue
                path = Path(scratch) / f"{number}{Path(name).suffix}"
                path.write_bytes(data)
                local[path] = name
            found = {local[result.path]: replace(result, path=Path(local[result.path]),
                                                 image=None)
                     for result in self.pipeline.run(list(local), chunk_size=len(batch))}
        return [found.get(name) or PhotoResult(Path(name), error=unreadable.get(name))
                for name, _ in batch]


class RayScan:
    """Scans photos on a Ray cluster: ``address`` None starts a local one (``workers`` actors,
    default one per core), else joins that cluster (``"auto"``, ``ray://host:10001``, …)."""

    def __init__(self, models_dir: Path, options: PipelineOptions, *,
                 address: str | None = None, workers: int | None = None) -> None:
        ray = _ray()
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False,
                     **({} if address else {"num_cpus": workers or os.cpu_count() or 1}))
        count = workers or max(1, int(ray.available_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS,
                           max_task_retries=MAX_RESTARTS)(PhotoWorker)
        self.actors = [actor.remote(str(models_dir), options) for _ in range(count)]
        model_ids = set(ray.get([a.model_id.remote() for a in self.actors]))
        if len(model_ids) != 1:
            raise FaceIdError(f"the Ray workers run different models ({sorted(model_ids)}); "
                              "run `faceid models` on every node with the same faceid")
        self.model_id = model_ids.pop()

    def worker_pids(self) -> list[int]:
        return self._ray.get([a.pid.remote() for a in self.actors])

    def run(self, paths: Iterable[Path], batch_photos: int = BATCH_PHOTOS,
            ) -> Iterator[PhotoResult]:
        """Each photo's result once, as batches finish (not in the order given).

        Each actor has :data:`QUEUED_PER_WORKER` batches at a time, so it starts the next the
        moment it finishes one (no round trip to this process in between), and no more are
        read ahead: a backlog of 10⁶ photos costs the memory of a few batches."""
        ray = self._ray
        batches = iter(_batches(list(paths), batch_photos))
        running: dict[Any, Any] = {}  # result ref -> its actor
        load = {index: 0 for index in range(len(self.actors))}

        def submit(index: int) -> bool:
            batch = next(batches, None)
            if batch is None:
                return False
            running[self.actors[index].run.remote(_read(batch))] = index
            load[index] += 1
            return True

        for index in load:
            for _ in range(QUEUED_PER_WORKER):
                submit(index)
        seen: set[str] = set()
        while running:
            (done,), _ = ray.wait(list(running), num_returns=1)
            index = running.pop(done)
            load[index] -= 1
            submit(index)
            for result in ray.get(done):
                if str(result.path) not in seen:  # a retried batch can never repeat a photo
                    seen.add(str(result.path))
                    yield result

    def close(self) -> None:
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []


def _batches(paths: list[Path], size: int) -> list[list[Path]]:
    return [paths[start:start + size] for start in range(0, len(paths), size)]


def _read(batch: list[Path]) -> list[tuple[str, bytes | None]]:
    photos: list[tuple[str, bytes | None]] = []
    for path in batch:
        try:
            photos.append((str(path), path.read_bytes()))
        except OSError:
            photos.append((str(path), None))
    return photos
