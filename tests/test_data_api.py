"""Public API of bench.data: registry, errors, memoisation, pretraining pool, label subsets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import DATASETS, clear_cache, get_dataset, label_subset, pretrain_pool
from bench.errors import DataError


def _tiny_glas(root: Path, n_train: int = 3, n_test: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"train_{i}" for i in range(1, n_train + 1)] + [f"testA_{i}" for i in range(1, n_test + 1)]
    for i, stem in enumerate(names):
        Image.fromarray(np.full((6, 8, 3), i * 20, np.uint8)).save(root / f"{stem}.png")
        Image.fromarray(np.eye(6, 8, dtype=np.uint8)).save(root / f"{stem}_anno.png")
    return root


def test_registry_lists_the_data_sets_with_their_facts() -> None:
    assert set(DATASETS) == {"glas", "monuseg", "ffhq34", "celeba19", "synthetic-glands", "cifar10",
                             "glas-val", "monuseg-val"}
    facts = {name: (i.num_classes, i.domain, i.needs_root, i.has_instances, i.n_train_expected)
             for name, i in DATASETS.items()}
    assert facts == {
        "glas": (2, "medical", True, True, 85),
        "monuseg": (2, "medical", True, True, 30),
        "ffhq34": (34, "natural", True, False, 20),
        "celeba19": (19, "natural", True, False, 20),
        "synthetic-glands": (2, "medical", False, True, 16),
        "cifar10": (10, "natural", True, False, 50000),  # classification only (table8)
        "glas-val": (2, "medical", True, True, 68),  # validation splits: a fifth of train held out
        "monuseg-val": (2, "medical", True, True, 24),
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["glas"].num_classes = 3  # type: ignore[misc]


def test_a_new_data_set_is_one_registration(tmp_path: Path) -> None:
    """Its classes, domain and loader in one DatasetInfo: get_dataset and a sweep file take it."""
    from bench.config import load_config
    from bench.data import DatasetInfo, register_dataset
    from bench.data.glas import load_glas
    from tests.conftest import make_sweep

    register_dataset(DatasetInfo("crypts", ("background", "crypt"), "medical", needs_root=True, has_instances=True,
                                 n_train_expected=3, loader=load_glas))
    try:
        test = get_dataset("crypts", _tiny_glas(tmp_path / "crypts"), "test")
        assert (len(test), test.num_classes, test.class_names, test.domain) == (2, 2, ["background", "crypt"],
                                                                                 "medical")
        sweep = load_config(make_sweep(tmp_path, ["unet"], dataset="crypts", root=str(tmp_path / "crypts")))
        assert sweep.datasets[0].name == "crypts"
        with pytest.raises(ValueError, match="'crypts' is registered twice"):
            register_dataset(DatasetInfo("crypts", ("a",), "medical", needs_root=True, has_instances=False,
                                         n_train_expected=None, loader=load_glas))
    finally:
        DATASETS.pop("crypts")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"'glaz'.*celeba19, cifar10, ffhq34, glas, glas-val, monuseg, monuseg-val, synthetic-glands"):
        get_dataset("glaz")


def test_unknown_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'val'"):
        get_dataset("glas", _tiny_glas(tmp_path), "val")


@pytest.mark.parametrize("name", ["glas", "monuseg", "ffhq34", "celeba19"])
def test_data_set_needing_a_root_without_one_is_a_data_error(name: str) -> None:
    with pytest.raises(DataError, match=rf"{name}.*needs a root folder"):
        get_dataset(name)


def test_loads_are_memoised_on_the_resolved_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tiny_glas(tmp_path / "glas")
    first = get_dataset("glas", root)
    monkeypatch.chdir(tmp_path)
    again = get_dataset("glas", "glas")  # relative str to the same folder
    assert again[0] is first[0]
    (root / "train_1.png").write_bytes(b"corrupt")  # a fresh load would now fail
    assert get_dataset("glas", str(root)).names == first.names
    clear_cache()
    with pytest.raises(DataError, match=r"train_1\.png"):
        get_dataset("glas", root)


def test_cached_data_cannot_be_corrupted_by_a_caller(tmp_path: Path) -> None:
    root = _tiny_glas(tmp_path)
    ds = get_dataset("glas", root)
    with pytest.raises(ValueError):
        ds[0].image[0, 0, 0] = 1
    with pytest.raises(ValueError):
        ds[0].semantic[0, 0] = 1
    ds.samples.pop()
    assert len(get_dataset("glas", root)) == 3


def test_pretrain_pool_is_train_then_test_images(tmp_path: Path) -> None:
    root = _tiny_glas(tmp_path)
    pool = pretrain_pool("glas", root)
    assert len(pool) == 5
    assert [int(img[0, 0, 0]) for img in pool] == [0, 20, 40, 60, 80]
    assert all(img.shape == (6, 8, 3) and img.dtype == np.uint8 for img in pool)


@pytest.mark.parametrize(("n", "fraction", "size"), [(85, 0.1, 8), (30, 0.1, 3), (20, 0.1, 2), (5, 0.1, 1),
                                                      (85, 1.0, 85), (44, 0.5, 22), (70, 0.1, 7)])
def test_label_subset_size(n: int, fraction: float, size: int) -> None:
    subset = label_subset(n, fraction, seed=0)
    assert len(subset) == size == len(set(subset))
    assert subset == sorted(subset) and all(0 <= i < n for i in subset)


def test_label_subset_is_deterministic_and_seed_dependent() -> None:
    assert label_subset(85, 0.1, 3) == label_subset(85, 0.1, 3)
    assert len({tuple(label_subset(85, 0.1, seed)) for seed in range(10)}) == 10
    assert label_subset(30, 1.0, 5) == list(range(30))


def test_label_subset_leaves_global_random_state_alone() -> None:
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    label_subset(85, 0.1, 0)
    assert np.random.rand() == expected


@pytest.mark.parametrize(("n", "fraction"), [(0, 0.1), (10, 0.0), (10, 1.5), (10, -0.1)])
def test_label_subset_rejects_bad_arguments(n: int, fraction: float) -> None:
    with pytest.raises(ValueError):
        label_subset(n, fraction, 0)
