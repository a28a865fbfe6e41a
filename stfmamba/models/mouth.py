"""The mouth stream (``model.mouth_stream``): where reenactment and lip-sync manipulations show.

Reenactment and lip-sync fakes have no blending boundary; their trace is in the mouth region over
time (LipForensics, FTCN). In the face clip at 64–112 px the mouth is 20–30 px, so the model gets
it a second time, larger: ``mouth: (B, 3, T, s, s)`` with ``s = model.mouth_size``, cut from the
stored crops around the clip's lip landmarks by :func:`stfmamba.data.clips.mouth_clip` (one still
box per clip), normalised like the face clip.

``mouth`` → **encoder**: per frame, three 3×3 stride-2 convs (``3 → d/2 → d → d``, GELU between,
LayerNorm after; ``d = model.mouth_dim``), ``(B, T, s/8, s/8, d)`` tokens → **two spatio-temporal
blocks** (:class:`~stfmamba.models.blocks.STBlock`: the dense 3×3 spatial mixer, then the
``attention`` temporal mixer of :data:`~stfmamba.models.mixers.TEMPORAL_MIXERS`, self-attention
over all ``T·h·w`` tokens of the clip, so every mouth token sees every frame) → LayerNorm → mean
over ``(T, h, w)``: ``(B, d)``. :class:`~stfmamba.models.stfmamba.STFMamba` concatenates it with
its pooled face features before the head (``head: Linear(C4 + d, 2)``).

Keys: ``mouth.conv{1,2,3}.*``, ``mouth.enc_norm.*``, ``mouth.blocks.<j>.{spatial,norm,temporal.attention}.*``,
``mouth.norm.*``. The mixer does not depend on the architecture flags, so a Phase A model's mouth
stream loads whole into Phase B.

With ``model.stf_input: motion`` (or ``jitter``) the mouth stream reads motion too: its encoder tokens
minus their mean over the clip's frames (or their line over time) enter the blocks, so a still clip gives it nothing, as it gives the face
path nothing. Its per-frame features (the blocks' output averaged over space) also join the face
stages' per-frame features for the per-frame target head (``training.frame_target_weight``): the
mouth stream is told *when* a clip is manipulated as well.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import LayerNormFp32
from torch import nn
from torch.utils.checkpoint import checkpoint

from stfmamba.config import ModelConfig
from stfmamba.models.blocks import STBlock, temporal_residual

__all__ = ["MouthStream", "MOUTH_TEMPORAL", "MOUTH_BLOCKS"]

MOUTH_TEMPORAL = "attention"   # registry name of the mouth blocks' temporal mixer (models/mixers.py)
MOUTH_BLOCKS = 2               # spatio-temporal blocks of the mouth stream


class MouthStream(nn.Module):
    """Mouth clips ``(B, 3, T, s, s)`` -> pooled mouth features ``(B, mouth_dim)`` (module docstring).

    Args:
        cfg: the model config (``mouth_dim``; the temporal mixer's sizes).
        spatial: spatial mixer of the blocks (the face stages').
    """

    def __init__(self, cfg: ModelConfig, spatial: str = "conv3x3") -> None:
        super().__init__()
        self.stf_input = cfg.stf_input
        d = cfg.mouth_dim
        self.conv1 = nn.Conv2d(3, max(d // 2, 1), 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(max(d // 2, 1), d, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(d, d, 3, stride=2, padding=1)
        self.enc_norm = LayerNormFp32(d)
        self.blocks = nn.ModuleList(STBlock(d, MOUTH_TEMPORAL, cfg, False, 0.0, spatial) for _ in range(MOUTH_BLOCKS))
        self.norm = LayerNormFp32(d)
        self.out_dim = d
        self.grad_checkpointing = False

    def forward(self, mouth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mouth: ``(B, 3, T, s, s)`` normalised -> pooled ``(B, mouth_dim)``, per-frame ``(B, T, mouth_dim)``
        (the blocks' output averaged over space, before the norm)."""
        b = mouth.shape[0]
        frames = rearrange(mouth, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        z = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(frames)))))          # (B·T, d, s/8, s/8)
        z = self.enc_norm(rearrange(z, "(b t) c h w -> b t h w c", b=b))       # (B, T, h, w, d)
        z = temporal_residual(z, self.stf_input)                              # model.stf_input: motion / jitter
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                z = checkpoint(blk, z, use_reentrant=False)
            else:
                z = blk(z)
        per_frame = z.mean(dim=(2, 3))                                        # (B, T, d)
        return self.norm(per_frame.mean(dim=1)), per_frame
