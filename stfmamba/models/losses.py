"""Training losses: cross-entropy with label smoothing + HLL term + adaptive-sdim penalty.

``STFV8Loss(cfg)(outputs, labels) -> (total, parts)``::

    total = CE_ls(logits, labels) + hll_loss_weight · HLL + sdim_l1_weight · aux_losses["sdim_l1"]
            + mask_loss_weight · BCE(mask_logits, blend mask)
            + distill_weight · similarity loss(frame_features, frame teacher's features)   (training.distill_from)
            + stf_stream_weight · CE_ls(stf_logits, labels)   (model.frame_stream: logits − frame_stream_logits)
            + frame_target_weight · BCE(frame_target_logits, per-frame targets)   (training.frame_target_weight)

STF-stream term (``training.stf_stream_weight > 0``, a model with ``model.frame_stream``): the clip
logits are the STF head's plus the frame stream's, so the plain cross-entropy only asks the STF head
to correct the frame logits (with a frozen frame stream, what the frame baseline already gets right
gives it no gradient). The term puts the same label on the STF head's logits alone, so the wavelet
and temporal stages must separate reals from fakes on their own (deep supervision of one branch).
With ``training.stf_stream_fakes: temporal`` the term sees every real and only the temporal
pseudo-fakes: a motion-only STF stream cannot see a still Video-SBI blend, and asking it to call those
fakes too teaches it to hedge.

Per-frame target term (``training.frame_target_weight > 0``; the model then has a per-frame head on
its STF stages): binary cross-entropy between ``frame_target_logits (B, T)`` and each frame's
manipulation strength — the fake's ``frame_target`` (Video-SBI: the frame's peak blend ratio;
``blend_ramp``: the ramp, 0 on some frames; ``region_retime``: 1 on the frames that show another time,
0 on the others), 0 for every frame of a real clip. One label per clip says *that* a clip is fake; this
says *when*, the time-resolved supervision FakeSTormer (ICCV 2025) puts on its self-blended videos.

Mask term (``training.mask_loss_weight > 0``; the model then has a mask head): per-pixel binary
cross-entropy between the model's per-frame ``mask_logits (B, T, h, w)`` and the clip's effective
blend mask (SBI's mask times its blend ratio; all zeros for a real clip), area-averaged to the
logits' resolution. It tells the network *where* the blend is, a dense signal next to the one
label per clip (the idea of Face X-ray, Li et al. CVPR 2020, on SBI's own masks); it needs no
manipulated video, so the training stays on reals only.

HLL term (per-sample energy ``e = hll_energy``, or ``hll_energy / all_band_energy`` with
``use_hll_normalization``):

* ``use_contrastive_hll``: ``relu(margin − (mean e_fake − mean e_real))`` — fakes (temporal
  flicker from the blending) should carry more HLL energy than reals, by a margin.
* otherwise (V7.3): ``MSE(HLL_real, 0) = mean over reals of e`` (``hll_energy`` is already a mean square).

A batch without one of the classes the term needs contributes exactly zero (no NaN).

Per-frame models (``cfg.model.frame_level``: :class:`~stfmamba.models.frame.FrameClassifier`, the
frame-level baseline) return ``frame_logits (B, T, 2)`` and no ``hll_energy``: the cross-entropy is then over frames (each
frame labelled with its clip's label) and the HLL and sdim terms are left out (not added as zeros).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stfmamba.config import STFV8Config

__all__ = ["ContrastiveHLLLoss", "RealHLLLoss", "STFV8Loss", "mask_loss"]

_EPS = 1e-8


def _energy(outputs: dict, normalize: bool) -> torch.Tensor:
    e = outputs["hll_energy"].float()
    return e / (outputs["all_band_energy"].float() + _EPS) if normalize else e


class ContrastiveHLLLoss(nn.Module):
    """``relu(margin − (E_fake − E_real))``; zero when the batch lacks reals or fakes."""

    def __init__(self, margin: float = 0.1, normalize: bool = True) -> None:
        super().__init__()
        self.margin, self.normalize = margin, normalize

    def forward(self, outputs: dict, labels: torch.Tensor) -> torch.Tensor:
        """outputs: the model's dict; labels: ``(B,)`` 0 real / 1 fake -> scalar."""
        e = _energy(outputs, self.normalize)
        real, fake = labels == 0, labels == 1
        if not (real.any() and fake.any()):
            return e.sum() * 0.0
        return F.relu(self.margin - (e[fake].mean() - e[real].mean()))


class RealHLLLoss(nn.Module):
    """V7.3 ``MSE(HLL_real, 0)``; zero when the batch has no real clip."""

    def __init__(self, normalize: bool = False) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, outputs: dict, labels: torch.Tensor) -> torch.Tensor:
        e = _energy(outputs, self.normalize)
        real = labels == 0
        return e[real].mean() if real.any() else e.sum() * 0.0


