"""Base classes of a plugin: a named, registered method with a Config dataclass and presets.

A plugin declares its knobs once, as a dataclass, and two instances of it: `tiny` (runs on a
2-core CPU in seconds) and `paper` (the published configuration). bench.toml may override any
field per method; those overrides are type-checked here so a typo fails before a run starts.
"""
from __future__ import annotations

import abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence, Union

import numpy as np
import torch
from torch import nn

from bench.data.types import Dataset, Sample
from bench.errors import ConfigError, FieldError
from bench.presets import PRESETS
from bench.protocol import apply_protocol

if TYPE_CHECKING:
    from bench.context import RunContext, RunOutput
    from bench.pretrain import PretrainSchedule

# Makes the exception for a bad `params.NAME.<key>` value: (key, message) -> exception.
FieldErrorFactory = Callable[[str, str], Exception]

# Predicts one more image with a run's trained model: (sample, feature-cache key) -> class map.
# A plugin's `run(..., on_trained=f)` calls f with one after training, so the runner can test
# the same model on extra images (the robustness evaluation); the key names the image set so
# a cache never mixes those images' features with the clean test images'.
Predictor = Callable[[Sample, str], np.ndarray]


class Plugin(abc.ABC):
    """A method of the benchmark. Subclass `SSLMethod` or `SupervisedMethod`, not this.

    The methods marked abstract are the ones a plugin must write; `bench.registry.register`
    refuses a class that leaves one out (or whose Config or presets are malformed), in one line,
    when its module is imported (`definition_problems`).
    """

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    # Why this plugin's `tiny` preset cannot beat the constant predictor, when it cannot (the
    # registry tests then only check that it runs); empty for every plugin that can.
    tiny_at_chance: ClassVar[str] = ""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @classmethod
    def resolve_config(cls, preset: str, overrides: dict[str, Any] | None = None,
                       error: FieldErrorFactory | None = None) -> Any:
        """The preset's config with bench.toml's `[params.NAME]` overrides and, under protocol
        "official", the protocol's pins applied (bench.protocol).

        Field types are checked here and the Config's own `__post_init__` checks run on the
        result; either failure becomes `error(key, message)` (default: a ValueError naming
        `params.NAME.key`; the config loader passes one naming the sweep file or `--set`).
        """
        def fail(key: str, msg: str) -> Exception:
            return FieldError(f"params.{cls.name}.{key}", msg)

        error = error or fail
        values = cls.check_overrides(overrides or {}, error)
        try:
            return apply_protocol(dataclasses.replace(cls.presets[preset], **values), values)
        except FieldError as exc:
            raise error(exc.field, exc.message) from None
        except ConfigError as exc:  # a nested network config (e.g. a port's) rejects a derived value
            raise error(exc.key, f"{exc.message} ({exc.path})") from None

    @classmethod
    def check_overrides(cls, table: dict[str, Any], error: FieldErrorFactory) -> dict[str, Any]:
        """Check each override against the Config's field types; return them coerced."""
        hints = typing.get_type_hints(cls.Config)
        out = {}
        for key, value in table.items():
            if key not in hints:
                raise error(key, f"unknown field; {cls.name} has: {', '.join(sorted(hints))}")
            ok, coerced = _coerce(value, hints[key])
            if not ok:
                raise error(key, f"expected {_type_name(hints[key])}, got {value!r}")
            out[key] = coerced
        return out

    @classmethod
    def definition_problems(cls) -> list[str]:
        """What is wrong with the class as written, one line each (empty: nothing). Cheap: no model
        is built, so `register` runs it on every plugin as it is defined; `bench.contract` adds
        the checks that build and run the tiny model."""
        out = []
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            out.append(f"does not implement {', '.join(missing)}")
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
            return out + ["Config is not a dataclass: declare `Config = MyConfig`, a @dataclass(frozen=True)"]
        if not config.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            out.append(f"Config {config.__name__} is not frozen: declare it @dataclass(frozen=True)")
        presets = getattr(cls, "presets", None)
        if not isinstance(presets, dict):
            return out + [f"presets is not a dict of {', '.join(PRESETS)}"]
        absent = [p for p in PRESETS if p not in presets]
        if absent:
            out.append(f"no {', '.join(repr(p) for p in absent)} preset: every plugin needs {', '.join(PRESETS)}")
        out += [f"presets[{p!r}] is a {type(presets[p]).__name__}, not a {config.__name__}"
                for p in PRESETS if p in presets and not isinstance(presets[p], config)]
        return out

    @abc.abstractmethod
    def build_model(self, num_classes: int = 2) -> nn.Module:
        """The network whose parameters `bench list` counts."""

    @abc.abstractmethod
    def run(self, ctx: RunContext, train: Sequence[Sample], test: Dataset,
            on_trained: Callable[[Predictor], None] | None = None) -> RunOutput:
        """Train on `train`, predict every image of `test`; `on_trained` gets a Predictor after training."""

    # What the runner, planner and smoke runs ask of every plugin; only SSL methods pre-train, so
    # the defaults say "no shared artefacts" and SSLMethod overrides them.
    def stage_artefacts(self, ctx: RunContext) -> list[Path]:
        """The shared artefacts a run needs, in build order (none by default)."""
        return []

    def build_stage(self, artefact: Path, ctx: RunContext) -> None:
        """Build one of `stage_artefacts` (and, where it needs them, the ones before it)."""
        raise NotImplementedError(f"{self.name} builds no shared artefacts")

    def schedules(self) -> dict[str, PretrainSchedule]:
        """The pre-training stages in order, by the `desc` their `bench.pretrain.pretrain` loop
        gets: what `bench run --smoke` scales its measured step times by (empty: none, or
        unknown). `bench.contract` runs the tiny pre-training and checks the keys are the stages
        that ran."""
        return {}

    def pretrain_batches(self) -> tuple[int, ...]:
        """The global batch of each pre-training loop (what data-parallel processes must divide):
        the batches of `schedules()`, the one declaration of the loops."""
        return tuple(s.batch for s in self.schedules().values())

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        """A state dict for `build_model()` from `params.NAME.checkpoint`, loaded strictly."""
        raise NotImplementedError(f"{self.name} takes no checkpoint")

    @classmethod
    def param_count(cls) -> int:
        """Parameters of the default `paper` model, built on the meta device (no memory)."""
        with torch.device("meta"):
            model = cls(cls.resolve_config("paper")).build_model()
        return sum(p.numel() for p in model.parameters())


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        for arm in typing.get_args(hint):
            ok, out = _coerce(value, arm)
            if ok:
                return True, out
        return False, None
    if hint is type(None):
        return value is None, None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, None
        args = typing.get_args(hint)
        if args and Ellipsis not in args and len(value) != len(args):  # tuple[int, int]: exactly two
            return False, None
        arm = args[0] if args else Any
        items = [_coerce(v, arm) for v in value]
        return all(ok for ok, _ in items), tuple(v for _, v in items)
    if hint is Any:
        return True, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if hint is int:
        return type(value) is int, value
    if hint is str:
        return isinstance(value, str), value
    if origin is typing.Literal:
        return value in typing.get_args(hint), value
    return isinstance(value, hint), value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
