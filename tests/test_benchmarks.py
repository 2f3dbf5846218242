"""The benchmark scripts run and report: a broken report would lose minutes of measurement."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import benchmarks/NAME.py as a top-level module, as `python benchmarks/NAME.py` would
    (spawned worker processes re-import it by that name, so the folder goes on sys.path)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module(name)


@pytest.mark.slow
def test_probe_perf_measures_and_reports_on_a_toy_shape(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    perf = _script("probe_perf", monkeypatch)
    toy = perf.PerfConfig(images=2, image_size=32, timesteps=1, block_channels=(8, 4), block_sizes=(8, 16),
                          num_classes=3, members=2, batches=(64,), timed_steps=(2,), gather_steps=2)
    monkeypatch.setattr(perf, "QUICK", toy)
    monkeypatch.setattr(perf, "QUICK_TRAIN", perf.TrainConfig(images=3, distinct=1, epochs=1, natural_pixels=256,
                                                             medical_pixels=16384, rounds=1))
    out = tmp_path / "perf.json"
    perf.main(["--quick", "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    for rule in ("loss_plateau", "natural"):  # the previous training and the new one, side by side
        side = result["training"][rule]
        assert side["same_weights"] and side["ratio"] > 0 and side["cpu_ratio"] > 0
    assert result["training"]["dim"] == 224 and result["training"]["loss_plateau"]["steps_per_epoch"] == 2
    assert result["memory"]["default"]["dim"] == 12  # 8 + 4 channels, one timestep
    assert result["memory"]["default"]["dense_bytes"] == 2 * 32 * 32 * 12 * 4  # float32, every pixel
    speed = result["speed"][0]
    assert speed["batch"] == 64 and speed["ensemble_px_s"] > 0 and speed["ceiling"] > 0
    text = capsys.readouterr().out
    assert "feature dim 12, 2 members" in text and "goals:" in text


def test_predict_perf_compares_both_paths_on_a_toy_shape(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    perf = _script("predict_perf", monkeypatch)
    toy = (perf.Shape("toy", (6, 4), (8, 16), 32, 3, (40, 50), 0.2, 1.0),)
    monkeypatch.setattr(perf, "SHAPES", toy)
    result = perf.run_predict_perf(quick=True, shapes=toy)
    row = result["shapes"]["toy"]
    assert row["dim"] == 10 and row["windows_per_image"] == 4
    assert row["dense_px_s"] > 0 and row["projected_px_s"] > 0 and row["agreement"] >= 0.9999
    assert row["plain_px_s"] > 0 and row["plain_ratio"] > 0 and row["plain_agreement"] >= 0.9999
    assert set(result["goals"]["toy"]) == {"plain_ratio", "agreement"} and result["goals"]["toy"]["agreement"]
    # d-128-32-3 probe: dense 10*128 + 128*32 + 32*3 multiply-adds a pixel; projected the first
    # layer on 6 channels at (8/32)^2 and 4 at (16/32)^2 of the pixels, the rest unchanged.
    assert row["flop_ratio"] == pytest.approx((10 * 128 + 4192) / ((6 / 16 + 4 / 4) * 128 + 4192))
    perf.print_report(result)
    assert "toy" in capsys.readouterr().out


def test_probe_ops_meets_its_floors_on_toy_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operators per training step flat in the bank's size, no host synchronisation in a step,
    and a window's further row chunks costing operators independent of the maps."""
    ops = _script("probe_ops", monkeypatch)
    toy = (ops.Shape("5maps", (6, 6, 6, 6, 3), (4, 4, 4, 8, 8), 16), ops.Shape("12maps", (4,) * 12, (2,) * 12, 16))
    monkeypatch.setattr("bench.probe.bank.SEGMENT_BYTES", 2000)  # banks of several segments
    result = ops.run_probe_ops(ops.OpsConfig(rules=("natural",), images=(2, 6), members=3, batch=16), toy)
    assert set(result["ops_per_step"]) == {f"natural/{s}/{n}img" for s in ("5maps", "12maps") for n in (2, 6)}
    assert set(result["ops_per_window"]) == {f"{s}/{n}chunks" for s in ("5maps", "12maps") for n in (1, 4)}
    assert result["floors"] == {"ops_per_step_flat_in_images": True, "no_syncs_per_step": True,
                                "ops_per_extra_chunk_flat_in_maps": True}
    assert all(v > 0 for v in result["ops_per_step"].values())


