"""Spatial and temporal mixers of a spatio-temporal block, chosen by name from registries.

Every mixer maps ``x: (B, T, H, W, C) -> (B, T, H, W, C)`` (channels last); the block adds the
residual. Each wrapper says which token sequence it mixes:

Temporal (``TEMPORAL_MIXERS``):
  ``dcconv``    DCConv3D over time with contour-following offsets (V7.3 stages 1–2)
  ``bimamba``   Mamba-1 forward + flipped scan over ``(B·H·W, T, C)`` (V7.3 stage 3)
  ``attention`` self-attention over all ``T·H·W`` tokens of the clip (V7.3 stage 4)
  ``hydra``     Hydra quasiseparable mixer over ``(B·H·W, T, C)`` (V8 ``use_hydra``)
  ``mamer``     Hydra then temporal self-attention over ``(B·H·W, T, C)`` (V8 ``use_mamer``)

Spatial (``SPATIAL_MIXERS``), per frame on ``(B·T, C, H, W)`` in channels-last memory:
  ``conv3x3``   dense 3×3 conv → LayerNorm → MLP(4×)  (default: dense convs run near the matmul
                ceiling on CPU, depthwise ones at a few per cent of it)
  ``dwconv7``   ConvNeXt's depthwise 7×7 conv → LayerNorm → MLP(4×)  (faithful ConvNeXt, slower on CPU)
"""
from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange
from timm.layers import LayerNormFp32, Mlp
from torch import nn

from stfmamba.config import ModelConfig
from stfmamba.models.attention import SelfAttention
from stfmamba.models.dcconv import DCConv3D
from stfmamba.models.hydra import HydraMixer
from stfmamba.models.mamba import MambaMixer

__all__ = ["SPATIAL_MIXERS", "TEMPORAL_MIXERS", "SpatialConvMixer", "PerLocationTemporal",
           "GlobalAttention", "MamerMixer", "build_temporal_mixer", "build_spatial_mixer"]


class SpatialConvMixer(nn.Module):
    """Per-frame conv → LayerNorm → MLP (ConvNeXt block body).

    Args: dim: channels. kernel_size, groups: the conv (groups = dim is depthwise). mlp_ratio: MLP width.
    """

    def __init__(self, dim: int, kernel_size: int = 3, groups: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=groups)
        self.norm = LayerNormFp32(dim)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C)`` -> same."""
        b = x.shape[0]
        frames = rearrange(x, "b t h w c -> (b t) c h w")             # a channels-last view, no copy
        y = rearrange(self.conv(frames.contiguous(memory_format=torch.channels_last)),
                      "(b t) c h w -> b t h w c", b=b)
        return self.mlp(self.norm(y))


class PerLocationTemporal(nn.Module):
    """Runs a sequence mixer over time at every spatial location: ``(B·H·W, T, C)`` sequences."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.mixer = mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C)`` -> same."""
        b, t, h, w, c = x.shape
        y = self.mixer(rearrange(x, "b t h w c -> (b h w) t c"))
        return rearrange(y, "(b h w) t c -> b t h w c", b=b, h=h, w=w)


class GlobalAttention(nn.Module):
    """Self-attention over all ``T·H·W`` tokens of a clip (the V7.3 stage-4 Transformer)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C)`` -> same."""
        b, t, h, w, c = x.shape
        return self.attn(x.reshape(b, t * h * w, c)).reshape(b, t, h, w, c)


class MamerMixer(nn.Module):
    """Mamer: Hydra, then temporal self-attention (with its own pre-norm and residual), over ``(B·H·W, T, C)``."""

    def __init__(self, dim: int, hydra: HydraMixer) -> None:
        super().__init__()
        self.hydra = hydra
        self.norm = LayerNormFp32(dim)
        self.attn = SelfAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B·H·W, T, C)`` -> same."""
        y = self.hydra(x)
        return y + self.attn(self.norm(y))


def _hydra(dim: int, cfg: ModelConfig, adaptive_sdim: bool) -> HydraMixer:
    return HydraMixer(dim, cfg.d_state, cfg.d_conv, cfg.expand, cfg.headdim, adaptive_sdim)


TemporalFactory = Callable[[int, ModelConfig, bool], nn.Module]
TEMPORAL_MIXERS: dict[str, TemporalFactory] = {
    "dcconv": lambda dim, cfg, sd: DCConv3D(dim, cfg.dcconv_kernel_length),
    "bimamba": lambda dim, cfg, sd: PerLocationTemporal(
        MambaMixer(dim, cfg.d_state, cfg.d_conv, cfg.expand, bidirectional=True, adaptive_sdim=sd)),
    "attention": lambda dim, cfg, sd: GlobalAttention(dim),
    "hydra": lambda dim, cfg, sd: PerLocationTemporal(_hydra(dim, cfg, sd)),
    "mamer": lambda dim, cfg, sd: PerLocationTemporal(MamerMixer(dim, _hydra(dim, cfg, sd))),
}

SPATIAL_MIXERS: dict[str, Callable[[int], nn.Module]] = {
    "conv3x3": lambda dim: SpatialConvMixer(dim, 3, 1),
    "dwconv7": lambda dim: SpatialConvMixer(dim, 7, dim),
}


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; registered: {', '.join(registry)}")
    return registry[name]


def build_temporal_mixer(name: str, dim: int, cfg: ModelConfig, adaptive_sdim: bool) -> nn.Module:
    return _lookup(TEMPORAL_MIXERS, name, "temporal mixer")(dim, cfg, adaptive_sdim)


def build_spatial_mixer(name: str, dim: int) -> nn.Module:
    return _lookup(SPATIAL_MIXERS, name, "spatial mixer")(dim)
