"""Hostile inputs: damaged and unusual files, bombs, floods of photos, escaping names, and a
check that nothing opens the network or unpickles."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceid_tui.cli import main as faceid_main
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.inbox import InboxWatcher, existing_photos
from faceid_tui.triage.ledger import LEDGER_NAME
from faceid_tui.tui.app import FaceIdApp
from faceid_tui.tui.modals import NameScreen

from .conftest import REPO
from .fuzz.mutations import make_case, source_photos
from .tui_helpers import EmbedCounter, make_session, wait_for


def test_a_few_hundred_fuzzed_photos_never_crash_the_pipeline(tmp_path: Path,
                                                              pipeline: Pipeline,
                                                              faces_dir: Path) -> None:
    sources = source_photos(faces_dir)
    outcomes = {"error": 0, "faces": 0}
    for index in range(300):
        case = make_case(sources, seed=7, index=index)
        path = tmp_path / f"case{index}{case.suffix}"
        path.write_bytes(case.data)
        (result,) = list(pipeline.run([path]))  # an exception here is a crash
        if result.error:
            assert "\n" not in result.error
            outcomes["error"] += 1
        else:
            assert all(face.embedding is not None for face in result.faces)
            outcomes["faces"] += 1
        path.unlink()
    assert outcomes["error"] > 0 and outcomes["faces"] > 0  # both kinds were exercised


def face_photo(identity_photos: dict[str, list[Path]]) -> Image.Image:
    return Image.open(identity_photos["barack_obama"][0]).convert("RGB")


def test_unusual_formats_are_processed(tmp_path: Path, pipeline: Pipeline,
                                       identity_photos) -> None:
    image = face_photo(identity_photos)
    files = {}
    image.convert("CMYK").save(files.setdefault("cmyk", tmp_path / "cmyk.jpg"))
    image.save(files.setdefault("heic", tmp_path / "phone.heic"), quality=85)
    image.save(files.setdefault("png-named-jpg", tmp_path / "really-a-png.jpg"), format="PNG")
    frames = [image.convert("P"), image.rotate(90).convert("P")]
    frames[0].save(files.setdefault("gif", tmp_path / "anim.gif"), save_all=True,
                   append_images=frames[1:])
    image.save(files.setdefault("tiff", tmp_path / "pages.tiff"), save_all=True,
               append_images=[image.rotate(90)])
    deep = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(deep).save(files.setdefault("png16", tmp_path / "deep.png"))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.transpose(Image.Transpose.ROTATE_90).save(files.setdefault("exif", tmp_path / "r.jpg"),
                                                    exif=exif)
    results = {r.path: r for r in pipeline.run(list(files.values()))}
    for kind, path in files.items():
        result = results[path]
        assert result.error is None, (kind, result.error)
        assert len(result.faces) == 1, kind
        assert (result.width, result.height) == image.size, kind


def test_a_decompression_bomb_is_refused_with_bounded_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    Image.new("1", (30_000, 30_000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 2_000_000  # tiny on disk
    # VmHWM is this process's own peak (ru_maxrss would carry the forking parent's).
    probe = textwrap.dedent("""
        import json, re, sys
        from faceid_tui.engine.decode import load_rgb
        from faceid_tui.errors import ImageDecodeError
        try:
            load_rgb(sys.argv[1])
            error = None
        except ImageDecodeError as exc:
            error = str(exc)
        status = open("/proc/self/status").read()
        peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
        print(json.dumps({"error": error, "peak_kb": peak}))
    """)
    run = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True,
                         text=True, timeout=120, check=True)
    report = json.loads(run.stdout)
    assert "too large" in report["error"]
    # Decoding 900 Mpx would need 2.7 GB; refusing from the header stays near the
    # interpreter's own size.
    assert report["peak_kb"] < 400_000


def test_a_thousand_photos_at_once_are_each_processed_once(tmp_path: Path, pipeline: Pipeline,
                                                           faces_dir: Path) -> None:
    originals = tmp_path / "originals"
    originals.mkdir()
    sources = sorted((faces_dir / "identities").glob("*/*"))
    for source in sources:
        shutil.copy2(source, originals / source.name)
    inbox = tmp_path / "inbox"
    copies = sorted(originals.iterdir())
    for index in range(1000):
        folder = inbox / f"batch{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        original = copies[index % len(copies)]
        os.link(original, folder / f"{index:04d}{original.suffix}")  # same content, new name
    session = make_session(tmp_path, pipeline)
    photos = existing_photos(inbox)
    assert len(photos) == 1000
    with EmbedCounter(pipeline) as counter:
        new = [sha for path in photos if (sha := session.register(path))]
        while session.queued():
            session.process(session.queued()[:64])
    assert len(new) == len(copies)
    assert len(session.photos()) == len({p.read_bytes() for p in copies})
    expected_faces = sum(len(r.faces) for r in pipeline.run(copies))
    assert counter.faces == expected_faces  # every distinct photo embedded exactly once
    session.close()


def test_the_watcher_reads_a_finished_download_never_its_part_file(tmp_path: Path,
                                                                   identity_photos) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "phone").mkdir(parents=True)
    seen: list[Path] = []
    watcher = InboxWatcher(inbox, seen.append)
    watcher.start()
    try:
        part = inbox / "phone" / "IMG_1.jpg.part"
        data = identity_photos["Juanes"][0].read_bytes()
        with open(part, "wb") as handle:  # written slowly, in pieces
            for start in range(0, len(data), 4096):
                handle.write(data[start : start + 4096])
                handle.flush()
                time.sleep(0.01)
        part.rename(inbox / "phone" / "IMG_1.jpg")
        (inbox / ".DS_Store").write_bytes(b"junk")
        (inbox / "phone" / "draft.jpg~").write_bytes(data)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        watcher.stop()
    assert {path.name for path in seen} == {"IMG_1.jpg"}


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", ".hidden", "nul\x00", "x" * 300])
async def test_the_name_input_refuses_escaping_names(tmp_path: Path, pipeline: Pipeline,
                                                     bad: str) -> None:
    (tmp_path / "inbox").mkdir()
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    answers: list[str | None] = []
    async with app.run_test(size=(80, 24)) as pilot:
        app.push_screen(NameScreen("Name", []), answers.append)
        await pilot.pause()
        app.screen.query_one("#name-input").value = bad
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, NameScreen)  # still asking: the name was refused
        assert "identity name" in str(app.screen.query_one("#dialog-error").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: answers == [None])
    app.session.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id_bank", "inbox"]
    assert all(p.name.startswith(".") for p in (tmp_path / "id_bank").iterdir())


def test_a_scan_opens_no_socket(tmp_path: Path, models_dir: Path, faces_dir: Path,
                                identity_photos, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[tuple] = []
    real_socket = socket.socket

    class NoNetwork(real_socket):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            opened.append(args)
            raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "socket", NoNetwork)
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(OSError()))
    bank = tmp_path / "bank" / "Juanes"
    bank.mkdir(parents=True)
    shutil.copy2(identity_photos["Juanes"][1], bank / "j.jpg")
    code = faceid_main(["--bank", str(tmp_path / "bank"), "--models", str(models_dir), "scan",
                        "--json", "--annotate", str(tmp_path / "out"),
                        str(identity_photos["Juanes"][0]), str(faces_dir / "non_faces")])
    assert code == 0
    assert opened == []


def test_no_pickle_and_weights_only_loads() -> None:
    for source in (REPO / "faceid_tui").rglob("*.py"):
        tree = ast.parse(source.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                module = getattr(node, "module", None) or ""
                assert "pickle" not in names and "pickle" not in module, source
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" \
                    and getattr(node.func.value, "id", "") == "torch":
                keywords = {k.arg: k.value for k in node.keywords}
                assert isinstance(keywords.get("weights_only"), ast.Constant), source
                assert keywords["weights_only"].value is True, source


def test_two_processes_enrol_into_one_bank_safely(tmp_path: Path, models_dir: Path,
                                                  identity_photos) -> None:
    bank = tmp_path / "bank"
    faceid = Path(sys.executable).with_name("faceid")
    runs = []
    for name in ("Juanes", "Jon_Voight"):
        runs.append(subprocess.Popen(
            [str(faceid), "--bank", str(bank), "--models", str(models_dir), "enroll", name,
             *map(str, identity_photos[name])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    listing = subprocess.run([str(faceid), "--bank", str(bank), "--models", str(models_dir),
                              "bank", "list", "--json"], capture_output=True, text=True,
                             timeout=120)
    assert [json.loads(line)["samples"] for line in listing.stdout.splitlines()] == [3, 3]


def test_ledger_and_bank_survive_concurrent_readers(tmp_path: Path, pipeline: Pipeline,
                                                    identity_photos) -> None:
    session = make_session(tmp_path, pipeline)
    (tmp_path / "inbox").mkdir()
    errors: list[Exception] = []

    def reader() -> None:
        try:
            for _ in range(50):
                session.photos()
        except Exception as exc:  # any error in a reader thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for index, photo in enumerate(identity_photos["Juanes"]):
        target = tmp_path / "inbox" / f"{index}.jpg"
        shutil.copy2(photo, target)
        session.register(target)
    session.process(session.queued())
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / "id_bank" / LEDGER_NAME).is_file()
    session.close()
