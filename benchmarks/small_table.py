"""The README's small-preset table: one row per method of a sweep, Dice at each label fraction beside
the paper's, the trivial reference row, and the hours the method cost (its pre-training once plus
every run, summed from the records' `total_s`).

The rows come from `bench.sweep_table.sweep_rows` (the records `bench table` shows, aggregated
where every table's numbers are made); this script only lays them out wide, as a
`bench.tables.formats.Grid`. With `--write FILE` it replaces the table between the markers
`<!-- small-table -->` and `<!-- /small-table -->` in FILE, so the README never holds a number
typed by hand:

    python benchmarks/small_table.py --config results/glas-small/official.toml \\
        --config results/glas-small/bench.toml [--write README.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.config import load_config
from bench.errors import BenchError
from bench.sweep_table import sweep_rows
from bench.tables.cells import RecordRow
from bench.tables.formats import Grid, Head, Text, markdown
from bench.tables.paper import published
from bench.tables.render import mean_std, num, published_text

BEGIN, END = "<!-- small-table -->", "<!-- /small-table -->"
METRIC = "dice"
HOUR = 3600.0


def _label(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def render(*configs: str) -> str:
    """The Markdown table of the sweeps' own records (each its configuration only), methods in the
    first sweep's order; one table per data set. With several sweeps (one per protocol) each
    fraction gets one column per sweep, labelled by its protocol, and each sweep a wall column."""
    sweeps = [load_config(c) for c in configs]
    rows = [sweep_rows(s).rows for s in sweeps]
    labels = [f"{s.protocol or 'converged'} " if len(sweeps) > 1 else "" for s in sweeps]
    first = sweeps[0]
    return "\n".join(markdown(_dataset_grid(d.name, sorted(d.label_fractions, reverse=True), first.methods,
                                            [[r for r in rs if r.dataset == d.name] for rs in rows], labels))
                     for d in first.datasets)


def _dataset_grid(dataset: str, fractions: list[float], methods: tuple[str, ...], rows: list[list[RecordRow]],
                  labels: list[str]) -> Grid:
    """`rows`: each sweep's rows, `labels` their column prefixes."""
    head = [Head("method")]
    for f in fractions:
        head += [Head(f"{_label(f)}: {label}ours (n)") for label in labels] + [Head(f"{_label(f)}: paper")]
    head += [Head(f"{label}wall (h)") for label in labels]
    body: list[list[Text]] = []
    by_key = [{(r.method, r.fraction): r for r in rs if not r.reference} for rs in rows]
    for method in methods:
        cells, walls = [Text(method)], [0.0] * len(rows)
        for f in fractions:
            for i, keyed in enumerate(by_key):
                row = keyed.get((method, f))
                stats = row.cells.get(METRIC) if row else None
                ours = "not run" if stats is None or stats.mean is None else f"{mean_std(stats.mean, stats.std)} ({stats.n})"
                cells.append(Text(ours))
                walls[i] += (row.wall_s or 0.0) if row else 0.0
            pub = published(dataset, f, method, METRIC)
            cells.append(Text("" if pub is None else published_text(pub)))
        body.append(cells + [Text(f"{wall / HOUR:.2f}" if wall else "") for wall in walls])
    refs = {r.fraction: r for rs in rows for r in rs if r.reference}  # one constant per cell, whatever the sweep
    if refs:
        cells = [Text("trivial (reference: a constant, never trained)", reference=True)]
        for f in fractions:
            value = refs[f].cells.get(METRIC) if f in refs else None
            cells += [Text("" if value is None or value.mean is None else num(value.mean), reference=True)] * len(rows)
            cells += [Text("")]
        body.append(cells + [Text("")] * len(rows))
    return Grid(head, body, right=len(head))  # left-aligned, as GitHub shows a plain table


def write_between_markers(path: Path, table: str) -> None:
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"bench: error: {path}: expected one '{BEGIN}' line before one '{END}' line")
    head, rest = text.split(BEGIN, 1)
    path.write_text(f"{head}{BEGIN}\n{table}{END}{rest.split(END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, action="append",
                        help="a sweep file whose records make the table (repeat: one column per sweep)")
    parser.add_argument("--write", type=Path, help="replace the table between the markers in this file")
    args = parser.parse_args(argv)
    try:
        table = render(*args.config)
    except BenchError as exc:  # a missing or broken sweep file: one line, no traceback
        raise SystemExit(f"small_table: error: {exc}") from None
    if args.write:
        write_between_markers(args.write, table)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
