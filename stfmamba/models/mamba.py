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
from torch import nn

from stfmamba.models.sdim import AdaptiveStateGate
from stfmamba.ops.selective_scan import selective_scan_fn

__all__ = ["MambaMixer", "init_dt_bias", "depthwise_conv_seq", "grouped_linear"]


def init_dt_bias(n: int, dt_min: float = 1e-3, dt_max: float = 0.1) -> torch.Tensor:
    """Inverse-softplus of ``dt`` drawn log-uniformly in ``[dt_min, dt_max]`` (mamba's init)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=1e-4)
    return dt + torch.log(-torch.expm1(-dt))


def _taps(k: int, length: int, causal: bool):
    """Per tap ``j``: (output slice, input slice) along time; output ``t`` reads input ``t + d_j``."""
    for j in range(k):
        d = j - (k - 1) if causal else j - k // 2
        yield j, slice(max(0, -d), length - max(0, d)), slice(max(0, d), length - max(0, -d))


class _DepthwiseConvSeq(torch.autograd.Function):
    """Channels-last depthwise conv along time (+ optional SiLU) with a hand-written backward.

    The forward is K in-place fused multiply-adds of whole ``(B, L', C)`` slabs into one fp32
    buffer (no padded copy); the backward runs the same slabs in the other direction for the
    input gradient and one product + reduction per tap for the weights. Autograd's version of the
    same arithmetic kept a zero-filled padded gradient per tap and ran every pass in bf16; this one
    computes in fp32 and was ~2-3x faster forward + backward on CPU.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, causal, act):
        dtype = torch.promote_types(x.dtype, torch.float32)
        b, length, c = x.shape
        k = weight.shape[-1]
        xf = x.to(dtype)
        w = weight[:, 0].t().to(dtype).contiguous()                   # (K, C), rows contiguous
        y = x.new_empty(b, length, c, dtype=dtype)
        if bias is None:
            y.zero_()
        else:
            y.copy_(bias.to(dtype).expand_as(y))
        for j, dst, src in _taps(k, length, causal):
            y[:, dst].addcmul_(xf[:, src], w[j])
        ctx.save_for_backward(xf, w, y)
        ctx.meta = causal, act, x.dtype, weight.dtype, None if bias is None else bias.dtype
        return F.silu(y) if act else y

    @staticmethod
    def backward(ctx, g):
        xf, w, y = ctx.saved_tensors
        causal, act, x_dtype, w_dtype, b_dtype = ctx.meta
        length = y.shape[1]
        gy = g.to(y.dtype)
        if act:
            gy = torch.ops.aten.silu_backward(gy, y)
        gx = torch.zeros_like(xf)
        gw = w.new_empty(w.shape)
        b, c = y.shape[0], y.shape[2]
        prod = y.new_empty(y.numel())
        for j, dst, src in _taps(w.shape[0], length, causal):
            gx[:, src].addcmul_(gy[:, dst], w[j])
            # the product in a contiguous buffer: a column sum over (rows, C) is ~10x faster than
            # the same sum over a strided (B, L', C) slice
            p = prod[:b * (dst.stop - dst.start) * c].view(b, -1, c)
            torch.mul(gy[:, dst], xf[:, src], out=p)
            torch.sum(p.view(-1, c), 0, out=gw[j])
        gb = None if b_dtype is None else gy.reshape(-1, c).sum(0).to(b_dtype)
        return gx.to(x_dtype), gw.t()[:, None].to(w_dtype), gb, None, None


def depthwise_conv_seq(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                       causal: bool = False, silu: bool = False) -> torch.Tensor:
    """Depthwise conv along time, channels last: ``x (B, L, C)``, ``weight (C, 1, K)`` -> ``(B, L, C)``.

    ``causal``: output ``t`` sees inputs ``t-K+1 … t`` (Mamba), else ``t-K//2 … t+K//2`` (odd K, Hydra).
    ``silu``: apply SiLU to the result (fused into the same autograd node). Equals ``conv1d`` on the
    ``(B, C, L)`` transpose (trimmed to ``L`` when causal); computed and returned in fp32 (fp64 for
    fp64 inputs): every consumer (scan, Hydra mixing, autocast matmuls) casts it anyway. On CPU
    several times faster than ``nn.Conv1d``'s depthwise kernel and its backward for short
    sequences, with no transposes (:class:`_DepthwiseConvSeq`).
    """
    return _DepthwiseConvSeq.apply(x, weight, bias, causal, silu)


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
        u = depthwise_conv_seq(u, self.conv1d.weight, self.conv1d.bias, causal=True, silu=True)
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
