"""`bench`: run a sweep, list plugins, tabulate results.

User errors (bad config, bad data, unknown plugin, unwritable output) print one line
`bench: error: FILE: KEY: what is wrong` and exit with status 2, before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
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
    run.add_argument("--smoke", action="store_true",
                     help="every run at its real shapes for a few steps into OUTPUT/smoke/; prints memory, "
                          "step times and estimated full wall times (with slurm --dry-run: suggested limits)")
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
    exp = sub.add_parser("experiment", help="run a table or figure of the paper (`--list` names them)")
    exp.add_argument("name", nargs="?", help="e.g. table1, fig8; see --list")
    exp.add_argument("--list", action="store_true", help="list the experiments")
    _config_args(exp)
    exp.add_argument("--preset", choices=["tiny", "paper"], help="override bench.toml's preset")
    exp.add_argument("--executor", choices=["local", "debug", "slurm"], help="override bench.toml's executor")
    exp.add_argument("--quiet", action="store_true", help="no progress bars")
    exp.add_argument("--no-run", action="store_true",
                     help="run nothing: write the tables and figures from the records there are")
    exp.set_defaults(func=cmd_experiment)

    report = sub.add_parser("report", help="one static HTML page of every table and figure written so far")
    _config_args(report)
    report.set_defaults(func=cmd_report)
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
    from bench.launch import launch
    from bench.runner import expand

    sweep = _load(args)
    runs = _expand(sweep, expand)
    if args.smoke:
        from bench.smoke_launch import run_smoke

        return run_smoke(sweep, runs, quiet=args.quiet, wait=args.wait or sweep.executor != "slurm",
                         dry_run=args.dry_run)
    code = launch(sweep, runs, quiet=args.quiet, wait=args.wait or sweep.executor != "slurm",
                  dry_run=args.dry_run)
    if args.dry_run or (sweep.executor == "slurm" and not args.wait):
        return code
    _print_table(args)
    return code


def _print_table(args: argparse.Namespace) -> int:
    return cmd_table(argparse.Namespace(config=args.config, set=args.set, format="markdown", all=False))


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


def cmd_experiment(args: argparse.Namespace) -> int:
    from bench import experiments
    from bench.experiments.base import run_experiment, with_preset

    if args.list or not args.name:
        for name in experiments.names():
            print(f"{name:<12}  {experiments.get(name).title}")
        return 0 if args.list else 2
    experiments.get(args.name)  # an unknown name fails before the config is read
    sweep = with_preset(_load(args), args.preset)
    code, files = run_experiment(args.name, sweep, quiet=args.quiet, run_missing=not args.no_run)
    for path in files:
        print(path)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    print(write_report(_load(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
