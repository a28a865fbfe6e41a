"""Mamba-1 selective scan (Gu & Dao, 2023) with interchangeable backends.

The recurrence, per batch ``b``, channel ``d`` and state ``n``::

    h_t = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t = sum_n C_t[n] * h_t[n]  (+ D[d] * u_t, then * silu(z_t))

Backends behind :func:`selective_scan_fn` (mamba-ssm's argument names, order and layouts):

* ``"cuda"`` — mamba-ssm's fused kernel (``pip install .[gpu]`` on a CUDA machine).
* ``"torch"`` — :func:`selective_scan_blocked`: cache-sized blocks of sequences, vectorised
  passes over each block, one in-place fused multiply-add per time step, and a hand-written
  backward that recomputes the states instead of saving ``(B, D, L, N)`` tensors.
* ``"ref"`` — :func:`selective_scan_ref`: the plain sequential loop (float64 capable), for tests.

``"auto"`` picks ``cuda`` when the kernel is importable and the tensors are on a GPU, else ``torch``.
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import torch
import torch.nn.functional as F

try:  # optional GPU kernel
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except ImportError:
    _cuda_selective_scan = None

__all__ = ["selective_scan_fn", "selective_scan_ref", "selective_scan_blocked", "BACKENDS"]


def fp32_scan(fn):
    """Run ``fn`` with autocast off: the scan's exp / cumsum / decay matmuls stay in fp32 (or fp64)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)
    return wrapper


class _Softplus(torch.autograd.Function):
    """``log(1 + exp(x))`` for the CPU fast paths: same values as ``F.softplus`` (no threshold cut)
    with three temporaries instead of a scalar ``log1p`` loop; ``F.softplus`` costs ~11 ns per element
    on this CPU, more than the whole selective scan per ``(b, d, l)`` element."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        e = torch.abs(x).neg_().exp_()                   # exp(-|x|) in (0, 1]
        u = e + 1
        # log1p(e) = log(u) - ((u - 1) - e) / u: the correction removes the rounding of 1 + e
        c = (u - 1).sub_(e).div_(u)
        out = u.log_().sub_(c)
        return out.add_(torch.clamp(x, min=0, out=c))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


def softplus(x: torch.Tensor) -> torch.Tensor:
    """Differentiable softplus (see :class:`_Softplus`)."""
    return _Softplus.apply(x)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus, fast: bool = False):
    """Upcast to at least fp32, apply bias/softplus (``fast``: :func:`softplus`) and bring B, C to
    ``(b, g, n, l)``: ``g`` groups of ``d / g`` channels (``g = 1`` for the ``(b, n, l)`` layout)."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(dtype), delta.to(dtype), A.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[..., None]
    if delta_softplus:
        delta = softplus(delta) if fast else F.softplus(delta)
    b, d, l = u.shape

    def groups(M: torch.Tensor, name: str) -> torch.Tensor:
        M = M.to(dtype)
        if M.dim() == 3:                                    # (b, n, l): shared by all channels
            return M.unsqueeze(1)                           # (b, 1, n, l)
        if M.dim() == 4:                                    # (b, g, n, l): d // g channels per group
            g = M.shape[1]
            if d % g:
                raise ValueError(f"selective_scan: {name} has {g} groups, which does not divide D={d}")
            return M                                        # (b, g, n, l)
        raise ValueError(f"selective_scan: {name} must be (B, N, L) or (B, G, N, L), got {tuple(M.shape)}")

    return u, delta, A, groups(B, "B"), groups(C, "C"), dtype


