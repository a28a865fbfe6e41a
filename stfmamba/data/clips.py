"""Clips: which frames of a preprocessed video form a model clip, and how they become a tensor.

A preprocessed video holds ``num_segments`` runs of ``frames_per_segment`` contiguous frames.
A model clip is ``num_frames`` consecutive frames inside one run (never across a run boundary,
where time jumps). Evaluation scores the non-overlapping windows of every run; training draws a
random window.
"""
from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def clip_starts(num_segments: int, frames_per_segment: int, num_frames: int) -> list[int]:
    """Start indices of the non-overlapping clip windows of every run (evaluation clips)."""
    per_run = frames_per_segment // num_frames
    return [s * frames_per_segment + k * num_frames for s in range(num_segments) for k in range(per_run)]


def random_clip_start(rng: np.random.Generator, num_segments: int, frames_per_segment: int,
                      num_frames: int) -> int:
    """A random window start inside a random run (training clips)."""
    seg = int(rng.integers(num_segments))
    return seg * frames_per_segment + int(rng.integers(frames_per_segment - num_frames + 1))


def frames_to_tensor(frames: np.ndarray, img_size: int | None = None) -> torch.Tensor:
    """``frames: (T, H, W, 3) uint8 RGB`` -> ``(3, T, H', W') float32`` normalised with ImageNet stats.

    ``img_size`` resizes (area interpolation) when the crops are larger than the model input.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, H, W)
    if img_size is not None and x.shape[-1] != img_size:
        x = torch.nn.functional.interpolate(x, size=(img_size, img_size), mode="area")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    return (x - mean) / std
