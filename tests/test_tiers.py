"""The tiers of a match on real photos: known, likely, conflict, unknown, and which keys
confirm which (``a`` only known faces, enter one face of any named tier)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.pipeline import Pipeline

from .conftest import copy_identity
from .tui_helpers import make_session, seed_bank


def side_by_side(left: Path, right: Path, target: Path, height: int = 250) -> None:
    """One photo holding two photos, each resized to ``height`` pixels high."""
    halves = []
    for path in (left, right):
        image = load_rgb(path)
        width = round(image.shape[1] * height / image.shape[0])
        halves.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    collage = np.concatenate(halves, axis=1)
    cv2.imwrite(str(target), cv2.cvtColor(collage, cv2.COLOR_RGB2BGR))


def test_two_photos_of_one_person_in_one_photo_give_a_conflict_not_another_name(
        tmp_path: Path, bank_factory, identity_photos, pipeline: Pipeline) -> None:
    obama = identity_photos["barack_obama"]
    bank = bank_factory()
    for name, photos in identity_photos.items():
        copy_identity(bank.folder, name, photos[2:] if name == "barack_obama" else photos)
    bank.sync()
    collage = tmp_path / "collage.jpg"
    side_by_side(obama[0], obama[1], collage)
    result = next(pipeline.run([collage]))
    assert len(result.faces) == 2, result.faces
    matches = bank.matcher().match_photo(np.stack([f.embedding for f in result.faces]))
    # Both faces are named barack_obama: the better scored keeps its tier, the other is a
    # conflict; neither is given its runner-up (another person of the bank).
    assert [m.name for m in matches] == ["barack_obama", "barack_obama"]
    better = int(np.argmax([m.score for m in matches]))
    assert matches[better].status in ("known", "likely")
    assert matches[1 - better].status == "conflict"
    assert matches[1 - better].candidates[0].name == "barack_obama"


def test_a_confirms_known_faces_only_and_enter_confirms_a_likely_one(
        tmp_path: Path, pipeline: Pipeline, identity_photos, faces_dir: Path) -> None:
    seed_bank(tmp_path, identity_photos, "kit_harington", "rose_leslie")
    session = make_session(tmp_path, pipeline)
    (tmp_path / "inbox").mkdir()
    shutil.copy2(faces_dir / "group_photos/kit_with_rose.jpg", tmp_path / "inbox/pair.jpg")
    stranger = tmp_path / "inbox/stranger.jpg"
    shutil.copy2(identity_photos["Juanes"][0], stranger)
    session.start()
    for photo in sorted((tmp_path / "inbox").iterdir()):
        session.register(photo)
    session.process(session.queued())
    by_name = {Path(p.path).name: p.sha256 for p in session.photos()}
    pair, alone = by_name["pair.jpg"], by_name["stranger.jpg"]
    faces = session.faces(pair)
    assert sorted(f.status for f in faces) == ["known", "known"]
    # Put the open-set threshold between the two scores: the weaker face drops to likely,
    # its name still shown (as long as it stays above the suggestion threshold).
    weaker = min(faces, key=lambda f: f.score or 0.0)
    stronger = max(faces, key=lambda f: f.score or 0.0)
    assert weaker.score is not None and weaker.score >= session.matcher.likely_threshold
    session.set_threshold((weaker.score + (stronger.score or 0.0)) / 2)
    tiers = {f.face_id: (f.name, f.status) for f in session.faces(pair)}
    assert tiers[weaker.face_id] == (weaker.name, "likely")
    assert tiers[stronger.face_id] == (stronger.name, "known")
    # `a`: only the known face is confirmed.
    assert session.confirm_all_known(pair) == 1
    after = {f.face_id: f.status for f in session.faces(pair)}
    assert after == {stronger.face_id: "confirmed", weaker.face_id: "likely"}
    # enter on the likely face: confirmed (and enrolled) under its suggested name.
    session.confirm(weaker.face_id)
    assert all(f.status == "confirmed" for f in session.faces(pair))
    assert weaker.name in session.identity_names()
    # A stranger below the suggestion threshold has no name to confirm.
    (face,) = session.faces(alone)
    assert face.status == "unknown" and face.name is None
    with pytest.raises(Exception, match="no suggestion"):
        session.confirm(face.face_id)
    session.close()


def test_the_seed_tutorial_case_one_person_named_the_other_left_unnamed(
        bank_factory, identity_photos, faces_dir: Path, pipeline: Pipeline) -> None:
    """One person enrolled from two photos is named on a two-person photo; the other person,
    not enrolled, gets no name at all (not even a tentative one)."""
    bank = bank_factory()
    copy_identity(bank.folder, "kit_harington", identity_photos["kit_harington"][:2])
    bank.sync()
    result = next(pipeline.run([faces_dir / "group_photos/kit_with_rose.jpg"]))
    rose, kit = bank.matcher().match_photo(np.stack([f.embedding for f in result.faces]))
    assert (kit.name, kit.status) == ("kit_harington", "known")
    assert (rose.name, rose.status) == (None, "unknown")