def _same_groups(B: torch.Tensor, C: torch.Tensor, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B and C with unequal group counts ``(b, g, n, l)``: give both one group per channel."""
    if B.shape[1] == C.shape[1]:
        return B, C
    return B.repeat_interleave(d // B.shape[1], dim=1), C.repeat_interleave(d // C.shape[1], dim=1)


def _finish(y, u, D, z, out_dtype):
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


@fp32_scan
def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                       C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                       delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """Sequential reference: one Python step per time index that never materialises ``(b, d, l, n)``
    (for tests, and the stricter loop baseline of ``benchmarks/model.py``).

    Args:
        u: ``(B, D, L)`` input. delta: ``(B, D, L)``. A: ``(D, N)`` (negative for decay).
        B, C: ``(B, N, L)`` or ``(B, G, N, L)``. D: ``(D,)``. z: ``(B, D, L)``. delta_bias: ``(D,)``.

    Returns:
        ``y: (B, D, L)`` in ``u``'s dtype, and the last state ``(B, D, N)`` if requested.
    """
    out_dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    B, C = _same_groups(B, C, u.shape[1])
    b, d, l = u.shape
    g, n = B.shape[1], A.shape[1]
    # time-major views, so that every step reads whole (b, g, d/g) slices; B and C stay per group
    tm = lambda t: t.permute(2, 0, 1).reshape(l, b, g, d // g, 1)  # noqa: E731
    dt, du = tm(delta), tm(delta * u)
    Bt, Ct = (M.permute(3, 0, 1, 2).unsqueeze(3) for M in (B, C))  # (l, b, g, 1, n)
    Ag = A.view(g, d // g, n)
    h = u.new_zeros(b, g, d // g, n)
    ys = []
    for t in range(l):
        h = torch.exp(dt[t] * Ag) * h + du[t] * Bt[t]
        ys.append((h * Ct[t]).sum(-1).reshape(b, d))
    y = _finish(torch.stack(ys, dim=-1), u, D, z, out_dtype)
    return (y, h.reshape(b, d, n)) if return_last_state else y


# Elements per work buffer of the fast path (2 MB in fp32): a block of sequences whose decays and
# states stay in this CPU's caches (1 MB L2 per core, 32 MB shared L3) while every pass over them
# runs; measured best of 2^17..2^21 on the development machine (benchmarks/model.py --sweep-blocks).
BLOCK_ELEMS = 1 << 19
_LOG2E = math.log2(math.e)


def _batch_blocks(b: int, per_sequence: int, block_elems: int) -> list[tuple[int, int]]:
    step = max(1, min(b, block_elems // max(1, per_sequence)))
    return [(s, min(b, s + step)) for s in range(0, b, step)]


def _sequence_major(u, delta, A, B, C):
    """Small inputs rearranged once so that a block of sequences is one contiguous slice.

    Returns ``u, delta, delta·u: (b, l, g, 1, dg)``, ``B, C: (b, l, g, n, 1)``, ``A`` and
    ``A·log2(e)``: ``(g, n, dg)``, where ``g`` is the number of B/C groups and ``dg = d / g`` the
    channels sharing them.
    """
    b, d, l = u.shape
    g, n = B.shape[1], B.shape[2]
    dg = d // g
    sm = lambda t: t.transpose(1, 2).contiguous().view(b, l, g, 1, dg)  # noqa: E731
    ut, dt = sm(u), sm(delta)
    Bt = B.permute(0, 3, 1, 2).unsqueeze(-1).contiguous()
    Ct = C.permute(0, 3, 1, 2).unsqueeze(-1).contiguous()
    An = A.view(g, dg, n).transpose(1, 2).contiguous()
    return ut, dt, dt * ut, Bt, Ct, An, An * _LOG2E


def _states(dt, du, Bt, A2, a, h):
    """Fill ``a`` with the decays ``exp(delta A)`` and ``h`` with the states of one block, in place.

    ``dt, du = delta·u: (k, l, g, 1, dg)``, ``Bt: (k, l, g, n, 1)``, ``A2 = A·log2(e): (g, n, dg)``,
    ``a, h: (k, l, g, n, dg)`` work buffers. ``exp2`` is used because it is about 3x faster than
    ``exp`` on this CPU; the time loop is one fused multiply-add per step over the whole block.
    """
    torch.mul(dt, A2, out=a)
    torch.exp2(a, out=a)
    torch.mul(du, Bt, out=h)
    hs, as_ = h.unbind(1), a.unbind(1)
    for t in range(1, h.shape[1]):
        hs[t].addcmul_(as_[t], hs[t - 1])


def _buffers(u: torch.Tensor, blocks: list[tuple[int, int]], per_sequence: int, count: int):
    size = (blocks[0][1] - blocks[0][0]) * per_sequence
    return [u.new_empty(size) for _ in range(count)]


class _BlockedScan(torch.autograd.Function):
    """Selective scan core ``y = C·h`` with ``h_t = exp(delta_t A) h_{t-1} + delta_t u_t B_t``.

    ``u, delta: (b, d, l)`` (delta after bias/softplus), ``A: (d, n)``, ``B, C: (b, g, n, l)``.
    Forward keeps no ``(b, d, l, n)`` tensor for backward: the backward recomputes the decays and
    states block by block, runs the adjoint recurrence ``q_t = C_t dy_t + a_{t+1} q_{t+1}`` backwards
    in time and reduces every gradient with batched matmuls. The work buffers are laid out
    ``(k, l, g, n, dg)`` for a block of ``k`` sequences, so every small input and output of a block
    is a contiguous slice and the matmuls read and write them without copies.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block_elems):
        b, d, l = u.shape
        g, n = B.shape[1], B.shape[2]
        dg = d // g
        ut, dt, du, Bt, Ct, An, A2 = _sequence_major(u, delta, A, B, C)
        y = u.new_empty(b, l, g, 1, dg)
        last = u.new_empty(b, g, n, dg)
        blocks = _batch_blocks(b, l * d * n, block_elems)
        abuf, hbuf = _buffers(u, blocks, l * d * n, 2)
        for s, e in blocks:
            shape = (e - s, l, g, n, dg)
            a, h = abuf[:math.prod(shape)].view(shape), hbuf[:math.prod(shape)].view(shape)
            _states(dt[s:e], du[s:e], Bt[s:e], A2, a, h)
            torch.matmul(Ct[s:e].transpose(-1, -2), h, out=y[s:e])
            last[s:e] = h[:, l - 1]
        ctx.save_for_backward(u, delta, A, B, C)
        ctx.block_elems = block_elems
        return y.view(b, l, d).transpose(1, 2), last.transpose(-1, -2).reshape(b, d, n)

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C = ctx.saved_tensors
        b, d, l = u.shape
        g, n = B.shape[1], B.shape[2]
        dg = d // g
        ut, dt, du, Bt, Ct, An, A2 = _sequence_major(u, delta, A, B, C)
        dyt = dy.transpose(1, 2).contiguous().view(b, l, g, 1, dg)
        if dlast is not None:
            dlast = dlast.view(b, g, dg, n).transpose(-1, -2)
        g_du, g_dt = u.new_empty(b, l, g, 1, dg), u.new_empty(b, l, g, 1, dg)
        gB, gC = u.new_empty(b, l, g, n, 1), u.new_empty(b, l, g, n, 1)
        gA = torch.zeros_like(An)
        blocks = _batch_blocks(b, l * d * n, ctx.block_elems)
        abuf, hbuf, qbuf = _buffers(u, blocks, l * d * n, 3)
        for s, e in blocks:
            shape = (e - s, l, g, n, dg)
            a, h, q = (buf[:math.prod(shape)].view(shape) for buf in (abuf, hbuf, qbuf))
            _states(dt[s:e], du[s:e], Bt[s:e], A2, a, h)
            dyb = dyt[s:e]
            torch.mul(dyb, Ct[s:e], out=q)                            # q_t = dL/dh_t, accumulated below
            if dlast is not None:
                q[:, l - 1] += dlast[s:e]
            qs, as_ = q.unbind(1), a.unbind(1)
            for t in range(l - 2, -1, -1):
                qs[t].addcmul_(as_[t + 1], qs[t + 1])
            torch.matmul(h, dyb.transpose(-1, -2), out=gC[s:e])        # sum over the group's channels
            torch.matmul(q, du[s:e].transpose(-1, -2), out=gB[s:e])
            torch.matmul(Bt[s:e].transpose(-1, -2), q, out=g_du[s:e])
            # w_t = dL/d(delta_t A) = q_t a_t h_{t-1}, written over the decays
            a[:, 1:].mul_(h[:, :-1]).mul_(q[:, 1:])
            a[:, 0].zero_()
            torch.mul(a, An, out=h)
            torch.sum(h, 3, keepdim=True, out=g_dt[s:e])
            gA += a.mul_(dt[s:e]).sum((0, 1))
        back = lambda t: t.view(b, l, d).transpose(1, 2)  # noqa: E731
        gu = back(g_du * dt)
        gdelta = back(g_dt.add_(g_du * ut))
        gB, gC = (t.squeeze(-1).permute(0, 2, 3, 1) for t in (gB, gC))
        return gu, gdelta, gA.transpose(1, 2).reshape(d, n), gB, gC, None


