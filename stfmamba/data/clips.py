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
4. on the device, :func:`normalize_clips`: ``/255`` then the model's mean / std, float32 (RGB).

The mean / std are the model's own, never a constant of this module: timm's pretrained config of
the model's timm network (``timm.data.resolve_model_data_config``; e.g. ImageNet's for ResNet or
ConvNeXt V2, ``0.5`` / ``0.5`` — inputs in ``[-1, 1]`` — for ``tf_efficientnet_lite0``), ImageNet's
for the built-in conv stem. Every model reports it as ``model.data_config`` and the model file
stores it (``input.normalize``, :mod:`stfmamba.models.checkpoint`); a :class:`Normalize` built
from either is what training, evaluation and prediction call.

The training dataset (:class:`~stfmamba.data.dataset.VideoSBIDataset`) applies step 2 to the real
clip and to its SBI fake, the evaluation engine (:mod:`stfmamba.evaluation.engine`) to every test
clip; both then call :func:`normalize_clips`. :func:`frames_to_tensor` chains the four steps for
one clip.

**The mouth stream** (``model.mouth_stream``): :func:`mouth_clip` cuts one still square box around
the clip's lip landmarks (iBUG points 48–67, :data:`stfmamba.data.faces.MOUTH`; the union over the
clip's frames, :data:`MOUTH_MARGIN` on each side) from the stored crops and resizes it to
``model.mouth_size``. One box per clip: the mouth crop moves exactly as the face crop does (not at
all), so it adds no box-motion cue. Training cuts it from the (augmented) real and fake frames with
the same landmarks, evaluation and prediction from the npz frames; it then travels and is
normalised like the face clip (steps 3–4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MOUTH_MARGIN = 0.25   # mouth box: the lip landmarks' box side x (1 + 2 * margin), centred on it (model file: input.model.mouth_margin)
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # the built-in conv stem's input (and old model files' fallback)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDER = "RGB"                    # the npz crops', and every model's

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CHANNEL_ORDER", "ClipSpec", "Normalize", "clip_starts",
           "random_clip_start", "model_clip", "mouth_box", "mouth_clip", "mouth_tensor",
           "clip_tensor", "normalize_clips", "frames_to_tensor", "static_clips", "shuffle_order", "shuffled_clips"]


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
    max_clips_per_video: int | None = None  # scoring: cap on clips per video (evenly spaced); None = all
    mouth_size: int | None = None   # mouth stream side (model.mouth_size); None = the model has no mouth stream
    mouth_margin: float = MOUTH_MARGIN   # the mouth box margin the model was trained with

    @property
    def stored_frames(self) -> int:
        """Frames per npz: ``num_segments * frames_per_segment`` (``PreprocessConfig.stored_frames``)."""
        return self.num_segments * self.frames_per_segment

    def starts(self) -> list[int]:
        """Start frame of every evaluation clip of a video (at most ``max_clips_per_video``, evenly spaced)."""
        starts = clip_starts(self.num_segments, self.frames_per_segment, self.num_frames)
        if self.max_clips_per_video is not None and len(starts) > self.max_clips_per_video:
            pick = np.linspace(0, len(starts) - 1, self.max_clips_per_video).round().astype(int)
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


def mouth_box(landmarks: np.ndarray, margin: float = MOUTH_MARGIN) -> tuple[int, int, int]:
    """The still square mouth box of a clip: ``(x0, y0, side)`` in integer crop pixels.

    The box of the lip landmarks (points 48–67) of every frame together, its larger side times
    ``1 + 2 * margin``, centred on that box (as :func:`stfmamba.data.faces.square_box` makes the
    face box). Raises ValueError for landmarks that are not ``(T, 68, 2)`` or not finite.
    """
    from stfmamba.data.faces import MOUTH
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2), got {lm.shape}")
    pts = lm[:, MOUTH].reshape(-1, 2)
    if not np.all(np.isfinite(pts)):
        raise ValueError("mouth landmarks are not finite")
    lo, hi = pts.min(0), pts.max(0)
    c = (lo + hi) / 2
    side = max(int(round(float((hi - lo).max()) * (1 + 2 * margin))), 4)
    return int(round(c[0] - side / 2)), int(round(c[1] - side / 2)), side