def test_calibration_study_writes_valid_sweeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    study = _script("calibrate_small", monkeypatch)
    text = study.sweep_toml(tmp_path / "GlaS", tmp_path / "out", "mdm", {"timesteps_medical": [250]}, [0], [0.1])
    raw = tomllib.loads(text)
    assert raw["preset"] == "small" and raw["datasets"][0]["name"] == "glas-val"
    assert raw["params"]["mdm"] == {"timesteps_medical": [250]}
    assert all(method for method, _, _ in study.STUDY)
    # --only picks rows by "method/variant", comma-separated: a name with a comma is unreachable
    rows = [f"{method}/{name}" for method, name, _ in study.STUDY]
    assert not [r for r in rows if "," in r] and len(set(rows)) == len(rows)


def test_calibration_only_runs_the_named_rows_in_the_given_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    study = _script("calibrate_small", monkeypatch)
    ran: list[str] = []
    monkeypatch.setattr(study.subprocess, "run",
                        lambda cmd, **_: ran.append(Path(cmd[5]).name) or study.subprocess.CompletedProcess(cmd, 0))
    assert study.main(["--root", str(tmp_path), "--out", str(tmp_path / "out"), "--only", "swav/untrained,mdm/preset"]) == 0
    swav = next(i for i, (m, n, _) in enumerate(study.STUDY) if (m, n) == ("swav", "untrained"))
    mdm = next(i for i, (m, n, _) in enumerate(study.STUDY) if (m, n) == ("mdm", "preset"))
    assert ran == [f"{swav:02d}-swav.toml", f"{mdm:02d}-mdm.toml"]
    with pytest.raises(SystemExit):
        study.main(["--root", str(tmp_path), "--out", str(tmp_path / "out"), "--only", "nosuch/row"])


