"""DCConv3D: dynamic contour convolution, a temporal mixer that follows moving contours.

A temporal kernel of ``K`` taps (frames ``t - K//2 … t + K//2``). At tap ``τ`` the feature is not
read at the same pixel ``p`` but at ``p + o_τ(p, t)``, where the offset is *cumulative*: the model
predicts one bounded step per tap (``max_step · tanh(·)`` pixels) from the centre frame's
features, and ``o_τ`` sums the steps from the centre outwards — a path that tracks a contour
through time (e.g. a blending boundary that drifts against the face). Sampling is bilinear
(``F.grid_sample``); each tap has a per-channel weight, followed by a pointwise projection.
Offsets start at zero, so at init DCConv3D is a plain depthwise temporal conv.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["DCConv3D"]


class DCConv3D(nn.Module):
    """Args: dim: channels. kernel_length: temporal taps ``K``. max_step: bound of one step (px)."""

    def __init__(self, dim: int, kernel_length: int = 3, max_step: float = 2.0) -> None:
        super().__init__()
        self.taps = [k - kernel_length // 2 for k in range(kernel_length)]   # e.g. [-1, 0, 1]
        self.max_step = max_step
        self.offset = nn.Linear(dim, 2 * (kernel_length - 1))
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.offset._no_reinit = True
        self.tap_weight = nn.Parameter(torch.full((kernel_length, dim), 1.0 / kernel_length))
        self.proj = nn.Linear(dim, dim)

    def cumulative_offsets(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """x: ``(B, T, H, W, C)`` -> ``{τ: (B, T, H, W, 2)}`` pixel offsets (dx, dy) of every non-centre tap."""
        steps = self.max_step * torch.tanh(self.offset(x))           # (B, T, H, W, 2(K-1))
        steps = rearrange(steps, "b t h w (k two) -> k b t h w two", two=2)
        fwd = [tau for tau in self.taps if tau > 0]
        bwd = [tau for tau in self.taps if tau < 0][::-1]             # -1, -2, …
        offsets = {}
        for side, taus in ((steps[:len(fwd)], fwd), (steps[len(fwd):], bwd)):
            if taus:
                for tau, off in zip(taus, side.cumsum(0)):
                    offsets[tau] = off
        return offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ``(B, T, H, W, C)`` -> ``(B, T, H, W, C)``.

        The sampling runs in fp32 whatever the autocast dtype: ``grid_sample`` and its backward are
        ~1.5x slower in bf16 on CPU, and offsets of a fraction of a pixel want the precision.
        Tap ``τ`` samples only the frames whose source ``t + τ`` lies inside the clip (zero padding
        in time), so no rolled copy or mask pass is needed.
        """
        b, t, h, w, c = x.shape
        dtype = torch.promote_types(x.dtype, torch.float32)
        xf = x.to(dtype)
        out = xf * self.tap_weight[self.taps.index(0)].to(dtype)
        ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=x.device, dtype=dtype)
        xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=x.device, dtype=dtype)
        base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)        # (H, W, 2) as (x, y)
        scale = torch.tensor([2.0 / w, 2.0 / h], device=x.device, dtype=dtype)
        for tau, off in self.cumulative_offsets(x).items():
            lo, hi = max(0, -tau), t - max(0, tau)                    # output frames with a source frame
            if hi <= lo:
                continue
            n = hi - lo
            src = rearrange(xf[:, lo + tau:hi + tau], "b t h w c -> (b t) c h w")
            grid = (base + off[:, lo:hi].to(dtype) * scale).reshape(b * n, h, w, 2)
            sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out[:, lo:hi] += rearrange(sampled, "(b t) c h w -> b t h w c", b=b) * self.tap_weight[
                self.taps.index(tau)].to(dtype)
        return self.proj(out)
