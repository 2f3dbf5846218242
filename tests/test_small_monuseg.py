"""The `small` preset, not re-tuned, end to end on MoNuSeg-format data, for every registered plugin.

The small settings were chosen on GlaS (docs/small-preset.md); the promise is that the
same settings run on MoNuSeg as they are. There is no real MoNuSeg copy here, so the test writes
its release format: 320 x 320 LZW TIFFs with nuclei as Aperio XML polygons, `train/` in the
training release's layout and `test/` flat. The nuclei are about 22 px across, as MoNuSeg's, so
the images are resized to 293 px: not to the preset's 256-px cap, which would shrink them
below the working scale's 20 px (bench/data/scale.py). Each run is a smoke run (2 steps a stage, whole images, sliding windows, AJI on the
instances): every shape and field of the small path, not its numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench import registry
from bench.cli import main
from bench.records import load_records
from bench.smoke import parse_smoke
from bench.smoke.run import smoke_overrides
from tests.conftest import make_sweep, write_monuseg_case

SIDE = 320  # > the small preset's 256-px cap, so the resize path runs (raised above the cap by the nuclei)
SMOKE = {"steps": 2, "epochs": 1, "labelled": 2, "test": 1, "batch": 2, "probe_ensemble": 2, "one_window": False}


def _nuclei(rng: np.random.Generator, n: int) -> list[list[tuple[float, float]]]:
    """`n` octagons of radius 10-13 px (19-25 px across) at random centres: nuclei at MoNuSeg's 40x."""
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(14, SIDE - 14, 2)
        r = rng.uniform(10, 13)
        out.append([(round(cx + r * math.cos(a), 1), round(cy + r * math.sin(a), 1))
                    for a in np.linspace(0, 2 * math.pi, 8, endpoint=False)])
    return out


@pytest.fixture(scope="module")
def monuseg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("MoNuSeg")
    rng = np.random.default_rng(0)
    train = root / "train"
    for stem in ("TCGA-18-5592-01Z-00-DX1", "TCGA-21-5784-01Z-00-DX1", "TCGA-38-6178-01Z-00-DX1"):
        write_monuseg_case(train / "Tissue Images", train / "Annotations", stem, _nuclei(rng, 30), (SIDE, SIDE))
    for stem in ("TCGA-2Z-A9J9-01A-01-TS1", "TCGA-44-2665-01B-06-BS6"):
        write_monuseg_case(root / "test", root / "test", stem, _nuclei(rng, 30), (SIDE, SIDE))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", registry.names())
def test_small_preset_runs_on_monuseg_format(name: str, monuseg_root: Path, tmp_path: Path,
                                             one_thread: None) -> None:
    config = make_sweep(tmp_path, [name], preset="small", dataset="monuseg", root=str(monuseg_root),
                        tables={"smoke": SMOKE})
    # In this process (`debug` runs the job objects Slurm would): no spawned child, seconds saved.
    assert main(["run", "--smoke", "--executor", "debug", "--config", str(config), "--quiet"]) == 0
    (record,) = load_records(tmp_path / "results" / "smoke", smoke=True)
    assert (record["method"], record["preset"], record["dataset"]) == (name, "small", "monuseg")
    # The preset as written: the only overrides are the smoke's caps on counts, none re-tuned.
    small = registry.get(name).resolve_config("small", {})
    assert record["params"] == smoke_overrides(small, "medical", parse_smoke(SMOKE, config))
    scale = record["extra"]["working_scale"]  # the record says at which size the run worked
    fixed = getattr(small, "input_size", None)
    if fixed:
        assert scale["side"] == [fixed, fixed]
    else:
        assert scale["raised"] and 256 < scale["side"][0] < SIDE
    metrics = record["metrics"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("dice", "iou", "aji")), metrics
