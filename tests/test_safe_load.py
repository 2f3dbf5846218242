"""A pickle planted in a shared results folder is refused with one line, never executed."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import load_config
from bench.errors import DataError
from bench.runner import expand
from bench.store import atomic_torch_save, load_torch
from tests.conftest import sweep_toml, write_sweep

SWEEP = sweep_toml(["ddpm"], fractions=(0.1,))


class Planted:
    """Unpickling this calls open(marker, "w"): code run by merely loading the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": Planted(marker), "seconds": 1.0}, path)


def test_the_planted_file_would_run_code_if_unpickled(tmp_path: Path) -> None:
    """The control: with weights_only=False the same file does create the marker."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / "a.pt", marker)
    torch.load(tmp_path / "a.pt", weights_only=False)
    assert marker.exists()


def test_load_torch_refuses_objects_and_reads_plain_state(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _plant(tmp_path / "a.pt", marker)
    with pytest.raises(DataError, match=r"a\.pt: refusing to load .*Python objects"):
        load_torch(tmp_path / "a.pt")
    assert not marker.exists()
    plain = {"w": torch.ones(2), "rng": torch.get_rng_state(), "n": 3, "xs": [1.5, "a"], "t": (0.9, 0.99)}
    atomic_torch_save(tmp_path / "b.pt", plain)
    loaded = load_torch(tmp_path / "b.pt")
    assert torch.equal(loaded["rng"], plain["rng"]) and loaded["xs"] == [1.5, "a"]


@pytest.mark.parametrize("where", ["artefact", "checkpoint"])
def test_bench_run_refuses_a_planted_pickle(tmp_path: Path, capsys: pytest.CaptureFixture, where: str) -> None:
    config = write_sweep(tmp_path, SWEEP)
    spec = expand(load_config(config, []))[0]
    artefact = spec.artefact()
    assert artefact is not None
    if where == "artefact":
        target = artefact
    else:  # the first loop's resume state of the pre-training that builds the artefact
        target = spec.checkpoint_path(artefact).with_name(f"{artefact.stem}.loop0.pt")
    marker = tmp_path / "pwned"
    _plant(target, marker)
    assert main(["run", "--config", str(config), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"bench: error: {target}: refusing to load"), err
    assert not marker.exists()
    assert not list(tmp_path.rglob("records/*.json"))
