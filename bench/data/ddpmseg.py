"""FFHQ-34 and CelebA-19 loader (ddpm-segmentation release layout).

`<root>/real/{train,test}/<stem>.png|jpg` with a same-stem `<stem>.npy` integer label map; a root
that already is the `real/` folder is accepted too. Images must be square (as in the reference
code) and are resized to 256 px bilinearly, labels nearest-neighbour. A label may come at another
square resolution than its image (the reference resizes both independently), but a label whose
shape does not match its image's aspect is refused. Label 255 means ignore.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.io import load_parallel, make_sample, natural_key, read_rgb, size_text
from bench.data.types import Sample
from bench.errors import DataError


@dataclass(frozen=True)
class DdpmSegConfig:
    """Resolution and file naming shared by FFHQ-34 and CelebA-19."""

    resolution: int = 256
    ignore_index: int = 255
    real_folder: str = "real"
    image_extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg")
    label_extension: str = ".npy"
    max_listed_bad_values: int = 5


DDPMSEG_CONFIG = DdpmSegConfig()


def split_folder(root: Path, split: str, cfg: DdpmSegConfig = DDPMSEG_CONFIG) -> Path:
    """`<root>/real/<split>`, or `<root>/<split>` when the user pointed at `real/` itself."""
    for folder in (root / cfg.real_folder / split, root / split):
        if folder.is_dir():
            return folder
    raise DataError(root, f"no {split} folder: expected {root / cfg.real_folder / split} holding "
                          f"<stem>.png|jpg images with <stem>{cfg.label_extension} labels")


def _image_paths(folder: Path, cfg: DdpmSegConfig) -> list[Path]:
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in cfg.image_extensions]
    if not images:
        raise DataError(folder, "no images found; expected <stem>.png|jpg with <stem>"
                                f"{cfg.label_extension} labels")
    stems: dict[str, Path] = {}
    for path in sorted(images):
        if path.stem in stems:
            raise DataError(path, f"both {stems[path.stem].name} and {path.name} exist; keep only one")
        stems[path.stem] = path
    return sorted(images, key=lambda p: natural_key(p.stem))


# np.load parses each header with ast.literal_eval; CPython 3.11 (3.11.7 is what CI runs) keeps the AST
# constructor's recursion depth in state shared by threads, so two parses at once in
# load_parallel's pool can fail with "SystemError: AST constructor recursion depth mismatch".
_NPY_LOCK = threading.Lock()


def _read_npy(path: Path) -> np.ndarray:
    try:
        with _NPY_LOCK:
            label = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read .npy label: {exc}") from exc
    if not isinstance(label, np.ndarray) or label.ndim != 2:
        raise DataError(path, f"label must be a 2-D array (got shape {getattr(label, 'shape', '?')})")
    if label.dtype.kind == "f" and np.array_equal(label, np.round(label)):
        label = label.astype(np.int64)
    if label.dtype.kind not in "iub":
        raise DataError(path, f"label must hold integer class ids (got dtype {label.dtype})")
    return label.astype(np.int64)


def _check_values(path: Path, label: np.ndarray, num_classes: int, cfg: DdpmSegConfig) -> None:
    bad = (label < 0) | ((label >= num_classes) & (label != cfg.ignore_index))
    if bad.any():
        values = np.unique(label[bad])[: cfg.max_listed_bad_values].tolist()
        raise DataError(path, f"label values {values} out of range: expected 0..{num_classes - 1} "
                              f"or {cfg.ignore_index} (ignore)")


def _check_shapes(image_path: Path, image: np.ndarray, label_path: Path, label: np.ndarray) -> None:
    if image.shape[0] != image.shape[1]:
        raise DataError(image_path, f"image is {size_text(image.shape)}; only square images are supported")
    if label.shape[:2] != image.shape[:2] and label.shape[0] != label.shape[1]:
        raise DataError(label_path, f"label size {size_text(label.shape)} does not match image "
                                    f"{image_path.name} size {size_text(image.shape)}")


def _resize(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))
    if label.shape != (size, size):
        small = Image.fromarray(label.astype(np.uint8))  # values are <= 255 after validation
        label = np.asarray(small.resize((size, size), Image.Resampling.NEAREST)).astype(np.int64)
    return image, label


def _load_one(image_path: Path, label_path: Path, num_classes: int, cfg: DdpmSegConfig) -> Sample:
    if not label_path.is_file():
        raise DataError(image_path, f"label file missing: expected {label_path.name} beside it")
    label = _read_npy(label_path)
    _check_values(label_path, label, num_classes, cfg)
    image = read_rgb(image_path)
    _check_shapes(image_path, image, label_path, label)
    image, label = _resize(image, label, cfg.resolution)
    return make_sample(image_path.stem, image, label)


def load_ddpmseg(root: Path, split: str, num_classes: int, cfg: DdpmSegConfig = DDPMSEG_CONFIG) -> list[Sample]:
    """All samples of one split at `cfg.resolution`, in natural stem order; no instance maps."""
    pairs = [(p, p.with_suffix(cfg.label_extension)) for p in _image_paths(split_folder(root, split, cfg), cfg)]
    return load_parallel(functools.partial(_load_one, num_classes=num_classes, cfg=cfg), pairs)


FFHQ34_CLASSES: tuple[str, ...] = (
    "background", "head", "head***cheek", "head***chin", "head***ear", "head***ear***helix",
    "head***ear***lobule", "head***eye***bottom lid", "head***eye***eyelashes", "head***eye***iris",
    "head***eye***pupil", "head***eye***sclera", "head***eye***tear duct", "head***eye***top lid",
    "head***eyebrow", "head***forehead", "head***frown", "head***hair", "head***hair***sideburns",
    "head***jaw", "head***moustache", "head***mouth***inferior lip", "head***mouth***oral commissure",
    "head***mouth***superior lip", "head***mouth***teeth", "head***neck", "head***nose",
    "head***nose***ala of nose", "head***nose***bridge", "head***nose***nose tip", "head***nose***nostril",
    "head***philtrum", "head***temple", "head***wrinkles",
)

CELEBA19_CLASSES: tuple[str, ...] = (
    "background", "cloth", "ear_r", "eye_g", "hair", "hat", "l_brow", "l_ear", "l_eye", "l_lip",
    "mouth", "neck", "neck_l", "nose", "r_brow", "r_ear", "r_eye", "skin", "u_lip",
)
