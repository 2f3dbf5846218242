"""An in-process, byte-bounded LRU cache of backbone feature maps.

The ten seeds and both label fractions of a cell probe the same frozen backbone on the same
images, so each window's features are extracted once per process and reused; only the probe is
retrained per run. Bounded by `BENCH_FEATURE_CACHE_MB` (default 2048) so large data sets degrade
to recomputation instead of running out of memory.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Hashable

import torch

DEFAULT_BUDGET_MB = 2048
Entry = tuple[list[torch.Tensor], float]  # one window's maps (fp16) and its L2 scale


def _nbytes(entry: Entry) -> int:
    return sum(m.numel() * m.element_size() for m in entry[0])


class FeatureCache:
    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict[Hashable, Entry] = OrderedDict()

    def get(self, key: Hashable) -> Entry | None:
        entry = self._items.get(key)
        if entry is not None:
            self._items.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Entry) -> None:
        size = _nbytes(entry)
        if size > self.budget or key in self._items:
            return
        while self.used + size > self.budget and self._items:
            _, old = self._items.popitem(last=False)
            self.used -= _nbytes(old)
        self._items[key] = entry
        self.used += size

    def clear(self) -> None:
        self._items.clear()
        self.used = 0


CACHE = FeatureCache(int(os.environ.get("BENCH_FEATURE_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)