def test_calibration_summary_averages_seeds_and_leaves_out_the_backbone_build(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    study = _script("calibrate_small", monkeypatch)
    (tmp_path / "records").mkdir()
    for seed, dice, load in ((0, 0.70, 600.0), (1, 0.80, 0.5)):  # seed 0 built the backbone
        record = {"method": "mdm", "params": {}, "fraction": 0.1, "metrics": {"dice": dice},
                  "timings": {"pretrain_s": 600.0, "load_s": load, "total_s": load + 100.0}}
        (tmp_path / "records" / f"r{seed}.json").write_text(json.dumps(record))
    rows = study.summarise(tmp_path)
    assert len(rows) == 1 and rows[0]["variant"] == "preset" and rows[0]["n"] == 2
    assert rows[0]["dice"] == pytest.approx(75.0) and rows[0]["run_s"] == pytest.approx(100.0)
    assert rows[0]["pretrain_s"] == 600.0


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU script's code path, on the CPU at the tiny preset: both precisions, one table."""
    check = _script("gpu_check", monkeypatch)
    monkeypatch.setenv("BENCH_DEVICE", "cpu")  # restored afterwards (main sets it)
    out = tmp_path / "check.json"
    assert check.main(["--device", "cpu", "--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["method"]: r for r in result["rows"]}
    assert set(rows) == {"ddpm", "unet"} and result["device"] == "cpu"
    for precision in ("fp32", "bf16+cl"):
        assert rows["ddpm"][precision]["train_s"] > 0 and rows["ddpm"][precision]["probe_s"] > 0
        assert rows["unet"][precision]["train_s"] > 0 and rows["unet"][precision]["probe_s"] is None
        assert rows["unet"][precision]["peak_bytes"] > 0
    assert result["ensemble"]["speedup"] > 0
    text = capsys.readouterr().out
    assert "| ddpm |" in text and "| unet |" in text and "ensemble probe (10 members, dim 64" in text


def test_small_table_lays_out_the_sweeps_records_and_rewrites_only_its_block(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runner import RunSpec
    from bench.store import atomic_write_json
    from tests.conftest import sweep_toml, write_sweep

    table = _script("small_table", monkeypatch)
    config = write_sweep(tmp_path, sweep_toml(["unet", "ddpm"], seeds=[0, 1], fractions=[1.0, 0.1], output="out"))
    for seed, dice in ((0, 0.80), (1, 0.84)):
        spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method="unet", seed=seed,
                       preset="tiny", output=str(tmp_path / "out"))
        atomic_write_json(spec.record_path, {
            "run_id": spec.run_id, "dataset": spec.dataset, "root": None, "fraction": 1.0, "method": "unet",
            "seed": seed, "preset": "tiny", "metrics": {"dice": dice}, "timings": {"total_s": 1800.0},
            "provenance": {"config_hash": spec.config_hash}})
    text = table.render(str(config))
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    assert "| unet | 82.00 ± 2.83 (2) |  | not run |  | 1.00 |" in text  # two half-hour runs = 1 h
    assert rows["ddpm"].count("not run") == 2
    assert "trivial (reference" in text  # the constant predictor, beside every table

    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- small-table -->\nold numbers\n<!-- /small-table -->\nafter\n")
    table.main(["--config", str(config), "--write", str(readme)])
    assert readme.read_text() == f"before\n<!-- small-table -->\n{text}<!-- /small-table -->\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="expected one"):
        table.main(["--config", str(config), "--write", str(readme)])
    assert readme.read_text() == "no markers\n"


def test_gpu_check_reports_a_failing_method_and_measures_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One method's crash (on a GPU: out of memory, a cuBLAS error) is its row's one-line error;
    the other methods and the ensemble are still measured and the table is still printed."""
    check = _script("gpu_check", monkeypatch)
    monkeypatch.setenv("BENCH_DEVICE", "cpu")
    real = check.smoke_once

    def smoke_once(method: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if method == "ddpm":
            raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED\n when calling `cublasCreate(handle)`")
        return real(method, *args, **kwargs)

    monkeypatch.setattr(check, "smoke_once", smoke_once)
    out = tmp_path / "check.json"
    assert check.main(["--device", "cpu", "--quick", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["ddpm"]["fp32"] == {"error": "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling "
                                             "`cublasCreate(handle)`"}
    assert rows["unet"]["bf16+cl"]["train_s"] > 0
    table = capsys.readouterr().out
    assert "| ddpm | - | - |" in table and "ensemble probe (10 members" in table


def test_predict_profile_tables_both_paths_on_a_toy_shape(capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    prof = _script("predict_profile", monkeypatch)
    perf = _script("predict_perf", monkeypatch)
    monkeypatch.setattr(prof, "SHAPES", (perf.Shape("toy", (6, 4), (8, 16), 32, 3, (40, 50)),))
    prof.main(["--device", "cpu", "--rows", "5"])
    text = capsys.readouterr().out
    assert "=== toy projected" in text and "=== toy dense" in text
    assert text.count("Self CPU time total") == 2


def test_glas_standin_has_the_real_names_and_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sizes read where the data is, a stand-in made from them where it is not: the GlaS loader
    reads it as GlaS, with the same images at the same sizes and a gland in each."""
    import numpy as np
    from PIL import Image

    from bench.data.glas import load_glas

    standin = _script("glas_standin", monkeypatch)
    real = tmp_path / "real"
    real.mkdir()
    for stem, (h, w) in {"train_1": (30, 40), "train_2": (36, 28), "testA_1": (20, 24)}.items():
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(real / f"{stem}.bmp")
        Image.fromarray(np.ones((h, w), np.uint8)).save(real / f"{stem}_anno.bmp")
    sizes = tmp_path / "sizes.json"
    standin.main(["sizes", str(real), str(sizes)])
    assert json.loads(sizes.read_text()) == {"testA_1": [20, 24], "train_1": [30, 40], "train_2": [36, 28]}
    standin.main(["make", str(sizes), str(tmp_path / "GlaS")])
    train = load_glas(tmp_path / "GlaS", "train")
    assert [s.image.shape for s in train] == [(30, 40, 3), (36, 28, 3)]
    assert all(0 < s.semantic.mean() < 1 for s in train)
    assert len(load_glas(tmp_path / "GlaS", "test")) == 1


def test_block_time_sums_stages_once_per_pretraining_and_quiet_by_cell_median(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.runner import RunSpec
    from bench.store import atomic_write_json
    from tests.conftest import sweep_toml, write_sweep

    script = _script("block_time", monkeypatch)
    config = write_sweep(tmp_path, sweep_toml(["unet", "ddpm"], seeds=[0, 1, 2], fractions=[1.0], output="out"))
    # unet: seed 2 shared the CPU (10x slower); ddpm: seed 0 built the backbone (its load_s)
    timings = {"unet": [{"train_s": t, "predict_s": 36.0, "total_s": t + 36.0, "cpu_s": t + 36.0}
                        for t in (360.0, 360.0, 3600.0)],
               "ddpm": [{"pretrain_s": 3600.0, "load_s": load, "probe_train_s": 720.0, "predict_s": 360.0,
                         "features_s": 0.0, "total_s": load + 1080.0} for load in (3600.0, 0.0, 0.0)]}
    for method, runs in timings.items():
        for seed, t in enumerate(runs):
            spec = RunSpec(dataset="synthetic-glands", root=None, fraction=1.0, method=method, seed=seed,
                           preset="tiny", output=str(tmp_path / "out"))
            atomic_write_json(spec.record_path, {
                "run_id": spec.run_id, "dataset": spec.dataset, "root": None, "fraction": 1.0, "method": method,
                "seed": seed, "preset": "tiny", "metrics": {"dice": 0.5}, "timings": t,
                "provenance": {"config_hash": spec.config_hash, "threads": 2}})
    from bench.config import load_config
    from bench.sweep_table import sweep_records

    records, _ = sweep_records(load_config(str(config)))
    times = script.block_time(records, ("unet", "ddpm"))
    assert list(times) == ["unet", "ddpm"]
    unet, ddpm = times["unet"], times["ddpm"]
    assert unet.quiet["network training"] == 3 * 360.0 and unet.recorded["network training"] == 4320.0
    assert ddpm.pretrain_s == 3600.0  # once, though every record carries it
    assert ddpm.quiet["probe training"] == 3 * 720.0 and ddpm.quiet["other"] == 0.0  # load_s is not a run stage
    assert ddpm.total("quiet") == 3600.0 + 3 * 1080.0
    assert unet.cpu_share() == 0.5 and ddpm.cpu_share() is None  # 2 threads, one busy; no cpu_s
    text = script.render(times, budget_h=1.0)
    assert "| all | 6 | 1.00 |" in text
    assert text.splitlines()[2].endswith("| 0.50 |") and text.splitlines()[3].endswith("| - |")
    assert "the quiet block is 2.2x it" in text  # (1188 + 3600 + 3240) s / 3600 s
    assert "Stages that alone exceed it: none." in text  # pre-training at exactly the budget is not over it
    for name in ("block_time", "small_table"):  # a missing sweep file is one line naming it
        with pytest.raises(SystemExit, match=rf"^{name}: error: .*missing.toml: \(file\): not found"):
            _script(name, monkeypatch).main(["--config", str(tmp_path / "missing.toml")])
