"""Distillation from the frame baseline (``training.distill_from``).

The pretrained frame classifier fine-tuned on Video-SBI (``models/frame.pt``) scores the demo above every
video model; its skill sits in the last EfficientNet blocks and head, which the video model's stride-16
trunk does not have (and starting the trunk from it, ``model.trunk_init``, did not carry the skill over).
Here the frame model is a frozen teacher instead: on every training clip it embeds each frame (its
pooled pre-classifier features), and the video model's per-frame features (``frame_features``, the last
STF stage averaged over space) are pulled towards the same *pairwise similarities* over the batch's
frames — similarity-preserving distillation (Tung & Mori, ICCV 2019), in its cosine form:

    L = mean_ij (cos(s_i, s_j) - cos(t_i, t_j))^2      over the 2B·T frames of the batch

It needs no projection layer (the feature sizes differ: 128 vs 1280), so the model file and its keys
are unchanged, and it leaves the temporal stages free to add what a frame cannot show. The teacher
sees the crops as it was trained: resized to its own input size (area interpolation, as the data
path's ``INTER_AREA``) and normalised with its recorded mean / std.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["FrameTeacher", "similarity_loss"]


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the cosine-similarity matrices of ``student (N, Cs)`` and
    ``teacher (N, Ct)`` over their ``N`` rows (fp32)."""
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student and teacher features must have the same rows, got {tuple(student.shape)} "
                         f"and {tuple(teacher.shape)}")
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return (s @ s.T - t @ t.T).pow(2).mean()


class FrameTeacher:
    """A frozen frame-baseline model file as a feature teacher.

    Args:
        path: the frame baseline's model file (``models/frame.pt``; :func:`stfmamba.models.checkpoint.load_model_file`).
        device: where it runs.
    """

    def __init__(self, path: str | Path, device: torch.device | str = "cpu") -> None:
        from stfmamba.data.clips import Normalize
        from stfmamba.models.checkpoint import load_model_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training.distill_from={str(path)!r}: file not found (train the frame baseline "
                                    f"first: `dvc repro train_frame`, or `dvc pull {path}`; `none` switches it off)")
        model, cfg, meta = load_model_file(path)
        if not cfg.model.frame_level:
            raise ValueError(f"training.distill_from={str(path)!r}: the teacher must be a frame baseline model file "
                             f"(a timm classifier), this one is {cfg.model.arch!r}")
        self.path = path
        self.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        self.model = model.eval().requires_grad_(False).to(device)
        norm = (meta.get("input") or {}).get("normalize")
        self.norm = Normalize.of(norm) if norm else Normalize.of(model)
        self.img_size = cfg.model.img_size
        self.arch = cfg.model.arch

    def as_dict(self) -> dict:
        """What the student's model file records of its teacher (``meta.teacher``)."""
        return {"path": str(self.path), "sha256": self.sha256, "arch": self.arch, "img_size": self.img_size}

    @torch.no_grad()
    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 RGB clips ``(B, 3, T, H, W)`` -> the teacher's pooled features ``(B, T, D)`` (fp32)."""
        b = clips.shape[0]
        frames = rearrange(clips, "b c t h w -> (b t) c h w").float()
        if frames.shape[-1] != self.img_size or frames.shape[-2] != self.img_size:
            frames = F.interpolate(frames, size=(self.img_size, self.img_size), mode="area")
        frames = self.norm(frames.round().clamp(0, 255).unsqueeze(2)).squeeze(2)    # (B·T, 3, s, s)
        net = self.model.net
        feats = net.forward_head(net.forward_features(frames.contiguous(memory_format=torch.channels_last)),
                                 pre_logits=True)
        return rearrange(feats.float(), "(b t) d -> b t d", b=b)
