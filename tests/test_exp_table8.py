"""Table 8: the CIFAR-10 loader (real pickle format), the linear probe, and the experiment end to end."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.data.cifar10 import CIFAR10, clear_cache, load_cifar10, read_batch
from bench.errors import DataError
from bench.linear_probe import LinearProbeConfig, train_linear
from tests.conftest import REPO, make_sweep, sweep_toml, write_sweep

N_TRAIN, N_TEST, N_CLASSES_USED = 40, 20, 4
# A distinct colour per class: the pooled features of any backbone keep them apart.
PALETTE = np.array([[220, 30, 30], [30, 200, 40], [40, 40, 220], [230, 220, 40]], dtype=np.float64)


def _images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    labels = [i % N_CLASSES_USED for i in range(n)]
    base = PALETTE[labels][:, None, None, :]
    pix = base + rng.normal(0, 25, size=(n, 32, 32, 3))
    pix[:, 8:24, 8:24] = 255 - pix[:, 8:24, 8:24]  # some structure, not only a flat colour
    return np.clip(pix, 0, 255).astype(np.uint8), labels


def _batch(images: np.ndarray, labels: list[int], name: str) -> dict:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # N x 3072, R then G then B planes
    return {b"batch_label": name.encode(), b"labels": labels, b"data": data,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(len(images))]}


def make_cifar(root: Path, seed: int = 0) -> Path:
    """A tiny CIFAR-10 in the release's layout: 5 train batches of 8 images, 1 test batch of 20."""
    folder = root / CIFAR10.folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    train, train_labels = _images(N_TRAIN, rng)
    per = N_TRAIN // len(CIFAR10.train_batches)
    for i, name in enumerate(CIFAR10.train_batches):
        part = slice(i * per, (i + 1) * per)
        with open(folder / name, "wb") as f:
            pickle.dump(_batch(train[part], train_labels[part], name), f, protocol=2)
    test, test_labels = _images(N_TEST, rng)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_batch(test, test_labels, "test_batch"), f, protocol=2)
    with open(folder / CIFAR10.meta, "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10.class_names], b"num_vis": 3072}, f, protocol=2)
    return root


def test_loader_reads_the_pickle_format(tmp_path: Path) -> None:
    root = make_cifar(tmp_path / "cifar")
    clear_cache()
    train, test = load_cifar10(root, "train"), load_cifar10(root, "test")
    assert train.images.shape == (N_TRAIN, 32, 32, 3) and train.images.dtype == np.uint8
    assert len(test) == N_TEST and train.labels.tolist()[:5] == [0, 1, 2, 3, 0]
    assert train.class_names[0] == "airplane"
    # row-major planes: pixel (0, 0) of image 0 is data[0, 0], data[0, 1024], data[0, 2048]
    raw = pickle.load(open(root / CIFAR10.folder / "data_batch_1", "rb"), encoding="bytes")[b"data"]
    assert train.images[0, 0, 0].tolist() == [raw[0, 0], raw[0, 1024], raw[0, 2048]]
    assert train.images[0, 3, 5, 1] == raw[0, 1024 + 3 * 32 + 5]
    # the folder holding the batches works as a root too
    assert len(load_cifar10(root / CIFAR10.folder, "test")) == N_TEST
    assert not train.images.flags.writeable


@pytest.mark.parametrize("damage, message", [
    ("missing", r"data_batch_3: missing"),
    ("truncated", r"data_batch_3: not a readable CIFAR-10 pickle batch"),
    ("shape", r"data_batch_3: field 'data': expected shape N x 3072"),
    ("labels", r"data_batch_3: field 'labels': 7 labels for 8 images"),
    ("code", r"data_batch_3: not a readable CIFAR-10 pickle batch .*refusing to load"),
])
def test_loader_names_the_bad_batch(tmp_path: Path, damage: str, message: str) -> None:
    root = make_cifar(tmp_path / "cifar")
    path = root / CIFAR10.folder / "data_batch_3"
    batch = pickle.load(open(path, "rb"), encoding="bytes")
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "shape":
        batch[b"data"] = batch[b"data"][:, :3000]
        path.write_bytes(pickle.dumps(batch, protocol=2))
    elif damage == "labels":
        batch[b"labels"] = batch[b"labels"][:-1]
        path.write_bytes(pickle.dumps(batch, protocol=2))
    else:
        path.write_bytes(pickle.dumps({b"data": subprocess.Popen, b"labels": []}))
    clear_cache()
    with pytest.raises(DataError, match=message):
        load_cifar10(root, "train")


def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CIFAR-10 batches here"):
        load_cifar10(tmp_path, "train")
    with pytest.raises(DataError, match="missing"):
        read_batch(tmp_path / "test_batch")


def test_linear_probe_learns_a_separable_problem(one_thread: None) -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 4
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 16, generator=gen)
    cfg = LinearProbeConfig(epochs=20, batch=32, lr=1e-2)
    result = train_linear(x[:200], y[:200], x[200:], y[200:], 3, cfg, seed=0, device=torch.device("cpu"))
    assert result.top1 > 0.95 and result.train_top1 > 0.95
    shuffled = train_linear(x[:200], y[:200][torch.randperm(200, generator=gen)], x[200:], y[200:], 3, cfg,
                            seed=0, device=torch.device("cpu"))
    assert shuffled.top1 < 0.7  # labels without structure are not learnt: the probe is not cheating


SWEEP = sweep_toml(["ddpm", "mdm"], seeds=(0, 1), dataset="cifar10", root="cifar",
                   params={"ddpm": {"train_steps": 6}, "mdm": {"train_steps": 6}})


@pytest.mark.slow
def test_table8_end_to_end(tmp_path: Path) -> None:
    make_cifar(tmp_path / "cifar")
    config = write_sweep(tmp_path, SWEEP)
    # the debug executor: the very jobs Slurm would get (a pre-training job per backbone, then the
    # probe runs), in this process
    cmd = [sys.executable, "-m", "bench", "experiment", "table8", "--preset", "tiny", "--config", str(config),
           "--executor", "debug", "--quiet"]
    # one thread: tiny convolutions gain nothing from two, and a busy machine makes two thrash
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = sorted((tmp_path / "results" / "records").glob("cifar10-linear-*.json"))
    assert len(records) == 4
    for path in records:
        rec = json.loads(path.read_text())
        assert rec["dataset"] == "cifar10" and rec["kind"] == "linear_probe"
        assert 0.0 <= rec["metrics"]["top1"] <= 1.0 and rec["n_train"] == N_TRAIN and rec["n_test"] == N_TEST
        assert rec["provenance"]["seed"] == rec["seed"] and rec["config"]["window"] == 32
        assert rec["extra"]["feature_dim"] > 0
        curves = rec["history"]  # the artefact's pre-training curve and the probe's epochs
        assert any(k.endswith("pretrain") and v["step"] for k, v in curves.items()), curves.keys()
        assert len(curves["linear probe"]["loss"]) == rec["linear_probe"]["epochs"]
    accs = [json.loads(p.read_text())["metrics"]["top1"] for p in records]
    assert max(accs) > 1 / N_CLASSES_USED  # colour classes are linearly separable even for tiny backbones
    artefacts = list((tmp_path / "results" / "artefacts").rglob("cifar10-*.pt"))
    assert len(artefacts) == 2  # one per method, shared by both seeds
    out = tmp_path / "results" / "table8"
    for name in ("table.md", "table.tex", "table.csv"):
        assert (out / name).is_file()
    md = (out / "table.md").read_text()
    assert "MDM (U-Net)" in md and "DDPM (U-Net)" in md and "90.1" in md and "SimCLR" in md
    # a second call finds every record and only re-renders the table
    stamps = {p: p.stat().st_mtime_ns for p in records}
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0 and "all 4 runs are done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in records} == stamps
    assert sorted((tmp_path / "results" / "records").glob("cifar10-linear-*.json")) == records


def test_table8_runs_are_ordinary_runs_the_slurm_plan_ships(tmp_path: Path) -> None:
    """RunSpecs with `linear_probe`: one pre-training job per backbone (shared by the seeds), one
    array of probe runs after each; the record is the runner's, under an id of its own."""
    from bench.config import load_config
    from bench.executors.plan import make_plan
    from bench.experiments.base import ExperimentContext
    from bench.experiments.table8 import Table8

    make_cifar(tmp_path / "cifar")
    ctx = ExperimentContext(name="table8", sweep=load_config(write_sweep(tmp_path, SWEEP)))
    runs = Table8().runs(ctx)
    assert len(runs) == 4 and all(r.linear_probe is not None and r.params["window"] == 32 for r in runs)
    assert all(r.run_id.startswith(f"cifar10-linear-{r.method}-s{r.seed}-") for r in runs)
    plan = make_plan(runs)
    assert sorted(t.spec.method for t in plan.pretrain) == ["ddpm", "mdm"]
    assert {(a.kind, len(a.specs), a.artefact) for a in plan.arrays} == {("ssl", 2, t.artefact) for t in plan.pretrain}
    assert all(t.artefact.name.startswith("cifar10-") for t in plan.pretrain)


def test_cifar10_in_a_segmentation_sweep_is_refused(tmp_path: Path) -> None:
    from bench.data import get_dataset

    make_cifar(tmp_path / "cifar")
    with pytest.raises(DataError, match="classification set"):
        get_dataset("cifar10", tmp_path / "cifar", "train")


def test_without_a_cifar10_root_the_table_is_left_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.config import load_config
    from bench.experiments.base import ExperimentContext
    from bench.experiments.table8 import Table8

    config = make_sweep(tmp_path, ["mdm"], seeds=range(10), fractions=(1.0, 0.1))
    ctx = ExperimentContext(name="table8", sweep=load_config(config))
    assert Table8().runs(ctx) == [] and Table8().write(ctx) == []
    assert "cifar10: not among bench.toml's [[datasets]]" in capsys.readouterr().err


def test_published_rows_come_from_bench_published() -> None:
    from bench.experiments.table8 import COLUMN, published_cells

    cells = published_cells()
    assert cells[("DDPM (U-Net)", COLUMN)] == 90.1 and cells[("SimCLRv2 (ResNet-101)", COLUMN)] == 96.4
    assert ("MDM (U-Net)", COLUMN) not in cells and len(cells) == 5
