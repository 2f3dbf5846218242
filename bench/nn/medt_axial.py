"""Axial-attention building blocks of MedT (Valanarasu et al., MICCAI 2021).

Attention runs along one axis at a time (height, then width) with `groups` heads. The qkv
projection is a bias-free 1x1 Conv1d followed by BatchNorm1d, the three similarity terms and the
two output terms each get their own BatchNorm ("similarity BN", "output BN") before being summed,
as in the official implementation (jeya-maria-jose/Medical-Transformer, `axialnet.py`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


class AxialAttention(nn.Module):
    """Axial self-attention along H (or W when `width`), optionally gated and position-sensitive.

    With `gated` (MedT's gated axial attention), relative position embeddings enter the query,
    key and value terms, each scaled by a gate. The official code creates the gates as
    `nn.Parameter`s with `requires_grad=False` (fixed at 0.1, 0.1, 0.1, 1.0): they are kept that
    way so that the parameter count and the training behaviour both match it. Without `gated`
    (the local branch's "wopos" attention) there are no position terms at all.
    """

    flatten_index: Tensor  # buffer (gated only): relative-position index into `relative`

    def __init__(
        self, in_ch: int, out_ch: int, groups: int, kernel_size: int,
        stride: int = 1, width: bool = False, gated: bool = True,
    ) -> None:
        super().__init__()
        if in_ch % groups or out_ch % groups or (out_ch // groups) % 2:
            raise ValueError(f"channels {in_ch}->{out_ch} must split into {groups} groups of even width")
        self.out_ch, self.groups, self.group_ch = out_ch, groups, out_ch // groups
        self.kernel_size, self.stride, self.width, self.gated = kernel_size, stride, width, gated
        self.qkv_transform = nn.Conv1d(in_ch, out_ch * 2, kernel_size=1, bias=False)
        self.bn_qkv = nn.BatchNorm1d(out_ch * 2)
        n_terms = 3 if gated else 1  # qk (+ qr, kr)
        n_outs = 2 if gated else 1  # sv (+ sve)
        self.bn_similarity = nn.BatchNorm2d(groups * n_terms)
        self.bn_output = nn.BatchNorm1d(out_ch * n_outs)
        if gated:
            self.f_qr = nn.Parameter(torch.tensor(0.1), requires_grad=False)
            self.f_kr = nn.Parameter(torch.tensor(0.1), requires_grad=False)
            self.f_sve = nn.Parameter(torch.tensor(0.1), requires_grad=False)
            self.f_sv = nn.Parameter(torch.tensor(1.0), requires_grad=False)
            self.relative = nn.Parameter(torch.empty(self.group_ch * 2, kernel_size * 2 - 1))
            idx = torch.arange(kernel_size)
            self.register_buffer("flatten_index", (idx[:, None] - idx[None, :] + kernel_size - 1).reshape(-1))
        self.reset_parameters(in_ch)

    def reset_parameters(self, in_ch: int) -> None:
        nn.init.normal_(self.qkv_transform.weight, 0.0, math.sqrt(1.0 / in_ch))
        if self.gated:
            nn.init.normal_(self.relative, 0.0, math.sqrt(1.0 / self.group_ch))

    def forward(self, x: Tensor) -> Tensor:
        # Fold the other axis into the batch: (N, C, H, W) -> (N*W, C, H) for the height axis.
        x = x.permute(0, 2, 1, 3) if self.width else x.permute(0, 3, 1, 2)
        n, w, c, h = x.shape
        if h != self.kernel_size:
            raise ValueError(f"axial attention built for length {self.kernel_size}, got {h}")
        qkv = self.bn_qkv(self.qkv_transform(x.reshape(n * w, c, h)))
        half = self.group_ch // 2
        q, k, v = torch.split(qkv.reshape(n * w, self.groups, self.group_ch * 2, h), [half, half, self.group_ch], dim=2)
        qk = torch.einsum("bgci,bgcj->bgij", q, k)
        if self.gated:
            emb = self.relative.index_select(1, self.flatten_index).view(self.group_ch * 2, h, h)
            q_emb, k_emb, v_emb = torch.split(emb, [half, half, self.group_ch], dim=0)
            qr = torch.einsum("bgci,cij->bgij", q, q_emb) * self.f_qr
            kr = torch.einsum("bgci,cij->bgij", k, k_emb).transpose(2, 3) * self.f_kr
            stacked = torch.cat([qk, qr, kr], dim=1)
        else:
            stacked = qk
        n_terms = stacked.shape[1] // self.groups
        sim = self.bn_similarity(stacked).view(n * w, n_terms, self.groups, h, h).sum(dim=1)
        sim = F.softmax(sim, dim=3)
        sv = torch.einsum("bgij,bgcj->bgci", sim, v)
        if self.gated:
            sve = torch.einsum("bgij,cij->bgci", sim, v_emb)
            stacked_out = torch.cat([sv * self.f_sv, sve * self.f_sve], dim=-1)
        else:
            stacked_out = sv
        n_outs = stacked_out.numel() // (n * w * self.out_ch * h)
        out = self.bn_output(stacked_out.reshape(n * w, self.out_ch * n_outs, h))
        out = out.view(n, w, self.out_ch, n_outs, h).sum(dim=-2)
        out = out.permute(0, 2, 1, 3) if self.width else out.permute(0, 2, 3, 1)
        return F.avg_pool2d(out, self.stride, self.stride) if self.stride > 1 else out


class AxialBlock(nn.Module):
    """Bottleneck: 1x1 down, height then width axial attention, 1x1 up (x2 channels), residual.

    The official local-branch block (`AxialBlock_wopos`) also creates a 1x1 conv (`conv1`, with
    bias) that its forward never uses; `unused_conv1` keeps it so the parameter count matches.
    It gets no gradient, so it is frozen (requires_grad=False) to keep optimisers and
    gradient checks honest; this does not change any output.
    """

    expansion = 2

    def __init__(
        self, in_ch: int, planes: int, groups: int, kernel_size: int, stride: int = 1,
        gated: bool = True, unused_conv1: bool = False,
    ) -> None:
        super().__init__()
        width = planes
        self.conv_down = conv1x1(in_ch, width)
        if unused_conv1:
            self.conv1 = nn.Conv2d(width, width, kernel_size=1).requires_grad_(False)
        self.bn1 = nn.BatchNorm2d(width)
        self.hight_block = AxialAttention(width, width, groups, kernel_size, gated=gated)
        self.width_block = AxialAttention(width, width, groups, kernel_size, stride=stride, width=True, gated=gated)
        self.conv_up = conv1x1(width, planes * self.expansion)
        self.bn2 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != planes * self.expansion:
            self.downsample = nn.Sequential(
                conv1x1(in_ch, planes * self.expansion, stride), nn.BatchNorm2d(planes * self.expansion)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv_down(x)))
        out = F.relu(self.width_block(self.hight_block(out)))
        out = self.bn2(self.conv_up(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


def make_layer(
    in_ch: int, planes: int, blocks: int, groups: int, kernel_size: int, stride: int,
    gated: bool, unused_conv1: bool,
) -> nn.Sequential:
    """A stage of `blocks` axial blocks; only the first one strides (by pooling after width attention)."""
    layers = [AxialBlock(in_ch, planes, groups, kernel_size, stride, gated, unused_conv1)]
    kernel_size = kernel_size // stride
    for _ in range(1, blocks):
        layers.append(AxialBlock(planes * AxialBlock.expansion, planes, groups, kernel_size, 1, gated, unused_conv1))
    return nn.Sequential(*layers)
