"""Self-Blended Images (SBI), written from the paper's description, extended to video clips.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022): a fake is made
from one real face by blending it with a slightly transformed copy of itself through a soft mask
built from the facial landmarks. The detector then has to find the generic artefacts of face
swapping (blending boundary, colour and sharpness mismatch) instead of one generator's fingerprint.

The pieces, each a small pure function on arrays (no I/O):

* :func:`hull_mask` — the landmark convex hull, one of SBI's random hull variants (registry
  :data:`HULL_VARIANTS`).
* :func:`elastic_field` / :func:`apply_field` — a smooth random displacement (elastic deformation);
  the field is drawn once per clip and applied to every frame's mask.
* :func:`blur_mask` — Gaussian blur of the (deformed) mask, then renormalised to [0, 1].
* :func:`source_transform` — the source face: colour / hue / brightness shift, down-scaling or
  sharpening, slight translation and scale (albumentations, one seed for the whole clip so every
  frame gets the same transform).
* :func:`blend` — ``fake = ratio·mask·source + (1 − ratio·mask)·target``.

Video (:func:`self_blend_clip`): the mask of frame ``t`` comes from frame ``t``'s own landmarks
(so it follows the face), shifted by a temporal drift (:mod:`stfmamba.data.drift`) and optionally
deformed along its boundary with a thin-plate spline (:func:`tps_field`). Every random choice is
drawn once per clip from one ``numpy.random.Generator``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import albumentations as A
import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator

from stfmamba.data.drift import DRIFTS

# 68-point iBUG indices
JAW = np.arange(0, 17)
BROWS = np.arange(17, 27)
NOSE = np.arange(27, 36)
EYES = np.arange(36, 48)
MOUTH = np.arange(48, 68)
REF_SIZE = 224.0  # pixel amounts below are for a 224 px crop and scale with the crop side


# --------------------------------------------------------------------------- hull variants
def _fill_hull(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32).reshape(-1, 1, 2))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(np.float32)


def _hull_facehull(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Hull of all 68 points (jaw + eyebrows)."""
    return _fill_hull(lm, shape)


