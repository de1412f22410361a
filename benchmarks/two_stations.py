"""Two stations on one shared bank for a while: the real app's session code in two processes,
each registering, processing and naming photos into identities both use, at once.

    .venv/bin/python benchmarks/two_stations.py [--seconds 60] [--lfw DIR] [--url URL]

Each station takes its own LFW photos (people with 2+ images, alternating between stations),
and names each photo's face after its person, so both stations enrol into the same identities
at the same moments. At the end, from a third connection: samples in the bank against the
enrolments the stations reported (lost = reported but absent, duplicated = the same content
twice under one identity), decisions in the shared ledger against the decisions made, and
whether each station's bank saw identities only the other one created. Without ``--url`` a
PostgreSQL is started from pgserver in a temporary folder. Numbers are printed, nothing is
asserted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def station(url: str, name: str, photos: list[tuple[str, str]], seconds: float, root: str,
            report: str) -> None:
    from faceid_tui.bank.shared_bank import SharedBank
    from faceid_tui.config import Settings, build_pipeline
    from faceid_tui.triage.ledger import LEDGER_NAME, Ledger
    from faceid_tui.triage.session import TriagePaths, TriageSession
    from faceid_tui.triage.shared_ledger import SharedLedger

    pipeline = build_pipeline(Settings(models_dir=REPO / "face_models", threads=1))
    pipeline.load()
    ledger = Ledger(Path(root) / name / LEDGER_NAME)
    ledger.shared = SharedLedger(url, station=name)
    inbox = Path(root) / name / "inbox"
    inbox.mkdir(parents=True)
    session = TriageSession(pipeline, SharedBank(url, pipeline), ledger,
                            TriagePaths(inbox, Path(root) / name / "out"))
    session.start()
    decisions, seen_names, own_names = 0, set(), set()
    deadline = time.monotonic() + seconds
    for path, person in photos:
        if time.monotonic() > deadline:
            break
        copy = inbox / Path(path).name
        shutil.copy2(path, copy)
        sha = session.register(copy)
        if sha is None:
            continue
        session.process(session.queued())
        faces = session.faces(sha)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        session.name_face(face.face_id, person)
        own_names.add(person)
        decisions += 1
        for other in faces:
            if other.face_id != face.face_id:
                session.reject(other.face_id)
                decisions += 1
        seen_names.update(session.bank.store.identity_names())
    time.sleep(3.0)  # the other station's last enrolments, then what this one sees
    seen_names.update(session.bank.store.identity_names())
    # What this station's decisions put into the bank, as its own ledger recorded them.
    enrolled_paths = sorted(face.enrolled_path for face in ledger.faces() if face.enrolled_path)
    Path(report).write_text(json.dumps({"enrolled": len(enrolled_paths),
                                        "enrolled_paths": enrolled_paths,
                                        "decisions": decisions,
                                        "seen": sorted(seen_names), "own": sorted(own_names)}))
    session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--lfw", type=Path, default=REPO.parent / "shared" / "lfw")
    parser.add_argument("--url")
    args = parser.parse_args()
    people = defaultdict(list)
    for photo in sorted(args.lfw.rglob("*.jpg")):
        people[photo.parent.name].append(photo)
    photos = [(str(p), person.replace("_", " ")) for person, images in sorted(people.items())
              if len(images) >= 2 for p in images[:4]]
    shares = [photos[0::2], photos[1::2]]  # a person's photos go to both stations
    with tempfile.TemporaryDirectory() as scratch:
        url = args.url
        if url is None:
            from faceid_tui.bank.local_postgres import start_local_postgres

            url = start_local_postgres(Path(scratch) / "pg", keep_running=False)
        from faceid_tui.bank.postgres_store import PostgresBankStore

        PostgresBankStore(url).close()  # the schema, once
        context = multiprocessing.get_context("spawn")
        reports = [Path(scratch) / f"station-{i}.json" for i in range(2)]
        processes = [context.Process(target=station, args=(url, f"desk-{i}", shares[i],
                                                           args.seconds, scratch,
                                                           str(reports[i])))
                     for i in range(2)]
        started = time.perf_counter()
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        wall = time.perf_counter() - started
        results = [json.loads(report.read_text()) for report in reports]
        store = PostgresBankStore(url)
        records = store.photos()
        duplicates = sum(count - 1 for count in
                         Counter((r.identity, r.sha256) for r in records).values() if count > 1)
        import psycopg

        with psycopg.connect(url) as connection:
            shared_decisions = connection.execute(
                "SELECT station, count(*) FROM station_decisions GROUP BY station "
                "ORDER BY station").fetchall()
        reported = [path for r in results for path in r["enrolled_paths"]]
        in_bank = {r.rel_path for r in records}
        lost = [path for path in reported if path not in in_bank]
        twice = len(reported) - len(set(reported))  # two stations given one file name
        names = set(store.identity_names())
        print(f"two stations for {args.seconds:.0f} s ({wall:.0f} s with start-up): "
              f"{[r['decisions'] for r in results]} decisions, "
              f"{[r['enrolled'] for r in results]} enrolments")
        print(f"bank: {len(records)} samples for {len(reported)} enrolments the stations "
              f"recorded: lost {len(lost)}, one file for two enrolments {twice}, extra "
              f"{len(in_bank - set(reported))}, same content twice in one identity "
              f"{duplicates}; {len(names)} identities")
        print(f"shared ledger decisions: {dict(shared_decisions)} for "
              f"{[r['decisions'] for r in results]} made")
        for number, result in enumerate(results):
            others = set(results[1 - number]["own"]) - set(result["own"])
            print(f"desk-{number} saw {len(others & set(result['seen']))} of the {len(others)} "
                  "identities only the other desk named")
        store.close()


if __name__ == "__main__":
    main()
