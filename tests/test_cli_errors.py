"""Bad input through `bench run --config`: exit 2, one line naming file and field, nothing written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from tests.conftest import TINY_SWEEP, write_sweep


def _glas_folder(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    stems = [f"train_{i}" for i in range(1, n_train + 1)] + [f"testA_{i}" for i in range(1, n_test + 1)]
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / f"{stem}.png")
        anno = np.zeros((40, 48), np.uint8)
        anno[5:20, 5:20] = 1
        Image.fromarray(anno).save(root / f"{stem}_anno.png")
    return root


def _glas_sweep(tmp_path: Path, data: Path) -> Path:
    return write_sweep(tmp_path, f'seeds = [0]\nmethods = ["unet"]\noutput = "out"\n'
                                 f'[[datasets]]\nname = "glas"\nroot = "{data}"\nlabel_fractions = [1.0]\n')


def _fails_cleanly(config: Path, capsys: pytest.CaptureFixture, *expected: str, extra: list[str] | None = None) -> None:
    code = main(["run", "--config", str(config), "--quiet", *(extra or [])])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("bench: error: ")
    for text in expected:
        assert text in err
    assert not (config.parent / "out").exists() and not (config.parent / "results").exists()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("preset = \n", "not valid TOML"),
        (TINY_SWEEP.replace('"unet"', '"unet3000"'), "methods[1]: unknown method 'unet3000'"),
        (TINY_SWEEP.replace("synthetic-glands", "cityscapes"), "datasets[0].name: unknown dataset"),
        (TINY_SWEEP.replace("[1.0, 0.1]", "[1.0, 2]"), "datasets[0].label_fractions: 2 is outside (0, 1]"),
        (TINY_SWEEP.replace('name = "synthetic-glands"', 'name = "glas"\nroot = "nowhere"'), "datasets[0].root"),
        (TINY_SWEEP.replace("seeds = [0, 1]", "seeds = [0, 1]\nsedes = 3"), "sedes: unknown key"),
        (TINY_SWEEP.replace("seeds = [0, 1]", 'seeds = "0..9"'), "seeds: expected"),
    ],
)
def test_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture, body: str, expected: str) -> None:
    config = write_sweep(tmp_path, body)
    _fails_cleanly(config, capsys, str(config), expected)


def test_unwritable_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    config = write_sweep(tmp_path, TINY_SWEEP.replace('output = "results"', 'output = "blocker/results"'))
    _fails_cleanly(config, capsys, "output: cannot create")


def test_corrupt_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _glas_folder(tmp_path / "GlaS")
    (data / "train_2.png").write_bytes(b"\x89PNG this is not an image")
    _fails_cleanly(_glas_sweep(tmp_path, data), capsys, "train_2.png")


def test_missing_label(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _glas_folder(tmp_path / "GlaS")
    (data / "testA_1_anno.png").unlink()
    _fails_cleanly(_glas_sweep(tmp_path, data), capsys, "testA_1")


def test_label_that_does_not_match_its_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _glas_folder(tmp_path / "GlaS")
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(data / "train_3_anno.png")
    _fails_cleanly(_glas_sweep(tmp_path, data), capsys, "train_3_anno.png")


def test_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write_sweep(tmp_path, TINY_SWEEP)
    _fails_cleanly(config, capsys, "params.unet.crop", extra=["--set", "params.unet.crop=big"])


def test_the_error_is_one_line_without_traceback_in_a_real_process(tmp_path: Path) -> None:
    config = write_sweep(tmp_path, TINY_SWEEP.replace('"ddpm"', '"mdm2"'))
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--config", str(config)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "Traceback" not in proc.stderr and "methods[0]: unknown method 'mdm2'" in proc.stderr
