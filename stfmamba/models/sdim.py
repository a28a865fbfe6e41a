"""Adaptive state dimension: learned sigmoid gates over an SSM's ``d_state`` channels.

Each SSM reads its state through ``C ⊙ g`` with ``g = sigmoid(logit)`` of shape ``(d_state,)``
(per direction / group). A small L1 penalty on ``g`` (``training.sdim_l1_weight``) pushes unused
state channels towards zero; :meth:`AdaptiveStateGate.effective_size` counts the gates above 0.5,
the number the trainer logs as the layer's effective state size.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["AdaptiveStateGate"]


class AdaptiveStateGate(nn.Module):
    """Gates ``(groups, d_state)``, initialised open (sigmoid(3) ≈ 0.95)."""

    def __init__(self, d_state: int, groups: int = 1, init_logit: float = 3.0) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((groups, d_state), init_logit))

    def forward(self) -> torch.Tensor:
        """Returns the gates ``(groups, d_state)`` in ``(0, 1)``."""
        return torch.sigmoid(self.logit)

    def l1(self) -> torch.Tensor:
        """Mean gate value (the gates are positive, so this is the L1 norm / size)."""
        return self().mean()

    @torch.no_grad()
    def effective_size(self) -> float:
        """Open state channels (gate > 0.5), averaged over groups."""
        return float((self() > 0.5).float().sum(-1).mean())
