"""Self-distillation targets and losses after the official DINO / iBOT / DINOv2 code.

Every batch statistic (center, Sinkhorn-Knopp marginals) is summed over DDP ranks, so a DDP run
matches one process with the global batch. KoLeo is the exception, as in DINOv2: it is computed
within each rank's batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.frameworks.base import all_reduce_sum

CENTERINGS = ("center", "sinkhorn")


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, iterations: int = 3) -> torch.Tensor:
    """DINOv2's Sinkhorn-Knopp teacher targets: rows of ``exp(logits / temp)`` rescaled so that
    every prototype gets an equal share of the (global) batch; rows sum to 1."""
    q = torch.exp(logits.float() / temp).t()  # K×B, as DINOv2 (logits start in [-1, 1]: DINOHead)
    k = q.shape[0]
    b = all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))
        q /= k
        q /= q.sum(dim=0, keepdim=True).clamp_min(1e-30)
        q /= b
    return (q * b).t()


class TeacherTargets(nn.Module):
    """Teacher logits -> soft targets: centering + sharpening (DINO), or Sinkhorn-Knopp (DINOv2).

    The center is a buffer, so it travels with the framework's state dict into checkpoints.
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, centering: str = "center", momentum: float = 0.9) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(
                f"framework.centering: got {centering!r}; expected one of {', '.join(CENTERINGS)}"
            )
        self.centering = centering
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def forward(self, logits: torch.Tensor, temp: float) -> torch.Tensor:
        logits = logits.float()
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(logits, temp)
        targets = F.softmax((logits - self.center) / temp, dim=-1)
        total = all_reduce_sum(torch.cat([logits.sum(0), logits.new_tensor([logits.shape[0]])]))
        if total[-1] > 0:
            self.center.mul_(self.momentum).add_(total[:-1] / total[-1], alpha=1 - self.momentum)
        return targets


def soft_cross_entropy(targets: torch.Tensor, student_logits: torch.Tensor, temp: float) -> torch.Tensor:
    """Per-row ``-sum(targets * log_softmax(student / temp))``."""
    return -(targets * F.log_softmax(student_logits.float() / temp, dim=-1)).sum(-1)


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator (DINOv2): ``-mean log`` of each normalised feature's
    distance to its nearest neighbour in the batch; it spreads the features apart."""
    x = F.normalize(x.float(), dim=-1, eps=eps)
    with torch.no_grad():
        dots = x @ x.t()
        dots.fill_diagonal_(-1.0)
        nearest = dots.argmax(dim=1)
    return -torch.log(F.pairwise_distance(x, x[nearest], eps=eps) + eps).mean()
