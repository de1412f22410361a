"""The shared bank on a real PostgreSQL + pgvector (pgserver, started by the fixture): the same
bank suite as the folder bank, concurrency of two stations, notifications, export/import,
the HNSW index, and the CLI pointed at a database URL."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from faceid_tui.bank.bank_base import BankBase
from faceid_tui.bank.export import export_bank
from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.importing import import_people
from faceid_tui.bank.postgres_store import PostgresBankStore
from faceid_tui.bank.shared_bank import SharedBank
from faceid_tui.bank.store import CachedEmbedding, PhotoRecord, SqliteBankStore
from faceid_tui.engine.pipeline import Pipeline
from faceid_tui.errors import BankError, InvalidNameError
from faceid_tui.fsutil import sha256_bytes

from .test_cli import faceid, json_lines


@pytest.fixture(params=["folder", "postgres"])
def open_any_bank(request: pytest.FixtureRequest, tmp_path: Path, pipeline: Pipeline):
    """Opens the same bank again and again (reopen = a restart): a folder bank, or a shared
    bank on a new PostgreSQL database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    opened: list[BankBase] = []

    def open_bank(with_pipeline: Pipeline = pipeline) -> BankBase:
        bank: BankBase = (SharedBank(url, with_pipeline) if url
                          else IdentityBank(tmp_path / "id_bank", with_pipeline))
        opened.append(bank)
        return bank

    yield open_bank
    for bank in opened:
        bank.close()


def test_enrolment_survives_a_restart_and_keeps_the_image(open_any_bank,
                                                           identity_photos) -> None:
    bank = open_any_bank()
    photos = identity_photos["Martha_Burk"][:2]
    results = bank.enrol_photos("Martha Burk", photos)
    assert [r.error for r in results] == [None, None]
    assert bank.enrol_photos("Martha Burk", photos[:1])[0].already_enrolled
    restarted = open_any_bank()
    assert restarted.sync().embedded == []  # enrolment stored the embeddings
    matcher = restarted.matcher()
    assert matcher.sample_count == 2 and matcher.identities == ["Martha Burk"]
    stored = {r.sha256 for r in restarted.identity_photos("Martha Burk")}
    assert stored == {sha256_bytes(p.read_bytes()) for p in photos}
    first = restarted.identity_photos("Martha Burk")[0].rel_path
    assert sha256_bytes(restarted.sample_image(first)) in stored


def test_a_photo_without_a_face_or_a_bad_name_enrols_nothing(open_any_bank, faces_dir,
                                                             identity_photos) -> None:
    bank = open_any_bank()
    (result,) = bank.enrol_photos("Dog", [faces_dir / "non_faces/dogs.jpg"])
    assert result.error and "no face" in result.error
    with pytest.raises(InvalidNameError):
        bank.enrol_photos("../escaped", identity_photos["Juanes"][:1])
    assert bank.identities() == []


def test_rename_merge_remove_survive_a_restart(open_any_bank, identity_photos) -> None:
    bank = open_any_bank()
    bank.enrol_photos("Tubby", identity_photos["Tubby_Smith"][:2])
    bank.enrol_photos("Tubby_Smith", identity_photos["Tubby_Smith"][2:])
    bank.enrol_photos("Juanes", identity_photos["Juanes"])
    bank.rename("Juanes", "Juanes Esteban")
    assert bank.merge("Tubby", "Tubby_Smith") == 2
    with pytest.raises(BankError, match="exists already"):
        bank.rename("Juanes Esteban", "Tubby_Smith")

    restarted = open_any_bank()
    assert restarted.sync().embedded == []
    assert {i.name: i.samples for i in restarted.identities()} == \
        {"Juanes Esteban": 3, "Tubby_Smith": 3}
    assert all(r.rel_path.startswith("Juanes Esteban/")
               for r in restarted.identity_photos("Juanes Esteban"))
    assert restarted.remove("Juanes Esteban") == 3
    assert [i.name for i in open_any_bank().identities()] == ["Tubby_Smith"]
    with pytest.raises(BankError, match="no identity"):
        restarted.remove("Juanes Esteban")


