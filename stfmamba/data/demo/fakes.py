"""The four demo manipulations: toy-scale re-implementations of the techniques behind FF++'s methods.

They are named ``Demo*`` so no number computed on them is mistaken for an FF++ number:

* ``DemoSwapFlicker`` — graphics face swap (FaceSwap-like): a donor still is warped onto every
  frame's 68 landmarks by a piecewise-affine map over a Delaunay triangulation, colour-matched
  (Reinhard statistics in Lab) and Poisson-blended (``cv2.seamlessClone``) frame by frame, so the
  per-frame landmark jitter becomes boundary flicker.
* ``DemoSwapAE`` — the same swap rendered at 64 px in an aligned face crop, upsampled and alpha
  blended with a feathered hull mask, with temporally smoothed landmarks (autoencoder-like: soft,
  blurry, stable).
* ``DemoReenact`` — within-identity reenactment (Face2Face-like): the mouth and jaw landmarks
  follow another clip of the same person (motion transferred in a similarity-normalised frame) and
  the frame is warped piecewise-affinely to them.
* ``DemoMouthTex`` — re-rendered mouth texture (NeuralTextures-like): the mouth region is replaced
  by the mouth texture of another clip of the same person, warped onto the current lip landmarks,
  low-pass "rendered" and blended.

Every manipulation is pure (arrays in, arrays out) and registered by name in :data:`DEMO_METHODS`
(registration order is the order :func:`~stfmamba.data.demo.cut.build_demo` writes them in).
:func:`load_donor` and :func:`track_landmarks` prepare their inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from scipy.spatial import Delaunay

from stfmamba.data.demo.geometry import (apply_affine, colour_transfer, ema_landmarks, face_region, hull_mask,
                                         landmark_box, piecewise_affine, similarity, skin_mask)
from stfmamba.data.faces import MOUTH, RunTracker, detect_faces, landmarks, pick_face

__all__ = ["Donor", "DEMO_METHODS", "register_method", "swap_flicker", "swap_ae", "reenact", "mouth_texture",
           "track_landmarks", "load_donor"]

STABLE = [27, 28, 29, 30, 31, 35, 36, 39, 42, 45]          # points that barely move when talking
LOWER = list(range(5, 12)) + MOUTH                          # reenacted: chin and mouth
MAX_SHIFT = 0.2                                             # reenactment displacement cap (x inter-ocular)


@dataclass
class Donor:
    """A donor face: still image ``(H, W, 3)``, its landmarks ``(68, 2)`` and triangulation ``(M, 3)``."""
    image: np.ndarray
    lm: np.ndarray
    tris: np.ndarray


# method name -> fn(frames (T,H,W,3), lms (T,68,2), donor, driver_lms (T,68,2), driver_frames) -> frames
DEMO_METHODS: dict[str, Callable[..., np.ndarray]] = {}


def register_method(name: str) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        DEMO_METHODS[name] = fn
        return fn
    return deco


@register_method("DemoSwapFlicker")
def swap_flicker(frames: np.ndarray, lms: np.ndarray, donor: Donor, **_: object) -> np.ndarray:
    """Per-frame landmark-triangulated face swap with colour transfer and Poisson blending."""
    out = frames.copy()
    for t, (frame, lm) in enumerate(zip(frames, lms)):
        x0, y0, x1, y1 = landmark_box(lm, frame.shape, 0.15)
        roi = frame[y0:y1, x0:x1]
        dst = lm - [x0, y0]
        warped, cover = piecewise_affine(donor.image, donor.lm, dst, donor.tris, out=np.zeros_like(roi))
        region = hull_mask(roi.shape[:2], face_region(dst), erode=3)
        mask = np.where(cover > 0.99, region, 0).astype(np.uint8)
        if mask.sum() == 0:
            continue
        warped = colour_transfer(warped, roi, skin_mask(roi.shape[:2], dst) * (cover > 0.99))
        bx, by, bw, bh = cv2.boundingRect(mask)
        pad = 2  # seamlessClone needs the mask strictly inside the destination
        big = cv2.copyMakeBorder(roi, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        src = cv2.copyMakeBorder(warped, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        msk = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        centre = (bx + pad + bw // 2, by + pad + bh // 2)
        blended = cv2.seamlessClone(src, big, msk, centre, cv2.NORMAL_CLONE)
        out[t, y0:y1, x0:x1] = blended[pad:-pad, pad:-pad]
    return out


@register_method("DemoSwapAE")
def swap_ae(frames: np.ndarray, lms: np.ndarray, donor: Donor, render_px: int = 64, **_: object) -> np.ndarray:
    """The swap rendered at ``render_px`` in an aligned crop, upsampled, feathered alpha blend."""
    out = frames.copy()
    lms = ema_landmarks(lms, 0.6)
    for t, (frame, lm) in enumerate(zip(frames, lms)):
        lo, hi = lm.min(0), lm.max(0)
        side = float((hi - lo).max()) * 1.4
        c = (lo + hi) / 2
        org = c - side / 2
        k = render_px / side
        small_lm = (lm - org) * k
        m = np.float32([[k, 0, -org[0] * k], [0, k, -org[1] * k]])
        target_small = cv2.warpAffine(frame, m, (render_px, render_px), flags=cv2.INTER_AREA,
                                      borderMode=cv2.BORDER_REFLECT_101)
        face, cover = piecewise_affine(donor.image, donor.lm, small_lm, donor.tris, out=np.zeros_like(target_small))
        small_mask = (cover > 0.99).astype(np.float32) * (hull_mask(cover.shape, face_region(small_lm)) / 255.0)
        face = colour_transfer(face, target_small, skin_mask(cover.shape, small_lm) * (cover > 0.99))
        # back to frame resolution: the decoder's blur
        inv = cv2.invertAffineTransform(m)
        big = cv2.warpAffine(face, inv, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        big_mask = cv2.warpAffine(small_mask, inv, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)
        erode = max(3, int(side * 0.06)) | 1
        big_mask = cv2.erode(big_mask, np.ones((erode, erode), np.uint8))
        alpha = cv2.GaussianBlur(big_mask, (0, 0), sigmaX=max(side * 0.04, 1.0))[..., None]
        out[t] = (frame * (1 - alpha) + big * alpha).astype(np.uint8)
    return out


def _expression_transfer(lms: np.ndarray, driver: np.ndarray, idx: list[int]) -> np.ndarray:
    """Target landmarks whose ``idx`` points follow the driver's motion (similarity-normalised)."""
    ref = lms[:, STABLE].mean(0)
    t_norm = np.stack([apply_affine(similarity(l[STABLE], ref), l) for l in lms])
    d_norm = np.stack([apply_affine(similarity(l[STABLE], ref), l) for l in driver])  # same person: same ref
    new_norm = t_norm.copy()
    new_norm[:, idx] = t_norm[:, idx].mean(0) + (d_norm[:, idx] - d_norm[:, idx].mean(0))
    shift = new_norm - t_norm
    cap = MAX_SHIFT * np.linalg.norm(ref[STABLE.index(36)] - ref[STABLE.index(45)])
    norm = np.linalg.norm(shift, axis=-1, keepdims=True)
    new_norm = t_norm + shift * np.minimum(1.0, cap / np.maximum(norm, 1e-6))
    out = np.empty_like(lms)
    for t in range(len(lms)):
        back = cv2.invertAffineTransform(similarity(lms[t, STABLE], ref))
        out[t] = apply_affine(back, new_norm[t])
    return out


