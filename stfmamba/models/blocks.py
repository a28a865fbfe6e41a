"""Spatio-temporal block and stage, and which temporal mixer each block of each stage gets.

Block (pre-norm residual, ConvNeXt / Mamba style)::

    x = x + DropPath(spatial(x))               # per-frame conv → norm → MLP
    x = x + DropPath(temporal(norm(x)))        # a registered temporal mixer
"""
from __future__ import annotations

import torch
from timm.layers import DropPath, LayerNormFp32
from torch import nn
from torch.utils.checkpoint import checkpoint

from stfmamba.config import FeatureFlags, ModelConfig
from stfmamba.models.mixers import build_spatial_mixer, build_temporal_mixer

__all__ = ["STBlock", "Stage", "temporal_plan", "V73_TEMPORAL", "temporal_residual"]

V73_TEMPORAL = ("dcconv", "dcconv", "bimamba", "attention")   # V7.3: temporal mixer per stage


def temporal_residual(x: torch.Tensor, kind: str) -> torch.Tensor:
    """What the temporal stages see of ``x: (B, T, ...)`` under ``model.stf_input``.

    * ``frames``: ``x`` itself.
    * ``motion``: ``x`` minus its mean over the ``T`` frames (change over time only).
    * ``jitter``: ``x`` minus its least-squares line over the frames (per token and channel): what a
      constant-velocity change does not explain — flicker and jerky motion, not a smooth head turn.

    A still clip gives zeros with ``motion`` and ``jitter``; ``jitter`` also gives zeros for a clip
    whose features change linearly in time.
    """
    if kind == "frames":
        return x
    x = x - x.mean(dim=1, keepdim=True)
    if kind == "motion":
        return x
    if kind != "jitter":
        raise ValueError(f"model.stf_input={kind!r}: expected frames, motion or jitter")
    t = x.shape[1]
    tc = torch.arange(t, device=x.device, dtype=x.dtype) - (t - 1) / 2          # centred frame index
    tc = tc.view(1, t, *([1] * (x.dim() - 2)))
    slope = (x * tc).sum(dim=1, keepdim=True) / tc.square().sum()
    return x - slope * tc


def temporal_plan(features: FeatureFlags, depths: tuple[int, ...]) -> list[list[str]]:
    """Temporal mixer names per block per stage.

    * V7.3 (flags off): :data:`V73_TEMPORAL` for every block of a stage.
    * ``use_hydra``: every block ``hydra``.
    * ``use_mamer`` (with or without ``use_hydra``): PN-Mamer stages — blocks are ``hydra``
      except every 4th and the last, which are ``mamer``; 4 blocks = 3 Hydra + 1 Mamer.
    """
    plan = []
    for stage, depth in enumerate(depths):
        if features.use_mamer:
            names = ["mamer" if (i % 4 == 3 or i == depth - 1) else "hydra" for i in range(depth)]
        elif features.use_hydra:
            names = ["hydra"] * depth
        else:
            names = [V73_TEMPORAL[stage]] * depth
        plan.append(names)
    return plan


class STBlock(nn.Module):
    """One block. ``temporal`` is a registry name; the mixer lives under ``temporal.<name>`` so
    checkpoints of different architectures never collide on key names."""

    def __init__(self, dim: int, temporal: str, cfg: ModelConfig, adaptive_sdim: bool,
                 drop_path: float = 0.0, spatial: str = "conv3x3") -> None:
        super().__init__()
        self.kind = temporal
        self.spatial = build_spatial_mixer(spatial, dim)
        self.norm = LayerNormFp32(dim)
        self.temporal = nn.ModuleDict({temporal: build_temporal_mixer(temporal, dim, cfg, adaptive_sdim)})
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C)`` -> same."""
        x = x + self.drop_path(self.spatial(x))
        return x + self.drop_path(self.temporal[self.kind](self.norm(x)))


class Stage(nn.Module):
    """Optional 2× spatial downsample (LayerNorm + 2×2 stride-2 conv per frame), then blocks."""

    def __init__(self, in_dim: int, dim: int, temporal: list[str], cfg: ModelConfig, adaptive_sdim: bool,
                 drop_paths: list[float], downsample: bool, spatial: str = "conv3x3") -> None:
        super().__init__()
        if downsample:
            self.down_norm = LayerNormFp32(in_dim)
            self.down = nn.Conv2d(in_dim, dim, kernel_size=2, stride=2)
        self.has_down = downsample
        self.blocks = nn.ModuleList(
            STBlock(dim, name, cfg, adaptive_sdim, dp, spatial) for name, dp in zip(temporal, drop_paths))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C_in)`` -> ``(B, T, H/2, W/2, C)`` (or same size without downsample)."""
        if self.has_down:
            b, t = x.shape[:2]
            frames = self.down_norm(x).flatten(0, 1).permute(0, 3, 1, 2)   # (B·T, C_in, H, W) channels-last
            x = self.down(frames.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
            x = x.reshape(b, t, *x.shape[1:])
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x
