"""Mamba-1 mixer (Gu & Dao, 2023) and its bidirectional variant (Vision-Mamba style Bi-Mamba).

The bidirectional mixer shares the input / output projections and the ``z`` gate between
directions and gives each direction its own conv, ``x_proj``, ``dt``, ``A`` and ``D``. Both
directions run in ONE selective-scan call: the time-flipped copy is stacked along the channel
axis (``2·d_inner`` channels) and the per-direction ``B``/``C`` are the scan's two groups.
Because the gate is shared, ``y_f ⊙ silu(z) + flip(y_b ⊙ silu(flip z)) = (y_f + flip y_b) ⊙ silu(z)``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from stfmamba.models.sdim import AdaptiveStateGate
from stfmamba.ops.selective_scan import selective_scan_fn

__all__ = ["MambaMixer", "init_dt_bias", "causal_depthwise_conv"]


def init_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Inverse-softplus of ``dt`` drawn log-uniformly in ``[dt_min, dt_max]`` (mamba's init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """Causal depthwise conv along the last axis: ``x (B, C, L)``, ``weight (C, 1, K)`` -> ``(B, C, L)``.

    K shifted multiply-adds; on CPU several times faster than ``nn.Conv1d``'s depthwise kernel and
    its backward for short sequences. Equals ``conv1d(x, weight, bias, padding=K-1, groups=C)[..., :L]``.
    """
    k, length = weight.shape[-1], x.shape[-1]
    xp = F.pad(x, (k - 1, 0))                                         # (B, C, L + K - 1)
    w = weight[:, 0].to(x.dtype)                                      # (C, K)
    y = xp[..., 0:length] * w[:, 0, None]
    for j in range(1, k):
        y = y + xp[..., j:j + length] * w[:, j, None]
    return y if bias is None else y + bias.to(x.dtype)[:, None]


class MambaMixer(nn.Module):
    """Mamba-1 token mixer over ``(B, L, d_model)`` sequences.

    Args:
        d_model: channels. d_state: SSM state size ``N``. d_conv: causal conv width.
        expand: ``d_inner = expand · d_model``. bidirectional: add a scan of the flipped sequence.
        adaptive_sdim: gate the state channels (see :mod:`stfmamba.models.sdim`).
        backend: selective-scan backend (``auto`` = mamba-ssm on a GPU, the blocked CPU scan otherwise).
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Optional[int] = None, bidirectional: bool = False, adaptive_sdim: bool = False,
                 backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.ndir = 2 if bidirectional else 1
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.backend = backend
        inner = self.ndir * self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner)
        self.conv1d = nn.Conv1d(inner, inner, d_conv, groups=inner, padding=d_conv - 1)
        self.x_proj = nn.Conv1d(inner, self.ndir * (self.dt_rank + 2 * d_state), 1, groups=self.ndir, bias=False)
        self.dt_proj = nn.Conv1d(self.ndir * self.dt_rank, inner, 1, groups=self.ndir, bias=False)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        self.dt_bias = nn.Parameter(init_dt_bias(inner))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(self.d_inner, d_model)
        self.state_gate = AdaptiveStateGate(d_state, self.ndir) if adaptive_sdim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, L, d_model)`` -> ``(B, L, d_model)``."""
        u, z = self.in_proj(x).chunk(2, dim=-1)                       # (B, L, d_inner) each
        u = rearrange(u, "b l d -> b d l")
        if self.ndir == 2:
            u = torch.cat([u, u.flip(-1)], dim=1)                     # (B, 2·d_inner, L)
        u = F.silu(causal_depthwise_conv(u, self.conv1d.weight, self.conv1d.bias))
        proj = rearrange(self.x_proj(u), "b (g k) l -> b g k l", g=self.ndir)
        dt, Bm, Cm = proj.split([self.dt_rank, self.d_state, self.d_state], dim=2)  # (B, g, ·, L)
        dt = self.dt_proj(rearrange(dt, "b g r l -> b (g r) l"))      # (B, g·d_inner, L)
        if self.state_gate is not None:
            Cm = Cm * self.state_gate()[None, :, :, None].to(Cm.dtype)
        y = selective_scan_fn(u, dt, -torch.exp(self.A_log.float()), Bm, Cm, self.D.float(), None,
                              self.dt_bias.float(), True, backend=self.backend)
        if self.ndir == 2:
            y = y[:, :self.d_inner] + y[:, self.d_inner:].flip(-1)   # (B, d_inner, L)
        y = rearrange(y, "b d l -> b l d").to(z.dtype) * F.silu(z)
        return self.out_proj(y)
