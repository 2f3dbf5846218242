"""Where a result came from: code version, packages, device, host.

Attached to every record so that a number in a table can always be traced to the exact code,
configuration and machine that produced it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("bench", "torch", "torchvision", "numpy", "scipy", "monai", "timm",
            "segmentation-models-pytorch", "pytorch-msssim", "submitit")
SHORT_HASH = 10  # hex digits of the config hash in a run id and a table's `config` column


def config_hash(obj: Any) -> str:
    """A stable hash of a JSON-able description of what determines a result."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def git_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = platform.python_version()
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def machine_load() -> list[float] | None:
    """The machine's 1-, 5- and 15-minute load averages; None where the OS keeps none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def provenance(cfg_hash: str, seed: int, device: torch.device,
               load_at_start: list[float] | None = None) -> dict[str, Any]:
    """`load_start` / `load_end` and `cpus` say whether the run had the machine to itself: a
    wall time measured beside other work is not the method's cost (with the timings' `cpu_s`)."""
    return {
        "config_hash": cfg_hash,
        "seed": seed,
        "git": git_info(),
        "packages": package_versions(),
        "host": socket.gethostname(),
        **device_info(device),
        "cpus": os.cpu_count(),
        "load_start": load_at_start,
        "load_end": machine_load(),
    }
