"""SIGKILL at random moments, during scans, enrolment and triage decisions: afterwards the
databases pass ``PRAGMA integrity_check``, every acknowledged step is there, no half-written
file is visible in ``id_bank/`` or ``out/``, and a restart carries on."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.ledger import LEDGER_NAME

from .conftest import REPO
from .tui_helpers import make_session

FACEID = Path(sys.executable).with_name("faceid")
ITERATIONS = 10


def run_and_kill(command: list[str], after_s: float, cwd: Path) -> list[str]:
    """Start ``command``, SIGKILL it after ``after_s`` seconds; return the lines it printed."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    time.sleep(after_s)
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate(timeout=30)
    return output.splitlines()


def integrity(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def assert_no_half_written_files(folder: Path) -> None:
    for path in folder.rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in
                                     path.relative_to(folder).parts):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text("utf-8"))
        else:
            with Image.open(path) as image:
                image.load()  # raises on a truncated image


def test_enrolment_killed_at_random_keeps_every_acknowledged_photo(
        tmp_path: Path, models_dir: Path, faces_dir: Path) -> None:
    bank = tmp_path / "bank"
    photos = sorted((faces_dir / "identities").glob("*/*.jpg"))[:40]

    def command(name: str) -> list[str]:
        return [str(FACEID), "--bank", str(bank), "--models", str(models_dir), "enroll",
                "--json", name, *map(str, photos)]

    # Time one whole run, so that the kills land while photos are being enrolled.
    started = time.monotonic()
    probe = subprocess.Popen(command("Probe"), cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    ack_times = [time.monotonic() - started for _line in probe.stdout]
    assert probe.wait(timeout=300) == 0 and len(ack_times) == len(photos)

    rng = random.Random(20261128)
    interrupted = 0
    for iteration in range(ITERATIONS):
        name = f"Crowd {iteration}"
        lines = run_and_kill(command(name), rng.uniform(ack_times[0] - 0.5, ack_times[-1]),
                             tmp_path)
        acknowledged = [json.loads(line)["enrolled_as"] for line in lines
                        if line.startswith("{")]
        interrupted += 0 < len(acknowledged) < len(photos)
        assert integrity(bank / ".faceid-bank.sqlite3") == "ok"
        for rel_path in acknowledged:
            assert (bank / rel_path).is_file(), rel_path
        with sqlite3.connect(bank / ".faceid-bank.sqlite3") as db:
            stored = {row[0] for row in db.execute("SELECT rel_path FROM photos")}
        assert set(acknowledged) <= stored
        assert_no_half_written_files(bank)
    assert interrupted > 0  # some kills did land mid-enrolment

    # A restart carries on: it finishes the job, and the store agrees with the folder.
    final = subprocess.run(command(f"Crowd {ITERATIONS - 1}"), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert len(list((bank / f"Crowd {ITERATIONS - 1}").glob("*.jpg"))) == len(photos)
    assert not list(bank.rglob(".*.tmp"))  # leftovers of killed writes were cleaned up
    listing = subprocess.run([str(FACEID), "--bank", str(bank), "--models", str(models_dir),
                              "bank", "list", "--json"], capture_output=True, text=True,
                             timeout=120)
    samples = {json.loads(line)["name"]: json.loads(line)["samples"]
               for line in listing.stdout.splitlines()}
    assert samples[f"Crowd {ITERATIONS - 1}"] == len(photos)


def test_annotated_scan_killed_at_random_leaves_only_complete_files(
        tmp_path: Path, models_dir: Path, faces_dir: Path) -> None:
    out = tmp_path / "out"
    command = [str(FACEID), "--bank", str(tmp_path / "bank"), "--models", str(models_dir),
               "scan", "--json", "--annotate", str(out), str(faces_dir / "identities")]
    rng = random.Random(7)
    for _ in range(ITERATIONS):
        run_and_kill(command, rng.uniform(2.0, 9.0), tmp_path)
        if out.exists():
            assert_no_half_written_files(out)
    assert integrity(tmp_path / "bank" / ".faceid-bank.sqlite3") == "ok"
    # A restart carries on: the whole scan completes and every photo has its pair of files.
    final = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    photos = list((faces_dir / "identities").glob("*/*"))
    assert len(list(out.glob("*.faceid.json"))) == len({p.stem for p in photos})
    assert_no_half_written_files(out)
    assert not list(out.glob(".*.tmp"))  # leftovers of killed writes were cleaned up


def test_triage_decisions_killed_at_random_are_kept(tmp_path: Path, pipeline: Pipeline,
                                                     models_dir: Path, faces_dir: Path,
                                                     identity_photos) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for photos in identity_photos.values():
        for photo in photos:
            shutil.copy2(photo, inbox / photo.name)
    for group in ("2007_007763.jpg", "2008_002079.jpg", "2008_001322.jpg"):
        shutil.copy2(faces_dir / "group_photos" / group, inbox / group)
    session = make_session(tmp_path, pipeline)
    for photo in sorted(inbox.iterdir()):
        session.register(photo)
    session.process(session.queued())
    total_faces = sum(len(session.faces(p.sha256)) for p in session.photos())
    session.close()

    ledger = tmp_path / "id_bank" / LEDGER_NAME
    command = [sys.executable, "-m", "tests.crash_driver", str(tmp_path), str(models_dir)]
    env_cwd = REPO

    # Time a whole run on a copy, so that the kills land while decisions are being made.
    probe_root = tmp_path.parent / f"{tmp_path.name}-probe"
    shutil.copytree(tmp_path, probe_root)
    started = time.monotonic()
    probe = subprocess.Popen([*command[:-2], str(probe_root), str(models_dir)], cwd=env_cwd,
                             stdout=subprocess.PIPE, text=True)
    ack_times = [time.monotonic() - started for line in probe.stdout if line.startswith("ack")]
    assert probe.wait(timeout=300) == 0 and len(ack_times) == total_faces
    shutil.rmtree(probe_root)

    rng = random.Random(3)
    acknowledged: dict[int, str] = {}
    interrupted = 0
    for _ in range(ITERATIONS):
        lines = run_and_kill(command, rng.uniform(ack_times[0] - 0.05, ack_times[-1]), env_cwd)
        acks = [line for line in lines if line.startswith("ack ")]
        interrupted += bool(acks) and "done" not in lines
        for line in acks:
            _, face_id, decision, _name = line.split(" ", 3)
            acknowledged[int(face_id)] = decision
        assert integrity(ledger) == "ok"
        assert integrity(tmp_path / "id_bank" / ".faceid-bank.sqlite3") == "ok"
        with sqlite3.connect(ledger) as db:
            kept = dict(db.execute("SELECT id, decision FROM faces WHERE decision IS NOT NULL"))
        for face_id, decision in acknowledged.items():
            assert kept.get(face_id) == decision, face_id
        assert_no_half_written_files(tmp_path / "id_bank")
        if (tmp_path / "out").exists():
            assert_no_half_written_files(tmp_path / "out")
    assert interrupted > 0  # some kills did land mid-decision
    finished = subprocess.run(command, cwd=env_cwd, capture_output=True, text=True,
                              timeout=300, env={**os.environ})
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.splitlines()[-1] == "done"
    with sqlite3.connect(ledger) as db:
        decided = db.execute("SELECT COUNT(*) FROM faces WHERE decision IS NOT NULL").fetchone()
        states = {row[0] for row in db.execute("SELECT state FROM photos")}
    assert decided[0] == total_faces and states == {"reviewed"}
