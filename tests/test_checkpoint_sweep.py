"""`checkpoint = PATH` in bench.toml: published weights replace pre-training, mismatches fail cleanly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import registry
from bench.cli import main
from tests.conftest import write_sweep

SWEEP = """
seeds = [0]
output = "out"
methods = ["ddpm"]
[[datasets]]
name = "synthetic-glands"
label_fractions = [1.0]
[params.ddpm]
checkpoint = "{ckpt}"
probe_max_epochs = 1
probe_ensemble = 2
probe_pixels_per_epoch = 4096
"""


def _tiny_state() -> dict[str, torch.Tensor]:
    cls = registry.get("ddpm")
    torch.manual_seed(0)
    return cls(cls.presets["tiny"]).build_model().state_dict()


@pytest.mark.slow
def test_a_checkpoint_skips_pretraining(tmp_path: Path) -> None:
    torch.save({k: v.half() for k, v in _tiny_state().items()}, tmp_path / "ddpm.pt")  # fp16 as released
    config = write_sweep(tmp_path, SWEEP.format(ckpt="ddpm.pt"))
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    record = json.loads(next((tmp_path / "out" / "records").iterdir()).read_text())
    assert record["timings"]["pretrain_s"] == 0.0 and record["extra"]["pretrain_cached"]
    assert record["config"]["checkpoint"] == str(tmp_path / "ddpm.pt")
    assert not (tmp_path / "out" / "artefacts").exists()


def test_a_mismatched_checkpoint_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = _tiny_state()
    state.pop("out.2.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    config = write_sweep(tmp_path, SWEEP.format(ckpt="bad.pt"))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.pt" in err
    assert "out.2.weight" in err and "extra.weight" in err
    assert not list((tmp_path / "out").rglob("*.json"))


def test_a_missing_checkpoint_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, SWEEP.format(ckpt="nowhere.pt"))
    assert main(["run", "--config", str(config), "--quiet"]) == 2
    assert "params.ddpm.checkpoint: file" in capsys.readouterr().err
