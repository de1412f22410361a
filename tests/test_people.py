"""People to name: groups of undecided faces on real photos (no bank), the rules they keep
(never two faces of one photo, never a face the user took out), naming / rejecting / merging a
group with one undo, and groups kept across a restart without grouping again."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from textual.pilot import Pilot

from faceid_tui.engine.decode import load_rgb
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.triage.cluster_eval import SHUFFLED_GRID, faceid_method
from faceid_tui.triage.clustering import (
    ClusterChange,
    ClusterError,
    FaceClusters,
    cluster_vectors,
)
from faceid_tui.triage.ledger import CONFIRMED, REJECTED, REVIEWED
from faceid_tui.triage.session import TriageSession
from faceid_tui.tui.app import FaceIdApp
from faceid_tui.tui.people_screen import PeopleScreen

from .tui_helpers import make_session, seed_bank, wait_for

SEPARATOR = "--"  # inbox file names are "<identity>--<original name>"


@pytest.fixture(scope="module")
def processed_drop(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline,
                   identity_photos: dict[str, list[Path]]) -> Path:
    """Every dev identity photo (19 people, 67 photos) dropped into one inbox and processed
    once; each test works on its own copy of the folder."""
    root = tmp_path_factory.mktemp("drop")
    inbox = root / "inbox"
    inbox.mkdir()
    for name, photos in identity_photos.items():
        for photo in photos:
            shutil.copy2(photo, inbox / f"{name}{SEPARATOR}{photo.name}")
    session = make_session(root, pipeline)
    for path in sorted(inbox.iterdir()):
        session.register(path)
    session.process(session.queued())
    session.close()
    return root


@pytest.fixture
def session_root(processed_drop: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(processed_drop, root)
    return root


def identity_of(session: TriageSession, sha: str) -> str:
    path = session.photo_path(sha)
    assert path is not None
    return path.name.split(SEPARATOR)[0]


def group_identities(session: TriageSession) -> dict[int, list[str]]:
    return {view.group_id: [identity_of(session, face.photo_sha) for face in view.faces]
            for view in session.group_views()}


def largest_face_ids(session: TriageSession) -> dict[str, list[int]]:
    """identity -> the id of the largest face in each of its photos (its own face: a few
    photos show someone else too)."""
    found: dict[str, list[int]] = defaultdict(list)
    for photo in session.photos():
        faces = session.faces(photo.sha256)
        if faces:
            biggest = max(faces, key=lambda f: f.box[2] * f.box[3])
            found[identity_of(session, photo.sha256)].append(biggest.face_id)
    return found


def test_each_identity_dropped_together_forms_one_group_and_no_group_mixes_two(
        session_root: Path, pipeline: Pipeline) -> None:
    session = make_session(session_root, pipeline)
    groups = group_identities(session)
    assert len(groups) >= 15
    for names in groups.values():
        assert len(set(names)) == 1, f"a group mixes {sorted(set(names))}"
    for name, face_ids in largest_face_ids(session).items():
        homes = {session.group_of(face_id) for face_id in face_ids}
        assert len(face_ids) >= 2
        assert len(homes) == 1 and None not in homes, f"{name}'s faces are split: {homes}"
    session.close()


def test_naming_a_group_enrols_it_decides_every_face_and_one_undo_restores_all(
        session_root: Path, pipeline: Pipeline) -> None:
    session = make_session(session_root, pipeline)
    clooney = largest_face_ids(session)["George_Clooney"]
    group = session.group_of(clooney[0])
    assert group is not None
    before = {v.group_id: [f.face_id for f in v.faces] for v in session.group_views()}

    named = session.name_group(group, "George Clooney")
    assert named == len(before[group]) == 5
    assert session.identity_names() == ["George Clooney"]
    samples = list((session_root / "id_bank" / "George Clooney").glob("*.jpg"))
    assert len(samples) == 3  # the group's most typical faces, not all five
    for face_id in before[group]:
        sha = session.ledger.face(face_id).photo_sha
        view = next(f for f in session.faces(sha) if f.face_id == face_id)
        assert (view.status, view.name) == (CONFIRMED, "George Clooney")
        photo = session.photo(sha)
        assert photo is not None and photo.state == REVIEWED
        sidecar = session_root / "out" / (session.photo_path(sha).stem + ".faceid.json")
        assert json.loads(sidecar.read_text())["faces"][0]["name"] == "George Clooney"
    assert group not in {v.group_id for v in session.group_views()}

    assert session.undo() == "undid the group naming (George Clooney)"
    assert session.identity_names() == []
    assert not (session_root / "id_bank" / "George Clooney").exists()
    after = {v.group_id: [f.face_id for f in v.faces] for v in session.group_views()}
    assert {g: sorted(f) for g, f in after.items()} == {g: sorted(f) for g, f in before.items()}
    session.close()


def test_rejecting_and_merging_groups_undo_one_step_each(session_root: Path,
                                                         pipeline: Pipeline) -> None:
    session = make_session(session_root, pipeline)
    faces = largest_face_ids(session)
    juanes, voight = (session.group_of(faces[n][0]) for n in ("Juanes", "Jon_Voight"))
    assert juanes is not None and voight is not None and juanes != voight
    members = {v.group_id: {f.face_id for f in v.faces} for v in session.group_views()}

    assert session.reject_group(juanes) == len(members[juanes])
    for face_id in members[juanes]:
        assert session.ledger.face(face_id).decision == REJECTED
    tubby = session.group_of(faces["Tubby_Smith"][0])
    assert tubby is not None
    assert session.merge_groups(voight, tubby) == voight
    merged = next(v for v in session.group_views() if v.group_id == voight)
    assert {identity_of(session, f.photo_sha) for f in merged.faces} == {"Jon_Voight",
                                                                         "Tubby_Smith"}
    assert session.undo() == "undid the group merge"
    assert session.undo() == "undid the group rejection"
    after = {v.group_id: {f.face_id for f in v.faces} for v in session.group_views()}
    assert after == members
    assert all(session.ledger.face(f).decision is None for f in members[juanes])
    session.close()


def test_a_decision_does_not_wait_for_the_grouping_and_the_groups_follow_it(
        session_root: Path, pipeline: Pipeline) -> None:
    # While a queue drains, the processing thread groups each stored chunk holding only the
    # groups' lock: a reject must go through meanwhile, and the groups take it up after.
    session = make_session(session_root, pipeline)
    face = largest_face_ids(session)["Juanes"][0]
    assert session.group_of(face) is not None
    with session._groups_lock:  # a long grouping in another thread
        decided = threading.Thread(target=session.reject, args=(face,),
                                   kwargs={"defer": True}, daemon=True)
        decided.start()
        decided.join(timeout=60)
        assert not decided.is_alive(), "the reject waited for the grouping"
    assert session.ledger.face(face).decision == REJECTED
    session.finish_deferred()
    assert session.group_of(face) is None
    assert face not in {f.face_id for v in session.group_views() for f in v.faces}
    session.close()


def test_an_older_reading_of_a_photo_never_undoes_a_newer_one(session_root: Path,
                                                               pipeline: Pipeline) -> None:
    # A grouping that read a photo's faces before a decision on it, and reaches the groups
    # after the decision's own grouping, must leave that photo alone (else the decided face
    # would come back into a group and stay there).
    session = make_session(session_root, pipeline)
    face = largest_face_ids(session)["Juanes"][0]
    sha = session.ledger.face(face).photo_sha
    group = session.group_of(face)
    assert group is not None
    with session._groups_lock:
        session._regroup([sha])
        older = threading.Thread(target=session._settle_groups, daemon=True)
        older.start()  # reads the photo (face undecided), then waits for the groups' lock
        for _ in range(6000):
            if not session._regroup_due:
                break
            time.sleep(0.01)
        assert not session._regroup_due, "the first grouping never read the photo"
        session.reject(face)  # its own grouping runs now (this thread holds the lock)
        assert session.group_of(face) is None
    older.join(timeout=60)
    assert not older.is_alive()
    assert session.group_of(face) is None
    assert session.ledger.face(face).decision == REJECTED
    session.close()


def test_a_face_taken_out_never_rejoins_and_a_restart_keeps_the_groups_without_regrouping(
        session_root: Path, pipeline: Pipeline, identity_photos: dict[str, list[Path]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    session = make_session(session_root, pipeline)
    marc = largest_face_ids(session)["Marc_Grossman"]
    group = session.group_of(marc[0])
    assert session.detach_from_group(marc[0]) == group
    assert session.group_of(marc[0]) != group
    # Another photo of him arrives: the group grows, the face taken out stays out.
    arrival = session_root / "inbox" / f"Marc_Grossman{SEPARATOR}again.jpg"
    # A new photo (a mirror image of one still in the group, not of the face taken out).
    image = cv2.flip(cv2.imread(str(identity_photos["Marc_Grossman"][3])), 1)
    cv2.imwrite(str(arrival), image)
    session.register(arrival)
    session.process(session.queued())
    sha = session.ledger.sha_for_path(str(arrival.absolute()))
    assert sha is not None
    newcomer = session.faces(sha)[0].face_id
    assert session.group_of(newcomer) == group
    assert session.group_of(marc[0]) != group
    kept = {v.group_id: sorted(f.face_id for f in v.faces) for v in session.group_views()}
    session.close()

    def no_grouping(self: FaceClusters, seeds: list[int]) -> None:
        raise AssertionError("a restart grouped faces again")

    monkeypatch.setattr(FaceClusters, "_agglomerate", no_grouping)
    reopened = make_session(session_root, pipeline)
    assert {v.group_id: sorted(f.face_id for f in v.faces)
            for v in reopened.group_views()} == kept
    monkeypatch.undo()
    with pytest.raises(ClusterError):  # the bar holds for a merge by hand too
        home = reopened.group_of(marc[0])
        assert home is not None
        reopened.merge_groups(group, home)
    assert reopened.undo() == "undid the group removal"
    assert reopened.group_of(marc[0]) == group
    reopened.close()


def test_two_faces_of_one_photo_are_never_one_group(tmp_path: Path, pipeline: Pipeline,
                                                    identity_photos: dict[str, list[Path]]
                                                    ) -> None:
    """Two photos of one person side by side in one image (and a third photo alone): the
    pair is as alike as faces get, yet they may not share a group."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first, second, third = (load_rgb(p) for p in identity_photos["Paul_Tagliabue"][:3])
    height = min(first.shape[0], second.shape[0])
    pair = np.hstack([first[:height], second[:height]])
    cv2.imwrite(str(inbox / "pair.jpg"), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(inbox / "third.jpg"), cv2.cvtColor(third, cv2.COLOR_RGB2BGR))
    session = make_session(tmp_path, pipeline)
    for path in sorted(inbox.iterdir()):
        session.register(path)
    session.process(session.queued())
    pair_sha = session.ledger.sha_for_path(str((inbox / "pair.jpg").absolute()))
    assert pair_sha is not None
    pair_faces = [f.face_id for f in session.faces(pair_sha)]
    assert len(pair_faces) == 2
    homes = [session.group_of(f) for f in pair_faces]
    assert homes[0] != homes[1]
    assert len(session.group_views()) == 1  # the third photo joined one of the two
    session.close()


