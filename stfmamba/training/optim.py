"""Optimizer and learning-rate schedule, both from timm: AdamW over timm's weight-decay groups, and
timm's :class:`~timm.scheduler.CosineLRScheduler` (linear warm-up, then cosine) stepped per
optimizer step.

The schedule, for peak ``lr``, ``W`` warm-up steps and ``T`` steps in all (``s`` = optimizer steps
done; the lr of step ``s`` is set by ``scheduler.step_update(s)``)::

    s <= W:  lr/W + s · (lr − lr/W) / W           linear from lr/W (step 0) to the peak lr (step W)
    s >= W:  floor + (lr − floor) · ½ (1 + cos(π · (s − W) / (T − W)))   cosine to floor = MIN_LR_RATIO · lr

Pretrained parameters (a timm trunk or the frame baseline's body loaded from ImageNet weights:
``model.pretrained_param_names()``) get their own param groups with timm's ``lr_scale`` set to
``training.pretrained_lr_mult``; timm's scheduler multiplies every value it sets by it, so warm-up,
cosine and the logged lr all follow (:func:`current_lr` gives the unscaled lr, :func:`group_lrs` each).

timm's scheduler holds no step counter: the trainer passes the step, so a resumed run continues the
schedule from its restored step.
"""
from __future__ import annotations

import torch
from timm.optim import param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from torch import nn

MIN_LR_RATIO = 0.01   # the cosine ends at this fraction of the peak lr

__all__ = ["MIN_LR_RATIO", "param_groups", "build_optimizer", "build_scheduler", "current_lr", "group_lrs"]


def param_groups(model: nn.Module, weight_decay: float, pretrained_lr_mult: float = 1.0) -> list[dict]:
    """timm's weight-decay groups, each split into new and pretrained parameters; the pretrained
    ones carry ``lr_scale = pretrained_lr_mult`` and ``pretrained: True``. Empty groups are left out."""
    names = getattr(model, "pretrained_param_names", lambda: set())()
    pretrained_ids = {id(p) for n, p in model.named_parameters() if n in names}
    groups = []
    for g in param_groups_weight_decay(model, weight_decay):
        new = [p for p in g["params"] if id(p) not in pretrained_ids]
        old = [p for p in g["params"] if id(p) in pretrained_ids]
        if new:
            groups.append({**g, "params": new})
        if old:
            groups.append({**g, "params": old, "lr_scale": float(pretrained_lr_mult), "pretrained": True})
    return groups


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, pretrained_lr_mult: float = 1.0
                    ) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`: timm's :func:`~timm.optim.param_groups_weight_decay` (no decay
    for 1-D parameters — norms, biases, ``A_log``, ``D`` — decay ``weight_decay`` for the rest), the
    pretrained parameters at ``pretrained_lr_mult`` × the lr.

    The optimizer itself is PyTorch's AdamW built here rather than by ``timm.optim.create_optimizer_v2``
    because timm does not pass ``fused=True``: the fused implementation, where the parameters' device
    supports it (CPU and CUDA: one kernel instead of a loop over ~150 small tensors; 1.8 vs 7.1 ms
    per step for the demo Phase B model on the development CPU), else the default one.
    """
    groups = param_groups(model, weight_decay, pretrained_lr_mult)
    # every group starts at the unscaled lr: timm's scheduler takes it as the group's base value and
    # applies lr_scale in each update, the first one when it is built (build_scheduler)
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
    peak = float(optimizer.defaults["lr"])
    return CosineLRScheduler(optimizer, t_initial=max(1, total_steps - warmup_steps), lr_min=MIN_LR_RATIO * peak,
                             warmup_t=warmup_steps, warmup_lr_init=peak / max(1, warmup_steps), warmup_prefix=True,
                             cycle_limit=1, t_in_epochs=False)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr the next optimizer step uses for the new (not pretrained) parameters: a group's lr
    divided by its ``lr_scale``."""
    g = optimizer.param_groups[0]
    return float(g["lr"]) / float(g.get("lr_scale", 1.0) or 1.0)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``{"new": lr, "pretrained": lr}`` of the next step (``pretrained`` only when such a group exists)."""
    out = {"new": current_lr(optimizer)}
    for g in optimizer.param_groups:
        if g.get("pretrained"):
            out["pretrained"] = float(g["lr"])
    return out
