"""Operators and device-to-host synchronisations of the pixel probe, counted on the CPU.

Why: on a GPU a probe step or a predicted window costs its kernel launches and the host's
waits on the device as much as its arithmetic (results/gpu-h200: a 2.3 ms MLP step took
1.6-11.7 s). Both can be counted without a GPU: torch.profiler records every operator the code
issues, and the same code issues the same operators on any device. This counts, per case:

- ops_per_step / syncs_per_step: one probe training step (10 members, `train_probe` itself),
  for banks of 4 and 32 images of two real feature shapes, under both stopping rules. A step is
  the difference between trainings of the same epochs with more and fewer steps per epoch, and
  under the natural rule it is a step of an epoch past warm-up, with per-step bookkeeping;
- ops_per_window: one predicted window of `predict_window_votes` (several windows a call, where
  the code batches them; `predict_votes` per window otherwise), with its rows in 1 and 4 chunks.

Shapes: "5maps" is MDM's medical read-out on 256-px windows (384 channels at 64^2 x 3, 384 at
128^2, 192 at 128^2: 1,728 dims), "12maps" MAE's (12 blocks of 1024 channels at 32^2: 12,288).

A synchronisation is whatever makes the host wait for a GPU: reading a value (`item`, `bool`,
`int`, `float`, `tolist`, `numpy`, seen as aten::_local_scalar_dense or the call), a copy to the
host (`cpu`), or an operator whose output size depends on values (nonzero, masked_select,
unique). On a CPU every tensor is a host tensor, so this counts host reads of host tensors too:
an upper bound, except inside CPU kernels whose CUDA twins read the scalar on the device (fused
Adam's step count). Operators are the aten calls the code makes itself (nested ones not
counted).

Floors: operators per step do not grow with the bank's image count, 0 synchronisations per step,
and the operators a further row chunk adds to a window do not grow with the number of maps.

    python benchmarks/probe_ops.py [--quick] [--json out.json]

Prints one JSON line: {"ops_per_step": {...}, "syncs_per_step": {...}, "ops_per_window": {...},
...} keyed by case. A copy of this file outside a checkout counts the `bench` on PYTHONPATH
(another version's code, where its API allows).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import bench.probe.predict as predict_module  # noqa: E402
from bench.probe import ProbeConfig, train_probe  # noqa: E402
from bench.probe.bank import FeatureBank  # noqa: E402
from bench.probe.mlp import EnsembleMLP  # noqa: E402

SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select",
                      "aten::_unique", "aten::_unique2", "aten::unique_dim",
                      "aten::unique_consecutive"})
HOST_CALLS = frozenset({"cpu", "tolist", "numpy"})
# CPU kernels that read a scalar of their own inputs on the host; their CUDA kernels read it on
# the device (fused Adam's step count), so on a GPU they do not synchronise.
HOST_SIDE_KERNELS = frozenset({"aten::_fused_adam_", "aten::_fused_adamw_"})


@dataclass(frozen=True)
class Shape:
    name: str
    channels: tuple[int, ...]  # per feature map
    sizes: tuple[int, ...]     # native side of each map
    window: int                # label / output side


SHAPES = (
    Shape("5maps", (384, 384, 384, 384, 192), (64, 64, 64, 128, 128), 256),
    Shape("12maps", (1024,) * 12, (32,) * 12, 256),
)


@dataclass(frozen=True)
class OpsConfig:
    images: tuple[int, ...] = (4, 32)
    rules: tuple[str, ...] = ("loss_plateau", "natural")
    members: int = 10
    classes: int = 2
    batch: int = 256             # pixels per member and step (counts do not depend on it)
    steps: tuple[int, int] = (2, 4)  # steps per epoch of the two trainings compared
    chunks: tuple[int, ...] = (1, 4)  # row chunks per predicted window
    windows: int = 4             # windows per prediction call, where the code batches them


QUICK = OpsConfig(rules=("natural",), images=(2, 8))  # the natural rule has per-step bookkeeping


class _HostCalls(TorchFunctionMode):
    """Counts the Tensor methods that copy to or read on the host without an aten operator."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Callable, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in HOST_CALLS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count(run: Callable[[], object]) -> tuple[int, int]:
    """(operators, synchronisations) of one call of `run`."""
    calls = _HostCalls()
    with profile(activities=[ProfilerActivity.CPU]) as prof, calls:
        run()
    ops = syncs = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        ops += parent is None or not parent.name.startswith("aten::")
        syncs += event.name in SYNC_OPS and not _inside(event, HOST_SIDE_KERNELS)
    return ops, syncs + calls.count


