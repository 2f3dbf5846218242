"""Memory and speed of the shared pixel probe on FFHQ-34 DDPM feature shapes.

Why: the reference probe stores every upsampled pixel feature of the training set in float32
(44.3 GB for FFHQ-34) and trains its 10 MLPs one after another. This measures, in one run on
synthetic features of the real shapes, (a) the peak resident memory of our data path (filling a
`FeatureBank` with native-size maps, then gathering training batches) against that dense
figure, computed arithmetically and never allocated, (b) training pixels/s of the batched
10-member `EnsembleMLP` against 10 separate nn.Sequential modules fed the same batches, on the
GPU where there is one (`BENCH_DEVICE` picks), with the ceiling batching could reach there, and
(c) the small preset's probe training (`bench.ssl.SMALL_PROBE` on the small MDM's read-out of
128-px windows), `train_probe` against the training before it moved to the run's device
(benchmarks/probe_legacy.py), side by side in one process on the CPU: ratio = previous time /
new time, in wall and in process CPU seconds (goal >= 0.95 for both; `--threads 1` on a shared
machine), and whether both trained the same weights.

    python benchmarks/probe_perf.py [--quick] [--threads N] [--json out.json] [--only training]

Importable: run_probe_perf(quick=False) -> dict.
"""
from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # uninstalled

import probe_legacy  # noqa: E402

from bench import registry  # noqa: E402
from bench.device import pick_device, retained_memory  # noqa: E402
from bench.probe import ProbeConfig, accumulate_grads, make_optimizer, train_probe  # noqa: E402
from bench.probe.bank import FeatureBank  # noqa: E402
from bench.probe.mlp import EnsembleMLP  # noqa: E402
from bench.probe.sampler import PixelStreams, member_generators  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class PerfConfig:
    """FFHQ-34 with the ddpm-segmentation FFHQ UNet: blocks {5,6,7,8,12} at 3 timesteps."""

    images: int = 20
    image_size: int = 256
    timesteps: int = 3
    block_channels: tuple[int, ...] = (1024, 512, 512, 512, 256)
    block_sizes: tuple[int, ...] = (32, 32, 32, 64, 128)
    num_classes: int = 34
    members: int = 10
    batches: tuple[int, ...] = (64, 4096)
    timed_steps: tuple[int, ...] = (30, 2)  # per batch size, for each of the three trainers
    warmup_steps: int = 1
    gather_steps: int = 30
    memory_goal_bytes: int = 2 * GIB
    ratio_goal: float = 20.0
    speedup_goal: float = 4.0


QUICK = PerfConfig(images=3, batches=(64, 512), timed_steps=(10, 2), gather_steps=5)


@dataclass(frozen=True)
class TrainConfig:
    """The small preset's probe (its numbers come from bench.ssl.SMALL_PROBE) on synthetic maps
    of the small MDM's read-out shape, for a few capped epochs of each stopping rule."""

    method: str = "mdm"
    images: int = 160             # windows in the bank (the small GlaS training bank: about 340)
    distinct: int = 8             # distinct random map sets, cycled (values do not change timings)
    classes: int = 2
    epochs: int = 2               # per training (capped: each epoch is the same work)
    natural_pixels: int = 32768   # per epoch under the natural rule (64-pixel steps)
    medical_pixels: int | None = None  # per epoch under the loss-plateau rule (None: the preset's)
    rounds: int = 7               # interleaved (previous, new) pairs; medians reported
    ratio_goal: float = 0.95


QUICK_TRAIN = TrainConfig(images=16, distinct=2, epochs=1, natural_pixels=1024, rounds=2)


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]


def _reset_peak() -> bool:
    """Reset the kernel's resident high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _maps(cfg: PerfConfig, gen: torch.Generator) -> list[torch.Tensor]:
    """What the backbone hands over for one image: float32 maps at native resolution."""
    return [torch.randn(c, s, s, generator=gen)
            for _ in range(cfg.timesteps) for c, s in zip(cfg.block_channels, cfg.block_sizes)]


def measure_memory(cfg: PerfConfig, reserve: bool) -> dict[str, float]:
    """Peak RSS growth while filling a bank and gathering training batches from it.

    Runs in a fresh process: memory a previous measurement freed may stay in this process's
    heap and would hide (or, reused, understate) the next one's growth.
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_memory_in_this_process, cfg, reserve,
                           torch.get_num_threads()).result()


