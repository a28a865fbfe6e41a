"""Frequency branch: 3D wavelet sub-bands of the stem features and how they enter stage 1.

``WaveletBranch`` projects stem features (H/2) to ``dwt_channels``, runs one level of the 3D
Symlet-2 DWT (in fp32, autocast off) and reports per sample ``hll_energy = mean(HLL²)`` and
``all_band_energy = Σ_bands mean(band²)``.

Fusion into stage-1 features ``x: (B, T, h, w, C)`` (registry ``FREQUENCY_FUSION``):

* ``hll_gate`` (V7.3) — ``x · (1 + σ(W · up(HLL)))`` with ``up`` trilinear to ``(T, h, w)``.
* ``wss`` (V8 ``use_wss``) — Wavelet-Selective Scan. Stream A: HLL → spatial mean → Mamba scan over
  time → ``F_temporal (B, T, 1, 1, C)``. Stream B: HHH ⊕ HLH → Mamba scan over the ``H'·W'`` spatial
  tokens of each sub-band frame (per-channel selection via Mamba's per-channel ``dt``) →
  ``F_spatial (B, T, h, w, C)``. Gated cross-merge ``F = F_spatial ⊙ σ(F_temporal)``, added to ``x``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from stfmamba.config import ModelConfig
from stfmamba.models.mamba import MambaMixer
from stfmamba.ops.dwt3d import band_index, dwt3d

__all__ = ["WaveletBranch", "HLLGate", "WaveletSelectiveScan", "FREQUENCY_FUSION"]

HLL, HHH, HLH = band_index("HLL"), band_index("HHH"), band_index("HLH")


class WaveletBranch(nn.Module):
    """1×1 projection then 3D DWT. Args: in_dim: stem channels. channels: ``dwt_channels``."""

    def __init__(self, in_dim: int, channels: int, wavelet: str = "sym2") -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, channels)
        self.wavelet = wavelet

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feats: ``(B, T, H, W, C)`` -> bands ``(B, Cd, 8, T', H', W')`` fp32, hll_energy ``(B,)``,
        all_band_energy ``(B,)``."""
        d = rearrange(self.proj(feats), "b t h w c -> b c t h w").float()
        with torch.autocast(d.device.type, enabled=False):
            bands = dwt3d(d, self.wavelet)                            # (B, Cd, 8, T', H', W')
            per_band = bands.pow(2).mean(dim=(1, 3, 4, 5))             # (B, 8)
        return bands, per_band[:, HLL], per_band.sum(1)


def _resize(v: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C, T', H', W') -> (B, T, H, W, C)`` trilinear."""
    v = F.interpolate(v, size=size, mode="trilinear", align_corners=False)
    return rearrange(v, "b c t h w -> b t h w c")


class HLLGate(nn.Module):
    """V7.3 HLL gating of stage-1 features."""

    def __init__(self, dwt_channels: int, dim: int, cfg: ModelConfig, adaptive_sdim: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(dwt_channels, dim)

    def forward(self, x: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, h, w, C)``, bands: ``(B, Cd, 8, T', H', W')`` -> ``(B, T, h, w, C)``."""
        hll = _resize(bands[:, :, HLL].to(x.dtype), x.shape[1:4])    # (B, T, h, w, Cd)
        return x * (1 + torch.sigmoid(self.proj(hll)))


class WaveletSelectiveScan(nn.Module):
    """V8 Wavelet-Selective Scan (see module docstring)."""

    def __init__(self, dwt_channels: int, dim: int, cfg: ModelConfig, adaptive_sdim: bool) -> None:
        super().__init__()
        self.temporal_in = nn.Linear(dwt_channels, dim)
        self.temporal_scan = MambaMixer(dim, cfg.d_state, cfg.d_conv, cfg.expand, adaptive_sdim=adaptive_sdim)
        self.spatial_in = nn.Linear(2 * dwt_channels, dim)
        self.spatial_scan = MambaMixer(dim, cfg.d_state, cfg.d_conv, cfg.expand, adaptive_sdim=adaptive_sdim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bands: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, h, w, C)``, bands: ``(B, Cd, 8, T', H', W')`` -> ``(B, T, h, w, C)``."""
        b, t = x.shape[:2]
        bands = bands.to(x.dtype)
        # stream A: temporal flicker, (B, T', Cd) -> scan over time
        a = self.temporal_scan(self.temporal_in(bands[:, :, HLL].mean(dim=(-2, -1)).transpose(1, 2)))
        a = F.interpolate(a.transpose(1, 2), size=t, mode="linear", align_corners=False)  # (B, C, T)
        f_temporal = rearrange(a, "b c t -> b t 1 1 c")
        # stream B: spatial texture, (B·T', H'·W', 2Cd) -> scan over spatial tokens
        tex = torch.cat([bands[:, :, HHH], bands[:, :, HLH]], dim=1)  # (B, 2Cd, T', H', W')
        tp, hp, wp = tex.shape[-3:]
        s = self.spatial_scan(self.spatial_in(rearrange(tex, "b c t h w -> (b t) (h w) c")))
        s = rearrange(s, "(b t) (h w) c -> b c t h w", b=b, h=hp, w=wp)
        f_spatial = _resize(s, x.shape[1:4])                          # (B, T, h, w, C)
        return x + self.out(f_spatial * torch.sigmoid(f_temporal))


FREQUENCY_FUSION = {"hll_gate": HLLGate, "wss": WaveletSelectiveScan}
