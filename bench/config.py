"""The sweep: bench.toml parsed into dataclasses and validated before anything runs.

Everything a user can get wrong is caught here, up front, as one `ConfigError` line naming the
file, the key and what was expected, so a typo never costs a half-finished sweep.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.presets import PRESETS
from bench.protocol import PROTOCOLS
from bench.slurm_config import SlurmConfig, parse_slurm
from bench.smoke import SmokeConfig, parse_smoke

EXECUTORS = ("local", "debug", "slurm")
DEFAULT_SEEDS = tuple(range(10))
DEFAULT_FRACTIONS = (1.0, 0.1)
# numpy's global RNG takes 32-bit seeds (seed_everything reduces mod 2**32): larger seeds would collide
SEED_LIMIT = 2**32


@dataclass(frozen=True)
class DatasetEntry:
    """One data set of the sweep and the label fractions to run on it."""

    name: str
    root: str | None = None
    label_fractions: tuple[float, ...] = DEFAULT_FRACTIONS


@dataclass(frozen=True)
class PretrainLayout:
    """`[pretrain]`: how pre-training spreads over processes (Slurm's count is `[slurm.pretrain]`)."""

    local_processes: int = 1          # `--executor local` / `debug`: processes (one per GPU; gloo on CPUs)
    shards: int | None = None         # parts of each step's batch; None: one per process


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
    pretrain: PretrainLayout = field(default_factory=PretrainLayout)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    protocol: str | None = None  # top-level `protocol`: every method's, unless its [params] set one


_TOP_KEYS = {"datasets", "methods", "seeds", "preset", "output", "executor", "params", "slurm", "pretrain",
             "smoke", "protocol"}
_DATASET_KEYS = {"name", "root", "label_fractions"}


def load_config(path: str | Path, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override (`--set key=value`) and validate a sweep file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(path, "(file)", "is a folder, not a sweep file; pass --config PATH to a sweep file")
    if not path.is_file():
        raise ConfigError(path, "(file)", "not found; pass --config PATH to a sweep file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "(syntax)", f"not UTF-8 text (byte {exc.start}); a sweep file is TOML") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "(syntax)", f"not valid TOML: {exc}") from None
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return validate(raw, path, {item.partition("=")[0].strip() for item in overrides or []})
    except ConfigError as exc:
        culprit = override_of(exc.key, overrides or [])
        if culprit is None:
            raise
        raise ConfigError(f"--set {culprit}", exc.key, exc.message) from None


def override_of(key: str, overrides: list[str]) -> str | None:
    """The last `--set` whose key is `key`, lies above it or below it: that is where the bad value came from."""
    dotted = re.sub(r"\[(\d+)\]", r".\1", key)
    for item in reversed(overrides):
        set_key = item.partition("=")[0].strip()
        if dotted == set_key or dotted.startswith(set_key + ".") or set_key.startswith(dotted + "."):
            return item
    return None


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


def validate(raw: dict[str, Any], path: str | Path, set_keys: set[str] | None = None) -> SweepConfig:
    """Turn the raw TOML table into a SweepConfig or raise a one-line ConfigError.

    `set_keys`: the dotted keys `--set` gave, so an error in one of them names `--set`, not the file.
    """
    from bench import registry
    from bench.data import DATASETS

    _no_unknown(raw, _TOP_KEYS, path, "")
    methods = tuple(_str_list(raw.get("methods"), path, "methods", required=True))
    known = registry.names()
    for i, name in enumerate(methods):
        if name not in known:
            raise ConfigError(path, f"methods[{i}]",
                              f"unknown method {name!r}; known: {', '.join(known)}{registry.broken_hint(name)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(path, "methods", "a method is listed twice")
    seeds = raw.get("seeds", list(DEFAULT_SEEDS))
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and 0 <= s < SEED_LIMIT for s in seeds):
        raise ConfigError(path, "seeds", f"expected a non-empty list of non-negative integers below 2**32 ({SEED_LIMIT})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(path, "seeds", "a seed is listed twice")
    preset = _choice(raw.get("preset", "tiny"), PRESETS, path, "preset")
    executor = _choice(raw.get("executor", "local"), EXECUTORS, path, "executor")
    output = raw.get("output", "results")
    if not isinstance(output, str) or not output.strip():
        raise ConfigError(path, "output", "expected a folder path (string)")
    base = Path(path).resolve().parent
    output_path = _resolve(base, output, path, "output")
    datasets = _datasets(raw.get("datasets"), path, base, DATASETS)
    params = _params(raw.get("params", {}), methods, path, base)
    protocol = None
    if "protocol" in raw:
        protocol = _choice(raw["protocol"], PROTOCOLS, path, "protocol")
        for method in methods:  # a method's own `[params.NAME] protocol` wins
            if "protocol" in {f.name for f in fields(registry.get(method).Config)}:
                params[method] = {"protocol": protocol, **params.get(method, {})}
    _resolve_methods(methods, preset, params, path, set_keys or set())
    return SweepConfig(
        datasets=datasets, methods=methods, seeds=tuple(seeds), preset=preset,
        output=str(output_path), executor=executor, params=params, source=str(path),
        slurm=parse_slurm(raw.get("slurm"), path), pretrain=_pretrain(raw.get("pretrain", {}), path),
        smoke=parse_smoke(raw.get("smoke"), path), protocol=protocol,
    )


def _pretrain(table: Any, path: str | Path) -> PretrainLayout:
    if not isinstance(table, dict):
        raise ConfigError(path, "pretrain", "expected a table [pretrain]")
    _no_unknown(table, {"local_processes", "shards"}, path, "pretrain.")
    for key, value in table.items():
        if type(value) is not int or value < 1:
            raise ConfigError(path, f"pretrain.{key}", "expected a positive integer")
    return PretrainLayout(**table)


def _datasets(value: Any, path: str | Path, base: Path, known: dict) -> tuple[DatasetEntry, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, "datasets", "expected at least one [[datasets]] table")
    entries: list[DatasetEntry] = []
    for i, table in enumerate(value):
        where = f"datasets[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(path, where, "expected a table with name, root, label_fractions")
        _no_unknown(table, _DATASET_KEYS, path, where + ".")
        name = table.get("name")
        if not isinstance(name, str) or name not in known:
            raise ConfigError(path, f"{where}.name", f"unknown dataset {name!r}; known: {', '.join(known)}")
        root = table.get("root")
        if root is not None:
            if not isinstance(root, str) or not root.strip():
                raise ConfigError(path, f"{where}.root", "expected a folder path (string)")
            root_path = _resolve(base, root, path, f"{where}.root")
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
        if len({float(f) for f in fractions}) != len(fractions):
            raise ConfigError(path, f"{where}.label_fractions", "a fraction is listed twice")
        if any(e.name == name and e.root == root for e in entries):
            raise ConfigError(path, where, f"data set {name!r} (root {root}) is listed twice")
        entries.append(DatasetEntry(name=name, root=root, label_fractions=tuple(float(f) for f in fractions)))
    return tuple(entries)


def _params(value: Any, methods: tuple[str, ...], path: str | Path, base: Path) -> dict[str, dict[str, Any]]:
    """Per-method config overrides (`[params.ddpm] steps = 200`); `_resolve_methods` checks them."""
    if not isinstance(value, dict):
        raise ConfigError(path, "params", "expected tables [params.METHOD]")
    out: dict[str, dict[str, Any]] = {}
    for method, table in value.items():
        if method not in methods:
            raise ConfigError(path, f"params.{method}", f"{method!r} is not in methods")
        if not isinstance(table, dict):
            raise ConfigError(path, f"params.{method}", "expected a table of config fields")
        out[method] = dict(table)
        if isinstance(table.get("checkpoint"), str):
            checkpoint = _resolve(base, table["checkpoint"], path, f"params.{method}.checkpoint")
            if not checkpoint.is_file():
                raise ConfigError(path, f"params.{method}.checkpoint", f"file {checkpoint} does not exist")
            out[method]["checkpoint"] = str(checkpoint)
    return out


def _resolve(base: Path, text: str, path: str | Path, key: str) -> Path:
    """base / text (with ~), made absolute; a symlink loop or a NUL byte is the user's to fix."""
    if "\0" in text:
        raise ConfigError(path, key, "the path contains a NUL character")
    try:
        return (base / Path(text).expanduser()).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise ConfigError(path, key, f"cannot resolve {text!r}: {exc}") from None


def with_preset(sweep: SweepConfig, preset: str | None) -> SweepConfig:
    """`--preset` over bench.toml's, checked as `load_config` checks the file's own preset: an
    override a method's Config rejects at that preset is a ConfigError naming file and field."""
    if not preset or preset == sweep.preset:
        return sweep
    _resolve_methods(sweep.methods, preset, sweep.params, sweep.source, set())
    return replace(sweep, preset=preset)


def _resolve_methods(methods: tuple[str, ...], preset: str, params: dict[str, dict[str, Any]],
                     path: str | Path, set_keys: set[str]) -> None:
    """Build every method's config at the sweep's preset, so a value its Config rejects (its
    `__post_init__` checks) fails here, before any run has written a record."""
    from bench import registry

    for method in methods:
        def error(key: str, msg: str, m: str = method) -> ConfigError:
            where = f"params.{m}.{key}"
            return ConfigError("--set" if where in set_keys else path, where, msg)

        registry.get(method).resolve_config(preset, params.get(method, {}), error)


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
