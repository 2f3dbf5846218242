"""Device selection and the GPU fast paths (bf16 autocast, channels_last), CPU-safe.

Code asks for `autocast(device)` and `to_device(model, device)` everywhere; on a CPU both are
no-ops, so the same code path is tested here and runs fast on a GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn


def pick_device(name: str | None = None) -> torch.device:
    """`BENCH_DEVICE` or the argument wins; else the first GPU if there is one."""
    name = name or os.environ.get("BENCH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_FAST = {"on": os.environ.get("BENCH_FP32", "0") != "1"}  # BENCH_FP32=1: plain fp32 on a GPU too


@contextlib.contextmanager
def fast_paths(enabled: bool) -> Iterator[None]:
    """Switch the GPU fast paths (bf16 autocast + channels_last) on or off, e.g. to time fp32."""
    before = _FAST["on"]
    _FAST["on"] = enabled
    try:
        yield
    finally:
        _FAST["on"] = before


def _fast(device: torch.device) -> bool:
    return device.type == "cuda" and _FAST["on"]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if _fast(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    if _fast(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def prepare_batch(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if _fast(device) and x.ndim == 4 else x


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run touches and return a torch generator for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameter numbers (malloc.h)
_GLIBC_DEFAULTS = {_M_MMAP_MAX: 65536, _M_TRIM_THRESHOLD: 128 * 1024}  # glibc's own values
_RETAINING = {"depth": 0}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if os.environ.get("BENCH_RETAIN_MEMORY", "1") == "0":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return None
    return libc


def release_free_memory() -> None:
    """Hand the free heap back to the OS (glibc's malloc_trim; nothing elsewhere), e.g. after a
    data set is dropped, so the memory it held is not counted in the process's size."""
    libc = _libc()
    if libc is not None and _RETAINING["depth"] == 0:
        libc.malloc_trim(0)


@contextlib.contextmanager
def retained_memory(keep_bytes: int = 2**30) -> Iterator[bool]:
    """While the block runs, glibc reuses freed big blocks instead of unmapping them (Linux;
    yields False where it cannot, or with `BENCH_RETAIN_MEMORY=0`). For training loops.

    Why: glibc serves every block over 32 MiB with a fresh mmap and unmaps it on free, so a
    tensor that size made each step (the probe ensemble's 86 MiB first-layer weight gradient,
    a 256 MiB feature batch) is page-faulted in again every step: the kernel zeroes each 4 KiB
    page on first touch. That doubled the ensemble's weight-gradient product on a 2-core CPU
    (42 ms against 21 ms into reused memory). Serving big blocks from the heap and keeping up to
    `keep_bytes` of free heap lets a step reuse the blocks earlier steps freed.

    Why only for a block: a heap that never unmaps fragments when long-lived blocks are made
    between the big temporaries (each lands in a freed hole, so the next temporary extends the
    heap). Reading a sweep's test windows does exactly that (the feature cache keeps every
    window's maps, the L2 scale makes a 48 MiB temporary per window): run process-wide, MAE's
    small-preset prediction on GlaS grew from 4 to 18 GiB in a minute and was killed for memory.
    After the outermost block, glibc's defaults are back and the free heap is returned.
    """
    libc = _libc()
    if libc is None:
        yield False
        return
    if _RETAINING["depth"] == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, keep_bytes)
    _RETAINING["depth"] += 1
    try:
        yield True
    finally:
        _RETAINING["depth"] -= 1
        if _RETAINING["depth"] == 0:
            for param, value in _GLIBC_DEFAULTS.items():
                libc.mallopt(param, value)
            libc.malloc_trim(0)
