"""People to name at scale: grouping cost on 10⁴ pending faces, a restart, and naming a
50-face group in the real app.

    .venv/bin/python benchmarks/people_groups.py [--embeddings FILE.npz] [--json FILE]

* **add 100 to 10⁴** — the LFW faces (``../shared/lfw``, embedded by the default pipeline;
  ``--embeddings`` reuses the cache of ``faceid eval clusters``) grouped as the app does, 64 at
  a time, up to 10,000 pending faces (LFW has 8,476: the rest are copies of LFW faces with a
  little noise, renormalised, so the pool is as crowded as real faces make it); then 100 more
  real faces are added in one call, timed (median of 5 rounds, each from the same state).
* **restart** — the same groups restored from what the ledger keeps (faces, group ids, bars,
  offsets): timed, and the merges run while restoring counted (0 expected: nothing is
  recomputed).
* **naming a 50-face group** — 50 photos of one person (21 LFW photos of Jennifer Aniston,
  mirrored and cropped to make 50 distinct files) and 30 other LFW photos dropped into the
  real app's inbox (Pilot, 80×24, no previews); once processed, the people-to-name screen is
  opened, the 50-face group selected and ``n`` + a name + ``enter`` sent as the terminal
  driver sends keys. Timed: from ``enter`` to the first frame without the group's row (the
  screen updated), and to the session having decided all 50 faces and the screen redrawn
  with the groups read again.

Figures are printed (``--json FILE`` writes them), never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from faceid_tui.bank.thresholds import group_threshold  # noqa: E402
from faceid_tui.triage.clustering import FaceClusters  # noqa: E402

SHARED = REPO.parent / "shared"
POOL = 10_000


def lfw_vectors(cache: Path | None) -> tuple[np.ndarray, list[str], list[str], str]:
    from faceid_tui.bank.open_set_eval import load_or_embed_lfw
    from faceid_tui.config import Settings, build_pipeline

    pipeline = build_pipeline(Settings(models_dir=REPO / "face_models"))
    embeddings = load_or_embed_lfw(pipeline, SHARED / "lfw", cache)
    return (embeddings.vectors, embeddings.identities, embeddings.paths,
            pipeline.model_id)


def grouping_figures(vectors: np.ndarray, model_id: str) -> dict[str, float]:
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vectors))
    newcomers, rest = vectors[order[:100]], vectors[order[100:]]
    extra = POOL - len(rest)
    copies = rest[rng.integers(0, len(rest), extra)] + rng.normal(0, 0.02, (extra, rest.shape[1]))
    pool = np.vstack([rest, copies / np.linalg.norm(copies, axis=1, keepdims=True)])

    def threshold(faces: int) -> float:
        return group_threshold(model_id, faces).value

    start = time.perf_counter()
    clusters = FaceClusters(threshold, pool.shape[1])
    for first in range(0, len(pool), 64):
        clusters.expected_faces = max(0, len(pool) - first - 64)
        clusters.add([(i, i, pool[i]) for i in range(first, min(first + 64, len(pool)))])
    grouped_s = time.perf_counter() - start
    kept = [(f, f, pool[f], clusters.group_of(f)) for f in range(len(pool))]
    bars = clusters.all_bars()
    offsets = {f: clusters.offset(f) or 0.0 for f in range(len(pool))}

    rounds = []
    for _ in range(5):
        state = FaceClusters.restore(threshold, pool.shape[1], kept, bars, clusters.next_id,
                                     offsets)
        began = time.perf_counter()
        state.add([(POOL + i, POOL + i, newcomers[i]) for i in range(100)])
        rounds.append(time.perf_counter() - began)

    merges = 0
    original = FaceClusters._merge_into

    def counting(self, keep, other, change):
        nonlocal merges
        merges += 1
        return original(self, keep, other, change)

    FaceClusters._merge_into = counting  # type: ignore[method-assign]
    began = time.perf_counter()
    restored = FaceClusters.restore(threshold, pool.shape[1], kept, bars, clusters.next_id,
                                    offsets)
    restore_s = time.perf_counter() - began
    FaceClusters._merge_into = original  # type: ignore[method-assign]
    same = ({frozenset(restored.members(g)) for g in restored.groups()}
            == {frozenset(clusters.members(g)) for g in clusters.groups()})
    return {"pool": len(pool), "real_faces": len(rest), "groups": len(clusters.groups()),
            "group_all_64_at_a_time_s": round(grouped_s, 2),
            "add_100_median_s": round(statistics.median(rounds), 3),
            "add_100_max_s": round(max(rounds), 3),
            "restore_s": round(restore_s, 3), "restore_merges": merges,
            "restore_same_groups": same}


def fifty_photos(identity: Path, target: Path) -> None:
    """50 distinct photos of one person from their LFW images: as they are, mirrored, and
    cropped (a tighter frame, scaled back)."""
    made = 0
    images = sorted(identity.glob("*.jpg"))
    for variant in ("as-is", "mirror", "crop"):
        for path in images:
            if made == 50:
                return
            image = cv2.imread(str(path))
            if variant == "mirror":
                image = cv2.flip(image, 1)
            elif variant == "crop":
                h, w = image.shape[:2]
                image = cv2.resize(image[h // 12:h - h // 12, w // 12:w - w // 12], (w, h))
            cv2.imwrite(str(target / f"{variant}-{path.name}"), image)
            made += 1


async def naming_figures(root: Path, others: list[Path]) -> dict[str, float | int | None]:
    from textual import events

    from faceid_tui.config import Settings, build_pipeline
    from faceid_tui.tui.app import FaceIdApp
    from faceid_tui.tui.people_screen import PeopleScreen

    sys.path.insert(0, str(REPO / "tests"))
    from tui_helpers import make_session

    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    fifty_photos(SHARED / "lfw/images/Jennifer_Aniston", inbox)
    for path in others:
        shutil.copy2(path, inbox / f"other-{path.name}")
    pipeline = build_pipeline(Settings(models_dir=REPO / "face_models"))
    app = FaceIdApp(make_session(root, pipeline), images="none", watch=False)
    frames: list[float] = []
    display = app._display

    def counted(screen, renderable) -> None:
        if renderable is not None:
            frames.append(time.perf_counter())
        return display(screen, renderable)

    app._display = counted  # type: ignore[method-assign]

    async def until(condition, timeout: float = 300.0) -> float | None:
        deadline = time.perf_counter() + timeout
        while not condition():
            if time.perf_counter() > deadline:
                return None
            await asyncio.sleep(0.002)
        return time.perf_counter()

    def send(key: str) -> None:
        char = {"enter": "\r"}.get(key, key if len(key) == 1 else None)
        app.post_message(events.Key(key, char))  # as the terminal driver does

    result: dict[str, float | int | None] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        session = app.session
        await until(lambda: session.counts().get("queued", 0) + session.counts().get(
            "processing", 0) == 0 and len(session.photos()) == 80)
        await pilot.press("p")
        screen = app.screen
        assert isinstance(screen, PeopleScreen)
        await until(lambda: screen.group_list.row_count > 0)
        views = dict(screen._views)
        biggest = max(views.values(), key=lambda v: v.size)
        result["group_faces"] = biggest.size
        key = str(biggest.group_id)
        screen.group_list.move_cursor(screen.group_list.index_of(key))
        screen.current = key
        await pilot.pause()
        for typed in ("n", *"Jennifer Aniston"):
            send(typed)
            await pilot.pause()
        members = [f.face_id for f in biggest.faces]
        pressed = time.perf_counter()
        send("enter")
        gone = await until(lambda: key not in screen.group_list, 10)
        shown = next((t for t in frames if gone and t >= gone), None)
        if shown is None and gone is not None:
            shown = await until(lambda: frames and frames[-1] >= gone, 5) and frames[-1]
        decided = await until(lambda: all(session.ledger.face(f).decision for f in members), 60)
        reread = await until(lambda: not screen._loading, 60)
        await pilot.pause()
        result["enter_to_row_gone_frame_ms"] = (round((shown - pressed) * 1000, 1)
                                                if shown else None)
        result["enter_to_all_decided_ms"] = (round((decided - pressed) * 1000, 1)
                                             if decided else None)
        result["enter_to_groups_reread_ms"] = (round((reread - pressed) * 1000, 1)
                                               if reread else None)
        result["named_faces"] = sum(1 for f in members
                                    if session.ledger.face(f).decided_name == "Jennifer Aniston")
    app.session.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embeddings", type=Path, help="LFW vector cache (.npz)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip", nargs="*", default=[], choices=["grouping", "naming"])
    args = parser.parse_args()
    figures: dict[str, object] = {}
    if "grouping" not in args.skip:
        vectors, _, _, model_id = lfw_vectors(args.embeddings)
        figures["grouping"] = grouping_figures(vectors, model_id)
        print("grouping:", json.dumps(figures["grouping"]), flush=True)
    if "naming" not in args.skip:
        others = sorted((SHARED / "lfw/images").glob("A*/*_0001.jpg"))[:30]
        with tempfile.TemporaryDirectory() as folder:
            figures["naming"] = asyncio.run(naming_figures(Path(folder), others))
        print("naming a group:", json.dumps(figures["naming"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
