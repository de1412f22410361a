"""The photo list's rules (filters, order, search, cells fitted to 80 columns) on the views of
a real session: photos from ../shared/faces processed by the default pipeline."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.photo_list import (
    FILTERS,
    ListSettings,
    ellipsize_middle,
    first_run_text,
    fit_names,
    row_cells,
    shown_folder,
)
from faceid_tui.triage.session import TriageSession

from .tui_helpers import make_session, seed_bank


@pytest.fixture
def session(tmp_path: Path, pipeline: Pipeline, identity_photos, faces_dir: Path):
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", inbox / "pair.jpg")
    shutil.copy2(identity_photos["Juanes"][0], inbox / "stranger.jpg")
    shutil.copy2(faces_dir / "non_faces/dogs.jpg", inbox / "dogs.jpg")
    (inbox / "broken.jpg").write_bytes(b"not a photo")
    opened = make_session(tmp_path, pipeline)
    opened.start()
    for path in sorted(inbox.iterdir()):
        opened.register(path)
    opened.process(opened.queued())
    yield opened
    opened.close()


def by_name(session: TriageSession) -> dict[str, str]:
    return {Path(view.path).name: view.sha256 for view in session.photos()}


def shown(session: TriageSession, settings: ListSettings) -> list[str]:
    return [Path(view.path).name for view in settings.visible(session.photos())]


def test_each_filter_keeps_the_photos_it_names(session: TriageSession) -> None:
    expected = {
        "all": ["broken.jpg", "dogs.jpg", "pair.jpg", "stranger.jpg"],
        "review": ["pair.jpg", "stranger.jpg"],
        "known": ["pair.jpg"],
        "tentative": [],
        "unknown": ["stranger.jpg"],
        "errors": ["broken.jpg"],
        "reviewed": ["dogs.jpg"],  # no face: nothing to decide
    }
    assert [key for key, _ in FILTERS] == list(expected)
    for key, names in expected.items():
        assert shown(session, ListSettings(filter_key=key)) == names, key
    # Deciding the known faces moves the pair from "known" and "to review" to "reviewed".
    session.confirm_all_known(by_name(session)["pair.jpg"])
    assert shown(session, ListSettings(filter_key="known")) == []
    assert shown(session, ListSettings(filter_key="reviewed")) == ["dogs.jpg", "pair.jpg"]


def test_sort_by_score_and_search_by_name(session: TriageSession) -> None:
    by_score = ListSettings(sort_key="score")
    names = shown(session, by_score)
    scored = [v for v in session.photos() if v.best_score is not None]
    assert names[:len(scored)] == [Path(v.path).name for v in
                                   sorted(scored, key=lambda v: -(v.best_score or 0))]
    assert shown(session, ListSettings(search="ROSE")) == ["pair.jpg"]  # names, any case
    assert shown(session, ListSettings(search="dogs")) == ["dogs.jpg"]  # file names too
    settings = ListSettings().next_filter().next_filter(-1).next_sort()
    assert (settings.filter_key, settings.sort_key) == ("all", "score")
    assert ListSettings(filter_key="review").title(2, 4) == "Photos · to review · 2/4"


def test_cells_keep_both_ends_of_names_and_the_count_of_hidden_names(
        session: TriageSession) -> None:
    assert ellipsize_middle("IMG_20240102_123456.jpg", 16) == "IMG_2024…456.jpg"
    assert ellipsize_middle("short.jpg", 16) == "short.jpg"
    assert fit_names(("rose_leslie", "kit_harington"), 30) == "rose_leslie, kit_harington"
    assert fit_names(("rose_leslie", "kit_harington"), 16) == "rose_leslie +1"
    assert fit_names(("a_very_long_identity_name", "b"), 10).endswith(" +1")
    pair = session.photo(by_name(session)["pair.jpg"])
    photo, state, faces, best, names = row_cells(pair, "event/2024/IMG_0001_pair.jpg", 14)
    assert best == f"{pair.best_score:.2f}"
    assert photo.startswith("event/") and photo.endswith(".jpg") and "…" in photo
    assert (state, faces) == ("review", "2")
    assert names == "rose_leslie +1"
    broken = session.photo(by_name(session)["broken.jpg"])
    assert row_cells(broken, "broken.jpg", 14)[4].startswith("not an")  # the error, cut short
    assert row_cells(session.photo(by_name(session)["dogs.jpg"]), "dogs.jpg")[4] == "no face"


def test_first_run_text_says_where_photos_go_and_how_to_enrol(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = first_run_text(tmp_path / "inbox", tmp_path / "id_bank", tmp_path / "out", 0)
    assert "inbox/" in text and "press i to import" in text and "out/" in text
    assert str(tmp_path) not in text  # relative to where faceid runs
    assert "3 known people" in first_run_text(tmp_path / "inbox", tmp_path / "id_bank",
                                              tmp_path / "out", 3)
    assert shown_folder(Path("/elsewhere/inbox")) == "/elsewhere/inbox/"