def test_a_face_of_a_group_photo_is_kept_as_a_crop(open_any_bank, pipeline: Pipeline,
                                                   faces_dir: Path) -> None:
    photo = faces_dir / "group_photos/2008_002079.jpg"
    (result,) = pipeline.run([photo])
    face = result.faces[0]
    bank = open_any_bank()
    enrolment = bank.enrol_face("Someone", photo, tuple(face.box.as_list()), face.embedding,
                                face_count=len(result.faces), face_number=1)
    assert enrolment.created_identity and enrolment.rel_path == "Someone/2008_002079-face1.jpg"
    assert len(bank.sample_image(enrolment.rel_path)) < photo.stat().st_size
    assert bank.matcher().sample_count == 1
    bank.remove_sample(enrolment.rel_path, drop_empty_identity=True)
    assert open_any_bank().identities() == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_embeddings_of_another_model_are_never_compared(kind: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    store = (SqliteBankStore(tmp_path / "bank.sqlite3") if kind == "sqlite"
             else PostgresBankStore(request.getfixturevalue("postgres_url")))
    store.put_photo(PhotoRecord("Ann/a.jpg", "Ann", "sha-a", 1, 1))
    store.put_photo(PhotoRecord("Bob/b.jpg", "Bob", "sha-b", 1, 1))
    store.put_embedding("sha-a", "model-1", CachedEmbedding(np.ones(4, np.float32) / 2, None, 1))
    store.put_embedding("sha-b", "model-2", CachedEmbedding(np.ones(4, np.float32) / 2, None, 1))
    names, _, matrix = store.samples("model-1")
    assert names == ["Ann"] and matrix.shape == (1, 4)
    assert store.cached_embedding("sha-b", "model-1") is None
    store.close()


def test_a_shared_bank_is_embedded_once_for_another_model(postgres_url: str, pipeline,
                                                          facenet_pipeline,
                                                          identity_photos) -> None:
    """A station with another model embeds the stored images (it has no folder to read)."""
    first = SharedBank(postgres_url, facenet_pipeline)
    first.enrol_photos("Juanes", identity_photos["Juanes"])
    first.close()
    station = SharedBank(postgres_url, pipeline)
    assert station.matcher().sample_count == 0
    report = station.sync()
    assert sorted(report.embedded) == sorted(r.rel_path for r in station.identity_photos("Juanes"))
    assert station.sync().embedded == [] and station.matcher().sample_count == 3
    station.close()


def test_export_and_import_round_trip(postgres_url: str, postgres_server: str, pipeline,
                                      identity_photos, tmp_path: Path) -> None:
    shared = SharedBank(postgres_url, pipeline)
    shared.enrol_photos("Jon Voight", identity_photos["Jon_Voight"])
    shared.enrol_photos("Juanes", identity_photos["Juanes"][:2])
    exported = export_bank(shared, tmp_path / "export")
    assert (exported.written, exported.identities) == (len(identity_photos["Jon_Voight"]) + 2, 2)
    assert export_bank(shared, tmp_path / "export").written == 0  # idempotent
    # The export is a folder bank as it stands, with the same contents.
    folder_bank = IdentityBank(tmp_path / "export", pipeline)
    folder_bank.sync()
    assert {(r.identity, r.sha256) for r in folder_bank.store.photos()} == \
        {(r.identity, r.sha256) for r in shared.store.photos()}
    folder_bank.close()
    # …and it loads into another database, once.
    import psycopg

    from faceid_tui.bank.local_postgres import database_url
    with psycopg.connect(postgres_server, autocommit=True) as connection:
        connection.execute("CREATE DATABASE round_trip_copy")
    copy = SharedBank(database_url(postgres_server, "round_trip_copy"), pipeline)
    assert import_people(copy, tmp_path / "export").enrolled == exported.written
    again = import_people(copy, tmp_path / "export")
    assert (again.enrolled, again.already) == (0, exported.written)
    assert copy.matcher().identities == ["Jon Voight", "Juanes"]
    copy.close()
    shared.close()


def test_a_station_hears_another_stations_enrolment(postgres_url: str, pipeline,
                                                    identity_photos) -> None:
    enrolling, watching = SharedBank(postgres_url, pipeline), SharedBank(postgres_url, pipeline)
    heard, heard_own = threading.Event(), threading.Event()
    watching.watch(heard.set)
    enrolling.watch(heard_own.set)
    enrolling.enrol_photos("Juanes", identity_photos["Juanes"][:1])
    assert heard.wait(10), "the other station was not notified"
    assert watching.matcher().identities == ["Juanes"]
    assert not heard_own.wait(1.5), "a station was notified of its own change"
    enrolling.close()
    watching.close()


def test_the_hnsw_index_finds_what_exact_search_finds(postgres_url: str, pipeline,
                                                      identity_photos) -> None:
    bank = SharedBank(postgres_url, pipeline)
    for name in ("Jon_Voight", "Juanes", "Tubby_Smith", "Martha_Burk", "George_Clooney"):
        bank.enrol_photos(name, identity_photos[name])
    store, model_id = bank.store, pipeline.model_id
    names, paths, matrix = store.samples(model_id)
    exact = [store.nearest_samples(model_id, row, 3) for row in matrix]
    assert store.ensure_vector_index(model_id, matrix.shape[1], min_samples=len(names) + 1) \
        is None  # too few samples for an index yet
    index_name = store.ensure_vector_index(model_id, matrix.shape[1], min_samples=1)
    assert index_name is not None
    with store.transaction():
        # A table this small is sorted faster than searched: have the planner show that the
        # index serves the query as written.
        store._execute("SET LOCAL enable_seqscan = off")
        store._execute("SET LOCAL enable_sort = off")
        plan = " ".join(row[0] for row in store._execute(
            f"EXPLAIN SELECT sha256 FROM embeddings WHERE model_id = '{model_id}' AND dim = "
            f"{matrix.shape[1]} ORDER BY vector::vector({matrix.shape[1]}) <=> "
            f"'{matrix[0].tolist()}'::vector({matrix.shape[1]}) LIMIT 3").fetchall())
    assert index_name in plan
    through_index = [store.nearest_samples(model_id, row, 3) for row in matrix]
    for path, near_exact, near_index in zip(paths, exact, through_index, strict=True):
        assert near_exact[0][1] == path and near_index[0][1] == path
        assert near_index[0][2] == pytest.approx(1.0, abs=1e-5)
    bank.close()


# -- two stations at once ------------------------------------------------------------------
ROUNDS = 12


def _station(url: str, models_dir: str, station: int,
             samples: list[tuple[str, bytes, list[float]]]) -> None:
    """One station: enrols its samples into identities both stations use, renaming and
    merging them as it goes (spawned as a separate process)."""
    from faceid_tui.engine.models import ModelStore
    from faceid_tui.engine.pipeline import PipelineOptions

    bank = SharedBank(url, Pipeline(ModelStore(Path(models_dir)), PipelineOptions()))
    for number, (filename, data, vector) in enumerate(samples):
        name = ("Ann", "Bob")[number % 2]
        bank.add_sample(name, filename, data,
                        CachedEmbedding(np.asarray(vector, np.float32), None, 1))
        if number % 3 == station:
            try:
                bank.rename(name, f"{name}-{station}")
                bank.merge(f"{name}-{station}", "Ann" if name == "Bob" else "Bob")
            except BankError:
                pass  # the other station renamed or merged it first: that is the race
    bank.close()


def test_two_stations_lose_and_duplicate_nothing(postgres_url: str, pipeline, models_dir,
                                                 identity_photos) -> None:
    photos = [p for name in sorted(identity_photos) for p in identity_photos[name]][:2 * ROUNDS]
    vectors = {p: r.largest_face().embedding for p, r in
               zip(photos, pipeline.run(photos), strict=True) if r.faces}
    photos = [p for p in photos if p in vectors]
    shares = [[(p.name, p.read_bytes(), vectors[p].tolist()) for p in photos[i::2]]
              for i in range(2)]
    SharedBank(postgres_url, pipeline).close()  # the schema, before two stations race for it
    context = multiprocessing.get_context("spawn")
    stations = [context.Process(target=_station, args=(postgres_url, str(models_dir), i,
                                                       shares[i])) for i in range(2)]
    for process in stations:
        process.start()
    for process in stations:
        process.join(240)
        assert process.exitcode == 0
    bank = SharedBank(postgres_url, pipeline)
    records = bank.store.photos()
    # Every sample enrolled once: none lost, none twice, each under its identity's folder.
    assert Counter(r.sha256 for r in records) == Counter(sha256_bytes(p.read_bytes())
                                                         for p in photos)
    assert all(r.rel_path.split("/", 1)[0] == r.identity for r in records)
    assert len({r.rel_path for r in records}) == len(records)
    assert sum(s.photos for s in bank.identities()) == len(photos)
    assert bank.matcher().sample_count == len(photos)
    bank.close()


def test_the_cli_works_on_a_shared_bank(postgres_url: str, models_dir, identity_photos,
                                        tmp_path: Path) -> None:
    obama = identity_photos["barack_obama"]
    enrolled = faceid("--bank", postgres_url, "enrol", "Barack Obama", *obama[:2],
                      cwd=tmp_path, models=models_dir)
    assert enrolled.returncode == 0, enrolled.stderr
    scanned = faceid("--bank", postgres_url, "scan", "--json", obama[2], cwd=tmp_path,
                     models=models_dir)
    assert scanned.returncode == 0, scanned.stderr
    (record,) = json_lines(scanned.stdout)
    assert record["faces"][0]["name"] == "Barack Obama"
    listing = faceid("--bank", postgres_url, "bank", "list", "--json", cwd=tmp_path,
                     models=models_dir)
    assert json_lines(listing.stdout) == [{"name": "Barack Obama", "photos": 2, "samples": 2}]
    assert not (tmp_path / "id_bank").exists()  # nothing of the bank on this station's disk
    wrong = faceid("--bank", "postgresql://nobody@127.0.0.1:9/none", "bank", "list",
                   cwd=tmp_path, models=models_dir)
    assert wrong.returncode != 0 and "cannot connect to the bank" in wrong.stderr
