"""The photo list as the app shows it, without the app: which photos a filter keeps, their
order, a name search, and each row's cells fitted to the columns of an 80-column terminal.

Kept apart from Textual so the rules are tested directly and the screen only draws rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from faceid_tui.bank.matching import AMBIGUOUS, CONFLICT, KNOWN, LIKELY, UNKNOWN
from faceid_tui.triage.ledger import ERROR, PROCESSING, QUEUED, REVIEW, REVIEWED
from faceid_tui.triage.session import PhotoView

#: Filters in the order the filter key cycles through them: (key, label shown in the title).
FILTERS: tuple[tuple[str, str], ...] = (
    ("all", "all"),
    ("review", "to review"),
    ("known", "known"),
    ("tentative", "likely/ambiguous"),
    ("unknown", "unknown"),
    ("errors", "errors"),
    ("reviewed", "reviewed"),
)
SORTS: tuple[tuple[str, str], ...] = (("time", "by time"), ("score", "by score"))
_TENTATIVE = frozenset((LIKELY, AMBIGUOUS, CONFLICT))

# Column widths of the photo table (80 columns: these, the names column, the preview).
PHOTO_WIDTH = 16
STATE_WIDTH = 8
NAMES_WIDTH = 22


def keeps(view: PhotoView, filter_key: str) -> bool:
    """Whether the filter shows this photo."""
    if filter_key == "all":
        return True
    if filter_key == "review":
        return view.state == REVIEW
    if filter_key == "errors":
        return view.state == ERROR
    if filter_key == "reviewed":
        return view.state == REVIEWED
    open_statuses = view.pending
    if filter_key == "known":
        return KNOWN in open_statuses
    if filter_key == "tentative":
        return any(status in _TENTATIVE for status in open_statuses)
    if filter_key == "unknown":
        return UNKNOWN in open_statuses
    raise ValueError(f"unknown filter {filter_key!r}")


def matches_search(view: PhotoView, text: str) -> bool:
    """Case-insensitive search in the names shown and the file name."""
    if not text:
        return True
    needle = text.casefold()
    return needle in view.path.rsplit("/", 1)[-1].casefold() or any(
        needle in name.casefold() for name in view.names)


@dataclass(frozen=True)
class ListSettings:
    filter_key: str = "all"
    sort_key: str = "time"
    search: str = ""

    def next_filter(self, step: int = 1) -> ListSettings:
        keys = [key for key, _ in FILTERS]
        return replace(self, filter_key=keys[(keys.index(self.filter_key) + step) % len(keys)])

    def next_sort(self) -> ListSettings:
        keys = [key for key, _ in SORTS]
        return replace(self, sort_key=keys[(keys.index(self.sort_key) + 1) % len(keys)])

    def keeps(self, view: PhotoView) -> bool:
        return keeps(view, self.filter_key) and matches_search(view, self.search)

    def order(self, view: PhotoView) -> tuple[float, int]:
        """Sort key: arrival order, or the best score first (photos without one last)."""
        if self.sort_key == "score":
            return (-(view.best_score if view.best_score is not None else -2.0), view.seq)
        return (0.0, view.seq)

    def visible(self, views: list[PhotoView]) -> list[PhotoView]:
        kept = [view for view in views if self.keeps(view)]
        return kept if self.sort_key == "time" else sorted(kept, key=self.order)

    def title(self, shown: int, total: int) -> str:
        label = dict(FILTERS)[self.filter_key]
        parts = [f"Photos · {label}"]
        if self.sort_key != "time":
            parts.append(dict(SORTS)[self.sort_key])
        if self.search:
            parts.append(f"“{self.search}”")
        parts.append(f"{shown}/{total}" if shown != total else f"{total}")
        return " · ".join(parts)


def ellipsize_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut in the middle so that both the start and
    the end (a file name's extension and counter) stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = width // 2
    tail = width - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def fit_names(names: tuple[str, ...], width: int) -> str:
    """The names joined, cut so that the count of the names left out is always shown
    (``Kit, Rose? +3``) instead of being cropped away."""
    joined = ", ".join(names)
    if len(joined) <= width:
        return joined
    for kept in range(len(names) - 1, 0, -1):
        text = ", ".join(names[:kept]) + f" +{len(names) - kept}"
        if len(text) <= width:
            return text
    rest = f" +{len(names) - 1}" if len(names) > 1 else ""
    return ellipsize_middle(names[0], max(1, width - len(rest))) + rest


_STATE_LABELS = {QUEUED: "queued", PROCESSING: "working", REVIEW: "review",
                 REVIEWED: "reviewed", ERROR: "error"}


def row_cells(view: PhotoView, shown_path: str,
              names_width: int = NAMES_WIDTH) -> tuple[str, str, str, str, str]:
    """(photo, state, faces, best, names) for the photo table."""
    has_faces = view.state in (REVIEW, REVIEWED)
    best = "-" if view.best_score is None else f"{view.best_score:.2f}"
    names = (ellipsize_middle(view.error, names_width) if view.error
             else fit_names(view.names, names_width))
    if has_faces and not view.faces:
        names = "no face"
    return (ellipsize_middle(shown_path, PHOTO_WIDTH), _STATE_LABELS.get(view.state, view.state),
            str(view.faces) if has_faces else "", best, names)


def shown_folder(folder: Path) -> str:
    """A folder as the user would type it: relative to where faceid runs when it lies below,
    else from ``~`` or absolute; always ending in ``/``."""
    folder = Path(folder).absolute()
    for base, prefix in ((Path.cwd(), ""), (Path.home(), "~/")):
        if folder.is_relative_to(base) and folder != base:
            return f"{prefix}{folder.relative_to(base)}/"
    return f"{folder}/"


def first_run_text(inbox: Path, bank: Path | str, out: Path, identities: int) -> str:
    """What the app shows before any photo arrived: where photos go, how to enrol the people
    to recognise, and where results are written. ``bank``: a bank folder, or the (redacted)
    URL of a shared bank."""
    shown_bank = shown_folder(bank) if isinstance(bank, Path) else bank
    people = (f"{identities} known {'person' if identities == 1 else 'people'} in the bank "
              f"{shown_bank}" if identities else
              f"The bank {shown_bank} is empty: press i to import a folder laid out as "
              "Name/photo.jpg (one folder per person), or one photo under a name; or name "
              "faces as they come with n.")
    return "\n\n".join((
        "No photos yet.",
        f"Drop or copy photos into {shown_folder(inbox)} (subfolders too). Each is read once "
        "it is complete, and its faces are listed here to confirm (enter), name (n) or "
        "reject (x).",
        people,
        f"Results: an annotated copy and a JSON record of each photo go to "
        f"{shown_folder(out)} once its faces are decided.",
        "? lists every key · b opens the bank · q quits",
    ))
