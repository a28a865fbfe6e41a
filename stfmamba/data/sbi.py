"""Self-Blended Images (SBI), written from the paper's description, extended to video clips.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022): a fake is made
from one real face by blending it with a slightly transformed copy of itself through a soft mask
built from the facial landmarks. The detector then has to find the generic artefacts of face
swapping (blending boundary, colour and sharpness mismatch, slight misalignment) instead of one
generator's fingerprint.

The steps of :func:`self_blend_clip`, as in the paper (Sec. 3):

1. **Source–target augmentation** (:func:`build_source_transform`): colour (RGB shift, hue /
   saturation / value, brightness / contrast), then down-scaling (linear down *and* up) *or*
   sharpening (lightness 1: no change of mean brightness). It is applied to the source with
   probability ½ and to the target otherwise; the target is what the dataset returns as the real
   clip, so no colour / sharpness / resampling statistic is a fake-only cue.
2. **Mask generation** (:func:`hull_mask`): one of SBI's landmark hulls (:data:`HULL_VARIANTS`).
3. **Source–mask geometry** (:func:`warp_maps`): the source *and* the mask go through the same
   random affine (translation x ±3 %, y ±1.5 %, scale 0.95–1/0.95) and the same elastic
   deformation, so the blended region is the shifted source's own face.
4. **Blending** (:func:`blur_mask`, :func:`blend`): the mask is blurred, thresholded so that the
   soft edge lies inside (erode) or outside (dilate) the hull, blurred again and renormalised;
   ``fake = r·mask·source + (1 − r·mask)·target`` with ``r`` from SBI's list.

Video: every random parameter is drawn once per clip from one ``numpy.random.Generator`` and
replayed on every frame. Masks follow each frame's landmarks after a temporal smoothing of the
clip's landmarks (:func:`smooth_landmarks`: detector jitter is not a cue of the fake); the elastic
and TPS fields are drawn in the first frame's face coordinates and moved with the face
(:func:`follow_face`). The V8 extras sit on top: a temporal drift of the mask
(:mod:`stfmamba.data.drift`) and an optional thin-plate-spline boundary deformation
(:func:`tps_field`, ``use_tps``), both on the mask only. Blending happens at the stored crop
resolution; the dataset resizes to the model size afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import albumentations as A
import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.ndimage import gaussian_filter1d

from stfmamba.data.drift import DRIFTS
from stfmamba.data.faces import BROWS, JAW, MOUTH, NOSE

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


def smooth_landmarks(landmarks: np.ndarray, sigma: float) -> np.ndarray:
    """Damp the frame-to-frame jitter of a clip's landmarks ``(T, 68, 2)``: Gaussian along time.

    ``sigma`` is in frames (0 = unchanged); the clip ends are padded by repetition.
    """
    if sigma <= 0 or len(landmarks) < 2:
        return np.asarray(landmarks, np.float32)
    return gaussian_filter1d(np.asarray(landmarks, np.float32), sigma, axis=0, mode="nearest")


# --------------------------------------------------------------------------- geometry
def elastic_field(rng: np.random.Generator, shape: tuple[int, int], std: float, sigma: float) -> np.ndarray:
    """A smooth random displacement field (elastic deformation, Simard et al. 2003).

    Gaussian white noise smoothed by a Gaussian of ``sigma`` px, scaled to a per-axis standard
    deviation of ``std`` px (SBI's ``ElasticTransform(alpha=50, sigma=7)`` on its 380 px crops
    gives about 2 px for sigma 7).

    Args:
        rng: random generator (one draw per clip).
        shape: ``(H, W)``.
        std: displacement standard deviation in pixels.
        sigma: Gaussian smoothing of the white-noise field, in pixels.

    Returns:
        ``(H, W, 2)`` float32 displacement (dx, dy) in pixels.
    """
    h, w = shape
    noise = rng.standard_normal(size=(h, w, 2)).astype(np.float32)
    field = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return field * (std / (field.std() + 1e-8))


def tps_field(rng: np.random.Generator, landmarks: np.ndarray, shape: tuple[int, int],
              amplitude: float, n_ctrl: int = 8) -> np.ndarray:
    """Thin-plate-spline displacement that moves the mask boundary (``use_tps``).

    Control points: ``n_ctrl`` points on the jaw/brow outline get random offsets of up to
    ``amplitude`` px; the image corners stay fixed. The spline interpolates a smooth field.

    Args:
        rng: random generator (one draw per clip).
        landmarks: ``(68, 2)`` reference landmarks (the clip's first frame).
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


def face_motion(landmarks: np.ndarray) -> np.ndarray:
    """Similarity motion of the face from frame 0 to every frame: ``(T, 2, 3)`` affine matrices.

    Translation = motion of the landmark centroid, scale = ratio of the RMS landmark spread (the
    crops are upright, rotation is left out).
    """
    c = landmarks.mean(1)                                                   # (T, 2)
    s = np.sqrt(((landmarks - c[:, None]) ** 2).sum(-1).mean(-1))           # (T,)
    k = s / max(float(s[0]), 1e-6)
    m = np.zeros((len(landmarks), 2, 3), np.float64)
    m[:, 0, 0] = m[:, 1, 1] = k
    m[:, :, 2] = c - k[:, None] * c[0]
    return m


def follow_face(field: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """A displacement field drawn in frame 0's coordinates, moved and scaled with the face.

    Args:
        field: ``(H, W, 2)`` displacement in frame 0.
        motion: ``(2, 3)`` similarity from frame 0 to this frame (:func:`face_motion`).

    Returns:
        ``(H, W, 2)`` float32 displacement in this frame.
    """
    h, w = field.shape[:2]
    moved = cv2.warpAffine(field, motion.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    return moved * np.float32(motion[0, 0])


def warp_maps(shape: tuple[int, int], affine: np.ndarray, field: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps of "affine, then elastic": ``out(x) = in(A⁻¹(x + e(x)))``.

    Args:
        shape: ``(H, W)``.
        affine: ``(2, 3)`` forward affine ``A`` (source → output pixels).
        field: ``(H, W, 2)`` elastic displacement ``e`` or ``None``.

    Returns:
        ``(map_x, map_y)``, each ``(H, W)`` float32.
    """
    h, w = shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    if field is not None:
        gx, gy = gx + field[..., 0], gy + field[..., 1]
    inv = cv2.invertAffineTransform(affine.astype(np.float64)).astype(np.float32)
    return inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2], inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]


def random_affine(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """SBI's source affine: translation x ±3 %, y ±1.5 % of the side, scale 0.95–1/0.95 about the centre.

    Returns:
        ``(2, 3)`` float64 forward matrix.
    """
    h, w = shape
    s = rng.uniform(0.95, 1.0 / 0.95)
    tx, ty = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.015, 0.015) * h
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return np.array([[s, 0.0, cx - s * cx + tx], [0.0, s, cy - s * cy + ty]])


# --------------------------------------------------------------------------- mask blur
def blur_mask(mask: np.ndarray, k1: int, k2: int, dilate: bool = False, sigma2: float = 0.0) -> np.ndarray:
    """SBI's soft mask: blur, threshold (erode or dilate), blur again, renormalise to [0, 1].

    The first Gaussian (kernel ``k1``) followed by a threshold moves the hull edge by about
    ``k1 / 2`` px: inward when only fully covered pixels are kept (erode, SBI's choice), outward
    when every touched pixel is kept (dilate). The second Gaussian (kernel ``k2``, ``sigma2``; 0 =
    OpenCV's default for the kernel) makes the soft edge.

    Args:
        mask: ``(H, W)`` float in [0, 1].
        k1: first kernel size (made odd).
        k2: second kernel size (made odd).
        dilate: soft edge outside (True) or inside (False) the hull.
        sigma2: Gaussian sigma of the second blur in px.

    Returns:
        ``(H, W)`` float32 in [0, 1].
    """
    m = cv2.GaussianBlur(mask.astype(np.float32), (int(k1) | 1, int(k1) | 1), 0)
    peak = m.max()
    if peak <= 0:
        return m
    m = m / peak
    m = (m > 1e-3).astype(np.float32) if dilate else (m >= 1.0 - 1e-4).astype(np.float32)
    m = cv2.GaussianBlur(m, (int(k2) | 1, int(k2) | 1), float(sigma2))
    peak = m.max()
    return np.clip(m / peak, 0.0, 1.0) if peak > 0 else m


# --------------------------------------------------------------------------- colour + blend
def build_source_transform() -> A.Compose:
    """SBI's source–target transform: colour, then linear down-scaling *or* brightness-neutral sharpening.

    Moderate colour changes, symmetric in sign; ``Downscale`` resamples linearly both ways (the
    albumentations default, nearest / nearest, leaves duplicated pixel columns no real swap has);
    ``Sharpen`` with lightness 1 keeps the mean brightness. Call with ``images=(T, H, W, 3)`` after
    ``set_random_seed(clip_seed)``: one parameter set for every frame.
    """
    linear = {"downscale": cv2.INTER_LINEAR, "upscale": cv2.INTER_LINEAR}
    return A.Compose([
        A.RGBShift(r_shift_limit=20, g_shift_limit=20, b_shift_limit=20, p=0.3),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=10, p=0.3),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=1.0),
        A.OneOf([A.Downscale(scale_range=(0.5, 0.9), interpolation_pair=linear, p=1.0),
                 A.Sharpen(alpha=(0.2, 0.5), lightness=(1.0, 1.0), p=1.0)], p=1.0),
    ])


def source_transform(frames: np.ndarray, seed: int, transform: A.Compose | None = None) -> np.ndarray:
    """The colour / sharpness transformed clip; the same transform for every frame.

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


def blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray, ratio: float | np.ndarray) -> np.ndarray:
    """``fake = ratio·mask·source + (1 − ratio·mask)·target``.

    Args:
        target: ``(..., H, W, 3)`` uint8, the real frames.
        source: same shape, the transformed frames.
        mask: ``(..., H, W)`` float in [0, 1].
        ratio: blend ratio in [0, 1]; a scalar, or one per frame (``(N,)`` for the ``N`` frames).

    Returns:
        uint8 array like ``target``.
    """
    t_ = target.reshape((-1,) + target.shape[-3:])            # (N, H, W, 3)
    s_ = source.reshape(t_.shape)
    m_ = mask.reshape((-1,) + mask.shape[-2:])
    ratios = np.broadcast_to(np.asarray(ratio, np.float64), (len(t_),))
    out = np.empty_like(t_)
    for i in range(len(t_)):                                   # OpenCV per frame: ~10x faster than numpy floats
        w = np.ascontiguousarray(m_[i] * float(ratios[i]), dtype=np.float32)   # a Python float: float32 maths
        out[i] = cv2.blendLinear(np.ascontiguousarray(s_[i]), np.ascontiguousarray(t_[i]), w, 1.0 - w)
    return out.reshape(target.shape)


# --------------------------------------------------------------------------- video SBI
@dataclass(frozen=True)
class SBIConfig:
    """Knobs of Video-SBI (defaults follow the SBI paper, pixel sizes relative to a REF_SIZE = 224 px crop)."""
    hull_variants: tuple[str, ...] = ("facehull", "extended", "inner", "components")
    blend_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # SBI's sampled ratios
    source_aug_prob: float = 0.5     # colour transform on the source (else on the target), SBI: 0.5
    elastic_prob: float = 1.0        # elastic deformation of source + mask (SBI: always)
    elastic_std: float = 1.2         # px, per-axis displacement std (SBI: ~2 px at 380 px)
    elastic_sigma: float = 4.0       # px, smoothness of the elastic field (SBI: 7 at 380 px)
    blur_kernels: tuple[int, int] = (5, 25)   # SBI's odd kernel range of both mask blurs
    landmark_sigma: float = 1.0      # frames, temporal smoothing of the clip's landmarks (0 = off)
    drift: str = "brownian"          # key of stfmamba.data.drift.DRIFTS ("brownian" V7.3, "multiscale" V8)
    use_tps: bool = False            # thin-plate-spline boundary deformation of the mask (V8)
    tps_amplitude: float = 6.0       # px at 224 px crops


@dataclass
class SBIResult:
    fake: np.ndarray    # (T, H, W, 3) uint8
    mask: np.ndarray    # (T, H, W) float32, the effective blend mask (ratio applied)
    drift: np.ndarray   # (T, 2) float32 per-frame mask offset in px
    real: np.ndarray | None = None  # (T, H, W, 3) uint8, the target the fake was blended onto (the real clip)


def _odd(rng: np.random.Generator, lo: int, hi: int, scale: float) -> int:
    """An odd kernel size drawn like SBI's ``randrange(lo, hi + 1, 2)``, scaled to the crop (≥ 3)."""
    k = int(rng.integers(lo // 2, hi // 2 + 1)) * 2 + 1
    return max(3, int(round(k * scale)) | 1)


def self_blend_clip(frames: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                    cfg: SBIConfig = SBIConfig(), transform: A.Compose | None = None,
                    frame_ratio: np.ndarray | None = None) -> SBIResult:
    """Make the self-blended fake of a real clip.

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB real clip.
        landmarks: ``(T, 68, 2)`` float landmarks in the frames' pixel coordinates.
        rng: the clip's generator: every random choice below is drawn from it once per clip.
        cfg: :class:`SBIConfig`.
        transform: optional prebuilt :func:`build_source_transform` (saves rebuilding it per clip).
        frame_ratio: optional ``(T,)`` factors in [0, 1] on the drawn blend ratio, one per frame
            (the temporal family's ``blend_ramp``, :mod:`stfmamba.data.temporal`); ``None`` = 1
            everywhere (Video-SBI). It draws nothing: the random draws are the same either way.

    Returns:
        :class:`SBIResult`: the fake clip, the effective mask per frame, the drift per frame and
        the real clip it pairs with (``frames``, or ``frames`` after the colour transform when the
        target took it); outside the mask the fake equals that real clip exactly.
    """
    t, h, w, _ = frames.shape
    if landmarks.shape != (t, 68, 2):
        raise ValueError(f"landmarks must be (T, 68, 2) = ({t}, 68, 2), got {landmarks.shape}")
    scale = min(h, w) / REF_SIZE
    # ---- every random draw of the clip, once
    variant = cfg.hull_variants[int(rng.integers(len(cfg.hull_variants)))]
    ratio = float(cfg.blend_ratios[int(rng.integers(len(cfg.blend_ratios)))])
    on_source = rng.random() < cfg.source_aug_prob
    colour_seed = int(rng.integers(2**31 - 1))
    affine = random_affine(rng, (h, w))
    field = None
    if rng.random() < cfg.elastic_prob:
        field = elastic_field(rng, (h, w), cfg.elastic_std * scale, cfg.elastic_sigma * scale)
    lms = smooth_landmarks(landmarks, cfg.landmark_sigma)
    tps = tps_field(rng, lms[0], (h, w), cfg.tps_amplitude * scale) if cfg.use_tps else None
    k_lo, k_hi = cfg.blur_kernels
    k1, k2 = _odd(rng, k_lo, k_hi, scale), _odd(rng, k_lo, k_hi, scale)
    sigma2 = float(rng.integers(5, 46)) * scale           # SBI: randint(5, 46) for the second blur
    dilate = bool(rng.random() < 0.5)
    drift = DRIFTS[cfg.drift](rng, t, scale).astype(np.float32)  # (T, 2)

    # ---- source-target augmentation: one side gets the colour / sharpness change
    coloured = source_transform(frames, colour_seed, transform)
    source, target = (coloured, frames) if on_source else (frames, coloured)
    motion = face_motion(lms) if (field is not None or tps is not None) else None

    warped = target.copy()                                   # outside the mask the source is never used
    masks = np.empty((t, h, w), np.float32)
    reach = (k1 + k2) // 2 + 2                               # how far the blur moves the hull edge outward
    for i in range(t):
        m = hull_mask(lms[i] + drift[i], (h, w), variant)
        if tps is not None:                                  # V8: boundary deformation of the mask only
            mx, my = warp_maps((h, w), np.eye(2, 3), follow_face(tps, motion[i]))
            m = cv2.remap(m, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        e = follow_face(field, motion[i]) if field is not None else None
        mx, my = warp_maps((h, w), affine, e)                # source and mask: same affine + elastic
        m = cv2.remap(m, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        masks[i] = blur_mask(m, k1, k2, dilate, sigma2)
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        if len(ys):                                          # resample the source only around the face
            roi = (slice(max(ys[0] - reach, 0), ys[-1] + reach + 1), slice(max(xs[0] - reach, 0), xs[-1] + reach + 1))
            warped[i][roi] = cv2.remap(source[i], mx[roi], my[roi], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if frame_ratio is not None:                              # per-frame blend ratio (temporal blend_ramp)
        ratio = ratio * np.asarray(frame_ratio, np.float32).reshape(t)
        fake = blend(target, warped, masks, ratio)
        return SBIResult(fake=fake, mask=masks * ratio[:, None, None], drift=drift, real=np.ascontiguousarray(target))
    fake = blend(target, warped, masks, ratio)
    return SBIResult(fake=fake, mask=masks * ratio, drift=drift, real=np.ascontiguousarray(target))


# --------------------------------------------------------------------------- shortcut audit
TEXTURE_STEP = 12.0   # luma levels: a pixel pair counts as "in texture" above this 4-pixel step


def _gray(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB -> ``(T, H, W)`` float32 luma (BT.601)."""
    return frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def pair_statistics(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Low-level statistics of a real clip and its fake inside the blended face (the shortcut audit).

    The face region is where the effective mask is at least 95 % of its maximum: the same pixels in
    both clips.

    Args:
        real: ``(T, H, W, 3)`` uint8.
        fake: ``(T, H, W, 3)`` uint8.
        mask: ``(T, H, W)`` effective blend mask.

    Returns:
        Per clip, ``{real,fake}_{dup,block,lap,bright,noise}`` over the face region: ``dup`` the
        fraction of horizontally or vertically adjacent pixel pairs with identical RGB among the
        pairs in texture (luma step > ``TEXTURE_STEP`` across the four pixels around the pair):
        nearest-neighbour up-sampling duplicates pixels there, smooth interpolation does not; ``block`` 8×8 blockiness, the mean absolute luma
        step across pixel boundaries at multiples of 8 over the mean step elsewhere (1 = none);
        ``lap`` the variance of the luma Laplacian (sharpness); ``bright`` the mean luma; ``noise``
        the mean absolute residual of a 3×3 median filter (luma).
    """
    core = mask >= 0.95 * mask.max()
    pair_x, pair_y = core[:, :, 1:] & core[:, :, :-1], core[:, 1:] & core[:, :-1]
    on_x = np.broadcast_to((np.arange(pair_x.shape[2]) % 8) == 7, pair_x.shape)   # step k: pixels k, k+1
    on_y = np.broadcast_to(((np.arange(pair_y.shape[1]) % 8) == 7)[:, None], pair_y.shape)
    out = {}
    for name, clip in (("real", real), ("fake", fake)):
        c = clip.astype(np.int16)
        g = _gray(clip)
        # pairs (k, k+1) in texture: luma changes by > TEXTURE_STEP from pixel k-1 to k+2
        tex_x = np.zeros_like(pair_x)
        tex_x[:, :, 1:-1] = np.abs(g[:, :, 3:] - g[:, :, :-3]) > TEXTURE_STEP
        tex_y = np.zeros_like(pair_y)
        tex_y[:, 1:-1] = np.abs(g[:, 3:] - g[:, :-3]) > TEXTURE_STEP
        same_x = (c[:, :, 1:] == c[:, :, :-1]).all(-1) & pair_x & tex_x
        same_y = (c[:, 1:] == c[:, :-1]).all(-1) & pair_y & tex_y
        dx, dy = np.abs(np.diff(g, axis=2)), np.abs(np.diff(g, axis=1))
        steps_on = np.concatenate([dx[pair_x & on_x], dy[pair_y & on_y]])
        steps_off = np.concatenate([dx[pair_x & ~on_x], dy[pair_y & ~on_y]])
        lap = np.stack([cv2.Laplacian(f, cv2.CV_32F, ksize=1) for f in g])
        med = _gray(np.stack([cv2.medianBlur(f, 3) for f in clip]))
        n_tex = (pair_x & tex_x).sum() + (pair_y & tex_y).sum()
        out[f"{name}_dup"] = float((same_x.sum() + same_y.sum()) / max(n_tex, 1))
        out[f"{name}_block"] = float(steps_on.mean() / (steps_off.mean() + 1e-6))
        out[f"{name}_lap"] = float(lap[core].var())
        out[f"{name}_bright"] = float(g[core].mean())
        out[f"{name}_noise"] = float(np.abs(g - med)[core].mean())
    return out


def temporal_statistics(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Temporal-difference energy of a real clip and its fake, outside and inside the blend mask.

    A fake must not flicker where it is not manipulated: outside the mask its frame-to-frame
    change has to be the real's (for the fakes of this package it is the same pixels, so the
    energies are equal exactly); inside, a temporal fake is meant to move differently.

    Args:
        real: ``(T, H, W, 3)`` uint8, ``T >= 2``.
        fake: ``(T, H, W, 3)`` uint8.
        mask: ``(T, H, W)`` effective blend mask.

    Returns:
        ``{real,fake}_tdiff_out``: mean squared luma change between consecutive frames over the pixels
        outside the (1 px dilated) mask of both frames; ``{real,fake}_tdiff_in``: the same over the
        face core (mask ≥ 95 % of its maximum in both frames; NaN when there is none). NaN for one frame.
    """
    if len(real) < 2:
        return {f"{n}_tdiff_{w}": float("nan") for n in ("real", "fake") for w in ("out", "in")}
    touched = np.stack([cv2.dilate((m > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in mask])
    out_px = ~(touched[1:] | touched[:-1])
    core = mask >= 0.95 * mask.max() if mask.max() > 0 else np.zeros(mask.shape, bool)
    in_px = core[1:] & core[:-1]
    res = {}
    for name, clip in (("real", real), ("fake", fake)):
        d2 = np.diff(_gray(clip), axis=0) ** 2                     # (T-1, H, W)
        res[f"{name}_tdiff_out"] = float(d2[out_px].mean()) if out_px.any() else float("nan")
        res[f"{name}_tdiff_in"] = float(d2[in_px].mean()) if in_px.any() else float("nan")
    return res
