"""Figures of the experiments: saved as PNG (for the report page) and PDF (for papers), headless.

Every figure is a bare `matplotlib.figure.Figure` (never pyplot's), which renders to PNG and PDF
without any backend: figures are written on a cluster node or in CI without a display, and
importing bench never chooses a backend for the user (a notebook keeps its inline plots).
Files are written atomically like every other output.
"""
from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

from matplotlib.figure import Figure

from bench.store import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from bench.experiments.base import ExperimentContext
    from bench.experiments.tables import ResultTable


@dataclass(frozen=True)
class FigureConfig:
    """Sizes and resolution: the one place for the figures' numbers."""

    dpi: int = 150
    panel_width: float = 0.55     # inches per bar group (row) in a bar panel
    panel_min_width: float = 3.0
    panel_height: float = 3.2     # inches, room for the rotated row labels
    panels_per_line: int = 2
    published_color: str = "black"
    ours_color: str = "tab:blue"
    offset: float = 0.15          # ours left of the row's tick, the paper's right of it
    x_margin: float = 0.1


CFG = FigureConfig()


RGB = tuple[float, float, float]


def palette(name: str = "tab10") -> tuple[RGB, ...]:
    """The colours of one of matplotlib's listed (qualitative) colour maps, e.g. tab10's ten."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    cmap = matplotlib.colormaps[name]
    if not isinstance(cmap, ListedColormap):
        raise ValueError(f"colour map {name!r} is not a listed colour map")
    return tuple(cast(RGB, tuple(c)) for c in cast(Sequence[Sequence[float]], cmap.colors))


FIGURE_KIND = "bench-figure"  # a figure's stem.json: what it drew from, for `bench report`


def save_figure(fig: Any, ctx: "ExperimentContext", stem: str) -> list[Path]:
    """Write results/NAME/stem.png, stem.pdf and stem.json (the run ids of the records read so
    far and the context's notes, which `bench report` shows under the figure), close the
    figure; the three paths.

    The PDF carries no creation date, so an unchanged figure gives an unchanged file.
    """
    paths = []
    for ext, kwargs in (("png", {"dpi": CFG.dpi}), ("pdf", {"metadata": {"CreationDate": None}})):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, bbox_inches="tight", **kwargs)
        path = ctx.path(f"{stem}.{ext}")
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    _close(fig)
    path = ctx.path(f"{stem}.json")
    atomic_write_json(path, {"kind": FIGURE_KIND, "runs": list(ctx.read), "notes": list(ctx.notes)})
    return paths + [path]


def _close(fig: Any) -> None:
    """Release a figure pyplot manages (a caller's); bench's own bare Figures need nothing."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)  # a no-op for a Figure that pyplot never managed


def bar_figure(table: "ResultTable", title: str = "") -> Figure:
    """One panel per column: ours (mean ± std over seeds) per row beside the published mean ± std.

    Rows without a value of ours have no marker; an ablation's trend against the paper's is then
    readable at a glance, which the table's digits hide.
    """
    from bench.experiments.tables import summarise

    stats = summarise(table)
    n = max(len(table.columns), 1)
    ncols = min(n, CFG.panels_per_line)
    nrows = math.ceil(n / ncols)
    width = max(CFG.panel_min_width, CFG.panel_width * len(table.rows))
    fig = Figure(figsize=(width * ncols, CFG.panel_height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(table.columns):]:
        ax.set_visible(False)
    xs = list(range(len(table.rows)))
    for ax, col in zip(axes, table.columns):
        cells = [stats[(row, col)] for row in table.rows]
        ours = [c.mean if c.mean is not None else math.nan for c in cells]
        err = [c.std if c.std is not None else 0.0 for c in cells]
        ax.errorbar([x - CFG.offset for x in xs], ours, yerr=err, fmt="s", color=CFG.ours_color,
                    markersize=4, capsize=2, label="ours")
        pub = [(x, c.published) for x, c in zip(xs, cells) if c.published is not None]
        if pub:
            ax.errorbar([x + CFG.offset for x, _ in pub], [p[0] for _, p in pub],
                        yerr=[0.0 if math.isnan(p[1]) else p[1] for _, p in pub], fmt="o",
                        color=CFG.published_color, markersize=3, capsize=2, label="paper")
        ax.margins(x=CFG.x_margin)
        ax.set_xticks(xs, table.rows, rotation=45, ha="right", fontsize="small")
        ax.set_title(col, fontsize="small")
        ax.set_ylabel("%")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small", loc="lower left")
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig
