"""Malformed sweep files, one key at a time: each is exit status 2, one line naming the file and the
key, and nothing written. In-process (bench.cli.main), so the whole set runs in about a second."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.cli import main
from tests.conftest import sweep_toml

# The valid file every variant breaks one key of (by text, so the broken files stay hand-made).
BASE = sweep_toml(["ddpm", "unet"], seeds=(0, 1), fractions=(1.0, 0.1), executor="local",
                  params={"unet": {"max_epochs": 2}},
                  tables={"slurm": {"partition": "gpu"}, "slurm.pretrain": {"timeout_min": 60}})
DATASET = '[[datasets]]\nname = "synthetic-glands"\nlabel_fractions = [1.0, 0.1]\n'


def _swap(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (id, sweep text, key the error must name)
VARIANTS: list[tuple[str, str, str]] = [
    ("preset-int", _swap('preset = "tiny"', "preset = 3"), "preset"),
    ("preset-typo", _swap('preset = "tiny"', 'preset = "papr"'), "preset"),
    ("seeds-string", _swap("seeds = [0, 1]", 'seeds = "0"'), "seeds"),
    ("seeds-mixed", _swap("seeds = [0, 1]", 'seeds = [0, "1"]'), "seeds"),
    ("seeds-empty", _swap("seeds = [0, 1]", "seeds = []"), "seeds"),
    ("seeds-negative", _swap("seeds = [0, 1]", "seeds = [-1]"), "seeds"),
    ("seeds-2pow32", _swap("seeds = [0, 1]", "seeds = [4294967296]"), "seeds"),
    ("seeds-int64-max", _swap("seeds = [0, 1]", "seeds = [9223372036854775807]"), "seeds"),
    ("seeds-duplicate", _swap("seeds = [0, 1]", "seeds = [3, 3]"), "seeds"),
    ("seeds-float", _swap("seeds = [0, 1]", "seeds = [1.5]"), "seeds"),
    ("seeds-bool", _swap("seeds = [0, 1]", "seeds = [true]"), "seeds"),
    ("seeds-table", _swap("seeds = [0, 1]", "seeds = {a = 1}"), "seeds"),
    ("output-int", _swap('output = "results"', "output = 5"), "output"),
    ("output-empty", _swap('output = "results"', 'output = "  "'), "output"),
    ("output-nul", _swap('output = "results"', 'output = "res\\u0000ults"'), "output"),
    ("output-symlink-loop", _swap('output = "results"', 'output = "loop-a/results"'), "output"),
    ("executor-list", _swap('executor = "local"', 'executor = ["local"]'), "executor"),
    ("methods-string", _swap('methods = ["ddpm", "unet"]', 'methods = "unet"'), "methods"),
    ("methods-empty", _swap('methods = ["ddpm", "unet"]', "methods = []"), "methods"),
    ("methods-duplicate", _swap('methods = ["ddpm", "unet"]', 'methods = ["unet", "ddpm", "unet"]'), "methods"),
    ("methods-int", _swap('methods = ["ddpm", "unet"]', "methods = [1]"), "methods"),
    ("methods-unknown", _swap('methods = ["ddpm", "unet"]', 'methods = ["ddpm", "unet3000"]'), "methods[1]"),
    ("methods-missing", _swap('methods = ["ddpm", "unet"]\n', "").replace("[params.unet]\nmax_epochs = 2\n", ""),
     "methods"),
    ("datasets-missing", _swap(DATASET, ""), "datasets"),
    ("datasets-string", _swap(DATASET, "").replace('executor = "local"', 'executor = "local"\ndatasets = "glas"'),
     "datasets"),
    ("datasets-int-element", _swap(DATASET, "").replace('executor = "local"', 'executor = "local"\ndatasets = [1]'),
     "datasets[0]"),
    ("datasets-duplicate", _swap(DATASET, DATASET + "\n" + DATASET), "datasets[1]"),
    ("dataset-name-int", _swap('name = "synthetic-glands"', "name = 3"), "datasets[0].name"),
    ("dataset-name-list", _swap('name = "synthetic-glands"', 'name = ["synthetic-glands"]'), "datasets[0].name"),
    ("dataset-name-missing", _swap('name = "synthetic-glands"\n', ""), "datasets[0].name"),
    ("dataset-unknown-key", _swap('name = "synthetic-glands"', 'name = "synthetic-glands"\nfractions = [1.0]'),
     "datasets[0].fractions"),
    ("root-int", _swap('name = "synthetic-glands"', 'name = "synthetic-glands"\nroot = 3'), "datasets[0].root"),
    ("root-empty", _swap('name = "synthetic-glands"', 'name = "synthetic-glands"\nroot = ""'), "datasets[0].root"),
    ("root-symlink-loop", _swap('name = "synthetic-glands"', 'name = "glas"\nroot = "loop-a"'), "datasets[0].root"),
    ("root-missing-for-glas", _swap('name = "synthetic-glands"', 'name = "glas"'), "datasets[0].root"),
    ("fractions-string", _swap("label_fractions = [1.0, 0.1]", 'label_fractions = "1.0"'),
     "datasets[0].label_fractions"),
    ("fractions-empty", _swap("label_fractions = [1.0, 0.1]", "label_fractions = []"), "datasets[0].label_fractions"),
    ("fractions-zero", _swap("label_fractions = [1.0, 0.1]", "label_fractions = [0.0]"), "datasets[0].label_fractions"),
    ("fractions-nan", _swap("label_fractions = [1.0, 0.1]", "label_fractions = [nan]"), "datasets[0].label_fractions"),
    ("fractions-inf", _swap("label_fractions = [1.0, 0.1]", "label_fractions = [inf]"), "datasets[0].label_fractions"),
    ("fractions-bool", _swap("label_fractions = [1.0, 0.1]", "label_fractions = [true]"),
     "datasets[0].label_fractions"),
    ("fractions-duplicate", _swap("label_fractions = [1.0, 0.1]", "label_fractions = [1.0, 1]"),
     "datasets[0].label_fractions"),
    ("unknown-top-key", _swap("seeds = [0, 1]", "seeds = [0, 1]\nsedes = 3"), "sedes"),
    ("params-int", _swap("[params.unet]\nmax_epochs = 2", "").replace('executor = "local"',
                                                                       'executor = "local"\nparams = 3'), "params"),
    ("params-method-int", _swap("[params.unet]\nmax_epochs = 2", "[params]\nunet = 3"), "params.unet"),
    ("params-not-in-methods", _swap("[params.unet]", "[params.swav]"), "params.swav"),
    ("params-unknown-field", _swap("max_epochs = 2", "max_epoch = 2"), "params.unet.max_epoch"),
    ("params-wrong-type", _swap("max_epochs = 2", 'max_epochs = "many"'), "params.unet.max_epochs"),
    ("params-float-for-int", _swap("max_epochs = 2", "max_epochs = 2.5"), "params.unet.max_epochs"),
    ("params-checkpoint-missing", _swap("[params.unet]\nmax_epochs = 2", '[params.ddpm]\ncheckpoint = "none.pt"'),
     "params.ddpm.checkpoint"),
    ("params-checkpoint-loop", _swap("[params.unet]\nmax_epochs = 2", '[params.ddpm]\ncheckpoint = "loop-a/x.pt"'),
     "params.ddpm.checkpoint"),
    ("slurm-int", _swap('[slurm]\npartition = "gpu"\n\n[slurm.pretrain]\ntimeout_min = 60', "")
     .replace('executor = "local"', 'executor = "local"\nslurm = 3'), "slurm"),
    ("slurm-unknown-key", _swap('partition = "gpu"', 'partiton = "gpu"'), "slurm.partiton"),
    ("slurm-partition-empty", _swap('partition = "gpu"', 'partition = ""'), "slurm.partition"),
    ("slurm-mem-nan", _swap('partition = "gpu"', "mem_gb = nan"), "slurm.mem_gb"),
    ("slurm-mem-inf", _swap('partition = "gpu"', "mem_gb = inf"), "slurm.mem_gb"),
    ("slurm-checkpoint-nan", _swap('partition = "gpu"', "checkpoint_every_s = nan"), "slurm.checkpoint_every_s"),
    ("slurm-setup-string", _swap('partition = "gpu"', 'setup = "module load cuda"'), "slurm.setup"),
    ("slurm-kind-negative", _swap("timeout_min = 60", "timeout_min = -1"), "slurm.pretrain.timeout_min"),
    ("slurm-kind-unknown-key", _swap("timeout_min = 60", "timeout = 60"), "slurm.pretrain.timeout"),
    ("slurm-kind-not-table", _swap("[slurm.pretrain]\ntimeout_min = 60", "pretrain = 3"), "slurm.pretrain"),
    ("toml-syntax", _swap('preset = "tiny"', "preset = "), "(syntax)"),
    ("toml-duplicate-key", _swap('preset = "tiny"', 'preset = "tiny"\npreset = "paper"'), "(syntax)"),
]


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _assert_clean_failure(argv: list[str], folder: Path, capsys: pytest.CaptureFixture, where: str, key: str) -> None:
    before = _tree(folder)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert f"{where}: {key}:" in lines[0], lines[0]
    assert _tree(folder) == before  # nothing written


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    return tmp_path


def test_at_least_thirty_variants() -> None:
    assert len(VARIANTS) >= 30 and len({v[0] for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize(("body", "key"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_malformed_sweep_file(folder: Path, capsys: pytest.CaptureFixture, body: str, key: str) -> None:
    config = folder / "bench.toml"
    config.write_text(body)
    _assert_clean_failure(["run", "--config", str(config), "--dry-run"], folder, capsys, str(config), key)


def test_the_base_file_is_valid(folder: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.config import load_config

    (folder / "bench.toml").write_text(BASE)
    assert load_config(folder / "bench.toml").methods == ("ddpm", "unet")


@pytest.mark.parametrize(("name", "make", "key"), [
    ("non-utf8", lambda p: p.write_bytes(b'preset = "tiny\xff\xfe"\n'), "(syntax)"),
    ("directory", lambda p: p.mkdir(), "(file)"),
    ("missing", lambda p: None, "(file)"),
    ("symlink-loop", lambda p: os.symlink("loop-a", p), "(file)"),
])
def test_the_file_itself(folder: Path, capsys: pytest.CaptureFixture, name: str, make, key: str) -> None:
    config = folder / "bench.toml"
    make(config)
    _assert_clean_failure(["table", "--config", str(config)], folder, capsys, str(config), key)


def test_unreadable_file(folder: Path, capsys: pytest.CaptureFixture) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading (see the simulated test)")
    config = folder / "bench.toml"
    config.write_text(BASE)
    config.chmod(0)
    _assert_clean_failure(["run", "--config", str(config), "--dry-run"], folder, capsys, str(config), "(file)")


def test_unreadable_file_simulated(folder: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    """The same path when the OS refuses the read (what chmod 000 gives a non-root user)."""
    config = folder / "bench.toml"
    config.write_text(BASE)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    _assert_clean_failure(["run", "--config", str(config), "--dry-run"], folder, capsys, str(config), "(file)")


@pytest.mark.parametrize(("item", "key"), [("preset=papr", "preset"), ("seeds=[-1]", "seeds"),
                                           ("methods=[]", "methods"), ("datasets.0.name=3", "datasets[0].name"),
                                           ("slurm.mem_gb=nan", "slurm.mem_gb"), ("sedes=3", "sedes")])
def test_malformed_override(folder: Path, capsys: pytest.CaptureFixture, item: str, key: str) -> None:
    config = folder / "bench.toml"
    config.write_text(BASE)
    _assert_clean_failure(["run", "--config", str(config), "--dry-run", "--set", item], folder, capsys,
                          f"--set {item}", key)
