"""What only a GPU can show, in one table: per method, the paper preset's step times in fp32 and in
bf16 + channels_last, peak GPU memory, the smoke run on the GPU, and the ensemble probe speed-up.

For every method this runs its smoke run (`bench run --smoke`: real shapes, a few steps) twice,
with the GPU fast paths off (fp32) and on (bf16 autocast + channels_last, bench's default on a
GPU; "fp32" is PyTorch's default, which lets cuDNN convolutions use TF32), and reads each stage's
seconds per step from the smoke record: pre-training (the supervised trainer's step for
baselines) and the probe, with the record's estimates of the full pre-training and run.
Training batches are capped at 8 (see CheckConfig.smoke). The 10-member ensemble probe against
10 separate modules is benchmarks/probe_perf.py's speed half at the MDM medical probe's shape.
Goals: bf16 >= 1.5x fp32, ensemble >= 4x. Budget: 8 minutes on one GPU (methods left when the
budget is spent are listed as skipped).

    python benchmarks/gpu_check.py [--device cuda|cpu] [--quick] [--methods ddpm,unet] [--budget-s 420] [--json out.json]

`--device cpu --quick` runs the same code on the tiny preset in seconds (tested in CI).
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import torch  # noqa: E402

from bench import registry  # noqa: E402
from bench.device import fast_paths, pick_device  # noqa: E402
from bench.errors import one_line  # noqa: E402
from bench.estimates import pretrain_stages, run_stages  # noqa: E402
from bench.probe.feature_cache import CACHE as FEATURES  # noqa: E402
from bench.runner import RunSpec, domain_of  # noqa: E402
from bench.smoke import SmokeRun, smoke_overrides  # noqa: E402
from bench.smoke_config import SmokeConfig  # noqa: E402
from bench.smoke_report import duration  # noqa: E402

from probe_perf import PerfConfig, measure_speed  # noqa: E402

GLAS = REPO.parent / "shared" / "data" / "GlaS"
PRECISIONS = ("fp32", "bf16+cl")


@dataclass(frozen=True)
class CheckConfig:
    preset: str = "paper"
    methods: tuple[str, ...] = ("unet", "unetpp", "attunet", "swin_unetr", "uctransnet", "medt",
                                "swav", "swavw2", "mae", "maskdm", "mdm", "ddpm")
    # the first step warms up; training batches capped at 8 a GPU (the paper's 128-image MDM
    # batch at 256 px does not fit one 141 GB GPU in fp32), so s/step is at batch <= 8
    smoke: SmokeConfig = SmokeConfig(steps=5, batch=8, probe_ensemble=None)
    probe_dim: int = 1728                        # MDM medical: decoder blocks 8-12 at t = 50
    probe_batch: int = 65536
    probe_classes: int = 2
    probe_timed: int = 5
    budget_s: float = 420.0                      # leaves a minute of the 8 for start-up and the probe
    speedup_goal: float = 1.5
    ensemble_goal: float = 4.0


QUICK = CheckConfig(preset="tiny", methods=("ddpm", "unet"),
                    smoke=SmokeConfig(steps=2, batch=None, probe_ensemble=None),
                    probe_dim=64, probe_batch=512, probe_timed=2)


def _dataset() -> tuple[str, str | None]:
    return ("glas", str(GLAS)) if GLAS.is_dir() else ("synthetic-glands", None)


def smoke_once(method: str, cfg: CheckConfig, output: Path, fast: bool) -> dict[str, Any]:
    """One smoke run of `method` with the fast paths on or off; its record's smoke field."""
    dataset, root = _dataset()
    base = registry.get(method).resolve_config(cfg.preset)
    spec = RunSpec(dataset=dataset, root=root, fraction=1.0, method=method, seed=0, preset=cfg.preset,
                   output=str(output), params=smoke_overrides(base, domain_of(dataset), cfg.smoke),
                   smoke=SmokeRun(cfg.smoke, {}))
    FEATURES.clear()  # the other precision's features must not be reused
    with fast_paths(fast):
        path = spec.execute()
    record = json.loads(Path(path).read_text())
    return {**record["smoke"], "total_s": record["timings"]["total_s"]}


def _s_per_step(smoke: dict[str, Any], probe: bool) -> float | None:
    stages = [v for k, v in smoke["stages"].items() if v["unit"] == "step"
              and (k == "probe") == probe and not (probe is False and k == "validate")]
    return sum(v["s_per_unit"] for v in stages) if stages else None


