"""SwAV's swapped-prediction objective (Caron et al.): Sinkhorn-Knopp codes, optional feature queue.

Codes are computed only for the global crops, as an equipartitioned soft assignment of the batch
(plus queued past embeddings, when the batch alone is too small to spread over the prototypes);
every other crop then predicts them from its own prototype scores. In a data-parallel group each
process holds its share of the batch (and its own queue); Sinkhorn's sums are all-reduced, as in
the reference implementation, so the codes are those of the whole global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.distributed import all_reduce_


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """B x K scores -> B x K codes: each row sums to 1, each prototype gets about B / K of the mass.

    In a process group the scores are this rank's rows of the global batch: the max, the total and
    the per-prototype sums are taken over every rank's rows (the columns stay local).
    """
    q = (scores.float() / epsilon)
    q = (q - all_reduce_(q.max(), "max")).exp().t()  # K x B; the shift cancels in the normalisations
    k = q.shape[0]
    b = int(all_reduce_(torch.tensor(float(q.shape[1]), device=q.device)))  # the global batch
    q /= all_reduce_(q.sum())
    for _ in range(iters):
        q /= all_reduce_(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).t()


class EmbeddingQueue:
    """The last `length` embeddings of each global crop, used to enlarge Sinkhorn's batch."""

    def __init__(self, crops: int, length: int, dim: int, device: torch.device) -> None:
        self.store = torch.zeros(crops, length, dim, device=device)
        self.filled = 0

    @property
    def full(self) -> bool:
        return self.filled >= self.store.shape[1]

    @torch.no_grad()
    def push(self, crop: int, embeddings: torch.Tensor) -> None:
        n = min(len(embeddings), self.store.shape[1])
        self.store[crop] = torch.cat([embeddings[:n].float(), self.store[crop, : self.store.shape[1] - n]])
        if crop == self.store.shape[0] - 1:
            self.filled += n


def swapped_prediction_loss(scores: list[torch.Tensor], global_crops: int, temperature: float,
                            epsilon: float, iters: int, queued: list[torch.Tensor | None] | None = None
                            ) -> torch.Tensor:
    """scores: one B x K tensor per crop (global crops first); queued: extra scores per global crop.

    For each global crop the codes come from Sinkhorn; every other crop predicts them through a
    softmax at `temperature`. The loss averages over code crops and predicting crops.
    """
    total = scores[0].new_zeros((), dtype=torch.float32)
    for i in range(global_crops):
        batch = scores[i].detach().float()
        extra = queued[i] if queued is not None else None
        if extra is not None:
            batch = torch.cat([batch, extra.float()])
        codes = sinkhorn(batch, epsilon, iters)[: len(scores[i])]
        others = [v for v in range(len(scores)) if v != i]
        for v in others:
            log_p = F.log_softmax(scores[v].float() / temperature, dim=1)
            total = total - (codes * log_p).sum(1).mean() / len(others)
    return total / global_crops
