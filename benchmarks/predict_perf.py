"""Prediction speed of the pixel-probe ensemble: projected path against two dense ones.

Why: prediction was the most expensive stage of every SSL run, because the dense path
upsamples every feature channel to every output pixel and runs the whole MLP there. The
projected path (bench.probe.predict) runs the first layer at the maps' native resolution and
upsamples its outputs. Its dense path (the test oracle) walks the output in row chunks of
bounded memory, slower than what a user would write; the plain dense reference here is that:
`F.interpolate` of every map to the window once, then each member's MLP (`EnsembleMLP.member`)
on all of its pixels. This times the three, interleaved, on synthetic maps of two real shapes:

- medical: MDM decoder blocks 8-12 at t = 50 of the 192-channel guided-diffusion UNet on
  256-px windows (384 ch at 64^2 x 3, 384 at 128^2, 192 at 128^2: 1,728 dims, 2 classes),
  the windows of a 775 x 522 GlaS image at overlap 0.2;
- ffhq34: ddpm-segmentation's FFHQ-34 probe input (blocks {5,6,7,8,12} x 3 timesteps of the
  256-channel UNet: 8,448 dims, 34 classes) on 256 x 256 images;

and prints predicted pixels/s of each path, the projected path's speed-up over each dense one,
the ratio of their multiply-adds (the layers after the first run at full resolution in both;
the speed ratio can pass it, because the dense paths' upsampling of every channel costs memory
traffic the count leaves out) and the agreement of the majority votes (fp32), with the ensemble
of 10 members the protocol uses. The projected path predicts a round's windows in one call, as
a run does (`predict_window_votes`). Floors: against the plain reference, 5x (medical) and 10x
(FFHQ-34), votes >= 99.99% equal.

    python benchmarks/predict_perf.py [--quick] [--shapes medical,ffhq34] [--rounds N] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.device import pick_device  # noqa: E402
from bench.probe import ProbeConfig  # noqa: E402
from bench.probe.mlp import EnsembleMLP  # noqa: E402
from bench.probe.predict import predict_votes, predict_window_votes  # noqa: E402
from bench.windows import window_grid  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    channels: tuple[int, ...]    # per feature map
    sizes: tuple[int, ...]       # native side of each map
    window: int                  # output side of one predicted window
    num_classes: int
    image_hw: tuple[int, int]    # the image whose windows are predicted
    overlap: float = 0.0
    goal: float = 1.0            # the floor on the projected / dense ratio (on a GPU)
    plain_goal: float = 1.0      # the floor on the projected / plain dense ratio


SHAPES = (
    Shape("medical", (384, 384, 384, 384, 192), (64, 64, 64, 128, 128), 256, 2, (522, 775), 0.2, 5.0, 5.0),
    Shape("ffhq34", (1024, 512, 512, 512, 256) * 3, (32, 32, 32, 64, 128) * 3, 256, 34,
          (256, 256), 0.0, 15.0, 10.0),
)
AGREEMENT_GOAL = 0.9999


@dataclass(frozen=True)
class PerfConfig:
    members: int = 10
    dense_windows: int = 2       # timed windows per path and round
    projected_windows: int = 2   # predicted in one call
    plain_windows: int = 1       # the plain reference's memory is every channel at full size
    rounds: int = 3              # interleaved rounds (median reported)
    init_std: float = 0.02       # the protocol's probe initialisation


QUICK = PerfConfig(dense_windows=1, projected_windows=1, plain_windows=1, rounds=1)


def _probe(shape: Shape, cfg: PerfConfig, device: torch.device) -> EnsembleMLP:
    hidden = ProbeConfig().hidden_sizes(shape.num_classes)
    gens = [torch.Generator().manual_seed(k) for k in range(cfg.members)]
    probe = EnsembleMLP(cfg.members, sum(shape.channels), shape.num_classes, hidden,
                        init_std=cfg.init_std, generators=gens)
    return probe.to(device).eval()


def _window_maps(shape: Shape, seed: int, device: torch.device) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(c, s, s, generator=gen).half().to(device)
            for c, s in zip(shape.channels, shape.sizes)]


def _timed(run: Callable[[], None], device: torch.device) -> float:
    return _timed_both(run, device)[0]


def _timed_both(run: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """Wall and process CPU seconds of `run` (on a GPU, its queued work waited for)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), time.process_time()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - start_cpu


