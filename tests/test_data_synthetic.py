"""The embedded synthetic-glands set: GlaS layout on disk, determinism, caching, H&E-like look."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

import bench.data.synthetic as synthetic
from bench.data import DATASETS, get_dataset
from bench.data.synthetic_config import SYNTHETIC_GLANDS, SyntheticGlandsConfig
from bench.errors import DataError

SMALL = SyntheticGlandsConfig(n_train=3, n_test=2, height=48, width=64, seed=7, gland_radius=(7.0, 12.0))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_default_set_is_generated_into_bench_cache_in_glas_layout(cache: Path) -> None:
    train = get_dataset("synthetic-glands", split="train")
    test = get_dataset("synthetic-glands", split="test")
    assert len(train) == SYNTHETIC_GLANDS.n_train == DATASETS["synthetic-glands"].n_train_expected == 16
    assert len(test) == SYNTHETIC_GLANDS.n_test == 8
    assert train.names[:2] == ["train_1", "train_2"] and test.names[0] == "testA_1"
    (folder,) = cache.iterdir()
    assert folder.name == f"synthetic-glands-{synthetic.config_hash(SYNTHETIC_GLANDS)}"
    assert {"train_16.png", "train_16_anno.png", "testA_8.png", "testA_8_anno.png"} <= set(_files(folder))
    sample = train[0]
    assert sample.image.shape == (128, 160, 3) and sample.image.dtype == np.uint8
    assert sample.instances is not None and sample.instances.max() >= 2
    np.testing.assert_array_equal(sample.semantic, (sample.instances > 0).astype(np.int64))


def test_generation_is_byte_identical_across_runs(tmp_path: Path) -> None:
    first = synthetic.ensure_synthetic_glands(SMALL, tmp_path / "a")
    second = synthetic.ensure_synthetic_glands(SMALL, tmp_path / "b")
    assert first.name == second.name
    assert _files(first) == _files(second)
    other_seed = synthetic.ensure_synthetic_glands(dataclasses.replace(SMALL, seed=8), tmp_path / "c")
    assert other_seed.name != first.name
    assert _files(other_seed)["train_1.png"] != _files(first)["train_1.png"]


def test_existing_cache_is_reused_without_regenerating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = synthetic.ensure_synthetic_glands(SMALL, tmp_path)

    def fail(*_: object) -> None:
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(synthetic, "write_glas_layout", fail)
    assert synthetic.ensure_synthetic_glands(SMALL, tmp_path) == folder


def test_losing_the_race_uses_the_winners_folder_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / f"synthetic-glands-{synthetic.config_hash(SMALL)}"
    real_write = synthetic.write_glas_layout

    def write_while_another_process_finishes_first(cfg: SyntheticGlandsConfig, folder: Path) -> None:
        real_write(cfg, folder)
        shutil.copytree(folder, final)
        (final / "winner").write_text("theirs")

    monkeypatch.setattr(synthetic, "write_glas_layout", write_while_another_process_finishes_first)
    assert synthetic.ensure_synthetic_glands(SMALL, tmp_path) == final
    assert (final / "winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # no temporary folder left behind


def test_changing_the_config_changes_the_cache_folder() -> None:
    assert synthetic.config_hash(SMALL) != synthetic.config_hash(dataclasses.replace(SMALL, width=65))
    assert synthetic.config_hash(SMALL) == synthetic.config_hash(dataclasses.replace(SMALL))


def test_unwritable_cache_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="BENCH_CACHE"):
        synthetic.ensure_synthetic_glands(SMALL, blocker / "cache")


def test_glands_look_like_h_and_e(cache: Path) -> None:
    """Epithelium is darker and bluer (haematoxylin) than the pink eosin stroma, some glands touch."""
    touching = 0
    for sample in get_dataset("synthetic-glands", split="train"):
        image, glands = sample.image.astype(np.float64), sample.semantic > 0
        rim = glands & ~binary_erosion(glands, iterations=3)
        stroma = ~glands
        luminance, blue_over_red = image.mean(-1), image[..., 2] / (image[..., 0] + 1)
        assert luminance[rim].mean() < luminance[stroma].mean() - 25
        assert blue_over_red[rim].mean() > blue_over_red[stroma].mean() + 0.08
        assert 100 < luminance[stroma].mean() < 240 and image[stroma][:, 1].mean() < image[stroma][:, 0].mean()
        inst = sample.instances
        assert inst is not None
        touching += int(np.any((inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)))
    assert touching >= 3
