"""The sweep: bench.toml parsed into dataclasses and validated before anything runs.

Everything a user can get wrong is caught here, up front, as one `ConfigError` line naming the
file, the key and what was expected, so a typo never costs a half-finished sweep.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.slurm_config import SlurmConfig, parse_slurm
from bench.smoke_config import SmokeConfig, parse_smoke

PRESETS = ("tiny", "paper")
EXECUTORS = ("local", "debug", "slurm")
DEFAULT_SEEDS = tuple(range(10))
DEFAULT_FRACTIONS = (1.0, 0.1)


@dataclass(frozen=True)
class DatasetEntry:
    """One data set of the sweep and the label fractions to run on it."""

    name: str
    root: str | None = None
    label_fractions: tuple[float, ...] = DEFAULT_FRACTIONS


@dataclass(frozen=True)
class SweepConfig:
    """A whole sweep: datasets x fractions x methods x seeds at one preset."""

    datasets: tuple[DatasetEntry, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    preset: str = "tiny"
    output: str = "results"
    executor: str = "local"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "bench.toml"
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)


_TOP_KEYS = {"datasets", "methods", "seeds", "preset", "output", "executor", "params", "slurm", "smoke"}
_DATASET_KEYS = {"name", "root", "label_fractions"}


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override (`--set key=value`) and validate a sweep file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "(file)", "not found; pass --config PATH to a sweep file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(syntax)", f"not valid TOML: {exc}") from None
    for item in overrides or []:
        apply_override(raw, item)
    return validate(raw, path)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value`; the value is read as TOML, else taken as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", item, "expected KEY=VALUE, e.g. preset=paper")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError("--set", key, f"no list element {part!r}")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError("--set", key, f"{'.'.join(parts[: i + 1])} is not a table")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError("--set", key, f"no list element {last!r}")
        node[int(last)] = value
    else:
        node[last] = value


def validate(raw: dict[str, Any], path: str | Path) -> SweepConfig:
    """Turn the raw TOML table into a SweepConfig or raise a one-line ConfigError."""
    from bench import registry
    from bench.data import DATASETS

    _no_unknown(raw, _TOP_KEYS, path, "")
    methods = tuple(_str_list(raw.get("methods"), path, "methods", required=True))
    known = registry.names()
    for i, name in enumerate(methods):
        if name not in known:
            raise ConfigError(path, f"methods[{i}]", f"unknown method {name!r}; known: {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(path, "methods", "a method is listed twice")
    seeds = raw.get("seeds", list(DEFAULT_SEEDS))
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        raise ConfigError(path, "seeds", "expected a non-empty list of non-negative integers")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(path, "seeds", "a seed is listed twice")
    preset = _choice(raw.get("preset", "tiny"), PRESETS, path, "preset")
    executor = _choice(raw.get("executor", "local"), EXECUTORS, path, "executor")
    output = raw.get("output", "results")
    if not isinstance(output, str) or not output:
        raise ConfigError(path, "output", "expected a folder path (string)")
    base = Path(path).resolve().parent
    datasets = _datasets(raw.get("datasets"), path, base, DATASETS)
    params = _params(raw.get("params", {}), methods, path, base)
    return SweepConfig(
        datasets=datasets, methods=methods, seeds=tuple(seeds), preset=preset,
        output=str((base / output).resolve()), executor=executor, params=params, source=str(path),
        slurm=parse_slurm(raw.get("slurm"), path), smoke=parse_smoke(raw.get("smoke"), path),
    )


def _datasets(value: Any, path: str | Path, base: Path, known: dict) -> tuple[DatasetEntry, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "datasets", "expected at least one [[datasets]] table")
    entries = []
    for i, table in enumerate(value):
        where = f"datasets[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(path, where, "expected a table with name, root, label_fractions")
        _no_unknown(table, _DATASET_KEYS, path, where + ".")
        name = table.get("name")
        if name not in known:
            raise ConfigError(path, f"{where}.name", f"unknown dataset {name!r}; known: {', '.join(known)}")
        root = table.get("root")
        if root is not None:
            if not isinstance(root, str):
                raise ConfigError(path, f"{where}.root", "expected a folder path (string)")
            root_path = (base / Path(root).expanduser()).resolve()
            if not root_path.is_dir():
                raise ConfigError(path, f"{where}.root", f"data folder {root_path} does not exist")
            root = str(root_path)
        elif known[name].needs_root:
            raise ConfigError(path, f"{where}.root", f"required for {name}: the folder holding its files")
        fractions = table.get("label_fractions", list(DEFAULT_FRACTIONS))
        if not isinstance(fractions, list) or not fractions or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions
        ):
            raise ConfigError(path, f"{where}.label_fractions", "expected a list of numbers in (0, 1]")
        for f in fractions:
            if not 0 < f <= 1:
                raise ConfigError(path, f"{where}.label_fractions", f"{f} is outside (0, 1]")
        entries.append(DatasetEntry(name=name, root=root, label_fractions=tuple(float(f) for f in fractions)))
    return tuple(entries)


def _params(value: Any, methods: tuple[str, ...], path: str | Path, base: Path) -> dict[str, dict[str, Any]]:
    """Per-method config overrides (`[params.ddpm] steps = 200`), checked against the plugin's Config."""
    from bench import registry

    if not isinstance(value, dict):
        raise ConfigError(path, "params", "expected tables [params.METHOD]")
    out: dict[str, dict[str, Any]] = {}
    for method, table in value.items():
        if method not in methods:
            raise ConfigError(path, f"params.{method}", f"{method!r} is not in methods")
        if not isinstance(table, dict):
            raise ConfigError(path, f"params.{method}", "expected a table of config fields")
        registry.get(method).check_overrides(table, lambda key, msg, m=method: ConfigError(path, f"params.{m}.{key}", msg))
        out[method] = dict(table)
        if isinstance(table.get("checkpoint"), str):
            checkpoint = (base / Path(table["checkpoint"]).expanduser()).resolve()
            if not checkpoint.is_file():
                raise ConfigError(path, f"params.{method}.checkpoint", f"file {checkpoint} does not exist")
            out[method]["checkpoint"] = str(checkpoint)
    return out


def _no_unknown(table: dict, allowed: set[str], path: str | Path, prefix: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(path, prefix + key, f"unknown key; expected one of {', '.join(sorted(allowed))}")


def _str_list(value: Any, path: str | Path, key: str, required: bool) -> list[str]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, key, "expected a non-empty list of strings")
    return value


def _choice(value: Any, options: tuple[str, ...], path: str | Path, key: str) -> str:
    if value not in options:
        raise ConfigError(path, key, f"expected one of {', '.join(options)}, got {value!r}")
    return value
