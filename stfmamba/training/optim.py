"""Optimizer and learning-rate schedule, both from timm: AdamW over timm's weight-decay groups, and
timm's :class:`~timm.scheduler.CosineLRScheduler` (linear warm-up, then cosine) stepped per
optimizer step.

The schedule, for peak ``lr``, ``W`` warm-up steps and ``T`` steps in all (``s`` = optimizer steps
done; the lr of step ``s`` is set by ``scheduler.step_update(s)``)::

    s <= W:  lr/W + s · (lr − lr/W) / W           linear from lr/W (step 0) to the peak lr (step W)
    s >= W:  floor + (lr − floor) · ½ (1 + cos(π · (s − W) / (T − W)))   cosine to floor = MIN_LR_RATIO · lr

timm's scheduler holds no step counter: the trainer passes the step, so a resumed run continues the
schedule from its restored step.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

MIN_LR_RATIO = 0.01   # the cosine ends at this fraction of the peak lr

__all__ = ["MIN_LR_RATIO", "build_optimizer", "build_scheduler", "current_lr"]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over timm's :func:`~timm.optim.param_groups_weight_decay` (no decay for 1-D parameters —
    norms, biases, ``A_log``, ``D`` — decay ``weight_decay`` for the rest).

    The optimizer itself is PyTorch's AdamW built here rather than by ``timm.optim.create_optimizer_v2``
    because timm does not pass ``fused=True``: the fused implementation, where the parameters' device
    supports it (CPU and CUDA: one kernel instead of a loop over ~150 small tensors; 1.8 vs 7.1 ms
    per step for the demo Phase B model on the development CPU), else the default one.
    """
    groups = param_groups_weight_decay(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> CosineLRScheduler:
    """Warm-up then cosine, per optimizer step (module docstring); sets the lr of step 0.

    Args:
        optimizer: its param groups' ``lr`` is the peak.
        warmup_steps: ``W``, optimizer steps of linear warm-up (0: none, cosine from step 0).
        total_steps: ``T``, optimizer steps of the whole phase.

    Returns:
        The scheduler; call ``step_update(steps_done)`` after every optimizer step.
    """
    peak = optimizer.param_groups[0]["lr"]
    return CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=MIN_LR_RATIO * peak,
                             warmup_t=warmup_steps, warmup_lr_init=peak / max(1, warmup_steps), warmup_prefix=True,
                             cycle_limit=1, t_in_epochs=False)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr the next optimizer step uses (all groups share it)."""
    return float(optimizer.param_groups[0]["lr"])
