"""The ``faceid`` command: wires the engine and the bank into subcommands for people and scripts.

Exit status: 0 when every file was processed, 1 when any file failed (each failure is
reported with its reason and the run goes on), 2 for usage errors (bad options, bad names,
unknown identities).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from faceid_tui.bank.bank_base import BankBase, SyncReport
from faceid_tui.bank.calibration import Calibration
from faceid_tui.bank.identity_bank import IdentityBank
from faceid_tui.bank.matching import FaceMatch, matched_chunks
from faceid_tui.bank.postgres_store import is_postgres_url
from faceid_tui.bank.thresholds import DEFAULT_FPIR, ThresholdChoice, pair_threshold
from faceid_tui.config import STATION_DIR, Settings, build_pipeline, open_bank, open_session
from faceid_tui.engine.decode import is_image_name
from faceid_tui.engine.detectors import CNN_DETECTORS, DETECTORS
from faceid_tui.engine.embedders import AUTO, EMBEDDER_CHOICES, embedder_entry
from faceid_tui.engine.embedding import RUNTIMES, facenet_runtime
from faceid_tui.engine.models import MODELS_ENV, ModelStore, default_models_dir
from faceid_tui.engine.pipeline import DEFAULT_CHUNK, FaceResult, PhotoResult
from faceid_tui.errors import BankError, FaceIdError, InvalidNameError
from faceid_tui.fsutil import remove_stale_temp_files

EXIT_OK, EXIT_FILE_FAILED, EXIT_USAGE = 0, 1, 2

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)


class UsageError(FaceIdError):
    """Bad arguments that argparse itself cannot see (exit status 2)."""


# -- argument parsing -----------------------------------------------------------------------
def _engine_options(*, suppress: bool) -> argparse.ArgumentParser:
    """Global options. Sub-parsers repeat them with SUPPRESS defaults so that
    ``faceid --bank B scan`` and ``faceid scan --bank B`` both work."""
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("engine options")
    group.add_argument("--bank", default=default(os.environ.get("FACEID_BANK", "id_bank")),
                       metavar="DIR|URL",
                       help="identity bank: a folder (default: $FACEID_BANK, else ./id_bank) "
                            "or a shared PostgreSQL bank, postgresql://user:pass@host/db "
                            "(README: Several stations)")
    group.add_argument("--station", default=default(None), metavar="NAME",
                       help="this station's name in a shared bank's ledger of claims and "
                            "decisions (default: the host name)")
    group.add_argument("--models", type=Path, default=default(None), metavar="DIR",
                       help="model folder (default: $FACEID_MODELS, else the checkout's "
                            "face_models/, else a per-user cache; `faceid models` says which)")
    group.add_argument("--detector", choices=["auto", *sorted(DETECTORS)],
                       default=default("auto"),
                       help="face detector: hog (dlib HOG, fast: portraits), cnn (dlib's "
                            "CNN/MMOD), hog+cnn (the CNN only on photos where HOG finds no "
                            "face), hog,cnn (HOG alone on portraits; on other photos HOG for "
                            "faces from 18 px plus the CNN: group photos); auto (default): "
                            "hog,cnn with the default embedder facenet+dlib, else hog")
    group.add_argument("--embedder", choices=list(EMBEDDER_CHOICES), default=default(AUTO),
                       help="auto (default) = facenet+dlib: FaceNet fused with dlib's ResNet "
                            "descriptor (the accurate mode); facenet: FaceNet alone (fast); "
                            "facenet-onnx / facenet-onnx-int8 (FaceNet on ONNX Runtime by "
                            "name; int8 is faster and is built once from face photos, see "
                            "README). All run on onnxruntime on the CPU, torch on CUDA")
    group.add_argument("--upsample", type=int, default=default(None), metavar="N",
                       help="search the photo at its own size with N doublings (default: "
                            "a scale chosen from the smallest face, see --min-face)")
    group.add_argument("--min-face", type=int, default=default(None), metavar="PX",
                       help="smallest face to look for, in pixels; photos are searched at "
                            "the scale that finds it (default: 7.5%% of the photo's short "
                            "side, at least 40)")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default("auto"),
                       help="where FaceNet runs (default: auto = cuda when available)")
    group.add_argument("--runtime", choices=list(RUNTIMES), default=default("auto"),
                       help="how FaceNet runs: torch, or onnx (onnxruntime, CPU only, same "
                            "weights and results, faster); auto (default): onnx on the CPU, "
                            "torch on CUDA")
    group.add_argument("--threads", type=int, default=default(None), metavar="N",
                       help="FaceNet CPU threads (default: every available core)")
    group.add_argument("--threshold", type=float, default=default(None), metavar="T",
                       help="match threshold, cosine (default: the one saved by `faceid "
                            "calibrate --save`, else chosen for the bank's size so that "
                            "at most --fpir of strangers get a name)")
    group.add_argument("--fpir", type=float, default=default(DEFAULT_FPIR), metavar="RATE",
                       help=f"target share of strangers wrongly named (default: {DEFAULT_FPIR})")
    return parser


def _add_app_options(group: argparse._ActionsContainer, *, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    group.add_argument("--inbox", type=Path, default=default(Path("inbox")), metavar="DIR",
                       help="folder watched for photos (default: ./inbox)")
    group.add_argument("--out", type=Path, default=default(Path("out")), metavar="DIR",
                       help="annotated copies and sidecars (default: ./out)")
    group.add_argument("--move-done", type=Path, default=default(None), metavar="DIR",
                       help="move fully reviewed photos here (default: leave them in place)")
    group.add_argument("--images", choices=["auto", "halfcell", "unicode", "none"],
                       default=default("auto"),
                       help="how previews are drawn (auto: kitty/sixel when the terminal "
                            "supports them, else half blocks)")


def build_parser() -> argparse.ArgumentParser:
    common = _engine_options(suppress=True)
    parser = argparse.ArgumentParser(
        prog="faceid", parents=[_engine_options(suppress=False)],
        description="Face identification from the terminal: detect faces, embed them with "
                    "FaceNet and match them against an identity bank of id_bank/<Name>/ photos.",
    )
    app_options = parser.add_argument_group("triage app options (faceid with no command)")
    _add_app_options(app_options, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common],
                                help="serve the triage app in a web browser (textual-serve)")
    _add_app_options(serve, suppress=True)
    serve.add_argument("--host", default="localhost", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000)

    scan = commands.add_parser("scan", parents=[common], help="identify the faces in photos")
    scan.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                      help="photos and folders (searched recursively)")
    scan.add_argument("--json", action="store_true", help="JSON Lines, one object per photo")
    scan.add_argument("--annotate", type=Path, metavar="DIR",
                      help="write annotated copies and JSON sidecars to DIR")
    scan.add_argument("--output", type=Path, metavar="FILE",
                      help="append JSON Lines to FILE as photos are done; photos already in "
                           "FILE are skipped (a stopped scan resumes)")
    scan.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                      help="spread the photos over a Ray cluster: ADDRESS (auto, "
                           "ray://host:10001) or, alone, a local one (README: Several stations)")
    scan.add_argument("--workers", type=int, metavar="N",
                      help="Ray workers (default: one per CPU of the cluster)")

    cluster = commands.add_parser(
        "cluster", parents=[common],
        help="group the faces of photos by person (the app's people to name)")
    cluster.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                         help="photos and folders (searched recursively)")
    cluster.add_argument("--json", action="store_true",
                         help="JSON Lines, one object per group (faces alone last)")
    cluster.add_argument("--annotate", type=Path, metavar="DIR",
                         help="write copies with each face's group drawn on it to DIR")

    enrol = commands.add_parser("enroll", aliases=["enrol"], parents=[common],
                                help="add photos of a person to the bank")
    enrol.add_argument("name", help="identity name (created if new)")
    enrol.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    enrol.add_argument("--json", action="store_true")

    bank = commands.add_parser("bank", parents=[common], help="list and edit identities")
    bank_commands = bank.add_subparsers(dest="bank_command", metavar="ACTION", required=True)
    listing = bank_commands.add_parser("list", parents=[common], help="every identity")
    listing.add_argument("--json", action="store_true")
    show = bank_commands.add_parser("show", parents=[common], help="one identity's photos")
    show.add_argument("name")
    show.add_argument("--json", action="store_true")
    rename = bank_commands.add_parser("rename", parents=[common], help="rename an identity")
    rename.add_argument("old")
    rename.add_argument("new")
    merge = bank_commands.add_parser("merge", parents=[common],
                                     help="move every photo of FROM into INTO")
    merge.add_argument("source", metavar="FROM")
    merge.add_argument("target", metavar="INTO")
    remove = bank_commands.add_parser("remove", parents=[common],
                                      help="delete an identity and its photos")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sync = bank_commands.add_parser("sync", parents=[common],
                                    help="pick up photos added or removed by hand")
    sync.add_argument("--json", action="store_true")
    export = bank_commands.add_parser(
        "export", parents=[common],
        help="write the bank out as DIR/<Name>/photo.jpg (from a folder or a shared bank)")
    export.add_argument("folder", type=Path, metavar="DIR")
    export.add_argument("--json", action="store_true")
    load = bank_commands.add_parser(
        "import", parents=[common],
        help="enrol DIR/<Name>/photo.jpg into the bank (e.g. a folder bank into a shared "
             "one); photos already there are recognised by content and skipped")
    load.add_argument("folder", type=Path, metavar="DIR")
    load.add_argument("--json", action="store_true")

    embed = commands.add_parser("embed", parents=[common], help="print face embeddings")
    embed.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    embed.add_argument("--json", action="store_true",
                       help="JSON Lines (the only output format; accepted for clarity)")
    embed.add_argument("--fallback-center", action="store_true",
                       help="embed a centre crop, marked fallback, when no face is found")

    postgres = commands.add_parser(
        "postgres", parents=[common],
        help="start a PostgreSQL with pgvector on this machine (for a shared bank on one "
             "box, or to try one) and print its URL")
    postgres.add_argument("data", type=Path, nargs="?", default=Path("faceid-postgres"),
                          metavar="DIR", help="its data folder (default: ./faceid-postgres)")
    postgres.add_argument("--stop", action="store_true", help="stop the server of DIR")

    models = commands.add_parser("models", parents=[common],
                                 help="prepare and check the model files")
    models.add_argument("--json", action="store_true")
    models.add_argument("--force", action="store_true", help="re-create every file")

    calibrate = commands.add_parser(
        "calibrate", parents=[common],
        help="measure your bank: genuine vs impostor scores, the threshold for --fpir")
    calibrate.add_argument("--save", action="store_true",
                           help="save the threshold to <bank>/faceid.toml for this model")
    calibrate.add_argument("--json", action="store_true")

    evaluate = commands.add_parser("eval", parents=[common], help="measure accuracy")
    eval_commands = evaluate.add_subparsers(dest="eval_command", metavar="BENCHMARK",
                                            required=True)
    pairs = eval_commands.add_parser("pairs", parents=[common],
                                     help="accuracy on a path_a,path_b,same CSV")
    pairs.add_argument("csv", type=Path, metavar="CSV")
    pairs.add_argument("--json", action="store_true")
    pairs.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="also draw the ROC curve and the score histograms")
    lfw = eval_commands.add_parser("lfw", parents=[common],
                                   help="LFW View 2: 10-fold accuracy, ROC AUC, EER, TAR@FAR")
    lfw.add_argument("lfw_dir", type=Path, metavar="DIR",
                     help="folder with pairs.txt and the person folders (or images/)")
    lfw.add_argument("--limit", type=int, metavar="N", help="about N pairs, for a quick run")
    lfw.add_argument("--json", action="store_true")
    lfw.add_argument("--plot", type=Path, metavar="FILE.png",
                     help="also draw the ROC curve and the score histograms")
    ident = eval_commands.add_parser(
        "identification", parents=[common],
        help="open-set identification on LFW: rank-1, TPIR at FPIR, the tiers in force")
    ident.add_argument("lfw_dir", type=Path, metavar="DIR",
                       help="LFW-style folder: images/<Name>/<file> (or <Name>/ directly)")
    ident.add_argument("--shots", type=int, default=1, metavar="K",
                       help="gallery images per enrolled person (default: 1)")
    ident.add_argument("--strangers", type=int, default=1000, metavar="N",
                       help="people with fewer images searched as strangers, one image "
                            "each (default: 1000)")
    ident.add_argument("--min-images", type=int, default=5, metavar="N",
                       help="people with at least N images are enrolled (default: 5)")
    ident.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    ident.add_argument("--limit", type=int, metavar="N",
                       help="enrol only N people (drawn with the seed), for a quick run")
    ident.add_argument("--embeddings", type=Path, metavar="FILE.npz",
                       help="cache of the image vectors, reused when model and detector "
                            "match; without --limit every image is embedded into it")
    ident.add_argument("--json", action="store_true", help="one JSON object")
    ident.add_argument("--plot", type=Path, metavar="FILE.png",
                       help="also draw the DET curve (FNIR against FPIR)")
    groups = eval_commands.add_parser(
        "groups", parents=[common],
        help="annotated group photos: detection recall, who is named how")
    groups.add_argument("faces_csv", type=Path, metavar="FACES_CSV",
                        help="path,face_id,x,y,w,h,identity,... (identity unknown: a stranger)")
    groups.add_argument("gallery_csv", type=Path, metavar="GALLERY_CSV", nargs="?",
                        help="identity,path,source; an empty path is an open-set person")
    groups.add_argument("--gallery-dir", type=Path, metavar="DIR",
                        help="gallery as Name/photo.jpg folders instead of GALLERY_CSV")
    groups.add_argument("--json", action="store_true", help="one JSON object")
    clusters = eval_commands.add_parser(
        "clusters", parents=[common],
        help="LFW: how well faces are grouped by person, against Chinese whispers, HDBSCAN "
             "and DBSCAN on the same vectors")
    clusters.add_argument("lfw_dir", type=Path, metavar="DIR",
                          help="LFW-style folder: images/<Name>/<file> (or <Name>/ directly)")
    clusters.add_argument("--embeddings", type=Path, metavar="FILE.npz",
                          help="cache of the image vectors (as for eval identification)")
    clusters.add_argument("--methods", default="faceid,chinese-whispers,hdbscan,dbscan",
                          help="comma-separated methods to run (default: all; faceid "
                               "brings faceid-app64, the default fed 64 faces at a time)")
    clusters.add_argument("--json", action="store_true", help="one JSON object")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    if args.upsample is not None and not 0 <= args.upsample <= 4:
        raise UsageError("--upsample must be between 0 and 4")
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise UsageError("--threshold is a cosine similarity between -1 and 1")
    if args.min_face is not None and args.min_face < 1:
        raise UsageError("--min-face is a face size in pixels, 1 or more")
    if not 0.0 < args.fpir < 1.0:
        raise UsageError("--fpir is a rate between 0 and 1, e.g. 0.01 for 1 %")
    models_dir = args.models if args.models is not None else default_models_dir()[0]
    bank_url = args.bank if is_postgres_url(args.bank) else None
    return Settings(bank_dir=STATION_DIR if bank_url else Path(args.bank), bank_url=bank_url,
                    station=args.station,
                    models_dir=models_dir, detector=args.detector,
                    embedder=args.embedder,
                    upsample=args.upsample, min_face_size=args.min_face, device=args.device,
                    runtime=args.runtime,
                    threads=args.threads, threshold=args.threshold, fpir=args.fpir)


# -- helpers ----------------------------------------------------------------------------------
def collect_photos(paths: Iterable[Path]) -> list[Path]:
    """Files as given (a missing one is reported per file), folders searched recursively for
    image names, skipping hidden files and folders."""
    photos: list[Path] = []
    for path in paths:
        if path.is_dir():
            photos.extend(sorted(
                p for p in path.rglob("*")
                if p.is_file() and is_image_name(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ))
        else:
            photos.append(path)
    return photos


@contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """A Rich progress bar on stderr for long runs; a no-op when output is piped."""
    if not enabled or total < 2 or not stderr.is_terminal:
        yield lambda: None
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=stderr, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def face_record(face: FaceResult, match: FaceMatch | None) -> dict[str, object]:
    record: dict[str, object] = {"box": face.box.as_list()}
    if match is not None:
        record.update({
            "name": match.name,
            "score": None if match.score is None else round(match.score, 4),
            "status": match.status,
            "margin": None if match.margin is None else round(match.margin, 4),
            "candidates": [candidate.as_dict() for candidate in match.candidates],
        })
    if face.fallback:
        record["fallback"] = True
    return record


def print_json(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def sync_bank(bank: BankBase, show_progress: bool) -> SyncReport:
    """Sync the bank before using it, with a progress bar while it embeds new photos."""
    with Progress(TextColumn("embedding new bank photos"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=stderr, transient=True,
                  disable=not (show_progress and stderr.is_terminal)) as progress:
        task = progress.add_task("bank", total=None)
        report = bank.sync(progress=lambda done, total: progress.update(task, completed=done,
                                                                        total=total))
    if report.changes and show_progress:
        stderr.print(f"[dim]bank: {len(report.added)} added, {len(report.changed)} changed, "
                     f"{len(report.removed)} removed, {len(report.embedded)} embedded[/dim]")
    for rel_path, error in report.errors.items():
        stderr.print(f"[yellow]bank photo {escape(rel_path)}: {escape(error)}[/yellow]")
    for rel_path in report.no_face:
        stderr.print(f"[yellow]bank photo {escape(rel_path)}: no face found; it is not used "
                     "for matching[/yellow]")
    return report


# -- commands ---------------------------------------------------------------------------------
def cmd_scan(args: argparse.Namespace, settings: Settings) -> int:
    from faceid_tui.engine.annotation import FaceLabel, write_annotated
    from faceid_tui.results_file import ResultsFile

    photos = collect_photos(args.paths)
    if not photos:
        raise UsageError("no photos found in the given paths")
    if args.ray and args.annotate is not None:
        raise UsageError("--annotate needs the decoded photos here; scan with --ray and "
                         "--output, then annotate the photos that interest you")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers is a number of Ray workers, 1 or more")
    try:
        output = ResultsFile(args.output) if args.output is not None else None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if output is not None and output.done:
        before = len(photos)
        photos = [photo for photo in photos if str(photo) not in output.done]
        stderr.print(f"[dim]{before - len(photos)} photo(s) already in "
                     f"{escape(str(args.output))}: skipped[/dim]")
        if not photos:
            output.close()
            return EXIT_OK
    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    cluster = None
    try:
        sync_bank(bank, show_progress=not args.json)
        if args.annotate is not None:
            remove_stale_temp_files(args.annotate)  # left by an earlier run that was killed
        matcher = bank.matcher()
        threshold = bank.threshold_in_force
        failed = 0
        table = Table("photo", "faces", "names (score)", "status", header_style="bold")
        # Annotating keeps decoded photos until their chunk is embedded: smaller chunks.
        annotate = args.annotate is not None
        chunk = 8 if annotate else DEFAULT_CHUNK
        if args.ray:
            from faceid_tui.engine.ray_scan import RayScan

            cluster = RayScan(settings.models_dir, settings.pipeline_options(),
                              address=None if args.ray == "local" else args.ray,
                              workers=args.workers)
            if cluster.model_id != pipeline.model_id:
                raise FaceIdError(f"the Ray workers embed with {cluster.model_id}, this bank "
                                  f"with {pipeline.model_id}: install the same faceid and "
                                  "models on every node")
            results = cluster.run(photos)
        else:
            results = pipeline.run(photos, keep_images=annotate, chunk_size=chunk)
        with progress_bar(len(photos), "scanning", enabled=not args.json) as advance:
            for result, embedded, matches in matched_chunks(results, matcher, chunk):
                record = photo_record(result, pipeline.model_id, threshold, matches,
                                      matcher.likely_threshold)
                if output is not None:
                    output.write(record)
                if result.error:
                    failed += 1
                elif args.annotate is not None and result.image is not None:
                    labels = [FaceLabel(tuple(face.box.as_list()), match.name, match.score,
                                        match.status) for face, match in zip(embedded, matches,
                                                                             strict=True)]
                    write_annotated(args.annotate, result.path, result.image, labels, record)
                    result.image = None
                if args.json:
                    print_json(record)
                else:
                    add_scan_row(table, result, matches)
                advance()
        if not args.json:
            stdout.print(table)
            stdout.print(f"[dim]{len(photos)} photo(s), {failed} failed · model "
                         f"{pipeline.model_id} · known threshold {threshold.value:.3f} "
                         f"({escape(threshold.source)}: {escape(threshold.detail)}) · likely "
                         f"threshold {matcher.likely_threshold:.3f}[/dim]")
        return EXIT_FILE_FAILED if failed else EXIT_OK
    finally:
        if cluster is not None:
            cluster.close()
        if output is not None:
            output.close()
        bank.close()


def photo_record(result: PhotoResult, model_id: str, threshold: ThresholdChoice,
                 matches: list[FaceMatch], likely_threshold: float) -> dict[str, object]:
    embedded = [face for face in result.faces if face.embedding is not None]
    return {
        "path": str(result.path),
        "width": result.width,
        "height": result.height,
        "model": model_id,
        "threshold": round(threshold.value, 4),
        "threshold_source": threshold.source,
        "likely_threshold": round(likely_threshold, 4),
        "error": result.error,
        "faces": [face_record(face, match) for face, match in zip(embedded, matches,
                                                                   strict=True)],
    }


def add_scan_row(table: Table, result: PhotoResult, matches: list[FaceMatch]) -> None:
    if result.error:
        table.add_row(escape(str(result.path)), "-", f"[red]{escape(result.error)}[/red]",
                      "[red]error[/red]")
        return
    names = ", ".join(
        f"{escape(match.name or '?')} ({match.score:.2f})" if match.score is not None else "?"
        for match in matches
    )
    statuses = ", ".join(match.status for match in matches)
    table.add_row(escape(str(result.path)), str(len(matches)), names or "-", statuses or "-")


def cmd_enroll(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    failed = 0
    try:
        sync_bank(bank, show_progress=not args.json)
        # Each line is printed once its enrolment is committed: what is printed is kept.
        for result in bank.iter_enrol_photos(args.name, args.images):
            failed += result.error is not None
            if args.json:
                print_json({"path": str(result.path), "enrolled_as": result.rel_path,
                            "already_enrolled": result.already_enrolled,
                            "error": result.error})
            elif result.error:
                stderr.print(f"[red]{escape(str(result.path))}: {escape(result.error)}[/red]")
            elif result.already_enrolled:
                stdout.print(f"{escape(str(result.path))}: already in the bank as "
                             f"{escape(str(result.rel_path))}")
            else:
                stdout.print(f"{escape(str(result.path))} → {escape(str(result.rel_path))}")
            sys.stdout.flush()
    finally:
        bank.close()
    return EXIT_FILE_FAILED if failed else EXIT_OK


def cmd_bank(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    try:
        as_json = getattr(args, "json", False)
        action = args.bank_command
        if action in ("list", "show", "sync"):
            report = sync_bank(bank, show_progress=not as_json)
            if action == "sync":
                summary = {"added": report.added, "changed": report.changed,
                           "removed": report.removed, "embedded": report.embedded,
                           "no_face": report.no_face, "errors": report.errors}
                if as_json:
                    print_json(summary)
                else:
                    for key, value in summary.items():
                        stdout.print(f"{key}: {len(value)}")
                return EXIT_FILE_FAILED if report.errors else EXIT_OK
        if action == "list":
            identities = bank.identities()
            if as_json:
                for identity in identities:
                    print_json({"name": identity.name, "photos": identity.photos,
                                "samples": identity.samples})
                return EXIT_OK
            table = Table("identity", "photos", "samples", header_style="bold")
            for identity in identities:
                table.add_row(escape(identity.name), str(identity.photos), str(identity.samples))
            stdout.print(table)
            stdout.print(f"[dim]{len(identities)} identities in {escape(bank.location)}[/dim]")
        elif action == "show":
            photos = bank.identity_photos(args.name)
            if as_json:
                print_json({"name": args.name, "photos": [
                    {"path": bank.sample_location(p.rel_path), "sha256": p.sha256}
                    for p in photos]})
            else:
                for photo in photos:
                    stdout.print(escape(bank.sample_location(photo.rel_path)))
        elif action == "rename":
            bank.rename(args.old, args.new)
            stdout.print(f"renamed {escape(args.old)} → {escape(args.new)}")
        elif action == "merge":
            moved = bank.merge(args.source, args.target)
            stdout.print(f"merged {escape(args.source)} into {escape(args.target)} "
                         f"({moved} photo(s) moved)")
        elif action == "export":
            from faceid_tui.bank.export import export_bank

            exported = export_bank(bank, args.folder)
            if as_json:
                print_json({"folder": str(args.folder), "written": exported.written,
                            "unchanged": exported.unchanged,
                            "identities": exported.identities})
            else:
                stdout.print(f"{exported.written} photo(s) written, {exported.unchanged} "
                             f"already there, {exported.identities} identities in "
                             f"{escape(str(args.folder))}")
        elif action == "import":
            from faceid_tui.bank.importing import import_people

            with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=stderr, transient=True,
                          disable=as_json or not stderr.is_terminal) as progress:
                task = progress.add_task("import", total=None)
                imported = import_people(bank, args.folder, lambda done, total: progress.update(
                    task, completed=done, total=total))
            if as_json:
                print_json({"enrolled": imported.enrolled, "already": imported.already,
                            "people": imported.people, "skipped": imported.skipped})
            else:
                stdout.print(escape(imported.summary()))
                for path, why in imported.skipped.items():
                    stderr.print(f"[yellow]{escape(path)}: {escape(why)}[/yellow]")
            return EXIT_FILE_FAILED if imported.skipped else EXIT_OK
        elif action == "remove":
            count = len(bank.identity_photos(args.name))
            if not args.yes and sys.stdin.isatty():
                answer = input(f"Delete {args.name} and its {count} photo(s)? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    stdout.print("nothing deleted")
                    return EXIT_OK
            bank.remove(args.name)
            stdout.print(f"removed {escape(args.name)} ({count} photo(s) deleted)")
        return EXIT_OK
    finally:
        bank.close()


def cmd_embed(args: argparse.Namespace, settings: Settings) -> int:
    pipeline = build_pipeline(settings)
    failed = 0
    for result in pipeline.run(args.images, fallback_center=args.fallback_center):
        failed += result.error is not None
        faces = []
        for face in result.faces:
            if face.embedding is None:
                continue
            entry: dict[str, object] = {"box": face.box.as_list(),
                                        "embedding": [round(float(v), 7) for v in face.embedding]}
            if face.fallback:
                entry["fallback"] = True
            faces.append(entry)
        print_json({"path": str(result.path), "model": pipeline.model_id,
                    "error": result.error, "faces": faces})
    return EXIT_FILE_FAILED if failed else EXIT_OK


def _prepare_converted(store: ModelStore, settings: Settings, *, force: bool) -> list[str]:
    """Build now the converted networks the settings in force will run, so the first scan or
    app start does not wait for them: FaceNet exported for onnxruntime (about 12 s), dlib's
    ResNet (about 11 s) and its CNN detector (under a second) converted from their .dat."""
    options = settings.pipeline_options()
    if facenet_runtime(options.embedder_options) != "onnx":
        return []
    from faceid_tui.engine.dlib_resnet import prepare_resnet_onnx
    from faceid_tui.engine.onnx_embedder import prepare_onnx

    actions = []
    try:
        path, built = prepare_onnx(store, "fp32")
        if built:
            actions.append(f"exported {path.name} for onnxruntime (FaceNet's CPU runtime)")
    except FaceIdError as exc:  # reported with the weights' own status below
        actions.append(f"FaceNet not exported for onnxruntime: {exc}")
    from faceid_tui.engine.dlib_mmod import prepare_mmod_onnx

    dlib_networks = ((options.embedder == "facenet+dlib", prepare_resnet_onnx, "ResNet"),
                     (options.detector in CNN_DETECTORS, prepare_mmod_onnx, "CNN detector"))
    for needed, prepare, network in dlib_networks:
        if not needed:
            continue
        try:
            path, built = prepare(store, force=force)
        except FaceIdError as exc:
            actions.append(f"dlib's {network} not converted: {exc}")
            continue
        if built:
            actions.append(f"converted {path.name} from dlib's .dat (dlib's {network} on "
                           "onnxruntime)")
    return actions


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    store = ModelStore(settings.models_dir)
    where = "--models" if args.models is not None else default_models_dir()[1]
    actions = store.prepare(force=args.force)
    actions += _prepare_converted(store, settings, force=args.force)
    report = store.report()
    active = store.active_weights()
    # A converted file that is stale or not built yet is rebuilt on use: not an error.
    bad = [entry for entry in report if entry.status not in
           ("ok", "not present (optional)", "not built yet", "stale")]
    if args.json:
        print_json({"folder": str(store.folder), "folder_source": where, "actions": actions,
                    "active_embedder": active.key, "model_id": active.model_id,
                    "embedder": settings.embedder_name,
                    "embedder_model_id": embedder_entry(settings.embedder_name).model_id(store),
                    "files": [entry.as_dict() for entry in report]})
    else:
        for action in actions:
            stderr.print(f"[dim]{escape(action)}[/dim]")
        table = Table("file", "size", "sha256", "status", "source", header_style="bold")
        for entry in report:
            optional_absent = entry.status.startswith("not ")
            colour = "green" if entry.status == "ok" else ("dim" if optional_absent else "red")
            size = f"{entry.size / 1e6:.1f} MB" if entry.size is not None else "-"
            table.add_row(escape(entry.name), size, (entry.sha256 or "-")[:16],
                          f"[{colour}]{escape(entry.status)}[/{colour}]", escape(entry.source))
        stdout.print(table)
        stdout.print(f"models folder: {escape(str(store.folder.resolve()))} ({where}; "
                     f"--models or ${MODELS_ENV} to choose another)")
        stdout.print(f"active embedder: {settings.embedder_name}, FaceNet {active.key} "
                     f"({embedder_entry(settings.embedder_name).model_id(store)})")
        for entry in bad:
            stderr.print(f"[red]{escape(entry.path)}: {escape(entry.status)} — "
                         f"{escape(entry.detail)}[/red]")
    return EXIT_FILE_FAILED if bad else EXIT_OK


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    if args.eval_command == "lfw":
        return cmd_eval_lfw(args, settings)
    if args.eval_command == "identification":
        return cmd_eval_identification(args, settings)
    if args.eval_command == "groups":
        return cmd_eval_groups(args, settings)
    if args.eval_command == "clusters":
        return cmd_eval_clusters(args, settings)
    from faceid_tui.engine.evaluation import evaluate_pairs

    if not args.csv.is_file():
        raise UsageError(f"{args.csv} does not exist; give a CSV with path_a,path_b,same")
    pipeline = build_pipeline(settings)
    threshold = pair_threshold(pipeline.model_id).value if settings.threshold is None \
        else settings.threshold
    evaluation = evaluate_pairs(pipeline, args.csv, threshold)
    if args.plot is not None and evaluation.pairs:
        from faceid_tui.engine.plots import write_evaluation_plot

        write_evaluation_plot(args.plot, evaluation.scores, evaluation.same_labels,
                              f"{args.csv.name}: {evaluation.pairs} pairs · "
                              f"{pipeline.model_id}", threshold)
        if not args.json:
            stdout.print(f"plot written to {escape(str(args.plot))}")
    if args.json:
        print_json({"model": pipeline.model_id, **evaluation.as_dict()})
    else:
        stdout.print(f"{evaluation.pairs} pairs ({evaluation.same} same, "
                     f"{evaluation.different} different), model {pipeline.model_id}")
        stdout.print(f"accuracy at threshold {evaluation.threshold:.3f}: "
                     f"{evaluation.accuracy:.4f}")
        stdout.print(f"best accuracy {evaluation.best_accuracy:.4f} for thresholds "
                     f"{evaluation.best_threshold_low:.3f} … {evaluation.best_threshold_high:.3f}")
        stdout.print(f"photos with no detected face (centre crop used): {evaluation.no_face}")
        for path, error in evaluation.errors.items():
            stderr.print(f"[red]{escape(path)}: {escape(error)}[/red]")
    return EXIT_FILE_FAILED if evaluation.errors else EXIT_OK


def cmd_eval_lfw(args: argparse.Namespace, settings: Settings) -> int:
    from faceid_tui.engine.evaluation import evaluate_lfw

    if not (args.lfw_dir / "pairs.txt").is_file():
        raise UsageError(f"{args.lfw_dir} has no pairs.txt; give the LFW folder")
    pipeline = build_pipeline(settings)
    result = evaluate_lfw(pipeline, args.lfw_dir, args.limit)
    if args.plot is not None and result.pairs:
        from faceid_tui.engine.plots import write_evaluation_plot

        write_evaluation_plot(args.plot, result.scores, result.same,
                              f"LFW View 2: {result.pairs} pairs, accuracy "
                              f"{result.accuracy_mean:.4f} · {pipeline.model_id}")
    setup = {"model": pipeline.model_id, "detector": settings.detector_name,
             "upsample": "auto" if settings.upsample is None else settings.upsample}
    if args.json:
        print_json({**setup, **result.as_dict()})
    else:
        stdout.print(f"LFW View 2, {result.pairs} pairs, {result.images} images · "
                     f"{setup['model']} · detector {settings.detector_name} "
                     f"(upsample {setup['upsample']}) · {result.seconds:.0f} s")
        stdout.print(f"accuracy {result.accuracy_mean:.4f} ± {result.accuracy_std:.4f} "
                     "(10 folds, threshold chosen on the other nine)")
        stdout.print(f"ROC AUC {result.roc_auc:.4f} · EER {result.eer:.4f} · "
                     f"TAR@FAR=1e-2 {result.tar_at_far_1e2:.4f} · "
                     f"TAR@FAR=1e-3 {result.tar_at_far_1e3:.4f}")
        stdout.print(f"no face detected: {result.no_face_center_crop} (centre crop used); "
                     f"several faces: {result.several_faces_nearest_center} "
                     "(the one nearest the centre scored)")
        if result.impostor_curve:
            stdout.print(f"impostor curve ({result.impostor_pairs:,} pairs of images of "
                         "different people): " + ", ".join(
                             f"FAR {far:.0e} ≥ {threshold:.3f}"
                             for far, threshold in result.impostor_curve))
        if args.plot is not None:
            stdout.print(f"plot written to {escape(str(args.plot))}")
        for path, error in result.errors.items():
            stderr.print(f"[red]{escape(path)}: {escape(error)}[/red]")
    return EXIT_FILE_FAILED if result.errors else EXIT_OK


def _eval_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def cmd_eval_identification(args: argparse.Namespace, settings: Settings) -> int:
    from faceid_tui.bank.open_set_eval import evaluate_identification, write_det_plot

    if not args.lfw_dir.is_dir():
        raise UsageError(f"{args.lfw_dir} is not a folder; give the LFW folder")
    for option, value, low in (("--shots", args.shots, 1), ("--strangers", args.strangers, 0),
                               ("--min-images", args.min_images, 2),
                               ("--limit", args.limit or 1, 1)):
        if value < low:
            raise UsageError(f"{option} must be {low} or more")
    pipeline = build_pipeline(settings)
    # The bar counts every image asked for; with a warm cache it ends early and vanishes.
    total = sum(1 for _ in args.lfw_dir.glob("**/*.jpg")) if args.embeddings else 0
    with progress_bar(total, "embedding LFW", enabled=not args.json) as advance:
        result = evaluate_identification(
            pipeline, args.lfw_dir, shots=args.shots, strangers=args.strangers,
            seed=args.seed, limit=args.limit, min_images=args.min_images,
            cache_path=args.embeddings, fpir=settings.fpir, threshold=settings.threshold,
            ambiguous_margin=settings.ambiguous_margin, on_photo=advance)
    if args.plot is not None and result.probes and result.strangers:
        write_det_plot(args.plot, result,
                       f"{result.people_enrolled} people, {result.shots}-shot, "
                       f"{result.strangers} strangers\n{pipeline.model_id}")
    if args.json:
        print_json(result.as_dict())
        return EXIT_FILE_FAILED if result.errors else EXIT_OK
    for note in result.cache_notes:
        stderr.print(f"[dim]{escape(note)}[/dim]")
    known, likely = result.thresholds.known, result.thresholds.likely
    stdout.print(f"open-set identification · {escape(str(args.lfw_dir))} · {result.model} · "
                 f"detector {result.detector} · {result.seconds:.0f} s")
    stdout.print(f"gallery: {result.people_enrolled} people with ≥ {result.min_images} "
                 f"images, {result.shots}-shot ({result.gallery_samples} samples), seed "
                 f"{result.seed}; probes: {result.probes}; strangers: {result.strangers} "
                 f"(one image each, of {result.stranger_people_available} people with fewer)")
    stdout.print(f"images used: {result.images_used}, no face detected (centre "
                 f"crop used): {result.no_face_center_crop}")
    stdout.print(f"[bold]rank-1: {_eval_share(result.rank1)}[/bold]")
    for point in result.operating_points:
        stdout.print(f"TPIR at FPIR {point.fpir_target:.1%}: {_eval_share(point.tpir)} "
                     f"(threshold {point.threshold:.3f}, measured FPIR "
                     f"{_eval_share(point.fpir)}, {point.strangers_passing} stranger(s) "
                     "above)")
    stdout.print(f"thresholds in force: known {known.value:.3f} ({escape(known.source)}: "
                 f"{escape(known.detail)}); likely {likely.value:.3f} "
                 f"({escape(likely.source)}: {escape(likely.detail)})")
    stdout.print(f"strangers given known (FPIR of known): {_eval_share(result.strangers_known)}"
                 f" · strangers shown a name (any tier): {_eval_share(result.strangers_named)}")
    stdout.print(f"probes known and right (TPIR of known): "
                 f"{_eval_share(result.probes_known_right)} · known but wrong: "
                 f"{_eval_share(result.probes_known_wrong)} · true name shown (any tier): "
                 f"{_eval_share(result.probes_shown_right)}")
    stdout.print("probe statuses: " + ", ".join(
        f"{tier} {count}" for tier, count in result.probe_statuses.items()))
    stdout.print("stranger statuses: " + ", ".join(
        f"{tier} {count}" for tier, count in result.stranger_statuses.items()))
    if args.plot is not None:
        stdout.print(f"plot written to {escape(str(args.plot))}")
    for path, error in result.errors.items():
        stderr.print(f"[red]{escape(path)}: {escape(error)}[/red]")
    return EXIT_FILE_FAILED if result.errors else EXIT_OK


def cmd_eval_groups(args: argparse.Namespace, settings: Settings) -> int:
    from faceid_tui.bank.open_set_eval import (
        evaluate_groups,
        read_gallery_csv,
        read_gallery_dir,
    )

    if not args.faces_csv.is_file():
        raise UsageError(f"{args.faces_csv} does not exist; give a faces.csv")
    if (args.gallery_csv is None) == (args.gallery_dir is None):
        raise UsageError("give either GALLERY_CSV or --gallery-dir DIR")
    if args.gallery_csv is not None:
        if not args.gallery_csv.is_file():
            raise UsageError(f"{args.gallery_csv} does not exist")
        gallery, _open_set = read_gallery_csv(args.gallery_csv)
    else:
        if not args.gallery_dir.is_dir():
            raise UsageError(f"{args.gallery_dir} is not a folder of Name/photo files")
        gallery = read_gallery_dir(args.gallery_dir)
    if not gallery:
        raise UsageError("the gallery has no photos")
    pipeline = build_pipeline(settings)
    result = evaluate_groups(pipeline, args.faces_csv, gallery, fpir=settings.fpir,
                             threshold=settings.threshold,
                             ambiguous_margin=settings.ambiguous_margin)
    if args.json:
        print_json(result.as_dict())
        return EXIT_FILE_FAILED if result.errors else EXIT_OK
    summary = result.summary()
    for photo in result.photos:
        found = sum(face.detected is not None for face in photo.faces)
        stdout.print(f"[bold]{escape(photo.path)}[/bold]: {found}/{len(photo.faces)} found, "
                     f"{len(photo.unmatched)} other box(es)"
                     + (f" [red]{escape(photo.error)}[/red]" if photo.error else ""))
        for face in photo.faces:
            truth = face.face.identity + ("" if face.enrolled else " (stranger)")
            if face.detected is None:
                stdout.print(f"  {escape(truth)}: not found")
                continue
            seen = face.detected
            verdict = ("right" if face.shown_right else
                       "wrong" if seen.status != "unknown" and face.enrolled else
                       "named" if seen.status != "unknown" else "unnamed")
            stdout.print(f"  {escape(truth)} → {escape(seen.name or '-')} ({seen.status}, "
                         f"{seen.score if seen.score is None else round(seen.score, 3)}) "
                         f"{verdict}")
        for box in photo.unmatched:
            stdout.print(f"  [dim]unannotated box {box.box} → {escape(box.name or '-')} "
                         f"({box.status})[/dim]")
    known, likely = result.thresholds.known, result.thresholds.likely
    stdout.print(f"gallery: {result.gallery_identities} identities, {result.gallery_samples} "
                 f"samples · {result.model} · detector {result.detector} · "
                 f"{result.seconds:.0f} s")
    for path in result.gallery_no_face:
        stderr.print(f"[yellow]gallery photo {escape(path)}: no face found, not used[/yellow]")
    stdout.print(f"thresholds in force: known {known.value:.3f} ({escape(known.source)}), "
                 f"likely {likely.value:.3f} ({escape(likely.source)})")
    stdout.print(f"[bold]detection recall: {summary.detection_recall}[/bold] "
                 f"({summary.enrolled_faces} faces of enrolled people, "
                 f"{summary.stranger_faces} of strangers)")
    stdout.print(f"enrolled faces found: known and right {summary.known_right}, shown right "
                 f"in any tier {summary.shown_right}, named wrong {summary.named_wrong} "
                 f"(known and wrong {summary.known_wrong})")
    stdout.print(f"strangers found: named known {summary.strangers_known}, named in any tier "
                 f"{summary.strangers_named}")
    stdout.print(f"boxes matching no annotated face: {summary.unmatched_boxes} "
                 f"({summary.unmatched_named} named)")
    for path, error in result.errors.items():
        stderr.print(f"[red]{escape(path)}: {escape(error)}[/red]")
    return EXIT_FILE_FAILED if result.errors else EXIT_OK


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """Group the faces of the given photos as the app's people to name does (no ledger)."""
    from faceid_tui.bank.thresholds import group_threshold
    from faceid_tui.engine.annotation import FaceLabel, write_annotated
    from faceid_tui.engine.decode import load_rgb
    from faceid_tui.triage.clustering import group_faces
    from faceid_tui.triage.people import best_identities

    photos = collect_photos(args.paths)
    if not photos:
        raise UsageError("no photos found in the given paths")
    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    try:
        sync_bank(bank, show_progress=not args.json)
        matcher = bank.matcher()
        faces: list[tuple[Path, FaceResult]] = []
        failed: dict[str, str] = {}
        with progress_bar(len(photos), "finding faces", enabled=not args.json) as advance:
            for result in pipeline.run(photos):
                if result.error:
                    failed[str(result.path)] = result.error
                faces += [(result.path, face) for face in result.faces
                          if face.embedding is not None]
                advance()
    finally:
        bank.close()
    vectors = (np.stack([face.embedding for _, face in faces]) if faces
               else np.zeros((0, 1), np.float32))
    threshold = group_threshold(pipeline.model_id, len(faces)).value
    clusters = group_faces(vectors, [str(path) for path, _ in faces], threshold)
    groups = clusters.groups()
    best = best_identities(matcher, clusters, groups)
    records: list[dict[str, object]] = []
    label_of: dict[int, str] = {}
    for number, (group, (name, score, tier)) in enumerate(zip(groups, best, strict=True),
                                                          start=1):
        fit = clusters.face_scores(group)
        members = sorted(fit, key=lambda face: -fit[face])
        label_of.update({face: f"group {number}" for face in members})
        records.append({
            "cluster": number, "size": len(members), "photos": len(clusters.photos(group)),
            "cohesion": round(clusters.cohesion(group), 4),
            "best_identity": name, "best_score": None if score is None else round(score, 4),
            "best_status": tier,
            "faces": [{"path": str(faces[f][0]), "box": faces[f][1].box.as_list(),
                       "fit": round(fit[f], 4)} for f in members],
        })
    alone = [f for f in range(len(faces)) if f not in label_of]
    for face in alone:
        records.append({"cluster": None, "size": 1, "photos": 1, "cohesion": None,
                        "best_identity": None, "best_score": None, "best_status": None,
                        "faces": [{"path": str(faces[face][0]),
                                   "box": faces[face][1].box.as_list(), "fit": None}]})
    if args.annotate is not None:
        remove_stale_temp_files(args.annotate)
        by_photo: dict[Path, list[int]] = {}
        for number, (path, _) in enumerate(faces):
            by_photo.setdefault(path, []).append(number)
        for path, numbers in by_photo.items():
            labels = [FaceLabel(tuple(faces[n][1].box.as_list()), label_of.get(n), None,
                                "known" if n in label_of else "unknown") for n in numbers]
            record = {"path": str(path), "model": pipeline.model_id,
                      "group_threshold": round(threshold, 4),
                      "faces": [{"box": faces[n][1].box.as_list(), "group": label_of.get(n)}
                                for n in numbers]}
            write_annotated(args.annotate, path, load_rgb(path), labels, record)
    if args.json:
        for record in records:
            print_json(record)
    else:
        table = Table("group", "faces", "photos", "alike", "best match", "photos (first 3)",
                      header_style="bold")
        for record in records[:len(groups)]:
            paths = sorted({Path(str(face["path"])).name
                            for face in record["faces"]})  # type: ignore[union-attr]
            best_text = (f"{record['best_identity']} {record['best_score']:.2f}"
                         if record["best_identity"] else "-")
            table.add_row(str(record["cluster"]), str(record["size"]), str(record["photos"]),
                          f"{record['cohesion']:.2f}", escape(best_text),
                          escape(", ".join(paths[:3]) + (" …" if len(paths) > 3 else "")))
        stdout.print(table)
        stdout.print(f"[dim]{len(faces)} face(s) in {len(photos)} photo(s): {len(groups)} "
                     f"group(s), {len(alone)} face(s) alone · merge threshold {threshold:.3f} "
                     f"for {len(faces)} faces · model {pipeline.model_id}[/dim]")
    for path, error in failed.items():
        stderr.print(f"[red]{escape(path)}: {escape(error)}[/red]")
    return EXIT_FILE_FAILED if failed else EXIT_OK