def _hull_extended(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """All 68 points with the eyebrows pushed up by a third of the brow–nose-tip distance (forehead)."""
    lm = lm.copy()
    lift = (lm[30, 1] - lm[BROWS, 1].mean()) / 3.0
    lm[BROWS, 1] -= lift
    return _fill_hull(lm, shape)


def _hull_inner(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The face without the forehead: lower jaw line, cheeks, nose bridge top (DFL-like 'full')."""
    return _fill_hull(np.concatenate([lm[JAW], lm[[27]]]), shape)


def _hull_components(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of the hulls of facial components (eyes+brows each side, nose, mouth+chin)."""
    parts = [np.concatenate([lm[17:22], lm[36:42]]), np.concatenate([lm[22:27], lm[42:48]]),
             lm[NOSE], np.concatenate([lm[MOUTH], lm[5:12]])]
    return np.clip(sum(_fill_hull(p, shape) for p in parts), 0, 1)


HULL_VARIANTS: dict[str, Callable[[np.ndarray, tuple[int, int]], np.ndarray]] = {
    "facehull": _hull_facehull,
    "extended": _hull_extended,
    "inner": _hull_inner,
    "components": _hull_components,
}


def hull_mask(landmarks: np.ndarray, shape: tuple[int, int], variant: str = "facehull") -> np.ndarray:
    """Binary face mask from 68 landmarks.

    Args:
        landmarks: ``(68, 2)`` float, (x, y) in pixels of the frame.
        shape: ``(H, W)`` of the frame.
        variant: a key of :data:`HULL_VARIANTS`.

    Returns:
        ``(H, W)`` float32 in {0, 1}.
    """
    if variant not in HULL_VARIANTS:
        raise KeyError(f"unknown hull variant '{variant}' (known: {sorted(HULL_VARIANTS)})")
    return HULL_VARIANTS[variant](np.asarray(landmarks, np.float32), shape)


# --------------------------------------------------------------------------- mask deformation
def elastic_field(rng: np.random.Generator, shape: tuple[int, int], alpha: float, sigma: float) -> np.ndarray:
    """A smooth random displacement field (elastic deformation, Simard et al. 2003).

    Args:
        rng: random generator (one draw per clip).
        shape: ``(H, W)``.
        alpha: displacement amplitude in pixels.
        sigma: Gaussian smoothing of the white-noise field, in pixels.

    Returns:
        ``(H, W, 2)`` float32 displacement (dx, dy) in pixels.
    """
    h, w = shape
    noise = rng.uniform(-1, 1, size=(h, w, 2)).astype(np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    peak = np.abs(field).max() + 1e-8
    return field * (alpha / peak)


def apply_field(mask: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Warp ``mask (H, W)`` by the displacement ``field (H, W, 2)`` (backward mapping, linear)."""
    h, w = mask.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def tps_field(rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, int],
              amplitude: float, n_ctrl: int = 8) -> np.ndarray:
    """Thin-plate-spline displacement that moves the mask boundary (``use_tps``).

    Control points: ``n_ctrl`` points on the jaw/brow outline get random offsets of up to
    ``amplitude`` px; the image corners stay fixed. The spline interpolates a smooth field.

    Args:
        rng: random generator (one draw per clip).
        landmarks: ``(68, 2)`` reference landmarks (e.g. the clip's first frame).
        shape: ``(H, W)``.
        amplitude: maximal control-point offset in pixels.
        n_ctrl: number of moving control points.

    Returns:
        ``(H, W, 2)`` float32 displacement field.
    """
    h, w = shape
    outline = np.concatenate([landmarks[JAW], landmarks[BROWS][::-1]])
    idx = rng.choice(len(outline), size=min(n_ctrl, len(outline)), replace=False)
    ctrl = outline[idx].astype(np.float64)
    offs = rng.uniform(-amplitude, amplitude, size=ctrl.shape)
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    pts = np.concatenate([ctrl, corners])
    vals = np.concatenate([offs, np.zeros_like(corners)])
    # evaluate on a coarse grid, then upsample (the spline is smooth)
    step = max(1, min(h, w) // 16)
    gy, gx = np.mgrid[0:h:step, 0:w:step]
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float64)
    coarse = RBFInterpolator(pts, vals, kernel="thin_plate_spline")(grid).reshape(gy.shape + (2,))
    return cv2.resize(coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def blur_mask(mask: np.ndarray, ksize: int, erode_ksize: int = 0) -> np.ndarray:
    """Soft mask: optional erosion, Gaussian blur with an odd kernel ``ksize``, renormalised to [0, 1].

    Args:
        mask: ``(H, W)`` float in [0, 1].
        ksize: Gaussian kernel size (made odd).
        erode_ksize: size of a square erosion applied first (0 = none); keeps the blurred
            boundary inside the face.

    Returns:
        ``(H, W)`` float32 in [0, 1].
    """
    m = mask.astype(np.float32)
    if erode_ksize > 1:
        m = cv2.erode(m, np.ones((erode_ksize, erode_ksize), np.uint8))
    k = max(1, int(ksize) | 1)
    m = cv2.GaussianBlur(m, (k, k), 0)
    peak = m.max()
    return np.clip(m / peak, 0.0, 1.0) if peak > 0 else m


# --------------------------------------------------------------------------- source + blend
def build_source_transform() -> A.Compose:
    """The SBI source transform: colour, hue, brightness, then down-scale *or* sharpen, slight affine.

    Call with ``images=(T, H, W, 3)`` after ``set_random_seed(clip_seed)``: albumentations applies
    the same parameters to every frame.
    """
    return A.Compose([
        A.RGBShift(r_shift_limit=20, g_shift_limit=20, b_shift_limit=20, p=0.5),
        A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=20, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.OneOf([A.Downscale(scale_range=(0.5, 0.9), p=1.0), A.Sharpen(alpha=(0.2, 0.5), lightness=(0.5, 1.0), p=1.0)],
                p=1.0),
        A.Affine(translate_percent={"x": (-0.03, 0.03), "y": (-0.015, 0.015)}, scale=(0.95, 1.0 / 0.95),
                 border_mode=cv2.BORDER_REFLECT, p=1.0),
    ])


def source_transform(frames: np.ndarray, seed: int, transform: A.Compose | None = None) -> np.ndarray:
    """The transformed source clip; the same transform for every frame.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        seed: the clip's augmentation seed.
        transform: a prebuilt :func:`build_source_transform` (built when ``None``).

    Returns:
        ``(T, H, W, 3)`` uint8.
    """
    t = transform or build_source_transform()
    t.set_random_seed(int(seed))
    return t(images=frames)["images"]


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray, ratio: float) -> np.ndarray:
    """``fake = ratio·mask·source + (1 − ratio·mask)·target``.

    Args:
        target: ``(..., H, W, 3)`` uint8, the real frames.
        source: same shape, the transformed frames.
        mask: ``(..., H, W)`` float in [0, 1].
        ratio: blend ratio in (0, 1].

    Returns:
        uint8 array like ``target``.
    """
    t_ = target.reshape((-1,) + target.shape[-3:])            # (N, H, W, 3)
    s_ = source.reshape(t_.shape)
    m_ = mask.reshape((-1,) + mask.shape[-2:])
    out = np.empty_like(t_)
    for i in range(len(t_)):                                   # OpenCV per frame: ~10x faster than numpy floats
        w = np.ascontiguousarray(m_[i] * ratio, dtype=np.float32)
        out[i] = cv2.blendLinear(np.ascontiguousarray(s_[i]), np.ascontiguousarray(t_[i]), w, 1.0 - w)
    return out.reshape(target.shape)


# --------------------------------------------------------------------------- video SBI
@dataclass(frozen=True)
class SBIConfig:
    """Knobs of Video-SBI (defaults follow the SBI paper, pixel sizes relative to a REF_SIZE = 224 px crop)."""
    hull_variants: tuple[str, ...] = ("facehull", "extended", "inner", "components")
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # SBI's sampled ratios
    elastic_prob: float = 0.5        # probability of an elastic deformation of the mask
    drift: str = "brownian"          # key of stfmamba.data.drift.DRIFTS ("brownian" V7.3, "multiscale" V8)
    use_tps: bool = False            # thin-plate-spline boundary deformation
    tps_amplitude: float = 6.0       # px at 224 px crops


@dataclass
class SBIResult:
    fake: np.ndarray    # (T, H, W, 3) uint8
    mask: np.ndarray    # (T, H, W) float32, the effective blend mask (ratio applied)
    drift: np.ndarray   # (T, 2) float32 per-frame mask offset in px


def self_blend_clip(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                    cfg: SBIConfig = SBIConfig(), transform: A.Compose | None = None) -> SBIResult:
    """Make the self-blended fake of a real clip.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB real clip.
        landmarks: ``(T, 68, 2)`` float landmarks in the frames' pixel coordinates.
        rng: the clip's generator: every random choice below is drawn from it once per clip.
        cfg: :class:`SBIConfig`.
        transform: optional prebuilt source transform (saves rebuilding it per clip).

    Returns:
        :class:`SBIResult` with the fake clip, the mask per frame and the drift per frame.
    """
    t, h, w, _ = frames.shape
    if landmarks.shape != (t, 68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2) = ({t}, 68, 2), got {landmarks.shape}")
    scale = min(h, w) / REF_SIZE
    variant = cfg.hull_variants[int(rng.integers(len(cfg.hull_variants)))]
    ratio = float(cfg.blend_ratios[int(rng.integers(len(cfg.blend_ratios)))])
    field = None
    if rng.random() < cfg.elastic_prob:
        field = elastic_field(rng, (h, w), alpha=float(rng.uniform(2, 6)) * scale,
                              sigma=float(rng.uniform(8, 16)) * scale)
    if cfg.use_tps:
        tps = tps_field(rng, landmarks[0], (h, w), cfg.tps_amplitude * scale)
        field = tps if field is None else field + tps
    ksize = int(rng.choice([5, 9, 13, 17]) * scale * 2) | 1
    erode = int(rng.integers(0, 2) * max(2, round(6 * scale)))
    drift = DRIFTS[cfg.drift](rng, t, scale).astype(np.float32)  # (T, 2)
    seed = int(rng.integers(2**31 - 1))

    masks = np.empty((t, h, w), np.float32)
    for i in range(t):
        m = hull_mask(landmarks[i] + drift[i], (h, w), variant)
        if field is not None:
            m = apply_field(m, field)
        masks[i] = blur_mask(m, ksize, erode)
    source = source_transform(frames, seed, transform)
    fake = blend(frames, source, masks, ratio)
    return SBIResult(fake=fake, mask=masks * ratio, drift=drift)
