"""Mamba-2 state-space duality (SSD; Dao & Gu, 2024): a selective scan with one scalar decay per head.

Per batch ``b`` and head ``h`` (state ``(P, N)``)::

    H_t = exp(dt_t A_h) H_{t-1} + dt_t x_t B_t^T        x_t: (P,), B_t, C_t: (N,)
    y_t = H_t C_t  (+ D_h x_t, then * silu(z_t))

Because the decay is a scalar per head, the whole chunk is a masked matrix ("1-semiseparable")
product: within a chunk ``Y = (L ∘ C Bᵀ) X`` with ``L[t, s] = exp(sum_{s<k<=t} dt_k A)``; chunk
states are chained with one more small matrix over chunks. Everything is matmuls — no loop at all.

Backends behind :func:`mamba_chunk_scan_combined` (mamba-ssm's names, order and layouts):
``"cuda"`` (mamba-ssm's Triton kernel; ``pip install .[gpu]``), ``"torch"`` (:func:`ssd_chunked`),
``"ref"`` (:func:`ssd_ref`, a sequential loop, float64 capable). ``"auto"`` = cuda on GPU when
importable, else torch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange

from stfmamba.ops.selective_scan import fp32_scan, softplus

try:  # optional GPU kernel
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined as _cuda_ssd
except ImportError:
    _cuda_ssd = None

__all__ = ["mamba_chunk_scan_combined", "ssd_chunked", "ssd_ref", "segsum", "BACKENDS"]


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``(..., q) -> (..., q, q)`` with ``out[..., t, s] = sum_{s<k<=t} a_k`` for ``t >= s``, ``-inf`` above."""
    q = a.shape[-1]
    cs = a.cumsum(-1)
    causal = torch.ones(q, q, dtype=torch.bool, device=a.device).tril()
    return (cs[..., :, None] - cs[..., None, :]).masked_fill(~causal, float("-inf"))


