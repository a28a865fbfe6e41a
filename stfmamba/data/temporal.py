"""Temporal pseudo-fakes: real-only fakes whose cue is in time, beside Video-SBI (issue 19).

Video-SBI (:mod:`stfmamba.data.sbi`) teaches a spatial cue: a blending boundary with a colour or
sharpness mismatch, the same in every frame. A model trained on it gains nothing from seeing
motion (its static-clip AUC equals its real-clip AUC), and it misses manipulations that have no
face-swap boundary (reenactment, lip-sync). The kinds here are made from one real clip, like SBI,
but what separates them from their real is how a region *changes over time*:

* ``region_retime`` (after the idea of Cobo et al., "Beyond Flicker: Detecting Kinematic
  Inconsistencies for Generalizable Deepfake Video Detection", arXiv 2512.04175, which breaks the
  natural correlation between the motions of facial regions): one facial region (mouth + chin,
  lower face, or eyes + brows; :data:`REGIONS`) shows the content of *another time of the same
  run* — shifted in time, mirrored in time, frozen, or played faster / slower (:data:`TIME_MAPS`)
  — moved by an integer translation so it sits where the region is in the current frame (no
  resampling), and blended through a soft landmark-hull mask. The rest of the face keeps its own
  motion, so the parts of the face move out of step.
* ``blend_ramp`` (after the Self-Blended Video of FakeSTormer: Nguyen et al., "Vulnerability-Aware
  Spatio-Temporal Learning for Generalizable Deepfake Video Detection", ICCV 2025, arXiv
  2501.01184, which supervises a frame-wise forgery intensity): a Video-SBI fake whose blend ratio
  follows a curve over the clip (:data:`RAMPS`: rise, fall, pulse, dip), with at least one frame at
  exactly 0; the clip label stays fake and ``frame_target`` is the per-frame ratio (for a future
  per-frame head).
* ``feature_drift``: every frame blended with a slightly warped copy of itself inside a facial hull;
  the warp is a sum of smooth displacement fields whose weights oscillate over the clip (random
  periods and phases) and that move with the face, so facial features wobble slowly while the
  head does not. The real clip gets a constant sub-pixel shift through the same bicubic resampler,
  so the warped region is not the only resampled content (no sharpness cue).

Contract shared with Video-SBI, and checked by the shortcut audit (``stages/sbi_audit.py``,
``tests/training/test_temporal_audit.py``):

* every random parameter is drawn once per clip from the clip's generator, before any pixel is
  touched, and the number of draws does not depend on the pixels (``region_retime`` may then
  decline a clip whose region does not change; the dataset makes a Video-SBI fake instead with the
  same generator);
* outside the mask the fake *is* its real, bit for bit (so also its frame-to-frame change:
  :func:`stfmamba.data.sbi.temporal_statistics`); inside it differs over time.

Static clips (one frame repeated): ``region_retime`` of a static clip is the static clip itself
(content from another time of a still run is the same content: no temporal signal without motion,
and the kind declines it). ``blend_ramp`` and ``feature_drift`` do not have that property: their
curves put change over time into a still clip by construction (a blend that comes and goes,
features that drift) — that change is the artefact they teach.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import albumentations as A
import cv2
import numpy as np

from stfmamba.config import TEMPORAL_FAKE_KINDS
from stfmamba.data.faces import MOUTH, NOSE
from stfmamba.data.sbi import (REF_SIZE, SBIConfig, _gray, _odd, blend, blur_mask, elastic_field, face_motion,
                                follow_face, hull_mask, self_blend_clip, smooth_landmarks)

__all__ = ["TemporalConfig", "ClipContext", "TemporalResult", "REGIONS", "TIME_MAPS", "RAMPS", "TEMPORAL_KINDS",
           "temporal_fake_clip", "region_retime", "blend_ramp", "feature_drift"]


@dataclass(frozen=True)
class TemporalConfig:
    """Knobs of the temporal family (pixel amounts for a REF_SIZE = 224 px crop, scaled with the crop)."""
    prob: float = 0.0                                  # fraction of fakes made by this family (training.temporal_fake_prob)
    kinds: tuple[str, ...] = TEMPORAL_FAKE_KINDS       # kinds drawn uniformly per clip (training.temporal_fake_kinds)
    # region_retime
    regions: tuple[str, ...] = ("mouth", "lower_face", "eyes")
    time_maps: tuple[str, ...] = ("shift", "reverse", "freeze", "retime")
    max_shift: int = 8                  # frames: largest time shift / pivot offset (bounded by the run length)
    speed_range: tuple[float, float] = (1.5, 2.5)      # retime: speed factor v or 1/v, v from this range
    min_change: float = 1.0             # luma levels: a retimed region changing less than this on average is declined
    # blend_ramp
    ramps: tuple[str, ...] = ("rise", "fall", "pulse", "dip")
    # feature_drift
    drift_hulls: tuple[str, ...] = ("components", "inner", "facehull")   # keys of sbi.HULL_VARIANTS
    drift_amplitude: tuple[float, float] = (0.75, 2.5)  # px, per-axis displacement std at full swing (log-uniform)
    drift_sigma: float = 10.0           # px, spatial smoothness of each warp field (facial-feature scale)
    drift_fields: int = 2               # warp fields, each with its own period and phase
    drift_periods: tuple[float, float] = (4.0, 16.0)   # frames, period range of the oscillation
    drift_ratios: tuple[float, ...] = (0.75, 1.0, 1.0)  # blend ratio of the warped copy
    # masks (SBI's soft hull: blur, erode or dilate, blur)
    blur_kernels: tuple[int, int] = (5, 25)


@dataclass(frozen=True)
class ClipContext:
    """The run a clip is cut from: ``frames[offset:offset + T]`` is the clip (what ``region_retime``
    may borrow other times from). ``None`` in :func:`temporal_fake_clip` = the clip itself."""
    frames: np.ndarray       # (N, H, W, 3) uint8
    landmarks: np.ndarray    # (N, 68, 2)
    offset: int = 0


@dataclass
class TemporalResult:
    kind: str                   # key of TEMPORAL_KINDS
    fake: np.ndarray            # (T, H, W, 3) uint8
    real: np.ndarray            # (T, H, W, 3) uint8, the real clip the fake pairs with
    mask: np.ndarray            # (T, H, W) float32 effective blend mask (0 where the fake equals the real)
    frame_target: np.ndarray    # (T,) float32 per-frame manipulation strength in [0, 1]
    params: dict = field(default_factory=dict)   # the clip's draw, for inspection and tests


# --------------------------------------------------------------------------- regions (region_retime)
def _region_mouth(lm: np.ndarray) -> list[np.ndarray]:
    """Mouth and chin (the jaw below the mouth corners moves with it)."""
    return [np.concatenate([lm[MOUTH], lm[4:13]])]


def _region_lower_face(lm: np.ndarray) -> list[np.ndarray]:
    """Everything below the nose: lower jaw line, nostrils, mouth."""
    return [np.concatenate([lm[3:14], lm[NOSE[4:]], lm[MOUTH]])]


def _region_eyes(lm: np.ndarray) -> list[np.ndarray]:
    """Each eye with its brow (two hulls: blinks and brow raises)."""
    return [np.concatenate([lm[17:22], lm[36:42]]), np.concatenate([lm[22:27], lm[42:48]])]


REGIONS: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
    "mouth": _region_mouth, "lower_face": _region_lower_face, "eyes": _region_eyes,
}


def _region_mask(parts: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for p in parts:
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(p).astype(np.int32).reshape(-1, 1, 2)), 1)
    return m.astype(np.float32)


# --------------------------------------------------------------------------- time maps (region_retime)
def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices folded into ``[0, n)`` by mirroring at the run ends (time runs backwards past an end)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    i = np.mod(idx, period)
    return np.where(i > n - 1, period - i, i)


def _shift_map(rng: np.random.Generator, n: int, off: int, t: int, cfg: TemporalConfig) -> np.ndarray:
    """The region runs ``k`` frames ahead or behind (1 ≤ |k| ≤ max_shift)."""
    k = int(rng.integers(1, max(1, min(cfg.max_shift, n - 1)) + 1)) * (1 if rng.random() < 0.5 else -1)
    return _reflect(off + np.arange(t) + k, n)


def _reverse_map(rng: np.random.Generator, n: int, off: int, t: int, cfg: TemporalConfig) -> np.ndarray:
    """The region plays backwards, mirrored about a pivot near the clip's centre."""
    twice_pivot = 2 * off + (t - 1) + int(rng.integers(-cfg.max_shift, cfg.max_shift + 1))
    return _reflect(twice_pivot - (off + np.arange(t)), n)


