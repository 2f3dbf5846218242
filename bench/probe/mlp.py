"""The pixel-probe MLP ensemble as one batched module.

The reference trains its 10 probe MLPs one after another; at 64-pixel batches each step is
dominated by per-call overhead, so 10 modules cost 10x the overhead. Here member k's layers are
slice k of stacked weights (K, in, out) applied with one `baddbmm`, and batch normalisation runs
per member by treating (member, feature) pairs as the channels of one `F.batch_norm` call, which
gives each member its own batch statistics and running statistics exactly as nn.BatchNorm1d.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EnsembleMLP(nn.Module):
    """K independent MLPs Linear-ReLU-BatchNorm1d-...-Linear with stacked parameters.

    forward(x) takes (K, N, d), each member its own pixels, or (N, d) shared by all members,
    and returns (K, N, C) logits. `members` restricts a call to a contiguous slice of members
    (training in member groups bounds memory); running statistics of the others are untouched.
    """

    def __init__(self, members: int, in_dim: int, num_classes: int, hidden: Sequence[int],
                 init_std: float = 0.02, bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 generators: Sequence[torch.Generator] | None = None) -> None:
        super().__init__()
        sizes = [in_dim, *hidden, num_classes]
        self.members, self.num_classes, self.hidden = members, num_classes, tuple(hidden)
        self.bn_momentum, self.bn_eps = bn_momentum, bn_eps
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(members, a, b)) for a, b in zip(sizes[:-1], sizes[1:])])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(members, 1, b)) for b in sizes[1:]])
        self.bn_weights = nn.ParameterList([nn.Parameter(torch.ones(members, h)) for h in hidden])
        self.bn_biases = nn.ParameterList([nn.Parameter(torch.zeros(members, h)) for h in hidden])
        for i, h in enumerate(hidden):
            self.register_buffer(f"running_mean{i}", torch.zeros(members, h))
            self.register_buffer(f"running_var{i}", torch.ones(members, h))
        self.reset_parameters(init_std, generators)

    @torch.no_grad()
    def reset_parameters(self, std: float, generators: Sequence[torch.Generator] | None) -> None:
        """Linear weights N(0, std), everything else at BatchNorm/zero defaults (reference init).

        Member k draws its weights from generators[k] only, so a member's initialisation does
        not depend on how many other members share the module.
        """
        if generators is not None and len(generators) != self.members:
            raise ValueError(f"need {self.members} generators, got {len(generators)}")
        for k in range(self.members):
            gen = generators[k] if generators is not None else None
            for w in self.weights:
                w[k].normal_(0.0, std, generator=gen)

    def _take(self, t: Tensor, sl: slice) -> Tensor:
        """Members `sl` of a stacked tensor; the whole tensor itself when that is all of them,
        because a slice's backward would build (and fill) a full-size zero gradient per call."""
        return t if sl.indices(self.members) == (0, self.members, 1) else t[sl]

    def _stats(self, i: int) -> tuple[Tensor, Tensor]:
        return getattr(self, f"running_mean{i}"), getattr(self, f"running_var{i}")

    def _batch_norm(self, h: Tensor, i: int, sl: slice) -> Tensor:
        k, n, f = h.shape
        mean, var = self._stats(i)
        flat = F.batch_norm(h.transpose(0, 1).reshape(n, k * f), mean[sl].view(-1),
                            var[sl].view(-1), self._take(self.bn_weights[i], sl).reshape(-1),
                            self._take(self.bn_biases[i], sl).reshape(-1), self.training,
                            self.bn_momentum, self.bn_eps)
        return flat.view(n, k, f).transpose(0, 1)

    def _first_layer(self, x: Tensor, sl: slice) -> Tensor:
        w, b = self._take(self.weights[0], sl), self._take(self.biases[0], sl)
        if x.dim() == 3:
            return torch.baddbmm(b, x, w)
        # Shared input (prediction): K products with the one x rather than K copies of x.
        return torch.stack([x @ w[j] for j in range(w.shape[0])]) + b

    def forward(self, x: Tensor, members: slice | None = None) -> Tensor:
        sl = members or slice(None)
        k = len(range(*sl.indices(self.members)))
        if x.dim() == 3 and x.shape[0] != k:
            raise ValueError(f"input holds {x.shape[0]} member batches for {k} members")
        if x.dim() not in (2, 3):
            raise ValueError(f"input must be (N, d) or (K, N, d), got {tuple(x.shape)}")
        return self.forward_after_first(self._first_layer(x, sl), sl)

    def forward_after_first(self, h: Tensor, members: slice | None = None) -> Tensor:
        """The layers after the first linear map: (K, N, hidden[0]) pre-activations -> logits.

        Prediction computes the first layer at the feature maps' native resolution and
        upsamples its outputs (bench.probe.predict); this finishes the forward from there.
        """
        sl = members or slice(None)
        for i in range(len(self.hidden)):
            h = self._batch_norm(torch.relu(h), i, sl)
            h = torch.baddbmm(self._take(self.biases[i + 1], sl), h,
                              self._take(self.weights[i + 1], sl))
        return h

    @torch.no_grad()
    def folded_layers(self) -> list[tuple[Tensor, Tensor]]:
        """Eval-mode (weight, bias) of each layer after the first, its BatchNorm folded in.

        In eval mode BN(r) = r * g + s with g = gamma / sqrt(var + eps) and s = beta - mean * g,
        so W . BN(r) + b = (g * W) . r + (s . W + b). Computed once per prediction call, not
        once per row chunk.
        """
        layers = []
        for i in range(len(self.hidden)):
            mean, var = self._stats(i)
            g = self.bn_weights[i] / torch.sqrt(var + self.bn_eps)  # (K, hidden_i)
            shift = self.bn_biases[i] - mean * g
            weight = self.weights[i + 1] * g.unsqueeze(-1)
            bias = self.biases[i + 1] + torch.bmm(shift.unsqueeze(1), self.weights[i + 1])
            layers.append((weight, bias))
        return layers

    @torch.no_grad()
    def predict_after_first(self, h: Tensor, folded: list[tuple[Tensor, Tensor]] | None = None
                            ) -> Tensor:
        """Eval-mode `forward_after_first` of all members, BatchNorm folded into the next layer
        (`folded_layers`, or those given): one pass fewer over the full-resolution activations,
        equal up to float rounding. `h` is consumed (ReLU in place).
        """
        for weight, bias in folded if folded is not None else self.folded_layers():
            h = torch.baddbmm(bias, h.relu_(), weight)
        return h

    def member(self, k: int) -> nn.Sequential:
        """Member k as a standalone nn.Sequential (same weights, running stats and mode)."""
        layers: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            lin.weight.data.copy_(w[k].detach().T)
            lin.bias.data.copy_(b[k, 0].detach())
            layers.append(lin)
            if i < len(self.hidden):
                bn = nn.BatchNorm1d(w.shape[2], eps=self.bn_eps, momentum=self.bn_momentum)
                bn.weight.data.copy_(self.bn_weights[i][k].detach())
                bn.bias.data.copy_(self.bn_biases[i][k].detach())
                mean, var = self._stats(i)
                assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
                bn.running_mean.copy_(mean[k])
                bn.running_var.copy_(var[k])
                layers += [nn.ReLU(), bn]
        return nn.Sequential(*layers).train(self.training)
