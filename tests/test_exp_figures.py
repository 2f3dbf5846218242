"""fig6, fig7 and qualitative: their pieces, then each end to end on a tiny GlaS the test writes.

The end-to-end tests share one sweep folder (module fixture) so runs with equal settings are
reused across the three experiments, as they are for users. Pre-training and the probe are shrunk
through bench.toml params (2 steps, one probe member, 2 epochs) and fig7's lengths and
qualitative's method list are monkeypatched down, so the whole file stays within ~90 s.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.config import load_config
from bench.data import get_dataset
from bench.experiments import fig6, fig7, qualitative
from bench.experiments.base import ExperimentContext
from bench.runner import RunSpec
from bench.thumbnails import spread_indices
from tests.conftest import make_sweep, sweep_toml, write_sweep

SIDE = 64
SHRINK = {"probe_ensemble": 1, "probe_max_epochs": 2}
SWEEP = sweep_toml(["ddpm", "mdm", "maskdm"], seeds=(0, 1), dataset="glas", root="glas", params={
    "ddpm": {"train_steps": 2, "train_batch": 2, **SHRINK},
    "mdm": {"train_steps": 2, "train_batch": 2, **SHRINK},
    "maskdm": {"stage1_steps": 1, "stage2_steps": 1, "stage1_batch": 2, "stage2_batch": 2, **SHRINK},
})


def _write_glas(root: Path, n_train: int = 4, n_test: int = 2) -> None:
    """64 px GlaS-layout images: noisy pink stroma with 2-3 purple elliptic glands (instance ids)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    stems = [f"train_{i}" for i in range(1, n_train + 1)] + [f"testA_{i}" for i in range(1, n_test + 1)]
    for stem in stems:
        anno = np.zeros((SIDE, SIDE), np.uint8)
        for gland in range(1, int(rng.integers(2, 4)) + 1):
            cy, cx, ry, rx = rng.uniform(12, 52), rng.uniform(12, 52), rng.uniform(6, 12), rng.uniform(6, 12)
            anno[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = gland
        colour = np.where(anno[..., None] > 0, [150, 90, 180], [225, 150, 205])
        image = np.clip(colour + rng.normal(0, 40, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"{stem}.png")
        Image.fromarray(anno).save(root / f"{stem}_anno.png")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("figs")
    _write_glas(folder / "glas")
    return write_sweep(folder, SWEEP)


def _experiment(config: Path, name: str, capsys: pytest.CaptureFixture) -> list[Path]:
    capsys.readouterr()
    assert main(["experiment", name, "--config", str(config), "--quiet"]) == 0
    return [Path(line) for line in capsys.readouterr().out.splitlines() if line.startswith("/")]


def _assert_figure(files: list[Path], stem: str) -> None:
    for ext in ("png", "pdf"):
        path = next(p for p in files if p.name == f"{stem}.{ext}")
        assert path.stat().st_size > 1000, path
    assert Image.open(next(p for p in files if p.name == f"{stem}.png")).size[0] > 200


# --- pieces -----------------------------------------------------------------------------------
def test_spread_indices_are_deterministic_and_cover_the_split() -> None:
    assert spread_indices(10, 3) == [0, 4, 9] == spread_indices(10, 3)
    assert spread_indices(2, 5) == [0, 1] and spread_indices(0, 3) == []


def test_cluster_map_has_at_most_k_labels_and_is_seeded() -> None:
    feature = torch_randn(8, 8, 8)
    a = fig6.cluster_map(feature, 32, k=5, iters=10, seed=0)
    assert a.shape == (32, 32) and len(np.unique(a)) <= 5
    np.testing.assert_array_equal(a, fig6.cluster_map(feature, 32, k=5, iters=10, seed=0))
    counts = np.bincount(a.ravel())
    assert (np.diff(counts[counts > 0]) <= 0).all()  # label 0 is the largest cluster
    assert (fig6.cluster_map(feature[:, :1, :1].expand(8, 4, 4), 16, 5, 10, 0) == 0).all()  # one point


def torch_randn(*shape: int):
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def test_error_map_colours_every_confusion_cell() -> None:
    cfg = qualitative.QualitativeConfig()
    truth = np.array([[0, 0, 1, 1, 255]])
    pred = np.array([[0, 1, 1, 0, 1]])
    out = qualitative.error_map(pred, truth, 255, cfg)
    assert [tuple(p) for p in out[0]] == [cfg.true_negative, cfg.false_positive, cfg.true_positive,
                                          cfg.false_negative, cfg.ignored]


def test_a_prediction_of_the_wrong_size_is_one_data_error(tmp_path: Path) -> None:
    from bench.data.types import Sample
    from bench.errors import DataError

    spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method="unet", seed=0, preset="tiny",
                   output=str(tmp_path))
    sample = Sample(name="img", image=np.zeros((8, 6, 3), np.uint8), semantic=np.zeros((8, 6), np.int64))
    path = tmp_path / "predictions" / spec.run_id / "img.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(path)
    with pytest.raises(DataError, match=r"img\.png: size: \(6, 4\) but the test image is \(6, 8\)") as info:
        qualitative.read_prediction(spec, sample)
    assert info.value.path == str(path)
    Image.fromarray(np.ones((8, 6), np.uint8)).save(path)
    assert qualitative.read_prediction(spec, sample).sum() == 48


def test_without_glas_the_figures_use_synthetic_glands_with_a_note(tmp_path: Path) -> None:
    config = make_sweep(tmp_path, ["ddpm"], seeds=(0, 1), fractions=(1.0, 0.1))
    sweep = load_config(config)
    for exp in (fig6.Fig6(), fig7.Fig7(), qualitative.Qualitative()):
        ctx = ExperimentContext(name=exp.name, sweep=sweep, quiet=True)
        runs = exp.runs(ctx)
        assert runs and {r.dataset for r in runs} == {"synthetic-glands"}
        assert any("synthetic-glands instead" in n for n in ctx.notes)
    steps = {r.params.get("train_steps") for r in fig7.Fig7().runs(ExperimentContext("fig7", sweep)) if r.method == "ddpm"}
    assert steps == set(fig7.PRESETS["tiny"].lengths)


def test_fig7_maskdm_arms_split_equal_totals() -> None:
    cfg = fig7.PRESETS["tiny"]
    maskdm, uvit = [a for a in fig7.arms(cfg) if a.method == "maskdm"]
    for n in cfg.maskdm_lengths:
        a, b = maskdm.params(n, cfg), uvit.params(n, cfg)
        assert a["stage1_steps"] + a["stage2_steps"] == n == b["stage2_steps"] and b["stage1_steps"] == 0
        assert a["stage1_steps"] == min(n, cfg.maskdm_stage1)


# --- end to end -------------------------------------------------------------------------------
@pytest.mark.slow
def test_fig6_end_to_end(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    files = _experiment(sweep, "fig6", capsys)
    _assert_figure(files, "fig6")
    maps = np.load(next(p for p in files if p.name == "clusters.npz"))
    test = get_dataset("glas", _root(sweep), "test")
    blocks = 6  # tiny UNet: 3 levels x (1 res block + 1) decoder blocks
    assert len(maps.files) == 2 * len(test) * blocks
    for key in maps.files:
        assert maps[key].shape == (SIDE, SIDE) and len(np.unique(maps[key])) <= 5, key
    assert any(len(np.unique(maps[k])) > 1 for k in maps.files)


@pytest.mark.slow
def test_qualitative_end_to_end(sweep: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qualitative, "METHODS", ())  # bench.toml's three methods instead of Table 1's nine
    files = _experiment(sweep, "qualitative", capsys)
    _assert_figure(files, "glas")
    cfg = qualitative.PRESETS["tiny"]
    test = get_dataset("glas", _root(sweep), "test")
    errors = 0
    for method in ("ddpm", "mdm", "maskdm"):
        spec = _spec(sweep, method)
        for sample in test:
            pred = np.asarray(Image.open(spec.output + f"/predictions/{spec.run_id}/{sample.name}.png"))
            panel = np.asarray(Image.open(sweep.parent / f"results/qualitative/glas/{sample.name}/{method}.png"))
            truth = sample.semantic
            for where, colour in (((pred != truth) & (truth == 0), cfg.false_positive),
                                  ((pred != truth) & (truth != 0), cfg.false_negative),
                                  ((pred == truth) & (truth != 0), cfg.true_positive),
                                  ((pred == truth) & (truth == 0), cfg.true_negative)):
                assert (panel[where] == colour).all(), (method, sample.name, colour)
            errors += int((pred != truth).sum())
    assert errors > 0  # the shrunk models are not perfect, so the check above saw error pixels


@pytest.mark.slow
def test_fig7_end_to_end(sweep: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    small = dataclasses.replace(fig7.PRESETS["tiny"], lengths=(0, 2), maskdm_lengths=(0, 2), maskdm_stage1=1,
                                fractions=(1.0,))
    monkeypatch.setitem(fig7.PRESETS, "tiny", small)
    files = _experiment(sweep, "fig7", capsys)
    _assert_figure(files, "fig7")
    for ext in ("md", "tex", "csv"):
        assert next(p for p in files if p.name == f"table.{ext}").stat().st_size > 100
    import pandas as pd

    table = pd.read_csv(next(p for p in files if p.name == "table.csv"))
    assert set(table["row"]) == {"DDPM 0", "DDPM 2", "MDM 0", "MDM 2", "MaskDM 0 (0+0)", "MaskDM 2 (1+1)",
                                 "U-ViT DDPM 0", "U-ViT DDPM 2"}
    assert set(table["column"]) == {"GlaS 100% Dice", "GlaS 100% IoU"}
    assert (table["n"] == 2).all() and table["mean"].between(0, 100).all()
    # The 2-step runs are the very runs fig6 and qualitative used (one pre-training per setting).
    record = json.loads(_spec(sweep, "ddpm").record_path.read_text())
    assert record["config"]["train_steps"] == 2


def _spec(sweep: Path, method: str) -> RunSpec:
    cfg = load_config(sweep)
    return RunSpec(dataset="glas", root=_root(sweep), fraction=1.0, method=method, seed=0, preset="tiny",
                   output=cfg.output, params=cfg.params[method])


def _root(sweep: Path) -> str:
    root = load_config(sweep).datasets[0].root
    assert root is not None
    return root


def test_fig7_shows_table1_beside_the_published_checkpoint_length() -> None:
    from bench.config import DatasetEntry, SweepConfig

    sweep = SweepConfig(datasets=(DatasetEntry("glas", root="/nowhere"),), methods=("ddpm",), preset="paper")
    ctx = ExperimentContext("fig7", sweep, quiet=True)
    cells = fig7.published_cells(ctx, "glas", fig7.PRESETS["paper"])
    assert cells[("DDPM 10000", "GlaS 100% Dice")] == (90.45, 0.37)
    assert cells[("MDM 10000", "GlaS 10% IoU")] == (84.51, 1.15)
    assert {row for row, _ in cells} == {"DDPM 10000", "MDM 10000"}
    assert fig7.published_cells(ExperimentContext("fig7", dataclasses.replace(sweep, preset="tiny")), "glas",
                                fig7.PRESETS["tiny"]) == {}


def test_coarse_blocks_are_clustered_at_min_side_then_brought_to_the_window() -> None:
    labels = fig6.cluster_map(torch_randn(16, 4, 4), 48, k=5, iters=10, seed=0, min_side=12)
    assert labels.shape == (48, 48) and len(np.unique(labels)) <= 5
    np.testing.assert_array_equal(labels[::4, ::4].repeat(4, 0).repeat(4, 1), labels)  # 12 px labels, nearest


def test_importing_bench_leaves_matplotlib_backend_untouched(tmp_path: Path) -> None:
    """A notebook user's backend (here: none chosen yet, then a chosen one) survives importing every
    experiment module and drawing a figure; bench never imports pyplot."""
    import os
    import subprocess
    import sys

    code = """
import importlib, pkgutil, sys
import matplotlib
assert matplotlib.rcParams._get_backend_or_none() is None
import bench.experiments, bench.report
for info in pkgutil.iter_modules(bench.experiments.__path__):
    importlib.import_module(f"bench.experiments.{info.name}")
assert matplotlib.rcParams._get_backend_or_none() is None, matplotlib.rcParams._get_backend_or_none()
matplotlib.use("svg")
from bench.experiments.figures import bar_figure
from bench.tables import ResultTable
fig = bar_figure(ResultTable(rows=["a"], columns=["c"], values={("a", "c"): {0: 1.0, 1: 2.0}}))
fig.savefig(sys.argv[1] + "/f.png")
assert matplotlib.get_backend() == "svg" and "matplotlib.pyplot" not in sys.modules
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


# --- prediction thumbnails: a panel drawn from committed records alone -----------------------------
def test_thumbnails_are_small_and_keep_the_classes() -> None:
    from bench.thumbnails import THUMBNAILS, encode, panel_indices, thumbnail, thumbnails

    rng = np.random.default_rng(0)
    pred = (rng.random((522, 775)) > 0.5).astype(np.int64)  # a GlaS-sized map, noise: the worst case
    pred[100:300, 200:500] = 1
    kept = thumbnails([f"img{i}" for i in range(80)], [pred] * 80)
    assert list(kept["images"]) == [f"img{i}" for i in panel_indices(80)] == ["img0", "img26", "img40", "img53",
                                                                            "img79"]
    assert all(len(v) < 2_500 for v in kept["images"].values())  # 1 bit a pixel: 128 x 85 noise
    smooth = np.zeros((522, 775), np.int64)
    smooth[100:300, 200:500] = 1
    assert len(encode(smooth, THUMBNAILS.max_side)) < 300  # a real prediction: a few hundred bytes at most
    back = thumbnail({"thumbnails": thumbnails(["a"], [smooth])}, "a", smooth.shape)
    assert back is not None and back.shape == smooth.shape and set(np.unique(back)) == {0, 1}
    assert (back == smooth).mean() > 0.98
    assert thumbnail({}, "a", smooth.shape) is None  # a record from before thumbnails


def _panel_specs(tmp_path: Path) -> tuple[ExperimentContext, dict[str, RunSpec], list]:
    from bench.experiments.base import Variant

    config = make_sweep(tmp_path, ["unet", "mdm"])
    ctx = ExperimentContext(name="qualitative", sweep=load_config(config), quiet=True)
    specs = {m: ctx.specs(Variant(m, m), "synthetic-glands", 1.0)[0] for m in ("unet", "mdm")}
    test = get_dataset("synthetic-glands", None, "test")
    return ctx, specs, [test[i] for i in spread_indices(len(test), 3)]


def _record_of(spec: Any) -> dict[str, Any]:
    """The fields every readable record holds (bench.records.SCHEMA), for a hand-made one."""
    return {"run_id": spec.run_id, "dataset": spec.dataset, "method": spec.method, "fraction": spec.fraction,
            "seed": spec.seed, "metrics": {"dice": 0.5}}


def test_a_panel_without_predictions_uses_the_records_thumbnails(tmp_path: Path) -> None:
    """predictions/ is not in git; a committed record's thumbnails draw its column instead, and a
    method with neither is left out with one note line, not a column of grey tiles."""
    from bench.thumbnails import thumbnails

    ctx, specs, samples = _panel_specs(tmp_path)
    record = {**_record_of(specs["unet"]), "thumbnails": thumbnails([s.name for s in samples], [s.semantic for s in samples])}
    specs["unet"].record_path.parent.mkdir(parents=True)
    specs["unet"].record_path.write_text(json.dumps(record))
    got = qualitative.method_predictions(ctx, specs, samples, "synthetic-glands")
    assert list(got) == ["unet"] and all(p is not None and p.shape == s.semantic.shape
                                         for p, s in zip(got["unet"], samples))
    assert ctx.read == [specs["unet"].run_id]
    assert any("UNet drawn from the thumbnails in their records" in n for n in ctx.notes)
    assert any("no saved prediction or record thumbnail of MDM" in n and "not shown" in n for n in ctx.notes)


def test_every_file_an_experiment_writes_names_the_runs_it_read(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from bench.experiments.figures import save_figure
    from bench.experiments.tables import ResultTable, write_tables

    ctx, specs, _ = _panel_specs(tmp_path)
    specs["mdm"].record_path.parent.mkdir(parents=True)
    specs["mdm"].record_path.write_text(json.dumps(_record_of(specs["mdm"])))
    assert len(ctx.records(list(specs.values()))) == 1  # unet has no record: not read
    ctx.note("a note")
    table = next(p for p in write_tables(ResultTable(rows=["a"], columns=["b"], values={}), ctx) if p.suffix == ".json")
    figure = next(p for p in save_figure(Figure(), ctx, "fig") if p.suffix == ".json")
    assert json.loads(table.read_text())["runs"] == [specs["mdm"].run_id]
    assert json.loads(figure.read_text()) == {"kind": "bench-figure", "runs": [specs["mdm"].run_id],
                                              "notes": ["a note"]}


def test_records_keep_thumbnails_of_every_image_a_panel_shows() -> None:
    from bench.experiments import sweep
    from bench.thumbnails import THUMBNAILS, panel_indices

    counts = {cfg.images for cfg in qualitative.PRESETS.values()} | {sweep.QUALITATIVE.images}
    assert counts <= set(THUMBNAILS.panel_images)
    for n in (1, 2, 16, 80):
        assert all(set(spread_indices(n, k)) <= set(panel_indices(n)) for k in counts)
