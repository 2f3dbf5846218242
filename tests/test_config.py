"""bench.toml validation: every mistake is one ConfigError naming the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.config import apply_override, load_config
from bench.errors import ConfigError
from tests.conftest import TINY_SWEEP, sweep_toml, write_sweep


def test_default_sweep_file_parses() -> None:
    sweep = load_config(Path(__file__).resolve().parents[1] / "bench.toml")
    assert sweep.methods == ("ddpm", "unet")
    assert sweep.seeds == tuple(range(10))
    assert sweep.preset == "tiny"
    assert [d.name for d in sweep.datasets] == ["synthetic-glands"]
    assert sweep.datasets[0].label_fractions == (1.0, 0.1)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    sweep = load_config(write_sweep(tmp_path, TINY_SWEEP))
    assert Path(sweep.output) == tmp_path / "results"


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, TINY_SWEEP)
    sweep = load_config(path, ["preset=paper", "seeds=[3, 4]", "params.unet.crop=128", "output=out"])  # crop: not pinned by the paper preset's protocol
    assert sweep.preset == "paper" and sweep.seeds == (3, 4)
    assert sweep.params == {"unet": {"crop": 128}}
    assert Path(sweep.output) == tmp_path / "out"


def test_override_of_a_list_element() -> None:
    raw = {"datasets": [{"name": "glas"}]}
    apply_override(raw, "datasets.0.root=/data/GlaS")
    assert raw["datasets"][0]["root"] == "/data/GlaS"


@pytest.mark.parametrize(
    ("change", "key", "expected"),
    [
        ('preset = "huge"', "preset", "expected one of tiny, small, paper"),
        ('colour = "red"', "colour", "unknown key"),
        ('seeds = "all"', "seeds", "list of non-negative integers"),
        ('seeds = [1, 1]', "seeds", "listed twice"),
        ('methods = ["ddpm", "nope"]', "methods[1]", "unknown method 'nope'"),
        ('methods = []', "methods", "non-empty list"),
        ('executor = "cloud"', "executor", "expected one of"),
        ('output = 3', "output", "folder path"),
    ],
)
def test_bad_top_level_values(tmp_path: Path, change: str, key: str, expected: str) -> None:
    body = "\n".join(line for line in TINY_SWEEP.splitlines() if not line.startswith(change.split(" ")[0] + " "))
    path = write_sweep(tmp_path, change + "\n" + body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert expected in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("dataset_block", "key", "expected"),
    [
        ('name = "imagenet"', "datasets[0].name", "unknown dataset 'imagenet'"),
        ('name = "synthetic-glands"\nlabel_fractions = [0.0]', "datasets[0].label_fractions", "outside (0, 1]"),
        ('name = "synthetic-glands"\nlabel_fractions = [1.5]', "datasets[0].label_fractions", "outside (0, 1]"),
        ('name = "synthetic-glands"\nlabel_fractions = ["all"]', "datasets[0].label_fractions", "list of numbers"),
        ('name = "glas"', "datasets[0].root", "required for glas"),
        ('name = "glas"\nroot = "no/such/folder"', "datasets[0].root", "does not exist"),
        ('name = "glas"\nsize = 3', "datasets[0].size", "unknown key"),
    ],
)
def test_bad_dataset_tables(tmp_path: Path, dataset_block: str, key: str, expected: str) -> None:
    path = write_sweep(tmp_path, f'methods = ["unet"]\n[[datasets]]\n{dataset_block}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert expected in str(info.value)


def test_method_params_are_checked_against_the_plugin_config(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, TINY_SWEEP + '\n[params.unet]\nbatch = "big"\n')
    with pytest.raises(ConfigError, match=r"params.unet.batch: expected int"):
        load_config(path)
    path = write_sweep(tmp_path, TINY_SWEEP + "\n[params.unet]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match=r"params.unet.learning_rate: unknown field"):
        load_config(path)
    path = write_sweep(tmp_path, TINY_SWEEP + "\n[params.mae]\nsteps = 1\n")
    with pytest.raises(ConfigError, match=r"params.mae: 'mae' is not in methods"):
        load_config(path)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write_sweep(tmp_path, "preset = \n"))
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(write_sweep(tmp_path, TINY_SWEEP), ["preset"])


def test_a_preset_override_is_checked_like_the_files_own_preset(tmp_path: Path) -> None:
    """`bench experiment --preset tiny` on a paper sweep: an override valid at paper (MAE's 10 of 24
    blocks) but not at tiny (4 blocks) is one ConfigError naming file and field, before any run."""
    from bench.config import with_preset

    path = write_sweep(tmp_path, sweep_toml(["mae"], preset="paper", params={"mae": {"feature_blocks": 10}}))
    sweep = load_config(path)
    assert with_preset(sweep, None) is sweep and with_preset(sweep, "paper") is sweep
    with pytest.raises(ConfigError, match=r"params.mae.feature_blocks: must be in 1..4") as info:
        with_preset(sweep, "tiny")
    assert info.value.key == "params.mae.feature_blocks"
