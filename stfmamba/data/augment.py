"""Augmentations common to the real clip and its fake (so no augmentation is ever a label cue).

* :func:`h264_roundtrip` — a real H.264 encode + decode of a whole clip at a fixed QP
  (``use_compression_aug``, QP drawn in ``[qp_min, qp_max]``), in process with libx264 through
  PyAV codec contexts (no container, no temp file). PyAV with libx264 is required (``pip install
  av``; its wheels bundle it); there is no fallback.
* :func:`build_pair_transform` — horizontal flip, colour jitter and JPEG with albumentations.
* :func:`scale_jitter` — a mild random zoom and shift of the face crop (a random resized crop, so
  the crop margin of one dataset or detector is not learned).
* ``downscale_before_codec`` — a pair shown at a lower resolution is JPEG / H.264 encoded at that
  size and scaled back up afterwards (a small face in a compressed video), instead of being scaled
  down and up before encoding at the crop size.
* :func:`augment_pair` — applies one set of parameters (one seed per clip pair) to the real and
  fake clip alike: the albumentations pass sees all ``2T`` frames at once (``images=``), and the
  H.264 pass encodes both clips at the same QP.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import albumentations as A
import cv2
import numpy as np

try:
    import av
except ImportError:  # pragma: no cover - a requirement; h264_roundtrip says how to install it
    av = None

H264_PRESET = "veryfast"   # x264 preset of the augmentation (speed vs realistic artefacts)


def _even_pad(frames: np.ndarray) -> tuple[np.ndarray, int, int]:
    """yuv420p needs even sides: pad by edge replication; returns the padded clip and the original H, W."""
    t, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames, h, w


def _check_libx264() -> None:
    """PyAV with an FFmpeg that has libx264 is a hard requirement of the H.264 augmentation."""
    if av is None:
        raise RuntimeError("the H.264 augmentation needs PyAV: pip install av "
                           "(its wheels bundle FFmpeg with libx264)")
    if "libx264" not in av.codecs_available:
        raise RuntimeError(f"PyAV {av.__version__} was built against an FFmpeg without the libx264 encoder: "
                           "pip install --force-reinstall av (the PyPI wheels bundle libx264)")


def h264_roundtrip(frames: np.ndarray, qp: int) -> np.ndarray:
    """Encode and decode a clip with H.264 at a constant QP, in process (libx264 through PyAV).

    Codec contexts only: no container, no temp file, no subprocess. RGB <-> I420 by OpenCV
    (faster than swscale, and bit-exact).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        qp: constant quantiser (0 lossless … 51 worst).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB with real H.264 artefacts; same shape and frame count.

    Raises:
        RuntimeError: PyAV or its libx264 encoder is missing (the message says ``pip install av``).
    """
    _check_libx264()
    padded, h, w = _even_pad(frames)
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height = padded.shape[2], padded.shape[1]
    enc.pix_fmt = "yuv420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qp": str(int(qp)), "preset": H264_PRESET, "threads": "1"}
    packets = []
    for i, img in enumerate(padded):
        # RGB -> I420 with OpenCV (faster than swscale), handed to x264 as a yuv420p plane stack
        vf = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        vf.pts = i
        packets.extend(enc.encode(vf))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create("h264", "r")
    dec.thread_count = 1
    out = []
    for pkt in [*packets, None]:
        out.extend(cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420) for f in dec.decode(pkt))
    if len(out) != len(frames):
        raise RuntimeError(f"H.264 round trip returned {len(out)} frames for {len(frames)}")
    return np.stack(out)[:, :h, :w]


# --------------------------------------------------------------------------- pair augmentation
@dataclass(frozen=True)
class PairAugConfig:
    """Knobs of the augmentations shared by the real and the fake clip."""
    compression: bool = True      # H.264 round trip (features.use_compression_aug)
    qp_min: int = 23
    qp_max: int = 40
    compression_prob: float = 0.5  # fraction of pairs that get the H.264 pass when enabled
    downscale_prob: float = 0.0    # fraction of pairs shown at a lower resolution (training.downscale_prob)
    downscale_range: tuple[float, float] = (0.4, 0.8)   # its scale factors (training.downscale_range)
    downscale_before_codec: bool = False   # encode (JPEG, H.264) a downscaled pair at its reduced size, then scale
                                           # it back up (training.downscale_before_codec)
    jitter_prob: float = 0.5       # fraction of pairs that get the scale / position jitter
    zoom: tuple[float, float] = (0.9, 1.12)   # zoom range of the jitter (>1 = closer crop)
    shift: float = 0.04            # max shift of the jitter, fraction of the side


def _jpeg() -> A.ImageCompression:
    return A.ImageCompression(quality_range=(60, 100), p=0.5)


def build_pair_transform(keypoints: bool = False, downscale_prob: float = 0.0,
                         downscale_range: tuple[float, float] = (0.4, 0.8), codec: bool = True) -> A.Compose:
    """Flip, colour jitter, (lower resolution,) JPEG; call with ``images=(N, H, W, 3)`` after ``set_random_seed``.

    ``downscale_prob > 0`` adds albumentations' ``Downscale`` (area down, linear up, one factor from
    ``downscale_range`` for the whole pair) before the JPEG; at 0 the transform and its random draws are
    exactly those of earlier versions. ``codec=False`` leaves out the JPEG (and ``Downscale`` must be
    off): :func:`augment_pair` then scales and encodes itself (``downscale_before_codec``).

    ``keypoints=True`` also accepts ``keypoints=(K, 2)`` (x, y pixels; flipped with the frames, never
    dropped): the landmarks of the mouth stream. The random draws and the images are the same either way.
    """
    tfs = [
        A.HorizontalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=10, val_shift_limit=10, p=0.3),
    ]
    if downscale_prob > 0:
        if not codec:
            raise ValueError("build_pair_transform: codec=False scales in augment_pair; pass downscale_prob=0")
        tfs.append(A.Downscale(scale_range=tuple(downscale_range), p=downscale_prob,
                               interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}))
    if codec:
        tfs.append(_jpeg())
    if keypoints:
        return A.Compose(tfs, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    return A.Compose(tfs)


def pair_transform_for(cfg: PairAugConfig, keypoints: bool = False) -> A.Compose:
    """The :func:`build_pair_transform` that :func:`augment_pair` expects for ``cfg``."""
    if cfg.downscale_before_codec:
        return build_pair_transform(keypoints=keypoints, codec=False)
    return build_pair_transform(keypoints=keypoints, downscale_prob=cfg.downscale_prob,
                                downscale_range=cfg.downscale_range)


_JPEG_ONLY = A.Compose([_jpeg()])


def _resize_all(frames: np.ndarray, w: int, h: int, interpolation: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (w, h), interpolation=interpolation) for f in frames])


def _codec_at_scale(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator,
                    cfg: PairAugConfig) -> tuple[np.ndarray, np.ndarray, int | None, float | None]:
    """``downscale_before_codec``: scale the pair down (area), JPEG and H.264 at that size, scale back up (linear).

    One factor, one JPEG quality and one QP for the real and its fake; the chain of a small face in a
    compressed video that the detector's crop enlarges. Without a factor drawn it is the usual JPEG +
    H.264 at the crop size.
    """
    h, w = real.shape[1:3]
    scale = float(rng.uniform(*cfg.downscale_range)) if rng.random() < cfg.downscale_prob else None
    both = np.concatenate([real, fake])
    if scale is not None:
        both = _resize_all(both, max(8, round(w * scale)), max(8, round(h * scale)), cv2.INTER_AREA)
    _JPEG_ONLY.set_random_seed(int(rng.integers(2**31 - 1)))
    both = _JPEG_ONLY(images=both)["images"]
    qp = None
    if cfg.compression and rng.random() < cfg.compression_prob:
        qp = int(rng.integers(cfg.qp_min, cfg.qp_max + 1))
        t = real.shape[0]
        both = np.concatenate([h264_roundtrip(both[:t], qp), h264_roundtrip(both[t:], qp)])
    if scale is not None:
        both = _resize_all(both, w, h, cv2.INTER_LINEAR)
    t = real.shape[0]
    return both[:t], both[t:], qp, scale


def jitter_matrix(h: int, w: int, zoom: float, dx: float, dy: float) -> np.ndarray:
    """The ``2 x 3`` affine map of :func:`scale_jitter` (source pixel -> augmented pixel)."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    return np.array([[zoom, 0.0, cx - zoom * cx + dx * w], [0.0, zoom, cy - zoom * cy + dy * h]], np.float32)


