"""A per-frame classifier: the frame-level SBI baseline (Shiohara & Yamasaki, CVPR 2022).

SBI trains an image classifier (EfficientNet-B4 in the paper) on single frames and their
self-blended fakes, and scores a video by averaging the frame probabilities. Here any timm model
(``model.arch``, e.g. ``resnet18``, ``efficientnet_b4``) classifies every frame of a clip
independently; the clip output is the mean over frames of the softmax probabilities, so a clip
of one frame is that frame's score and the evaluation's video score (mean over clips) is the
mean over the scored frames, as in the paper.

``pretrained``: a weights spec of :mod:`stfmamba.models.pretrained` (``none``, ``hub``, a local
file, ``pkg:<python package>``); the ImageNet classifier is dropped and a fresh 2-class head trained.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from stfmamba.config import ModelConfig

__all__ = ["FrameClassifier", "create_timm_classifier"]


def create_timm_classifier(arch: str, pretrained: str, **kwargs) -> nn.Module:
    """``timm.create_model(arch, num_classes=2, **kwargs)`` with weights from the spec ``pretrained``
    (:func:`stfmamba.models.pretrained.create_pretrained`: ``none`` | ``hub`` | a file | ``pkg:<package>``);
    the ImageNet classifier is dropped and a fresh 2-class head trained. The returned model's
    ``weights_info`` attribute records where its weights came from.
    """
    from stfmamba.models.pretrained import create_pretrained
    net, info = create_pretrained(arch, pretrained, "baseline.pretrained", **dict(num_classes=2, **kwargs))
    if info.kind != "none":
        # a fresh head on pretrained features starts near zero: timm's own init of some heads (EfficientNet's
        # uniform ±1/sqrt(num_classes)) gives 2-class logits of ~±3.5 and a first loss of ~4.7 instead of ln 2
        head = net.get_classifier()
        for mod in head.modules() if isinstance(head, nn.Module) else ():
            if isinstance(mod, nn.Linear):
                nn.init.trunc_normal_(mod.weight, std=0.01)
                nn.init.zeros_(mod.bias)
    net.weights_info = info
    return net


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
    def weights_info(self):
        """:class:`~stfmamba.models.pretrained.WeightsInfo` of the initial weights."""
        return self.net.weights_info

    @property
    def data_config(self) -> dict:
        """The timm classifier's input spec (mean / std of its pretrained config), e.g. ImageNet's
        for resnet18, 0.5 / 0.5 for tf_efficientnet_lite0."""
        from stfmamba.models.backbone import timm_data_config
        return timm_data_config(self.net)

    def pretrained_param_names(self) -> set[str]:
        """Names of the parameters that start from pretrained weights (all but the classifier; none
        when the weights are random)."""
        if self.weights_info.kind == "none":
            return set()
        head = {id(p) for p in self.net.get_classifier().parameters()}
        return {n for n, p in self.named_parameters() if id(p) not in head}

    needs_mouth = False   # no temporal input by definition: the frame baseline has no mouth stream

    def forward(self, x: torch.Tensor, mouth: torch.Tensor | None = None) -> dict:
        """x: ``(B, 3, T, H, W)`` clips normalised with :attr:`data_config` (``mouth`` is ignored: a
        per-frame model has no mouth stream).

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
