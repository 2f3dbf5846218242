"""`bench run` with datasetddpm end to end (tiny), its shared artefacts, and its Slurm stages."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config import load_config
from bench.executors.plan import make_plan
from bench.nn.smp_models import build_smp
from bench.runner import expand
from tests.conftest import make_sweep, sweep_toml, write_sweep

# The tiny preset, made shorter still so each test takes seconds (docs/methods.md's timings are plain tiny).
FAST = {"train_steps": 10, "n_samples": 5, "sample_steps": 4, "sample_shard": 3, "probe_max_epochs": 2,
        "probe_pixels_per_epoch": 4096, "deeplab_epochs": 1, "drop_uncertain": 0.2}


def _sweep(dataset: str, root: str | None, seeds: tuple[int, ...] = (0,),
           methods: tuple[str, ...] = ("datasetddpm",), **params: dict[str, Any]) -> str:
    """datasetddpm's FAST settings, with `params[method]` over them."""
    params = {**params, "datasetddpm": {**FAST, **params.get("datasetddpm", {})}}
    return sweep_toml(methods, seeds=seeds, dataset=dataset, root=root, output="out", params=params)


def _ffhq34(root: Path) -> Path:
    """Three train and two test images in ddpm-segmentation's layout, 34 classes, 64 px (the
    loader upsamples them to 256): a face-like blob on a background, so labels carry structure."""
    yy, xx = np.mgrid[:64, :64]
    for split, count in (("train", 3), ("test", 2)):
        folder = root / "real" / split
        folder.mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng(10 * i + len(split))
            r = 14 + 3 * i
            label = np.where((yy - 32) ** 2 + (xx - 30 - i) ** 2 < r * r, 1 + i, 0).astype(np.uint8)
            label[28:32, 24:28] = 5 + i          # an "eye"
            image = rng.integers(0, 40, (64, 64, 3)).astype(np.uint8) + (label[..., None] * 20).astype(np.uint8)
            Image.fromarray(image).save(folder / f"{i}.png")
            np.save(folder / f"{i}.npy", label)
    return root


def _records(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]


def _check_inspection(out: Path, record: dict, num_classes: int) -> None:
    folder = out / "predictions" / record["run_id"] / "synthetic"
    meta = json.loads((folder / "synthetic.json").read_text())
    assert len(meta["uncertainty"]) == 5 and len(meta["kept"]) == 4 == record["extra"]["n_kept"]
    dropped = set(range(5)) - set(meta["kept"])
    assert max(meta["uncertainty"]) == pytest.approx(meta["uncertainty"][dropped.pop()])
    figure = np.asarray(Image.open(folder / "synthetic.png"))
    assert figure.ndim == 3 and figure.shape[1] > 5 * 64
    for i in range(5):
        image = np.asarray(Image.open(folder / f"sample-{i:04d}.png"))
        label = np.asarray(Image.open(folder / f"sample-{i:04d}-label.png"))
        assert image.shape == (64, 64, 3) and label.shape == (64, 64) and label.max() < num_classes


@pytest.mark.slow
def test_glands_end_to_end_seeds_share_one_sample_set(tmp_path: Path, one_thread: None) -> None:
    config = write_sweep(tmp_path, _sweep("synthetic-glands", None, seeds=(0, 1)))
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    out = tmp_path / "out"
    first, second = _records(out)
    for record in (first, second):
        assert 0 <= record["metrics"]["dice"] <= 100 and record["extra"]["n_samples"] == 5
        for key in ("sample_s", "label_s", "deeplab_train_s", "probe_train_s"):
            assert record["timings"][key] >= 0
        _check_inspection(out, record, 2)
    assert [r["extra"]["samples_cached"] for r in sorted((first, second), key=lambda r: r["seed"])] == [False, True]
    (samples,) = (out / "artefacts" / "datasetddpm").glob("*.pt")
    (backbone,) = (out / "artefacts" / "ddpm").glob("*.pt")  # the ddpm plugin's file, not a copy
    assert torch.load(samples, weights_only=False)["images"].shape == (5, 64, 64, 3)
    assert not list(out.rglob("*.shards"))