def mouth_clip(frames: np.ndarray, landmarks: np.ndarray, size: int, margin: float = MOUTH_MARGIN) -> np.ndarray:
    """The mouth region of a clip: one still box around its lip landmarks, resized (the mouth stream's input).

    Args:
        frames: ``(T, S, S, 3)`` uint8 RGB crops (the npz's, or a fake made from them).
        landmarks: ``(T, 68, 2)`` landmarks in the crops' pixels (the npz's ``landmarks``).
        size: output side (``model.mouth_size``).
        margin: box margin (:func:`mouth_box`).

    Returns:
        ``(T, size, size, 3)`` uint8: the same box in every frame (zeros where it leaves the crop),
        OpenCV ``INTER_AREA`` when shrinking, ``INTER_LINEAR`` when enlarging.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, S, S, 3) uint8, got {frames.shape} {frames.dtype}")
    if len(landmarks) != len(frames):
        raise ValueError(f"{len(landmarks)} landmark frames for {len(frames)} frames")
    import cv2
    x0, y0, side = mouth_box(landmarks, margin)
    h, w = frames.shape[1:3]
    ya, yb = min(max(y0, 0), h), max(min(y0 + side, h), 0)
    xa, xb = min(max(x0, 0), w), max(min(x0 + side, w), 0)
    sub = frames[:, ya:max(ya, yb), xa:max(xa, xb)]
    top, left = min(max(ya - y0, 0), side), min(max(xa - x0, 0), side)
    pad = ((0, 0), (top, side - top - sub.shape[1]), (left, side - left - sub.shape[2]), (0, 0))
    if any(a or b for a, b in pad):
        sub = np.pad(sub, pad)                                     # zeros outside the crop
    if side == size:
        return np.ascontiguousarray(sub)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=interp) for f in sub])


def mouth_tensor(frames: np.ndarray, landmarks: np.ndarray, size: int, margin: float = MOUTH_MARGIN) -> torch.Tensor:
    """:func:`mouth_clip` channels first: ``(3, T, size, size)`` uint8 (like :func:`clip_tensor`)."""
    return torch.from_numpy(mouth_clip(frames, landmarks, size, margin)).permute(3, 0, 1, 2)


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


def normalize_clips(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 RGB clips ``(..., 3, T, H, W)`` -> float32 ``(x / 255 - mean) / std``, on ``x``'s device (step 4).

    Args:
        x: uint8 clips, channels RGB.
        mean, std: three floats each, the model's (``model.data_config`` / the model file's
            ``input.normalize``; :class:`Normalize` carries them).
    """
    mean = torch.as_tensor(tuple(mean), dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    std = torch.as_tensor(tuple(std), dtype=torch.float32, device=x.device).view(3, 1, 1, 1)
    return (x.float().div_(255.0) - mean) / std


@dataclass(frozen=True)
class Normalize:
    """A model's input normalisation (step 4): ``Normalize(mean, std)(x)`` is :func:`normalize_clips`."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channel_order: str = CHANNEL_ORDER

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"normalisation needs 3 means and 3 positive stds, got mean={self.mean} std={self.std}")
        if self.channel_order != CHANNEL_ORDER:
            raise ValueError(f"channel order {self.channel_order!r}: the crops are {CHANNEL_ORDER}; "
                             "no other order is supported")

    @classmethod
    def of(cls, source) -> "Normalize":
        """From a model (its ``data_config``) or a mapping with ``mean`` and ``std`` (timm's data config,
        a model file's ``input.normalize``)."""
        cfg = source.data_config if hasattr(source, "data_config") else source
        return cls(tuple(cfg["mean"]), tuple(cfg["std"]), cfg.get("channel_order", CHANNEL_ORDER))

    def as_dict(self) -> dict:
        """``{"mean": [3], "std": [3], "channel_order": "RGB"}`` (the model file's ``input.normalize``)."""
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_clips(x, self.mean, self.std)


def frames_to_tensor(frames: np.ndarray, norm: Normalize, img_size: int | None = None) -> torch.Tensor:
    """``frames: (T, S, S, 3)`` uint8 RGB -> ``(3, T, img_size, img_size)`` float32 model input.

    The whole crop contract for one clip (``img_size=None`` keeps ``S``), normalised by ``norm``.
    """
    return norm(clip_tensor(frames, frames.shape[1] if img_size is None else img_size))


def static_clips(x: torch.Tensor) -> torch.Tensor:
    """Static versions of clips ``x: (..., 3, T, H, W)``: the first frame repeated ``T`` times.

    A static clip has the appearance of the real clip and no motion at all, so the gap between a
    model's AUC on real and on static clips is what its temporal modelling contributes.
    """
    return x[..., :1, :, :].expand_as(x).contiguous()


def shuffle_order(t: int) -> list[int]:
    """The fixed frame order of a shuffled clip of ``t`` frames: the odd positions, then the even ones
    (``t = 4``: ``[1, 3, 0, 2]``; ``t = 8``: ``[1, 3, 5, 7, 0, 2, 4, 6]``).

    From ``t = 4`` on no two frames that follow each other in the shuffled clip were neighbours in the
    clip (every step jumps 2 or more frames), so a motion cue between consecutive frames is broken
    everywhere. ``t = 2`` / ``3`` have no such order: the clip reversed. ``t = 1``: itself.
    """
    if t < 1:
        raise ValueError(f"shuffle_order: t must be >= 1, got {t}")
    if t < 4:
        return list(range(t))[::-1]
    return list(range(1, t, 2)) + list(range(0, t, 2))


def shuffled_clips(x: torch.Tensor) -> torch.Tensor:
    """Clips ``x: (..., 3, T, H, W)`` with their frames in the order :func:`shuffle_order` (``T``).

    The control for what the *order* of the frames adds: a shuffled clip holds exactly the frames of
    the clip, so a model's per-frame evidence (a frame classifier, the frame stream's averaged logits)
    is the same on both, and the gap between its AUC on real and on shuffled clips is what it reads
    from the sequence. The static clip (:func:`static_clips`) also drops ``T - 1`` of the frames, so
    its gap mixes motion with having fewer frames of evidence.
    """
    return x[..., shuffle_order(x.shape[-3]), :, :].contiguous()
