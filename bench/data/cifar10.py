"""CIFAR-10 loader: the standard python-pickle release (`cifar-10-batches-py/`), never downloaded.

The release holds `data_batch_1..5` (train, 10,000 images each), `test_batch` and `batches.meta`.
Each batch is a pickled dict with b"data" (N x 3072 uint8: the red, green and blue 32x32 planes
of an image, row-major, one image per row) and b"labels" (N ints in 0..9). It is only used by the
Table 8 linear probe, which classifies whole images, so it returns arrays, not segmentation
`Sample`s. Pickles are read with an unpickler that only builds plain containers and numpy arrays,
so a tampered batch cannot run code; anything else is refused with one line naming the file.
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import DataError


@dataclass(frozen=True)
class Cifar10Config:
    """The release's layout and shapes (facts of the format, in one place)."""

    folder: str = "cifar-10-batches-py"
    train_batches: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_batches: tuple[str, ...] = ("test_batch",)
    meta: str = "batches.meta"
    size: int = 32
    channels: int = 3
    num_classes: int = 10
    class_names: tuple[str, ...] = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                    "horse", "ship", "truck")


CIFAR10 = Cifar10Config()

# The only globals a CIFAR-10 pickle needs (numpy array reconstruction, numpy 1.x and 2.x names).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("codecs", "encode"), ("_codecs", "encode"),
}


@dataclass(frozen=True)
class ImageSet:
    """One split: `images` N x 32 x 32 x 3 uint8 (read-only), `labels` N int64 in 0..9."""

    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def batch_folder(root: str | Path, cfg: Cifar10Config = CIFAR10) -> Path:
    """`<root>/cifar-10-batches-py`, or `root` itself when it already holds the batches."""
    root = Path(root).expanduser()
    nested = root / cfg.folder
    if nested.is_dir():
        return nested
    if (root / cfg.test_batches[0]).exists() or (root / cfg.train_batches[0]).exists():
        return root
    raise DataError(root, f"no CIFAR-10 batches here: expected {cfg.folder}/ (the python release) "
                          f"or {cfg.train_batches[0]} ... {cfg.test_batches[0]} directly in this folder")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "missing (CIFAR-10 python release batch)")
    try:
        with open(path, "rb") as handle:
            obj = _SafeUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            ImportError, OSError) as exc:
        raise DataError(path, f"not a readable CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(path, f"expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_batch(path: Path, cfg: Cifar10Config = CIFAR10) -> tuple[np.ndarray, np.ndarray]:
    """(N x 32 x 32 x 3 uint8 images, N int64 labels) of one batch file, validated."""
    batch = _unpickle(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(path, f"field {key!r} missing (has: {', '.join(map(str, batch))})")
    data = np.asarray(batch["data"])
    width = cfg.channels * cfg.size * cfg.size
    if data.ndim != 2 or data.shape[1] != width:
        raise DataError(path, f"field 'data': expected shape N x {width}, got {data.shape}")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or data.min(initial=0) < 0 or data.max(initial=0) > 255:
            raise DataError(path, f"field 'data': expected uint8 pixels, got {data.dtype}")
        data = data.astype(np.uint8)
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(path, "field 'labels': expected a list of integers") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(path, f"field 'labels': {labels.shape[0]} labels for {data.shape[0]} images")
    bad = labels[(labels < 0) | (labels >= cfg.num_classes)]
    if bad.size:
        raise DataError(path, f"field 'labels': {int(bad[0])} is outside 0..{cfg.num_classes - 1}")
    images = data.reshape(-1, cfg.channels, cfg.size, cfg.size).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _class_names(folder: Path, cfg: Cifar10Config) -> tuple[str, ...]:
    """`batches.meta`'s label names when the file is there (it is optional for loading)."""
    path = folder / cfg.meta
    if not path.exists():
        return cfg.class_names
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != cfg.num_classes:
        raise DataError(path, f"field 'label_names': expected a list of {cfg.num_classes} names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


@functools.lru_cache(maxsize=4)
def _load(folder: Path, split: str) -> ImageSet:
    cfg = CIFAR10
    names = cfg.train_batches if split == "train" else cfg.test_batches
    parts = [read_batch(folder / name, cfg) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.flags.writeable = False
    labels.flags.writeable = False
    return ImageSet(split=split, images=images, labels=labels, class_names=_class_names(folder, cfg))


def load_cifar10(root: str | Path, split: str) -> ImageSet:
    """The train (data_batch_1..5) or test (test_batch) split; loads are memoised per process."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    return _load(batch_folder(root).resolve(), split)


def clear_cache() -> None:
    _load.cache_clear()
