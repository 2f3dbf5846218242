"""The `trivial` reference row of every table: a constant predictor, never trained.

A score at or below it means the method learned nothing a constant could not, so every table
prints it beside the methods of each (data set, label fraction) cell:

- binary data (GlaS, MoNuSeg, synthetic-glands): every pixel foreground;
- multi-class data (FFHQ-34, CelebA-19): every pixel the most frequent class at that position in
  the labelled training images of the fraction's subset for seed `TrivialConfig.subset_seed`
  (seed 0). One fixed subset keeps the row one number per cell and cheap; the other seeds'
  subsets of the same size give a mode map that differs only where classes are close to a tie.

The scores come from the real test split and the real metrics (bench.evaluate), so they are
exactly what a method predicting that constant would be recorded with. They are cached in
`output/reference/trivial.json`, keyed by data set, the content fingerprint of its files
(bench.data.fingerprint: a copy elsewhere hits, a changed file recomputes) and fraction, so a
`bench table` call stays fast.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image

from bench.data import get_dataset, label_subset
from bench.data.fingerprint import fingerprint
from bench.data.types import Dataset, Sample
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.jsonfile import JSONFileError, dumps, read_json
from bench.records import is_number
from bench.store import atomic_write_json, file_lock

if TYPE_CHECKING:
    from bench.config import SweepConfig


@dataclass(frozen=True)
class TrivialConfig:
    """Where the cache lives and which subset the multi-class rule reads."""

    folder: str = "reference"
    filename: str = "trivial.json"
    version: int = 1          # bump when a rule changes: cached scores of older rules are recomputed
    subset_seed: int = 0
    method: str = "trivial"


CFG = TrivialConfig()
Cell = tuple[str, "str | None", float]  # (data set, root, label fraction)


def rule_name(num_classes: int, cfg: TrivialConfig = CFG) -> str:
    return "all-foreground" if num_classes == 2 else f"pixel-mode-s{cfg.subset_seed}"


def predict(labelled: Sequence[Sample], test: Dataset) -> list[np.ndarray]:
    """The constant prediction for every test image (class maps, as a method would return)."""
    if test.num_classes == 2:
        return [np.ones(s.semantic.shape, np.int64) for s in test]
    mode = pixel_mode([s.semantic for s in labelled], test.num_classes)
    return [_fit(mode, s.semantic.shape) for s in test]


def pixel_mode(maps: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Per position, the most frequent class over `maps` (ignore pixels do not vote; ties -> lowest
    class). Maps of another size than the first are nearest-resized to it."""
    if not maps:
        raise ValueError("pixel_mode needs at least one labelled map")
    shape = maps[0].shape
    counts = np.zeros((num_classes, *shape), np.int64)
    for m in maps:
        m = _fit(m, shape)
        for c in range(num_classes):
            counts[c] += m == c
    return counts.argmax(axis=0).astype(np.int64)


