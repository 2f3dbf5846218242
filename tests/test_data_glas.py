"""GlaS loader on tiny files in the Warwick release layout (.bmp and .png mixed), and on the real set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import get_dataset
from bench.errors import DataError

REAL_GLAS = Path(__file__).resolve().parents[2] / "shared/data/GlaS"
H, W = 10, 12


def _write_pair(root: Path, stem: str, ext: str, seed: int, anno_ext: str | None = None) -> np.ndarray:
    """An RGB image and an 8-bit instance map with glands 1..3; returns the instance map."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    anno = np.zeros((H, W), np.uint8)
    anno[1:4, 1:5], anno[5:9, 2:6], anno[6:9, 8:11] = 1, 2, 3 + seed % 2
    Image.fromarray(image).save(root / f"{stem}{ext}")
    Image.fromarray(anno).save(root / f"{stem}_anno{anno_ext or ext}")
    return anno


@pytest.fixture
def glas_root(tmp_path: Path) -> Path:
    for i, (stem, ext) in enumerate([("train_1", ".bmp"), ("train_2", ".png"), ("train_10", ".bmp"),
                                     ("train_3", ".png"), ("testB_1", ".png"), ("testA_2", ".bmp"),
                                     ("testA_1", ".png")]):
        _write_pair(tmp_path, stem, ext, seed=i)
    (tmp_path / "Grade.csv").write_text("name,grade\ntrain_1,benign\n")
    return tmp_path


def test_splits_are_naturally_sorted_and_test_is_testA_then_testB(glas_root: Path) -> None:
    assert get_dataset("glas", glas_root, "train").names == ["train_1", "train_2", "train_3", "train_10"]
    assert get_dataset("glas", glas_root, "test").names == ["testA_1", "testA_2", "testB_1"]


def test_samples_have_documented_shapes_dtypes_and_labels(glas_root: Path) -> None:
    ds = get_dataset("glas", glas_root, "train")
    assert (ds.num_classes, ds.domain, ds.split) == (2, "medical", "train")
    for sample in ds:
        assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
        assert sample.semantic.shape == (H, W) and sample.semantic.dtype == np.int64
        assert sample.instances is not None and sample.instances.dtype == np.int64
        np.testing.assert_array_equal(sample.semantic, (sample.instances > 0).astype(np.int64))
    expected = np.asarray(Image.open(glas_root / "train_10_anno.bmp"))
    np.testing.assert_array_equal(ds[3].instances, expected)
    np.testing.assert_array_equal(ds[3].image, np.asarray(Image.open(glas_root / "train_10.bmp")))


def test_image_and_label_may_use_different_formats(tmp_path: Path) -> None:
    anno = _write_pair(tmp_path, "train_1", ".bmp", seed=0, anno_ext=".png")
    np.testing.assert_array_equal(get_dataset("glas", tmp_path)[0].instances, anno)


def test_corrupt_image_names_the_file(glas_root: Path) -> None:
    (glas_root / "train_2.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="train_2.png"):
        get_dataset("glas", glas_root, "train")


def test_truncated_image_names_the_file(glas_root: Path) -> None:
    path = glas_root / "train_3.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="train_3.png"):
        get_dataset("glas", glas_root, "train")


def test_missing_label_names_the_image(glas_root: Path) -> None:
    (glas_root / "testA_2_anno.bmp").unlink()
    with pytest.raises(DataError, match=r"testA_2\.bmp.*label file missing"):
        get_dataset("glas", glas_root, "test")


def test_annotation_without_image_names_the_annotation(glas_root: Path) -> None:
    (glas_root / "train_3.png").unlink()
    with pytest.raises(DataError, match=r"train_3_anno\.png.*has no image train_3"):
        get_dataset("glas", glas_root, "train")


def test_label_size_mismatch_names_file_and_both_sizes(glas_root: Path) -> None:
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(glas_root / "train_2_anno.png")
    with pytest.raises(DataError, match=r"train_2_anno\.png.*13x10.*12x10"):
        get_dataset("glas", glas_root, "train")


def test_colour_label_is_refused(glas_root: Path) -> None:
    colour = np.zeros((H, W, 3), np.uint8)
    colour[..., 0] = 5
    Image.fromarray(colour).save(glas_root / "train_1_anno.bmp")
    with pytest.raises(DataError, match="train_1_anno.bmp.*single-channel"):
        get_dataset("glas", glas_root, "train")


def test_same_stem_in_two_formats_is_ambiguous(glas_root: Path) -> None:
    _write_pair(glas_root, "train_2", ".bmp", seed=9)
    with pytest.raises(DataError, match=r"train_2\.(bmp|png).*keep only one"):
        get_dataset("glas", glas_root, "train")


def test_folder_without_images_names_folder_and_pattern(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match=rf"{tmp_path.name}.*no GlaS train images.*train_N"):
        get_dataset("glas", tmp_path, "train")
    with pytest.raises(DataError, match=r"testA_N.*testB_N"):
        get_dataset("glas", tmp_path, "test")


def test_missing_root_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not_there.*folder not found"):
        get_dataset("glas", tmp_path / "not_there")


@pytest.mark.skipif(not REAL_GLAS.is_dir(), reason=f"real GlaS not present at {REAL_GLAS}")
def test_real_glas_has_85_train_and_80_test_images() -> None:
    train = get_dataset("glas", REAL_GLAS, "train")
    test = get_dataset("glas", REAL_GLAS, "test")
    assert len(train) == 85 and len(test) == 80
    assert train.names[:3] == ["train_1", "train_2", "train_3"] and train.names[-1] == "train_85"
    assert test.names[59:61] == ["testA_60", "testB_1"] and test.names[-1] == "testB_20"
    for sample in (train[0], test[-1]):
        assert sample.image.ndim == 3 and sample.image.shape[:2] == sample.semantic.shape
        assert set(np.unique(sample.semantic)) == {0, 1}
        assert sample.instances is not None and sample.instances.max() >= 2
