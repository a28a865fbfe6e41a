"""Hydra: bidirectional sequence mixing with a quasiseparable matrix (Hwang et al., 2024).

    M(X) = shift(SS(X)) + flip(shift(SS(flip(X)))) + D·X

``SS`` is a Mamba-2 style SSM with a scalar decay per head (SSD), ``shift`` moves the output one
step forward (zero at t = 0), ``flip`` reverses time. The forward and flipped sequences go
through ONE SSD call, concatenated along the batch axis; ``A`` and the input-dependent ``B``,
``C`` are shared between directions, ``dt`` has one projection per direction.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import RmsNorm
from torch import nn

from stfmamba.models.mamba import depthwise_conv_seq, init_dt_bias
from stfmamba.models.sdim import AdaptiveStateGate
from stfmamba.ops.selective_scan import fp32_scan, softplus
from stfmamba.ops.ssd import mamba_chunk_scan_combined

__all__ = ["HydraMixer", "hydra_mix", "hydra_quadratic"]


def _shift(y: torch.Tensor) -> torch.Tensor:
    """``y_t -> y_{t-1}`` along axis 1, zero at t = 0."""
    return F.pad(y[:, :-1], (0, 0) * (y.dim() - 2) + (1, 0))


def hydra_mix(x: torch.Tensor, dt_fw: torch.Tensor, dt_bw: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
              C: torch.Tensor, D: torch.Tensor, dt_bias: Optional[torch.Tensor] = None,
              dt_softplus: bool = False, chunk_size: int = 64, backend: str = "auto") -> torch.Tensor:
    """The quasiseparable token mixing of Hydra.

    Args:
        x: ``(B, L, H, P)``. dt_fw, dt_bw: ``(B, L, H)`` (both in the original time order).
        A: ``(H,)``. B, C: ``(B, L, G, N)``. D: ``(H,)``. dt_bias: ``(H,)``.

    Returns:
        ``(B, L, H, P)``.

    With the ``torch`` backend and a sequence that fits in one chunk (``L <= chunk_size``, one
    B/C group) the ``L x L`` quasiseparable matrix is built directly and applied with one batched
    matmul (:func:`hydra_quadratic`): no flipped copies, no concatenation, half the matmuls of two
    SSD calls. Otherwise both directions go through one SSD call on the batch-concatenated forward
    and flipped sequences.
    """
    if backend in ("auto", "torch") and not x.is_cuda and x.shape[1] <= chunk_size and B.shape[2] == 1:
        return hydra_quadratic(x, dt_fw, dt_bw, A, B, C, D, dt_bias, dt_softplus)
    flip = lambda t: t.flip(1)  # noqa: E731
    y2 = mamba_chunk_scan_combined(torch.cat([x, flip(x)]), torch.cat([dt_fw, flip(dt_bw)]), A,
                                   torch.cat([B, flip(B)]), torch.cat([C, flip(C)]), chunk_size,
                                   dt_bias=dt_bias, dt_softplus=dt_softplus, backend=backend)
    y_fw, y_bw = y2.chunk(2)
    return _shift(y_fw) + flip(_shift(y_bw)) + x * D.to(x.dtype)[:, None]


def _prev(v: torch.Tensor) -> torch.Tensor:
    """``v_{k-1}`` along the last axis (0 at k = 0, where it is always masked out)."""
    return F.pad(v[..., :-1], (1, 0))


class _HydraQuadratic(torch.autograd.Function):
    """Hydra's quasiseparable matrix built and applied per (sequence, head), with a hand-written
    backward. Layout ``(b, h, t, s)`` so that every elementwise pass runs over contiguous ``L x L``
    tiles (with heads innermost, as autograd's einsum formulation had them, broadcasts over a
    3-wide axis were 3-10x slower on CPU); the forward is ~13 in-place passes and one batched
    matmul, the backward two batched matmuls and ~20 passes, with no ``(b, t, s, h)`` temporaries
    kept by autograd.

    ``x (b, l, h, p)``; ``dtf, dtb (b, l, h)`` after bias and softplus; ``A, D (h,)``; ``B, C (b, l, n)``,
    all but ``x`` in the compute dtype (fp32 or fp64); ``x`` is cast to it on the way in.
    """

    @staticmethod
    def forward(ctx, x, dtf, dtb, A, B, C, D):
        b, l, h, p = x.shape
        dtype = dtf.dtype
        xh = torch.empty(b, h, l, p, dtype=dtype, device=x.device).copy_(x.transpose(1, 2))
        dtf_h, dtb_h = dtf.transpose(1, 2).contiguous(), dtb.transpose(1, 2).contiguous()   # (b, h, l)
        CB = torch.bmm(C, B.transpose(1, 2))                              # (b, t, s) = C_t·B_s
        CBlo, CBup = F.pad(CB[:, :-1], (0, 0, 1, 0)), F.pad(CB[:, 1:], (0, 0, 0, 1))  # rows C_{t-1}, C_{t+1}
        Fc, Gc = (dtf_h * A[:, None]).cumsum(-1), (dtb_h * A[:, None]).cumsum(-1)    # (b, h, l)
        off = torch.full((l, l), float("-inf"), dtype=dtype, device=x.device)
        # exponents F_{t-1} - F_s (s < t) and G_{s-1} - G_t (s > t); -inf elsewhere makes exp() 0.
        # Both are sums of non-positive log decays: the clamp only removes rounding above 0.
        K_lo = (_prev(Fc)[..., :, None] - Fc[..., None, :]).add_(off.triu(0)).clamp_(max=0).exp_()
        K_up = (_prev(Gc)[..., None, :] - Gc[..., :, None]).add_(off.tril(0)).clamp_(max=0).exp_()
        Q = (K_lo * dtf_h[:, :, None, :]).mul_(CBlo[:, None])
        Q.add_((K_up * dtb_h[:, :, None, :]).mul_(CBup[:, None]))
        Q.diagonal(dim1=-2, dim2=-1).add_(D[:, None])
        y = torch.bmm(Q.view(b * h, l, l), xh.view(b * h, l, p)).view(b, h, l, p)
        ctx.save_for_backward(xh, Q, K_lo, K_up, dtf_h, dtb_h, CBlo, CBup, A, B, C)
        ctx.x_dtype = x.dtype
        return torch.empty(b, l, h, p, dtype=x.dtype, device=x.device).copy_(y.transpose(1, 2))

    @staticmethod
    def backward(ctx, gy):
        xh, Q, K_lo, K_up, dtf_h, dtb_h, CBlo, CBup, A, B, C = ctx.saved_tensors
        b, h, l, p = xh.shape
        gyh = torch.empty_like(xh).copy_(gy.transpose(1, 2))              # (b, h, t, p)
        gQ = torch.bmm(gyh.view(b * h, l, p), xh.view(b * h, l, p).transpose(1, 2)).view(b, h, l, l)
        gxh = torch.bmm(Q.view(b * h, l, l).transpose(1, 2), gyh.view(b * h, l, p)).view(b, h, l, p)
        gx = torch.empty(b, l, h, p, dtype=ctx.x_dtype, device=xh.device).copy_(gxh.transpose(1, 2))
        gD = gQ.diagonal(dim1=-2, dim2=-1).sum((0, 2))

        def side(K, dt_h, CBs):
            """Gradients of ``Q_side = K · dt_s · CB_side``: w.r.t. dt (b, h, s), CB_side (b, t, s)
            and the exponent (b, h, t, s) (``dQ/dE = Q_side``; the forward's clamp at 0 is taken
            as the identity, since it only ever removes rounding)."""
            u = gQ * K
            gE = u * dt_h[:, :, None, :]
            gCBs = gE.sum(1)
            g_dt = u.mul_(CBs[:, None]).sum(2)
            return g_dt, gCBs, gE.mul_(CBs[:, None])

        gdtf, gCBlo, gE_lo = side(K_lo, dtf_h, CBlo)
        gdtb, gCBup, gE_up = side(K_up, dtb_h, CBup)
        # E_lo[t, s] = F_{t-1} - F_s,  E_up[t, s] = G_{s-1} - G_t;  F_{k-1} feeds row / column k
        next_ = lambda v: F.pad(v[..., 1:], (0, 1))  # noqa: E731  (gradient of v_{k-1} lands on k-1)
        gF = next_(gE_lo.sum(3)) - gE_lo.sum(2)
        gG = next_(gE_up.sum(2)) - gE_up.sum(3)
        # F = cumsum(dt_fw · A): the gradient of a cumsum is the reversed cumsum
        gaf, gab = (v.flip(-1).cumsum(-1).flip(-1) for v in (gF, gG))
        gdtf.add_(gaf * A[:, None])
        gdtb.add_(gab * A[:, None])
        gA = (gaf * dtf_h).sum((0, 2)) + (gab * dtb_h).sum((0, 2))
        gCB = F.pad(gCBlo[:, 1:], (0, 0, 0, 1)) + F.pad(gCBup[:, :-1], (0, 0, 1, 0))
        gC, gB = torch.bmm(gCB, B), torch.bmm(gCB.transpose(1, 2), C)
        return gx, gdtf.transpose(1, 2), gdtb.transpose(1, 2), gA, gB, gC, gD


@fp32_scan
def hydra_quadratic(x: torch.Tensor, dt_fw: torch.Tensor, dt_bw: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                    C: torch.Tensor, D: torch.Tensor, dt_bias: Optional[torch.Tensor] = None,
                    dt_softplus: bool = False) -> torch.Tensor:
    """Hydra's mixing as one explicit quasiseparable matrix per (sequence, head); same contract as
    :func:`hydra_mix` for one B/C group. With ``a = dt·A`` and inclusive cumulative sums ``F, G``
    of ``a_fw, a_bw`` over time::

        Q[t, s] = C_{t-1}·B_s · exp(F_{t-1} - F_s) · dt_fw_s      s < t  (shifted forward SSD)
        Q[t, s] = C_{t+1}·B_s · exp(G_{s-1} - G_t) · dt_bw_s      s > t  (flipped, shifted backward SSD)
        Q[t, t] = D

    Cost ``O(L^2)`` per head: meant for sequences that fit in one SSD chunk. Computed in fp32 (fp64
    for fp64 inputs) by :class:`_HydraQuadratic`; the output has ``x``'s dtype.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dt_fw, dt_bw, A, D = (t.to(dtype) for t in (dt_fw, dt_bw, A, D))
    if dt_bias is not None:
        dt_fw, dt_bw = dt_fw + dt_bias.to(dtype), dt_bw + dt_bias.to(dtype)
    if dt_softplus:
        dt_fw, dt_bw = softplus(dt_fw), softplus(dt_bw)
    return _HydraQuadratic.apply(x, dt_fw, dt_bw, A, B[:, :, 0].to(dtype), C[:, :, 0].to(dtype), D)


