"""Device selection and the GPU fast paths (bf16 autocast, channels_last), CPU-safe.

Code asks for `autocast(device)` and `to_device(model, device)` everywhere; on a CPU both are
no-ops, so the same code path is tested here and runs fast on a GPU.
"""
from __future__ import annotations

import contextlib
import os
import random
from typing import Iterator

import numpy as np
import torch
from torch import nn


def pick_device(name: str | None = None) -> torch.device:
    """`BENCH_DEVICE` or the argument wins; else the first GPU if there is one."""
    name = name or os.environ.get("BENCH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.ndim == 4 else x


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run touches and return a torch generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic_cpu() -> Iterator[None]:
    """Deterministic algorithms where PyTorch has them (CPU runs are then bit-reproducible)."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=True)
