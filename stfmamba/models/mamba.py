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

__all__ = ["MambaMixer", "init_dt_bias", "depthwise_conv_seq", "grouped_linear"]


def init_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Inverse-softplus of ``dt`` drawn log-uniformly in ``[dt_min, dt_max]`` (mamba's init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


def depthwise_conv_seq(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       causal: bool = False) -> torch.Tensor:
    """Depthwise conv along time, channels last: ``x (B, L, C)``, ``weight (C, 1, K)`` -> ``(B, L, C)``.

    ``causal``: output ``t`` sees inputs ``t-K+1 … t`` (Mamba), else ``t-K//2 … t+K//2`` (odd K, Hydra).
    Written as K shifted multiply-adds over contiguous ``(L, C)`` slabs: on CPU several times
    faster than ``nn.Conv1d``'s depthwise kernel and its backward for short sequences, with no
    transposes. Equals ``conv1d`` on the ``(B, C, L)`` transpose (trimmed to ``L`` when causal).
    """
    k, length = weight.shape[-1], x.shape[1]
    xp = F.pad(x, (0, 0, k - 1, 0) if causal else (0, 0, k // 2, k // 2))   # (B, L + K - 1, C)
    w = weight[:, 0].t().contiguous().to(x.dtype)                     # (K, C), rows contiguous
    y = xp[:, 0:length] * w[0]
    for j in range(1, k):
        y = y + xp[:, j:j + length] * w[j]
    return y if bias is None else y + bias.to(x.dtype)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A grouped 1x1 ``nn.Conv1d`` applied channels last: ``x (B, L, g·c_in)``, ``weight (g·c_out, c_in, 1)``
    -> ``(B, L, g, c_out)``."""
    g = x.shape[-1] // weight.shape[1]
    w = weight[:, :, 0].view(g, -1, weight.shape[1])                  # (g, c_out, c_in)
    if g == 1:
        return F.linear(x, w[0]).unsqueeze(2)
    return torch.einsum("blgi,goi->blgo", x.view(*x.shape[:2], g, -1), w)


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
        """x: ``(B, L, d_model)`` -> ``(B, L, d_model)``.

        Everything stays channels last, ``(B, L, channels)``: the scan takes ``u``, ``dt`` as
        ``(B, D, L)`` transposed views of them, which is the sequence-major layout it works in, so
        no tensor is transposed in memory on the way in or out.
        """
        u, z = self.in_proj(x).chunk(2, dim=-1)                       # (B, L, d_inner) each
        if self.ndir == 2:
            u = torch.cat([u, u.flip(1)], dim=-1)                     # (B, L, 2·d_inner)
        u = F.silu(depthwise_conv_seq(u, self.conv1d.weight, self.conv1d.bias, causal=True))
        proj = grouped_linear(u, self.x_proj.weight)                  # (B, L, g, dt_rank + 2N)
        dt, Bm, Cm = proj.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = grouped_linear(dt.flatten(2), self.dt_proj.weight).flatten(2)   # (B, L, g·d_inner)
        if self.state_gate is not None:
            Cm = Cm * self.state_gate()[None, None].to(Cm.dtype)
        y = selective_scan_fn(u.transpose(1, 2), dt.transpose(1, 2), -torch.exp(self.A_log.float()),
                              Bm.permute(0, 2, 3, 1), Cm.permute(0, 2, 3, 1), self.D.float(), None,
                              self.dt_bias.float(), True, backend=self.backend).transpose(1, 2)
        if self.ndir == 2:
            y = y[..., :self.d_inner] + y[..., self.d_inner:].flip(1)  # (B, L, d_inner)
        return self.out_proj(y.to(z.dtype) * F.silu(z))
