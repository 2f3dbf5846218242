"""What every Config field may hold, declared once beside the field and checked when a Config is made.

Every Config dataclass (SupervisedConfig, SSLConfig and each plugin's Config) says what its
fields may hold, by type and in one table, `LIMITS`; `check_fields(cfg)`, the first thing each
Config's `__post_init__` does, checks every field against it:

- an enumerated string is typed `Literal[...]`: its values are the whole check, so a name that
  would silently fall back to a default (optimizer "sgdx" training with Adam) is refused;
- a number (int or float, and every element of a tuple of them) is checked against its `Limit`
  (a range; for a tuple also the number of elements); a float is always finite; a number field
  with no `Limit` must be >= 0;
- any other string has a `Text` entry saying what it names, with an optional check of the value
  and an optional `before_run` check that only a run needs (a file that must exist, a name whose
  list takes seconds to import), which `bench run` makes before anything is written.

Declarations are inherited: a subclass's `LIMITS` adds fields or redeclares one. A field whose
value is wrong is a `FieldError` naming it; the config loader turns that into one line naming
the sweep file (or `--set`) and `params.METHOD.field`. Checks between fields stay in the
Config's own `__post_init__`, after `check_fields`, so a single bad value is always reported
under its own name.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Union

from bench.errors import FieldError

# A check of one value: what is wrong with it, or None.
ValueCheck = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Limit:
    """The range a number (or each element of a tuple of numbers) must lie in, and for a tuple
    the fewest elements. `note` documents a special value inside the range (e.g. 0: no queue)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False      # low itself is refused
    high_open: bool = False     # high itself is refused
    min_len: int = 0            # tuples: at least this many elements
    note: str = ""

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = value >= self.high if self.high_open else value > self.high
        if too_low or too_high:
            return f"must be {self.describe(isinstance(value, int))}, got {value}"
        return None

    def describe(self, whole: bool = False) -> str:
        """The range in words; `whole`: for an integer (> 0 reads >= 1)."""
        if whole and self.low_open and float(self.low).is_integer() and not math.isfinite(self.high):
            return f">= {_num(self.low + 1)}"
        low, high = math.isfinite(self.low), math.isfinite(self.high)
        if low and high:
            return f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if low:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if high:
            return f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return "a finite number"


@dataclass(frozen=True)
class Text:
    """A free string field: what it names, and checks of its value (None: no problem).

    `check` runs whenever the Config is made; `before_run` only before a run is started (by
    `bench run`, `bench experiment`: a file that must exist on this machine, a name whose list is
    slow to import), so `bench table` and `bench status` never pay for it."""

    what: str
    check: ValueCheck | None = None
    before_run: ValueCheck | None = None


Rule = Union[Limit, Text]

# The usual limits, by what the number counts or is.
POSITIVE = Limit(low=0, low_open=True)   # a size, count, rate (for an int: >= 1)
NON_NEGATIVE = Limit(low=0)              # a seed, a weight decay, an index
UNIT = Limit(low=0, high=1, high_open=True)          # a fraction in [0, 1): a probability, a decay, an overlap
FRACTION = Limit(low=0, high=1, low_open=True)       # a fraction in (0, 1]


def at_least(low: float, min_len: int = 0, note: str = "") -> Limit:
    return Limit(low=low, min_len=min_len, note=note)


def positive(min_len: int = 0, note: str = "") -> Limit:
    return Limit(low=0, low_open=True, min_len=min_len, note=note)


def non_negative(min_len: int = 0, note: str = "") -> Limit:
    return Limit(low=0, min_len=min_len, note=note)


def declared(cls: type) -> dict[str, Rule]:
    """Every field rule of `cls`, its bases' first (a subclass's entry wins)."""
    out: dict[str, Rule] = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("LIMITS", {}))
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """The resolved type of every dataclass field of `cls` (resolved once per class)."""
    if cls not in _HINTS:
        resolved = typing.get_type_hints(cls)
        _HINTS[cls] = {f.name: resolved[f.name] for f in dataclasses.fields(cls)}
    return _HINTS[cls]


def check_fields(cfg: Any) -> None:
    """Raise FieldError for the first field of `cfg` that breaks its type or declared rule."""
    cls = type(cfg)
    rules = declared(cls)
    for name, hint in hints(cls).items():
        problem = value_problem(getattr(cfg, name), hint, rules.get(name))
        if problem is not None:
            raise FieldError(name, problem)


def before_run_problems(cfg: Any) -> list[tuple[str, str]]:
    """(field, problem) of every `Text.before_run` check `cfg` fails (what a run would find late)."""
    out = []
    for name, rule in declared(type(cfg)).items():
        value = getattr(cfg, name, None)
        if isinstance(rule, Text) and rule.before_run is not None and isinstance(value, str):
            problem = rule.before_run(value)
            if problem is not None:
                out.append((name, problem))
    return out


def value_problem(value: Any, hint: Any, rule: Rule | None) -> str | None:
    """What is wrong with `value` for a field of type `hint` under `rule`, or None."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None if len(arms) < len(typing.get_args(hint)) else "must be set"
        return value_problem(value, arms[0], rule) if len(arms) == 1 else None
    if origin is typing.Literal:
        options = typing.get_args(hint)
        return None if value in options else f"expected one of {', '.join(map(str, options))}, got {value!r}"
    if origin is tuple:
        if not isinstance(value, tuple):
            return f"expected a tuple, got {value!r}"
        return _tuple_problem(value, typing.get_args(hint), rule)
    if hint is bool:
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if hint in (int, float):
        if not (type(value) is int or (hint is float and type(value) is float)):  # an int is a float too
            return f"expected {'a whole number' if hint is int else 'a number'}, got {value!r}"
        return _number_problem(value, rule)
    if hint is str:
        if not isinstance(value, str):
            return f"expected a string, got {value!r}"
        if not value:
            return "must not be empty"
        if isinstance(rule, Text) and rule.check is not None:
            return rule.check(value)
    return None


def _number_problem(value: Any, rule: Rule | None) -> str | None:
    limit = rule if isinstance(rule, Limit) else NON_NEGATIVE
    return limit.problem(value)


def _tuple_problem(value: Any, args: tuple[Any, ...], rule: Rule | None) -> str | None:
    fixed = bool(args) and Ellipsis not in args
    if fixed and len(value) != len(args):
        return f"needs {len(args)} values, got {len(value)}"
    if isinstance(rule, Limit) and len(value) < rule.min_len:
        return f"needs at least {rule.min_len} value(s), got {len(value)}"
    arm = args[0] if args else Any
    for i, item in enumerate(value):
        problem = value_problem(item, arm, rule)
        if problem is not None:
            return f"{problem} (value {i + 1} of {list(value)})"
    return None


def number_fields(cls: type) -> list[str]:
    """The fields of `cls` holding numbers (int, float, or tuples of them; optional or not)."""
    return [name for name, hint in hints(cls).items() if _is_number(hint)]


def text_fields(cls: type) -> list[str]:
    """The fields of `cls` holding a free string (str, not a Literal; optional or not)."""
    return [name for name, hint in hints(cls).items() if _core(hint) is str]


def _core(hint: Any) -> Any:
    """The type inside `X | None` and inside a tuple."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        return _core(arms[0]) if len(arms) == 1 else hint
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return _core(args[0]) if args else hint
    return hint


def _is_number(hint: Any) -> bool:
    return _core(hint) in (int, float)


def _num(x: float) -> str:
    return f"{x:g}"