def _freeze_map(rng: np.random.Generator, n: int, off: int, t: int, cfg: TemporalConfig) -> np.ndarray:
    """The region holds one frame of the run while the face moves."""
    return np.full(t, int(rng.integers(n)))


def _retime_map(rng: np.random.Generator, n: int, off: int, t: int, cfg: TemporalConfig) -> np.ndarray:
    """The region plays ``v`` times faster or slower (``v`` from ``speed_range``), from a nearby start."""
    v = float(rng.uniform(*cfg.speed_range))
    v = v if rng.random() < 0.5 else 1.0 / v
    start = off + int(rng.integers(-(cfg.max_shift // 2), cfg.max_shift // 2 + 1))
    return _reflect(np.round(start + v * np.arange(t)).astype(int), n)


TIME_MAPS: dict[str, Callable[[np.random.Generator, int, int, int, TemporalConfig], np.ndarray]] = {
    "shift": _shift_map, "reverse": _reverse_map, "freeze": _freeze_map, "retime": _retime_map,
}


def _translate(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[y, x] = img[y - dy, x - dx]`` (integer shift, edges repeated): no resampling."""
    h, w = img.shape[:2]
    ys = np.clip(np.arange(h) - dy, 0, h - 1)
    xs = np.clip(np.arange(w) - dx, 0, w - 1)
    return img[ys][:, xs]


def _mask_draw(rng: np.random.Generator, lo: int, hi: int, scale: float) -> tuple[int, int, float, bool]:
    """SBI's soft-mask parameters: two odd kernels, the second blur's sigma, erode or dilate."""
    k1, k2 = _odd(rng, lo, hi, scale), _odd(rng, lo, hi, scale)
    sigma2 = float(rng.integers(5, 46)) * scale
    return k1, k2, sigma2, bool(rng.random() < 0.5)


# --------------------------------------------------------------------------- the kinds
def region_retime(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, cfg: TemporalConfig,
                  sbi: SBIConfig, ctx: ClipContext, transform: A.Compose | None = None) -> TemporalResult | None:
    """A facial region shows another time of the run (see the module docstring).

    Returns ``None`` (after drawing every parameter) when the region barely changes — a still
    region, or a time map that is the identity on this clip — so a fake label is never put on a
    clip that looks like its real.
    """
    t, h, w, _ = frames.shape
    n = len(ctx.frames)
    scale = min(h, w) / REF_SIZE
    region = cfg.regions[int(rng.integers(len(cfg.regions)))]
    mode = cfg.time_maps[int(rng.integers(len(cfg.time_maps)))]
    src = TIME_MAPS[mode](rng, n, ctx.offset, t, cfg)
    k1, k2, sigma2, dilate = _mask_draw(rng, *cfg.blur_kernels, scale)
    params = {"region": region, "time_map": mode, "source_frames": src.tolist(), "k1": k1, "k2": k2,
              "sigma2": sigma2, "dilate": dilate}

    dst = ctx.offset + np.arange(t)
    lms = smooth_landmarks(ctx.landmarks, sbi.landmark_sigma)
    moved = np.empty_like(frames)
    masks = np.zeros((t, h, w), np.float32)
    shifts = np.zeros((t, 2), int)
    for i in range(t):
        if src[i] == dst[i]:                   # this frame shows its own time: nothing is changed
            moved[i] = frames[i]
            continue
        here, there = REGIONS[region](lms[dst[i]]), REGIONS[region](lms[src[i]])
        d = np.round(np.concatenate(here).mean(0) - np.concatenate(there).mean(0)).astype(int)
        shifts[i] = d
        hull = np.maximum(_region_mask(here, (h, w)), _region_mask([p + d for p in there], (h, w)))
        masks[i] = blur_mask(hull, k1, k2, dilate, sigma2)
        moved[i] = _translate(ctx.frames[src[i]], int(d[0]), int(d[1]))
    params["shifts"] = shifts.tolist()
    fake = blend(frames, moved, masks, 1.0)
    changed = masks.reshape(t, -1).max(1) > 0
    if not changed.any():
        return None
    core = masks >= 0.95 * masks.max()
    change = float(np.abs(_gray(fake) - _gray(frames))[core].mean())
    params["change"] = change
    if change < cfg.min_change:
        return None
    return TemporalResult("region_retime", fake, np.ascontiguousarray(frames), masks,
                          changed.astype(np.float32), params)


def _rise(rng: np.random.Generator, t: int) -> np.ndarray:
    """0 at the first frame, smooth step up (random onset and length)."""
    u = np.linspace(0.0, 1.0, t)
    a, width = rng.uniform(0.0, 0.5), rng.uniform(0.3, 1.0)
    x = np.clip((u - a) / width, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _fall(rng: np.random.Generator, t: int) -> np.ndarray:
    """A rise played backwards: 0 at the last frame."""
    return _rise(rng, t)[::-1].copy()


def _pulse(rng: np.random.Generator, t: int) -> np.ndarray:
    """0 at both ends, a bump in between (random sharpness)."""
    return np.sin(np.pi * np.linspace(0.0, 1.0, t)) ** rng.uniform(0.5, 2.0)


def _dip(rng: np.random.Generator, t: int) -> np.ndarray:
    """Full blend except a dip to 0 at a random frame (random width)."""
    u = np.linspace(0.0, 1.0, t)
    c = u[int(rng.integers(t))]
    return 1.0 - np.exp(-(((u - c) / rng.uniform(0.15, 0.4)) ** 2))


RAMPS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "rise": _rise, "fall": _fall, "pulse": _pulse, "dip": _dip,
}


def blend_ramp(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, cfg: TemporalConfig,
               sbi: SBIConfig, ctx: ClipContext, transform: A.Compose | None = None) -> TemporalResult | None:
    """A Video-SBI fake whose blend ratio follows a curve over the clip, one frame at exactly 0.

    ``None`` for one-frame clips (no curve over time). The SBI draws follow the ramp's draws, all
    from the clip's generator; the SBI blend ratio is the curve's peak.
    """
    t = len(frames)
    name = cfg.ramps[int(rng.integers(len(cfg.ramps)))]
    curve = RAMPS[name](rng, t)
    if t < 2 or curve.max() <= 0:
        return None
    curve = (curve / curve.max()).astype(np.float32)
    curve[curve < 1e-3] = 0.0
    res = self_blend_clip(frames, landmarks, rng, sbi, transform, frame_ratio=curve)
    target = res.mask.reshape(t, -1).max(1).astype(np.float32)
    return TemporalResult("blend_ramp", res.fake, res.real, res.mask, target,
                          {"ramp": name, "curve": curve.tolist(), "peak_ratio": float(target.max())})


def feature_drift(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, cfg: TemporalConfig,
                  sbi: SBIConfig, ctx: ClipContext, transform: A.Compose | None = None) -> TemporalResult:
    """Each frame blended with a copy of itself under a smooth warp that oscillates over the clip."""
    t, h, w, _ = frames.shape
    scale = min(h, w) / REF_SIZE
    variant = cfg.drift_hulls[int(rng.integers(len(cfg.drift_hulls)))]
    ratio = float(cfg.drift_ratios[int(rng.integers(len(cfg.drift_ratios)))])
    lo, hi = cfg.drift_amplitude
    amp = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * scale
    fields = [elastic_field(rng, (h, w), 1.0, cfg.drift_sigma * scale) for _ in range(cfg.drift_fields)]
    periods = rng.uniform(*cfg.drift_periods, cfg.drift_fields)
    phases = rng.uniform(0.0, 2 * np.pi, cfg.drift_fields)
    delta = rng.uniform(-0.5, 0.5, 2).astype(np.float32)    # the real's constant sub-pixel shift
    k1, k2, sigma2, dilate = _mask_draw(rng, *cfg.blur_kernels, scale)
    params = {"hull": variant, "ratio": ratio, "amplitude_px": amp, "periods": periods.tolist(),
              "phases": phases.tolist(), "delta": delta.tolist(), "k1": k1, "k2": k2, "sigma2": sigma2,
              "dilate": dilate}

    coef = np.sin(2 * np.pi * np.arange(t)[:, None] / periods[None] + phases[None])   # (T, K)
    lms = smooth_landmarks(landmarks, sbi.landmark_sigma)
    motion = face_motion(lms)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    bx, by = gx + delta[0], gy + delta[1]
    real = np.empty_like(frames)
    warped = np.empty_like(frames)
    masks = np.empty((t, h, w), np.float32)
    norm = np.float32(amp / np.sqrt(cfg.drift_fields))
    for i in range(t):
        real[i] = cv2.remap(frames[i], bx, by, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        e = sum(np.float32(coef[i, k]) * fields[k] for k in range(cfg.drift_fields)) * norm
        e = follow_face(e.astype(np.float32), motion[i])
        warped[i] = cv2.remap(frames[i], bx + e[..., 0], by + e[..., 1], cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT_101)
        masks[i] = blur_mask(hull_mask(lms[i] - delta, (h, w), variant), k1, k2, dilate, sigma2)
    fake = blend(real, warped, masks, ratio)
    params["coefficients"] = coef.tolist()
    return TemporalResult("feature_drift", fake, real, masks * ratio, np.full(t, ratio, np.float32), params)


TEMPORAL_KINDS: dict[str, Callable[..., TemporalResult | None]] = {
    "region_retime": region_retime, "blend_ramp": blend_ramp, "feature_drift": feature_drift,
}
assert tuple(TEMPORAL_KINDS) == TEMPORAL_FAKE_KINDS, "config.TEMPORAL_FAKE_KINDS must name these kinds"


def temporal_fake_clip(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                       cfg: TemporalConfig = TemporalConfig(), kind: str | None = None, sbi: SBIConfig = SBIConfig(),
                       context: ClipContext | None = None, transform: A.Compose | None = None) -> TemporalResult | None:
    """The temporal pseudo-fake of a real clip.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB real clip.
        landmarks: ``(T, 68, 2)`` landmarks in the frames' pixels.
        rng: the clip's generator; every parameter is drawn from it once per clip.
        cfg: :class:`TemporalConfig`.
        kind: a key of :data:`TEMPORAL_KINDS`; drawn from ``cfg.kinds`` when ``None``.
        sbi: Video-SBI knobs (landmark smoothing; ``blend_ramp`` is a Video-SBI fake).
        context: the run the clip is cut from (``region_retime`` borrows other times of it);
            ``None`` = the clip alone.
        transform: optional prebuilt SBI source transform.

    Returns:
        :class:`TemporalResult`, or ``None`` when the kind declines the clip (then make a Video-SBI
        fake with the same generator).
    """
    t = len(frames)
    if landmarks.shape != (t, 68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2) = ({t}, 68, 2), got {landmarks.shape}")
    name = kind if kind is not None else cfg.kinds[int(rng.integers(len(cfg.kinds)))]
    if name not in TEMPORAL_KINDS:
        raise KeyError(f"unknown temporal fake kind '{name}' (known: {', '.join(TEMPORAL_KINDS)})")
    ctx = context if context is not None else ClipContext(frames, landmarks, 0)
    if ctx.offset < 0 or ctx.offset + t > len(ctx.frames) or ctx.frames.shape[1:] != frames.shape[1:]:
        raise ValueError(f"context of {ctx.frames.shape} at offset {ctx.offset} does not hold a clip of {frames.shape}")
    return TEMPORAL_KINDS[name](frames, landmarks, rng, cfg, sbi, ctx, transform)
