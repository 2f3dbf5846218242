"""Does MaskDM's masked stage 1 give better probe features for the same number of training steps?

MaskDM's claim (REFERENCE §7) is that masked pre-training speeds up diffusion training. Here two
arms get the same total steps on the tiny preset: `maskdm` spends the first `stage1_steps` on
masked training (90% of the patch blocks dropped) and the rest on plain DDPM fine-tuning;
`ddpm` spends them all on plain DDPM training of the same U-ViT. Both are probed (the full
pipeline: runner, feature bank, probe ensemble, test-set Dice/IoU) every `every` steps.

Each checkpoint is its own run with that many steps. With the tiny preset (no EMA, constant lr,
one generator per stage) a run of n steps is exactly the first n steps of a longer one, so the
runs are the checkpoints of a single training run per arm. Dice and IoU are over the test images
of one seed; differences of a point or so are within what another seed could change.

    python benchmarks/maskdm_steps.py [--total 120] [--every 30] [--stage1 60] [--seed 0] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.runner import RunSpec  # noqa: E402


@dataclass(frozen=True)
class StepsBenchmark:
    """The compared budgets; the defaults split the tiny preset's 120 steps as the preset does."""

    total_steps: int = 120
    every: int = 30
    stage1_steps: int = 60
    seed: int = 0
    dataset: str = "synthetic-glands"
    fraction: float = 1.0
    preset: str = "tiny"

    def checkpoints(self) -> list[int]:
        return list(range(0, self.total_steps + 1, self.every))

    def split(self, arm: str, steps: int) -> tuple[int, int]:
        """(stage 1, stage 2) steps of an arm after `steps` steps in all."""
        if arm == "ddpm":
            return 0, steps
        first = min(steps, self.stage1_steps)
        return first, steps - first


ARMS = ("maskdm", "ddpm")


def probe(bench: StepsBenchmark, stage1: int, stage2: int, output: Path) -> dict:
    """Pre-train with this split and probe it through the real runner; return the run's record."""
    spec = RunSpec(dataset=bench.dataset, root=None, fraction=bench.fraction, method="maskdm",
                   seed=bench.seed, preset=bench.preset, output=str(output),
                   params={"stage1_steps": stage1, "stage2_steps": stage2})
    return json.loads(spec.execute().read_text())


def measure(bench: StepsBenchmark, output: Path | None = None) -> list[dict]:
    """One row per arm and checkpoint: steps, the split, test Dice/IoU (%) and pre-training seconds."""
    with tempfile.TemporaryDirectory(prefix="maskdm-steps-") as scratch:
        folder = output or Path(scratch)
        rows = []
        for steps in bench.checkpoints():
            for arm in ARMS:
                stage1, stage2 = bench.split(arm, steps)
                record = probe(bench, stage1, stage2, folder)
                rows.append({"arm": arm, "steps": steps, "stage1": stage1, "stage2": stage2,
                             "dice": 100 * record["metrics"]["dice"], "iou": 100 * record["metrics"]["iou"],
                             "pretrain_s": record["timings"]["pretrain_s"]})
        return rows


def format_rows(bench: StepsBenchmark, rows: list[dict]) -> str:
    by = {(r["arm"], r["steps"]): r for r in rows}
    lines = [f"{bench.dataset}, preset {bench.preset}, label fraction {bench.fraction:g}, ONE seed "
             f"({bench.seed}); maskdm = {bench.stage1_steps} masked steps, then DDPM fine-tuning",
             f"{'steps':>5}  {'maskdm split':>12}  {'dice':>6} {'iou':>6} {'train s':>7}  |"
             f"  {'ddpm dice':>9} {'iou':>6} {'train s':>7}  | dice gap"]
    for steps in bench.checkpoints():
        m, d = by[("maskdm", steps)], by[("ddpm", steps)]
        split = f"{m['stage1']}+{m['stage2']}"
        lines.append(f"{steps:5d}  {split:>12}  {m['dice']:6.2f} {m['iou']:6.2f} {m['pretrain_s']:7.1f}  |"
                     f"  {d['dice']:9.2f} {d['iou']:6.2f} {d['pretrain_s']:7.1f}  | {m['dice'] - d['dice']:+.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = StepsBenchmark()
    p.add_argument("--total", type=int, default=defaults.total_steps)
    p.add_argument("--every", type=int, default=defaults.every)
    p.add_argument("--stage1", type=int, default=defaults.stage1_steps)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--output", type=Path, default=None, help="keep runs and records here (default: a temp folder)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = StepsBenchmark(total_steps=args.total, every=args.every, stage1_steps=args.stage1, seed=args.seed)
    rows = measure(bench, args.output)
    print(format_rows(bench, rows))
    return rows


if __name__ == "__main__":
    main()
