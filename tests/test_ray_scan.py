"""Backlogs on Ray (a local cluster of two workers): the same results as the local pipeline,
and a worker killed mid-run loses no photo and repeats none."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.engine.detection import DetectorOptions
from faceid_tui.engine.embedding import EmbedderOptions
from faceid_tui.engine.pipeline import Pipeline, PipelineOptions
from faceid_tui.engine.ray_scan import RayScan

from .test_cli import faceid, json_lines


@pytest.fixture(scope="module")
def ray_scan(models_dir: Path):
    ray = pytest.importorskip("ray")
    scan = RayScan(models_dir, PipelineOptions(detector_options=DetectorOptions(),
                                               embedder_options=EmbedderOptions(device="cpu")),
                   workers=2)
    yield scan
    scan.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def some_photos(identity_photos, faces_dir: Path) -> list[Path]:
    photos = [p for name in sorted(identity_photos)[:8] for p in identity_photos[name][:2]]
    return [*photos, faces_dir / "group_photos/2008_002079.jpg", faces_dir / "non_faces/dogs.jpg"]


def test_ray_gives_what_the_local_pipeline_gives(ray_scan: RayScan, pipeline: Pipeline,
                                                 some_photos: list[Path]) -> None:
    assert ray_scan.model_id == pipeline.model_id
    local = {r.path: r for r in pipeline.run(some_photos)}
    remote = {r.path: r for r in ray_scan.run(some_photos, batch_photos=4)}
    assert set(remote) == set(local)
    for path, result in local.items():
        other = remote[path]
        assert [f.box.as_list() for f in other.faces] == [f.box.as_list() for f in result.faces]
        for mine, theirs in zip(result.faces, other.faces, strict=True):
            np.testing.assert_allclose(theirs.embedding, mine.embedding, atol=1e-4)
    assert any(len(r.faces) > 2 for r in remote.values())  # the group photo came through
    assert remote[some_photos[-1]].faces == []  # and the dogs have no face


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(ray_scan: RayScan,
                                                           some_photos: list[Path]) -> None:
    photos = some_photos * 2  # long enough that both workers have batches queued
    photos = [p for p in dict.fromkeys(photos)]
    results = ray_scan.run(photos, batch_photos=2)
    first = next(results)
    victim = ray_scan.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    rest = list(results)
    paths = [first.path, *[r.path for r in rest]]
    assert sorted(paths) == sorted(photos)  # every photo once
    assert all(r.error is None for r in [first, *rest])
    assert victim not in ray_scan.worker_pids()  # the worker was restarted, not reused


def test_faceid_scan_on_ray_resumes_from_its_output(models_dir: Path, identity_photos,
                                                    tmp_path: Path) -> None:
    clooney, voight = identity_photos["George_Clooney"], identity_photos["Jon_Voight"]
    bank = tmp_path / "id_bank" / "George Clooney"
    bank.mkdir(parents=True)
    for photo in clooney[:2]:
        (bank / photo.name).write_bytes(photo.read_bytes())
    photos = [*voight[:1], *clooney[2:], *voight[1:]]
    output = tmp_path / "out.jsonl"
    output.write_text(json_lines_text(photos[0]))  # a scan stopped after one photo…
    with open(output, "a") as handle:
        handle.write('{"path": "cut sh')  # …in the middle of its second record
    ran = faceid("scan", "--ray", "--workers", "2", "--json", "--output", output, *photos,
                 cwd=tmp_path, models=models_dir)
    assert ran.returncode == 0, ran.stderr
    assert "1 photo(s) already in" in ran.stderr
    printed = json_lines(ran.stdout)
    assert sorted(r["path"] for r in printed) == sorted(map(str, photos[1:]))
    kept = json_lines(output.read_text())
    assert sorted(r["path"] for r in kept) == sorted(map(str, photos))
    names = {r["path"]: {f["name"] for f in r["faces"]} for r in printed}
    assert all(names[str(p)] == {"George Clooney"} for p in clooney[2:])
    assert all("George Clooney" not in names[str(p)] for p in voight[1:])


def json_lines_text(photo: Path) -> str:
    return f'{{"path": "{photo}", "faces": []}}\n'
