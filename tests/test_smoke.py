"""`bench run --smoke` on the tiny preset: marked records in their own folder, never in real tables."""
from __future__ import annotations

import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from bench import registry
from bench.cli import main
from bench.config import load_config
from bench.protocol import official_pins
from bench.records import load_records
from bench.runner import domain_of, expand
from bench.smoke import SmokeConfig
from bench.smoke.report import render_suggestions
from bench.smoke.run import BATCH_FIELDS, EPOCH_FIELDS, STEP_FIELDS, smoke_overrides, smoke_specs
from tests.conftest import make_sweep, sweep_toml, write_sweep

SMOKE = {"smoke": {"steps": 2, "probe_ensemble": 2}}
SWEEP = sweep_toml(["ddpm", "unet"], seeds=(0, 1, 2), tables=SMOKE)  # [smoke] last: a test appends to it


@pytest.fixture(scope="module")
def smoked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny sweep smoked in process (executor debug) and then run for real (seed 0 only)."""
    folder = tmp_path_factory.mktemp("sweep")
    config = write_sweep(folder, SWEEP)
    assert main(["run", "--smoke", "--config", str(config), "--executor", "debug", "--quiet"]) == 0
    assert main(["run", "--config", str(config), "--set", "seeds=[0]", "--set", 'methods=["unet"]',
                 "--quiet"]) == 0
    return config


def test_every_paper_config_is_capped() -> None:
    """The one mechanism: every method's paper config gets its counts capped, its shapes kept."""
    smoke = SmokeConfig(steps=2, epochs=1, batch=1, probe_ensemble=2)
    for name in registry.names():
        cls = registry.get(name)
        cfg = cls.resolve_config("paper")
        over = smoke_overrides(cfg, "medical", smoke)
        capped = cls.resolve_config("paper", over)
        # an official config's pinned counts are capped by bench.official.capped, not overridden
        pinned = set(official_pins(type(capped))) if capped.protocol == "official" else set()
        assert not pinned & set(over), name
        for f in fields(capped):
            if f.name in pinned:
                continue
            value = getattr(capped, f.name)
            if f.name in STEP_FIELDS:
                assert value <= 2, (name, f.name)
            if f.name in EPOCH_FIELDS:
                assert value == 1, (name, f.name)
            if f.name in BATCH_FIELDS:
                assert value == 1, (name, f.name)
            if f.name == "probe_ensemble":
                assert value == 2, name
        for shape in ("window", "crop", "input_size", "model_channels", "embed_dim", "probe_batch_medical"):
            if hasattr(cfg, shape):
                assert getattr(capped, shape) == getattr(cfg, shape), (name, shape)


def test_one_smoke_spec_per_cell(tmp_path: Path) -> None:
    sweep = load_config(write_sweep(tmp_path, SWEEP))
    runs = expand(sweep)
    specs = smoke_specs(runs, sweep.smoke, domain_of)
    assert len(runs) == 6 and len(specs) == 2
    assert all(Path(s.output) == Path(sweep.output) / "smoke" for s in specs)
    assert not {s.run_id for s in specs} & {r.run_id for r in runs}
    assert specs[0].resolved_config().train_steps == 2 and runs[0].resolved_config().train_steps > 2


@pytest.mark.slow
def test_smoke_records_are_marked_with_estimates(smoked: Path) -> None:
    records = load_records(smoked.parent / "results" / "smoke", smoke=True)
    assert sorted(r["method"] for r in records) == ["ddpm", "unet"]
    for r in records:
        s = r["smoke"]
        assert s["peak_memory"]["rss"] > 2**20 and s["settings"]["steps"] == 2
        assert s["stages"], r["method"]
        for stage in s["stages"].values():
            assert stage["s_per_unit"] > 0 and stage["full_units"] >= stage["measured"] >= 1
        assert len(r["labelled"]) <= 2 and r["n_test"] == 2
    ddpm = next(r for r in records if r["method"] == "ddpm")["smoke"]["stages"]
    assert ddpm["ddpm pretrain"]["measured"] == 2
    assert ddpm["ddpm pretrain"]["full_units"] == registry.get("ddpm").presets["tiny"].train_steps
    assert set(ddpm) >= {"features", "probe", "predict"}
    assert ddpm["probe"]["batch_scale"] == registry.get("ddpm").presets["tiny"].probe_ensemble / 2
    unet = next(r for r in records if r["method"] == "unet")["smoke"]["stages"]
    assert unet["train"]["measured"] == 2 and "validate" in unet and "predict" in unet


