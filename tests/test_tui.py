"""The triage app driven from the keyboard with Pilot, on real photos."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.tui.app import FaceIdApp
from faceid_tui.tui.bank_screen import BankScreen

from .tui_helpers import EmbedCounter, make_session, seed_bank, wait_for


def states(app: FaceIdApp) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {Path(v.path).name: (v.state, v.names) for v in app.session.photos()}


async def test_a_photo_dropped_in_the_inbox_appears_with_names(tmp_path: Path, pipeline: Pipeline,
                                                              identity_photos,
                                                              faces_dir: Path) -> None:
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    (tmp_path / "inbox").mkdir()
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "FaceNet" in app.model_state)
        shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", tmp_path / "inbox/new.jpg")
        await wait_for(pilot, lambda: states(app).get("new.jpg", ("",))[0] == "to review")
        assert states(app)["new.jpg"][1] == ("rose_leslie", "kit_harington")
        faces = app.triage.query_one("#faces")
        assert faces.row_count == 2


async def test_naming_enrols_and_resolves_the_same_person_elsewhere_undo_restores(
        tmp_path: Path, pipeline: Pipeline, identity_photos) -> None:
    seed_bank(tmp_path, identity_photos, "kit_harington")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    juanes = identity_photos["Juanes"]
    shutil.copy2(juanes[0], inbox / "a.jpg")
    shutil.copy2(juanes[1], inbox / "b.jpg")
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: [s for s, _ in states(app).values()] == ["to review"] * 2)
        assert all(f.status == "unknown" for v in app.session.photos()
                   for f in app.session.faces(v.sha256))
        app.triage.current_sha = next(v.sha256 for v in app.session.photos()
                                      if v.path.endswith("a.jpg"))
        app.triage.refresh_tables()
        with EmbedCounter(pipeline) as counter:
            await pilot.press("n")
            await pilot.press(*"Juanes")
            await pilot.press("enter")
            await wait_for(pilot, lambda: states(app)["a.jpg"][0] == "reviewed")
        assert counter.faces == 0  # the stored embedding was enrolled, nothing recomputed
        assert states(app)["b.jpg"] == ("to review", ("Juanes",))
        b_sha = next(v.sha256 for v in app.session.photos() if v.path.endswith("b.jpg"))
        assert app.session.faces(b_sha)[0].status == "known"
        assert (tmp_path / "id_bank/Juanes/a.jpg").is_file()
        assert (tmp_path / "out/a.faceid.jpg").is_file()  # fully decided: annotated copy

        await pilot.press("z")
        await wait_for(pilot, lambda: states(app)["a.jpg"][0] == "to review")
        assert states(app)["b.jpg"] == ("to review", ())
        assert not (tmp_path / "id_bank/Juanes").exists()


async def test_threshold_keys_rescore_from_stored_embeddings(tmp_path: Path, pipeline: Pipeline,
                                                             identity_photos,
                                                             faces_dir: Path) -> None:
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    (tmp_path / "inbox").mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", tmp_path / "inbox/pair.jpg")
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: states(app).get("pair.jpg", ("",))[0] == "to review")
        sha = app.session.photos()[0].sha256
        scores = sorted(f.score for f in app.session.faces(sha))
        with EmbedCounter(pipeline) as counter:
            while app.session.threshold <= scores[0]:  # raise it past the weaker match
                before = app.session.threshold
                await pilot.press("plus")
                await wait_for(pilot, lambda b=before: app.session.threshold > b)
            # A match below the new threshold keeps its name one tier down (likely): it stays
            # above the suggestion threshold, which the open-set threshold's keys do not move.
            threshold = app.session.threshold
            statuses = sorted(f.status for f in app.session.faces(sha))
            assert statuses == sorted("known" if score >= threshold else "likely"
                                      for score in scores)
            assert "likely" in statuses
            assert sha in app.triage.changed_rows
            await pilot.press("minus")
            await wait_for(pilot, lambda: app.session.threshold <= scores[0])
            assert [f.status for f in app.session.faces(sha)] == ["known", "known"]
        assert counter.faces == 0


async def test_bank_screen_rename_and_merge(tmp_path: Path, pipeline: Pipeline,
                                            identity_photos) -> None:
    seed_bank(tmp_path, identity_photos, "Juanes", "Jon_Voight")
    (tmp_path / "inbox").mkdir()
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    bank_dir = tmp_path / "id_bank"
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "FaceNet" in app.model_state)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, BankScreen))
        assert app.screen.current == "Jon_Voight"
        await pilot.press("r", *"Jon", "enter")
        await wait_for(pilot, lambda: (bank_dir / "Jon").is_dir())
        assert not (bank_dir / "Jon_Voight").exists()
        await pilot.press("m", *"Juanes", "enter")
        await pilot.press("y")
        await wait_for(pilot, lambda: not (bank_dir / "Jon").exists())
        assert len(list((bank_dir / "Juanes").iterdir())) == 6
        await pilot.press("z")  # undo the merge
        await wait_for(pilot, lambda: (bank_dir / "Jon").is_dir())
        assert len(list((bank_dir / "Jon").iterdir())) == 3
        assert {i.name for i in app.session.bank.identities()} == {"Jon", "Juanes"}


async def test_quit_and_restart_keep_every_decision(tmp_path: Path, pipeline: Pipeline,
                                                    identity_photos, faces_dir: Path) -> None:
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", inbox / "pair.jpg")
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", inbox / "same-again.jpg")
    shutil.copy2(faces_dir / "non_faces/dogs.jpg", inbox / "dogs.jpg")
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: len(states(app)) == 2
                       and all(s in ("to review", "reviewed") for s, _ in states(app).values()))
        app.triage.current_sha = next(v.sha256 for v in app.session.photos() if v.faces == 2)
        app.triage.refresh_tables()
        await pilot.press("a")  # confirm both known faces
        await wait_for(pilot, lambda: all(s == "reviewed" for s, _ in states(app).values()))
        await pilot.press("q")
    before = {v.sha256: v for v in app.session.photos()}
    decisions = {v.sha256: app.session.faces(v.sha256) for v in before.values()}
    app.session.close()

    with EmbedCounter(pipeline) as counter:
        again = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
        async with again.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: "FaceNet" in again.model_state)
            await pilot.pause(1.0)  # give intake time to see the inbox again
            after = {v.sha256: v for v in again.session.photos()}
            assert after == before
            assert {sha: again.session.faces(sha) for sha in after} == decisions
    assert counter.faces == 0  # nothing re-processed
    again.session.close()


async def test_a_broken_model_file_is_reported_not_hidden(tmp_path: Path, pipeline: Pipeline,
                                                          models_dir: Path) -> None:
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import Pipeline as FreshPipeline

    broken_models = tmp_path / "models"
    broken_models.mkdir()
    for model_file in models_dir.iterdir():
        if model_file.suffix == ".pt":  # a damaged copy of the weights
            (broken_models / model_file.name).write_bytes(b"corrupt")
        else:
            shutil.copy2(model_file, broken_models / model_file.name)
    session = make_session(tmp_path, FreshPipeline(ModelStore(broken_models)))
    app = FaceIdApp(session, images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.model_state.startswith("stopped"))
        assert "corrupt" in app.model_state
    session.close()


async def test_the_import_key_enrols_a_folder_of_people_and_rematches_the_queue(
        tmp_path: Path, pipeline: Pipeline, identity_photos) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(identity_photos["Juanes"][0], inbox / "juanes.jpg")
    people = tmp_path / "people"
    for name in ("Juanes", "Jon_Voight"):
        (people / name).mkdir(parents=True)
        for photo in identity_photos[name][1:]:
            shutil.copy2(photo, people / name / photo.name)
    (people / ".hidden").mkdir()  # ignored, as in id_bank/
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: states(app).get("juanes.jpg", ("",))[0] == "to review")
        assert app.triage.query_one("#hint").display  # the empty bank says how to fill it
        sha = app.session.photos()[0].sha256
        assert app.session.faces(sha)[0].status == "unknown"
        await pilot.press("i", *str(people), "enter")
        await wait_for(pilot, lambda: app.session.faces(sha)[0].status == "known")
        assert {i.name for i in app.session.bank.identities()} == {"Juanes", "Jon_Voight"}
        assert len(list((tmp_path / "id_bank/Juanes").iterdir())) == 2
        await wait_for(pilot, lambda: not app.triage.query_one("#hint").display)
        assert "Juanes" in app.triage.photo_list.get_cell(sha, 4)


async def test_the_name_dialog_is_one_screen_set_up_anew_for_each_face(
        tmp_path: Path, pipeline: Pipeline, identity_photos, faces_dir: Path) -> None:
    from textual.widgets import Input, Label

    from faceid_tui.tui.modals import NameScreen

    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", inbox / "pair.jpg")
    app = FaceIdApp(make_session(tmp_path, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: states(app).get("pair.jpg", ("",))[0] == "to review")
        faces = app.triage.query_one("#faces")
        await pilot.pause()
        footer_keys = list(app.triage.query("FooterKey"))
        asked = []
        for row, typed in ((0, "Someone"), (1, "Kit")):
            faces.move_cursor(row=row)
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, NameScreen))
            dialog = app.screen
            asked.append(dialog)
            face = app.triage.selected_face()
            field = dialog.query_one("#name-input", Input)
            # This face's question and name, not what the last question left behind.
            assert str(dialog.query_one("#dialog-title", Label).render()) == (
                f"Name face {face.number}")
            assert field.value == face.name
            assert app.focused is field
            await pilot.press(*typed)
            assert field.value == typed  # the suggested name is replaced, as in a new dialog
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.triage)
        assert asked[0] is asked[1]  # kept between questions, not built again
        await pilot.pause()
        # Back from the dialog the keys are the same: the footer was not rebuilt.
        assert footer_keys and list(app.triage.query("FooterKey")) == footer_keys
        assert {f.status for f in app.session.faces(app.triage.current_sha)} == {"known"}


async def test_rows_added_to_a_long_list_are_drawn_without_a_layout_of_the_screen(
        faces_dir: Path) -> None:
    from textual.app import App, ComposeResult

    from faceid_tui.tui.row_list import Column, RowList

    names = sorted(p.name for p in (faces_dir / "identities").rglob("*.jpg"))[:40]

    class OneList(App[None]):
        def compose(self) -> ComposeResult:
            yield RowList([Column("photo", None)], lambda key: (key,), id="rows")

    app = OneList()
    async with app.run_test(size=(40, 12)) as pilot:
        rows = app.query_one(RowList)
        layouts = []
        original = rows.refresh

        def counting_refresh(*regions, **options):
            if options.get("layout"):
                layouts.append(len(rows.keys))
            return original(*regions, **options)

        rows.refresh = counting_refresh
        for name in names[:5]:
            rows.append(name)
        await pilot.pause()
        assert names[4] in app.export_screenshot()  # an appended row on screen is drawn
        for name in names[5:20]:
            rows.append(name)
        await pilot.pause()
        assert rows.show_vertical_scrollbar  # past the window: its one layout is done now
        layouts.clear()
        for name in names[20:]:
            rows.append(name)
        await pilot.pause()
        assert layouts == []  # no row asked for a layout of the screen
        assert rows.virtual_size.height == len(names) + 1  # the header line and every row
        rows.action_jump(-1)
        await pilot.pause()
        assert rows.cursor_key == names[-1] and names[-1] in app.export_screenshot()


async def test_the_footer_follows_the_keys_of_the_focused_list(faces_dir: Path) -> None:
    from textual.app import App, ComposeResult
    from textual.binding import Binding
    from textual.widgets import Static

    from faceid_tui.tui.key_footer import KeyFooter

    class Photos(Static, can_focus=True):
        BINDINGS: ClassVar = [Binding("x", "noop", "Reject")]

    class People(Static, can_focus=True):
        BINDINGS: ClassVar = [Binding("m", "noop", "Merge")]

    class TwoLists(App[None]):
        def compose(self) -> ComposeResult:
            yield Photos(str(next((faces_dir / "group_photos").glob("*.jpg")).name))
            yield People("people", id="first")
            yield People("more people", id="second")
            yield KeyFooter()

    app = TwoLists()
    async with app.run_test(size=(60, 8)) as pilot:
        await pilot.pause()
        labels = lambda: {key.description for key in app.query("FooterKey")}  # noqa: E731
        assert "Reject" in labels() and "Merge" not in labels()
        app.query_one("#first").focus()
        await pilot.pause()
        assert "Merge" in labels() and "Reject" not in labels()
        shown = list(app.query("FooterKey"))
        app.query_one("#second").focus()  # a focus change that shows the same keys
        await pilot.pause()
        assert list(app.query("FooterKey")) == shown