def _free_gpu() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_method(method: str, cfg: CheckConfig, folder: Path) -> dict[str, Any]:
    """Both precisions' smoke runs; a failure of one becomes its one-line error, not the table's end."""
    row: dict[str, Any] = {"method": method}
    for precision in PRECISIONS:
        smoke, error = None, ""
        try:
            smoke = smoke_once(method, cfg, folder / precision, fast=precision != "fp32")
        except torch.cuda.OutOfMemoryError:
            error = "out of GPU memory"
        except Exception as exc:  # one method's failure must not cost the other methods' numbers
            error = one_line(exc)
        if smoke is None:
            row[precision] = {"error": error}
            _free_gpu()  # outside the except: its traceback held the failed run's tensors
            continue
        memory = smoke["peak_memory"]
        shared, own = pretrain_stages({"smoke": smoke}), run_stages({"smoke": smoke})
        row[precision] = {"train_s": _s_per_step(smoke, probe=False), "probe_s": _s_per_step(smoke, probe=True),
                          "peak_bytes": memory.get("cuda_allocated", memory["rss"]), "smoke_s": smoke["total_s"],
                          "pretrain_est_s": sum(v["full_s"] for v in shared.values()) if shared else None,
                          "run_est_s": sum(v["full_s"] for v in own.values())}
    return row


def run_check(cfg: CheckConfig, device: torch.device, methods: tuple[str, ...] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for method in methods or cfg.methods:
            if time.perf_counter() - start > cfg.budget_s:
                rows.append({"method": method, "skipped": "time budget spent"})
                continue
            rows.append(check_method(method, cfg, Path(tmp)))
            print(f"gpu_check: {method} done at {time.perf_counter() - start:.0f} s: "
                  f"{json.dumps({k: v for k, v in rows[-1].items() if k != 'method'})}",
                  file=sys.stderr, flush=True)  # a run cut short still shows what it measured
    perf = PerfConfig(members=10, num_classes=cfg.probe_classes, warmup_steps=1)
    try:
        ensemble = measure_speed(perf, cfg.probe_dim, cfg.probe_batch, cfg.probe_timed, device)
    except Exception as exc:  # a GPU left broken by a method must not cost the table
        ensemble = {"error": one_line(exc)}
    return {"device": str(device), "preset": cfg.preset, "dataset": _dataset()[0], "rows": rows,
            "ensemble": ensemble, "seconds": time.perf_counter() - start}


def _ratio(row: dict[str, Any], key: str) -> str:
    a, b = row.get("fp32", {}).get(key), row.get("bf16+cl", {}).get(key)
    return f"{a / b:.2f}x" if a and b else "-"


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


def render(result: dict[str, Any], cfg: CheckConfig) -> str:
    lines = [f"gpu check on {result['device']}, preset {result['preset']}, {result['dataset']}: "
             f"s/step at training batch <= {cfg.smoke.batch} (pre-training, or the trainer's step for supervised baselines; probe)",
             "| method | pretrain fp32 | pretrain bf16+cl | speed-up | probe fp32 | probe bf16+cl | speed-up "
             "| peak GiB (bf16+cl) | est. pre-training (bf16+cl) | est. run (bf16+cl) | smoke s (bf16+cl) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        if "skipped" in row:
            lines.append(f"| {row['method']} | skipped: {row['skipped']} |" + " |" * 9)
            continue
        fp, bf = row["fp32"], row["bf16+cl"]
        err = fp.get("error") or bf.get("error")
        lines.append(" | ".join([
            f"| {row['method']}", _num(fp.get("train_s")), _num(bf.get("train_s")), _ratio(row, "train_s"),
            _num(fp.get("probe_s")), _num(bf.get("probe_s")), _ratio(row, "probe_s"),
            _num(bf["peak_bytes"] / 2**30, "{:.1f}") if "peak_bytes" in bf else "-",
            _duration(bf.get("pretrain_est_s")), _duration(bf.get("run_est_s")),
            (_num(bf.get("smoke_s"), "{:.0f}") + (f" ({err})" if err else "")) + " |"]))
    e = result["ensemble"]
    if "error" in e:
        return "\n".join(lines + ["", f"ensemble probe: {e['error']}"]) + "\n"
    lines += ["", f"ensemble probe (10 members, dim {cfg.probe_dim}, batch {cfg.probe_batch}): "
              f"{e['speedup']:.2f}x against 10 separate modules (goal {cfg.ensemble_goal:g}x), "
              f"ceiling {e['ceiling']:.2f}x",
              f"goal bf16+cl >= {cfg.speedup_goal:g}x fp32; total {result['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda (default when there is one) or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny preset, two methods, two steps")
    parser.add_argument("--methods", help="comma-separated subset, e.g. ddpm,unet")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--budget-s", type=float, help="seconds after which no further method starts "
                        f"(default {CheckConfig.budget_s:g})")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here; use --device cpu --quick")
    import os

    os.environ["BENCH_DEVICE"] = str(device)  # the runs pick it up through bench.device.pick_device
    cfg = QUICK if args.quick else CheckConfig()
    if args.budget_s is not None:
        cfg = dataclasses.replace(cfg, budget_s=args.budget_s)
    methods = tuple(args.methods.split(",")) if args.methods else None
    result = run_check(cfg, device, methods)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(render(result, cfg), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
