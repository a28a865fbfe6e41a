"""Mamba-1 selective scan (Gu & Dao, 2023) with interchangeable backends.

The recurrence, per batch ``b``, channel ``d`` and state ``n``::

    h_t = exp(delta_t * A[d, n]) * h_{t-1} + delta_t * B_t[n] * u_t
    y_t = sum_n C_t[n] * h_t[n]  (+ D[d] * u_t, then * silu(z_t))

Backends behind :func:`selective_scan_fn` (mamba-ssm's argument names, order and layouts):

* ``"cuda"`` — mamba-ssm's fused kernel (``pip install .[gpu]`` on a CUDA machine).
* ``"torch"`` — :func:`selective_scan_chunked`: the sequence is cut into chunks; inside a chunk
  the states come from a cumulative sum between two diagonal decay scalings (the chunk's
  lower-triangular decay matrix, factorised), across chunks a short recurrence carries the
  state. No Python loop over time steps, so it is fast on CPU.
* ``"ref"`` — :func:`selective_scan_ref`: the plain sequential loop (float64 capable), for tests.

``"auto"`` picks ``cuda`` when the kernel is importable and the tensors are on a GPU, else ``torch``.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

try:  # optional GPU kernel
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _cuda_selective_scan
except ImportError:
    _cuda_selective_scan = None

__all__ = ["selective_scan_fn", "selective_scan_ref", "selective_scan_chunked", "BACKENDS"]


def fp32_scan(fn):
    """Run ``fn`` with autocast off: the scan's exp / cumsum / decay matmuls stay in fp32 (or fp64)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return fn(*args, **kwargs)
    return wrapper


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Upcast to at least fp32, apply bias/softplus and broadcast B, C to ``(b, d, n, l)``."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(dtype), delta.to(dtype), A.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, l = u.shape

    def groups(M: torch.Tensor, name: str) -> torch.Tensor:
        M = M.to(dtype)
        if M.dim() == 3:                                    # (b, n, l): shared by all channels
            return M.unsqueeze(1)                           # (b, 1, n, l)
        if M.dim() == 4:                                    # (b, g, n, l): d // g channels per group
            g = M.shape[1]
            if d % g:
                raise ValueError(f"selective_scan: {name} has {g} groups, which does not divide D={d}")
            return M.repeat_interleave(d // g, dim=1)       # (b, d, n, l)
        raise ValueError(f"selective_scan: {name} must be (B, N, L) or (B, G, N, L), got {tuple(M.shape)}")

    return u, delta, A, groups(B, "B"), groups(C, "C"), dtype


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
    """Sequential reference: one Python step per time index (slow; for tests and benchmarks).

    Args:
        u: ``(B, D, L)`` input. delta: ``(B, D, L)``. A: ``(D, N)`` (negative for decay).
        B, C: ``(B, N, L)`` or ``(B, G, N, L)``. D: ``(D,)``. z: ``(B, D, L)``. delta_bias: ``(D,)``.

    Returns:
        ``y: (B, D, L)`` in ``u``'s dtype, and the last state ``(B, D, N)`` if requested.
    """
    out_dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, l = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = _finish(torch.stack(ys, dim=-1), u, D, z, out_dtype)
    return (y, h) if return_last_state else y


_MAX_LOG_RANGE = 60.0   # exp(60) ≈ 1.1e26 leaves fp32 (max ≈ 3.4e38) a 1e12 margin for the inputs


@fp32_scan
def selective_scan_chunked(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                           delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                           return_last_state: bool = False, chunk_size: int = 4):
    """Chunked pure-PyTorch selective scan, same arguments and results as :func:`selective_scan_ref`.

    Inside a chunk of ``q`` steps, with ``S_t = sum_{k<=t} delta_k A`` (cumulative log decay from
    the chunk start, ``E_t = exp(S_t) <= 1``)::

        h_t = E_t · ( h_start + cumsum_{s<=t}( delta_s B_s u_s / E_s ) )

    i.e. the ``(q, q)`` lower-triangular decay matrix ``exp(S_t - S_s)`` factorises into a
    diagonal scaling, a product with the all-ones lower-triangular matrix (``cumsum``) and
    another diagonal scaling, so the work stays ``O(L)`` per ``(b, d, n)`` (an explicit ``(q, q)``
    matrix, as in SSD, would cost ``O(L·q)`` here because the decay differs per state channel).
    ``1 / E_s <= exp(q · |floor|)``: each step's log decay is floored at ``-60 / q`` (``-15`` for the
    default ``q = 4``: a one-step decay of 3e-7, at fp32 resolution of the carried state), which
    keeps every factor finite. The chunk-end states are chained by a recurrence over the
    ``L / q`` chunks.
    """
    out_dtype = u.dtype
    u, delta, A, B, C, _ = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, l = u.shape
    n = A.shape[1]
    q = max(1, min(chunk_size, l))
    nc = -(-l // q)
    pad = nc * q - l
    dA = (delta[:, :, None, :] * A[None, :, :, None]).clamp(min=-_MAX_LOG_RANGE / q)  # (b, d, n, l) log decay
    dBu = (delta * u)[:, :, None, :] * B                              # (b, d, n, l)
    if pad:
        dA, dBu = F.pad(dA, (0, pad)), F.pad(dBu, (0, pad))
    E = dA.reshape(b, d, n, nc, q).cumsum(-1).exp()                  # (b, d, n, c, q) decay since chunk start
    inner = (dBu.reshape(b, d, n, nc, q) / E).cumsum(-1)              # (b, d, n, c, q)
    if nc > 1:
        starts, h = [], u.new_zeros(b, d, n)
        for c in range(nc):                                           # short: L / q chunks
            starts.append(h)
            h = E[..., c, -1] * (h + inner[..., c, -1])
        states = E * (inner + torch.stack(starts, dim=-1)[..., None])  # (b, d, n, c, q)
    else:
        states = E * inner
        h = states[..., 0, -1]
    y = (states.reshape(b, d, n, nc * q)[..., :l] * C).sum(2)        # (b, d, l)
    y = _finish(y, u, D, z, out_dtype)
    return (y, h) if return_last_state else y


def _scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
               return_last_state=False, chunk_size: int = 4):
    if _cuda_selective_scan is None:
        raise RuntimeError("selective_scan backend 'cuda' needs mamba-ssm, which is not installed: "
                           "run `pip install .[gpu]` on a CUDA machine, or use backend='torch'")
    if not u.is_cuda:
        raise RuntimeError("selective_scan backend 'cuda' needs CUDA tensors; move the model to a GPU "
                           "or use backend='torch'")
    return _cuda_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


BACKENDS = {"cuda": _scan_cuda, "torch": selective_scan_chunked, "ref": selective_scan_ref}


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
                      return_last_state: bool = False, backend: str = "auto", chunk_size: int = 4):
    """Selective scan with mamba-ssm's signature (see module docstring for the backends).

    Args:
        u: ``(B, D, L)``. delta: ``(B, D, L)``. A: ``(D, N)``. B, C: ``(B, N, L)`` or ``(B, G, N, L)``.
        D: ``(D,)`` skip. z: ``(B, D, L)`` gate. delta_bias: ``(D,)``.
        backend: ``auto`` | ``cuda`` | ``torch`` | ``ref``. chunk_size: chunk length of ``torch``.

    Returns:
        ``y: (B, D, L)`` (and the last state ``(B, D, N)`` when ``return_last_state``).
    """
    name = resolve_backend(backend, u.is_cuda)
    if name == "ref":
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return BACKENDS[name](u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                          chunk_size=chunk_size)
