"""The `small` preset's validation study: each method and variant on GlaS's validation split.

Why: a preset's settings must be chosen without looking at test images. `glas-val`
(bench.data.validation) holds out a fixed fifth of GlaS's *training* images as its test split and
pre-trains on the training images alone, so every number here is a validation score. Each
variant is one `bench run` (preset small, `[params.METHOD]` overrides) into one shared output
folder, so pre-trained backbones are shared by key and an interrupted study resumes where it
stopped. The chosen settings are then scored once on the real test set (docs/small-preset.md).

    python benchmarks/calibrate_small.py --root ../shared/data/GlaS --out results/calibration \
        [--only mdm,unet,"mdm/probe lr 3e-3"] [--seeds 0] [--fractions 0.1,1.0] [--list]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# (method, variant name, [params.METHOD] overrides). The first variant of a method is the
# preset as written; `train_steps = 0` is the control every SSL method gets (an untrained
# backbone read out by the same probe: what pre-training adds at this scale).
STUDY: list[tuple[str, str, dict[str, Any]]] = [
    ("unet", "preset", {}),
    ("unet", "crop 192", {"crop": 192}),
    ("unet", "patience 30", {"patience": 30, "max_epochs": 160}),
    # the time floor (240 runs in 3 h) leaves a supervised run <= 45 s: a shorter recipe
    ("unet", "30 epochs patience 8", {"max_epochs": 30, "patience": 8}),
    ("unet", "30 epochs patience 8 10 steps", {"max_epochs": 30, "patience": 8, "steps_per_epoch": 10}),
    ("mdm", "preset", {}),
    ("mdm", "untrained", {"train_steps": 0}),
    ("mdm", "400 steps", {"train_steps": 400}),
    ("mdm", "t=250", {"timesteps_medical": [250]}),
    ("mdm", "blocks 5-7", {"blocks_medical": [5, 6, 7]}),
    # every probe ran its 40-epoch cap with the loss still falling: 4x the steps an epoch, or lr
    ("mdm", "probe 4x pixels", {"probe_pixels_per_epoch": 262144}),
    ("mdm", "probe lr 3e-3", {"probe_lr": 3e-3}),
    # width 16 is not a guided-diffusion UNet (its GroupNorm needs multiples of 32 channels)
    ("mdm", "width 64", {"model_channels": 64}),
    ("mdm", "width 64 + 400 steps", {"model_channels": 64, "train_steps": 400}),
    ("mdm", "1600 steps", {"train_steps": 1600}),
    ("ddpm", "preset", {}),
    ("ddpm", "untrained", {"train_steps": 0}),
    ("ddpm", "t=50", {"timesteps_medical": [50]}),
    ("mae", "preset", {}),
    ("mae", "untrained", {"train_steps": 0}),
    ("swav", "preset", {}),
    ("swav", "untrained", {"train_steps": 0}),
    # its loss sat at ln 100 (uniform codes) from step ~150 on: 300 steps of batch-16 codes over
    # 100 prototypes collapse it before the queue starts. Fewer prototypes and the queue from the
    # first step (200 scratch steps: the loss leaves ln 30 = 3.40 and falls to ~3.0-3.3)
    ("swav", "30 protos + queue 512", {"prototypes": 30, "queue_length": 512, "queue_start": 0,
                                       "freeze_prototypes_steps": 50}),
    # sixth pass: the loss sits at ln K because the scores flatten across prototypes (their
    # spread falls from 0.11 to 0.007 in 125 steps, codes and predictions both near uniform); of
    # the settings tried for 200 steps only a milder view distortion kept the spread (0.08) and
    # the loss under ln K: half the colour jitter, global crops of at least half the region
    ("swav", "weak colour + eps 0.02", {"epsilon": 0.02, "color_strength": 0.5, "global_scale": [0.5, 1.0]}),
    ("swav", "no colour jitter + eps 0.02", {"epsilon": 0.02, "color_strength": 0.0,
                                             "global_scale": [0.5, 1.0]}),
    ("swavw2", "preset", {}),
    ("swavw2", "untrained", {"train_steps": 0}),
    ("maskdm", "preset", {}),
    ("maskdm", "untrained", {"stage1_steps": 0, "stage2_steps": 0}),
    ("unetpp", "preset", {}),
    # the 3-hour floor's trade-off on the costliest baseline (5.28 of the block's
    # 23.5 quiet hours): UNet's cheapest recipe, measured on validation, and a quarter of it
    ("unetpp", "30 epochs patience 8 10 steps", {"max_epochs": 30, "patience": 8, "steps_per_epoch": 10}),
    ("unetpp", "10 epochs patience 8 10 steps", {"max_epochs": 10, "patience": 8, "steps_per_epoch": 10}),
    ("attunet", "preset", {}),
    ("swin_unetr", "preset", {}),
    ("uctransnet", "preset", {}),
    ("medt", "preset", {}),
    # the preset's validation Dice jumps 0.02-0.50 between epochs (two Adam steps an epoch at 1e-3)
    ("medt", "lr 3e-4", {"lr": 3e-4}),
    ("medt", "10 steps an epoch", {"epoch_mode": "steps", "steps_per_epoch": 10, "max_epochs": 40,
                                   "patience": 10}),
]


def _toml_value(value: Any) -> str:
    return json.dumps(value)  # JSON lists, numbers, strings and booleans are valid TOML here


def sweep_toml(root: Path, out: Path, method: str, overrides: dict[str, Any], seeds: list[int],
               fractions: list[float]) -> str:
    lines = ['preset = "small"', f"seeds = {seeds}", f'output = "{out}"', f'methods = ["{method}"]',
             "", "[[datasets]]", 'name = "glas-val"', f'root = "{root}"',
             f"label_fractions = {fractions}", "", f"[params.{method}]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def _records(out: Path) -> list[dict[str, Any]]:
    folder = out / "records"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def summarise(out: Path) -> list[dict[str, Any]]:
    """One row per (method, variant, fraction): mean validation Dice over the seeds run."""
    rows = []
    records = _records(out)
    for method, name, overrides in STUDY:
        mine = [r for r in records if r["method"] == method and r.get("params", {}) == overrides]
        for fraction in sorted({r["fraction"] for r in mine}, reverse=True):
            cell = [r for r in mine if r["fraction"] == fraction]
            dice = [100 * r["metrics"]["dice"] for r in cell]
            rows.append({"method": method, "variant": name, "fraction": fraction, "n": len(cell),
                         "dice": sum(dice) / len(dice),
                         "pretrain_s": max(r["timings"].get("pretrain_s", 0.0) for r in cell),
                         # a run that built (or waited for) the backbone counts it in load_s
                         "run_s": sum(r["timings"]["total_s"] - r["timings"].get("load_s", 0.0)
                                      for r in cell) / len(cell)})
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    out = ["| method | variant | labels | n | val Dice | pre-train s | s / run (backbone loaded) |", "|---|---|---|---|---|---|---|"]
    out += [f"| {r['method']} | {r['variant']} | {r['fraction']:.0%} | {r['n']} | {r['dice']:.2f} | "
            f"{r['pretrain_s']:.0f} | {r['run_s']:.0f} |" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="the GlaS folder")
    parser.add_argument("--out", type=Path, default=Path("results/calibration"))
    parser.add_argument("--only", help="comma-separated methods or method/variant, run in this order "
                        "(default: all of the study)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--fractions", default="0.1,1.0")
    parser.add_argument("--list", action="store_true", help="print the table of what is done, run nothing")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if not args.list:
        seeds = [int(s) for s in args.seeds.split(",")]
        fractions = [float(f) for f in args.fractions.split(",")]
        (out / "sweeps").mkdir(parents=True, exist_ok=True)
        # Every method's preset first, then the untrained controls, then the alternatives, so
        # a study cut short still has the rows that matter most.
        order = sorted(range(len(STUDY)), key=lambda i: ({"preset": 0, "untrained": 1}.get(STUDY[i][1], 2), i))
        if args.only:
            wanted = args.only.split(",")
            order = [i for w in wanted for i in order if w in (STUDY[i][0], f"{STUDY[i][0]}/{STUDY[i][1]}")]
            if not order:
                parser.error(f"--only {args.only!r} names nothing in the study (see --list for its rows)")
        for i in order:
            method, name, overrides = STUDY[i]
            config = out / "sweeps" / f"{i:02d}-{method}.toml"
            config.write_text(sweep_toml(args.root.resolve(), out, method, overrides, seeds, fractions))
            start = time.perf_counter()
            print(f"[calibrate] {method} / {name}: bench run --config {config}", flush=True)
            done = subprocess.run([sys.executable, "-m", "bench", "run", "--config", str(config), "--quiet"],
                                  capture_output=True, text=True)
            print(f"[calibrate] {method} / {name}: exit {done.returncode} in {time.perf_counter() - start:.0f} s",
                  flush=True)
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
    rows = summarise(out)
    (out / "study.json").write_text(json.dumps(rows, indent=2))
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
