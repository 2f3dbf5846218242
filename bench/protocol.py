"""The two training protocols a run can follow, and what each fixes in a method's Config.

`converged` is bench's own recipe: each method trained until it has converged (validation-based
early stopping for the baselines, a vote of probe members for the SSL methods), with labelled
subsets drawn at random per seed. `official` is the loop zx-pan/mdm's scripts ran to produce the
published numbers (REFERENCE §6, §8; bench.official holds its per-data-set numbers): under it
there is nothing to choose, so the Config fields it fixes are pinned here and an override that
contradicts a pin is refused.

A Config declares, as class attributes (merged along its bases, the subclass winning):
- `OFFICIAL`: field -> the value protocol "official" pins;
- `LEGACY`: field -> the value runs had before the field existed. Such a field is left out of a
  run's identity (run id, artefact key, feature key) while it holds that value, so records made
  before it was added keep their ids.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from bench.errors import FieldError

ProtocolName = Literal["official", "converged"]
SubsetRule = Literal["sorted", "random"]
PROTOCOLS: tuple[str, ...] = ("official", "converged")

# Fields every protocol-aware Config carries (SupervisedConfig, SSLConfig) and their legacy values.
PROTOCOL_LEGACY: dict[str, Any] = {"protocol": "converged", "subset": None}


def _merged(config_cls: type, attribute: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for klass in reversed(config_cls.__mro__):
        out.update(vars(klass).get(attribute, {}))
    return out


def official_pins(config_cls: type) -> dict[str, Any]:
    """Every field protocol "official" fixes in this Config, with its value."""
    return _merged(config_cls, "OFFICIAL")


def legacy_values(config_cls: type) -> dict[str, Any]:
    """Fields added after records existed, with the value those records ran with."""
    return _merged(config_cls, "LEGACY")


def apply_protocol(cfg: Any, explicit: dict[str, Any]) -> Any:
    """`cfg` with the official pins applied when its protocol is "official"; an explicit override
    (`explicit`: bench.toml's `[params.NAME]`) that contradicts a pin is a FieldError."""
    if getattr(cfg, "protocol", "converged") != "official":
        return cfg
    pins = official_pins(type(cfg))
    for key, value in explicit.items():
        if key in pins and value != pins[key]:
            raise FieldError(key, f"fixed at {pins[key]!r} by protocol 'official' (the official code's value); "
                             "set protocol = 'converged' to choose it")
    changes = {k: v for k, v in pins.items() if getattr(cfg, k) != v}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def identity(cfg: Any, drop: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The Config as a run's identity: its fields less `drop`, less fields at their legacy value."""
    legacy = legacy_values(type(cfg))
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in drop and not (k in legacy and v == legacy[k])}


def identity_of(config_cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """`identity` of a Config already written out as a dict (a record's `config`)."""
    legacy = legacy_values(config_cls)
    return {k: v for k, v in config.items() if not (k in legacy and v == legacy[k])}


def subset_rule(cfg: Any) -> str:
    """How the labelled subset is chosen: the Config's `subset`, else its protocol's default
    (official: the first N training files by name, as the official scripts; converged: a random
    draw per seed)."""
    rule = getattr(cfg, "subset", None)
    if rule is not None:
        return str(rule)
    return "sorted" if getattr(cfg, "protocol", "converged") == "official" else "random"