@pytest.mark.slow
def test_ffhq34_format_end_to_end(tmp_path: Path, one_thread: None) -> None:
    root = _ffhq34(tmp_path / "ffhq")
    config = write_sweep(tmp_path, _sweep("ffhq34", str(root)))
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    out = tmp_path / "out"
    (record,) = _records(out)
    assert record["n_test"] == 2 and 0 <= record["metrics"]["miou"] <= 100
    _check_inspection(out, record, 34)
    for name in ("0", "1"):
        prediction = np.asarray(Image.open(out / "predictions" / record["run_id"] / f"{name}.png"))
        assert prediction.shape == (256, 256) and prediction.max() < 34


def test_datasetddpm_reads_the_ddpm_backbone_and_slurm_builds_it_then_the_samples(tmp_path: Path) -> None:
    sweep = load_config(write_sweep(tmp_path, _sweep("synthetic-glands", None, seeds=(0, 1),
                                                     methods=("ddpm", "datasetddpm"), ddpm={"train_steps": 10})))
    runs = expand(sweep)
    ddpm = next(r for r in runs if r.method == "ddpm")
    dataset = next(r for r in runs if r.method == "datasetddpm")
    backbone, samples = dataset.artefacts()
    assert backbone == ddpm.artefact() and samples.parent.name == "datasetddpm"
    assert {r.artefact() for r in runs if r.method == "datasetddpm"} == {samples}  # one set for both seeds
    plan = make_plan(runs)
    first, then = plan.pretrain
    assert (first.artefact, first.after) == (backbone, None) and (then.artefact, then.after) == (samples, backbone)
    assert {a.specs[0].method: a.artefact for a in plan.arrays} == {"ddpm": backbone, "datasetddpm": samples}
    backbone.parent.mkdir(parents=True)
    backbone.touch()
    (only,) = make_plan(runs).pretrain                 # the backbone exists: sampling waits for nothing
    assert (only.artefact, only.after) == (samples, None)


def test_dry_run_names_the_sampling_job_after_the_pretraining_job(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, _sweep("synthetic-glands", None))
    assert main(["run", "--config", str(config), "--executor", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 pre-training job(s) and 1 run(s)" in out
    assert "job bench-pretrain-datasetddpm-synthetic-glands: builds" in out
    assert ", after bench-pretrain-ddpm-synthetic-glands" in out
    assert "array bench-ssl-datasetddpm: 1 run(s), after bench-pretrain-datasetddpm-synthetic-glands" in out


def test_bench_list_json_counts_the_paper_deeplab_and_the_smp_unet(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert (rows["datasetddpm"]["kind"], rows["datasetddpm"]["params"]) == ("ssl", 58_634_338)  # = torchvision's
    assert (rows["smp"]["kind"], rows["smp"]["params"]) == ("supervised", 24_436_514)  # Unet-ResNet34, 2 classes


@pytest.mark.slow
def test_smp_baseline_runs_with_an_architecture_and_encoder_from_the_config(tmp_path: Path, one_thread: None) -> None:
    config = make_sweep(tmp_path, ["smp"], output="out",
                        params={"smp": {"arch": "FPN", "encoder": "resnet18", "max_epochs": 2, "steps_per_epoch": 3}})
    assert main(["run", "--config", str(config), "--quiet"]) == 0
    (record,) = _records(tmp_path / "out")
    assert record["config"]["arch"] == "FPN" and 0 <= record["metrics"]["dice"] <= 100
    assert record["extra"]["params"] == sum(p.numel() for p in build_smp("FPN", "resnet18", 2).parameters())


@pytest.mark.slow
def test_debug_executor_builds_backbone_then_samples_in_their_own_jobs(tmp_path: Path, one_thread: None) -> None:
    """`--executor debug` runs the Slurm plan's jobs here: the pre-training job, the sampling
    job (each `PretrainJob` builds only its stage), then the run, which finds both built."""
    config = write_sweep(tmp_path, _sweep("synthetic-glands", None, datasetddpm={"inspect_samples": 0}))
    assert main(["run", "--config", str(config), "--executor", "debug", "--quiet"]) == 0
    (record,) = _records(tmp_path / "out")
    assert record["extra"]["samples_cached"] and record["extra"]["pretrain_cached"]
    assert not (tmp_path / "out" / "predictions" / record["run_id"] / "synthetic" / "synthetic.png").exists()