@fp32_scan
def selective_scan_blocked(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                           delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                           return_last_state: bool = False, block_elems: Optional[int] = None):
    """Fast pure-PyTorch selective scan, same arguments and results as :func:`selective_scan_ref`.

    Why not a chunked matrix form (as SSD uses): the decay ``exp(delta_t A[d, n])`` differs per
    state channel, so an explicit within-chunk decay matrix costs ``O(L·q)`` per ``(b, d, n)``, and
    the factorised form ``E_t·cumsum(x/E)`` needs four more passes over ``(b, d, n, L)`` tensors
    plus a clamp against overflow — on a CPU both are memory-bound and were measured 4-11x slower
    than this. Here the sequences are processed in blocks of ``block_elems`` elements that stay in
    cache; per block there are four vectorised passes (decay, ``exp2``, input, read-out) and one
    in-place fused multiply-add per time step over the whole block, never a loop per element. The
    backward is written by hand (:class:`_BlockedScan`): it recomputes the states, so no
    ``(b, d, l, n)`` tensor is saved for backward.
    """
    out_dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus, fast=True)
    B, C = _same_groups(B, C, u.shape[1])
    y, last = _BlockedScan.apply(u, delta, A, B, C, block_elems or BLOCK_ELEMS)
    y = _finish(y, u, D, z, out_dtype)
    return (y, last) if return_last_state else y


