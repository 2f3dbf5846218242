"""`bench`: run a sweep, list plugins, tabulate results.

User errors (bad config, bad data, unknown plugin, unwritable output) print one line
`bench: error: FILE: KEY: what is wrong` and exit with status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.errors import BenchError

DEFAULT_CONFIG = "bench.toml"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are kept, rerun to continue", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every missing run of the sweep")
    _config_args(run)
    run.add_argument("--executor", choices=["local", "debug", "slurm"], help="override bench.toml's executor")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--wait", action="store_true", help="slurm: block until the sweep ends, then print the table")
    run.add_argument("--dry-run", action="store_true", help="print what would run (slurm: jobs, arrays, sbatch flags)")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="done / running / pending / failed runs per cell")
    _config_args(status)
    status.set_defaults(func=cmd_status)

    lst = sub.add_parser("list", help="list the registered methods")
    lst.add_argument("--json", action="store_true", help="machine-readable, with parameter counts")
    lst.set_defaults(func=cmd_list)

    table = sub.add_parser("table", help="mean ± std per cell from the sweep's records")
    _config_args(table)
    table.add_argument("--format", choices=["markdown", "latex", "csv"], default="markdown")
    table.add_argument("--all", action="store_true", help="every record in the output folder, not just this sweep's")
    table.set_defaults(func=cmd_table)
    return parser


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="sweep file (default: ./bench.toml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a bench.toml key, e.g. --set preset=paper (repeatable)")


def _load(args: argparse.Namespace):
    from bench.config import load_config

    sweep = load_config(Path(args.config), args.set)
    if getattr(args, "executor", None):
        from dataclasses import replace

        sweep = replace(sweep, executor=args.executor)
    return sweep


def cmd_run(args: argparse.Namespace) -> int:
    from bench.runner import expand, pending, run_local, validate_data
    from bench.store import check_writable, remove_stale_temporaries

    start = time.perf_counter()
    sweep = _load(args)
    runs = _expand(sweep, expand)
    todo = pending(runs)
    if not todo:
        print(f"bench: all {len(runs)} runs are done ({sweep.output}); nothing to do")
        return 0
    check_writable(sweep.output, "output", sweep.source)
    validate_data(sweep, todo)
    if sweep.executor == "slurm":
        return _run_slurm(args, sweep, runs)
    if args.dry_run:
        print("\n".join(f"would run {r.run_id}" for r in todo))
        return 0
    Path(sweep.output).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(sweep.output)
    print(f"bench: {len(todo)} of {len(runs)} runs to do -> {sweep.output}", file=sys.stderr)
    if sweep.executor == "debug":
        from bench.executors.local import run_debug

        run_debug(todo, sweep.slurm.checkpoint_every_s)
    else:
        run_local(todo, progress=not args.quiet)
    print(f"bench: done in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return _print_table(args)


def _print_table(args: argparse.Namespace) -> int:
    return cmd_table(argparse.Namespace(config=args.config, set=args.set, format="markdown", all=False))


def _run_slurm(args: argparse.Namespace, sweep, runs) -> int:
    """Submit what is missing or failed; with --wait, block until the sweep ends and tabulate."""
    from bench.executors import scheduler
    from bench.executors.slurm import submit_sweep, wait
    from bench.executors.status import counts, render_status

    if not args.dry_run and not scheduler.available():
        raise BenchError(f"{sweep.source}: executor: slurm needs sbatch and squeue on PATH (not found)")
    submit_sweep(sweep, runs, dry_run=args.dry_run)
    if args.dry_run or not args.wait:
        return 0
    statuses = wait(sweep, runs)
    print(render_status(statuses), end="", file=sys.stderr)
    failed = counts(statuses)["failed"]
    _print_table(args)
    if failed:
        print(f"bench: {failed} run(s) failed; `bench run` resubmits them, logs in "
              f"{Path(sweep.output) / 'slurm' / 'logs'}", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.executors.status import render_pretrain, render_status, sweep_status
    from bench.runner import expand

    sweep = _load(args)
    runs = _expand(sweep, expand)
    print(render_status(sweep_status(sweep.output, runs)) + render_pretrain(sweep.output, runs), end="")
    return 0


def _expand(sweep, expand):
    try:
        return expand(sweep)
    except ValueError as exc:  # an override that the plugin's Config rejects
        raise BenchError(f"{sweep.source}: {exc}") from None


def cmd_list(args: argparse.Namespace) -> int:
    from bench import registry

    rows = registry.describe()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<10}  {r['params']:>12,}  {r['summary']}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from bench.records import load_records
    from bench.runner import expand
    from bench.table import aggregate, render

    sweep = _load(args)
    records = load_records(sweep.output)
    if not args.all:
        wanted = {r.run_id for r in _expand(sweep, expand)}
        records = [r for r in records if r["run_id"] in wanted]
    print(render(aggregate(records), args.format), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
