"""Table 8 (Appendix C): CIFAR-10 linear-probe top-1 accuracy of the pre-trained backbones.

The runs are not `RunSpec`s: a RunSpec is a segmentation run (labelled subset, pixel probe,
segmentation metrics) and routing whole-image classification through it would mean a second
dispatch inside bench/runner.py. So this experiment keeps its own small idempotent loop: `runs()`
returns nothing, and `write()` does each missing method x seed (one atomic JSON record each, in
output/records/ beside the runner's, with `metrics: {"top1": ...}` and the same provenance), then
renders the table. Consequence: these runs always execute in the calling process (a Slurm sweep
submits nothing for them); the pre-trained artefact is still cached and resumable like any other.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import registry
from bench.context import RunContext
from bench.data.cifar10 import CIFAR10, ImageSet, load_cifar10
from bench.device import pick_device, seed_everything
from bench.errors import BenchError
from bench.experiments.base import Experiment, ExperimentContext, experiment
from bench.experiments.tables import ResultTable, write_tables
from bench.linear_probe import (
    FEATURES,
    LINEAR_PROBE_PRESETS,
    LinearProbeConfig,
    artefact_key,
    backbone_overrides,
    pooled_features,
    pretrained_backbone,
    train_linear,
)
from bench.progress import collect_histories
from bench.provenance import config_hash, provenance
from bench.published import ABLATIONS
from bench.records import read_record, record_path
from bench.runner import RunSpec
from bench.ssl import SSLMethod
from bench.store import atomic_write_json

DATASET = "cifar10"
METRIC = "top1"
COLUMN = "CIFAR-10 top-1"
METHODS = ("ddpm", "mdm")  # the rows of Table 8 this harness implements
# Printed rows: (method, variant) of bench.published's Table 8 cells -> the row label.
ROW_LABELS: dict[tuple[str, str], str] = {
    ("mocov1", "resnet50"): "MoCov1 (ResNet-50)",
    ("mocov2", ""): "MoCov2",
    ("simclr", ""): "SimCLR",
    ("simclrv2", "resnet101"): "SimCLRv2 (ResNet-101)",
    ("ddpm", "unet"): "DDPM (U-Net)",
    ("mdm", "unet"): "MDM (U-Net)",
}
OUR_ROWS = {"ddpm": ("ddpm", "unet"), "mdm": ("mdm", "unet")}


@dataclass(frozen=True)
class ProbeRun:
    """One method x seed of the linear probe: plain values, like a RunSpec."""

    method: str
    seed: int
    root: str
    preset: str
    output: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)

    def spec(self) -> RunSpec:
        """The RunSpec-shaped context the plugin's pre-training and artefact cache expect."""
        return RunSpec(dataset=DATASET, root=self.root, fraction=1.0, method=self.method, seed=self.seed,
                       preset=self.preset, output=self.output, params=self.params)

    @property
    def config_hash(self) -> str:
        cfg = dataclasses.asdict(self.spec().resolved_config())
        return config_hash({"dataset": DATASET, "root": self.root, "method": self.method, "preset": self.preset,
                            "config": cfg, "linear_probe": dataclasses.asdict(self.probe)})

    @property
    def run_id(self) -> str:
        return f"{DATASET}-linear-{self.method}-s{self.seed}-{self.config_hash[:10]}"

    @property
    def record_path(self) -> Path:
        return record_path(self.output, self.run_id)


def probe_runs(ctx: ExperimentContext) -> list[ProbeRun]:
    entry = ctx.entry(DATASET)
    assert entry is not None and entry.root is not None
    probe = LINEAR_PROBE_PRESETS[ctx.sweep.preset]
    return [ProbeRun(method=m, seed=s, root=entry.root, preset=ctx.sweep.preset, output=ctx.sweep.output,
                     params={**ctx.sweep.params.get(m, {}), **backbone_overrides(probe)}, probe=probe)
            for m in METHODS for s in ctx.sweep.seeds]


