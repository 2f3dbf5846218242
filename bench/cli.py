"""`bench`: run a sweep, list plugins, tabulate results.

User errors (bad config, bad data, unknown plugin, unwritable output, bad arguments) print one
line `bench: error: FILE: KEY: what is wrong` and exit with status 2, before anything is written.
A reader that closes the pipe early (`bench table | head -1`) ends the command quietly (status 0).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import bench
from bench.errors import BenchError, ConfigError

if TYPE_CHECKING:
    from bench.config import SweepConfig
    from bench.runner import RunSpec

DEFAULT_CONFIG = "bench.toml"
RANK_METRIC = "dice"


def main(argv: list[str] | None = None) -> int:
    from bench.progress import setup_logging

    args = _parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", 0) - getattr(args, "quiet", False), getattr(args, "log_every", None))
    try:
        from bench import registry

        registry.discover()  # every command warns (once) of a plugin that failed to import
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ConfigError as exc:  # also those found after loading (e.g. an unwritable --set output=...)
        from bench.config import override_of

        item = override_of(exc.key, getattr(args, "set", [])) if not exc.path.startswith("--set") else None
        print(f"bench: error: {ConfigError(f'--set {item}', exc.key, exc.message) if item else exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return 0
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are kept, rerun to continue", file=sys.stderr)
        return 130


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the final flush at exit cannot raise again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other user error (status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"bench: error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bench {bench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every missing run of the sweep")
    _config_args(run)
    run.add_argument("--executor", choices=["local", "debug", "slurm"], help="override bench.toml's executor")
    _progress_args(run)
    run.add_argument("--wait", action="store_true", help="slurm: block until the sweep ends, then print the table")
    run.add_argument("--dry-run", action="store_true", help="print what would run (slurm: jobs, arrays, sbatch flags)")
    run.add_argument("--smoke", action="store_true",
                     help="every run at its real shapes for a few steps into OUTPUT/smoke/; prints memory, "
                          "step times and estimated full wall times (with slurm --dry-run: suggested limits)")
    _reference_args(run)
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
    _reference_args(table)
    table.set_defaults(func=cmd_table)
    exp = sub.add_parser("experiment", help="run a table or figure of the paper (`--list` names them)")
    exp.add_argument("name", nargs="?", help="e.g. table1, fig8; see --list")
    exp.add_argument("--list", action="store_true", help="list the experiments")
    _config_args(exp)
    exp.add_argument("--preset", choices=["tiny", "small", "paper"], help="override bench.toml's preset")
    exp.add_argument("--executor", choices=["local", "debug", "slurm"], help="override bench.toml's executor")
    _progress_args(exp)
    exp.add_argument("--no-run", action="store_true",
                     help="run nothing: write the tables and figures from the records there are")
    exp.set_defaults(func=cmd_experiment)

    report = sub.add_parser("report", help="one static HTML page of every table and figure written so far")
    _config_args(report)
    _reference_args(report)
    report.set_defaults(func=cmd_report)

    records = sub.add_parser("records", help="maintain an output folder's records")
    records_sub = records.add_subparsers(dest="records_command", required=True)
    migrate = records_sub.add_parser("migrate", help="rename records whose ids hold their data's root path to ids "
                                                     "that hold the data's content fingerprint")
    migrate.add_argument("folders", nargs="+", metavar="FOLDER", help="an output folder (holding records/)")
    migrate.add_argument("--root", action="append", default=[], metavar="DATASET=PATH",
                         help="where the records' data is now, if not at the root they name (repeatable)")
    migrate.add_argument("--dry-run", action="store_true", help="print what would move; write nothing")
    migrate.set_defaults(func=cmd_records_migrate)
    return parser


def _reference_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", action="append", default=[], metavar="DIR",
                        help="a read-only output folder of records (e.g. results/glas-small) shown beside the "
                             "sweep's own, where of its configuration (repeatable)")
    parser.add_argument("--rank", action="append", default=[], metavar="METHOD",
                        help="rank METHOD against every other method of each cell, paired by seed (repeatable; "
                             "with --format csv only the ranking is printed)")
    parser.add_argument("--metric", default=RANK_METRIC, help=f"the metric --rank compares (default {RANK_METRIC})")


def _progress_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, no progress lines")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="debug lines, and progress lines even beside the bars")
    parser.add_argument("--no-progress", action="store_true",
                        help="no bars: a progress line per stage every --log-every seconds (as in Slurm jobs)")
    parser.add_argument("--log-every", type=_seconds, metavar="SECONDS",
                        help="seconds between two progress lines of a stage (default 30)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


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
    _check_environment()
    runs = expand(sweep)
    _check_references(args)
    if args.smoke:
        from bench.smoke_launch import run_smoke

        return run_smoke(sweep, runs, quiet=args.quiet or args.no_progress, wait=args.wait or sweep.executor != "slurm",
                         dry_run=args.dry_run)
    had = {r.run_id for r in runs if r.record_path.is_file()}  # not read: launch checks the layout first
    code = launch(sweep, runs, quiet=args.quiet or args.no_progress, wait=args.wait or sweep.executor != "slurm",
                  dry_run=args.dry_run)
    if args.dry_run or (sweep.executor == "slurm" and not args.wait):
        return code
    if any(r.run_id not in had and r.record_path.is_file() for r in runs):
        # new records: the sweep's pictures again (a finished sweep's rerun writes nothing)
        _write_sweep_figures(sweep, runs)
    _table(args, sweep, runs)  # the sweep and runs of this command, not read and built again
    return code


def _write_sweep_figures(sweep: SweepConfig, runs: list[RunSpec]) -> None:
    """The `sweep` experiment's figures (per-seed scores, learning curves, predictions) from the
    records there are, under OUTPUT/sweep/ for `bench report`; a failure is a warning, not a
    failed sweep (the runs are done)."""
    from bench.errors import one_line
    from bench.experiments.base import run_experiment

    try:
        run_experiment("sweep", sweep, quiet=True, run_missing=False, sweep_runs=runs)
    except Exception as exc:
        print(f"bench: warning: the sweep's figures were not written: {one_line(exc)}", file=sys.stderr)


def _check_environment() -> None:
    """The BENCH_* variables a run reads, checked before anything is written."""
    from bench.probe.feature_cache import budget_from_env

    budget_from_env()


def _check_references(args: argparse.Namespace) -> None:
    """A --reference folder without records, or --rank with --all, fails before anything runs."""
    for folder in args.reference:
        if not (Path(folder).expanduser() / "records").is_dir():
            raise BenchError(f"--reference {folder}: no records/ folder there (a reference is an output folder "
                             "of finished runs, e.g. results/glas-small)")
    if args.rank and getattr(args, "all", False):
        raise BenchError("--rank compares the records of this sweep's configuration; leave out --all")
    if args.rank:
        from bench import registry

        for method in args.rank:
            registry.get(method)  # an unknown method is one line, with the known ones


def cmd_status(args: argparse.Namespace) -> int:
    from bench.executors.status import render_checkpoints, render_pretrain, render_status, sweep_status
    from bench.runner import expand

    sweep = _load(args)
    runs = expand(sweep)
    print(render_status(sweep_status(sweep.output, runs)) + render_pretrain(sweep.output, runs)
          + render_checkpoints(sweep.output, runs), end="")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from bench import registry

    rows = registry.describe()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if r["params"] is None:  # a broken plugin: its one line, and the listing goes on
            print(f"{r['name']:<{width}}  {r['kind']:<10}  {'broken':>12}  {r['error']}")
        else:
            print(f"{r['name']:<{width}}  {r['kind']:<10}  {r['params']:>12,}  {r['summary']}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    """Without --all: the records of bench.toml's configuration (its run ids); with it: every
    record, one row per cell and configuration. Both add the trivial reference rows."""
    _check_references(args)
    return _table(args, _load(args))


def _table(args: argparse.Namespace, sweep, runs=None) -> int:
    from bench.sweep_table import sweep_rows
    from bench.tables import render_records

    fmt, every = getattr(args, "format", "markdown"), getattr(args, "all", False)
    selected = sweep_rows(sweep, every=every, runs=runs, references=args.reference)
    if selected.skipped:
        print(f"bench: warning: {selected.skipped} record(s) without dataset, fraction, method, seed left out",
              file=sys.stderr)
    if not selected.records:
        folder = Path(sweep.output) / "records"
        print(f"bench: no records {'' if every else 'of this configuration '}in {folder}; run `bench run` "
              f"first{'' if every else ' (`bench table --all` shows every record there)'}", file=sys.stderr)
        return 1
    if not (args.rank and fmt == "csv"):  # one CSV on stdout: with --rank, the ranking's
        print(render_records(selected.rows, fmt), end="")
    if args.rank:
        from bench.rank import rank, render_ranking

        for method in args.rank:
            rankings = rank(selected.selected, method, args.metric)
            if not rankings:
                print(f"bench: --rank {method}: no records of {method} with {args.metric} in this table",
                      file=sys.stderr)
                return 1
            print(("" if fmt == "csv" else "\n") + render_ranking(rankings, fmt), end="")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    from bench import experiments
    from bench.config import with_preset
    from bench.experiments.base import run_experiment

    if args.list:
        for name in experiments.names():
            print(f"{name:<12}  {experiments.get(name).title}")
        return 0
    if not args.name:
        raise BenchError(f"bench experiment: expected the NAME of an experiment, one of: "
                         f"{', '.join(experiments.names())} (`bench experiment --list` describes them)")
    experiments.get(args.name)  # an unknown name fails before the config is read
    sweep = with_preset(_load(args), args.preset)
    _check_environment()
    code, files = run_experiment(args.name, sweep, quiet=args.quiet or args.no_progress,
                                 run_missing=not args.no_run)
    for path in files:
        print(path)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    _check_references(args)
    print(write_report(_load(args), references=args.reference, rank=args.rank, metric=args.metric))
    return 0


def cmd_records_migrate(args: argparse.Namespace) -> int:
    from bench.migrate import migrate

    roots = {}
    for item in args.root:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BenchError(f"records migrate: --root {item}: expected DATASET=PATH, e.g. glas=/data/GlaS")
        roots[name.strip()] = str(Path(path.strip()).expanduser().resolve())
    for folder in args.folders:
        migrate(folder, roots, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
