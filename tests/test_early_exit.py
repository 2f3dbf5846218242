"""bench.nn.early_exit.capture: the activations asked for, in the order asked, and nothing computed after."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.nn.early_exit import capture


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(4))
        self.calls = [0] * 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            self.calls[i] += 1
            x = layer(x)
        return x


def test_outputs_and_inputs_in_the_order_asked_and_the_pass_stops_early() -> None:
    torch.manual_seed(0)
    net, x = Chain(), torch.randn(2, 4)
    with torch.no_grad():
        h1 = net.layers[1](net.layers[0](x))
        h2 = net.layers[2](h1)
    got = capture([net.layers[2], net.layers[1], net.layers[2]], lambda: net(x))
    assert [g.shape for g in got] == [(2, 4)] * 3
    torch.testing.assert_close(got[0], h2)
    torch.testing.assert_close(got[1], h1)
    assert got[2] is got[0]
    assert net.calls == [1, 1, 1, 0]  # layer 3 never ran
    ins = capture([net.layers[1]], lambda: net(x), inputs=True)
    torch.testing.assert_close(ins[0], net.layers[0](x).detach())
    assert net.calls == [2, 2, 1, 0]  # stopped at layer 1's input
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.layers)  # hooks removed


def test_a_module_the_pass_never_reaches_is_an_error() -> None:
    net = Chain()
    with pytest.raises(RuntimeError, match="never reached"):
        capture([nn.Linear(4, 4)], lambda: net(torch.randn(1, 4)))
