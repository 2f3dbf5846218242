"""Data sets: GlaS, MoNuSeg, FFHQ-34, CelebA-19 and the embedded synthetic-glands.

Every loader reads the format users download, validates it eagerly (one `DataError` naming the
file) and returns a `Dataset` of `Sample`s; see REFERENCE.md section 1 for the formats.
"""
from __future__ import annotations

from bench.data.registry import (
    DATASETS,
    DatasetInfo,
    clear_cache,
    dataset_info,
    get_dataset,
    pretrain_pool,
    register_dataset,
)
from bench.data.subset import label_subset
from bench.data.types import Dataset, Sample

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "Sample",
    "clear_cache",
    "dataset_info",
    "get_dataset",
    "label_subset",
    "pretrain_pool",
    "register_dataset",
]