def test_chunks_give_the_groups_one_run_gives_and_the_scores_are_consistent(
        session_root: Path, pipeline: Pipeline) -> None:
    session = make_session(session_root, pipeline)
    rows = [face for photo in session.photos() for face in session.ledger.faces(photo.sha256)]
    vectors = np.stack([face.embedding for face in rows])
    threshold = session.people.threshold
    labels = cluster_vectors(vectors, [face.photo_sha for face in rows], threshold)
    chunked = FaceClusters(threshold, vectors.shape[1])
    for start in range(0, len(rows), 7):
        chunked.add([(i, rows[i].photo_sha, vectors[i])
                     for i in range(start, min(start + 7, len(rows)))])
    by_run = {frozenset(np.nonzero(labels == label)[0].tolist()) for label in set(labels) - {-1}}
    assert {frozenset(chunked.members(g)) for g in chunked.groups()} == by_run
    group = chunked.groups()[0]
    members = sorted(chunked.members(group))
    block = vectors[members] @ vectors[members].T
    pairs = block[np.triu_indices(len(members), 1)]
    assert chunked.cohesion(group) == pytest.approx(float(pairs.mean()), abs=1e-5)
    assert pairs.mean() >= threshold
    session.close()


def _look_alike(vectors: dict[str, np.ndarray], person: str) -> tuple[str, int, float]:
    """The other person whose face is closest to ``person``'s first face: (name, which face,
    score)."""
    first = vectors[person][0]
    return max(((name, i, float(first @ v)) for name, rows in vectors.items()
                if name != person for i, v in enumerate(rows)), key=lambda t: t[2])


