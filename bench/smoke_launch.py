"""`bench run --smoke`: run the sweep's smoke runs with its executor, then print the estimates.

Locally each smoke run gets a fresh process (spawned, one at a time), so its peak memory is its
own and one paper-size model's freed memory never inflates the next one's. `debug` and `slurm`
run the smoke specs exactly as they run real ones. With `--executor slurm --dry-run` the
estimates (from the smoke records there are; missing smoke runs are run here first) become
suggested `timeout_min` / `mem_gb` per kind of job, beside the configured ones.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.config import SweepConfig
from bench.data.registry import clear_cache
from bench.errors import BenchError
from bench.records import read_record
from bench.runner import RunSpec, check_output_layout, domain_of, pending, validate_data
from bench.smoke import FOLDER
from bench.smoke.report import render_estimates, render_suggestions
from bench.smoke.run import smoke_specs
from bench.store import check_writable, remove_stale_temporaries


def run_smoke(sweep: SweepConfig, runs: list[RunSpec], *, quiet: bool = False, wait: bool = True,
              dry_run: bool = False) -> int:
    """Smoke every (data set, fraction, method) of `runs`; print the table of estimates."""
    smoke = dataclasses.replace(sweep, output=str(Path(sweep.output) / FOLDER))
    specs = smoke_specs(runs, sweep.smoke, domain_of)
    if sweep.executor == "slurm" and dry_run:
        _run_here(smoke, specs, quiet)  # the estimates need measurements; a smoke run is short
        records = _records(specs)
        print(render_estimates(records), end="")
        print(render_suggestions(records, sweep.slurm, sweep.smoke), end="")
        return 0
    if sweep.executor == "slurm" or sweep.executor == "debug" or dry_run:
        from bench.launch import launch

        code = launch(smoke, specs, quiet=quiet, wait=wait, dry_run=dry_run)
        if dry_run or (sweep.executor == "slurm" and not wait):
            return code
    else:
        _run_here(smoke, specs, quiet)
        code = 0
    print(render_estimates(_records(specs)), end="")
    return code


def _records(specs: list[RunSpec]) -> list[dict[str, Any]]:
    return [r for r in (read_record(s.record_path) for s in specs) if r is not None and "smoke" in r]


def _run_here(sweep: SweepConfig, specs: list[RunSpec], quiet: bool) -> None:
    """Each pending smoke run in a fresh process, one after another; the first failure stops."""
    check_output_layout(sweep, specs)
    todo = pending(specs)
    if not todo:
        return
    check_writable(sweep.output, "output", sweep.source)
    validate_data(sweep, todo)
    clear_cache()  # the children load the data themselves; this process need not hold a copy meanwhile
    Path(sweep.output).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(sweep.output)
    print(f"bench: {len(todo)} smoke run(s) -> {sweep.output}", file=sys.stderr)
    for i, spec in enumerate(todo, 1):
        start = time.perf_counter()
        print(f"bench: smoke {i}/{len(todo)}: {spec.dataset} {spec.fraction:g} {spec.method}",
              file=sys.stderr, flush=True)
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            try:
                failure = pool.submit(_child, spec, not quiet).result()
            except BrokenProcessPool:
                raise BenchError(f"smoke run {spec.run_id}: its process was killed (out of memory? "
                                 "a lower [smoke] batch, or a machine with more free memory)") from None
        if failure is not None:
            kind, text = failure
            if kind == "crash":
                print(text, file=sys.stderr, end="")
                text = f"smoke run {spec.run_id} failed: {text.strip().splitlines()[-1]}"
            raise BenchError(text)
        print(f"bench: smoke {spec.method} done in {time.perf_counter() - start:.0f} s", file=sys.stderr)


def _child(spec: RunSpec, progress: bool) -> tuple[str, str] | None:
    """Runs in the spawned process: None, or ("error", one line) / ("crash", a traceback)."""
    try:
        spec.execute(progress=progress)
    except BenchError as exc:
        return "error", str(exc)
    except Exception:  # noqa: BLE001 - reported whole to the parent, which fails loudly
        return "crash", traceback.format_exc()
    return None
