"""Read intermediate activations and stop the forward pass as soon as the last one is seen.

Shared by the probes that read a backbone part-way (the diffusion UNet's decoder blocks, the SwAV
ResNet's block inputs): nothing after the deepest read module is computed.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn


class _Stop(Exception):
    """Raised by the hook that completes the set."""


def capture(modules: Sequence[nn.Module], forward: Callable[[], Any], *, inputs: bool = False) -> list[torch.Tensor]:
    """Run `forward()` and return, per module of `modules` (in that order), its output — or its
    first input with `inputs=True` — detached; the pass ends when every module has been reached."""
    unique = list(dict.fromkeys(modules))
    found: dict[int, torch.Tensor] = {}  # by position in `unique`

    def keep(index: int, value: torch.Tensor) -> None:
        found[index] = value.detach()
        if len(found) == len(unique):
            raise _Stop

    def pre_hook(index: int) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        return lambda _module, args: keep(index, args[0])

    def post_hook(index: int) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        return lambda _module, _args, output: keep(index, output)

    handles = [m.register_forward_pre_hook(pre_hook(i)) if inputs else m.register_forward_hook(post_hook(i))
               for i, m in enumerate(unique)]
    try:
        forward()
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    missing = [i for i in range(len(unique)) if i not in found]
    if missing:
        raise RuntimeError(f"the forward pass never reached module(s) {missing} of {len(unique)}")
    return [found[unique.index(m)] for m in modules]
