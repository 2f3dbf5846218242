"""Per-member pixel orders for training a probe ensemble.

Every ensemble member sees the labelled pixels in its own shuffled order each epoch, as each of
the reference's separately trained models had its own shuffling DataLoader. A medical training
set holds tens of millions of pixels, so K materialised `randperm`s would cost gigabytes; instead
each member's epoch order is a keyed pseudo-random permutation (a balanced Feistel network with
cycle walking) evaluated only at the positions of the current batch, in O(batch) memory.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from bench.probe.bank import to_device

FEISTEL_ROUNDS = 6
_M32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # a well-mixing odd multiplier; products with 32-bit values fit in int64


def member_generators(seed: int, members: int) -> list[torch.Generator]:
    """One generator per member, seeded from a single seeded stream so a seed fixes them all."""
    master = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (members,), generator=master).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _round(right: Tensor, key: Tensor, mask: int) -> Tensor:
    h = (right + key) & _M32
    h = ((h ^ (h >> 16)) * _MIX) & _M32
    h = ((h ^ (h >> 16)) * _MIX) & _M32
    return (h ^ (h >> 16)) & mask


def keyed_permutation(pos: Tensor, n: int, keys: Tensor) -> Tensor:
    """Image of `pos` (values in [0, n)) under the permutation of range(n) that `keys` selects.

    An unbalanced Feistel network over the smallest power-of-two domain >= n (the halves swap
    sizes every round), walked until the value falls inside range(n): at most 2 steps expected.
    `keys` broadcasts to (*pos.shape, FEISTEL_ROUNDS), so each row of a (members, batch)
    position tensor may use its own member's keys.
    """
    if n < 1 or n > 2**62:
        raise ValueError(f"cannot permute a range of {n} items")
    bits = max(2, (n - 1).bit_length())
    round_keys = [keys[..., r].expand(pos.shape).reshape(-1) for r in range(keys.shape[-1])]

    def encrypt(x: Tensor, ks: Sequence[Tensor]) -> Tensor:
        lbits, rbits = bits // 2, bits - bits // 2
        for k in ks:
            left, right = x >> rbits, x & ((1 << rbits) - 1)
            x = (right << lbits) | (left ^ _round(right, k, (1 << lbits) - 1))
            lbits, rbits = rbits, lbits
        return x

    out = encrypt(pos.reshape(-1).to(torch.int64), round_keys)
    outside = (out >= n).nonzero().flatten()
    while outside.numel():
        out[outside] = encrypt(out[outside], [k[outside] for k in round_keys])
        outside = outside[out[outside] >= n]
    return out.reshape(pos.shape)


class PixelStreams:
    """Independent epoch orders over the labelled pixels, one per ensemble member.

    An epoch visits `pixels_per_epoch` pixels of each member's fresh permutation (all labelled
    pixels when None) in batches of `batch`; a trailing batch of one pixel is dropped because
    batch normalisation cannot train on it. Orders are materialised as int32 `randperm`s when
    all members' fit in `order_bytes` (cheap per batch, which matters for 64-pixel batches) and
    are keyed Feistel permutations otherwise (no memory, a few ms per batch).

    Batches come on the device `labelled` lives on. Generators and orders are drawn on the host
    (so a seed means the same orders everywhere); materialised orders go to the device once per
    epoch, Feistel positions once per batch, both asynchronously.
    """

    def __init__(self, labelled: Tensor, generators: Sequence[torch.Generator], batch: int,
                 pixels_per_epoch: int | None = None, order_bytes: int = 256 * 2**20) -> None:
        if labelled.numel() < 2:
            raise ValueError(f"need at least 2 labelled pixels to train, got {labelled.numel()}")
        self.labelled = labelled
        self.generators = list(generators)
        self.batch = batch
        self.epoch_pixels = min(pixels_per_epoch or labelled.numel(), labelled.numel())
        if self.epoch_pixels < 2:
            raise ValueError("pixels_per_epoch must be at least 2")
        steps = math.ceil(self.epoch_pixels / batch)
        self.steps = steps - 1 if self.epoch_pixels - (steps - 1) * batch == 1 else steps
        self.materialise = len(self.generators) * labelled.numel() * 4 <= order_bytes
        self._keys = torch.zeros(len(self.generators), FEISTEL_ROUNDS, dtype=torch.int64)
        self._orders: Tensor | None = None

    def start_epoch(self) -> None:
        """Draw each member's order for the next epoch from its own generator."""
        n = self.labelled.numel()
        if self.materialise:
            self._orders = to_device(torch.stack([
                torch.randperm(n, generator=g, dtype=torch.int32)[:self.epoch_pixels]
                for g in self.generators]), self.labelled.device)
        else:
            self._keys = torch.stack([torch.randint(0, 2**32, (FEISTEL_ROUNDS,), generator=g)
                                      for g in self.generators])

    def batch_pixels(self, step: int, members: slice | None = None) -> Tensor:
        """(members, b) global flat pixel indices of batch `step` of the current epoch."""
        members = members or slice(None)
        start, stop = step * self.batch, min((step + 1) * self.batch, self.epoch_pixels)
        if self._orders is not None:
            return self.labelled[self._orders[members, start:stop].to(torch.int64)]
        keys = self._keys[members]
        pos = torch.arange(start, stop).expand(keys.shape[0], -1)
        order = keyed_permutation(pos, self.labelled.numel(), keys.unsqueeze(1))  # on the host
        return self.labelled[to_device(order, self.labelled.device)]

    def batch_size(self, step: int) -> int:
        """Pixels per member in batch `step` of an epoch."""
        return min((step + 1) * self.batch, self.epoch_pixels) - step * self.batch
