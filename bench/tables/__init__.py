"""Result tables: records into numbers, numbers into text, beside the paper's published values.

`cells` makes every number a table shows (mean, sample std, n, the test against a column's best),
`render` lays the numbers out as a `Grid` (and CSV), `formats` prints a grid as Markdown, LaTeX or
HTML, `paper` holds the MDM paper's published numbers. The entry points are re-exported here; a
caller that needs more (the config, the grid, the writers) imports from the module that holds it.
The modules import each other, never this package.
"""
from __future__ import annotations

from bench.tables.cells import RecordRow, ResultTable, aggregate, seed_mean_std, summarise
from bench.tables.paper import ABLATIONS, TABLE1_METHODS, ablation, published
from bench.tables.render import render_records, render_result

__all__ = ["ABLATIONS", "TABLE1_METHODS", "RecordRow", "ResultTable", "ablation", "aggregate", "published",
           "render_records", "render_result", "seed_mean_std", "summarise"]
