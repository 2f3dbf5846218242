"""Where prediction spends its time: torch.profiler's top operators of one window of
`predict_votes`, projected and dense paths, on predict_perf.py's shapes and 10-member probe.

Why: on a GPU the two paths' ratio is set by host-side launch overhead as much as by FLOPs; the
profile shows both the CPU and the CUDA time of each operator, and their totals.

    python benchmarks/predict_profile.py [--device cuda|cpu] [--rows 12]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from predict_perf import SHAPES, PerfConfig, _probe, _window_maps  # noqa: E402

from bench.device import pick_device  # noqa: E402
from bench.probe.predict import predict_votes  # noqa: E402

WARMUP = 2  # untimed calls of each path before its profiled one


def profile_shapes(device: torch.device, rows: int) -> str:
    out = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    for shape in SHAPES:
        probe = _probe(shape, PerfConfig(), device)
        maps = _window_maps(shape, 0, device)
        out_hw = (shape.window, shape.window)
        for path in ("projected", "dense"):
            for _ in range(WARMUP):
                predict_votes(probe, maps, out_hw, 1 / 64, path=path)
            with profile(activities=activities) as prof:
                predict_votes(probe, maps, out_hw, 1 / 64, path=path)
                if device.type == "cuda":
                    torch.cuda.synchronize()
            out += [f"=== {shape.name} {path}",
                    prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=40)]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="cuda (default when there is one) or cpu")
    parser.add_argument("--rows", type=int, default=12, help="operators per table")
    args = parser.parse_args(argv)
    print(profile_shapes(pick_device(args.device), args.rows), end="")


if __name__ == "__main__":
    main()
