"""Prediction speed of the pixel-probe ensemble: projected path against the dense path.

Why: prediction was the most expensive stage of every SSL run, because the dense path
upsamples every feature channel to every output pixel and runs the whole MLP there. The
projected path (bench.probe.predict) runs the first layer at the maps' native resolution and
upsamples its outputs. This times both, interleaved, on synthetic maps of two real shapes:

- medical: MDM decoder blocks 8-12 at t = 50 of the 192-channel guided-diffusion UNet on
  256-px windows (384 ch at 64^2 x 3, 384 at 128^2, 192 at 128^2: 1,728 dims, 2 classes),
  the windows of a 775 x 522 GlaS image at overlap 0.2;
- ffhq34: ddpm-segmentation's FFHQ-34 probe input (blocks {5,6,7,8,12} x 3 timesteps of the
  256-channel UNet: 8,448 dims, 34 classes) on 256 x 256 images;

and prints predicted pixels/s of each path, their ratio, the ratio of their multiply-adds (the
layers after the first run at full resolution in both; the speed ratio can pass it, because the
dense path's upsampling of every channel costs memory traffic the count leaves out) and the
agreement of the majority votes (fp32), with the ensemble of 10 members the protocol uses.

    python benchmarks/predict_perf.py [--quick] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.device import pick_device  # noqa: E402
from bench.probe import ProbeConfig  # noqa: E402
from bench.probe.mlp import EnsembleMLP  # noqa: E402
from bench.probe.predict import Path as PredictPath, predict_votes  # noqa: E402
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
    goal: float = 1.0            # the floor on the projected / dense ratio


SHAPES = (
    Shape("medical", (384, 384, 384, 384, 192), (64, 64, 64, 128, 128), 256, 2, (522, 775), 0.2, 5.0),
    Shape("ffhq34", (1024, 512, 512, 512, 256) * 3, (32, 32, 32, 64, 128) * 3, 256, 34,
          (256, 256), 0.0, 15.0),
)


@dataclass(frozen=True)
class PerfConfig:
    members: int = 10
    dense_windows: int = 2       # timed windows per path and round
    projected_windows: int = 2
    rounds: int = 3              # interleaved rounds (median reported)
    init_std: float = 0.02       # the protocol's probe initialisation


QUICK = PerfConfig(dense_windows=1, projected_windows=1, rounds=1)


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
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def flop_ratio(shape: Shape) -> float:
    """Dense / projected multiply-adds of the whole MLP per output pixel (layers after the
    first run at full resolution in both paths); upsampling is not counted."""
    sizes = [*ProbeConfig().hidden_sizes(shape.num_classes), shape.num_classes]
    rest = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    native = sum(c * (s / shape.window) ** 2 for c, s in zip(shape.channels, shape.sizes))
    return (sum(shape.channels) * sizes[0] + rest) / (native * sizes[0] + rest)


def measure(shape: Shape, cfg: PerfConfig, device: torch.device) -> dict[str, float]:
    """Pixels/s of both paths (median over interleaved rounds) and their vote agreement."""
    probe = _probe(shape, cfg, device)
    out_hw = (shape.window, shape.window)
    windows = len(window_grid(shape.image_hw, shape.window, shape.overlap))
    scale = 1.0 / 64.0
    per_window = shape.window * shape.window
    dense_s: list[float] = []
    proj_s: list[float] = []
    agree = total = 0
    for r in range(cfg.rounds):
        maps = [_window_maps(shape, 100 * r + i, device) for i in range(cfg.dense_windows)]
        votes: dict[str, list[torch.Tensor]] = {"dense": [], "projected": []}

        def run(path: PredictPath, count: int) -> None:
            for i in range(count):
                votes[path].append(predict_votes(probe, maps[i % len(maps)], out_hw, scale, path=path))

        predict_votes(probe, maps[0], out_hw, scale)  # warm-up of the projected path
        proj_s.append(_timed(lambda: run("projected", cfg.projected_windows), device)
                      / cfg.projected_windows)
        dense_s.append(_timed(lambda: run("dense", cfg.dense_windows), device) / cfg.dense_windows)
        for d, p in zip(votes["dense"], votes["projected"]):
            agree += int((d.argmax(0) == p.argmax(0)).sum())
            total += d[0].numel()
    dense, proj = statistics.median(dense_s), statistics.median(proj_s)
    return {"dim": sum(shape.channels), "classes": shape.num_classes, "windows_per_image": windows,
            "dense_px_s": per_window / dense, "projected_px_s": per_window / proj,
            "ratio": dense / proj, "flop_ratio": flop_ratio(shape), "agreement": agree / total, "goal": shape.goal,
            "dense_image_s": dense * windows, "projected_image_s": proj * windows}


def run_predict_perf(quick: bool = False, cfg: PerfConfig | None = None,
                     shapes: tuple[Shape, ...] = SHAPES) -> dict:
    cfg = cfg or (QUICK if quick else PerfConfig())
    device = pick_device()
    torch.manual_seed(0)
    result = {"device": str(device), "threads": torch.get_num_threads(), "config": asdict(cfg),
              "shapes": {s.name: measure(s, cfg, device) for s in shapes}}
    return result


def print_report(result: dict) -> None:
    print(f"prediction, {result['config']['members']} members, device {result['device']}, "
          f"{result['threads']} threads")
    print(f"{'shape':>8} {'dims':>5} {'dense px/s':>11} {'projected px/s':>15} {'ratio':>7} "
          f"{'FLOPs':>6} {'goal':>5} {'votes agree':>12} {'image s (dense -> projected)':>30}")
    for name, r in result["shapes"].items():
        print(f"{name:>8} {r['dim']:>5} {r['dense_px_s']:>11,.0f} {r['projected_px_s']:>15,.0f} "
              f"{r['ratio']:>6.1f}x {r['flop_ratio']:>5.1f}x {r['goal']:>4.0f}x {100 * r['agreement']:>11.4f}% "
              f"{r['dense_image_s']:>14.2f} -> {r['projected_image_s']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one window per path, one round")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_predict_perf(quick=args.quick)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print_report(result)


if __name__ == "__main__":
    main()
