"""What only a GPU can show, in one table: per method, the paper preset's step times in fp32 and in
bf16 + channels_last, peak GPU memory, the smoke run on the GPU, and the ensemble probe speed-up.

For every method this runs its smoke run (`bench run --smoke`: real shapes, a few steps) twice,
with the GPU fast paths off (fp32) and on (bf16 autocast + channels_last, bench's default on a
GPU; "fp32" is PyTorch's default, which lets cuDNN convolutions use TF32), and reads each stage's
seconds per step from the smoke record: pre-training (the supervised trainer's step for
baselines) and the probe, with the record's estimates of the full pre-training and run.
Training batches are capped at 8 (see CheckConfig.smoke). The 10-member ensemble probe against
10 separate modules is benchmarks/probe_perf.py's speed half at the MDM medical probe's shape;
its ensemble step is the MLP arithmetic that MDM's probe step is set against. After the table:
host synchronisations of a probe training on the GPU, counted by CUDA's sync debug mode (bank
on the device, natural rule past warm-up: goal 0 a step; 1 an epoch by design), and benchmarks/predict_perf.py
on its two shapes (one round). Goals: bf16 >= 1.5x fp32, ensemble >= 4x, MDM's probe step
<= 3x its MLP arithmetic, every SSL method's estimated run <= its pre-training, prediction >= 5x
(medical) and >= 15x (FFHQ-34) the dense path. Budget: 8 minutes on one GPU (methods left when
the budget is spent are listed as skipped).

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
from predict_perf import SHAPES as PREDICT_SHAPES, PerfConfig as PredictConfig, Shape, measure as measure_predict  # noqa: E402

from bench import registry  # noqa: E402
from bench.device import fast_paths, pick_device  # noqa: E402
from bench.errors import one_line  # noqa: E402
from bench.probe.feature_cache import CACHE as FEATURES  # noqa: E402
from bench.runner import RunSpec, domain_of  # noqa: E402
from bench.smoke import SmokeConfig  # noqa: E402
from bench.smoke.estimates import pretrain_stages, run_stages  # noqa: E402
from bench.smoke.report import duration  # noqa: E402
from bench.smoke.run import SmokeRun, smoke_overrides  # noqa: E402

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
    probe_step_goal: float = 3.0                 # MDM's probe step over its MLP arithmetic
    sync_shape: tuple[tuple[int, int, int], ...] = ((384, 64, 64),) * 3 + ((384, 128, 128), (192, 128, 128))
    sync_images: int = 4
    sync_window: int = 256
    predict_shapes: tuple[Shape, ...] = PREDICT_SHAPES
    predict: PredictConfig = PredictConfig(dense_windows=1, projected_windows=8, plain_windows=1, rounds=1)


QUICK = CheckConfig(preset="tiny", methods=("ddpm", "unet"), smoke=SmokeConfig(steps=2, batch=None, probe_ensemble=None),
                    probe_dim=64, probe_batch=512, probe_timed=2,
                    sync_shape=((8, 4, 4), (4, 8, 8)), sync_images=2, sync_window=16,
                    predict_shapes=(Shape("toy", (6, 4), (8, 16), 32, 3, (40, 50), 0.2, 1.0, 1.0),),
                    predict=PredictConfig(dense_windows=1, projected_windows=2, plain_windows=1, rounds=1))


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


def probe_syncs(cfg: CheckConfig, device: torch.device) -> dict[str, Any]:
    """Host synchronisations of a probe training on `device` (CUDA's sync debug mode warns at
    each): trainings of 1 and 2 epochs of 2 steps and of 2 epochs of 4, under the natural rule
    past warm-up, so that a step's, an epoch's and a training's own counts separate. Only a GPU
    can count them."""
    if device.type != "cuda":
        return {"skipped": "needs a GPU"}
    import warnings

    import numpy as np

    from bench.probe import FeatureBank, ProbeConfig, train_probe

    gen = torch.Generator().manual_seed(0)
    bank = FeatureBank()
    maps = [torch.randn(*shape, generator=gen).half() for shape in cfg.sync_shape]
    for _ in range(cfg.sync_images):
        labels = torch.randint(0, 2, (cfg.sync_window,) * 2, generator=gen).numpy().astype(np.uint8)
        bank.add(maps, labels)
    from bench.steptime import STEPS

    STEPS.reset(enabled=False)  # a smoke run's step clock synchronises on every step

    def syncs(epochs: int, steps: int) -> int:
        probe = ProbeConfig(ensemble=10, batch_pixels=1024, max_epochs=epochs, warmup_epochs=0,
                            pixels_per_epoch=steps * 1024)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_probe(bank, 2, probe, device=device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    syncs(1, 1)  # the bank moves to the device once
    runs = {(e, s): syncs(e, s) for e, s in ((1, 2), (2, 2), (2, 4))}
    per_step = (runs[2, 4] - runs[2, 2]) / 2 / 2
    per_epoch = runs[2, 2] - runs[1, 2] - 2 * per_step
    return {"per_step": per_step, "per_epoch": per_epoch, "runs": {f"{e}x{s}": n for (e, s), n in runs.items()},
            "resident": bank.resident}


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
    try:
        syncs = probe_syncs(cfg, device)
    except Exception as exc:
        syncs = {"error": one_line(exc)}
    predict: dict[str, Any] = {}
    for shape in cfg.predict_shapes:
        try:
            predict[shape.name] = measure_predict(shape, cfg.predict, device)
        except Exception as exc:
            predict[shape.name] = {"error": one_line(exc)}
        _free_gpu()
    return {"device": str(device), "preset": cfg.preset, "dataset": _dataset()[0], "rows": rows,
            "ensemble": ensemble, "syncs": syncs, "predict": predict, "seconds": time.perf_counter() - start}


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
    mlp_s = 10 * cfg.probe_batch / e["ensemble_px_s"]
    lines += ["", f"ensemble probe (10 members, dim {cfg.probe_dim}, batch {cfg.probe_batch}): "
              f"{e['speedup']:.2f}x against 10 separate modules (goal {cfg.ensemble_goal:g}x), "
              f"ceiling {e['ceiling']:.2f}x; its step (the MLP arithmetic) {1000 * mlp_s:.1f} ms"]
    mdm = next((r for r in result["rows"] if r["method"] == "mdm" and "bf16+cl" in r), None)
    if mdm is not None and mdm["bf16+cl"].get("probe_s"):
        probe_s = mdm["bf16+cl"]["probe_s"]
        lines.append(f"mdm probe step {probe_s:.3f} s = {probe_s / mlp_s:.1f}x its MLP arithmetic "
                     f"(goal <= {cfg.probe_step_goal:g}x)")
    within = [f"{r['method']} {'yes' if r['bf16+cl']['run_est_s'] <= r['bf16+cl']['pretrain_est_s'] else 'no'}"
              for r in result["rows"] if "bf16+cl" in r and registry.get(r["method"]).kind == "ssl"
              and r["bf16+cl"].get("run_est_s") and r["bf16+cl"].get("pretrain_est_s")]
    if within:
        lines.append("est. run <= est. pre-training (bf16+cl): " + ", ".join(within))
    syncs = result.get("syncs", {})
    if "per_step" in syncs:
        lines.append(f"probe host synchronisations (CUDA sync debug mode, bank "
                     f"{'on the device' if syncs['resident'] else 'in pinned host memory'}): "
                     f"{syncs['per_step']:g} a step (goal 0), {syncs['per_epoch']:g} an epoch")
    elif syncs:
        lines.append(f"probe host synchronisations: {syncs.get('skipped') or syncs.get('error')}")
    for name, p in result.get("predict", {}).items():
        if "error" in p:
            lines.append(f"prediction {name}: {p['error']}")
            continue
        lines.append(f"prediction {name}: projected {p['projected_px_s']:,.0f} px/s, {p['ratio']:.1f}x the "
                     f"dense path (goal {p['goal']:g}x), {p['plain_ratio']:.1f}x the plain dense reference, "
                     f"votes agree {100 * min(p['agreement'], p['plain_agreement']):.4f}%")
    lines.append(f"goal bf16+cl >= {cfg.speedup_goal:g}x fp32; total {result['seconds']:.0f} s")
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
