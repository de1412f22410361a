"""Pictures of an evaluation: the ROC curve and the same/different score histograms.

matplotlib is an optional dependency (the ``plot`` extra); it is imported only when a plot is
asked for, with the Agg backend so it works over SSH with no display.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from faceid_tui.errors import FaceIdError
from faceid_tui.fsutil import atomic_write_bytes


def roc_points(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(FAR, TAR)`` at every distinct threshold, from the strictest to the loosest."""
    order = np.argsort(-scores, kind="mergesort")
    accepted_same = np.cumsum(same[order])
    accepted_different = np.cumsum(~same[order])
    return (accepted_different / max(1, (~same).sum()),
            accepted_same / max(1, same.sum()))


def write_evaluation_plot(path: Path, scores: np.ndarray, same: np.ndarray, title: str,
                          threshold: float | None = None) -> Path:
    """Write a PNG with the ROC curve (log FAR axis) beside the two score histograms."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise FaceIdError("--plot needs matplotlib: pip install 'faceid-tui[plot]' "
                          "(make run / make test install it)") from exc
    same = np.asarray(same, dtype=bool)
    far, tar = roc_points(np.asarray(scores), same)
    figure, (roc, histogram) = plt.subplots(1, 2, figsize=(11, 4.5))
    floor = 1.0 / max(1, (~same).sum())
    roc.plot(np.maximum(far, floor), tar, color="tab:blue")
    roc.set_xscale("log")
    roc.set_xlim(floor, 1.0)
    roc.set_ylim(max(0.0, float(tar[far >= floor].min(initial=1.0)) - 0.02), 1.001)
    roc.set_xlabel("false accept rate (different people accepted)")
    roc.set_ylabel("true accept rate (same person accepted)")
    roc.set_title("ROC")
    roc.grid(True, which="both", alpha=0.3)
    bins = np.linspace(min(-0.3, float(scores.min())), 1.0, 66)
    histogram.hist(scores[same], bins=bins, alpha=0.6, color="tab:green", label="same person")
    histogram.hist(scores[~same], bins=bins, alpha=0.6, color="tab:red",
                   label="different people")
    if threshold is not None:
        histogram.axvline(threshold, color="black", linestyle="--",
                          label=f"threshold {threshold:.3f}")
    histogram.set_xlabel("cosine similarity")
    histogram.set_ylabel("pairs")
    histogram.set_title("scores")
    histogram.legend()
    figure.suptitle(title)
    return save_png(figure, path)


def save_png(figure: object, path: Path) -> Path:
    """Lay out ``figure``, write it as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()  # type: ignore[attr-defined]
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
