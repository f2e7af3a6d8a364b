"""Figure 4 of the paper: per candidate, the step-by-time affinity heatmap with its DTW path."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import numpy as np

from actalign.classify import Prediction
from actalign.encoders.cache import atomic_write_bytes
from actalign.errors import ActAlignError


def plot_prediction(
    prediction: Prediction,
    out: str | os.PathLike,
    answer: str | None = None,
    max_panels: int = 6,
) -> Path:
    """Draw one panel per candidate (best first) and save a PNG or SVG, chosen by suffix.

    Steps are on the y axis (first at the top), seconds on the x axis; the white line is the DTW
    path. The predicted candidate is marked, and the correct one when `answer` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    if out.suffix.lower() not in (".png", ".svg"):
        raise ActAlignError(f"Plots are saved as .png or .svg, not {out.suffix or 'no suffix'} ({out}).")
    shown = [c for c in prediction.candidates if c.affinity is not None][:max_panels]
    if not shown:
        raise ActAlignError(
            "Nothing to plot: the mean-pool baseline has no alignment; use --method actalign."
        )
    ts = prediction.timestamps
    dt = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0
    edges = (ts[0] - dt / 2, ts[-1] + dt / 2)
    k_max = max(len(c.steps) for c in shown)
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(11, 1.2 + 0.45 * k_max * len(shown) + 0.5 * len(shown)), squeeze=False
    )
    image = None
    for ax, c in zip(axes[:, 0], shown):
        image = ax.imshow(
            c.affinity,
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
            extent=(edges[0], edges[1], len(c.steps) - 0.5, -0.5),
        )
        ax.plot(ts[c.path[:, 1]], c.path[:, 0], color="white", linewidth=1.8)
        ax.set_yticks(range(len(c.steps)))
        ax.set_yticklabels([textwrap.shorten(s, 60) for s in c.steps], fontsize=7)
        marks = []
        if c.rank == 1:
            marks.append("predicted")
        if answer is not None:
            marks.append("correct \u2713" if c.action == answer else "\u2717")
        title = f"#{c.rank} {c.action}   score {c.score:.3f}" + (f"   [{', '.join(marks)}]" if marks else "")
        ax.set_title(title, fontsize=9, loc="left", color="green" if c.action == answer else "black")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{Path(prediction.video).name} \u2014 {prediction.domain}", fontsize=10)
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="affinity", fraction=0.02, pad=0.01)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix[1:].lower(), dpi=110, bbox_inches="tight")
    plt.close(fig)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise ActAlignError(f"Cannot write the plot {out} ({e.strerror}); choose another place.") from None
    return out
