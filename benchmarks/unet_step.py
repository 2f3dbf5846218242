"""Time one training step of our guided-diffusion UNet against MONAI's DiffusionModelUNet.

Why: MDM pre-training is dominated by UNet steps, and we replaced MONAI's UNet with a
checkpoint-compatible one; this shows the replacement costs no speed. All models get the same
architecture as far as MONAI can express it (channels per level, res blocks, attention levels,
head channels, resblock up/down) and the same batch. `gdunet` is the paper's block (scale-shift
norm); `gdunet-add` adds the timestep embedding before the norm as MONAI does, which makes it the
same network as MONAI's, parameter for parameter. Steps alternate between the models so machine
noise hits all alike; the median wall time decides, and the median process CPU time is printed as
a cross-check that is less sensitive to other load on the machine.

    python benchmarks/unet_step.py [--steps 15] [--warmup 3] [--threads N] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from bench.nn.gd_unet import GDUNet, GDUNetConfig  # noqa: E402


@dataclass(frozen=True)
class BenchConfig:
    """The benchmarked shape: small enough for a 2-core CPU, same structure as the paper UNet."""

    batch: int = 4
    image_size: int = 64
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_resolution: int = 16
    num_head_channels: int = 64
    lr: float = 1e-4
    timesteps: int = 1000


def build_ours(b: BenchConfig, scale_shift: bool = True) -> nn.Module:
    cfg = GDUNetConfig(
        image_size=b.image_size, model_channels=b.model_channels, num_res_blocks=b.num_res_blocks,
        attention_resolutions=(b.image_size // b.attention_resolution,),
        channel_mult=b.channel_mult, num_head_channels=b.num_head_channels,
        use_scale_shift_norm=scale_shift, resblock_updown=True)
    return GDUNet(cfg)


def build_monai(b: BenchConfig) -> nn.Module:
    from monai.networks.nets import DiffusionModelUNet

    ds = b.image_size // b.attention_resolution
    return DiffusionModelUNet(
        spatial_dims=2, in_channels=3, out_channels=3, num_res_blocks=b.num_res_blocks,
        channels=[b.model_channels * m for m in b.channel_mult],
        attention_levels=[2 ** level == ds for level in range(len(b.channel_mult))],
        num_head_channels=b.num_head_channels, resblock_updown=True, use_flash_attention=True)


def make_step(model: nn.Module, b: BenchConfig, device: torch.device) -> Callable[[], None]:
    """A closure running forward, MSE loss, backward and an AdamW step on a fixed batch."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b.batch, 3, b.image_size, b.image_size, generator=gen).to(device)
    target = torch.randn(x.shape, generator=gen).to(device)
    t = torch.randint(0, b.timesteps, (b.batch,), generator=gen).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=b.lr)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x, t), target)
        loss.backward()
        opt.step()
    return step


def timed(step: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one step."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    b, device = BenchConfig(), torch.device(args.device)
    torch.manual_seed(0)
    models = {"gdunet": build_ours(b), "gdunet-add": build_ours(b, scale_shift=False),
              "monai": build_monai(b)}
    steps = {name: make_step(m.to(device), b, device) for name, m in models.items()}
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            dt_wall, dt_cpu = timed(step, device)
            if i >= args.warmup:
                wall[name].append(dt_wall)
                cpu[name].append(dt_cpu)
    med = {name: statistics.median(ts) for name, ts in wall.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    print(f"batch {b.batch}, {b.image_size} px, {torch.get_num_threads()} threads, {device}, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    for name, m in models.items():
        n_params = sum(q.numel() for q in m.parameters())
        print(f"{name:10s} {med[name] * 1e3:8.1f} ms/step wall (cpu {med_cpu[name] * 1e3:.1f} ms), "
              f"{n_params:,} params")
    for name in ("gdunet", "gdunet-add"):
        print(f"ratio {name}/monai = {med[name] / med['monai']:.3f} wall, "
              f"{med_cpu[name] / med_cpu['monai']:.3f} cpu (below 1: ours is faster)")


if __name__ == "__main__":
    main()
