"""The benchmark scripts run and report: a broken report would lose minutes of measurement."""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def _script(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import benchmarks/NAME.py as a top-level module, as `python benchmarks/NAME.py` would
    (spawned worker processes re-import it by that name, so the folder goes on sys.path)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module(name)


def test_probe_perf_measures_and_reports_on_a_toy_shape(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    perf = _script("probe_perf", monkeypatch)
    toy = perf.PerfConfig(images=2, image_size=32, timesteps=1, block_channels=(8, 4), block_sizes=(8, 16),
                          num_classes=3, members=2, batches=(64,), timed_steps=(2,), gather_steps=2)
    monkeypatch.setattr(perf, "QUICK", toy)
    out = tmp_path / "perf.json"
    perf.main(["--quick", "--threads", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["memory"]["default"]["dim"] == 12  # 8 + 4 channels, one timestep
    assert result["memory"]["default"]["dense_bytes"] == 2 * 32 * 32 * 12 * 4  # float32, every pixel
    speed = result["speed"][0]
    assert speed["batch"] == 64 and speed["ensemble_px_s"] > 0 and speed["ceiling"] > 0
    text = capsys.readouterr().out
    assert "feature dim 12, 2 members" in text and "goals:" in text
