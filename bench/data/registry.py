"""The named data sets, and loading them once per process.

The harness asks for the same split many times (every method x seed x fraction), so loads are
memoised on (name, resolved root, split). The arrays in a loaded set are read-only and every call
returns a fresh `Dataset` around the shared samples, so no caller can corrupt another's data.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.cifar10 import CIFAR10
from bench.data.ddpmseg import CELEBA19_CLASSES, DDPMSEG_CONFIG, FFHQ34_CLASSES, load_ddpmseg
from bench.data.glas import load_glas
from bench.data.monuseg import load_monuseg
from bench.data.synthetic import cache_base, load_synthetic_glands
from bench.data.synthetic_config import SYNTHETIC_GLANDS
from bench.data.types import Dataset, Domain, Sample
from bench.data.validation import HOLDOUT_FRACTION, SUFFIX as VAL_SUFFIX, validation_loader
from bench.errors import DataError

SPLITS = ("train", "test")
CACHE_SIZE = 16  # loaded splits kept in memory; the full GlaS is about 1 GB with int64 maps


Loader = Callable[[Path, str], list[Sample]]  # (resolved root, split) -> the split's samples


@dataclass(frozen=True)
class DatasetInfo:
    """A data set: what the harness must know before loading it, and its loader. Adding a data
    set is one `register_dataset(DatasetInfo(...))`; nothing else names it."""

    name: str
    class_names: tuple[str, ...]     # index = class id; their number is the data set's classes
    domain: Domain
    needs_root: bool
    has_instances: bool
    n_train_expected: int | None
    loader: Loader = field(compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a data set under `info.name` (a name may be registered once)."""
    if info.name in DATASETS:
        raise ValueError(f"data set {info.name!r} is registered twice")
    DATASETS[info.name] = info
    return info


def _classification_only(root: Path, split: str) -> list[Sample]:
    raise DataError(root, "cifar10 is a classification set for `bench experiment table8` (linear probe), "
                          "not a segmentation set; leave it out of `bench run` sweeps")


GLANDS, NUCLEI = ("background", "gland"), ("background", "nucleus")
for _info in (
    DatasetInfo("glas", GLANDS, "medical", needs_root=True, has_instances=True, n_train_expected=85,
                loader=load_glas),
    DatasetInfo("monuseg", NUCLEI, "medical", needs_root=True, has_instances=True, n_train_expected=30,
                loader=load_monuseg),
    # Validation splits (bench.data.validation): a fifth of the training images as "test".
    DatasetInfo("glas" + VAL_SUFFIX, GLANDS, "medical", needs_root=True, has_instances=True,
                n_train_expected=85 - round(HOLDOUT_FRACTION * 85), loader=validation_loader(load_glas)),
    DatasetInfo("monuseg" + VAL_SUFFIX, NUCLEI, "medical", needs_root=True, has_instances=True,
                n_train_expected=30 - round(HOLDOUT_FRACTION * 30), loader=validation_loader(load_monuseg)),
    DatasetInfo("ffhq34", FFHQ34_CLASSES, "natural", needs_root=True, has_instances=False, n_train_expected=20,
                loader=functools.partial(load_ddpmseg, num_classes=len(FFHQ34_CLASSES))),
    DatasetInfo("celeba19", CELEBA19_CLASSES, "natural", needs_root=True, has_instances=False, n_train_expected=20,
                loader=functools.partial(load_ddpmseg, num_classes=len(CELEBA19_CLASSES))),
    DatasetInfo("synthetic-glands", GLANDS, "medical", needs_root=False, has_instances=True,
                n_train_expected=SYNTHETIC_GLANDS.n_train, loader=load_synthetic_glands),
    # Classification only (Table 8 linear probe, bench.experiments.table8), not a segmentation set.
    DatasetInfo("cifar10", CIFAR10.class_names, "natural", needs_root=True, has_instances=False,
                n_train_expected=50000, loader=_classification_only),
):
    register_dataset(_info)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry, or a ValueError that lists the names a user may pick from."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}") from None


def _resolve_root(info: DatasetInfo, root: str | Path | None) -> Path:
    """For synthetic-glands the root, if given, is the cache folder to generate into."""
    if root is None:
        if info.needs_root:
            raise DataError(info.name, "this data set needs a root folder (where it was downloaded); "
                                       "none was given")
        return cache_base()
    return Path(root).expanduser().resolve()


@functools.lru_cache(maxsize=CACHE_SIZE)
def _load(name: str, root: Path, split: str) -> tuple[Sample, ...]:
    return tuple(DATASETS[name].loader(root, split))


def get_dataset(name: str, root: str | Path | None = None, split: str = "train") -> Dataset:
    """A loaded, validated split; repeated calls with the same arguments reuse the first load.

    `root` is the folder the data set was downloaded to; for synthetic-glands (which needs none)
    a given root replaces $BENCH_CACHE as the folder the generated set is cached in.
    """
    info = dataset_info(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    samples = _load(name, _resolve_root(info, root), split)
    return Dataset(name=name, split=split, samples=list(samples), num_classes=info.num_classes,
                   domain=info.domain, ignore_index=DDPMSEG_CONFIG.ignore_index,
                   class_names=list(info.class_names))


def pretrain_pool(name: str, root: str | Path | None = None) -> list[np.ndarray]:
    """Unlabelled pre-training images: train then test images, as the paper pre-trains on both."""
    return [s.image for split in SPLITS for s in get_dataset(name, root, split)]


def clear_cache() -> None:
    """Forget memoised loads (tests, or after the files on disk changed)."""
    _load.cache_clear()
