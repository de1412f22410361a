"""The pipelined engine (worker processes + batched embedding) gives the same answers as the
naive one-photo-at-a-time loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from faceid_tui.bank.matching import Matcher
from faceid_tui.engine.decode import is_image_name, load_rgb
from faceid_tui.engine.photo_feed import PhotoFeed
from faceid_tui.engine.pipeline import Pipeline


def naive(pipeline: Pipeline, path: Path) -> list[tuple[list[int], np.ndarray]]:
    """Decode, detect, align, then embed each face on its own (batch of one)."""
    image = load_rgb(path)
    faces = []
    for face in pipeline.find_faces(image):
        faces.append((face.box.as_list(), pipeline.embedder.embed(face.chip[None])[0]))
    return faces


def test_pipelined_and_naive_paths_agree(pipeline: Pipeline, faces_dir: Path,
                                         identity_photos) -> None:
    photos = sorted(p for p in faces_dir.rglob("*") if p.is_file() and is_image_name(p))
    bank = [(name, paths[0]) for name, paths in sorted(identity_photos.items())]
    vectors = [naive(pipeline, path) for _, path in bank]
    matcher = Matcher([name for name, _ in bank], np.stack([found[0][1] for found in vectors]))

    pipelined = list(pipeline.run(photos, workers=2, chunk_size=16))
    assert [result.path for result in pipelined] == photos  # in order, none lost
    # Detect processes hold the cores: numpy's BLAS keeps to one thread from then on.
    assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} \
        == {1}
    compared_faces = 0
    for result in pipelined:
        assert result.error is None
        expected = naive(pipeline, result.path)
        assert [face.box.as_list() for face in result.faces] == [box for box, _ in expected]
        if not expected:
            continue
        got = np.stack([face.embedding for face in result.faces])
        want = np.stack([vector for _, vector in expected])
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert [m.name for m in matcher.match_photo(got)] == \
            [m.name for m in matcher.match_photo(want)]
        compared_faces += len(expected)
    assert compared_faces >= 80  # 67 portraits + the group photos' faces


@pytest.mark.parametrize("workers", [2, 0], ids=["detect processes", "in process"])
def test_a_stream_takes_arrivals_while_it_runs_and_never_holds_results_back(
        pipeline: Pipeline, identity_photos, workers: int) -> None:
    photos = [paths[0] for paths in identity_photos.values()][:6]
    feed = PhotoFeed(photos[:3])
    seen: list[Path] = []
    before = pipeline.worker_photos
    for result in (r for chunk in pipeline.stream(feed, workers=workers, chunk_size=64)
                   for r in chunk):
        assert result.error is None and len(result.faces) == 1
        assert result.faces[0].embedding is not None
        seen.append(result.path)
        # The chunk (64) never fills: results come when the feed runs dry, not at 64. Each
        # arrival joins the same run; closing the feed ends it once drained.
        if len(seen) == 3:
            for path in photos[3:]:
                feed.put(path)
            feed.close()
    assert seen == photos
    assert pipeline.worker_photos - before == (len(photos) if workers else 0)


def test_a_stop_request_ends_a_stream_that_waits_for_photos(pipeline: Pipeline,
                                                            identity_photos) -> None:
    feed = PhotoFeed([identity_photos["Juanes"][0]])  # never closed: only a stop ends it
    results: list[object] = []
    done_at: list[float] = []

    def stop() -> bool:
        if results and not done_at:
            done_at.append(time.monotonic())
        return bool(done_at) and time.monotonic() - done_at[0] > 0.5

    for result in (r for chunk in pipeline.stream(feed, workers=2, should_stop=stop)
                   for r in chunk):
        results.append(result)
    assert len(results) == 1  # the one photo, then the idle stream noticed the stop
    assert time.monotonic() - done_at[0] < 10
    feed.close()
    with pytest.raises(RuntimeError):
        feed.put(identity_photos["Juanes"][1])


def test_a_stop_request_ends_a_parallel_run_early(pipeline: Pipeline, identity_photos) -> None:
    photos = [p for paths in identity_photos.values() for p in paths]
    seen = []
    for result in pipeline.run(photos, workers=2, chunk_size=4,
                               should_stop=lambda: len(seen) >= 6):
        seen.append(result)
    assert 6 <= len(seen) < len(photos)


PARENT_KILLED_AT_SPAWN = """
import os, signal, sys
from pathlib import Path
from faceid_tui.engine.detect_pool import DetectPool
from faceid_tui.engine.detection import DetectorOptions

pool = DetectPool(2, "hog", DetectorOptions(), "facenet", Path(sys.argv[1]))
results = pool.map_ordered(iter([Path(sys.argv[2])] * 4), fallback_center=True,
                           keep_images=False, window=4)
next(results)  # the workers are up and have done their first photo
print(*pool._executor._processes, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

PARENT_KILLED_BEFORE_WORKERS_START = """
import os, signal, sys
from pathlib import Path
from faceid_tui.engine.detect_pool import DetectPool
from faceid_tui.engine.detection import DetectorOptions

pool = DetectPool(2, "hog", DetectorOptions(), "facenet", Path(sys.argv[1]))
for _ in range(2):  # each submit spawns one worker; they are still importing
    pool._executor.submit(os.getpid)
print(*pool._executor._processes, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("script", [PARENT_KILLED_BEFORE_WORKERS_START, PARENT_KILLED_AT_SPAWN],
                         ids=["before-workers-start", "after-first-photo"])
def test_workers_end_with_a_parent_killed_by_sigkill(script: str, models_dir: Path,
                                                     identity_photos) -> None:
    """Orphaned workers would hold the parent's stdout open (a reader such as ``faceid scan
    | jq`` would never see the end) and wait forever on the pool's queue. A parent killed
    while its workers are still importing once left them running for good: they took the
    reaper for their parent."""
    process = subprocess.Popen([sys.executable, "-c", script, str(models_dir),
                                str(next(iter(identity_photos.values()))[0])],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    output, _ = process.communicate(timeout=120)  # returns once no process holds stdout
    worker_pids = [int(pid) for pid in output.split()]
    assert len(worker_pids) == 2 and process.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 60
    while any(map(_alive, worker_pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_alive, worker_pids)), worker_pids