def _real_vectors(session: TriageSession) -> dict[str, np.ndarray]:
    """identity -> the unit vectors of its own faces (the largest in each photo)."""
    out = {}
    for name, face_ids in largest_face_ids(session).items():
        rows = np.stack([session.ledger.face(f).embedding for f in face_ids]).astype(np.float32)
        out[name] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def test_a_face_that_joined_a_look_alike_before_its_own_people_arrived_moves_to_them(
        session_root: Path, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrival order: one photo of A with its closest look-alike B among the dev people (the
    threshold set just under their score, so the two become a group), then A's other photos.
    A's face belongs with A's people once they are there; a group the user merged keeps its
    faces all the same."""
    session = make_session(session_root, pipeline)
    vectors = _real_vectors(session)
    session.close()

    def premise(name: str) -> bool:
        """A's other photos agree with each other, and with A's first face more than that
        face agrees with its look-alike."""
        rows, score = vectors[name], _look_alike(vectors, name)[2]
        pairs = (rows[1:] @ rows[1:].T)[np.triu_indices(len(rows) - 1, 1)]
        return bool(pairs.min() >= score - 0.01 and (rows[1:] @ rows[0]).mean() >= score + 0.02)

    people = [n for n in vectors if len(vectors[n]) >= 3 and premise(n)]
    assert people, "no dev person's photos agree more than their first face's look-alike"
    person = max(people, key=lambda n: _look_alike(vectors, n)[2])
    other, which, score = _look_alike(vectors, person)
    own = vectors[person]
    threshold = score - 0.01

    def arrive(clusters: FaceClusters) -> None:
        clusters.add([(0, "a0", own[0]), (100, "b", vectors[other][which])])
        assert clusters.group_of(0) == clusters.group_of(100)  # the early mistake
        clusters.add([(i, f"a{i}", own[i]) for i in range(1, len(own))])

    clusters = FaceClusters(threshold, own.shape[1])
    arrive(clusters)
    assert clusters.members(clusters.group_of(0)) == set(range(len(own)))  # A's, all of it
    assert clusters.members(clusters.group_of(100)) == {100}  # B alone again

    # Without the move (as before it was made) the early mistake stays.
    monkeypatch.setattr(FaceClusters, "_settle", lambda self, grown: ClusterChange())
    stuck = FaceClusters(threshold, own.shape[1])
    arrive(stuck)
    assert stuck.group_of(0) == stuck.group_of(100)
    monkeypatch.undo()

    # A merge by hand is what the user wants: B's face stays when A's people arrive.
    # (Nothing merges on its own while two faces are held: the user does it.)
    pinned = FaceClusters(lambda held: 1.0 if held <= 2 else threshold, own.shape[1])
    pinned.add([(0, "a0", own[0]), (100, "b", vectors[other][which])])
    assert pinned.group_of(0) != pinned.group_of(100)
    pinned.merge(pinned.group_of(0), pinned.group_of(100))
    pinned.add([(i, f"a{i}", own[i]) for i in range(1, len(own))])
    hand = pinned.group_of(0)
    assert hand is not None and pinned.group_of(100) == hand
    assert pinned.pinned() == [hand]
    restored = FaceClusters.restore(threshold, own.shape[1], [
        (0, "a0", own[0], hand), (100, "b", vectors[other][which], hand)],
        pinned=pinned.pinned())
    assert restored.pinned() == [hand]


def test_a_face_the_group_grew_away_from_leaves_it(session_root: Path,
                                                   pipeline: Pipeline) -> None:
    """A face of A joins one photo of B (the threshold set under their score and under every
    score between B's photos); B's other photos arrive and the group is B's: A's face, which
    the rest no longer reaches at the threshold, stands alone again."""
    session = make_session(session_root, pipeline)
    vectors = _real_vectors(session)
    session.close()
    found = []  # (threshold, A's face, B, B's photo that A's face is closest to)
    for person, rows in vectors.items():
        for other, theirs in vectors.items():
            if other == person or len(theirs) < 3:
                continue
            scores = theirs @ rows.T  # B's photos × A's photos
            which, face = np.unravel_index(int(scores.argmax()), scores.shape)
            pairs = (theirs @ theirs.T)[np.triu_indices(len(theirs), 1)]
            threshold = min(float(scores[which, face]), float(pairs.min())) - 0.005
            if float(np.delete(scores[:, face], which).mean()) < threshold - 0.03:
                found.append((threshold, rows[face], theirs, int(which)))
    assert found, "no two dev people are close enough for the premise"
    threshold, stray, theirs, which = max(found, key=lambda t: t[0])
    clusters = FaceClusters(threshold, theirs.shape[1])
    clusters.add([(0, "a", stray), (100 + which, f"b{which}", theirs[which])])
    assert clusters.group_of(0) == clusters.group_of(100 + which)  # the early mistake
    clusters.add([(100 + i, f"b{i}", theirs[i]) for i in range(len(theirs)) if i != which])
    assert clusters.members(clusters.group_of(100 + which)) == {100 + i
                                                                for i in range(len(theirs))}
    assert clusters.members(clusters.group_of(0)) == {0}


def test_the_eval_in_random_arrival_order_labels_faces_in_the_callers_order(
        session_root: Path, pipeline: Pipeline) -> None:
    """``faceid eval clusters``' shuffled method feeds the faces in a random order and must
    hand the labels back in the caller's: on the dev people (clearly apart) every group is
    one person, and nearly every person is one group, whatever the order (labels handed back
    in the shuffled order would mix people)."""
    session = make_session(session_root, pipeline)
    vectors = _real_vectors(session)
    session.close()
    names = [name for name, rows in vectors.items() for _ in rows]
    stacked = np.concatenate(list(vectors.values()))
    method = faceid_method(pipeline.model_id, None, SHUFFLED_GRID, chunk=7)
    for param in method.grid:
        labels = method.run(stacked, param)
        for label in set(labels.tolist()) - {-1}:
            assert len({names[i] for i in np.nonzero(labels == label)[0]}) == 1
        whole = [name for name in vectors
                 if {int(labels[i]) for i, n in enumerate(names) if n == name} - {-1}
                 and len({int(labels[i]) for i, n in enumerate(names) if n == name}) == 1]
        assert len(whole) >= len(vectors) - 2, f"order {param}: only {whole} whole"


def test_a_merge_by_hand_survives_a_restart_and_new_arrivals(
        session_root: Path, pipeline: Pipeline, identity_photos: dict[str, list[Path]]) -> None:
    session = make_session(session_root, pipeline)
    faces = largest_face_ids(session)
    voight, tubby = (session.group_of(faces[n][0]) for n in ("Jon_Voight", "Tubby_Smith"))
    assert voight is not None and tubby is not None
    kept = session.merge_groups(voight, tubby)
    merged = {f.face_id for v in session.group_views() if v.group_id == kept for f in v.faces}
    session.close()
    reopened = make_session(session_root, pipeline)
    arrival = session_root / "inbox" / f"Tubby_Smith{SEPARATOR}again.jpg"
    image = cv2.flip(cv2.imread(str(identity_photos["Tubby_Smith"][0])), 1)
    cv2.imwrite(str(arrival), image)
    reopened.register(arrival)
    reopened.process(reopened.queued())
    assert merged <= {f.face_id for v in reopened.group_views() if v.group_id == kept
                      for f in v.faces}
    # Undo takes the merge back, pin included: the two groups are two again.
    assert reopened.undo() == "undid the group merge"
    assert kept not in reopened.people.clusters.pinned()
    reopened.close()


# -- the screen -----------------------------------------------------------------------------
async def test_people_screen_names_a_group_with_one_key_and_undoes_it(
        session_root: Path, pipeline: Pipeline) -> None:
    app = FaceIdApp(make_session(session_root, pipeline), images="none", watch=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "FaceNet" in app.model_state)
        await pilot.press("p")
        screen = app.screen
        assert isinstance(screen, PeopleScreen)
        await wait_for(pilot, lambda: screen.group_list.row_count >= 15)
        groups = screen.group_list.row_count
        top = screen.group_list.cursor_key
        assert top is not None
        members = [f.face_id for f in screen._views[top].faces]
        await pilot.press("n", *"Ann Example", "enter")
        await wait_for(pilot, lambda: app.session.identity_names() == ["Ann Example"])
        await wait_for(pilot, lambda: top not in screen.group_list)
        assert screen.group_list.row_count == groups - 1
        assert all(app.session.ledger.face(f).decided_name == "Ann Example" for f in members)
        await pilot.press("z")
        await wait_for(pilot, lambda: top in screen.group_list)
        assert app.session.identity_names() == []
        assert all(app.session.ledger.face(f).decision is None for f in members)
        await pilot.press("escape")
        assert app.screen is app.triage
    app.session.close()


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_people_screen_snapshot(snap_compare, session_root: Path, pipeline: Pipeline,
                                identity_photos: dict[str, list[Path]],
                                size: tuple[int, int]) -> None:
    seed_bank(session_root, identity_photos, "Juanes")  # one group shows its best match
    app = FaceIdApp(make_session(session_root, pipeline), images="halfcell", watch=False)

    async def open_people(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: "FaceNet" in app.model_state)
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PeopleScreen)
                       and app.screen.group_list.row_count >= 15)
        await pilot.pause(0.5)  # the thumbnail sheet

    assert snap_compare(app, terminal_size=size, run_before=open_people)
    app.session.close()
