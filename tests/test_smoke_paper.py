"""CI: the paper preset's smoke for every method on GlaS-shaped data, on the CPU.

Each of the twelve methods builds its paper-size model and takes real optimisation steps on
real-size windows (REFERENCE §3-§8 shapes), so a shape, dtype or config error in the `paper`
path fails here, not hours into a GPU queue. Uses the real GlaS copy next to the repository
when there is one, else six images the test writes in the GlaS release's format. Minutes, not
seconds: marked `smoke` (`-m "not smoke"` skips it). One step a stage: at 45-80 s a step of a
311M-parameter UNet on two cores, a second step would only refine an estimate CI does not read
(the estimates' arithmetic is tests/test_smoke.py's).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import registry
from bench.cli import main
from bench.records import load_records
from tests.conftest import GLAS, write_sweep

pytestmark = pytest.mark.smoke

TWELVE = ("ddpm", "mdm", "mae", "swav", "swavw2", "maskdm",
          "unet", "unetpp", "swin_unetr", "attunet", "uctransnet", "medt")
MAX_PEAK_GIB = 24          # the CI machine's memory; a run must stay well under it
GLAS_HW = (522, 775)       # the size of most GlaS images

SWEEP = """
preset = "paper"
seeds = [0]
output = "results"
methods = {methods}
[[datasets]]
name = "glas"
root = "{root}"
label_fractions = [1.0]
[smoke]
steps = 1      # proves every stage's path; `bench run --smoke` (3 steps, the first a warm-up) measures
batch = 1      # the smallest honest batch: paper batches of 311M-parameter UNets do not fit a CPU box
probe_ensemble = 2  # of 10: at 65,536 pixels x 13,440 dims (SwAVw2) one 10-member probe step takes minutes here
test = 1       # one test window: prediction is measured per window either way
"""


def _fake_glas(folder: Path) -> Path:
    """Four train and two testA images with instance maps, named and sized as the release's."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in ["train_1", "train_2", "train_3", "train_4", "testA_1", "testA_2"]:
        image = rng.integers(0, 256, (*GLAS_HW, 3), dtype=np.uint8)
        labels = np.zeros(GLAS_HW, dtype=np.uint8)
        for k in range(1, 6):
            y, x = rng.integers(40, GLAS_HW[0] - 40), rng.integers(40, GLAS_HW[1] - 40)
            labels[y - 30 : y + 30, x - 30 : x + 30] = k
        Image.fromarray(image).save(folder / f"{name}.png")
        Image.fromarray(labels).save(folder / f"{name}_anno.png")
    return folder


@pytest.fixture(scope="module")
def glas_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GLAS if GLAS.is_dir() else _fake_glas(tmp_path_factory.mktemp("data") / "GlaS")


def test_the_twelve_are_registered() -> None:
    assert set(TWELVE) <= set(registry.names())


@pytest.mark.parametrize("method", TWELVE)
def test_paper_smoke(method: str, glas_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One method per test, so a failure names it and --durations shows each one's minutes."""
    config = write_sweep(tmp_path, SWEEP.format(methods=f'["{method}"]', root=glas_root))
    code = main(["run", "--smoke", "--config", str(config), "--quiet"])
    table = capsys.readouterr().out
    with capsys.disabled():
        print(f"\npaper smoke of {method} on {glas_root}:\n{table}")
    assert code == 0
    (r,) = load_records(tmp_path / "results" / "smoke", smoke=True)
    s = r["smoke"]
    assert r["method"] == method and r["preset"] == "paper"
    assert s["peak_memory"]["rss"] < MAX_PEAK_GIB * 2**30
    steps = {k: v for k, v in s["stages"].items() if v["unit"] == "step"}
    assert steps and all(v["measured"] >= 1 and v["full_s"] > 0 for v in steps.values())
    if r["kind"] == "ssl":
        assert any(v.get("note", "").startswith("shared") for v in steps.values())
        assert r["extra"]["feature_dim"] > 0
    assert f"| {method} |" in table
