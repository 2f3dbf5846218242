"""FFHQ-34 / CelebA-19 loader on tiny files in the ddpm-segmentation layout (<stem>.png|jpg + .npy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import get_dataset
from bench.errors import DataError

SIDE = 32  # loader output is 256 px, so these are upscaled 8x


def _write(folder: Path, stem: str, label: np.ndarray, ext: str = ".png", size: tuple[int, int] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    h, w = size or label.shape
    image = np.random.default_rng(len(stem)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / f"{stem}{ext}")
    np.save(folder / f"{stem}.npy", label)


def _label(num_classes: int, seed: int = 0) -> np.ndarray:
    label = np.random.default_rng(seed).integers(0, num_classes, (SIDE, SIDE)).astype(np.uint8)
    label[:3, :3] = 255
    return label


@pytest.fixture
def ffhq_root(tmp_path: Path) -> Path:
    for split, stems in (("train", ("2", "10", "1")), ("test", ("0",))):
        for i, stem in enumerate(stems):
            _write(tmp_path / "real" / split, stem, _label(34, i), ext=".jpg" if stem == "10" else ".png")
    return tmp_path


def test_layout_split_sizes_sorting_and_types(ffhq_root: Path) -> None:
    train = get_dataset("ffhq34", ffhq_root, "train")
    assert train.names == ["1", "2", "10"] and len(get_dataset("ffhq34", ffhq_root, "test")) == 1
    assert (train.num_classes, train.domain, train.ignore_index) == (34, "natural", 255)
    assert len(train.class_names) == 34 and train.class_names[0] == "background"
    for sample in train:
        assert sample.image.shape == (256, 256, 3) and sample.image.dtype == np.uint8
        assert sample.semantic.shape == (256, 256) and sample.semantic.dtype == np.int64
        assert sample.instances is None


def test_labels_resize_nearest_and_keep_ignore(ffhq_root: Path) -> None:
    sample = get_dataset("ffhq34", ffhq_root, "train")[1]  # stem "2", written with seed 0
    expected = np.repeat(np.repeat(_label(34, 0), 8, axis=0), 8, axis=1)
    np.testing.assert_array_equal(sample.semantic, expected)
    assert (sample.semantic[:24, :24] == 255).all()


def test_256_px_images_are_not_resampled(tmp_path: Path) -> None:
    label = np.zeros((256, 256), np.uint8)
    _write(tmp_path / "real/train", "a", label)
    expected = np.asarray(Image.open(tmp_path / "real/train/a.png"))
    np.testing.assert_array_equal(get_dataset("ffhq34", tmp_path)[0].image, expected)


def test_root_may_be_the_real_folder(ffhq_root: Path) -> None:
    assert get_dataset("ffhq34", ffhq_root / "real", "train").names == ["1", "2", "10"]


@pytest.mark.parametrize(("name", "bad", "good"), [("ffhq34", 34, 33), ("celeba19", 19, 18)])
def test_label_values_out_of_range_name_the_file(tmp_path: Path, name: str, bad: int, good: int) -> None:
    label = _label(2)
    label[5, 5] = good
    _write(tmp_path / "ok/real/train", "a", label)
    assert get_dataset(name, tmp_path / "ok")[0].semantic.max() == 255
    label[6, 6] = bad
    _write(tmp_path / "bad/real/train", "a", label)
    with pytest.raises(DataError, match=rf"a\.npy.*\[{bad}\] out of range"):
        get_dataset(name, tmp_path / "bad")


def test_missing_label_names_the_image(ffhq_root: Path) -> None:
    (ffhq_root / "real/train/2.npy").unlink()
    with pytest.raises(DataError, match=r"2\.png.*label file missing"):
        get_dataset("ffhq34", ffhq_root)


def test_corrupt_npy_names_the_file(ffhq_root: Path) -> None:
    (ffhq_root / "real/train/1.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match=r"1\.npy.*cannot read"):
        get_dataset("ffhq34", ffhq_root)


def test_corrupt_image_names_the_file(ffhq_root: Path) -> None:
    (ffhq_root / "real/train/10.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match=r"10\.jpg.*cannot read"):
        get_dataset("ffhq34", ffhq_root)


def test_non_square_image_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "real/train", "wide", np.zeros((SIDE, SIDE + 8), np.uint8))
    with pytest.raises(DataError, match=r"wide\.png.*40x32.*square"):
        get_dataset("ffhq34", tmp_path)


def test_label_shape_not_matching_image_names_both_sizes(tmp_path: Path) -> None:
    _write(tmp_path / "real/train", "a", np.zeros((SIDE, SIDE + 8), np.uint8), size=(SIDE, SIDE))
    with pytest.raises(DataError, match=r"a\.npy.*40x32.*a\.png.*32x32"):
        get_dataset("ffhq34", tmp_path)


def test_square_label_at_another_resolution_is_resized(tmp_path: Path) -> None:
    """The reference code resizes image and label to 256 independently, so this is a valid input."""
    label = np.zeros((64, 64), np.uint8)
    label[32:, :] = 3
    _write(tmp_path / "real/train", "a", label, size=(SIDE, SIDE))
    semantic = get_dataset("ffhq34", tmp_path)[0].semantic
    assert semantic.shape == (256, 256) and (semantic[128:] == 3).all() and (semantic[:128] == 0).all()


def test_missing_split_and_empty_folder_are_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no test folder.*real/test"):
        get_dataset("celeba19", tmp_path, "test")
    (tmp_path / "real/test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"real/test.*no images found.*\.npy"):
        get_dataset("celeba19", tmp_path, "test")
