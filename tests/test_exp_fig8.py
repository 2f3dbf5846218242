"""fig8 end to end: `bench experiment fig8 --preset tiny` on synthetic-glands, shrunk for CI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.corruptions import PAPER_CORRUPTIONS, SEVERITIES
from bench.experiments import fig8
from tests.conftest import sweep_toml, write_sweep

# The tiny preset shrunk further, as tests/test_executors.py does, so a run takes seconds.
SWEEP = sweep_toml(["unet", "ddpm"], seeds=(0, 1), params={
    "unet": {"max_side": 64, "crop": 32, "max_epochs": 2, "steps_per_epoch": 3},
    "ddpm": {"train_steps": 4, "max_side": 64, "window": 32, "channel_mult": [1, 1], "attention_resolutions": [],
             "blocks_medical": [1, 2, 3], "blocks_natural": [1, 2, 3], "probe_ensemble": 2, "probe_max_epochs": 2,
             "probe_pixels_per_epoch": 4096, "overlap": 0.0},
})
CORRUPTIONS = ("gaussian_noise", "contrast", "jpeg_compression")
SEVERITIES_TESTED = (1, 5)


def test_defaults_are_the_papers_fifteen_by_five() -> None:
    for preset in ("tiny", "paper"):
        cfg = fig8.CONFIGS[preset]
        assert cfg.corruptions == PAPER_CORRUPTIONS and cfg.severities == SEVERITIES and cfg.fraction == 1.0
    assert fig8.CONFIGS["paper"].max_images is None
    assert len(fig8.METHODS) == 9


def test_runs_use_glas_and_monuseg_when_configured(tmp_path: Path) -> None:
    """No run is made here: only the list of specs the experiment asks for."""
    from bench.config import DatasetEntry, SweepConfig
    from bench.experiments.base import ExperimentContext

    sweep = SweepConfig(datasets=(DatasetEntry("glas", str(tmp_path)), DatasetEntry("synthetic-glands")),
                        methods=("unet", "mdm", "swav"), seeds=(0, 1, 2), preset="paper", output=str(tmp_path))
    ctx = ExperimentContext(name="fig8", sweep=sweep)
    runs = fig8.Fig8().runs(ctx)
    assert {r.dataset for r in runs} == {"glas"} and not ctx.notes
    assert [r.method for r in runs[::3]] == [*fig8.METHODS, "swav"]  # Table 1's nine, then the extra one
    assert all(r.fraction == 1.0 and r.robustness.max_images is None for r in runs)
    assert all(len(r.robustness.corruptions) * len(r.robustness.severities) == 75 for r in runs)


@pytest.mark.slow
def test_fig8_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(fig8, "METHODS", ("unet", "ddpm"))
    small = fig8.Fig8Config(corruptions=CORRUPTIONS, severities=SEVERITIES_TESTED, max_images=2)
    monkeypatch.setattr(fig8, "CONFIGS", {**fig8.CONFIGS, "tiny": small})
    config = write_sweep(tmp_path, SWEEP)
    args = ["experiment", "fig8", "--config", str(config), "--preset", "tiny", "--quiet"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "fig8 uses synthetic-glands" in captured.err  # neither GlaS nor MoNuSeg configured

    out = tmp_path / "results" / "fig8"
    names = {p.name for p in out.iterdir()}
    for stem in ("severity", "corruptions_synthetic-glands"):
        assert {f"{stem}.png", f"{stem}.pdf"} <= names
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert {"table.md", "table.tex", "table.csv", "robustness.csv"} <= names

    md = (out / "table.md").read_text()
    assert all(label in md for label in ("clean", "severity 1", "severity 5", "UNet", "DDPM"))
    assert "synthetic-glands" in md  # the fallback note is a footnote

    rows = list(csv.DictReader((out / "robustness.csv").open()))
    assert len(rows) == 2 * 2 * (1 + len(CORRUPTIONS) * len(SEVERITIES_TESTED))  # methods x seeds x points
    assert {r["corruption"] for r in rows} == {"none", *CORRUPTIONS}

    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "records").iterdir()]
    assert len(records) == 4
    for r in records:
        assert set(r["robustness"]["corruptions"]) == set(CORRUPTIONS) and len(r["robustness"]["images"]) == 2

    # A second call finds every record and only rewrites the outputs.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "records").iterdir()}
    assert main(args) == 0
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results" / "records").iterdir()}
