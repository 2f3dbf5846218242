"""`bench table`: one row per cell and configuration (never a pooled mean), the trivial reference
row, CSV columns that say what they are."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.runner import RunSpec
from bench.store import atomic_write_json
from tests.conftest import GLAS, sweep_toml, write_sweep

SEEDS = range(10)
SWEEP = sweep_toml(["unet"], seeds=SEEDS, output="out")
SECOND = {"max_epochs": 2}  # the other configuration of the same cell


def _write_records(output: Path, params: dict, dice0: float) -> str:
    """Ten records of unet on synthetic-glands 100% under `params`; their config hash."""
    for seed in SEEDS:
        spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method="unet", seed=seed,
                       preset="tiny", output=str(output), params=params)
        atomic_write_json(spec.record_path, {
            "run_id": spec.run_id, "dataset": spec.dataset, "root": None, "fraction": 1.0, "method": "unet",
            "kind": "supervised", "seed": seed, "preset": "tiny", "params": params,
            "metrics": {"dice": dice0 + 0.001 * seed, "iou": dice0 / 2},
            "provenance": {"config_hash": spec.config_hash, "seed": seed}})
    return spec.config_hash[:10]


@pytest.fixture
def two_configs(tmp_path: Path) -> tuple[Path, str, str]:
    config = write_sweep(tmp_path, SWEEP)
    first = _write_records(tmp_path / "out", {}, 0.80)
    second = _write_records(tmp_path / "out", SECOND, 0.60)
    return config, first, second


def _csv(capsys: pytest.CaptureFixture, *args: str) -> pd.DataFrame:
    capsys.readouterr()
    assert main(["table", *args, "--format", "csv"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out), dtype={"config": str})


def test_all_shows_one_row_per_configuration_never_a_pooled_mean(two_configs, capsys) -> None:
    config, first, second = two_configs
    table = _csv(capsys, "--config", str(config), "--all")
    runs = table[~table["reference"]]
    assert len(runs) == 2 and set(runs["config"]) == {first, second}
    assert (runs["n"] == 10).all() and set(runs["preset"]) == {"tiny"}
    by_config = runs.set_index("config")["dice_mean"]
    assert by_config[first] == pytest.approx(80.45) and by_config[second] == pytest.approx(60.45)
    assert not np.isclose(runs["dice_mean"], 70.45).any()  # the pooled mean of the 20 records
    assert runs["dice_std"].round(4).tolist() == [0.3028, 0.3028]


def test_default_shows_only_the_configuration_of_bench_toml(two_configs, capsys) -> None:
    config, first, second = two_configs
    table = _csv(capsys, "--config", str(config))
    assert table[~table["reference"]]["config"].tolist() == [first]
    other = _csv(capsys, "--config", str(config), "--set", "params.unet.max_epochs=2")
    assert other[~other["reference"]]["config"].tolist() == [second]
    assert other[~other["reference"]]["dice_mean"].iloc[0] == pytest.approx(60.45)


def test_trivial_reference_row_is_marked_real_and_cached(two_configs, capsys, monkeypatch) -> None:
    config, _, _ = two_configs
    capsys.readouterr()
    assert main(["table", "--config", str(config), "--all"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if "trivial" in line)
    assert "trivial (reference)" in row and "| reference | all-foreground | 1 |" in row
    assert "never trained" in text
    cache = json.loads((config.parent / "out" / "reference" / "trivial.json").read_text())
    (entry,) = cache.values()
    assert entry["rule"] == "all-foreground" and 0 < entry["metrics"]["dice"] < 1

    from bench import trivial
    from bench.data import get_dataset

    test = get_dataset("synthetic-glands", None, "test")
    fg = [np.count_nonzero(s.semantic) / s.semantic.size for s in test]
    assert entry["metrics"]["dice"] == pytest.approx(np.mean([2 * f / (1 + f) for f in fg]))

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(trivial, "scores", boom)
    table = _csv(capsys, "--config", str(config), "--all")
    assert table[table["reference"]]["dice_mean"].iloc[0] == pytest.approx(100 * entry["metrics"]["dice"])


def test_csv_columns_say_what_they_are(two_configs, capsys) -> None:
    config, _, _ = two_configs
    table = _csv(capsys, "--config", str(config), "--all")
    assert {"dice_mean", "dice_std", "dice_published_mean", "dice_published_std", "reference"} <= set(table)
    assert not [c for c in table.columns if c.endswith("_paper") or c == "aji_paper"]


def test_published_values_land_in_their_own_columns() -> None:
    from bench.tables import aggregate, render_records

    record = {"dataset": "glas", "fraction": 0.1, "method": "unet", "seed": 0, "preset": "paper",
              "run_id": "glas-f0.1-unet-s0-0123456789", "metrics": {"dice": 0.8, "aji_paper": 0.5}}
    rows = aggregate([record])
    table = pd.read_csv(io.StringIO(render_records(rows, "csv")), dtype={"config": str})
    assert not np.isnan(table["dice_published_mean"].iloc[0]) and "aji_paper_published_mean" in table
    assert table["config"].iloc[0] == "0123456789" and table["n"].iloc[0] == 1
    assert "dice (published)" in render_records(rows, "markdown")


def test_published_glas_numbers_stand_beside_the_paper_variants_where_recorded() -> None:
    from bench.tables.cells import aggregate
    from bench.tables.paper import published
    from bench.tables.render import PAPER_NOTE, render_records

    def rec(dataset: str, seed: int, metrics: dict[str, float], config: str = "0123456789") -> dict:
        return {"dataset": dataset, "fraction": 0.1, "method": "unet", "seed": seed, "preset": "paper",
                "run_id": f"{dataset}-f0.1-unet-s{seed}-{config}", "metrics": metrics}

    new = {"dice": 0.5, "dice_paper": 0.6, "iou": 0.4, "iou_paper": 0.45, "aji_paper": 0.4}
    old = {"dice": 0.5, "iou": 0.4, "aji_paper": 0.4}
    rows = aggregate([rec("glas", 0, new), rec("glas", 1, new), rec("glas", 0, old, "9876543210"),
                      rec("monuseg", 0, new)])
    by = {(r.dataset, r.config): r.cells for r in rows}
    fresh, older, monuseg = by[("glas", "0123456789")], by[("glas", "9876543210")], by[("monuseg", "0123456789")]
    assert fresh["dice_paper"].published == published("glas", 0.1, "unet", "dice") == (53.46, 11.09)
    assert fresh["iou_paper"].published == published("glas", 0.1, "unet", "iou")
    assert fresh["dice"].published is None and fresh["iou"].published is None
    assert fresh["dice_paper"].diff == pytest.approx(60.0 - 53.46)
    assert older["dice"].published == (53.46, 11.09) and older["iou"].published is not None  # as before
    # MoNuSeg's published Dice is the plain mean per-image Dice: it stays beside dice.
    assert monuseg["dice"].published == published("monuseg", 0.1, "unet", "dice") and not monuseg["dice_paper"].published
    assert monuseg["aji_paper"].published == published("monuseg", 0.1, "unet", "aji_paper")
    text = render_records(rows, "markdown")
    assert "dice_paper (published)" in text and "iou_paper (published)" in text and PAPER_NOTE in text
    assert PAPER_NOTE not in render_records(aggregate([rec("glas", 0, old)]), "markdown")
    table = pd.read_csv(io.StringIO(render_records(rows, "csv")), dtype={"config": str})
    cols = list(table.columns)
    assert cols[cols.index("dice_mean"):][:4] == ["dice_mean", "dice_std", "dice_published_mean", "dice_published_std"]
    assert cols.index("dice_paper_mean") < cols.index("iou_mean")  # each variant next to its plain metric
    row = table[(table["dataset"] == "glas") & (table["config"] == "0123456789")].iloc[0]
    assert row["dice_paper_published_mean"] == 53.46 and np.isnan(row["dice_published_mean"])


def test_wall_column_sums_the_cells_run_times_pretraining_once() -> None:
    """A method's cost is the sum of its cells': the run that built the backbone carries it."""
    from bench.tables import aggregate, render_records

    def rec(seed: int, total: float | None) -> dict:
        timings = {} if total is None else {"total_s": total, "pretrain_s": 900.0}
        return {"dataset": "glas", "fraction": 0.1, "method": "mdm", "seed": seed, "preset": "small",
                "run_id": f"glas-f0.1-mdm-s{seed}-0123456789", "metrics": {"dice": 0.7}, "timings": timings}

    rows = aggregate([rec(0, 1000.0), rec(1, 120.5), rec(2, None)])
    assert rows[0].wall_s == pytest.approx(1120.5)
    table = pd.read_csv(io.StringIO(render_records(rows, "csv")), dtype={"config": str})
    assert table["wall_s"].iloc[0] == pytest.approx(1120.5)
    assert "| wall (s) |" in render_records(rows, "markdown") and "| 1120 |" in render_records(rows, "markdown")
    assert aggregate([rec(0, None)])[0].wall_s is None


def test_no_records_says_so_on_stderr_and_exits_1(tmp_path: Path, capsys) -> None:
    config = write_sweep(tmp_path, SWEEP)
    for extra in ([], ["--all"]):
        assert main(["table", "--config", str(config), *extra]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("bench: no records") and len(err.strip().splitlines()) == 1


def test_pixel_mode_for_multi_class_data() -> None:
    from bench.trivial import pixel_mode

    maps = [np.array([[0, 1], [2, 255]]), np.array([[0, 1], [1, 255]]), np.array([[2, 2], [1, 3]])]
    assert pixel_mode(maps, 4).tolist() == [[0, 1], [1, 3]]  # 255 (ignore) never votes
    small = np.array([[1]])
    assert pixel_mode([small, np.full((2, 2), 3)], 4).tolist() == [[1]]  # resized to the first


@pytest.mark.skipif(not any(GLAS.glob("testA_*_anno.png")),
                    reason="real GlaS not present")
def test_trivial_on_real_glas_is_all_foreground_66_02() -> None:
    from bench.trivial import scores

    out = scores("glas", str(GLAS), 0.1)
    assert out["n_test"] == 80 and out["rule"] == "all-foreground"
    assert round(100 * out["metrics"]["dice"], 2) == 66.02 and round(100 * out["metrics"]["iou"], 2) == 51.19


def test_one_record_has_an_undefined_std_in_every_format() -> None:
    """n = 1: "± n/a" in Markdown, LaTeX and HTML (never "± 0.00"), an empty std in the CSV; a
    trivial value stays bare (a constant, not a mean over seeds)."""
    from bench.tables.cells import aggregate
    from bench.tables.render import STD_NOTE, render_records

    record = {"dataset": "synthetic-glands", "fraction": 1.0, "method": "unet", "seed": 0, "preset": "tiny",
              "run_id": "x-0123456789", "metrics": {"dice": 0.8}}
    trivial = {"dataset": "synthetic-glands", "fraction": 1.0, "method": "trivial", "rule": "all-foreground",
               "metrics": {"dice": 0.5}}
    rows = aggregate([record], [trivial])
    md = render_records(rows, "markdown")
    assert "| 1 |  |  | 80.00 ± n/a |" in md and "| 1 |  |  | 50.00 |" in md and STD_NOTE in md and "± 0.00" not in md
    assert r"80.00 $\pm$ n/a" in render_records(rows, "latex")
    assert "<td>80.00 ± n/a</td>" in render_records(rows, "html")
    table = pd.read_csv(io.StringIO(render_records(rows, "csv")))
    assert table["dice_std"].isna().all() and table["dice_mean"].tolist() == [80.0, 50.0]
