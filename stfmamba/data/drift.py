"""Temporal drift of the blend mask across a clip.

A real face swap re-estimates its mask on every frame, so the blending boundary jitters and
slides relative to the face. Video-SBI imitates that by offsetting each frame's landmark hull:

* ``brownian`` (V7.3): a random walk, each axis clamped to ±2 px.
* ``multiscale`` (V8 ``use_multiscale_drift``): one of four motion profiles (smooth, jittery,
  accelerating, oscillating — registry :data:`PROFILES`) with per-frame step sizes from a
  log-normal clipped to 0.5–5 px, integrated with mean reversion (an AR(1) pull back to the
  landmarks, so the offset does not wander off), rescaled to a per-clip magnitude (RMS over the
  clip, log-normal, median 2 px, clipped to 0.5–5 px) and softly bounded by ``cap_px``
  (``cap·tanh(‖o‖/cap)``: near-identity below the cap, never above it). Typical offsets are a few
  px at 224 px; the cap is a bound, not where the offset sits.

Every function takes ``(rng, num_frames, scale)`` and returns ``(num_frames, 2)`` float offsets
(dx, dy) in pixels; ``scale`` = crop side / 224 (the pixel amounts are for 224 px crops). Frame 0
has offset 0: drift is relative to the clip's first frame.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

BROWNIAN_CLAMP_PX = 2.0      # V7.3 bound per axis
BROWNIAN_STEP_PX = 0.7       # std of one Brownian step per axis
STEP_MIN_PX, STEP_MAX_PX = 0.5, 5.0   # V8 log-normal step range
STEP_LOG_MEAN, STEP_LOG_STD = np.log(1.2), 0.6
MAG_MIN_PX, MAG_MAX_PX = 0.5, 5.0     # V8 per-clip RMS offset range
MAG_LOG_MEAN, MAG_LOG_STD = np.log(2.0), 0.5
REVERSION = 0.15             # V8 AR(1) pull back towards 0 per frame (offset *= 1 - REVERSION)
CAP_PX = 8.0                 # V8 bound on the offset norm (soft: cap * tanh(norm / cap))


def brownian_drift(rng: np.random.Generator, num_frames: int, scale: float = 1.0) -> np.ndarray:
    """V7.3 Brownian drift: Gaussian steps, each axis clamped to ±2 px (scaled)."""
    clamp = BROWNIAN_CLAMP_PX * scale
    out = np.zeros((num_frames, 2), np.float64)
    for t in range(1, num_frames):
        out[t] = np.clip(out[t - 1] + rng.normal(0.0, BROWNIAN_STEP_PX * scale, 2), -clamp, clamp)
    return out


def _unit(angle: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angle), np.sin(angle)], -1)


def _smooth(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """Slowly turning direction: a steady slide."""
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.2, len(steps)))
    return _unit(angle) * steps[:, None]


def _jittery(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """A fresh random direction each frame: boundary jitter."""
    return _unit(rng.uniform(0, 2 * np.pi, len(steps))) * steps[:, None]


def _accelerating(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """Fixed direction, steps growing linearly over the clip."""
    ramp = np.linspace(1.0 / len(steps), 1.0, len(steps))
    return _unit(np.full(len(steps), rng.uniform(0, 2 * np.pi))) * (steps * ramp)[:, None]


def _oscillating(rng: np.random.Generator, steps: np.ndarray) -> np.ndarray:
    """Back and forth along one axis with a random period of 4–12 frames."""
    period = rng.uniform(4, 12)
    phase = np.sign(np.sin(2 * np.pi * np.arange(len(steps)) / period + rng.uniform(0, 2 * np.pi)))
    return _unit(np.full(len(steps), rng.uniform(0, 2 * np.pi))) * (steps * phase)[:, None]


PROFILES: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "smooth": _smooth, "jittery": _jittery, "accelerating": _accelerating, "oscillating": _oscillating,
}


def cap_offsets(offsets: np.ndarray, cap: float) -> np.ndarray:
    """Softly bound offsets ``(T, 2)``: the norm becomes ``cap·tanh(‖o‖/cap)`` (direction kept)."""
    norm = np.linalg.norm(offsets, axis=-1, keepdims=True)
    return offsets * (cap * np.tanh(norm / cap) / np.maximum(norm, 1e-12))


def multiscale_drift(rng: np.random.Generator, num_frames: int, scale: float = 1.0,
                     profile: str | None = None, cap_px: float = CAP_PX) -> np.ndarray:
    """V8 multi-scale drift: a bounded, mean-reverting offset of a few px with a random motion profile.

    Args:
        rng: the clip's generator.
        num_frames: T.
        scale: crop side / 224.
        profile: a key of :data:`PROFILES`; drawn at random when ``None``.
        cap_px: bound on the offset norm (px at 224).

    Returns:
        ``(T, 2)`` offsets, ``offsets[0] == 0`` and ``‖offsets[t]‖ < cap_px·scale``.
    """
    name = profile or list(PROFILES)[int(rng.integers(len(PROFILES)))]
    magnitude = float(np.clip(rng.lognormal(MAG_LOG_MEAN, MAG_LOG_STD), MAG_MIN_PX, MAG_MAX_PX))
    offsets = np.zeros((num_frames, 2))
    if num_frames < 2:
        return offsets
    steps = np.clip(rng.lognormal(STEP_LOG_MEAN, STEP_LOG_STD, num_frames - 1), STEP_MIN_PX, STEP_MAX_PX)
    deltas = PROFILES[name](rng, steps)
    for t in range(1, num_frames):                     # AR(1): integrate the steps, pull back towards 0
        offsets[t] = (1.0 - REVERSION) * offsets[t - 1] + deltas[t - 1]
    rms = np.sqrt((offsets[1:] ** 2).sum(-1).mean())
    offsets *= magnitude / max(rms, 1e-9)
    return cap_offsets(offsets, cap_px) * scale


def no_drift(rng: np.random.Generator, num_frames: int, scale: float = 1.0) -> np.ndarray:
    """The mask follows the landmarks exactly."""
    return np.zeros((num_frames, 2), np.float64)


DRIFTS: dict[str, Callable[[np.random.Generator, int, float], np.ndarray]] = {
    "none": no_drift, "brownian": brownian_drift, "multiscale": multiscale_drift,
}
