"""Reading image and label files with errors a user can act on.

Every loader goes through these helpers so a corrupt or mismatched file always surfaces as one
`DataError` naming the file, never as a Pillow or numpy traceback deep inside a sweep.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
from PIL import Image

from bench.data.types import Sample
from bench.errors import DataError

T = TypeVar("T")
MAX_LOAD_THREADS = 4

# Pillow failures for unreadable files: UnidentifiedImageError is an OSError; truncated or garbled
# streams raise OSError, ValueError or SyntaxError; huge images raise DecompressionBombError.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

_SINGLE_CHANNEL_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort "img_2" before "img_10", as a person listing the folder expects."""
    parts = re.split(r"(\d+)", text)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p)


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """Decode the whole file now, so corruption is found here and not on first pixel access."""
    try:
        with Image.open(path) as im:
            im.load()
            yield im
    except _READ_ERRORS as exc:
        raise DataError(path, f"cannot read image: {exc}") from exc


def read_rgb(path: Path) -> np.ndarray:
    """An H x W x 3 uint8 array; greyscale or RGBA files are converted the way viewers show them."""
    with _opened(path) as im:
        return np.array(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def read_label_image(path: Path) -> np.ndarray:
    """An H x W int64 label map from an 8/16/32-bit single-channel image.

    An RGB label is accepted only when its three channels are identical (a grey map saved as
    colour); anything else would silently turn colours into wrong ids.
    """
    with _opened(path) as im:
        mode, arr = im.mode, np.asarray(im)
    if mode in ("RGB", "RGBA"):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(path, "label image must be single-channel (got colour pixels)")
        arr = rgb[..., 0]
    elif mode not in _SINGLE_CHANNEL_MODES:
        raise DataError(path, f"label image has unsupported mode {mode!r}; expected 8-bit greyscale")
    if arr.size and arr.min() < 0:
        raise DataError(path, f"label values must be >= 0 (found {int(arr.min())})")
    return arr.astype(np.int64)


def size_text(shape: tuple[int, ...]) -> str:
    """Width x height, the order image viewers and file managers print."""
    return f"{shape[1]}x{shape[0]}"


def check_same_size(label_path: Path, label_shape: tuple[int, ...], image_path: Path,
                    image_shape: tuple[int, ...]) -> None:
    """A label drawn for another image is the most common silent data bug; refuse it."""
    if tuple(label_shape[:2]) != tuple(image_shape[:2]):
        raise DataError(label_path, f"label size {size_text(label_shape)} differs from image "
                                    f"{image_path.name} size {size_text(image_shape)}")


def frozen(arr: np.ndarray) -> np.ndarray:
    """Read-only, because loaded data sets are memoised and shared by every caller in the process."""
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def make_sample(name: str, image: np.ndarray, semantic: np.ndarray,
                instances: np.ndarray | None = None) -> Sample:
    """The one place samples are built, so dtypes and read-only flags are uniform across loaders."""
    return Sample(
        name=name,
        image=frozen(image.astype(np.uint8, copy=False)),
        semantic=frozen(semantic.astype(np.int64, copy=False)),
        instances=None if instances is None else frozen(instances.astype(np.int64, copy=False)),
    )


def require_folder(path: Path, what: str) -> None:
    """A missing root is reported as such, not as 'no images found' in a folder that isn't there."""
    if not path.is_dir():
        raise DataError(path, f"{what} folder not found")


def load_parallel(load_one: Callable[[Path, Path], T], pairs: list[tuple[Path, Path]]) -> list[T]:
    """Decode (image, label) pairs on a few threads, in order; the first bad file's error is raised.

    Pillow decodes with the GIL released, so idle cores can overlap files; the full GlaS set
    (165 PNG pairs) is decode-bound at roughly 5 s on one core.
    """
    workers = max(1, min(MAX_LOAD_THREADS, os.cpu_count() or 1, len(pairs)))
    if workers == 1:
        return [load_one(image, label) for image, label in pairs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: load_one(*pair), pairs))