def _prepare(x, dt, A, B, C, dt_bias, dt_softplus, dt_limit, expand_groups: bool = True, fast: bool = False):
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    if dt_bias is not None:
        dt = dt + dt_bias.to(dtype)
    if dt_softplus:
        dt = softplus(dt) if fast else F.softplus(dt)
    if dt_limit != (0.0, float("inf")):
        dt = dt.clamp(*dt_limit)
    h, g = x.shape[2], B.shape[2]
    if h % g:
        raise ValueError(f"ssd: B/C have {g} groups, which does not divide the {h} heads of x")
    if not expand_groups:
        return x, dt, A, B, C
    B = B.repeat_interleave(h // g, dim=2)                            # (b, l, h, n)
    C = C.repeat_interleave(h // g, dim=2)
    return x, dt, A, B, C


def _finish(y, x, D, z, out_dtype):
    if D is not None:
        D = D.to(y.dtype)
        y = y + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


@fp32_scan
def ssd_ref(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
            chunk_size: int = 0, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
            dt_bias: Optional[torch.Tensor] = None, initial_states: Optional[torch.Tensor] = None,
            dt_softplus: bool = False, dt_limit=(0.0, float("inf")), return_final_states: bool = False):
    """Sequential reference (one Python step per time index); same contract as :func:`ssd_chunked`."""
    out_dtype = x.dtype
    x, dt, A, B, C = _prepare(x, dt, A, B, C, dt_bias, dt_softplus, dt_limit)
    b, l, h, p = x.shape
    state = x.new_zeros(b, h, p, B.shape[-1]) if initial_states is None else initial_states.to(x.dtype)
    ys = []
    for t in range(l):
        decay = torch.exp(dt[:, t] * A)                               # (b, h)
        state = decay[..., None, None] * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((state * C[:, t, :, None, :]).sum(-1))              # (b, h, p)
    y = _finish(torch.stack(ys, dim=1), x, D, z, out_dtype)
    return (y, state) if return_final_states else y


def _one_chunk(x, dt, A, B, C):
    """The whole sequence as one chunk, zero initial state: ``y_t = sum_{s<=t} C_t·B_s exp(cs_t -
    cs_s) dt_s x_s`` with ``cs`` the cumulative log decay, as one explicit ``(L, L)`` matrix per
    (sequence, head) applied with one batched matmul, everything laid out ``(b, h, t, s)`` so the
    matmul needs no copy of the matrix. Exponents on the causal side are sums of non-positive log
    decays, so they are clamped at 0 and cannot overflow; the other side gets ``-inf`` before the
    exponential, which makes it exactly 0 (value and gradient) without a masking pass. Base 2
    (``A·log2 e``, ``exp2``): ``exp`` is ~3x slower than ``exp2`` on this CPU."""
    b, l, h, p = x.shape
    g = B.shape[2]
    cs = (dt * (A * math.log2(math.e))).cumsum(1).transpose(1, 2).contiguous()   # (b, h, l), base 2
    upper = torch.full((l, l), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
    M = (cs[..., :, None] - cs[..., None, :] + upper).clamp(max=0).exp2()   # (b, h, t, s)
    CB = C.transpose(1, 2) @ B.permute(0, 2, 3, 1)                    # (b, g, t, s) = C_t·B_s
    M = (M.view(b, g, h // g, l, l) * CB[:, :, None]).view(b, h, l, l) * dt.transpose(1, 2)[:, :, None, :]
    y = M @ x.transpose(1, 2)                                         # (b, h, t, p)
    return y.transpose(1, 2)


@fp32_scan
def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                chunk_size: int = 64, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                dt_bias: Optional[torch.Tensor] = None, initial_states: Optional[torch.Tensor] = None,
                dt_softplus: bool = False, dt_limit=(0.0, float("inf")), return_final_states: bool = False):
    """Chunked SSD in pure PyTorch (the four steps of the SSD paper, as matmuls).

    Args:
        x: ``(B, L, H, P)``. dt: ``(B, L, H)``. A: ``(H,)``. B, C: ``(B, L, G, N)``.
        chunk_size: chunk length ``q`` (L need not be a multiple). D: ``(H,)`` or ``(H, P)``.
        z: ``(B, L, H, P)``. dt_bias: ``(H,)``. initial_states: ``(B, H, P, N)``.

    Returns:
        ``y: (B, L, H, P)`` in ``x``'s dtype (and final states ``(B, H, P, N)`` if requested).
    """
    out_dtype = x.dtype
    x, dt, A, B, C = _prepare(x, dt, A, B, C, dt_bias, dt_softplus, dt_limit, expand_groups=False, fast=True)
    b, l, h, p = x.shape
    if l <= chunk_size and initial_states is None and not return_final_states:
        return _finish(_one_chunk(x, dt, A, B, C), x, D, z, out_dtype)
    g = B.shape[2]
    q = max(1, min(chunk_size, l))
    nc = -(-l // q)
    pad = nc * q - l
    xdt = x * dt[..., None]                                           # (b, l, h, p) input scaled by dt
    a = dt * A                                                        # (b, l, h) log decay per step
    Bp, Cp = B, C
    if pad:
        xdt, a = F.pad(xdt, (0, 0, 0, 0, 0, pad)), F.pad(a, (0, 0, 0, pad))
        Bp, Cp = F.pad(B, (0, 0, 0, 0, 0, pad)), F.pad(C, (0, 0, 0, 0, 0, pad))
    xc = rearrange(xdt, "b (c q) h p -> b c h q p", q=q)
    Bc = rearrange(Bp, "b (c q) g n -> b c g q n", q=q)
    Cc = rearrange(Cp, "b (c q) g n -> b c g q n", q=q)
    ac = rearrange(a, "b (c q) h -> b h c q", q=q)
    a_cs = ac.cumsum(-1)                                              # (b, h, c, q)

    # 1. within chunks: Y = (L ∘ C Bᵀ) X, with C Bᵀ computed once per group and shared by its heads
    Lmat = segsum(ac).exp().transpose(1, 2)                           # (b, c, h, q, q)
    CB = (Cc @ Bc.transpose(-1, -2))[:, :, :, None]                   # (b, c, g, 1, q, q)
    M = (Lmat.reshape(b, nc, g, h // g, q, q) * CB).reshape(b, nc, h, q, q)
    y = M @ xc                                                        # (b, c, h, q, p)
    Bc, Cc = Bc.repeat_interleave(h // g, dim=2), Cc.repeat_interleave(h // g, dim=2)  # (b, c, h, q, n)
    # 2. state at the end of each chunk from its own inputs
    to_end = (a_cs[..., -1:] - a_cs).exp().transpose(1, 2)            # (b, c, h, q)
    chunk_states = (xc * to_end[..., None]).transpose(-1, -2) @ Bc    # (b, c, h, p, n)
    # 3. chain the chunk states (a (c+1) x (c+1) decay matrix over chunks)
    init = x.new_zeros(b, 1, h, p, Bc.shape[-1]) if initial_states is None else initial_states.to(x.dtype)[:, None]
    chunk_states = torch.cat([init, chunk_states], dim=1)             # (b, c+1, h, p, n)
    chunk_decay = segsum(F.pad(a_cs[..., -1], (1, 0))).exp()          # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, chunk_states)
    start, final = states[:, :-1], states[:, -1]                      # (b, c, h, p, n), (b, h, p, n)
    # 4. contribution of the carried-in state to every position
    from_start = a_cs.exp().transpose(1, 2)                           # (b, c, h, q)
    y = y + (Cc @ start.transpose(-1, -2)) * from_start[..., None]    # (b, c, h, q, p)
    y = rearrange(y, "b c h q p -> b (c q) h p")[:, :l]
    y = _finish(y, x, D, z, out_dtype)
    return (y, final) if return_final_states else y


def _ssd_cuda(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, initial_states=None,
              dt_softplus=False, dt_limit=(0.0, float("inf")), return_final_states=False, seq_idx=None):
    if _cuda_ssd is None:
        raise RuntimeError("SSD backend 'cuda' needs mamba-ssm, which is not installed: "
                           "run `pip install .[gpu]` on a CUDA machine, or use backend='torch'")
    if not x.is_cuda:
        raise RuntimeError("SSD backend 'cuda' needs CUDA tensors; move the model to a GPU or use backend='torch'")
    return _cuda_ssd(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                     seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=dt_limit,
                     return_final_states=return_final_states)


BACKENDS = {"cuda": _ssd_cuda, "torch": ssd_chunked, "ref": ssd_ref}


def mamba_chunk_scan_combined(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                              C: torch.Tensor, chunk_size: int, D: Optional[torch.Tensor] = None,
                              z: Optional[torch.Tensor] = None, dt_bias: Optional[torch.Tensor] = None,
                              initial_states: Optional[torch.Tensor] = None, seq_idx: Optional[torch.Tensor] = None,
                              dt_softplus: bool = False, dt_limit=(0.0, float("inf")),
                              return_final_states: bool = False, backend: str = "auto"):
    """SSD with mamba-ssm's signature; see :func:`ssd_chunked` for shapes and the module docstring
    for backends (``auto`` | ``cuda`` | ``torch`` | ``ref``). ``seq_idx`` is only supported by ``cuda``."""
    if backend == "auto":
        backend = "cuda" if (_cuda_ssd is not None and x.is_cuda) else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown SSD backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    if seq_idx is not None:
        if backend != "cuda":
            raise ValueError("mamba_chunk_scan_combined: seq_idx is only supported by the cuda backend")
        return _ssd_cuda(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, initial_states=initial_states,
                         seq_idx=seq_idx, dt_softplus=dt_softplus, dt_limit=dt_limit,
                         return_final_states=return_final_states)
    return BACKENDS[backend](x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                             initial_states=initial_states, dt_softplus=dt_softplus, dt_limit=dt_limit,
                             return_final_states=return_final_states)
