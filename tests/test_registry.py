"""The plugin registry, parametrised over every registered plugin (timm style)."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from bench import registry
from bench.plugin import Plugin
from bench.ssl import SSLMethod
from bench.supervised import SupervisedMethod


@pytest.mark.parametrize("name", registry.names())
def test_every_plugin_is_complete(name: str) -> None:
    cls = registry.get(name)
    assert cls.name == name and cls.kind in registry.KINDS and cls.summary
    assert issubclass(cls, SSLMethod if cls.kind == "ssl" else SupervisedMethod)
    assert dataclasses.is_dataclass(cls.Config)
    assert {"tiny", "paper"} <= set(cls.presets)  # and "small" where a plugin has one
    for cfg in cls.presets.values():
        assert isinstance(cfg, cls.Config)
    assert cls.param_count() > 0


@pytest.mark.parametrize("name", registry.names())
def test_tiny_model_is_smaller_than_paper_model(name: str) -> None:
    cls = registry.get(name)
    tiny = cls(cls.presets["tiny"]).build_model()
    assert sum(p.numel() for p in tiny.parameters()) < cls.param_count()


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        @registry.register("unet", "supervised")
        class Other(Plugin):  # noqa: F841 - the decorator is what is tested
            pass


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register("x", "unsupervised")


def test_unknown_method_is_a_bench_error() -> None:
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="unknown method 'nope'"):
        registry.get("nope")


def test_entry_point_plugins_are_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = []

    class FakeEntryPoint:
        def load(self) -> None:
            loaded.append(True)

    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint()] if group == "bench.plugins" else [])
    registry.discover()
    assert loaded == [True]


def test_bench_list_json() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "list", "--json"], capture_output=True, text=True, check=True)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert {"ddpm", "unet"} <= set(rows)
    assert rows["ddpm"]["kind"] == "ssl" and rows["unet"]["kind"] == "supervised"
    for row in rows.values():
        assert {"name", "kind", "summary", "params"} <= set(row) and row["params"] > 0