def scale_jitter(frames: np.ndarray, zoom: float, dx: float, dy: float) -> np.ndarray:
    """Zoom about the centre and shift every frame alike (linear, mirrored borders).

    Args:
        frames: ``(N, H, W, 3)`` uint8 (or ``(N, H, W)`` float32: a mask).
        zoom: scale factor (> 1 shows less of the head).
        dx: shift in fractions of the width.
        dy: shift in fractions of the height.

    Returns:
        an array like ``frames``.
    """
    h, w = frames.shape[1:3]
    m = jitter_matrix(h, w, zoom, dx, dy)
    return np.stack([cv2.warpAffine(f, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                     for f in frames])


def augment_pair(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, cfg: PairAugConfig = PairAugConfig(),
                 transform: A.Compose | None = None, mask: np.ndarray | None = None,
                 landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Apply the same augmentation to a real clip and its fake.

    Args:
        real: ``(T, H, W, 3)`` uint8.
        fake: ``(T, H, W, 3)`` uint8.
        rng: the pair's generator (one seed per clip pair).
        cfg: :class:`PairAugConfig`.
        transform: a prebuilt :func:`build_pair_transform`.
        mask: optional ``(T, H, W)`` float32 blend mask of the fake; it gets the same geometric
            changes (zoom / shift, flip) as the frames and none of the photometric ones.
        landmarks: optional ``(T, 68, 2)`` landmarks of the clip (crop pixels), moved with the frames'
            zoom / shift and flip (the mouth stream cuts its box from the augmented frames with them);
            ``transform`` must then be ``build_pair_transform(keypoints=True)`` (built so when ``None``).

    Returns:
        ``(real, fake, info)`` with ``info = {"qp": int or None, "zoom": float or None}`` (with
        ``cfg.downscale_before_codec`` also ``"scale"``: the factor, or None) and, when
        ``mask`` is given, ``info["mask"]`` (the transformed mask), when ``landmarks`` are given
        ``info["landmarks"]`` (moved). The random draws are the same with or without a mask or landmarks.
    """
    t = real.shape[0]
    tf = transform or pair_transform_for(cfg, keypoints=landmarks is not None)
    if landmarks is not None:
        landmarks = np.asarray(landmarks, np.float32)
    tf.set_random_seed(int(rng.integers(2**31 - 1)))
    both = np.concatenate([real, fake])
    zoom = None
    if rng.random() < cfg.jitter_prob:
        zoom = float(rng.uniform(*cfg.zoom))
        shift = rng.uniform(-cfg.shift, cfg.shift, 2)
        both = scale_jitter(both, zoom, *shift)
        if mask is not None:
            mask = scale_jitter(mask, zoom, *shift)
        if landmarks is not None:
            m = jitter_matrix(*both.shape[1:3], zoom, *shift)
            landmarks = landmarks @ m[:, :2].T + m[:, 2]
    kw = {} if landmarks is None else {"keypoints": landmarks.reshape(-1, 2)}
    if mask is None:
        out = tf(images=both, **kw)
        both = out["images"]
    else:
        out = tf(images=both, masks=np.ascontiguousarray(mask, np.float32), **kw)
        both, mask = out["images"], np.asarray(out["masks"], np.float32)
    if landmarks is not None:
        landmarks = np.asarray(out["keypoints"], np.float32)[:, :2].reshape(landmarks.shape)
    qp = scale = None
    if cfg.downscale_before_codec:
        real, fake, qp, scale = _codec_at_scale(both[:t], both[t:], rng, cfg)
        both = np.concatenate([real, fake])
    elif cfg.compression and rng.random() < cfg.compression_prob:
        qp = int(rng.integers(cfg.qp_min, cfg.qp_max + 1))
        both = np.concatenate([h264_roundtrip(both[:t], qp), h264_roundtrip(both[t:], qp)])
    info = {"qp": qp, "zoom": zoom} | ({"scale": scale} if cfg.downscale_before_codec else {}) | ({} if mask is None else {"mask": np.ascontiguousarray(mask)})
    if landmarks is not None:
        info["landmarks"] = landmarks
    return np.ascontiguousarray(both[:t]), np.ascontiguousarray(both[t:]), info
