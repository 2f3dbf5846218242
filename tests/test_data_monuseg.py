"""MoNuSeg loader on LZW TIFFs with hand-written annotation XML in both release layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.data import get_dataset
from bench.errors import DataError
from tests.conftest import monuseg_xml, write_monuseg_case

H, W = 24, 32
SQUARE_A = [(2.5, 2.5), (10.5, 2.5), (10.5, 10.5), (2.5, 10.5)]  # x 2.5..10.5, y 2.5..10.5
SQUARE_B = [(8.4, 4.6), (16.4, 4.6), (16.4, 12.6), (8.4, 12.6)]  # overlaps A at x 8..10, y 5..10
TRIANGLE = [(20.7, 15.2), (29.3, 15.2), (25.0, 22.8)]


@pytest.fixture
def monuseg_root(tmp_path: Path) -> Path:
    """Training release layout under train/, test release (flat) layout under test/."""
    train = tmp_path / "train"
    for stem in ("TCGA-B-10", "TCGA-B-2", "TCGA-A-1"):
        write_monuseg_case(train / "Tissue Images", train / "Annotations", stem, [SQUARE_A, SQUARE_B, TRIANGLE])
    for stem in ("TCGA-T-1", "TCGA-T-2"):
        write_monuseg_case(tmp_path / "test", tmp_path / "test", stem, [SQUARE_B, SQUARE_A])
    return tmp_path


def test_fixture_images_really_are_lzw_tiffs(monuseg_root: Path) -> None:
    with Image.open(monuseg_root / "train/Tissue Images/TCGA-A-1.tif") as im:
        assert im.format == "TIFF" and im.info.get("compression") == "tiff_lzw"


def test_both_layouts_and_split_sizes(monuseg_root: Path) -> None:
    train = get_dataset("monuseg", monuseg_root, "train")
    test = get_dataset("monuseg", monuseg_root, "test")
    assert train.names == ["TCGA-A-1", "TCGA-B-2", "TCGA-B-10"]
    assert test.names == ["TCGA-T-1", "TCGA-T-2"]
    sample = train[0]
    assert sample.image.shape == (H, W, 3) and sample.image.dtype == np.uint8
    assert sample.semantic.dtype == np.int64 and sample.instances is not None
    np.testing.assert_array_equal(sample.semantic, (sample.instances > 0).astype(np.int64))


def test_one_instance_per_region_and_earlier_label_wins_overlap(monuseg_root: Path) -> None:
    inst = get_dataset("monuseg", monuseg_root, "train")[0].instances
    assert inst is not None
    assert set(np.unique(inst)) == {0, 1, 2, 3}
    assert inst[6, 9] == 1  # inside both squares: the first Region keeps it
    assert inst[6, 14] == 2 and inst[11, 14] == 2  # only in the second square
    assert inst[19, 25] == 3  # inside the float-coordinate triangle
    assert inst[3, 3] == 1 and inst[0, 0] == 0 and inst[3, 20] == 0


def test_overlap_follows_file_order_not_polygon_identity(monuseg_root: Path) -> None:
    inst = get_dataset("monuseg", monuseg_root, "test")[0].instances  # XML lists B before A
    assert inst is not None
    assert inst[6, 9] == 1 and inst[6, 14] == 1 and inst[3, 3] == 2


def test_float_vertices_are_not_truncated(tmp_path: Path) -> None:
    """A thin polygon between x=3.6 and x=5.4 holds the MATLAB centres x=4, 5, which are bench
    columns 3-4; truncating the vertices to 3 and 5 would also take MATLAB centre 5 only."""
    write_monuseg_case(tmp_path, tmp_path, "thin", [[(3.6, 2.0), (5.4, 2.0), (5.4, 12.0), (3.6, 12.0)]])
    inst = get_dataset("monuseg", tmp_path, "train")[0].instances
    assert inst is not None
    assert inst[7, 3] == 1 and inst[7, 4] == 1 and inst[7, 2] == 0 and inst[7, 5] == 0


def test_root_without_split_folders_is_the_train_split(tmp_path: Path) -> None:
    write_monuseg_case(tmp_path / "Tissue Images", tmp_path / "Annotations", "only", [SQUARE_A])
    assert get_dataset("monuseg", tmp_path, "train").names == ["only"]
    with pytest.raises(DataError, match=r"no MoNuSeg test folder"):
        get_dataset("monuseg", tmp_path, "test")


def test_release_folder_names_are_accepted(tmp_path: Path) -> None:
    train = tmp_path / "MoNuSeg 2018 Training Data"
    write_monuseg_case(train / "Tissue Images", train / "Annotations", "a", [SQUARE_A])
    write_monuseg_case(tmp_path / "MoNuSegTestData", tmp_path / "MoNuSegTestData", "b", [SQUARE_A])
    assert get_dataset("monuseg", tmp_path, "train").names == ["a"]
    assert get_dataset("monuseg", tmp_path, "test").names == ["b"]


def test_unparsable_xml_names_the_file(monuseg_root: Path) -> None:
    (monuseg_root / "test/TCGA-T-2.xml").write_text("<Annotations><Annotation><Regions>")
    with pytest.raises(DataError, match=r"TCGA-T-2\.xml.*cannot parse"):
        get_dataset("monuseg", monuseg_root, "test")


def test_non_numeric_vertex_names_the_file(monuseg_root: Path) -> None:
    (monuseg_root / "test/TCGA-T-1.xml").write_text(monuseg_xml([[(1, 1), ("abc", 2), (3, 4)]]))
    with pytest.raises(DataError, match=r"TCGA-T-1\.xml.*Region Id=1"):
        get_dataset("monuseg", monuseg_root, "test")


def test_missing_xml_names_the_image(monuseg_root: Path) -> None:
    (monuseg_root / "train/Annotations/TCGA-B-2.xml").unlink()
    with pytest.raises(DataError, match=r"TCGA-B-2\.tif.*label file missing"):
        get_dataset("monuseg", monuseg_root, "train")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_corrupt_tiff_names_the_file(monuseg_root: Path) -> None:
    (monuseg_root / "test/TCGA-T-1.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"TCGA-T-1\.tif.*cannot read"):
        get_dataset("monuseg", monuseg_root, "test")


def test_empty_split_folder_names_folder_and_pattern(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"train.*no MoNuSeg images.*Tissue Images"):
        get_dataset("monuseg", tmp_path, "train")
