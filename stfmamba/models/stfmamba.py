"""STF-Mamba: a spatio-temporal-frequency backbone for video deepfake detection.

``x: (B, 3, T, H, W)`` → stem (per-frame strided convs, H/4) → wavelet branch (3D Symlet-2 DWT
of the H/2 stem features) fused into stage-1 features (HLL gating in V7.3, Wavelet-Selective
Scan with ``use_wss``) → four stages (2× spatial downsample between them, time kept) of
spatio-temporal blocks → global average pool over (T, H, W) → LayerNorm → dropout → linear (2).

V7.3 = every V8 flag off: temporal mixers DCConv3D (stages 1–2), Bi-Mamba (3), attention over
all tokens (4). Each V8 flag switches its module on independently (``use_hydra``, ``use_mamer``,
``use_wss``, ``use_adaptive_sdim``). See ``docs/model.md`` for the checkpoint key layout.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from timm.layers import LayerNormFp32, trunc_normal_
from torch import nn

from stfmamba.config import STFV8Config
from stfmamba.models.backbone import ConvStem, TimmTrunk
from stfmamba.models.blocks import Stage, temporal_plan, temporal_residual
from stfmamba.models.frequency import FREQUENCY_FUSION, WaveletBranch
from stfmamba.models.mouth import MouthStream
from stfmamba.models.sdim import AdaptiveStateGate

__all__ = ["STFMamba", "build_model", "DEFAULT_SPATIAL_MIXER"]

DEFAULT_SPATIAL_MIXER = "conv3x3"


class STFMamba(nn.Module):
    """The backbone + head, built from an :class:`~stfmamba.config.STFV8Config`.

    Args:
        cfg: model sizes (``cfg.model``) and architecture flags (``cfg.features``).
        spatial_mixer: name in :data:`stfmamba.models.mixers.SPATIAL_MIXERS`.
        grad_checkpointing: recompute every block in the backward pass (saves activation memory).
    """

    def __init__(self, cfg: STFV8Config, spatial_mixer: str = DEFAULT_SPATIAL_MIXER,
                 grad_checkpointing: bool = False) -> None:
        super().__init__()
        m, f = cfg.model, cfg.features
        self.cfg = cfg
        if m.spatial_backbone == "none":
            self.stem = ConvStem(m.stem_dim, m.stage1_dim)
        else:
            self.stem = TimmTrunk(m.spatial_backbone, m.pretrained, m.stem_dim, m.stage1_dim, m.trunk_stride,
                                  init=m.trunk_init, keep_head=m.frame_stream)
        self.wavelet = WaveletBranch(m.stem_dim, m.dwt_channels)
        self.stf_input = m.stf_input                  # frames | motion | jitter (blocks.temporal_residual)
        self.fusion_kind = "wss" if f.use_wss else "hll_gate"
        self.fusion = nn.ModuleDict({self.fusion_kind: FREQUENCY_FUSION[self.fusion_kind](
            m.dwt_channels, m.stage1_dim, m, f.use_adaptive_sdim)})
        self.plan = temporal_plan(f, m.depths)
        rates = torch.linspace(0, m.drop_path_rate, max(1, sum(m.depths))).tolist()
        self.stages = nn.ModuleList()
        in_dim, k = m.stage1_dim, 0
        for i, (dim, names) in enumerate(zip(m.dims, self.plan)):
            self.stages.append(Stage(in_dim, dim, names, m, f.use_adaptive_sdim, rates[k:k + len(names)],
                                     downsample=i > 0, spatial=spatial_mixer))
            in_dim, k = dim, k + len(names)
        # blend-mask head (training.mask_loss_weight > 0): per-frame fake-region logits from the
        # stage-1 input, a dense training signal of where the blend is (Face X-ray's idea on SBI's masks)
        self.mask_head = nn.Linear(m.stage1_dim, 1) if cfg.training.mask_loss_weight > 0 else None
        self.norm = LayerNormFp32(in_dim)
        # per-frame target head (training.frame_target_weight > 0): each frame's manipulation strength from the
        # STF stages' per-frame features, a time-resolved training signal (FakeSTormer's frame-wise supervision)
        # mouth stream (model.mouth_stream): its pooled features join the face features before the head, its
        # per-frame features the face stages' before the per-frame target head
        self.mouth = MouthStream(m, spatial_mixer) if m.mouth_stream else None
        target_dim = in_dim + (self.mouth.out_dim if self.mouth is not None else 0)
        self.frame_target_head = (nn.Sequential(LayerNormFp32(target_dim), nn.Linear(target_dim, 1))
                                  if cfg.training.frame_target_weight > 0 else None)
        self.head_drop = nn.Dropout(m.dropout)
        self.head = nn.Linear(in_dim + (self.mouth.out_dim if self.mouth is not None else 0), 2)
        # frame stream (model.frame_stream): the whole timm CNN's pooled features of every frame -> 2 logits,
        # averaged over time and added to the STF head's (late fusion of a spatial and a temporal stream)
        self.frame_head = nn.Linear(self.stem.head_dim, 2) if m.frame_stream else None
        # model.stream_fusion=equal_say: each stream's logits are divided by the spread of its margin on the
        # SBI-validation clips (stream_scale = 1 / std; ones while training, fitted when the model file is written)
        if m.frame_stream and m.stream_fusion == "equal_say":
            self.register_buffer("stream_scale", torch.ones(2))
        else:
            self.stream_scale = None
        self.apply(_init_weights)
        # model.frame_stream + model.trunk_init: the frame stream starts as the trained frame baseline
        # (its network and its classifier), so the clip logits start at its per-frame evidence
        init_head = getattr(self.stem, "init_classifier", None) if self.frame_head is not None else None
        self.frame_head_pretrained = init_head is not None
        if init_head is not None:
            with torch.no_grad():
                self.frame_head.weight.copy_(init_head["weight"])
                self.frame_head.bias.copy_(init_head["bias"])
        self.set_grad_checkpointing(grad_checkpointing)

    @property
    def weights_info(self):
        """:class:`~stfmamba.models.pretrained.WeightsInfo` of the trunk's initial weights (kind ``none``
        for the built-in stem)."""
        from stfmamba.models.pretrained import WeightsInfo
        return getattr(self.stem, "weights", None) or WeightsInfo(spec="none", kind="none")

    def pretrained_param_names(self) -> set[str]:
        """Names of the parameters that start from pretrained weights (the timm trunk's ``stem.net``, and
        ``frame_head`` when it starts from the frame baseline's classifier; none when the trunk's weights
        are random)."""
        if self.weights_info.kind == "none":
            return set()
        prefixes = ("stem.net.", "frame_head.") if self.frame_head_pretrained else ("stem.net.",)
        return {n for n, _ in self.named_parameters() if n.startswith(prefixes)}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Per-block activation checkpointing (timm's method name)."""
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable
        if self.mouth is not None:
            self.mouth.grad_checkpointing = enable

    @property
    def data_config(self) -> dict:
        """The input spec (mean / std, RGB): the timm trunk's pretrained config, or ImageNet's for the
        built-in conv stem (``model.spatial_backbone: none``)."""
        return self.stem.data_config

    def state_gates(self) -> dict[str, AdaptiveStateGate]:
        """Every adaptive-sdim gate by module name (empty without ``use_adaptive_sdim``)."""
        return {n: mod for n, mod in self.named_modules() if isinstance(mod, AdaptiveStateGate)}

    def effective_state_sizes(self) -> dict[str, float]:
        """Open state channels per SSM layer (for logging), e.g. ``{'stages.2.blocks.0…state_gate': 6.0}``."""
        return {n: g.effective_size() for n, g in self.state_gates().items()}

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: ``(B, 3, T, H, W)`` -> pooled features ``(B, C4)``, per-frame features ``(B, T, C4)`` (the last
        stage's output averaged over space, before the norm), hll_energy ``(B,)``, all_band_energy ``(B,)``,
        mask logits ``(B, T, h1, w1)`` (``None`` without the mask head), and with the frame stream its
        per-frame pooled CNN features ``(B, T, head_dim)`` (``None`` without)."""
        b = x.shape[0]
        frames = rearrange(x, "b c t h w -> (b t) c h w").contiguous(memory_format=torch.channels_last)
        if self.frame_head is not None:
            stem, trunk, whole = self.stem(frames, with_head=True)
            whole = rearrange(whole, "(b t) c -> b t c", b=b)
        else:
            (stem, trunk), whole = self.stem(frames), None            # (B·T, H/2, W/2, Cs), (B·T, H/4, W/4, C1)
        stem = rearrange(stem, "(b t) h w c -> b t h w c", b=b)
        feats = rearrange(trunk, "(b t) h w c -> b t h w c", b=b)
        bands, hll_energy, all_energy = self.wavelet(stem)           # (B, Cd, 8, T', H', W')
        feats = self.fusion[self.fusion_kind](feats, bands)
        feats = temporal_residual(feats, self.stf_input)              # model.stf_input: motion / jitter, change only
        mask_logits = self.mask_head(feats).squeeze(-1) if self.mask_head is not None else None  # (B, T, h1, w1)
        for stage in self.stages:
            feats = stage(feats)                                      # (B, T, h_i, w_i, C_i)
        per_frame = feats.mean(dim=(2, 3))                            # (B, T, C4)
        return self.norm(per_frame.mean(dim=1)), per_frame, hll_energy, all_energy, mask_logits, whole

    @property
    def needs_mouth(self) -> bool:
        """Whether :meth:`forward` takes (and requires) the ``mouth`` clips (``model.mouth_stream``)."""
        return self.mouth is not None

    def forward(self, x: torch.Tensor, mouth: torch.Tensor | None = None) -> dict:
        """x: ``(B, 3, T, H, W)`` clips normalised with :attr:`data_config`; ``mouth``: ``(B, 3, T, s, s)``
        mouth clips of the same clips (:func:`stfmamba.data.clips.mouth_clip`, normalised alike), required
        with ``model.mouth_stream`` and refused without it.

        Returns:
            ``logits (B, 2)``, ``hll_energy (B,)``, ``all_band_energy (B,)`` (fp32) and
            ``aux_losses`` (``{"sdim_l1": scalar}`` with ``use_adaptive_sdim``, else empty); with the
            mask head also ``mask_logits (B, T, h1, w1)`` (stage-1 resolution); with
            ``training.frame_target_weight > 0`` also ``frame_target_logits (B, T)`` (each frame's manipulation
            strength, from the STF stages' per-frame features); ``frame_features (B, T, C4)``
            (what ``training.distill_from`` teaches); with ``model.frame_stream`` also ``frame_stream_logits
            (B, 2)``, the frame stream's share of ``logits``, and ``stf_logits (B, 2)``, the STF head's share
            (each times its ``stream_scale`` with ``model.stream_fusion: equal_say``).
        """
        if (mouth is not None) != self.needs_mouth:
            raise ValueError("this model has a mouth stream (model.mouth_stream): call it with mouth=(B, 3, T, s, s)"
                             if self.needs_mouth else "mouth= given, but this model has no mouth stream "
                             "(model.mouth_stream: false)")
        pooled, per_frame, hll_energy, all_energy, mask_logits, whole = self.forward_features(x)
        if self.mouth is not None:
            if mouth.shape[0] != x.shape[0] or mouth.shape[2] != x.shape[2]:
                raise ValueError(f"mouth clips {tuple(mouth.shape)} do not match the clips {tuple(x.shape)} "
                                 "(same batch and frames)")
            mouth_pooled, mouth_frames = self.mouth(mouth)
            pooled = torch.cat([pooled, mouth_pooled.to(pooled.dtype)], dim=-1)   # (B, C4 + mouth_dim)
            target_in = torch.cat([per_frame, mouth_frames.to(per_frame.dtype)], dim=-1)   # (B, T, C4 + mouth_dim)
        else:
            target_in = per_frame
        logits = stf_logits = self.head(self.head_drop(pooled))
        if self.frame_head is not None:
            frame_logits = self.frame_head(self.head_drop(whole)).mean(dim=1)   # (B, 2): per-frame, averaged
            if self.stream_scale is not None:      # exact no-op at the training value (ones)
                stf_logits = stf_logits * self.stream_scale[0].to(stf_logits.dtype)
                frame_logits = frame_logits * self.stream_scale[1].to(frame_logits.dtype)
            logits = stf_logits + frame_logits.to(stf_logits.dtype)
        gates = list(self.state_gates().values())
        aux = {"sdim_l1": torch.stack([g.l1() for g in gates]).mean()} if gates else {}
        out = {"logits": logits, "hll_energy": hll_energy, "all_band_energy": all_energy, "aux_losses": aux,
               "frame_features": per_frame}
        if self.frame_head is not None:
            out["frame_stream_logits"], out["stf_logits"] = frame_logits, stf_logits
        if mask_logits is not None:
            out["mask_logits"] = mask_logits
        if self.frame_target_head is not None:
            out["frame_target_logits"] = self.frame_target_head(target_in).squeeze(-1)   # (B, T)
        return out


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear) and not getattr(module, "_no_reinit", False):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(cfg: STFV8Config, grad_checkpointing: Optional[bool] = None,
                spatial_mixer: str = DEFAULT_SPATIAL_MIXER) -> nn.Module:
    """Build the model ``cfg.model.arch`` names: :class:`STFMamba` for ``stfmamba``, any other value is
    a timm model name for a :class:`~stfmamba.models.frame.FrameClassifier` (the frame-level baseline).
    ``grad_checkpointing`` defaults to ``cfg.training.grad_checkpointing``."""
    if grad_checkpointing is None:
        grad_checkpointing = cfg.training.grad_checkpointing
    if cfg.model.frame_level:
        from stfmamba.models.frame import FrameClassifier
        return FrameClassifier(cfg.model, grad_checkpointing=grad_checkpointing)
    return STFMamba(cfg, spatial_mixer=spatial_mixer, grad_checkpointing=grad_checkpointing)