class STFV8Loss(nn.Module):
    """The full training loss; parts are returned as floats for logging."""

    def __init__(self, cfg: STFV8Config) -> None:
        super().__init__()
        t, f = cfg.training, cfg.features
        self.frame_level = cfg.model.frame_level   # per-frame model: cross-entropy over frames only
        self.label_smoothing = t.label_smoothing
        self.hll_weight, self.sdim_weight, self.mask_weight = t.hll_loss_weight, t.sdim_l1_weight, t.mask_loss_weight
        self.distill_weight = t.distill_weight
        self.stf_stream_weight = t.stf_stream_weight
        self.stf_stream_fakes = t.stf_stream_fakes
        self.frame_target_weight = t.frame_target_weight
        self.hll = (ContrastiveHLLLoss(t.hll_margin, f.use_hll_normalization) if f.use_contrastive_hll
                    else RealHLLLoss(f.use_hll_normalization))

    def forward(self, outputs: dict, labels: torch.Tensor, masks: torch.Tensor | None = None,
                teacher: torch.Tensor | None = None,
                frame_targets: torch.Tensor | None = None,
                temporal_fakes: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """outputs: model dict; labels: ``(B,)`` int64; masks: ``(B, T, H, W)`` blend masks (used when
        the model returns ``mask_logits`` and ``mask_loss_weight > 0``) -> ``(total, {"ce", "hll",
        "sdim_l1", ["mask",] ["distill",] "total"})`` (``{"ce", "total"}`` for a per-frame model). ``teacher``:
        the frame teacher's features ``(B, T, D)`` of the same clips (``training.distill_from``); the term
        ``distill_weight`` · :func:`~stfmamba.training.distill.similarity_loss` of them and the model's
        ``frame_features`` joins the loss. ``frame_targets``: ``(B, T)`` per-frame manipulation strength in
        [0, 1] (the dataset's ``frame_y``), required when the model returns ``frame_target_logits``
        (part ``"frame_target"``). ``temporal_fakes``: ``(B,)`` bool, which clips are temporal pseudo-fakes
        (the dataset's ``temporal_fake``), required with ``training.stf_stream_fakes: temporal``."""
        labels = labels.long()
        if self.frame_level:
            frame_logits = outputs["frame_logits"].float()                       # (B, T, 2)
            frame_labels = labels[:, None].expand(frame_logits.shape[:2])       # (B, T)
            ce = F.cross_entropy(frame_logits.flatten(0, 1), frame_labels.flatten(),
                                 label_smoothing=self.label_smoothing)
            return ce, {"ce": float(ce.detach()), "total": float(ce.detach())}
        ce = F.cross_entropy(outputs["logits"].float(), labels, label_smoothing=self.label_smoothing)
        hll = self.hll(outputs, labels)
        sdim = outputs.get("aux_losses", {}).get("sdim_l1")
        sdim = ce.new_zeros(()) if sdim is None else sdim.float()
        total = ce + self.hll_weight * hll + self.sdim_weight * sdim
        parts = {"ce": float(ce.detach()), "hll": float(hll.detach()), "sdim_l1": float(sdim.detach())}
        if self.mask_weight > 0 and "mask_logits" in outputs:
            if masks is None:
                raise ValueError("training.mask_loss_weight > 0 but the batch has no blend masks")
            mask = mask_loss(outputs["mask_logits"], masks)
            total = total + self.mask_weight * mask
            parts["mask"] = float(mask.detach())
        if self.stf_stream_weight > 0 and "stf_logits" in outputs:
            stf_logits, stf_labels = outputs["stf_logits"].float(), labels
            if self.stf_stream_fakes == "temporal":   # every real and the temporal fakes only
                if temporal_fakes is None:
                    raise ValueError("training.stf_stream_fakes: temporal but the batch does not say which fakes "
                                     "are temporal (temporal_fake)")
                keep = (labels == 0) | temporal_fakes.to(labels.device).bool()
                stf_logits, stf_labels = stf_logits[keep], labels[keep]
            stf_ce = F.cross_entropy(stf_logits, stf_labels, label_smoothing=self.label_smoothing)
            total = total + self.stf_stream_weight * stf_ce
            parts["stf_ce"] = float(stf_ce.detach())
        if self.frame_target_weight > 0 and "frame_target_logits" in outputs:
            if frame_targets is None:
                raise ValueError("training.frame_target_weight > 0 but the batch has no per-frame targets (frame_y)")
            logits = outputs["frame_target_logits"].float()
            if frame_targets.shape != logits.shape:
                raise ValueError(f"per-frame targets {tuple(frame_targets.shape)} do not match the model's "
                                 f"frame_target_logits {tuple(logits.shape)}")
            ft = F.binary_cross_entropy_with_logits(logits, frame_targets.float())
            total = total + self.frame_target_weight * ft
            parts["frame_target"] = float(ft.detach())
        if teacher is not None:
            from stfmamba.training.distill import similarity_loss
            distill = similarity_loss(outputs["frame_features"].flatten(0, 1), teacher.flatten(0, 1))
            total = total + self.distill_weight * distill
            parts["distill"] = float(distill.detach())
        parts["total"] = float(total.detach())
        return total, parts


def mask_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel BCE of ``logits (B, T, h, w)`` against ``masks (B, T, H, W)`` in [0, 1], the masks
    area-averaged to ``(h, w)`` (``H``, ``W`` multiples of ``h``, ``w``)."""
    b, t, h, w = logits.shape
    target = F.adaptive_avg_pool2d(masks.flatten(0, 1).float(), (h, w)).view(b, t, h, w)
    return F.binary_cross_entropy_with_logits(logits.float(), target)
