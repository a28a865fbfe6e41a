"""Image geometry of the demo manipulations: pure functions, arrays in, arrays out.

A piecewise-affine warp over a triangulation (how a graphics face swap moves a donor face onto the
target's landmarks), Reinhard colour transfer in Lab, the face-region masks the blends use, and an
exponential smoothing of landmark tracks over time (the stable look of an autoencoder swap).
"""
from __future__ import annotations

import cv2
import numpy as np

from stfmamba.data.faces import BROWS, JAW

__all__ = ["similarity", "apply_affine", "piecewise_affine", "colour_transfer", "hull_mask", "face_region",
           "skin_mask", "landmark_box", "ema_landmarks"]


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity transform mapping points ``src (K, 2)`` onto ``dst (K, 2)`` (least squares)."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    return m


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points ``(K, 2)`` through the 2x3 affine ``m``."""
    return pts @ m[:, :2].T + m[:, 2]


def piecewise_affine(src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
                     out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``src`` so that ``src_pts`` land on ``dst_pts``, triangle by triangle.

    Every destination triangle is rasterised with its index into an id map, each pixel takes its
    triangle's inverse affine map, and one ``cv2.remap`` samples the source (bilinear, edge
    replicated). Degenerate triangles (e.g. closed lips) are skipped.

    Args:
        src: ``(H, W, 3) uint8`` image to warp.
        src_pts, dst_pts: ``(K, 2)`` corresponding points.
        tris: ``(M, 3)`` triangle vertex indices.
        out: canvas ``(H', W', 3)`` to draw on (a black one the size of ``src`` by default).

    Returns:
        the canvas with every triangle drawn, and its ``(H', W') float32`` coverage mask (0 or 1).
    """
    canvas = np.zeros_like(src) if out is None else out.copy()
    h, w = canvas.shape[:2]
    ids = np.full((h, w), -1, np.int32)
    inv = np.zeros((len(tris), 2, 3), np.float32)
    for k, tri in enumerate(tris):
        s, d = src_pts[tri].astype(np.float32), dst_pts[tri].astype(np.float32)
        area = (d[1, 0] - d[0, 0]) * (d[2, 1] - d[0, 1]) - (d[2, 0] - d[0, 0]) * (d[1, 1] - d[0, 1])
        if abs(area) < 1.0:  # degenerate: nothing to draw, and its inverse explodes
            continue
        inv[k] = cv2.getAffineTransform(d, s)                  # destination pixel -> source pixel
        cv2.fillConvexPoly(ids, np.round(d * 16).astype(np.int32), int(k), cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(ids >= 0)
    if len(xs) == 0:
        return canvas, np.zeros((h, w), np.float32)
    a = inv[ids[ys, xs]]                                        # (P, 2, 3)
    map_x = np.full((h, w), -1.0, np.float32)
    map_y = np.full((h, w), -1.0, np.float32)
    map_x[ys, xs] = a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]
    map_y[ys, xs] = a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]
    warped = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cover = (ids >= 0).astype(np.float32)
    canvas[ys, xs] = warped[ys, xs]
    return canvas, cover


def colour_transfer(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer: match ``src``'s Lab mean/std inside ``mask`` to ``ref``'s."""
    sel = mask > 0.5
    if sel.sum() < 16:
        return src
    s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    sm, ss = s[sel].mean(0), s[sel].std(0) + 1e-3
    rm, rs = r[sel].mean(0), r[sel].std(0) + 1e-3
    out = (s - sm) * np.clip(rs / ss, 0.5, 2.0) + rm   # clamped: a pale donor must not explode
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def hull_mask(shape: tuple[int, int], pts: np.ndarray, erode: int = 0) -> np.ndarray:
    """``(H, W) uint8`` mask (0 / 255) of the convex hull of ``pts (K, 2)``, optionally eroded."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((erode, erode), np.uint8))
    return mask


def face_region(lm: np.ndarray) -> np.ndarray:
    """Outline of the swapped region: jaw plus brows raised a little (no forehead)."""
    brows = lm[BROWS].copy()
    brows[:, 1] -= 0.08 * (lm[:, 1].max() - lm[:, 1].min())
    return np.concatenate([lm[JAW], brows])


def skin_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Face hull minus eyes and mouth (where colour statistics describe the skin), in ``[0, 1]``."""
    mask = hull_mask(shape, face_region(lm), erode=3)
    iod = float(np.linalg.norm(lm[36] - lm[45]))
    k = max(int(iod * 0.15), 1)
    for part in (lm[36:42], lm[42:48], lm[48:60]):
        hole = cv2.dilate(hull_mask(shape, part), np.ones((k, k), np.uint8))
        mask[hole > 0] = 0
    return mask / 255.0


def landmark_box(lm: np.ndarray, shape: tuple[int, ...], pad: float) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1`` of the landmark box grown by ``pad`` x its larger side, clipped to ``shape``."""
    lo, hi = lm.min(0), lm.max(0)
    p = pad * (hi - lo).max()
    x0, y0 = np.floor(lo - p).astype(int)
    x1, y1 = np.ceil(hi + p).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])


def ema_landmarks(lms: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average over time of ``(T, 68, 2)`` landmarks, run forward then backward.

    (SBI's :func:`~stfmamba.data.sbi.smooth_landmarks` is a different smoother: Gaussian in time.)
    """
    out = lms.copy()
    for t in range(1, len(out)):
        out[t] = alpha * out[t - 1] + (1 - alpha) * out[t]
    for t in range(len(out) - 2, -1, -1):
        out[t] = alpha * out[t + 1] + (1 - alpha) * out[t]
    return out
