"""One-level 3D discrete wavelet transform (and its inverse) as differentiable PyTorch ops.

The filters come from PyWavelets (``pywt.Wavelet(name)``), never typed in. The boundary
handling is PyWavelets' default ``'symmetric'`` mode (half-sample symmetric extension), so
``dwt3d(x)`` equals ``pywt.dwtn(x, wavelet, mode='symmetric', axes=(-3, -2, -1))`` and
``idwt3d(dwt3d(x))`` reconstructs ``x`` (even lengths; odd lengths gain one sample, as in pywt).

Sub-band naming: three letters time-height-width, ``L`` = low-pass (pywt ``a``), ``H`` =
high-pass (pywt ``d``). ``HLL`` is high-pass in time and low-pass in space: temporal flicker.
Bands are stacked in :data:`BANDS` order (``itertools.product('LH', repeat=3)``).
"""
from __future__ import annotations

import functools
import itertools

import pywt
import torch
import torch.nn.functional as F

__all__ = ["BANDS", "band_index", "dwt3d", "idwt3d", "dwt_output_length", "to_pywt_key"]

BANDS: tuple[str, ...] = tuple("".join(p) for p in itertools.product("LH", repeat=3))


def band_index(name: str) -> int:
    """Position of a sub-band (e.g. ``'HLL'``) in the band axis of :func:`dwt3d`'s output."""
    try:
        return BANDS.index(name.upper())
    except ValueError:
        raise ValueError(f"unknown wavelet sub-band {name!r}; valid: {', '.join(BANDS)}") from None


def to_pywt_key(name: str) -> str:
    """``'HLL'`` -> ``'daa'`` (the key of the same band in ``pywt.dwtn``'s result)."""
    return name.upper().replace("L", "a").replace("H", "d")


def dwt_output_length(n: int, wavelet: str = "sym2") -> int:
    """Coefficients per axis for an input of length ``n`` (pywt 'symmetric' mode)."""
    return (n + pywt.Wavelet(wavelet).dec_len - 1) // 2


@functools.lru_cache(maxsize=None)
def _filters(wavelet: str) -> tuple[tuple[float, ...], ...]:
    w = pywt.Wavelet(wavelet)
    return tuple(w.dec_lo), tuple(w.dec_hi), tuple(w.rec_lo), tuple(w.rec_hi)


def _bank(rows: tuple[tuple[float, ...], ...], like: torch.Tensor, flip: bool) -> torch.Tensor:
    bank = torch.tensor(rows, dtype=like.dtype, device=like.device)  # (2, F)
    return (bank.flip(-1) if flip else bank).unsqueeze(1)            # (2, 1, F)


def _analysis_last(x: torch.Tensor, wavelet: str) -> torch.Tensor:
    """Split the last axis into (low, high) coefficients: ``(..., N) -> (2, ..., n)``."""
    dec_lo, dec_hi, _, _ = _filters(wavelet)
    flen = len(dec_lo)
    n = x.shape[-1]
    if n < flen - 1:
        raise ValueError(f"dwt3d: an axis of length {n} is shorter than the {wavelet} extension "
                         f"({flen - 1}); use longer clips or larger crops")
    lead = x.shape[:-1]
    flat = x.reshape(-1, 1, n)
    ext = flen - 1
    # half-sample symmetric extension (pywt 'symmetric' = numpy 'symmetric')
    padded = torch.cat([flat[..., :ext].flip(-1), flat, flat[..., -ext:].flip(-1)], dim=-1)
    # pywt output o = sum_j f[j] * x_ext[2o + 1 + ext - j]: a correlation with the flipped
    # filter, starting one sample into the padded signal, stride 2. Written as F shifted strided
    # views times scalars (one fused multiply-add each, for both filters at once): on CPU that is
    # several times faster, forward and backward, than unfold + a batched (F, 2) matmul or a
    # 1-channel strided conv1d, whose per-row work is far too small for a matrix kernel.
    src = padded[:, 0, 1:]
    n_out = (src.shape[-1] - flen) // 2 + 1
    bank = _bank((dec_lo, dec_hi), x, flip=True)[:, 0]               # (2, F)
    out = None
    for j in range(flen):
        tap = src[None, :, j: j + 2 * n_out - 1: 2]                   # (1, M, n') strided view
        term = tap * bank[:, j, None, None]
        out = term if out is None else out + term
    return out.reshape(2, *lead, n_out)


def _synthesis_last(c: torch.Tensor, wavelet: str) -> torch.Tensor:
    """Inverse of :func:`_analysis_last`: ``(2, ..., n) -> (..., 2n - F + 2)``."""
    _, _, rec_lo, rec_hi = _filters(wavelet)
    flen = len(rec_lo)
    lead, n = c.shape[1:-1], c.shape[-1]
    flat = c.reshape(2, -1, n).movedim(0, 1)                              # (M, 2, n)
    full = F.conv_transpose1d(flat, _bank((rec_lo, rec_hi), c, flip=False), stride=2)  # (M, 1, 2n-2+F)
    out = full[..., flen - 2: full.shape[-1] - (flen - 2)]
    return out.reshape(*lead, out.shape[-1])


def dwt3d(x: torch.Tensor, wavelet: str = "sym2") -> torch.Tensor:
    """One-level 3D DWT over the last three axes.

    Args:
        x: ``(..., T, H, W)`` real tensor, e.g. ``(B, C, T, H, W)``.
        wavelet: a PyWavelets wavelet name.

    Returns:
        ``(..., 8, T', H', W')`` with the bands in :data:`BANDS` order and
        ``T' = (T + F - 1) // 2`` (F = filter length; 4 for ``sym2``).
    """
    if x.dim() < 3:
        raise ValueError(f"dwt3d expects (..., T, H, W), got shape {tuple(x.shape)}")
    y = x
    for axis in (-3, -2, -1):  # time, height, width; each call prepends a band axis
        y = _analysis_last(y.movedim(axis, -1), wavelet).movedim(-1, axis)
    # y: (2_w, 2_h, 2_t, ..., T', H', W') -> (..., 2_t, 2_h, 2_w, T', H', W')
    lead = x.dim() - 3
    y = y.permute(*range(3, 3 + lead), 2, 1, 0, *range(3 + lead, 6 + lead))
    return y.reshape(*x.shape[:-3], 8, *y.shape[-3:])


def idwt3d(coeffs: torch.Tensor, wavelet: str = "sym2") -> torch.Tensor:
    """Inverse of :func:`dwt3d`: ``(..., 8, T', H', W') -> (..., T, H, W)``."""
    if coeffs.dim() < 4 or coeffs.shape[-4] != 8:
        raise ValueError(f"idwt3d expects (..., 8, T', H', W'), got shape {tuple(coeffs.shape)}")
    lead = coeffs.dim() - 4
    y = coeffs.reshape(*coeffs.shape[:-4], 2, 2, 2, *coeffs.shape[-3:])
    # (..., 2_t, 2_h, 2_w, T', H', W') -> (2_w, 2_h, 2_t, ..., T', H', W')
    y = y.permute(lead + 2, lead + 1, lead, *range(lead), *range(lead + 3, lead + 6))
    for axis in (-1, -2, -3):  # undo width, then height, then time
        y = _synthesis_last(y.movedim(axis, -1), wavelet).movedim(-1, axis)
    return y
