"""StageLog: periodic log lines without a bar, compact histories, and histories in every record."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli import main
from bench.pretrain import PretrainSchedule, pretrain
from bench.progress import History, LogSettings, StageLog, collect_histories, setup_logging
from bench.resume import resumable
from bench.store import load_torch
from tests.conftest import sweep_toml, write_sweep


def test_history_keeps_window_means_within_its_budget() -> None:
    history = History(max_points=8)
    for step in range(1, 101):
        history.add(step, {"loss": float(step)})
    out = history.as_dict()
    assert len(out["step"]) <= 8 and out["every"] == 16
    assert out["step"] == sorted(out["step"]) and out["step"][-1] == 100
    # each point is the mean of the `every` steps ending at it; the last window is the rest
    assert out["loss"][0] == np.mean(np.arange(1, 17)) and out["loss"][-1] == np.mean(np.arange(97, 101))
    short = History(max_points=256)
    for step in range(1, 6):
        short.add(step, {"loss": 1.0 / step, "val_dice": float("nan")})
    assert short.as_dict() == {"step": [1, 2, 3, 4, 5], "every": 1, "loss": [1.0, 0.5, 1 / 3, 0.25, 0.2],
                               "val_dice": [None] * 5}


def test_stage_lines_name_stage_step_loss_rate_and_eta() -> None:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    setup_logging(0)
    logger = logging.getLogger("bench")
    logger.addHandler(handler)
    try:
        with StageLog("ddpm pretrain", 4, progress=False, settings=LogSettings(every_s=0.0)) as stage:
            for step in range(1, 5):
                stage.update(step, loss=1.0 / step)
        setup_logging(-1)  # quiet: no progress lines
        with StageLog("probe", 2, progress=False, settings=LogSettings(every_s=0.0)) as stage:
            stage.update(1, loss=0.1)
    finally:
        logger.removeHandler(handler)
        setup_logging(0)
    assert len(lines) == 5, lines
    assert lines[1].startswith("ddpm pretrain: step 2/4 (50%), loss 0.5, ") and "step/s, ETA " in lines[1]
    assert lines[-1].startswith("ddpm pretrain: done, 4 steps in ") and lines[-1].endswith("last loss 0.25")


class _Killed(Exception):
    pass


def _pretrain_curve(die_at: int | None = None) -> dict:
    images = [np.random.default_rng(i).integers(0, 255, (20, 20, 3), dtype=np.uint8) for i in range(2)]
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 3, padding=1)
    calls = []

    def loss(m: nn.Module, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if len(calls) == die_at:
            raise _Killed
        calls.append(1)
        return ((m(x) - x) ** 2).mean()

    with collect_histories() as curves:
        pretrain(model, images, PretrainSchedule(steps=10, batch=2, crop=16, lr=1e-2), loss,
                 torch.device("cpu"), seed=0, desc="toy pretrain")
    return curves["toy pretrain"]


@pytest.mark.slow
def test_a_resumed_pretraining_keeps_the_curve_of_the_steps_before_the_kill(tmp_path: Path,
                                                                            one_thread: None) -> None:
    reference = _pretrain_curve()
    assert reference["step"] == list(range(1, 11))
    with pytest.raises(_Killed), resumable(tmp_path / "ckpt.pt", every_s=0):
        _pretrain_curve(die_at=6)
    with resumable(tmp_path / "ckpt.pt", every_s=0):
        resumed = _pretrain_curve()
    assert resumed == reference


SWEEP = sweep_toml(["ddpm", "unet"], seeds=(0, 1), fractions=(1.0,), params={
    "ddpm": {"train_steps": 7, "probe_max_epochs": 3, "max_side": 96},
    "unet": {"max_side": 96, "max_epochs": 3}})


@pytest.mark.slow
def test_every_record_keeps_the_history_of_its_stages(tmp_path: Path, one_thread: None) -> None:
    config = write_sweep(tmp_path, SWEEP)
    assert main(["run", "--config", str(config), "-q"]) == 0
    records = {(r["method"], r["seed"]): r for r in
               (json.loads(p.read_text()) for p in (tmp_path / "results" / "records").glob("*.json"))}
    assert len(records) == 4
    artefact = load_torch(next((tmp_path / "results" / "artefacts").rglob("*.pt")))
    for seed in (0, 1):
        ddpm = records["ddpm", seed]["history"]
        assert set(ddpm) == {"ddpm pretrain", "probe"}
        assert ddpm["ddpm pretrain"] == artefact["history"]["ddpm pretrain"]  # built once, copied
        assert ddpm["ddpm pretrain"]["step"] == list(range(1, 8)) and len(ddpm["ddpm pretrain"]["loss"]) == 7
        probe = ddpm["probe"]
        assert probe["step"] == list(range(1, len(probe["step"]) + 1)) and 1 <= len(probe["step"]) <= 3
        assert all(0 < a <= 4 for a in probe["active"]) and all(x > 0 for x in probe["loss"])
        unet = records["unet", seed]["history"]["unet train"]
        assert unet["step"] == list(range(1, len(unet["step"]) + 1)) and len(unet["step"]) <= 3
        assert len(unet["loss"]) == len(unet["val_dice"]) == len(unet["step"])
        assert all(0 <= d <= 1 for d in unet["val_dice"])