def _scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               return_last_state=False, block_elems: Optional[int] = None):
    if _cuda_selective_scan is None:
        raise RuntimeError("selective_scan backend 'cuda' needs mamba-ssm, which is not installed: "
                           "run `pip install .[gpu]` on a CUDA machine, or use backend='torch'")
    if not u.is_cuda:
        raise RuntimeError("selective_scan backend 'cuda' needs CUDA tensors; move the model to a GPU "
                           "or use backend='torch'")
    return _cuda_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


BACKENDS = {"cuda": _scan_cuda, "torch": selective_scan_blocked, "ref": selective_scan_ref}


def resolve_backend(backend: str, is_cuda: bool) -> str:
    """``"auto"`` -> ``"cuda"`` when the kernel is importable and the input is on a GPU, else ``"torch"``."""
    if backend == "auto":
        return "cuda" if (_cuda_selective_scan is not None and is_cuda) else "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective_scan backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    return backend


def selective_scan_fn(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                      delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False, backend: str = "auto",
                      block_elems: Optional[int] = None):
    """Selective scan with mamba-ssm's signature (see module docstring for the backends).

    Args:
        u: ``(B, D, L)``. delta: ``(B, D, L)``. A: ``(D, N)``. B, C: ``(B, N, L)`` or ``(B, G, N, L)``.
        D: ``(D,)`` skip. z: ``(B, D, L)`` gate. delta_bias: ``(D,)``.
        backend: ``auto`` | ``cuda`` | ``torch`` | ``ref``.
        block_elems: work-buffer size of ``torch`` (default :data:`BLOCK_ELEMS`).

    Returns:
        ``y: (B, D, L)`` (and the last state ``(B, D, N)`` when ``return_last_state``).
    """
    name = resolve_backend(backend, u.is_cuda)
    if name == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return BACKENDS[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                          block_elems=block_elems)
