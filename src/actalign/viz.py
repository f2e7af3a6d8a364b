"""Figure 4 of the paper: per candidate, the step-by-time affinity heatmap with its DTW path.

One colour scale, fitted to the data and shared by all panels of a video (so panels compare), with
a colour bar; each step's segment outlined; a strip of frame thumbnails along the time axis.
Uses matplotlib's object API only: the caller's backend and pyplot state are never touched.
"""

from __future__ import annotations

import io
import os
import textwrap
import warnings
from pathlib import Path

import numpy as np

from actalign.errors import ActAlignError
from actalign.files import atomic_write_bytes
from actalign.score import Prediction

LABEL_WIDTH = 42  # characters per line of a step label


def plot_prediction(
    prediction: Prediction,
    out: str | os.PathLike | None = None,
    answer: str | None = None,
    top_k: int | None = None,
    thumbnails: int = 10,
    video=None,
    max_panels: int = 6,
):
    """Draw one panel per candidate (best first, at most `top_k`, plus the correct one wherever it
    ranks) and return the matplotlib Figure; with `out`, also save it as PNG, SVG or PDF (by suffix).

    Steps are on the y axis (first at the top), seconds on the x axis; the white line is the DTW
    path and the outlined boxes are each step's segment. The predicted candidate is marked, and the
    correct one when `answer` is given. `thumbnails` frames (0: none) are decoded from `video`
    (default: the prediction's video file) for the strip on top.
    """
    from matplotlib.figure import Figure

    check_plot_path(out)
    limit = min(max_panels, top_k) if top_k else max_panels
    aligned = [c for c in prediction.candidates if c.affinity is not None]
    shown = aligned[:limit]
    correct = next((c for c in aligned if c.action == answer), None)
    if correct is not None and correct not in shown:  # the correct candidate ranked lower: its panel too
        shown.append(correct)
    if not shown:
        raise ActAlignError(
            "Nothing to plot: the mean-pool baseline has no alignment; use `method=actalign`."
        )
    ts = prediction.timestamps
    dt = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
    x0, x1 = ts[0] - dt / 2, ts[-1] + dt / 2
    labels = [[textwrap.fill(s, LABEL_WIDTH) for s in c.steps] for c in shown]
    heights = [0.9 + 0.32 * sum(lab.count("\n") + 1 for lab in labs) for labs in labels]
    strip = _thumbnails(prediction, video, thumbnails, (x0, x1))
    ratios = ([1.1] if strip else []) + heights
    fig = Figure(figsize=(12, 1.0 + sum(ratios)), layout="constrained")
    grid = fig.add_gridspec(len(ratios), 2, height_ratios=ratios, width_ratios=[60, 1])
    lo = min(float(c.affinity.min()) for c in shown)
    hi = max(float(c.affinity.max()) for c in shown)
    if hi - lo < 1e-12:
        lo, hi = lo - 1e-3, hi + 1e-3
    axes = []
    if strip:
        ax = fig.add_subplot(grid[0, 0])
        for img, extent in strip:
            ax.imshow(img, extent=extent, aspect="auto")
        ax.set_xlim(x0, x1)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.tick_params(labelbottom=False)
        ax.set_title("frames", fontsize=8, loc="left")
        axes.append(ax)
    image = None
    for i, (c, labs) in enumerate(zip(shown, labels)):
        ax = fig.add_subplot(grid[i + (1 if strip else 0), 0], sharex=axes[0] if axes else None)
        image = _panel(ax, c, labs, ts, (x0, x1), (lo, hi), answer)
        ax.tick_params(labelbottom=i == len(shown) - 1)
        axes.append(ax)
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(image, cax=fig.add_subplot(grid[1 if strip else 0 :, 1]), label="affinity (Eq. 9)")
    fig.suptitle(f"{Path(prediction.video).name} \u2014 {prediction.domain}", fontsize=10)
    if out is not None:
        _save(fig, Path(out))
    return fig


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def check_plot_path(out) -> None:
    """Plots are PNG, SVG or PDF, chosen by the file's suffix."""
    if out is not None and Path(out).suffix.lower() not in PLOT_SUFFIXES:
        suffix = Path(out).suffix
        what = f"not {suffix}" if suffix else "chosen by the file's suffix"
        raise ActAlignError(f"Plots are saved as .png, .svg or .pdf, {what}: give {out} one of those.")


def _panel(ax, c, labels, ts, xlim, vlim, answer):
    from matplotlib.patches import Rectangle

    k = len(c.steps)
    image = ax.imshow(
        c.affinity,
        aspect="auto",
        cmap="viridis",
        vmin=vlim[0],
        vmax=vlim[1],
        interpolation="nearest",
        extent=(xlim[0], xlim[1], k - 0.5, -0.5),
    )
    ax.plot(ts[c.path[:, 1]], c.path[:, 0], color="white", linewidth=1.6)
    from actalign.align import segments_from_path

    cell = (xlim[1] - xlim[0]) / len(ts)  # the heatmap's columns: one per sampled frame
    for row, (first, last) in enumerate(segments_from_path(c.path, k)):
        left = xlim[0] + first * cell
        ax.add_patch(
            Rectangle(
                (left, row - 0.45),
                (last - first + 1) * cell,
                0.9,
                fill=False,
                edgecolor="#ff5a36",
                linewidth=1.3,
            )
        )
    if c.span is not None:
        for edge in c.span:
            ax.axvline(edge, color="#ff5a36", linestyle="--", linewidth=1.0)
    ax.set_xlim(*xlim)
    ax.set_yticks(range(k))
    ax.set_yticklabels(labels, fontsize=7)
    marks = ["predicted"] if c.rank == 1 else []
    if answer is not None:
        marks.append("correct \u2713" if c.action == answer else "\u2717")
    title = f"#{c.rank} {c.action}   score {c.score:.4f}" + (f"   [{', '.join(marks)}]" if marks else "")
    ax.set_title(title, fontsize=9, loc="left", color="green" if c.action == answer else "black")
    return image


def _thumbnails(prediction: Prediction, video, n: int, xlim) -> list:
    """[(image, extent)] for `n` frames spread over the clip; [] when the video cannot be read."""
    if n <= 0:
        return []
    from actalign.video import ArrayVideo, Sampling, read_frames

    source = video if video is not None else prediction.video
    if not isinstance(source, ArrayVideo) and not Path(str(source)).is_file():
        return []
    ts = prediction.timestamps
    picks = np.unique(np.linspace(0, len(ts) - 1, min(n, len(ts))).round().astype(int))
    slot = (xlim[1] - xlim[0]) / len(picks)
    out = []
    try:
        for j, i in enumerate(picks):
            start = float(ts[i])
            with warnings.catch_warnings():  # a thumbnail is one frame by design
                warnings.simplefilter("ignore")
                got = read_frames(source, Sampling(start=start, end=start + 1e-3 + slot), resize=96)
            left = xlim[0] + j * slot
            out.append((got.frames[0], (left, left + slot * 0.96, 0, 1)))
    except ActAlignError:
        return []
    return out


def _save(fig, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix[1:].lower(), dpi=110)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise ActAlignError(f"Cannot write the plot {out} ({e.strerror}); choose another place.") from None