def _fit(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if labels.shape == shape:
        return labels
    image = Image.fromarray(labels.astype(np.int32)).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(image).astype(np.int64)


def scores(dataset: str, root: str | None, fraction: float, cfg: TrivialConfig = CFG) -> dict[str, Any]:
    """{"metrics": {...fractions}, "rule", "n_test"} computed now from the data (no cache)."""
    train = get_dataset(dataset, root, "train")
    test = get_dataset(dataset, root, "test")
    labelled = [train[i] for i in label_subset(len(train), fraction, cfg.subset_seed)]
    metrics, _ = evaluate(test, predict(labelled, test))
    return {"metrics": metrics, "rule": rule_name(test.num_classes, cfg), "n_test": len(test)}


def data_print(dataset: str, root: str | None) -> str | None:
    """The content fingerprint of the cell's data; None where it cannot be read (moved, deleted)."""
    try:
        return fingerprint(dataset, root)
    except (BenchError, ValueError, OSError):
        return None


def cache_key(dataset: str, data: str, fraction: float, cfg: TrivialConfig = CFG) -> str:
    return f"{dataset}|{data}|{fraction:g}|v{cfg.version}"


def cached_scores(output: str | Path, cells: Iterable[Cell], cfg: TrivialConfig = CFG) -> dict[Cell, dict[str, Any]]:
    """The scores of each cell, from the cache where its data is unchanged, else computed and stored.

    A cell whose data cannot be loaded (moved, deleted) is left out with a warning on stderr: the
    records of a table stay printable when their data is gone.
    """
    path = Path(output) / cfg.folder / cfg.filename
    wanted = list(dict.fromkeys(cells))
    out: dict[Cell, dict[str, Any]] = {}
    cache = _read(path)
    prints = {(c[0], c[1]): data_print(c[0], c[1]) for c in wanted}
    keys = {c: cache_key(c[0], p, c[2], cfg) for c in wanted if (p := prints[(c[0], c[1])]) is not None}
    for cell in wanted:
        if cell not in keys:
            print(f"bench: warning: no trivial row for {cell[0]} {cell[2]:g}: its data at {cell[1]} cannot be read",
                  file=sys.stderr)
    missing = [c for c in keys if not isinstance(cache.get(keys[c]), dict)]
    for cell in keys:
        if cell not in missing:
            out[cell] = cache[keys[cell]]
    if not missing:
        return out
    try:
        with file_lock(path.with_name(path.name + ".lock")):
            cache = _read(path)  # another process may have added cells meanwhile
            _add_scores(cache, missing, prints, keys, out, cfg)
            atomic_write_json(path, cache)
    except OSError as exc:  # e.g. `reference` is a file: the rows are right, only not cached
        print(f"bench: warning: cannot write the trivial cache {path}: {exc.strerror or exc}; "
              "its rows are computed again next time", file=sys.stderr)
        _add_scores({}, [c for c in missing if c not in out], prints, keys, out, cfg)
    return out


def _add_scores(cache: dict[str, Any], cells: list[Cell], prints: dict[tuple[str, str | None], str | None],
                keys: dict[Cell, str], out: dict[Cell, dict[str, Any]], cfg: TrivialConfig) -> None:
    """Score each cell now, into `cache` (by key) and `out` (by cell); a cell whose data cannot be
    loaded is left out with a warning."""
    for cell in cells:
        try:
            entry = {**scores(*cell, cfg=cfg), "fingerprint": prints[(cell[0], cell[1])]}
        except (BenchError, ValueError, OSError) as exc:
            print(f"bench: warning: no trivial row for {cell[0]} {cell[2]:g}: {exc}", file=sys.stderr)
            continue
        cache[keys[cell]] = out[cell] = json.loads(dumps(entry))


def _read(path: Path) -> dict[str, Any]:
    """The cache's sound entries. Read like a record (bench.jsonfile): an entry that is not
    {metrics: scores, rule, fingerprint, n_test} is left out with one warning, and recomputed."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        return {}
    except JSONFileError as exc:
        _warn_once(f"bench: warning: ignoring the trivial cache {path}: {exc}; recomputing it")
        return {}
    if not isinstance(data, dict):
        _warn_once(f"bench: warning: ignoring the trivial cache {path}: not an object; recomputing it")
        return {}
    sound = {}
    for key, entry in data.items():
        problem = _entry_problem(entry)
        if problem is None:
            sound[key] = entry
        else:
            _warn_once(f"bench: warning: ignoring the trivial cache entry {key!r} of {path}: {problem}; recomputing it")
    return sound


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "expected an object"
    metrics = entry.get("metrics")
    if not isinstance(metrics, dict) or not all(v is None or is_number(v) for v in metrics.values()):
        return "metrics: expected an object of numbers (or null)"
    for key in ("rule", "fingerprint"):
        if not isinstance(entry.get(key), str):
            return f"{key}: expected a string"
    return None


_WARNED: set[str] = set()


def _warn_once(line: str) -> None:
    if line not in _WARNED:
        _WARNED.add(line)
        print(line, file=sys.stderr)


def cells_of(records: Iterable[dict[str, Any]], sweep: "SweepConfig") -> list[Cell]:
    """The (data set, root, fraction) cells of the records, in order. A record whose data's
    fingerprint (`data`) is that of a sweep root's files takes that root (its own may have moved);
    else it names its root (records before that field take the sweep's root for their data set);
    a cell whose root is unknown gets no trivial row."""
    from bench.data import DATASETS

    roots: dict[str, set[str | None]] = {}
    for entry in sweep.datasets:
        roots.setdefault(entry.name, set()).add(entry.root)
    cells = []
    for r in records:
        same = [root for root in sorted(roots.get(r["dataset"], ()), key=str)
                if isinstance(r.get("data"), str) and data_print(r["dataset"], root) == r["data"]]
        if same:
            root = same[0]
        elif "root" in r:
            root = r["root"]
        elif len(roots.get(r["dataset"], ())) == 1:
            root = next(iter(roots[r["dataset"]]))
        elif r["dataset"] in DATASETS and not DATASETS[r["dataset"]].needs_root:
            root = None
        else:
            continue
        cells.append((r["dataset"], root, float(r["fraction"])))
    return list(dict.fromkeys(cells))


def reference_rows(output: str | Path, cells: Iterable[Cell], cfg: TrivialConfig = CFG) -> list[dict[str, Any]]:
    """Table rows (the shape of bench.tables.cells) of the trivial predictor for each cell that could be scored."""
    rows = []
    for (dataset, _root, fraction), entry in cached_scores(output, cells, cfg).items():
        rows.append({"dataset": dataset, "fraction": fraction, "method": cfg.method,
                     "rule": entry["rule"], "metrics": entry["metrics"]})
    return rows
