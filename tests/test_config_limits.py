"""Every field of every registered plugin's Config, broken one value at a time, from the sweep file
and from `--set`: each case is exit status 2 and one line naming the file (or the `--set`) and
`params.METHOD.field`, with nothing written.

The cases are generated from the dataclasses: a field's type (a Literal's names, a number, a
tuple's length) and its declared limit (bench.limits) give the values that must be refused, so a
new field, or a new plugin, is covered without a new test. In-process (bench.cli.main): a few
seconds for the whole set.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Union

import pytest

from bench import limits, registry
from bench.cli import main
from bench.limits import Limit, Text
from tests.conftest import sweep_toml

PRESET = "tiny"


def _core(hint: Any) -> Any:
    """The type inside `X | None` (TOML cannot write None, so only X's values can be broken)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(arms) == 1, hint
        return arms[0]
    return hint


def _out_of_range(number: type, rule: Limit) -> list[float]:
    """Values just outside `rule`'s range (and, for a float, the non-finite ones)."""
    out: list[float] = []
    if math.isfinite(rule.low):
        out.append(rule.low if rule.low_open else rule.low - 1)
    if math.isfinite(rule.high):
        out.append(rule.high if rule.high_open else rule.high + 1)
    values = [number(v) for v in out]
    return values + ([math.nan, math.inf, -math.inf] if number is float else [])


def _toml(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def bad_values(hint: Any, rule: limits.Rule | None, preset: Any) -> list[tuple[str, str]]:
    """(label, TOML text) of values a field of type `hint` under `rule` must refuse."""
    hint = _core(hint)
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return [("unknown-name", '"no-such-choice"'), ("int-for-name", "3")]
    if hint is bool:
        return [("string-for-bool", '"yes"')]
    if hint is str:
        return [("empty", '""'), ("int-for-string", "3")]
    if hint in (int, float):
        limit = rule if isinstance(rule, Limit) else limits.NON_NEGATIVE
        cases = [(f"value-{_toml(v)}", _toml(v)) for v in _out_of_range(hint, limit)]
        cases += [("string-for-number", '"x"'), ("bool-for-number", "true")]
        return cases + ([("float-for-int", "1.5")] if hint is int else [])
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        fixed = Ellipsis not in typing.get_args(hint)
        item, base = args[0], list(preset) if preset else [1] * (len(args) if fixed else 1)
        limit = rule if isinstance(rule, Limit) else limits.NON_NEGATIVE
        cases = [("scalar-for-list", "3"), ("strings-in-list", "[" + ", ".join(['"x"'] * len(base)) + "]")]
        if fixed:
            cases.append(("one-value-too-many", _toml([*base, base[-1]])))
        elif limit.min_len:
            cases.append(("empty-list", "[]"))
        for v in _out_of_range(item, limit):
            cases.append((f"element-{_toml(v)}", _toml([v, *base[1:]])))
        return cases
    raise AssertionError(f"no malformed values for a field of type {hint}: teach bad_values this type")


CASES = [(m, f, v, label) for m in registry.names()
         for f, hint in limits.hints(registry.get(m).Config).items()
         for label, v in bad_values(hint, limits.declared(registry.get(m).Config).get(f),
                                    getattr(registry.get(m).presets[PRESET], f))]
FIRST = {(m, f): (m, f, v, label) for m, f, v, label in reversed(CASES)}  # each field's first case


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _refused(argv: list[str], folder: Path, capsys: pytest.CaptureFixture, where: str) -> str:
    before = _tree(folder)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert where in lines[0], lines[0]
    assert _tree(folder) == before  # nothing written
    return lines[0]


def test_every_field_of_every_plugin_has_cases() -> None:
    fields = {(m, f.name) for m in registry.names() for f in dataclasses.fields(registry.get(m).Config)}
    assert {(m, f) for m, f, _, _ in CASES} == fields
    assert len(CASES) >= 1500, len(CASES)


def test_every_number_and_free_string_declares_its_rule() -> None:
    """A number field needs a `Limit`, a free string a `Text` (an enumerated one is a Literal):
    a new field that declares neither fails here, not in a user's run."""
    missing = []
    for m in registry.names():
        cfg = registry.get(m).Config
        rules = limits.declared(cfg)
        missing += [f"{cfg.__name__}.{f}" for f in limits.number_fields(cfg) if not isinstance(rules.get(f), Limit)]
        missing += [f"{cfg.__name__}.{f} (type it Literal[...] if it is a choice)" for f in limits.text_fields(cfg)
                    if not isinstance(rules.get(f), Text)]
        missing += [f"{cfg.__name__}: LIMITS names {f}, which is no field" for f in rules
                    if f not in limits.hints(cfg)]
    assert missing == []


@pytest.mark.parametrize(("method", "field", "value", "label"), CASES,
                         ids=[f"{m}-{f}-{label}" for m, f, _, label in CASES])
def test_a_bad_value_in_the_sweep_file(tmp_path: Path, capsys: pytest.CaptureFixture, method: str, field: str,
                                       value: str, label: str) -> None:
    config = tmp_path / "bench.toml"
    config.write_text(sweep_toml([method], preset=PRESET) + f"\n[params.{method}]\n{field} = {value}\n")
    _refused(["run", "--config", str(config), "--dry-run"], tmp_path, capsys, f"{config}: params.{method}.{field}: ")


@pytest.mark.parametrize(("method", "field", "value", "label"), list(FIRST.values()),
                         ids=[f"{m}-{f}-{label}" for m, f, _, label in FIRST.values()])
def test_a_bad_value_from_set(tmp_path: Path, capsys: pytest.CaptureFixture, method: str, field: str,
                              value: str, label: str) -> None:
    config = tmp_path / "bench.toml"
    config.write_text(sweep_toml([method], preset=PRESET))
    item = f"params.{method}.{field}={value}"
    _refused(["run", "--config", str(config), "--dry-run", "--set", item], tmp_path, capsys,
             f"--set {item}: params.{method}.{field}: ")


def test_the_issue_cases_name_the_field() -> None:
    """The values an adversarial pass found accepted or crashing late, now refused at load time."""
    from bench.config import load_config
    from bench.errors import ConfigError

    for item, message in [("params.unet.optimizer=sgdx", "expected one of adam, adamw"),
                          ("params.unet.lr=inf", "finite"), ("params.unet.max_epochs=-1", ">= 1"),
                          ("params.unet.max_side=0", ">= 1"), ("params.ddpm.train_steps=-1", ">= 0"),
                          ("params.ddpm.probe_lr=nan", "finite"), ("params.ddpm.probe_ensemble=0", ">= 1"),
                          ("params.unet.overlap=nan", "finite"), ("params.unet.channels=[]", "at least 2")]:
        with pytest.raises(ConfigError) as err:
            load_config(_FILE, [item])
        assert err.value.path == f"--set {item}" and message in err.value.message, err.value


_FILE = Path(__file__).resolve().parents[1] / "bench.toml"


def test_valid_presets_keep_their_values() -> None:
    """Checking changes no value (run ids hash the resolved config)."""
    for m in registry.names():
        cls = registry.get(m)
        for preset in cls.presets.values():
            again = dataclasses.replace(preset)
            assert dataclasses.asdict(again) == dataclasses.asdict(preset)


def test_before_run_checks_fail_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What only a run needs (an smp encoder name, a local weights file) is checked by `bench run`
    before it writes anything, naming the field; `bench table` and `bench status` do not pay for it."""
    for method, field, value, expected in [("smp", "encoder", "no-such-encoder", "unknown encoder"),
                                           ("smp", "encoder_checkpoint", "missing.pt", "does not exist"),
                                           ("datasetddpm", "deeplab_encoder", "no-such-encoder", "unknown encoder")]:
        config = tmp_path / "bench.toml"
        config.write_text(sweep_toml([method], preset=PRESET, params={method: {field: value}}))
        line = _refused(["run", "--config", str(config), "--dry-run"], tmp_path, capsys,
                        f"{config}: params.{method}.{field}: ")
        assert expected in line
