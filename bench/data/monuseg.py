"""MoNuSeg (challenge release) loader.

Accepted layouts for one split folder:
- the training release: `Tissue Images/<stem>.tif` with `Annotations/<stem>.xml`;
- the test release: `<stem>.tif` and `<stem>.xml` side by side.

Splits: the root holds a `train/` and a `test/` folder (each in either layout); the release's own
folder names `MoNuSeg 2018 Training Data` and `MoNuSegTestData` are accepted in their place. A
root with neither is itself the train split (a user who unpacked only the training release) and
then has no test split.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data.io import load_parallel, make_sample, natural_key, read_rgb, require_folder
from bench.data.monuseg_xml import parse_polygons, rasterise
from bench.data.types import Sample
from bench.errors import DataError


@dataclass(frozen=True)
class MonusegLayout:
    """Folder and file naming of the release."""

    split_folders: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("train", ("train", "MoNuSeg 2018 Training Data", "MoNuSegTrainingData")),
        ("test", ("test", "MoNuSegTestData", "MoNuSeg 2018 Test Data")),
    )
    image_folder: str = "Tissue Images"
    label_folder: str = "Annotations"
    image_extensions: tuple[str, ...] = (".tif", ".tiff")
    label_extension: str = ".xml"

    def folders(self, split: str) -> tuple[str, ...]:
        for name, folders in self.split_folders:
            if name == split:
                return folders
        raise ValueError(f"unknown split {split!r}; expected one of {[n for n, _ in self.split_folders]}")


MONUSEG_LAYOUT = MonusegLayout()


def split_folder(root: Path, split: str, layout: MonusegLayout = MONUSEG_LAYOUT) -> Path:
    """The folder holding `split`; see the module docstring for what is accepted."""
    require_folder(root, "MoNuSeg")
    for name in layout.folders(split):
        if (root / name).is_dir():
            return root / name
    any_split = any((root / n).is_dir() for _, names in layout.split_folders for n in names)
    if split == "train" and not any_split:
        return root
    raise DataError(root, f"no MoNuSeg {split} folder: expected {root / layout.folders(split)[0]} "
                          f"(with '{layout.image_folder}/*.tif' + '{layout.label_folder}/*.xml', "
                          "or .tif and .xml side by side)")


def _pairs(folder: Path, layout: MonusegLayout) -> list[tuple[Path, Path]]:
    """(image, expected annotation path) for every image, naturally sorted by stem."""
    nested = (folder / layout.image_folder).is_dir()
    image_dir = folder / layout.image_folder if nested else folder
    label_dir = folder / layout.label_folder if nested else folder
    images = sorted((p for p in image_dir.iterdir()
                     if p.is_file() and p.suffix.lower() in layout.image_extensions),
                    key=lambda p: natural_key(p.stem))
    if not images:
        raise DataError(image_dir, "no MoNuSeg images found; expected "
                                   f"'{layout.image_folder}/<stem>.tif' with '{layout.label_folder}/"
                                   "<stem>.xml', or <stem>.tif and <stem>.xml side by side")
    return [(p, label_dir / f"{p.stem}{layout.label_extension}") for p in images]


def _load_one(image_path: Path, xml_path: Path) -> Sample:
    if not xml_path.is_file():
        raise DataError(image_path, f"label file missing: expected {xml_path}")
    image = read_rgb(image_path)
    instances = rasterise(parse_polygons(xml_path), image.shape[0], image.shape[1])
    return make_sample(image_path.stem, image, (instances > 0).astype(instances.dtype), instances)


def load_monuseg(root: Path, split: str, layout: MonusegLayout = MONUSEG_LAYOUT) -> list[Sample]:
    """All samples of one split; semantic = nucleus vs background, instances = one id per Region."""
    folder = split_folder(root, split, layout)
    return load_parallel(_load_one, _pairs(folder, layout))
