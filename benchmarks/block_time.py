"""Where a sweep's time went: hours per method and stage, read off its records, against a budget.

For each method of a sweep (its configuration's records only, as `bench table` selects them):
its pre-training once (the longest `pretrain_s` its records carry), then the runs' stages: the
probe's training (`probe_train_s`, SSL methods), the network's (`train_s`, baselines),
prediction, feature extraction and the rest of each run (`total_s` less those and less
`load_s`, the time a run spent building or waiting for a backbone). Each run stage is summed two
ways: as recorded, and as "quiet", each cell's median times its runs, so a few runs that shared
the CPU with other work do not set the estimate. "CPU share" is the runs' CPU seconds over their
wall x threads (for records that carry `cpu_s`; "-" for older ones): single-threaded
stages keep it under 1 even alone, so a share well under the same method's on a quiet machine
says its runs shared the machine. With `--budget-h` the last lines say how far the quiet block
is from the budget and which stages alone exceed it. Each protocol's sweep is its own
configuration, so the converged and the official GlaS blocks are split by two calls:

    python benchmarks/block_time.py --config results/glas-small/bench.toml [--budget-h H]
    python benchmarks/block_time.py --config results/glas-small/official.toml
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.config import load_config
from bench.errors import BenchError
from bench.sweep_table import sweep_records

HOUR = 3600.0
# (column, the timing key it sums): an SSL run trains its probe, a baseline its network
STAGES: tuple[tuple[str, str], ...] = (
    ("probe training", "probe_train_s"), ("network training", "train_s"), ("prediction", "predict_s"),
    ("features", "features_s"))


def _stage_seconds(timings: dict[str, float]) -> dict[str, float]:
    """A run's seconds per stage, and "other": the rest of total_s after load_s and the stages."""
    out = {name: float(timings.get(key, 0.0)) for name, key in STAGES}
    out["other"] = max(0.0, float(timings.get("total_s", 0.0)) - float(timings.get("load_s", 0.0)) - sum(out.values()))
    return out


@dataclass
class MethodTime:
    runs: int = 0
    pretrain_s: float = 0.0
    recorded: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    quiet: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cpu_s: float = 0.0       # over the runs whose records carry cpu_s (newer records)
    thread_s: float = 0.0    # their total_s x threads: the CPU seconds they could have had

    def cpu_share(self) -> float | None:
        """The share of its threads' time the method's runs got: near 1 alone on the machine."""
        return self.cpu_s / self.thread_s if self.thread_s else None

    def total(self, which: str) -> float:
        return self.pretrain_s + sum((self.quiet if which == "quiet" else self.recorded).values())


def block_time(records: list[dict[str, Any]], order: tuple[str, ...] = ()) -> dict[str, MethodTime]:
    """Per method (`order` first, then first seen): pre-training once, every run stage recorded and quiet."""
    methods: dict[str, MethodTime] = {m: MethodTime() for m in order if any(r["method"] == m for r in records)}
    cells: dict[tuple[str, str, float], list[dict[str, float]]] = defaultdict(list)
    for r in records:
        timings = r.get("timings") or {}
        m = methods.setdefault(r["method"], MethodTime())
        m.runs += 1
        threads = (r.get("provenance") or {}).get("threads")
        if "cpu_s" in timings and threads:
            m.cpu_s += float(timings["cpu_s"])
            m.thread_s += float(timings.get("total_s", 0.0)) * int(threads)
        m.pretrain_s = max(m.pretrain_s, float(timings.get("pretrain_s", 0.0)))
        stages = _stage_seconds(timings)
        for name, seconds in stages.items():
            m.recorded[name] += seconds
        cells[(r["method"], r["dataset"], float(r["fraction"]))].append(stages)
    for (method, _, _), runs in cells.items():
        for name in runs[0]:
            methods[method].quiet[name] += len(runs) * statistics.median(s[name] for s in runs)
    return methods


def _share(m: MethodTime) -> str:
    share = m.cpu_share()
    return "-" if share is None else f"{share:.2f}"


def render(methods: dict[str, MethodTime], budget_h: float | None = None) -> str:
    names = [name for name, _ in STAGES] + ["other"]
    out = ["| method | runs | pre-training once (h) | " + " | ".join(f"{n} (h)" for n in names)
           + " | block, quiet (h) | block, recorded (h) | CPU share |",
           "|---|---|---|" + "---|" * len(names) + "---|---|---|"]
    total: dict[str, float] = defaultdict(float)
    for method, m in methods.items():
        out.append(f"| {method} | {m.runs} | {m.pretrain_s / HOUR:.2f} | "
                   + " | ".join(f"{m.quiet[n] / HOUR:.2f}" for n in names)
                   + f" | {m.total('quiet') / HOUR:.2f} | {m.total('recorded') / HOUR:.2f} | {_share(m)} |")
        total["pretrain"] += m.pretrain_s
        for n in names:
            total[n] += m.quiet[n]
        total["quiet"] += m.total("quiet")
        total["recorded"] += m.total("recorded")
    out.append(f"| all | {sum(m.runs for m in methods.values())} | {total['pretrain'] / HOUR:.2f} | "
               + " | ".join(f"{total[n] / HOUR:.2f}" for n in names)
               + f" | {total['quiet'] / HOUR:.2f} | {total['recorded'] / HOUR:.2f} | |")
    if budget_h is not None:
        budget = budget_h * HOUR
        out += ["", f"Budget {budget_h:g} h: the quiet block is {total['quiet'] / budget:.1f}x it."]
        over = [f"{n} {total[n] / HOUR:.2f} h" for n in ("pretrain", *names) if total[n] > budget]
        out.append("Stages that alone exceed it: " + (", ".join(over) if over else "none") + ".")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the sweep file whose records to read")
    parser.add_argument("--budget-h", type=float, help="compare the block with this many hours")
    args = parser.parse_args(argv)
    try:
        sweep = load_config(args.config)
    except BenchError as exc:  # a missing or broken sweep file: one line, no traceback
        raise SystemExit(f"block_time: error: {exc}") from None
    records, _ = sweep_records(sweep)
    if not records:
        raise SystemExit(f"{args.config}: no records of this sweep's configuration under its output folder")
    sys.stdout.write(render(block_time(records, sweep.methods), args.budget_h))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
