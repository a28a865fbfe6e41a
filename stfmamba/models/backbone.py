"""Per-frame stems: the default strided-conv stem and an optional timm CNN trunk.

Both return ``(stem_feats, trunk_feats)``: ``stem_feats (B·T, H/2, W/2, stem_dim)`` feed the
wavelet branch, ``trunk_feats (B·T, H/4, W/4, stage1_dim)`` feed stage 1.

``pretrained`` of the timm trunk: ``none`` (random init), ``hub`` (download through timm /
Hugging Face Hub — needs network) or a path to a local weights file (``.pth``/``.bin``/
``.safetensors`` holding the timm model's ``state_dict``).
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

    Any timm model that supports ``features_only`` works (ConvNeXt V2's first stage, ResNet's
    ``layer1`` at stride 4 or ``layer2`` at stride 8, EfficientNet's blocks, ...): the feature level
    whose reduction is ``stride`` is picked from ``feature_info``. A deeper trunk (``trunk_stride`` 8
    or 16) gives the video model a per-frame CNN as strong as the frame baseline's, with the wavelet
    branch and the temporal stages on top.
    """

    def __init__(self, name: str, pretrained: str, stem_dim: int, out_dim: int, stride: int = 4) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise ValueError(f"model.spatial_backbone={name!r} is not a timm model name (e.g. {near or 'resnet18'}); "
                             "use 'none' for the built-in conv stem")
        try:
            info = timm.create_model(name, pretrained=False, features_only=True).feature_info
        except Exception as err:  # timm raises several types for models without features_only
            raise ValueError(f"model.spatial_backbone={name!r}: timm cannot build it with features_only "
                             f"({type(err).__name__}: {err}); pick a CNN such as resnet18 or convnextv2_atto") from None
        level = [i for i, r in enumerate(info.reduction()) if r == stride]
        if not level:
            raise ValueError(f"model.spatial_backbone={name!r} has no stride-{stride} feature level "
                             f"(reductions {info.reduction()}); pick another CNN or model.trunk_stride")
        kwargs = dict(features_only=True, out_indices=(level[0],))
        if pretrained == "none":
            self.net = timm.create_model(name, pretrained=False, **kwargs)
        elif pretrained == "hub":
            try:
                self.net = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as err:  # network / hub errors come in many types
                raise RuntimeError(
                    f"model.pretrained=hub: could not download weights for {name!r} ({type(err).__name__}: "
                    f"{err}). Without network, download the weights elsewhere and set model.pretrained "
                    "to the local file path, or use pretrained=none") from None
        else:
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"model.pretrained={pretrained!r}: no such weights file; give the "
                                        "path of a timm state_dict (.pth/.safetensors), 'hub' or 'none'")
            self.net = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                         **kwargs)
        for mod in self.net.modules():   # pretrained (or timm-initialised) trunk: the model's init leaves it alone
            mod._no_reinit = True
        self.conv1 = nn.Conv2d(3, stem_dim, 3, stride=2, padding=1)
        self.proj = nn.Linear(self.net.feature_info.channels()[0], out_dim)
        self.norm = LayerNormFp32(out_dim)

    @property
    def data_config(self) -> dict:
        """The timm model's input spec (mean / std of its pretrained config, :func:`timm_data_config`)."""
        return timm_data_config(self.net)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames: ``(B·T, 3, H, W)`` -> ``(B·T, H/2, W/2, stem_dim)``, ``(B·T, H/s, W/s, out_dim)``."""
        s = F.gelu(self.conv1(frames))
        trunk = self.net(frames)[0]                                   # (B·T, C0, H/s, W/s)
        return s.permute(0, 2, 3, 1), self.norm(self.proj(trunk.permute(0, 2, 3, 1)))