def _inside(event: Any, names: frozenset[str]) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def fill_bank(shape: Shape, images: int, classes: int) -> FeatureBank:
    """A bank of `images` images of one window each: one set of random maps (values do not
    change the counts) and random labels."""
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(c, s, s, generator=gen).half() for c, s in zip(shape.channels, shape.sizes)]
    bank = FeatureBank()
    for _ in range(images):
        labels = torch.randint(0, classes, (shape.window, shape.window), generator=gen)
        bank.add(maps, labels.numpy().astype(np.uint8))
    return bank


def step_counts(bank: FeatureBank, cfg: OpsConfig, rule: str) -> tuple[float, float]:
    """Operators and synchronisations of one training step of an epoch past warm-up."""
    def training(epochs: int, steps: int) -> Callable[[], object]:
        probe = ProbeConfig(ensemble=cfg.members, batch_pixels=cfg.batch, stop_rule=rule,  # type: ignore[arg-type]
                            max_epochs=epochs, warmup_epochs=0, pixels_per_epoch=steps * cfg.batch)
        return lambda: train_probe(bank, cfg.classes, probe, seed=0)

    training(1, 1)()  # first use: whatever the bank builds once (lookups, tables) is not a step
    few, many = cfg.steps
    measured = {(e, s): count(training(e, s)) for e in (1, 2) for s in (few, many)}
    second = {s: [b - a for a, b in zip(measured[1, s], measured[2, s])] for s in (few, many)}
    ops, syncs = ((second[many][i] - second[few][i]) / (many - few) for i in range(2))
    return ops, syncs


def window_counts(shape: Shape, cfg: OpsConfig, chunks: int) -> float:
    """Operators per predicted window, its rows in `chunks` chunks."""
    probe = EnsembleMLP(cfg.members, sum(shape.channels), cfg.classes, ProbeConfig().hidden_sizes(cfg.classes),
                        generators=[torch.Generator().manual_seed(k) for k in range(cfg.members)]).eval()
    gen = torch.Generator().manual_seed(1)
    maps = [torch.randn(c, s, s, generator=gen).half() for c, s in zip(shape.channels, shape.sizes)]
    out_hw, rows = (shape.window, shape.window), -(-shape.window // chunks)
    batched = getattr(predict_module, "predict_window_votes", None)
    if batched is not None:
        def run() -> object:
            return batched(probe, [maps] * cfg.windows, out_hw, [1.0] * cfg.windows, chunk_rows=rows)
        per_call = cfg.windows
    else:
        def run() -> object:
            return predict_module.predict_votes(probe, maps, out_hw, 1.0, chunk_rows=rows)
        per_call = 1
    run()  # warm-up: cached plans are built once per window shape
    return count(run)[0] / per_call


def floors(result: dict[str, Any], cfg: OpsConfig, shapes: tuple[Shape, ...]) -> dict[str, bool]:
    """The floors, and (into `result`) the operators each further row chunk adds to a window."""
    steps, windows = result["ops_per_step"], result["ops_per_window"]
    few, many = min(cfg.images), max(cfg.images)
    flat = all(steps[f"{rule}/{s.name}/{many}img"] <= steps[f"{rule}/{s.name}/{few}img"]
               for rule in cfg.rules for s in shapes)
    lo, hi = min(cfg.chunks), max(cfg.chunks)
    per_chunk = {s.name: (windows[f"{s.name}/{hi}chunks"] - windows[f"{s.name}/{lo}chunks"]) / (hi - lo)
                 for s in shapes}
    result["ops_per_extra_chunk"] = per_chunk
    return {"ops_per_step_flat_in_images": flat,
            "no_syncs_per_step": all(v == 0 for v in result["syncs_per_step"].values()),
            "ops_per_extra_chunk_flat_in_maps": len(set(per_chunk.values())) == 1}


def run_probe_ops(cfg: OpsConfig | None = None, shapes: tuple[Shape, ...] = SHAPES) -> dict[str, Any]:
    cfg = cfg or OpsConfig()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # counts do not depend on threads; a shared machine's do on time
    result: dict[str, Any] = {"ops_per_step": {}, "syncs_per_step": {}, "ops_per_window": {}}
    for shape in shapes:
        for images in cfg.images:
            bank = fill_bank(shape, images, cfg.classes)
            for rule in cfg.rules:
                key = f"{rule}/{shape.name}/{images}img"
                result["ops_per_step"][key], result["syncs_per_step"][key] = step_counts(bank, cfg, rule)
            del bank
        for chunks in cfg.chunks:
            result["ops_per_window"][f"{shape.name}/{chunks}chunks"] = window_counts(shape, cfg, chunks)
    result["floors"] = floors(result, cfg, shapes)
    result["config"] = asdict(cfg)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one stopping rule, banks of 2 and 8 images")
    parser.add_argument("--json", type=Path, help="also write the line to this file")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else OpsConfig()
    line = json.dumps(run_probe_ops(cfg))
    if args.json:
        args.json.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
