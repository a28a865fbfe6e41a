"""Clips: which frames of a preprocessed video form a model clip, and how they become model input.

A preprocessed video holds ``num_segments`` runs of ``frames_per_segment`` contiguous frames.
A model clip is ``num_frames`` consecutive frames inside one run (never across a run boundary,
where time jumps). Evaluation scores the non-overlapping windows of every run; training draws a
random window.

**The crop contract** (one code path for training, validation, evaluation and prediction):

1. ``frames[start:start + num_frames]`` of the npz (``(T, S, S, 3)`` uint8 RGB, ``S = crop_size``);
2. :func:`model_clip`: OpenCV ``INTER_AREA`` resize on uint8 to ``(T, img_size, img_size, 3)``
   (a no-op when ``S == img_size``);
3. channels first, still uint8: ``(3, T, img_size, img_size)`` (:func:`clip_tensor`); clips travel
   as uint8 through DataLoader workers and host-to-device copies;
4. on the device, :func:`normalize_clips`: ``/255`` then ImageNet mean / std, float32.

The training dataset (:class:`~stfmamba.data.dataset.VideoSBIDataset`) applies step 2 to the real
clip and to its SBI fake, the evaluation engine (:mod:`stfmamba.evaluation.engine`) to every test
clip; both then call :func:`normalize_clips`. :func:`frames_to_tensor` chains the four steps for
one clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ClipSpec", "clip_starts", "random_clip_start", "model_clip",
           "clip_tensor", "normalize_clips", "norm_of", "frames_to_tensor", "static_clips"]


def clip_starts(num_segments: int, frames_per_segment: int, num_frames: int) -> list[int]:
    """Start indices of the non-overlapping clip windows of every run (evaluation clips)."""
    per_run = frames_per_segment // num_frames
    return [s * frames_per_segment + k * num_frames for s in range(num_segments) for k in range(per_run)]


def random_clip_start(rng: np.random.Generator, num_segments: int, frames_per_segment: int,
                      num_frames: int) -> int:
    """A random window start inside a random run (training clips)."""
    seg = int(rng.integers(num_segments))
    return seg * frames_per_segment + int(rng.integers(frames_per_segment - num_frames + 1))


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a preprocessed video and sized for the model (training and evaluation)."""
    num_segments: int        # runs per video (preprocess.num_segments of the npz files)
    frames_per_segment: int  # frames per run (preprocess.frames_per_segment of the npz files)
    num_frames: int          # model clip length T (model.num_frames)
    img_size: int            # model input side H = W (model.img_size)
    clips_per_video: int | None = None  # evaluation: cap on clips per video (evenly spaced); None = all

    @property
    def stored_frames(self) -> int:
        """Frames per npz: ``num_segments * frames_per_segment`` (``PreprocessConfig.stored_frames``)."""
        return self.num_segments * self.frames_per_segment

    def starts(self) -> list[int]:
        """Start frame of every evaluation clip of a video (at most ``clips_per_video``, evenly spaced)."""
        starts = clip_starts(self.num_segments, self.frames_per_segment, self.num_frames)
        if self.clips_per_video is not None and len(starts) > self.clips_per_video:
            pick = np.linspace(0, len(starts) - 1, self.clips_per_video).round().astype(int)
            starts = [starts[i] for i in pick]
        return starts


def model_clip(frames: np.ndarray, img_size: int) -> np.ndarray:
    """Crops of the npz -> the model's uint8 frames (step 2 of the crop contract).

    Args:
        frames: ``(T, S, S, 3)`` uint8 RGB square crops with ``S >= img_size``.
        img_size: model input side.

    Returns:
        ``(T, img_size, img_size, 3)`` uint8: OpenCV ``INTER_AREA`` per frame, or ``frames`` itself
        when ``S == img_size``.

    Raises:
        ValueError: non-square, non-uint8 or too small crops (upsampling is not part of the contract).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, S, S, 3) uint8, got {frames.shape} {frames.dtype}")
    h, w = frames.shape[1:3]
    if h != w or h < img_size:
        raise ValueError(f"crops are {h}x{w}; the contract needs square crops of at least "
                         f"model.img_size={img_size} px (preprocess.crop_size >= model.img_size)")
    if h == img_size:
        return frames
    import cv2
    return np.stack([cv2.resize(f, (img_size, img_size), interpolation=cv2.INTER_AREA) for f in frames])


def model_mask(mask: np.ndarray, img_size: int) -> np.ndarray:
    """A clip's blend mask ``(T, S, S)`` float -> ``(T, img_size, img_size)`` float32, resized like
    :func:`model_clip` (OpenCV ``INTER_AREA``) so it stays aligned with the model's frames."""
    mask = np.asarray(mask, np.float32)
    if mask.shape[1] == img_size:
        return mask
    import cv2
    return np.stack([cv2.resize(m, (img_size, img_size), interpolation=cv2.INTER_AREA) for m in mask])


def clip_tensor(frames: np.ndarray, img_size: int) -> torch.Tensor:
    """``frames: (T, S, S, 3)`` uint8 -> ``(3, T, img_size, img_size)`` uint8 (steps 2-3 of the contract)."""
    return torch.from_numpy(np.ascontiguousarray(model_clip(frames, img_size))).permute(3, 0, 1, 2)


def normalize_clips(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 clips ``(..., 3, T, H, W)`` -> float32 normalised with the model's ``mean`` / ``std``
    (``model.data_config``: what its pretrained weights expect; ImageNet's by default), on ``x``'s
    device (step 4)."""
    mean = torch.tensor(mean, device=x.device, dtype=torch.float32).view(3, 1, 1, 1)
    std = torch.tensor(std, device=x.device, dtype=torch.float32).view(3, 1, 1, 1)
    return (x.float().div_(255.0) - mean) / std


def frames_to_tensor(frames: np.ndarray, img_size: int | None = None) -> torch.Tensor:
    """``frames: (T, S, S, 3)`` uint8 RGB -> ``(3, T, img_size, img_size)`` float32 model input.

    The whole crop contract for one clip (``img_size=None`` keeps ``S``).
    """
    return normalize_clips(clip_tensor(frames, frames.shape[1] if img_size is None else img_size))


def norm_of(model) -> dict:
    """``{"mean", "std"}`` for :func:`normalize_clips` from ``model.data_config`` (ImageNet's when
    the model has none), unwrapping DDP."""
    cfg = getattr(getattr(model, "module", model), "data_config", None) or {}
    return {"mean": tuple(cfg.get("mean", IMAGENET_MEAN)), "std": tuple(cfg.get("std", IMAGENET_STD))}


def static_clips(x: torch.Tensor) -> torch.Tensor:
    """Static versions of clips ``x: (..., 3, T, H, W)``: the first frame repeated ``T`` times.

    A static clip has the appearance of the real clip and no motion at all, so the gap between a
    model's AUC on real and on static clips is what its temporal modelling contributes.
    """
    return x[..., :1, :, :].expand_as(x).contiguous()
