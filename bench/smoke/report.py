"""What `bench run --smoke` prints: the table of measurements and estimates, and Slurm limits."""
from __future__ import annotations

import math
from typing import Any

from bench.slurm_config import KINDS, SlurmConfig
from bench.smoke.config import SmokeConfig
from bench.smoke.estimates import pretrain_stages, run_stages

GIB = 2**30


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def peak_bytes(record: dict[str, Any]) -> int:
    """The memory that limits a job: GPU allocations on a GPU, else the process's peak RSS."""
    memory = record["smoke"]["peak_memory"]
    return int(memory.get("cuda_allocated", memory["rss"]))


def _steps(stages: dict[str, dict[str, Any]]) -> str:
    """s/step of each stage; * where only one step ran (warm-up included), xN where the batch was capped."""
    return ", ".join(f"{v['s_per_unit']:.2f}" + ("*" if v["measured"] == 1 else "")
                     + (f" (x{v['batch_scale']:g} batch)" if v["batch_scale"] != 1 else "")
                     for v in stages.values() if v["unit"] == "step") or "-"


def render_estimates(records: list[dict[str, Any]]) -> str:
    """One markdown row per smoke run: peak memory, s/step of each stage, estimated full wall time."""
    if not records:
        return "bench: no smoke records\n"
    head = ("| data set | fraction | method | device | peak RSS GiB | peak GPU GiB | pre-training s/step | "
            "est. pre-training | probe / train s/step | est. run | smoke wall |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in sorted(records, key=lambda r: (r["dataset"], r["fraction"], r["method"])):
        s = r["smoke"]
        pre, own = pretrain_stages(r), run_stages(r)
        gpu = s["peak_memory"].get("cuda_allocated")
        lines.append(" | ".join([
            f"| {r['dataset']}", f"{r['fraction']:g}", r["method"], f"{s['device']} x{s['threads']}",
            f"{s['peak_memory']['rss'] / GIB:.1f}", "-" if gpu is None else f"{gpu / GIB:.1f}",
            _steps(pre), duration(sum(v["full_s"] for v in pre.values())) if pre else "-",
            _steps(own), duration(sum(v["full_s"] for v in own.values())),
            f"{r['timings']['total_s']:.0f} s |"]))
    notes = ["", "Estimates: measured s/step (median after the first) x the configured steps and epochs "
             "(epochs at their cap: upper bounds where early stopping ends sooner); * only one step ran "
             "(an epoch of one batch), warm-up included; a batch the smoke capped is scaled linearly (xN). Pre-training is one job per data set and method, shared "
             "by its runs. Memory is measured at the smoke's batch.", ""]
    return "\n".join(lines + notes)


def suggestions(records: list[dict[str, Any]], smoke: SmokeConfig) -> dict[str, dict[str, Any]]:
    """Per kind of job: the largest estimated wall time and peak memory, padded by the margins."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        for kind, stages in (("pretrain", pretrain_stages(r)), (r["kind"], run_stages(r))):
            if not stages:
                continue
            seconds = sum(v["full_s"] for v in stages.values())
            best = out.setdefault(kind, {"seconds": 0.0, "bytes": 0, "by": "", "device": r["smoke"]["device"]})
            if seconds >= best["seconds"]:
                best.update(seconds=seconds, by=f"{r['method']} on {r['dataset']} {r['fraction']:g}")
            best["bytes"] = max(best["bytes"], peak_bytes(r))
    for best in out.values():
        best["timeout_min"] = max(1, math.ceil(best["seconds"] * smoke.time_margin / 60))
        best["mem_gb"] = max(1, math.ceil(best["bytes"] * smoke.mem_margin / GIB))
    return out


def render_suggestions(records: list[dict[str, Any]], slurm: SlurmConfig, smoke: SmokeConfig) -> str:
    """Suggested timeout_min / mem_gb per kind beside the configured ones, with warnings."""
    found = suggestions(records, smoke)
    lines = ["| job kind | configured timeout_min | suggested timeout_min | configured mem_gb | "
             "suggested mem_gb | longest |", "|---|---|---|---|---|---|"]
    warnings = []
    for kind in KINDS:
        if kind not in found:
            continue
        res, best = slurm.resources(kind), found[kind]
        mem = "cluster default" if res.mem_gb is None else f"{res.mem_gb:g}"
        lines.append(f"| {kind} | {res.timeout_min} | {best['timeout_min']} | {mem} | {best['mem_gb']} | {best['by']} |")
        if res.timeout_min * 60 < best["seconds"]:
            warnings.append(f"bench: warning: slurm.{kind}.timeout_min = {res.timeout_min} is below the estimated "
                            f"{duration(best['seconds'])} of {best['by']} (measured on {best['device']})")
        if res.mem_gb is not None and res.mem_gb * GIB < best["bytes"]:
            warnings.append(f"bench: warning: slurm.{kind}.mem_gb = {res.mem_gb:g} is below the measured peak "
                            f"{best['bytes'] / GIB:.1f} GiB of a {kind} job")
    devices = {best["device"] for best in found.values()}
    note = (f"Suggestions: estimate x {smoke.time_margin:g} (time), peak x {smoke.mem_margin:g} (memory), "
            f"measured on {', '.join(sorted(devices))}; smoke on the cluster's nodes for their numbers.")
    return "\n".join(lines + ["", note] + warnings) + "\n"