def first(data: ImageSet, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first n images (the release's batches are already shuffled), or all."""
    stop = len(data) if n is None else min(n, len(data))
    return data.images[:stop], data.labels[:stop]


def execute(run: ProbeRun, quiet: bool = False) -> Path:
    """Pre-train (or load) the backbone, extract pooled features, fit the probe, write the record."""
    wall = time.perf_counter()
    spec = run.spec()
    device = pick_device()
    seed_everything(run.seed)
    plugin = registry.create(spec.method, spec.preset, spec.params)
    if not isinstance(plugin, SSLMethod):
        raise BenchError(f"{spec.method}: table8's linear probe reads a pre-trained backbone; "
                         f"{spec.method} is a {plugin.kind} method")
    train_x, train_y = first(load_cifar10(run.root, "train"), run.probe.max_train)
    test_x, test_y = first(load_cifar10(run.root, "test"), run.probe.max_test)
    ctx = RunContext(spec=spec, device=device, progress=not quiet)
    timings: dict[str, float] = {}
    with collect_histories() as history:  # pre-training (from the artefact) and the linear probe
        backbone, timings["pretrain_s"], cached = pretrained_backbone(plugin, ctx, train_x)
    artefact = artefact_key(plugin, ctx, len(train_x))
    start = time.perf_counter()
    feats = []
    for split, images in (("train", train_x), ("test", test_x)):
        key = FEATURES.key(plugin, artefact, run.root, split, len(images))
        got = FEATURES.get(key)
        if got is None:
            got = pooled_features(plugin, backbone, images, run.probe.feature_batch, device)
            FEATURES.put(key, got)
        feats.append(got)
    timings["features_s"] = time.perf_counter() - start
    del backbone
    start = time.perf_counter()
    with collect_histories() as probe_history:
        result = train_linear(feats[0], torch.tensor(train_y), feats[1], torch.tensor(test_y),
                              CIFAR10.num_classes, run.probe, run.seed, device)
    timings["probe_train_s"] = time.perf_counter() - start
    timings["total_s"] = time.perf_counter() - wall
    record = {
        "run_id": run.run_id, "dataset": DATASET, "fraction": 1.0, "method": run.method,
        "kind": "linear_probe", "seed": run.seed, "preset": run.preset,
        "config": dataclasses.asdict(plugin.cfg), "linear_probe": dataclasses.asdict(run.probe),
        "params": run.params, "n_train": len(train_y), "n_test": len(test_y),
        "metrics": {METRIC: result.top1}, "per_image": {},
        "timings": timings, "history": {**history, **probe_history},
        "extra": {"train_top1": result.train_top1, "final_loss": result.final_loss,
                  "feature_dim": int(feats[0].shape[1]), "pretrain_cached": cached},
        "provenance": provenance(run.config_hash, run.seed, device),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(run.record_path, record)
    return run.record_path


def published_cells() -> dict[tuple[str, str], float]:
    """(row label, column) -> the printed accuracy (Table 8 prints no std)."""
    return {(ROW_LABELS[(c.method, c.variant)], COLUMN): c.mean for c in ABLATIONS["table8"]
            if (c.method, c.variant) in ROW_LABELS}


@experiment
class Table8(Experiment):
    name = "table8"
    title = "Table 8: CIFAR-10 linear probe (top-1) of frozen pre-trained backbones"

    def runs(self, ctx: ExperimentContext) -> list[RunSpec]:
        """None: the probe runs are classification runs done by `write` (see the module docstring)."""
        return []

    def record_ids(self, ctx: ExperimentContext) -> list[str]:
        return [r.run_id for r in probe_runs(ctx)] if ctx.entry(DATASET) is not None else []

    def write(self, ctx: ExperimentContext) -> list[Path]:
        if not ctx.available(DATASET):
            return []
        runs = probe_runs(ctx)
        todo = [r for r in runs if read_record(r.record_path) is None]
        if todo:
            doing = "to do" if ctx.run_missing else "without a record (--no-run)"
            print(f"bench: table8: {len(todo)} of {len(runs)} linear-probe runs {doing} -> {ctx.sweep.output}",
                  file=sys.stderr)
        for run in todo if ctx.run_missing else []:
            execute(run, quiet=ctx.quiet)
        values: dict[tuple[str, str], dict[int, float]] = {}
        sizes: set[tuple[int, int]] = set()
        for run in runs:
            record = read_record(run.record_path)
            if record is not None:
                row = ROW_LABELS[OUR_ROWS[run.method]]
                values.setdefault((row, COLUMN), {})[run.seed] = 100.0 * float(record["metrics"][METRIC])
                sizes.add((int(record["n_train"]), int(record["n_test"])))
        published = {cell: (mean, float("nan")) for cell, mean in published_cells().items()}
        table = ResultTable(rows=list(dict.fromkeys(ROW_LABELS.values())), columns=[COLUMN], values=values,
                            published=published, title=self.title, notes=notes(ctx.sweep.preset, sizes))
        return write_tables(table, ctx)


def notes(preset: str, sizes: set[tuple[int, int]]) -> list[str]:
    """What the reader must know to compare the rows: who was run here, on how much data."""
    ours = ", ".join(ROW_LABELS[OUR_ROWS[m]] for m in METHODS)
    data = "; ".join(f"{a} train / {b} test images" for a, b in sorted(sizes)) or "no finished runs"
    return [
        f"Run here: {ours} (preset {preset}: {data}); the backbone is pre-trained on the CIFAR-10 train "
        "images at 32 px, frozen, each feature block is averaged over space and one linear layer is fit.",
        "Other rows: published numbers only (those methods are not part of this harness); the paper "
        "prints no std for this table, and no number for MDM (only that it is clearly above DDPM).",
    ]
