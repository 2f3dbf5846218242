"""The `[slurm]` table of bench.toml: what each kind of job asks the scheduler for.

Defaults sit in `[slurm]`; `[slurm.pretrain]`, `[slurm.ssl]` and `[slurm.supervised]` override
single keys for one kind of job (pre-training a backbone needs a long GPU job, a probe run a short
one). Everything is checked here, like the rest of bench.toml, so a typo fails before submission.
Only a pre-training job may span tasks and nodes (`nodes`, `tasks_per_node`; by default one task
per GPU): its tasks form one data-parallel group (bench/distributed.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from bench.resume import DEFAULT_CHECKPOINT_EVERY_S

KINDS = ("pretrain", "ssl", "supervised")


@dataclass(frozen=True)
class SlurmResources:
    """One job's sbatch request; None leaves the cluster's default in place."""

    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()          # shell lines run before the job (module load, conda ...)
    array_parallelism: int = 64          # array tasks of one array running at once
    nodes: int = 1                       # [slurm.pretrain] only: nodes of the pre-training job
    tasks_per_node: int | None = None    # [slurm.pretrain] only: default one per GPU (at least 1)

    @property
    def tasks(self) -> int:
        """Tasks per node: one per GPU unless `tasks_per_node` says otherwise (e.g. CPU-only)."""
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def processes(self) -> int:
        return self.nodes * self.tasks


@dataclass(frozen=True)
class SlurmConfig:
    """Resources per kind of job, plus how the sweep's jobs behave."""

    pretrain: SlurmResources = field(default_factory=SlurmResources)
    ssl: SlurmResources = field(default_factory=SlurmResources)
    supervised: SlurmResources = field(default_factory=SlurmResources)
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S  # a pre-training job saves its state this often
    poll_s: float = 10.0                 # `bench run --wait`: seconds between scheduler queries

    def resources(self, kind: str) -> SlurmResources:
        res = getattr(self, kind)
        return res if kind == "pretrain" else replace(res, tasks_per_node=1)  # one task per run


_RESOURCE_KEYS = {f.name for f in fields(SlurmResources)}
_GLOBAL_KEYS = {"checkpoint_every_s", "poll_s"}
_OPTIONAL_STR = {"partition", "qos", "account", "constraint"}
_POSITIVE_INT = {"cpus_per_task", "timeout_min", "array_parallelism", "nodes", "tasks_per_node"}
_PRETRAIN_ONLY = {"nodes", "tasks_per_node"}


def parse_slurm(value: Any, path: str | Path) -> SlurmConfig:
    """`[slurm]` (defaults) + per-kind tables -> SlurmConfig, or one ConfigError line."""
    if value is None:
        return SlurmConfig()
    if not isinstance(value, dict):
        raise ConfigError(path, "slurm", "expected a table [slurm]")
    allowed = _RESOURCE_KEYS | _GLOBAL_KEYS | set(KINDS)
    for key in value:
        if key not in allowed:
            raise ConfigError(path, f"slurm.{key}", f"unknown key; expected one of {', '.join(sorted(allowed))}")
    for key in _PRETRAIN_ONLY & set(value):
        raise ConfigError(path, f"slurm.{key}", "only [slurm.pretrain] jobs span several tasks or nodes")
    base = SlurmResources(**_checked({k: v for k, v in value.items() if k in _RESOURCE_KEYS}, path, "slurm."))
    per_kind = {}
    for kind in KINDS:
        table = value.get(kind, {})
        if not isinstance(table, dict):
            raise ConfigError(path, f"slurm.{kind}", "expected a table of resource keys")
        for key in table:
            if key not in _RESOURCE_KEYS:
                raise ConfigError(path, f"slurm.{kind}.{key}",
                                  f"unknown key; expected one of {', '.join(sorted(_RESOURCE_KEYS))}")
            if key in _PRETRAIN_ONLY and kind != "pretrain":
                raise ConfigError(path, f"slurm.{kind}.{key}", "only [slurm.pretrain] jobs span several tasks or nodes")
        per_kind[kind] = replace(base, **_checked(table, path, f"slurm.{kind}."))
    return SlurmConfig(
        **per_kind,
        checkpoint_every_s=_non_negative(value.get("checkpoint_every_s", SlurmConfig.checkpoint_every_s),
                                         path, "slurm.checkpoint_every_s"),
        poll_s=_non_negative(value.get("poll_s", SlurmConfig.poll_s), path, "slurm.poll_s"),
    )


def _checked(table: dict[str, Any], path: str | Path, prefix: str) -> dict[str, Any]:
    """Type-check each resource key; lists become tuples so the config stays hashable."""
    out: dict[str, Any] = {}
    for key, val in table.items():
        where = prefix + key
        if key in _OPTIONAL_STR:
            if not isinstance(val, str) or not val:
                raise ConfigError(path, where, "expected a non-empty string")
        elif key in _POSITIVE_INT:
            if type(val) is not int or val < 1:
                raise ConfigError(path, where, "expected a positive integer")
        elif key == "gpus_per_node":
            if type(val) is not int or val < 0:
                raise ConfigError(path, where, "expected a non-negative integer")
        elif key == "mem_gb":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 < val < math.inf:
                raise ConfigError(path, where, "expected a positive number of gigabytes")
            val = float(val)
        elif key == "setup":
            if not isinstance(val, list) or not all(isinstance(line, str) for line in val):
                raise ConfigError(path, where, "expected a list of shell lines (strings)")
            val = tuple(val)
        out[key] = val
    return out


def _non_negative(value: Any, path: str | Path, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(path, key, "expected a non-negative number of seconds")
    return float(value)