def cmd_eval_clusters(args: argparse.Namespace, settings: Settings) -> int:
    """Cluster every LFW face with faceid and the baselines; compare at pairwise precision
    0.99 (benchmarks/README.md has the table)."""
    from faceid_tui.bank.open_set_eval import list_lfw_images, load_or_embed_lfw
    from faceid_tui.triage.cluster_eval import (
        FACEID_GRID,
        MIN_PRECISION,
        SHUFFLED_GRID,
        OperatingPoint,
        baseline_methods,
        evaluate_clustering,
        faceid_method,
    )

    if not args.lfw_dir.is_dir():
        raise UsageError(f"{args.lfw_dir} is not a folder; give the LFW folder")
    wanted = [name.strip() for name in args.methods.split(",") if name.strip()]
    pipeline = build_pipeline(settings)
    methods = {"faceid": faceid_method(pipeline.model_id, None, FACEID_GRID),
               "faceid-app64": faceid_method(
                   pipeline.model_id, None, FACEID_GRID[:1], chunk=64),
               "faceid-shuffled64": faceid_method(
                   pipeline.model_id, None, SHUFFLED_GRID, chunk=64),
               **baseline_methods()}
    unknown = [name for name in wanted if name not in methods]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(methods)}")
    chosen = {name: method for name, method in methods.items()
              if name in wanted or (name.startswith("faceid-") and "faceid" in wanted)}
    total = sum(len(images) for images in list_lfw_images(args.lfw_dir).values())
    with progress_bar(total, "embedding LFW", enabled=not args.json) as advance:
        embeddings = load_or_embed_lfw(pipeline, args.lfw_dir, args.embeddings,
                                       on_photo=advance)
    if not args.json:
        for note in embeddings.notes:
            stderr.print(f"[dim]{escape(note)}[/dim]")

    def progress(point: OperatingPoint) -> None:
        if not args.json:
            stderr.print(f"[dim]{escape(point.method)} {point.param}: pairwise P "
                         f"{point.pairwise.precision:.4f}, BCubed F {point.bcubed.f:.4f} "
                         f"({point.seconds:.1f} s)[/dim]")

    result = evaluate_clustering(embeddings.vectors, embeddings.identities, chosen,
                                 on_point=progress)
    if args.json:
        print_json({"model": pipeline.model_id, **result.as_dict()})
        return EXIT_OK
    data = result.dataset
    stdout.print(f"clustering · {escape(str(args.lfw_dir))} · {pipeline.model_id} · "
                 f"{data.faces} faces of {data.identities} people ({data.identities_with_pairs}"
                 f" with ≥ 2 images; {data.singleton_faces} faces alone as noise)")
    # Plain lines, not a table: they are meant to be pasted and compared, at any width.
    width = max(13, *map(len, chosen))
    print(f"{'method':<{width}} {'point':<9} {'pairwise P / R':<15} {'BCubed P / R / F':<22} "
          f"{'groups':>6} {'s/run':>6}  parameter")
    for name in chosen:
        points: list[tuple[str, OperatingPoint | None]] = [
            (f"P ≥ {MIN_PRECISION}", result.best(name)), ("best F", result.best_any(name))]
        if name.startswith("faceid"):  # its first point is what faceid uses
            points.insert(0, ("default", result.points[name][0]))
        if all(isinstance(p.param, dict) and "shuffle" in p.param  # one line per order
               for p in result.points[name]):
            points = [(f"order {p.param['shuffle']}", p) for p in result.points[name]]
        for label, point in points:
            if point is None:
                print(f"{name:<{width}} {label:<9} none reaches it")
                continue
            param = (", ".join(f"{key} {value}" for key, value in point.param.items())
                     if isinstance(point.param, dict) else str(point.param))
            print(f"{name:<{width}} {label:<9} {point.pairwise.precision:.4f} / "
                  f"{point.pairwise.recall:.4f} {point.bcubed.precision:.4f} / "
                  f"{point.bcubed.recall:.4f} / {point.bcubed.f:.4f} {point.clusters:>6} "
                  f"{point.seconds:>6.1f}  {param}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from faceid_tui.bank.calibration import calibrate
    from faceid_tui.bank.thresholds import save_threshold

    pipeline = build_pipeline(settings)
    bank = open_bank(settings, pipeline)
    try:
        sync_bank(bank, show_progress=not args.json)
        names, _paths, samples = bank.store.samples(pipeline.model_id)
        result = calibrate(names, samples, pipeline.model_id, settings.fpir)
        saved = None
        if args.save:
            if not isinstance(bank, IdentityBank):
                raise UsageError("--save writes faceid.toml into a bank folder; a shared bank "
                                 "takes the threshold with --threshold on each station")
            saved = save_threshold(bank.folder, pipeline.model_id, result.threshold.value,
                                   settings.fpir, result.samples)
    finally:
        bank.close()
    if args.json:
        print_json({**result.as_dict(), "saved_to": None if saved is None else str(saved)})
        return EXIT_OK
    print_calibration(result)
    if saved is not None:
        stdout.print(f"saved: threshold {result.threshold.value:.3f} for {pipeline.model_id} "
                     f"in {escape(str(saved))}")
    else:
        stdout.print("[dim]not saved (add --save to use this threshold from now on)[/dim]")
    return EXIT_OK


def print_calibration(result: Calibration) -> None:
    from faceid_tui.bank.calibration import QUANTILES, histogram

    stdout.print(f"bank: {result.identities} identities, {result.samples} samples · "
                 f"{result.model_id}")
    stdout.print(f"scores: {len(result.genuine):,} genuine pairs (same identity), "
                 f"{len(result.impostor):,} impostor pairs (different identities)")
    quantiles = Table("", *(f"{q:.0%}" if 0 < q < 1 else ("min" if q == 0 else "max")
                            for q in QUANTILES), header_style="bold", title="score quantiles")
    for label, scores in (("genuine", result.genuine), ("impostor", result.impostor)):
        values = result.quantiles(scores)
        quantiles.add_row(label, *([f"{v:.2f}" for v in values] or ["-"] * len(QUANTILES)))
    stdout.print(quantiles)
    edges = np.round(np.arange(-0.2, 1.0001, 0.1), 2)
    genuine, impostor = histogram(result.genuine, edges), histogram(result.impostor, edges)
    bars = Table("score", "genuine", "impostor", header_style="bold", box=None,
                 title="score histogram (each column scaled to its largest bin)")
    for low, high, g, i in zip(edges[:-1], edges[1:], genuine, impostor, strict=True):
        marker = " ◀ threshold" if low <= result.threshold.value < high else ""
        bars.add_row(f"{low:+.1f}…{high:+.1f}{marker}",
                     f"[green]{'█' * round(20 * g / max(1, genuine.max()))}[/green] {g}",
                     f"[red]{'█' * round(20 * i / max(1, impostor.max()))}[/red] {i}")
    stdout.print(bars)
    stdout.print(f"target FPIR {result.fpir:.1%} over {result.samples} samples → per-comparison "
                 f"FAR {result.far:.1e}")
    if result.bank_threshold is not None:
        stdout.print(f"threshold read off this bank: {result.bank_threshold:.3f}")
    stdout.print(f"built-in impostor curve: {result.curve.value:.3f} "
                 f"({escape(result.curve.detail)})")
    stdout.print(f"[bold]threshold for FPIR {result.fpir:.1%}: {result.threshold.value:.3f}"
                 f"[/bold] ({escape(result.threshold.source)})")
    if result.unnamed_share is not None:
        stdout.print(f"known people it would leave unnamed: {result.unnamed_share:.1%} "
                     f"(each of {len(result.best_genuine)} samples matched against the rest of "
                     "its identity)")
    for note in result.notes:
        stdout.print(f"[yellow]note: {escape(note)}[/yellow]")


def run_app(args: argparse.Namespace, settings: Settings) -> int:
    """Open the triage app on the inbox (needs a terminal)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("the triage app needs a terminal; for scripts use `faceid scan`")
    from faceid_tui.tui.app import FaceIdApp  # Textual only loads for the app

    session = open_session(settings, args.inbox, args.out, args.move_done)
    try:
        FaceIdApp(session, images=args.images).run()
    finally:
        session.close()
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the same app in a browser: textual-serve runs `faceid` per browser session."""
    import shlex

    from textual_serve.server import Server

    command = [sys.executable, "-m", "faceid_tui", "--bank", settings.bank_location,
               "--models", str(settings.models_dir), "--detector", settings.detector,
               "--embedder", settings.embedder, "--runtime", settings.runtime,
               "--device", settings.device, "--fpir", str(settings.fpir),
               "--inbox", str(args.inbox), "--out", str(args.out), "--images", "halfcell"]
    if args.move_done is not None:
        command += ["--move-done", str(args.move_done)]
    if settings.upsample is not None:
        command += ["--upsample", str(settings.upsample)]
    if settings.threshold is not None:
        command += ["--threshold", str(settings.threshold)]
    Server(shlex.join(command), host=args.host, port=args.port, title="faceid").serve()
    return EXIT_OK


def cmd_postgres(args: argparse.Namespace, settings: Settings) -> int:
    """A local PostgreSQL + pgvector from PyPI (pgserver), left running for the stations."""
    from faceid_tui.bank.local_postgres import start_local_postgres, stop_local_postgres

    if args.stop:
        stopped = stop_local_postgres(args.data)
        stdout.print(f"stopped the server in {escape(str(args.data))}" if stopped else
                     f"no server is running in {escape(str(args.data))}")
        return EXIT_OK
    url = start_local_postgres(args.data)
    print(url)
    stderr.print(f"[dim]running, data in {escape(str(args.data))}; use it with "
                 f"--bank '{escape(url)}' (or export FACEID_BANK=…); stop it with "
                 f"`faceid postgres --stop {escape(str(args.data))}`[/dim]")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "scan": cmd_scan, "enroll": cmd_enroll, "enrol": cmd_enroll, "bank": cmd_bank,
    "embed": cmd_embed, "models": cmd_models, "eval": cmd_eval, "serve": cmd_serve,
    "cluster": cmd_cluster,
    "calibrate": cmd_calibrate,
    "postgres": cmd_postgres,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
        if args.command is None:
            return run_app(args, settings)
        return COMMANDS[args.command](args, settings)
    except (UsageError, InvalidNameError, BankError) as exc:
        stderr.print(f"[red]faceid: {escape(str(exc))}[/red]")
        return EXIT_USAGE
    except FaceIdError as exc:
        stderr.print(f"[red]faceid: {escape(str(exc))}[/red]")
        return EXIT_FILE_FAILED
    except ValueError as exc:  # e.g. --device cuda without a GPU
        stderr.print(f"[red]faceid: {escape(str(exc))}[/red]")
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/yellow]")
        return 130