class HydraMixer(nn.Module):
    """Hydra token mixer over ``(B, L, d_model)`` sequences (one group of ``B``/``C``).

    Args:
        d_model: channels. d_state: ``N``. d_conv: width of the non-causal depthwise conv (rounded up to odd).
        expand: ``d_inner = expand · d_model``. headdim: ``P``; ``nheads = d_inner / P``.
        adaptive_sdim: gate the state channels. chunk_size: SSD chunk length.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 headdim: int = 32, adaptive_sdim: bool = False, chunk_size: int = 64,
                 backend: str = "auto") -> None:
        super().__init__()
        self.d_inner = expand * d_model
        if self.d_inner % headdim:
            raise ValueError(f"HydraMixer: expand·d_model = {self.d_inner} is not a multiple of "
                             f"model.headdim = {headdim}; pick a headdim that divides it")
        self.nheads, self.headdim, self.d_state = self.d_inner // headdim, headdim, d_state
        self.chunk_size, self.backend = chunk_size, backend
        conv_dim = self.d_inner + 2 * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + conv_dim + 2 * self.nheads)
        k = 2 * (d_conv // 2) + 1                                     # odd, centred: non-causal
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, k, groups=conv_dim, padding=k // 2)
        self.dt_bias = nn.Parameter(init_dt_bias(self.nheads))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        self.norm = RmsNorm(self.d_inner, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, d_model)
        self.state_gate = AdaptiveStateGate(d_state) if adaptive_sdim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, L, d_model)`` -> ``(B, L, d_model)``."""
        z, xbc, dt = self.in_proj(x).split([self.d_inner, self.d_inner + 2 * self.d_state, 2 * self.nheads], -1)
        # the conv and the mixing run in fp32 and read their strided slices once; the gate is a
        # bf16 elementwise op, which on CPU falls off the vectorised path for a strided slice
        z = z.contiguous()
        xbc = depthwise_conv_seq(xbc, self.conv1d.weight, self.conv1d.bias, silu=True)
        xs, Bm, Cm = xbc.split([self.d_inner, self.d_state, self.d_state], dim=-1)
        if self.state_gate is not None:
            Cm = Cm * self.state_gate()[0].to(Cm.dtype)
        y = hydra_mix(rearrange(xs, "b l (h p) -> b l h p", p=self.headdim), dt[..., :self.nheads],
                      dt[..., self.nheads:], -torch.exp(self.A_log.float()), Bm[:, :, None], Cm[:, :, None],
                      self.D, self.dt_bias, dt_softplus=True, chunk_size=self.chunk_size, backend=self.backend)
        y = rearrange(y, "b l h p -> b l (h p)").to(z.dtype)
        # RMSNorm in its weight's dtype: a bf16 input with an fp32 weight misses the fused kernel
        y = y * F.silu(z)
        return self.out_proj(self.norm(y.to(self.norm.weight.dtype)))