def _memory_in_this_process(cfg: PerfConfig, reserve: bool, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    gc.collect()
    exact = _reset_peak()
    base = _status_kib("VmRSS") * 1024
    gen = torch.Generator().manual_seed(0)
    bank = FeatureBank(reserve_images=cfg.images if reserve else 0)
    start = time.perf_counter()
    for _ in range(cfg.images):
        labels = torch.randint(0, cfg.num_classes, (cfg.image_size,) * 2, generator=gen)
        bank.add(_maps(cfg, gen), labels)
    fill_s = time.perf_counter() - start
    gather = {}
    step_bytes = ProbeConfig().step_bytes
    for batch in cfg.batches:
        streams = PixelStreams(bank.labelled_pixels(255), member_generators(0, cfg.members), batch)
        streams.start_epoch()
        per_group = max(1, step_bytes // (batch * bank.dim * 4))  # as train_probe groups members
        start = time.perf_counter()
        for step in range(cfg.gather_steps):
            flat = streams.batch_pixels(step)
            for lo in range(0, cfg.members, per_group):
                feats, _ = bank.gather_flat(flat[lo:lo + per_group])
                del feats
        gather[batch] = cfg.gather_steps * flat.numel() / (time.perf_counter() - start)
        del streams
    peak = _status_kib("VmHWM") * 1024 - base
    dense = cfg.images * cfg.image_size**2 * bank.dim * 4
    out = {"dim": bank.dim, "bank_bytes": bank.nbytes, "peak_bytes": peak, "dense_bytes": dense,
           "ratio": dense / peak, "fill_s": fill_s, "peak_is_exact": exact,
           **{f"gather_px_s_{b}": v for b, v in gather.items()}}
    return out


def _interleaved(steps: dict[str, Callable[[], None]], warmup: int, timed: int,
                 device: torch.device) -> dict[str, float]:
    """Median seconds per call of each step, alternating them so machine noise hits all alike."""
    def sync() -> None:  # a GPU step has ended when its kernels have, not when it returns
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(timed):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _floor_step(x: Tensor, model: EnsembleMLP, probe: ProbeConfig) -> Callable[[], None]:
    """The part of a batched step no implementation can skip, into reused memory.

    That is the first layer's forward product and weight gradient (over 98% of the probe's
    FLOPs; no input gradient is needed) and one fused Adam pass over every parameter. Its time
    bounds what batching can buy on this machine: separate time / floor time is the largest
    speedup any batched ensemble could show here.
    """
    w = model.weights[0].detach()
    h = x.new_empty(x.shape[0], x.shape[1], w.shape[2])
    grad_h, grad_w = torch.randn_like(h), torch.empty_like(w)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt = make_optimizer(model, probe)

    def run() -> None:
        torch.bmm(x, w, out=h)
        torch.bmm(x.transpose(1, 2), grad_h, out=grad_w)
        opt.step()
    return run


def measure_speed(cfg: PerfConfig, dim: int, batch: int, timed: int,
                  device: torch.device | None = None) -> dict[str, float]:
    """Pixels/s of one optimisation step of all members, four ways on the same batches.

    ensemble: our batched module with `make_optimizer` (fused Adam over stacked weights);
    separate: K nn.Sequential modules in turn, each with its own plain Adam (the reference);
    separate_fused: the same with fused Adam, to isolate what batching alone buys;
    floor: the unavoidable work of a batched step (see `_floor_step`), for the ceiling.
    """
    device = device or torch.device("cpu")
    probe = ProbeConfig()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(cfg.members, batch, dim, generator=gen).to(device)
    y = torch.randint(0, cfg.num_classes, (cfg.members, batch), generator=gen).to(device)

    def new_ensemble() -> EnsembleMLP:
        return EnsembleMLP(cfg.members, dim, cfg.num_classes, probe.hidden_sizes(cfg.num_classes),
                           probe.init_std, generators=member_generators(0, cfg.members)
                           ).train().to(device)
    ensemble = new_ensemble()
    opt = make_optimizer(ensemble, probe)

    def batched() -> None:
        opt.zero_grad(set_to_none=True)
        accumulate_grads(ensemble, x, y)
        opt.step()

    def one_by_one(fused: bool) -> Callable[[], None]:
        modules = [ensemble.member(k).train().to(device) for k in range(cfg.members)]
        opts = [torch.optim.Adam(m.parameters(), lr=probe.lr, fused=fused) for m in modules]

        def run() -> None:
            for k, (module, module_opt) in enumerate(zip(modules, opts)):
                module_opt.zero_grad(set_to_none=True)
                F.cross_entropy(module(x[k]), y[k]).backward()
                module_opt.step()
        return run

    secs = _interleaved({"ensemble": batched, "separate": one_by_one(False),
                         "separate_fused": one_by_one(True),
                         "floor": _floor_step(x, new_ensemble(), probe)},
                        cfg.warmup_steps, timed, device)
    pixels = cfg.members * batch
    return {"batch": batch, "device": str(device),
            **{f"{name}_px_s": pixels / t for name, t in secs.items()},
            "speedup": secs["separate"] / secs["ensemble"],
            "speedup_vs_fused": secs["separate_fused"] / secs["ensemble"],
            "ceiling": secs["separate"] / secs["floor"]}


def _small_shapes(method: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The small preset's window and its read-out map shapes (C, h, w), from the real backbone."""
    cls = registry.get(method)
    model = cls(cls.presets["small"])
    backbone = model.build_model().eval()
    w = model.cfg.window
    with torch.no_grad():
        maps = model.extract(backbone, torch.rand(1, 3, w, w), "medical")
    return w, [tuple(int(v) for v in m.shape[1:]) for m in maps]  # type: ignore[misc]


def measure_training(cfg: TrainConfig) -> dict[str, object]:
    """Seconds of `train_probe` and of the previous training on equal banks, interleaved."""
    from bench.ssl import SMALL_PROBE

    window, shapes = _small_shapes(cfg.method)
    gen = torch.Generator().manual_seed(0)
    sets = [[torch.randn(*shape, generator=gen).half() for shape in shapes] for _ in range(cfg.distinct)]
    new, old = FeatureBank(), probe_legacy.LegacyBank()
    for i in range(cfg.images):
        labels = torch.randint(0, cfg.classes, (window, window), generator=gen).numpy().astype("uint8")
        new.add(sets[i % cfg.distinct], labels)
        old.add(sets[i % cfg.distinct], labels)
    small = dict(ensemble=SMALL_PROBE["probe_ensemble"], max_epochs=cfg.epochs)
    rules = {"loss_plateau": ProbeConfig(**small, stop_rule="loss_plateau",  # type: ignore[arg-type]
                                         batch_pixels=SMALL_PROBE["probe_batch_medical"],
                                         patience=SMALL_PROBE["probe_patience_medical"],
                                         pixels_per_epoch=cfg.medical_pixels or SMALL_PROBE["probe_pixels_per_epoch"]),
             # warm-up off: every epoch with the natural rule's per-step bookkeeping
             "natural": ProbeConfig(**small, stop_rule="natural", warmup_epochs=0,  # type: ignore[arg-type]
                                    pixels_per_epoch=cfg.natural_pixels)}
    out: dict[str, object] = {"dim": new.dim, "images": cfg.images, "shapes": shapes}
    for rule, probe in rules.items():
        runs = {"previous": lambda: probe_legacy.train_probe(old, cfg.classes, probe, seed=0),
                "new": lambda: train_probe(new, cfg.classes, probe, seed=0)}
        models = {name: run() for name, run in runs.items()}  # warm-up; the new bank consolidates
        same = all(torch.equal(a, b) for a, b in zip(models["previous"].state_dict().values(),
                                                     models["new"].state_dict().values()))
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(cfg.rounds):
            for name, run in runs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                run()
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        med = {name: statistics.median(t) for name, t in wall.items()}
        med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
        out[rule] = {"batch": probe.batch_pixels, "steps_per_epoch": -(-int(probe.pixels_per_epoch or 0) // probe.batch_pixels),
                     "epochs": cfg.epochs, "previous_s": med["previous"], "new_s": med["new"],
                     "ratio": med["previous"] / med["new"], "previous_cpu_s": med_cpu["previous"],
                     "new_cpu_s": med_cpu["new"], "cpu_ratio": med_cpu["previous"] / med_cpu["new"],
                     "paired_ratio": statistics.median(a / b for a, b in zip(wall["previous"], wall["new"])),
                     "same_weights": same, "wall_s": wall, "cpu_s": cpu}
    return out


def run_probe_perf(quick: bool = False, cfg: PerfConfig | None = None,
                   threads: int | None = None, train: TrainConfig | None = None,
                   only: str | None = None) -> dict:
    """Run the measurements; returns the numbers and whether each goal was met.

    `threads` pins torch's intra-op threads (1 gives stable timings on a shared machine);
    `only="training"` runs only the side-by-side training.
    """
    cfg = cfg or (QUICK if quick else PerfConfig())
    train = train or (QUICK_TRAIN if quick else TrainConfig())
    if threads:
        torch.set_num_threads(threads)
    result: dict = {"config": asdict(cfg), "train_config": asdict(train), "threads": torch.get_num_threads(),
                    "load": os.getloadavg()}
    with retained_memory():  # as a run's probe trains (bench.ssl)
        training = measure_training(train)
    result["training"] = training
    # On a shared machine the wall clock also measures the neighbours: with one thread, the
    # process's CPU seconds are the steadier figure, and the goal is checked on both.
    result["goals"] = {f"training_{rule}_ratio_at_least": min(training[rule]["ratio"], training[rule]["cpu_ratio"])  # type: ignore[index]
                       >= train.ratio_goal for rule in ("loss_plateau", "natural")}
    if only == "training":
        return result
    memory = {name: measure_memory(cfg, reserve) for name, reserve in
              (("default", False), ("reserved", True))}
    dim = memory["default"]["dim"]
    device = pick_device()  # BENCH_DEVICE=cpu measures the CPU on a GPU machine
    with retained_memory():  # as a run's probe trains (bench.ssl); its bank is filled outside
        speed = [measure_speed(cfg, dim, b, s, device) for b, s in zip(cfg.batches, cfg.timed_steps)]
    worst_peak = max(m["peak_bytes"] for m in memory.values())
    worst_ratio = min(m["ratio"] for m in memory.values())
    result.update(memory=memory, speed=speed)
    result["goals"].update({
        "peak_within_budget": worst_peak <= cfg.memory_goal_bytes,
        "ratio_at_least": worst_ratio >= cfg.ratio_goal,
        "speedup_at_least": {s["batch"]: s["speedup"] >= cfg.speedup_goal for s in speed}})
    return result


def print_training(result: dict) -> None:
    t = result["training"]
    print(f"small-preset probe training, {t['images']} windows of {t['shapes']} ({t['dim']} dims), CPU, "
          f"{result['threads']} threads, load {result['load'][0]:.1f}: previous -> new, median of "
          f"{result['train_config']['rounds']} interleaved runs")
    for rule in ("loss_plateau", "natural"):
        r = t[rule]
        print(f"{rule:>13}: batch {r['batch']}, {r['steps_per_epoch']} steps x {r['epochs']} epochs: "
              f"wall {r['previous_s']:.2f} s -> {r['new_s']:.2f} s, ratio {r['ratio']:.2f}; CPU "
              f"{r['previous_cpu_s']:.2f} s -> {r['new_cpu_s']:.2f} s, ratio {r['cpu_ratio']:.2f} "
              f"(goal >= {result['train_config']['ratio_goal']}); same weights: {r['same_weights']}")


def print_report(result: dict) -> None:
    print_training(result)
    if "memory" not in result:
        print("goals:", json.dumps(result["goals"]))
        return
    cfg = result["config"]
    print(f"probe_perf: {cfg['images']} images {cfg['image_size']}px, feature dim "
          f"{result['memory']['default']['dim']}, {cfg['members']} members, "
          f"{result['threads']} threads, load {result['load'][0]:.1f}, speed on "
          f"{result['speed'][0]['device']}")
    print(f"{'bank':>10} {'stored GiB':>11} {'peak GiB':>9} {'dense GiB':>10} {'ratio':>7} "
          f"{'fill s':>7}  gather px/s by batch")
    for name, m in result["memory"].items():
        rates = ", ".join(f"{k.removeprefix('gather_px_s_')}: {v:,.0f}"
                          for k, v in m.items() if k.startswith("gather"))
        print(f"{name:>10} {m['bank_bytes'] / GIB:11.3f} {m['peak_bytes'] / GIB:9.3f} "
              f"{m['dense_bytes'] / GIB:10.1f} {m['ratio']:6.1f}x {m['fill_s']:7.1f}  {rates}")
    print(f"{'batch':>10} {'ensemble px/s':>14} {'separate px/s':>14} {'speedup':>8} "
          f"{'sep+fused px/s':>15} {'speedup':>8} {'ceiling':>8}")
    for s in result["speed"]:
        print(f"{s['batch']:>10} {s['ensemble_px_s']:14,.0f} {s['separate_px_s']:14,.0f} "
              f"{s['speedup']:7.2f}x {s['separate_fused_px_s']:15,.0f} "
              f"{s['speedup_vs_fused']:7.2f}x {s['ceiling']:7.2f}x")
    print("ceiling: separate time over the floor of a batched step (first-layer product and "
          "weight gradient, fused Adam), the largest speedup batching could show here")
    print("goals:", json.dumps(result["goals"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 images, small batches, few steps")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--only", choices=["training"], help="only the side-by-side probe training")
    args = parser.parse_args(argv)
    result = run_probe_perf(quick=args.quick, threads=args.threads, only=args.only)
    if args.json:  # first: a measurement of minutes is kept even if printing fails
        args.json.write_text(json.dumps(result, indent=2))
    print_report(result)


if __name__ == "__main__":
    main()