def flop_ratio(shape: Shape) -> float:
    """Dense / projected multiply-adds of the whole MLP per output pixel (layers after the
    first run at full resolution in both paths); upsampling is not counted."""
    sizes = [*ProbeConfig().hidden_sizes(shape.num_classes), shape.num_classes]
    rest = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    native = sum(c * (s / shape.window) ** 2 for c, s in zip(shape.channels, shape.sizes))
    return (sum(shape.channels) * sizes[0] + rest) / (native * sizes[0] + rest)


@torch.no_grad()
def plain_dense_votes(members: list[nn.Module], maps: list[Tensor], out_hw: tuple[int, int],
                      scale: float, classes: int) -> Tensor:
    """The plain dense reference: every map upsampled to the window once (`F.interpolate`), then
    each member's MLP on all pixels; (C, H, W) vote fractions on the host."""
    device = next(members[0].parameters()).device
    up = torch.cat([F.interpolate(m[None].to(device, torch.float32), size=out_hw, mode="bilinear",
                                  align_corners=False)[0] for m in maps])
    pixels = up.flatten(1).T.mul_(scale)  # (H * W, D)
    votes = torch.zeros(classes, pixels.shape[0], device=device)
    every = torch.arange(pixels.shape[0], device=device)
    for member in members:
        votes.index_put_((member(pixels).argmax(-1), every), torch.ones((), device=device), accumulate=True)
    return votes.div_(len(members)).view(classes, *out_hw).cpu()


def measure(shape: Shape, cfg: PerfConfig, device: torch.device) -> dict[str, float]:
    """Pixels/s of the three paths (median over interleaved rounds) and their vote agreement."""
    probe = _probe(shape, cfg, device)
    members = [probe.member(k).eval().to(device) for k in range(cfg.members)]
    out_hw = (shape.window, shape.window)
    windows = len(window_grid(shape.image_hw, shape.window, shape.overlap))
    scale = 1.0 / 64.0
    per_window = shape.window * shape.window
    secs: dict[str, list[float]] = {"dense": [], "projected": [], "plain": []}
    cpu: dict[str, list[float]] = {"dense": [], "projected": [], "plain": []}
    agree = {"dense": [0, 0], "plain": [0, 0]}
    for r in range(cfg.rounds):
        count = max(cfg.dense_windows, cfg.projected_windows, cfg.plain_windows)
        maps = [_window_maps(shape, 100 * r + i, device) for i in range(count)]
        votes: dict[str, list[Tensor]] = {}

        def run(path: str, n: int) -> None:
            if path == "projected":
                votes[path] = list(predict_window_votes(probe, maps[:n], out_hw, [scale] * n))
            elif path == "dense":
                votes[path] = [predict_votes(probe, maps[i], out_hw, scale, path="dense") for i in range(n)]
            else:
                votes[path] = [plain_dense_votes(members, maps[i], out_hw, scale, shape.num_classes)
                               for i in range(n)]

        predict_votes(probe, maps[0], out_hw, scale)  # warm-up of the projected path
        for path, n in (("projected", cfg.projected_windows), ("dense", cfg.dense_windows),
                        ("plain", cfg.plain_windows)):
            wall, own = _timed_both(lambda: run(path, n), device)
            secs[path].append(wall / n)
            cpu[path].append(own / n)
        for path in ("dense", "plain"):
            for want, got in zip(votes[path], votes["projected"]):
                agree[path][0] += int((want.argmax(0) == got.argmax(0)).sum())
                agree[path][1] += want[0].numel()
    dense, proj, plain = (statistics.median(secs[p]) for p in ("dense", "projected", "plain"))
    dense_cpu, proj_cpu, plain_cpu = (statistics.median(cpu[p]) for p in ("dense", "projected", "plain"))
    return {"dim": sum(shape.channels), "classes": shape.num_classes, "windows_per_image": windows,
            "dense_px_s": per_window / dense, "projected_px_s": per_window / proj,
            "plain_px_s": per_window / plain, "ratio": dense / proj, "plain_ratio": plain / proj,
            "flop_ratio": flop_ratio(shape), "agreement": agree["dense"][0] / agree["dense"][1],
            "plain_agreement": agree["plain"][0] / agree["plain"][1], "goal": shape.goal,
            "plain_goal": shape.plain_goal, "dense_image_s": dense * windows,
            "projected_image_s": proj * windows, "plain_image_s": plain * windows,
            "cpu_ratio": dense_cpu / proj_cpu, "plain_cpu_ratio": plain_cpu / proj_cpu}