def _anchors(lm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Eight fixed points on the border of the face's surroundings: the warp leaves them in place."""
    x0, y0, x1, y1 = landmark_box(lm, shape, 0.25)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return np.float32([[x0, y0], [xm, y0], [x1 - 1, y0], [x1 - 1, ym], [x1 - 1, y1 - 1], [xm, y1 - 1],
                       [x0, y1 - 1], [x0, ym]])


@register_method("DemoReenact")
def reenact(frames: np.ndarray, lms: np.ndarray, driver_lms: np.ndarray, **_: object) -> np.ndarray:
    """Mouth and jaw warped piecewise-affinely to the motion of another clip of the same person."""
    lms = ema_landmarks(lms, 0.3)
    new = _expression_transfer(lms, ema_landmarks(driver_lms, 0.3), LOWER)
    out = frames.copy()
    for t, frame in enumerate(frames):
        anc = _anchors(lms[t], frame.shape)
        src = np.concatenate([lms[t], anc])
        dst = np.concatenate([new[t], anc])
        x0, y0 = anc.min(0).astype(int)
        x1, y1 = anc.max(0).astype(int) + 1
        roi = frame[y0:y1, x0:x1]
        warped, cover = piecewise_affine(roi, src - [x0, y0], dst - [x0, y0], Delaunay(dst).simplices, out=roi)
        out[t, y0:y1, x0:x1] = warped
    return out


@register_method("DemoMouthTex")
def mouth_texture(frames: np.ndarray, lms: np.ndarray, driver_lms: np.ndarray, driver_frames: np.ndarray,
                  **_: object) -> np.ndarray:
    """The mouth re-rendered with another clip's mouth texture on the current lip geometry."""
    pts = MOUTH + [31, 32, 33, 34, 35, 5, 6, 7, 8, 9, 10, 11]
    tris = Delaunay(lms[0, pts]).simplices
    out = frames.copy()
    for t, (frame, lm) in enumerate(zip(frames, lms)):
        d_lm = driver_lms[t % len(driver_lms)]
        x0, y0, x1, y1 = landmark_box(lm[pts], frame.shape, 0.2)
        roi = frame[y0:y1, x0:x1]
        tex, cover = piecewise_affine(driver_frames[t % len(driver_frames)], d_lm[pts], lm[pts] - [x0, y0], tris,
                                      out=np.zeros_like(roi))
        mouth = lm[MOUTH[:12]] - [x0, y0]
        centre = mouth.mean(0)
        mouth = centre + (mouth - centre) * 1.25          # lips plus a rim of skin
        mask = (hull_mask(roi.shape[:2], mouth) / 255.0) * (cover > 0.99)
        small = cv2.resize(tex, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)  # "rendered" texture
        tex = cv2.resize(cv2.bilateralFilter(small, 5, 30, 5), (tex.shape[1], tex.shape[0]), interpolation=cv2.INTER_LINEAR)
        tex = colour_transfer(tex, roi, mask)
        side = float(np.ptp(mouth[:, 0]))
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(side * 0.06, 1.0))[..., None]
        out[t, y0:y1, x0:x1] = (roi * (1 - alpha) + tex * alpha).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- inputs of the manipulations
def track_landmarks(frames: np.ndarray, detect_scale: float = 0.5, redetect_every: int = 30) -> np.ndarray:
    """68 landmarks ``(T, 68, 2)`` for every frame: detect every ``redetect_every`` frames, track between."""
    tracker = RunTracker(detect_scale, 80)
    return np.concatenate([tracker.run(frames[i:i + redetect_every])[0]
                           for i in range(0, len(frames), redetect_every)])


def load_donor(path: Path, face_px: int = 160) -> Donor:
    """A donor still, cropped around its face and resized so the landmark box is ``face_px`` wide."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    boxes = detect_faces(img, 1.0, 1)
    if len(boxes) == 0:
        raise RuntimeError(f"{path}: no face in donor still; remove it from data/demo/source/stills")
    lm = landmarks(img, pick_face(boxes))
    x0, y0, x1, y1 = landmark_box(lm, img.shape, 0.2)      # small images keep warps cheap
    k = face_px / float(np.ptp(lm[:, 0]))
    img = cv2.resize(img[y0:y1, x0:x1], None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    lm = (lm - [x0, y0]) * k
    return Donor(img, lm.astype(np.float32), Delaunay(lm).simplices)
