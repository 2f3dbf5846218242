"""The sample and data-set types every loader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence, overload

import numpy as np

Domain = Literal["medical", "natural"]


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    `image` is H x W x 3 uint8, `semantic` an H x W int64 class map (ignore pixels carry the
    data set's `ignore_index`), `instances` an H x W int64 instance map (0 = background) where
    the data set has instance labels, else None.
    """

    name: str
    image: np.ndarray
    semantic: np.ndarray
    instances: np.ndarray | None = None


@dataclass
class Dataset(Sequence[Sample]):
    """An eagerly validated, ordered list of samples plus what the harness must know about it."""

    name: str
    split: str
    samples: list[Sample]
    num_classes: int
    domain: Domain
    ignore_index: int = 255
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, i: int) -> Sample: ...

    @overload
    def __getitem__(self, i: slice) -> list[Sample]: ...

    def __getitem__(self, i: int | slice) -> Sample | list[Sample]:
        return self.samples[i]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.samples]