def run_predict_perf(quick: bool = False, cfg: PerfConfig | None = None,
                     shapes: tuple[Shape, ...] = SHAPES) -> dict:
    cfg = cfg or (QUICK if quick else PerfConfig())
    device = pick_device()
    torch.manual_seed(0)
    rows = {s.name: measure(s, cfg, device) for s in shapes}
    # One thread on a CPU: the process's CPU seconds are its own work, steadier than the wall
    # clock on a machine shared with other jobs; otherwise the wall clock.
    basis = "plain_cpu_ratio" if device.type == "cpu" and torch.get_num_threads() == 1 else "plain_ratio"
    goals = {name: {"plain_ratio": r[basis] >= r["plain_goal"],
                    "agreement": min(r["agreement"], r["plain_agreement"]) >= AGREEMENT_GOAL}
             for name, r in rows.items()}
    return {"device": str(device), "threads": torch.get_num_threads(), "config": asdict(cfg),
            "load": os.getloadavg(), "shapes": rows, "goals": goals, "goal_basis": basis}


def print_report(result: dict) -> None:
    print(f"prediction, {result['config']['members']} members, device {result['device']}, "
          f"{result['threads']} threads, load {result['load'][0]:.1f}")
    print(f"{'shape':>8} {'dims':>5} {'plain px/s':>11} {'dense px/s':>11} {'projected px/s':>15} "
          f"{'vs plain':>9} {'goal':>5} {'vs dense':>9} {'goal':>5} {'FLOPs':>6} {'votes agree':>20} "
          f"{'image s (plain, dense -> projected)':>36}")
    for name, r in result["shapes"].items():
        print(f"{name:>8} {r['dim']:>5} {r['plain_px_s']:>11,.0f} {r['dense_px_s']:>11,.0f} "
              f"{r['projected_px_s']:>15,.0f} {r['plain_ratio']:>8.1f}x {r['plain_goal']:>4.0f}x "
              f"{r['ratio']:>8.1f}x {r['goal']:>4.0f}x {r['flop_ratio']:>5.1f}x "
              f"{100 * r['plain_agreement']:>9.4f}% {100 * r['agreement']:>9.4f}% "
              f"{r['plain_image_s']:>14.2f}, {r['dense_image_s']:.2f} -> {r['projected_image_s']:.2f}")
    for name, r in result["shapes"].items():
        print(f"{name:>8} in process CPU seconds: {r['plain_cpu_ratio']:.1f}x plain, {r['cpu_ratio']:.1f}x dense")
    print(f"votes agree: projected against plain, against dense; goals ({result['goal_basis']}, agreement >= "
          f"{100 * AGREEMENT_GOAL:g}%): {json.dumps(result['goals'])}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one window per path, one round")
    parser.add_argument("--shapes", help="comma-separated subset of " + ",".join(s.name for s in SHAPES))
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default: 3, --quick 1)")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = QUICK if args.quick else PerfConfig()
    if args.rounds:
        cfg = replace(cfg, rounds=args.rounds)
    names = args.shapes.split(",") if args.shapes else [s.name for s in SHAPES]
    unknown = sorted(set(names) - {s.name for s in SHAPES})
    if unknown:
        parser.error(f"--shapes: unknown {', '.join(unknown)} (known: {', '.join(s.name for s in SHAPES)})")
    result = run_predict_perf(cfg=cfg, shapes=tuple(s for s in SHAPES if s.name in names))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print_report(result)


if __name__ == "__main__":
    main()
