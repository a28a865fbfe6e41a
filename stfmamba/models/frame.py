"""A per-frame classifier: the frame-level SBI baseline (Shiohara & Yamasaki, CVPR 2022).

SBI trains an image classifier (EfficientNet-B4 in the paper) on single frames and their
self-blended fakes, and scores a video by averaging the frame probabilities. Here any timm model
(``model.arch``, e.g. ``resnet18``, ``efficientnet_b4``) classifies every frame of a clip
independently; the clip output is the mean over frames of the softmax probabilities, so a clip
of one frame is that frame's score and the evaluation's video score (mean over clips) is the
mean over the scored frames, as in the paper.

``pretrained``: ``none`` (random init), ``hub`` (download through timm / Hugging Face Hub — needs
network) or a path to a local weights file holding the timm model's ``state_dict``
(``.pth``/``.bin``/``.safetensors``); the ImageNet classifier of such a file is dropped (timm
does it when the class count differs) and a fresh 2-class head is trained.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from stfmamba.config import ModelConfig

__all__ = ["FrameClassifier", "create_timm_classifier"]


def create_timm_classifier(arch: str, pretrained: str, **kwargs) -> nn.Module:
    """``timm.create_model(arch, num_classes=2, **kwargs)`` with weights from ``pretrained``.

    Args:
        arch: a timm model name.
        pretrained: ``none`` | ``hub`` | path to a local timm ``state_dict`` file.
        kwargs: more ``timm.create_model`` arguments (``drop_rate``, ...).

    Raises:
        ValueError: ``arch`` is not a timm model (the message names the closest ones).
        FileNotFoundError: ``pretrained`` is a path that does not exist.
        RuntimeError: ``pretrained=hub`` and the download failed (offline).
    """
    import timm

    if not timm.is_model(arch):
        near = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(near)}?" if near else ""
        raise ValueError(f"model.arch={arch!r} (baseline.arch for the frame baseline) is not a timm model name.{hint} "
                         "`python -c \"import timm; print(timm.list_models('resnet*'))\"` lists them")
    kwargs = dict(num_classes=2, **kwargs)
    if pretrained == "none":
        return timm.create_model(arch, pretrained=False, **kwargs)
    if pretrained == "hub":
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as err:  # network / hub errors come in many types
            raise RuntimeError(
                f"pretrained=hub: could not download weights for {arch!r} ({type(err).__name__}: {err}). "
                "Without network, download the weights elsewhere and set pretrained to the local file path, "
                "or use pretrained=none") from None
    path = Path(pretrained)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={pretrained!r}: no such weights file; give the path of a timm "
                                "state_dict (.pth/.safetensors), 'hub' or 'none'")
    return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


class FrameClassifier(nn.Module):
    """A timm image classifier applied to every frame of a clip.

    Args:
        model: ``arch`` (timm name), ``pretrained``, ``dropout`` (timm ``drop_rate``, before the head)
            and ``drop_path_rate`` (stochastic depth, for timm models that have it).
        grad_checkpointing: timm's per-block activation checkpointing.
    """

    def __init__(self, model: ModelConfig, grad_checkpointing: bool = False) -> None:
        super().__init__()
        extra = {"drop_path_rate": model.drop_path_rate} if model.drop_path_rate > 0 else {}
        self.net = create_timm_classifier(model.arch, model.pretrained, drop_rate=model.dropout, **extra)
        if grad_checkpointing:
            self.set_grad_checkpointing(True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.net.set_grad_checkpointing(enable)

    @property
    def data_config(self) -> dict:
        """The timm classifier's input spec (mean / std of its pretrained config), e.g. ImageNet's
        for resnet18, 0.5 / 0.5 for tf_efficientnet_lite0."""
        from stfmamba.models.backbone import timm_data_config
        return timm_data_config(self.net)

    def forward(self, x: torch.Tensor) -> dict:
        """x: ``(B, 3, T, H, W)`` clips normalised with :attr:`data_config`.

        Returns:
            ``frame_logits (B, T, 2)``; ``logits (B, 2)`` (fp32) = log of the mean over frames of the
            softmax probabilities, so ``softmax(logits)`` is the mean frame probability; empty
            ``aux_losses``.
        """
        b, t = x.shape[0], x.shape[2]
        frames = rearrange(x, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        frame_logits = rearrange(self.net(frames), "(b t) k -> b t k", b=b)          # (B, T, 2)
        logits = torch.logsumexp(torch.log_softmax(frame_logits.float(), dim=-1), dim=1) - math.log(t)  # (B, 2)
        return {"logits": logits, "frame_logits": frame_logits, "aux_losses": {}}
