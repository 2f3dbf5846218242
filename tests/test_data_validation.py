"""Validation splits (glas-val, monuseg-val): carved from training images only, fixed, disjoint."""
from __future__ import annotations

from pathlib import Path

import pytest

from bench.data import clear_cache, get_dataset, pretrain_pool
from bench.data.validation import HOLDOUT_FRACTION, holdout_indices
from tests.test_data_glas import REAL_GLAS, _write_pair


@pytest.fixture
def glas_root(tmp_path: Path) -> Path:
    for i in range(1, 11):
        _write_pair(tmp_path, f"train_{i}", ".png", seed=i)
    for i in range(1, 4):
        _write_pair(tmp_path, f"testA_{i}", ".png", seed=20 + i)
    clear_cache()
    return tmp_path


def test_glas_val_holds_out_a_fixed_fifth_of_the_training_images(glas_root: Path) -> None:
    train = get_dataset("glas-val", glas_root, "train")
    val = get_dataset("glas-val", glas_root, "test")
    source = get_dataset("glas", glas_root, "train").names
    assert len(val) == round(HOLDOUT_FRACTION * 10) == 2 and len(train) == 8
    assert set(train.names) | set(val.names) == set(source) and not set(train.names) & set(val.names)
    assert all(name.startswith("train_") for name in val.names)  # never a test image
    assert train.num_classes == 2 and val.domain == "medical"


def test_pretraining_on_a_validation_split_never_sees_test_images(glas_root: Path) -> None:
    pool = pretrain_pool("glas-val", glas_root)
    assert len(pool) == 10  # the 10 training images; the 3 test images are left out


def test_the_holdout_depends_on_names_not_on_their_order() -> None:
    names = [f"train_{i}" for i in range(1, 86)]
    held = {names[i] for i in holdout_indices(names)}
    shuffled = list(reversed(names))
    assert {shuffled[i] for i in holdout_indices(shuffled)} == held
    assert len(held) == 17


@pytest.mark.skipif(not REAL_GLAS.is_dir(), reason="no real GlaS copy beside the checkout")
def test_real_glas_val_is_17_of_the_85_training_images() -> None:
    assert len(get_dataset("glas-val", REAL_GLAS, "test")) == 17
    assert len(get_dataset("glas-val", REAL_GLAS, "train")) == 68
