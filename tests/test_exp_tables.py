"""Result tables (bench.experiments.tables) against hand-computed values, the table experiments'
run plumbing (Table 2's FFHQ-34 backbones for CelebA-19, ablation rows), and `bench experiment
table1` end to end on a tiny GlaS in the Warwick layout with all nine methods shrunk to seconds."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import wilcoxon

from bench import registry
from bench.cli import main
from bench.config import load_config
from bench.context import RunContext
from bench.errors import BenchError
from bench.experiments import get
from bench.experiments.base import ExperimentContext, Variant
from bench.experiments.tables import ResultTable, collect, summarise, write_tables
from bench.store import atomic_write_json
from bench.tables import TABLE1_METHODS
from bench.tables.render import result_csv
from tests.conftest import make_sweep

COL = "X"


def _table(values: dict, published: dict | None = None, higher: bool = True) -> ResultTable:
    rows = sorted({r for r, _ in values} | {r for r, _ in (published or {})})
    return ResultTable(rows=rows, columns=[COL], values=values, published=published or {}, higher_is_better=higher)


def _csv(table: ResultTable) -> dict[str, dict[str, str]]:
    return {r["row"]: r for r in csv.DictReader(io.StringIO(result_csv(table, summarise(table))))}


def _ctx(tmp_path: Path) -> ExperimentContext:
    sweep = load_config(make_sweep(tmp_path, ["unet"], seeds=(0, 1), fractions=(1.0, 0.1)))
    return ExperimentContext(name="demo", sweep=sweep, quiet=True)


# --- tables.py ------------------------------------------------------------------------------------
def test_mean_sample_std_n_diff_and_best_are_hand_computed(tmp_path: Path) -> None:
    table = _table({("A", COL): {0: 80.0, 1: 82.0, 2: 84.0}, ("B", COL): {0: 90.0, 1: 91.0, 2: 92.0}},
                   published={("A", COL): (85.0, 1.5), ("P", COL): (70.0, 0.5)})
    stats = summarise(table)
    a, b, p = stats[("A", COL)], stats[("B", COL)], stats[("P", COL)]
    assert (a.mean, a.std, a.n, a.diff) == (82.0, 2.0, 3, -3.0)  # std: sqrt((4+0+4)/2)
    assert (b.mean, b.std, b.best, a.best) == (91.0, 1.0, True, False)
    assert (p.mean, p.n, p.diff, p.published) == (None, 0, None, (70.0, 0.5))
    md, tex, csv_path, data = write_tables(table, _ctx(tmp_path))
    assert [md.name, tex.name, csv_path.name, data.name] == ["table.md", "table.tex", "table.csv", "table.json"]
    text = md.read_text()
    assert "| A | 82.00 ± 2.00 (n=3) | 85.00 ± 1.50 | -3.00 |" in text
    assert "| B | **91.00 ± 1.00** (n=3) | — | — |" in text
    assert "| P | — | 70.00 ± 0.50 | — |" in text
    assert r"\textbf{91.00 $\pm$ 1.00}" in tex.read_text() and "$-$3.00" in tex.read_text()
    row = _csv(table)["A"]
    assert (float(row["mean"]), float(row["std"]), row["n"], row["seeds"]) == (82.0, 2.0, "3", "0 1 2")
    assert (float(row["published_mean"]), float(row["diff"]), row["best"]) == (85.0, -3.0, "0")


def test_wilcoxon_against_the_column_best_marks_significant_gaps() -> None:
    seeds = range(8)
    best = {s: 90.0 + s for s in seeds}
    worse = {s: 85.0 + s + 0.1 * s * s for s in seeds}           # below best on every seed
    close = {s: 90.0 + s + (0.2 if s % 2 else -0.3) for s in seeds}  # crosses best back and forth
    few = {0: 10.0, 1: 11.0, 2: 12.0}                             # 3 shared seeds: no test
    table = _table({("best", COL): best, ("worse", COL): worse, ("close", COL): close, ("few", COL): few})
    stats = summarise(table)
    expected = wilcoxon([best[s] for s in seeds], [worse[s] for s in seeds]).pvalue
    assert stats[("worse", COL)].p == pytest.approx(expected) == pytest.approx(2 / 2**8)  # exact, all one sign
    assert stats[("worse", COL)].significant
    assert stats[("close", COL)].p == pytest.approx(
        wilcoxon([best[s] for s in seeds], [close[s] for s in seeds]).pvalue)
    assert not stats[("close", COL)].significant and not stats[("close", COL)].best  # 0.05 below best
    rows = _csv(table)
    assert rows["few"]["p"] == "" and "3 paired seeds" in rows["few"]["test"]
    assert rows["worse"]["significant"] == "1" and float(rows["worse"]["p"]) == pytest.approx(2 / 2**8)


def test_reference_row_is_the_best_mean_and_gets_no_p() -> None:
    seeds = range(6)
    table = _table({("a", COL): {s: 50.0 + s for s in seeds}, ("b", COL): {s: 40.0 + s for s in seeds}})
    rows = _csv(table)
    assert rows["a"]["best"] == "1" and rows["a"]["p"] == "" and rows["b"]["p"] != ""
    md = "\n".join(summarise_lines(table))
    assert "†" in md and "differs from the column's best" in md


def summarise_lines(table: ResultTable) -> list[str]:
    from bench.experiments.tables import footnotes
    from bench.tables import render_result

    stats = summarise(table)
    return render_result(table, stats, footnotes(table, stats))["md"].splitlines()


def test_lower_is_better_and_a_published_mean_without_std() -> None:
    table = _table({("a", COL): {0: 3.0, 1: 5.0}, ("b", COL): {0: 1.0, 1: 2.0}},
                   published={("a", COL): (4.0, float("nan"))}, higher=False)
    stats = summarise(table)
    assert stats[("b", COL)].best and not stats[("a", COL)].best
    rows = _csv(table)
    assert rows["a"]["published_std"] == "" and float(rows["a"]["diff"]) == 0.0
    assert any("| a | 4.00 ± 1.41 (n=2) | 4.00 | +0.00 |" in line for line in summarise_lines(table))


def test_one_seed_has_an_undefined_std_in_every_format() -> None:
    from bench.tables.render import STD_NOTE

    table = _table({("a", COL): {3: 50.0}, ("b", COL): {0: 40.0, 1: 42.0}})
    assert summarise(table)[("a", COL)].std is None
    lines = summarise_lines(table)
    assert "| a | **50.00 ± n/a** (n=1) |" in lines and "| b | 41.00 ± 1.41 (n=2) |" in lines and STD_NOTE in lines
    assert _csv(table)["a"]["std"] == "" and _csv(table)["a"]["seeds"] == "3"


def test_collect_reads_percent_by_seed_and_names_a_record_missing_the_metric(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    specs = ctx.specs(Variant("U", "unet"), "synthetic-glands", 1.0)
    for spec, dice in zip(specs, (0.5, 0.75)):
        atomic_write_json(spec.record_path, {"run_id": spec.run_id, "dataset": spec.dataset, "fraction": spec.fraction,
                                             "method": spec.method, "seed": spec.seed, "metrics": {"dice": dice}})
    assert collect(ctx, {("U", "Dice"): specs}, {"Dice": "dice"}) == {("U", "Dice"): {0: 50.0, 1: 75.0}}
    with pytest.raises(BenchError, match=rf"{specs[0].run_id}\.json: metrics\.aji: missing"):
        collect(ctx, {("U", "AJI"): specs}, {"AJI": "aji"})


def test_experiment_list_names_the_tables(capsys: pytest.CaptureFixture) -> None:
    assert main(["experiment", "--list"]) == 0
    names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"table1", "table2", "table3", "table4", "table6", "table7"} <= names


# --- experiment plumbing ----------------------------------------------------------------------------
def _face_sweep(tmp_path: Path, datasets: tuple[str, ...]) -> ExperimentContext:
    for d in datasets:
        (tmp_path / d).mkdir()
    sweep = load_config(make_sweep(tmp_path, ["mdm"], datasets=[{"name": d, "root": d} for d in datasets]))
    return ExperimentContext(name="table2", sweep=sweep, quiet=True)


def test_table2_celeba_runs_reuse_the_ffhq_backbone(tmp_path: Path) -> None:
    ctx = _face_sweep(tmp_path, ("ffhq34", "celeba19"))
    runs = get("table2")().runs(ctx)
    assert {(r.dataset, r.method) for r in runs} == {(d, m) for d in ("ffhq34", "celeba19")
                                                      for m in ("swav", "swavw2", "mae", "ddpm", "mdm", "datasetddpm")}
    for method in ("mdm", "mae", "swav"):
        ffhq, celeba = (next(r for r in runs if r.dataset == d and r.method == method) for d in ("ffhq34", "celeba19"))
        assert celeba.resolved_config().pretrain_dataset == "ffhq34" and ffhq.resolved_config().pretrain_dataset is None
        paths = []
        for spec in (ffhq, celeba):
            plugin = registry.get(method)(spec.resolved_config())
            source = plugin.pretrain_context(RunContext(spec=spec, device=torch.device("cpu")))
            paths.append(source.artefact_path(method, source.artefact_key(method, plugin.pretrain_identity())))
        assert paths[0] == paths[1] and paths[0].name.startswith("ffhq34-")
        assert ffhq.run_id != celeba.run_id


def test_the_runner_plans_the_celeba_runs_on_the_ffhq_backbone_they_read(tmp_path: Path) -> None:
    """RunSpec.artefact is what the schedulers pre-train and wait for: it must be the file
    the backbone is cached to, or every sweep would plan a CelebA-19 build nothing writes."""
    runs = get("table2")().runs(_face_sweep(tmp_path, ("ffhq34", "celeba19")))
    for celeba in (r for r in runs if r.dataset == "celeba19"):
        ffhq = next(r for r in runs if r.dataset == "ffhq34" and r.method == celeba.method)
        assert celeba.artefact() == ffhq.artefact()
        assert celeba.artefact().name.startswith("ffhq34-")


def test_table2_without_ffhq_leaves_celeba_out_and_says_why(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ctx = _face_sweep(tmp_path, ("celeba19",))
    assert get("table2")().runs(ctx) == []
    assert "pre-trained on ffhq34, which has no root" in capsys.readouterr().err
    text = write_tables_of(get("table2")(), ctx)
    assert "| DatasetGAN* |" in text and "| DatasetDDPM |" in text and "bench does not have" in text


def write_tables_of(exp, ctx: ExperimentContext) -> str:
    return next(p for p in exp.write(ctx) if p.suffix == ".md").read_text()


def test_ablation_rows_change_one_field_and_default_rows_reuse_table1_runs(tmp_path: Path) -> None:
    glas = tmp_path / "glas"
    glas.mkdir()
    sweep = load_config(make_sweep(tmp_path, ["mdm"], dataset="glas", root="glas", fractions=(1.0, 0.1)))
    ctx = ExperimentContext(name="x", sweep=sweep, quiet=True)
    table1 = {r.run_id for r in get("table1")().runs(ctx)}
    t3 = get("table3")()
    labels = [r.label for r in t3.rows(ctx)]
    assert labels == ["MAE", "DDPM fixed t=250", "DDPM", "MDM fixed t=50", "MDM"]
    fixed = {r.method: r.resolved_config().fixed_t for r in t3.runs(ctx) if r.params.get("fixed_t") is not None}
    assert fixed == {"ddpm": 250, "mdm": 50}
    t6 = {r.run_id: r for r in get("table6")().runs(ctx)}
    assert len(t6) == 2 * 6 * 2  # ddpm, mdm x 6 timestep settings x 2 fractions (one seed)
    shared = {t6[i].resolved_config().timesteps_medical for i in set(t6) & table1}
    assert shared == {(250,), (50,)}  # the default rows are Table 1's runs
    patches = {r.resolved_config().patch for r in get("table7")().runs(ctx)}
    assert patches == {4, 8, 16}
    t4 = get("table4")().runs(ctx)
    assert {r.fraction for r in t4} == {0.1}  # FFHQ-34 not configured: only GlaS 10% IoU
    assert {(r.method, r.resolved_config().loss) for r in t4} >= {("mdm", "mse"), ("mae", "ssim"), ("ddpm", "ssim")}


# --- end to end -------------------------------------------------------------------------------------
# Every method of Table 1 shrunk to about a second per run (64 px images, one or two steps).
def _supervised(crop: int, batch: int) -> dict[str, Any]:
    return {"max_side": 64, "crop": crop, "batch": batch, "max_epochs": 1, "steps_per_epoch": 1}


_DIFFUSION = {"train_steps": 2, "max_side": 64, "window": 32, "channel_mult": [1, 1], "attention_resolutions": [],
              "blocks_medical": [1, 2, 3], "blocks_natural": [1, 2, 3]}
_PROBE = {"probe_ensemble": 2, "probe_max_epochs": 1, "probe_pixels_per_epoch": 2048, "overlap": 0.0}
FAST: dict[str, dict[str, Any]] = {
    "unet": _supervised(crop=32, batch=2),
    "unetpp": _supervised(crop=32, batch=2),
    "attunet": _supervised(crop=32, batch=2),
    "swin_unetr": _supervised(crop=64, batch=1),  # its bottleneck needs 64 px (2 x 2 after /32)
    "uctransnet": {"input_size": 64, "batch": 2, "max_epochs": 1, "steps_per_epoch": 1},
    "medt": {"input_size": 64, "batch": 2, "max_epochs": 1},
    "mae": {"max_side": 64, "window": 32, "depth": 2, "feature_blocks": 2, "train_steps": 2, **_PROBE},
    "ddpm": {**_DIFFUSION, **_PROBE},
    "mdm": {**_DIFFUSION, **_PROBE},
}


def make_glas(root: Path, n_train: int = 5, size: int = 64) -> None:
    """Warwick layout: train_N / testA_N / testB_N with _anno instance maps (.bmp and .png mixed)."""
    root.mkdir()
    yy, xx = np.mgrid[:size, :size]
    for k, stem in enumerate([f"train_{i}" for i in range(1, n_train + 1)] + ["testA_1", "testB_1"]):
        rng = np.random.default_rng(k)
        instances = np.zeros((size, size), np.uint8)
        for gland in (1, 2, 3):
            (cy, cx), (ry, rx) = rng.integers(10, size - 10, 2), rng.integers(5, 12, 2)
            instances[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = gland
        image = rng.integers(150, 230, (size, size, 3)).astype(np.uint8)
        image[instances > 0] = rng.integers(60, 120, (int((instances > 0).sum()), 3)).astype(np.uint8)
        ext = ".bmp" if k % 2 == 0 else ".png"
        Image.fromarray(image).save(root / f"{stem}{ext}")
        Image.fromarray(instances).save(root / f"{stem}_anno{ext}")
    (root / "Grade.csv").write_text("name,grade\n")


@pytest.mark.slow
def test_table1_and_the_ablations_end_to_end_on_tiny_glas(tmp_path: Path, one_thread: None,
                                                   capsys: pytest.CaptureFixture) -> None:
    make_glas(tmp_path / "glas")
    config = make_sweep(tmp_path, TABLE1_METHODS, seeds=(0, 1), dataset="glas", root="glas",
                        params={m: FAST[m] for m in TABLE1_METHODS})
    assert main(["experiment", "table1", "--config", str(config), "--quiet"]) == 0
    out = tmp_path / "results" / "table1"
    assert sorted(p.name for p in out.iterdir()) == ["table.csv", "table.json", "table.md", "table.tex"]
    rows = list(csv.DictReader((out / "table.csv").open()))
    refs = [r for r in rows if r["row"] == "trivial (reference)"]
    rows = [r for r in rows if r not in refs]
    assert len(rows) == 9 * 4  # methods x GlaS {100%, 10%} x {Dice, IoU}, whatever label_fractions says
    from bench.trivial import scores

    fg = scores("glas", str(tmp_path / "glas"), 0.1)["metrics"]  # every pixel gland
    assert {r["column"]: round(float(r["mean"]), 6) for r in refs} == {
        f"GlaS {p}% {m}": round(100 * fg[m.lower()], 6) for p in (100, 10) for m in ("Dice", "IoU")}
    assert {r["test"] for r in refs} == {"reference: constant predictor, never trained"}
    assert not any(r["best"] == "1" for r in refs)
    assert {r["n"] for r in rows} == {"2"} and {r["p"] for r in rows} == {""}  # 2 seeds: too few to test
    assert all("no test: 2 paired seeds" in r["test"] or r["best"] == "1" for r in rows)
    assert all(0.0 <= float(r["mean"]) <= 100.0 and r["published_mean"] for r in rows)
    mdm = next(r for r in rows if r["row"] == "MDM" and r["column"] == "GlaS 10% IoU")
    assert float(mdm["published_mean"]) == 84.51
    assert float(mdm["diff"]) == pytest.approx(float(mdm["mean"]) - 84.51)
    for column in {r["column"] for r in rows}:
        cells = [r for r in rows if r["column"] == column]
        top = max(float(r["mean"]) for r in cells)
        assert {r["row"] for r in cells if r["best"] == "1"} == {r["row"] for r in cells if float(r["mean"]) == top}
    md = (out / "table.md").read_text()
    assert md.count("**") >= 2 * 4 and "monuseg: not among bench.toml's [[datasets]]" in md
    assert "| trivial (reference) |" in md and "never trained" in md
    assert len(list((tmp_path / "results" / "records").glob("*.json"))) == 36

    capsys.readouterr()
    assert main(["experiment", "table1", "--config", str(config), "--quiet"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    # --no-run writes from the records there are: the fixed-t rows stay empty, nothing is run.
    assert main(["experiment", "table3", "--config", str(config), "--quiet", "--no-run"]) == 0
    assert "8 of 20 runs have no record yet (--no-run)" in capsys.readouterr().err
    assert len(list((tmp_path / "results" / "records").glob("*.json"))) == 36
    partial = list(csv.DictReader((tmp_path / "results" / "table3" / "table.csv").open()))
    partial = [r for r in partial if "(reference)" not in r["row"]]
    assert {r["n"] for r in partial if "fixed" in r["row"]} == {"0"} and {r["n"] for r in partial if "fixed" not in r["row"]} == {"2"}

    assert main(["experiment", "table3", "--config", str(config), "--quiet"]) == 0
    t3 = tmp_path / "results" / "table3"
    assert {p.name for p in t3.iterdir()} == {"table.md", "table.tex", "table.csv", "table.json", "figure.png", "figure.pdf",
                                              "figure.json"}  # figure.json: the runs the figure read
    assert (t3 / "figure.png").read_bytes()[:4] == b"\x89PNG" and (t3 / "figure.pdf").read_bytes()[:4] == b"%PDF"
    assert len(list((tmp_path / "results" / "records").glob("*.json"))) == 36 + 8  # only the fixed-t rows are new

    for name in ("table4", "table6", "table7"):  # the other GlaS ablations, on the same records
        assert main(["experiment", name, "--config", str(config), "--quiet"]) == 0
        rows = list(csv.DictReader((tmp_path / "results" / name / "table.csv").open()))
        assert any(r["row"] == "trivial (reference)" for r in rows), name
        rows = [r for r in rows if r["row"] != "trivial (reference)"]
        assert rows and {r["n"] for r in rows} == {"2"}, name  # every row ran both seeds
        assert all(0.0 <= float(r["mean"]) <= 100.0 for r in rows), name


def make_faces(root: Path, num_classes: int, side: int = 32) -> None:
    """ddpm-segmentation layout: real/{train,test}/<stem>.png with a same-stem uint8 .npy label map."""
    for split, stems in (("train", ("1", "2", "3")), ("test", ("4",))):
        folder = root / "real" / split
        folder.mkdir(parents=True)
        for stem in stems:
            rng = np.random.default_rng(int(stem) + num_classes)
            label = np.zeros((side, side), np.uint8)
            label[8:24, 8:24], label[12:20, 12:20] = 1, rng.integers(2, num_classes)
            image = (label[..., None] * 5 + rng.integers(0, 40, (side, side, 3))).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{stem}.png")
            np.save(folder / f"{stem}.npy", label)


_NATURAL_PROBE = {**_PROBE, "blocks_natural": [1, 2, 3]}
_SAMPLING = {"n_samples": 3, "sample_steps": 3, "deeplab_epochs": 1, "deeplab_batch": 2, "inspect_samples": 3}


@pytest.mark.slow
def test_table2_end_to_end_pretrains_once_on_ffhq_for_both_columns(tmp_path: Path, one_thread: None) -> None:
    make_faces(tmp_path / "ffhq", 34)
    make_faces(tmp_path / "celeba", 19)
    swav = {"train_steps": 2, "max_side": 64, **_PROBE}
    fast = {"swav": swav, "swavw2": swav, "mae": FAST["mae"], "ddpm": {**_DIFFUSION, **_NATURAL_PROBE},
            "mdm": {**_DIFFUSION, **_NATURAL_PROBE},
            "datasetddpm": {**_DIFFUSION, **_NATURAL_PROBE, **_SAMPLING}}
    config = make_sweep(tmp_path, list(fast), datasets=[{"name": "ffhq34", "root": "ffhq"},
                                                        {"name": "celeba19", "root": "celeba"}], params=fast)
    assert main(["experiment", "table2", "--config", str(config), "--quiet"]) == 0
    results = tmp_path / "results"
    artefacts = sorted(p.relative_to(results / "artefacts").as_posix()
                       for p in (results / "artefacts").rglob("*.pt"))
    assert [a.split("/")[0] for a in artefacts] == ["datasetddpm", "ddpm", "mae", "mdm", "swav", "swavw2"]
    assert all(a.split("/")[1].startswith("ffhq34-") for a in artefacts)  # none pre-trained on CelebA-19
    rows = list(csv.DictReader((results / "table2" / "table.csv").open()))
    refs = {r["column"]: float(r["mean"]) for r in rows if r["row"] == "trivial (reference)"}
    assert set(refs) == {"FFHQ-34 mIoU", "CelebA-19 mIoU"} and all(0 < v < 100 for v in refs.values())
    rows = [r for r in rows if r["row"] != "trivial (reference)"]
    assert len(rows) == 7 * 2 and {r["n"] for r in rows if not r["row"].endswith("*")} == {"1"}
    gan = next(r for r in rows if r["row"] == "DatasetGAN*" and r["column"] == "FFHQ-34 mIoU")
    assert (gan["mean"], float(gan["published_mean"])) == ("", 55.52)
    ours = next(r for r in rows if r["row"] == "DatasetDDPM" and r["column"] == "FFHQ-34 mIoU")
    assert ours["mean"] != "" and float(ours["published_mean"]) == 55.01  # a real row, the paper beside it