@pytest.mark.slow
def test_smoke_records_never_reach_real_tables(smoked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = smoked.parent / "results"
    smoke_ids = {r["run_id"] for r in load_records(out / "smoke", smoke=True)}
    # even a smoke record copied into the real records folder is refused
    for path in (out / "smoke" / "records").glob("*.json"):
        shutil.copy(path, out / "records" / path.name)
    capsys.readouterr()
    assert main(["table", "--config", str(smoked), "--all", "--format", "csv"]) == 0
    table = capsys.readouterr().out
    assert "unet" in table and "ddpm" not in table  # the real seed-0 run only
    assert not any(i in table for i in smoke_ids)
    assert all(",1," in line or line.startswith("dataset") for line in table.splitlines())  # n = 1 seed
    assert {r["run_id"] for r in load_records(out)}.isdisjoint(smoke_ids)
    assert main(["report", "--config", str(smoked)]) == 0
    page = (out / "report.html").read_text()
    assert "1 record(s)" in page and not any(i in page for i in smoke_ids)


@pytest.mark.slow
def test_slurm_dry_run_suggests_limits(smoked: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["run", "--smoke", "--config", str(smoked), "--executor", "slurm", "--dry-run",
                 "--set", "slurm.timeout_min=1", "--set", "slurm.mem_gb=0.01"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "| pretrain | 1 |" in out and "| ssl | 1 |" in out and "| supervised | 1 |" in out
    assert "slurm.ssl.mem_gb = 0.01 is below the measured peak" in out


def test_suggestions_warn_where_a_limit_is_short() -> None:
    from bench.slurm_config import parse_slurm

    record = {"method": "ddpm", "dataset": "glas", "fraction": 1.0, "kind": "ssl",
              "smoke": {"device": "cpu", "peak_memory": {"rss": 10 * 2**30},
                        "stages": {"ddpm pretrain": {"unit": "step", "full_s": 7200.0, "note": "shared by"},
                                   "probe": {"unit": "step", "full_s": 600.0}}}}
    text = render_suggestions([record], parse_slurm({"timeout_min": 60, "mem_gb": 32}, "x"), SmokeConfig())
    assert "| pretrain | 60 | 180 | 32 | 13 |" in text and "| ssl | 60 | 15 | 32 | 13 |" in text
    assert "slurm.pretrain.timeout_min = 60 is below the estimated 2.0 h" in text
    assert "slurm.ssl.timeout_min" not in text


def test_bad_smoke_table_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_sweep(tmp_path, SWEEP + "stepz = 3\n")
    assert main(["run", "--smoke", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "smoke.stepz: unknown key" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_broken_shape_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The local smoke runs each run in a fresh process; its failure ends bench with one line, status 2."""
    # crop 6: 1x1 at the bottom
    config = make_sweep(tmp_path, ["unet"], seeds=(0, 1, 2), params={"unet": {"crop": 6}}, tables=SMOKE)
    assert main(["run", "--smoke", "--config", str(config), "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("bench: error: smoke run synthetic-glands-f1-unet-s0-") and "spatial element" in last
    assert not list((tmp_path / "results" / "smoke" / "records").glob("*.json"))


def test_a_smoke_caps_the_official_loops() -> None:
    from bench.official import capped, probe_loop, train_loop

    with capped(1, 1):
        assert (train_loop("glas", 8).max_epochs, train_loop("glas", 8).batch) == (1, 1)
        assert (probe_loop("monuseg").max_epochs, probe_loop("monuseg").crops_per_step) == (1, 1)
    assert (train_loop("glas", 8).max_epochs, train_loop("glas", 8).batch) == (5000, 8)
