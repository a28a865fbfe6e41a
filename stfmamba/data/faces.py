"""Face detection (dlib HOG), 68-point landmarks (dlib shape predictor) and face crops.

The landmark model is the iBUG-300W 68-point predictor shipped by the ``face-recognition-models``
package (located without importing it: that package needs ``pkg_resources``). The index lists of
its face parts (:data:`JAW`, :data:`BROWS`, :data:`NOSE`, :data:`EYES`, :data:`MOUTH`) are defined
here once; SBI's masks and the demo manipulations take them from this module.

Speed: HOG detection runs on a downscaled grayscale frame (``detect_scale``) and upsamples once
only when no face or only a small one is found there. Within a run of contiguous frames the
detector runs on the first frame only; each following frame gets the box the detector would have
produced, predicted from the previous frame's landmarks (the detector-box ↔ landmark-box relation
is measured on the detected frame), and the shape predictor refines the landmarks at full
resolution. The primary face of a video: the largest face on the first detected frame, then on every
other detected frame the detection nearest to the previous box.

Every face (``preprocess.max_faces > 1``): the detector's other boxes on each run's first frame
(:attr:`RunTracker.last_boxes`, no extra detection) are linked across runs by position and size
(:func:`link_tracks`) and followed through the run like the primary face (:func:`follow_run`). A
face lost within a run (it leaves the frame, or is gone by the run's last frame) is noticed by
:func:`lost_at`.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import dlib
import numpy as np

from stfmamba.data.video import VideoError

__all__ = ["JAW", "BROWS", "NOSE", "EYES", "MOUTH", "FaceError", "predictor_path", "detector", "predictor", "detect_faces", "pick_face",
           "landmarks", "RunTracker", "follow_run", "lost_at", "link_tracks", "square_box", "crop_square",
           "inter_ocular"]

# the iBUG-300W 68-point layout (0-based): the index lists every module takes its face parts from
JAW, BROWS, NOSE = list(range(0, 17)), list(range(17, 27)), list(range(27, 36))
EYES, MOUTH = list(range(36, 48)), list(range(48, 68))

EXTRA_FACE_MIN_REL = 0.5   # another face is kept only if its side is >= this x the primary face's side
LINK_MAX_DIST = 1.0        # runs link a face to a track when centres are < this x the track's box side apart
LINK_MAX_SCALE = 2.0       # ... and the two box sides differ by less than this factor
MIN_INSIDE = 0.5           # a landmark box less than this fraction inside the frame: the face left it
REDETECT_SIDE = 100.0      # lost_at: the face region is re-detected at this face side (px)


class FaceError(VideoError):
    """A video without a usable face (``no_face``, ``bad_landmarks``, or ``no_model`` when the landmark
    model is missing); ``reason`` is the manifest tag. A :class:`~stfmamba.data.video.VideoError`, so
    ``except VideoError`` catches every reason a video cannot be used."""


def predictor_path(name: str = "shape_predictor_68_face_landmarks.dat") -> Path:
    """Path of a model file of the ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceError("no_model", "package face-recognition-models is not installed: pip install face-recognition-models")
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise FaceError("no_model", f"{path} missing; reinstall face-recognition-models")
    return path


@lru_cache(maxsize=1)
def detector() -> "dlib.fhog_object_detector":
    """The dlib HOG frontal face detector (one per process)."""
    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=1)
def predictor() -> "dlib.shape_predictor":
    """The 68-point shape predictor (one per process)."""
    return dlib.shape_predictor(str(predictor_path()))


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def detect_faces(frame: np.ndarray, scale: float = 1.0, upsample: int = 0) -> np.ndarray:
    """HOG face boxes on ``frame (H, W[, 3]) uint8`` resized by ``scale``.

    Returns:
        ``(K, 4) float32`` boxes ``x0, y0, x1, y1`` in full-resolution pixels.
    """
    gray = _gray(frame)
    if scale != 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rects = detector()(gray, upsample)
    boxes = np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float32)
    return boxes.reshape(-1, 4) / scale


def pick_face(boxes: np.ndarray, prev: np.ndarray | None = None) -> np.ndarray:
    """The largest box, or the one whose centre is nearest ``prev``'s centre (identity tracking)."""
    if prev is None:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(area))]
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    pc = (prev[:2] + prev[2:]) / 2
    return boxes[int(np.argmin(((c - pc) ** 2).sum(1)))]


def landmarks(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """68 landmarks ``(68, 2) float32`` (full-resolution pixels) inside detector box ``box``."""
    r = dlib.rectangle(*(int(round(v)) for v in box))
    shape = predictor()(_gray(frame), r)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def _lm_box(lm: np.ndarray) -> np.ndarray:
    return np.concatenate([lm.min(0), lm.max(0)])


@dataclass
class RunTracker:
    """Detects once per run and follows the face through the run's frames.

    Args:
        detect_scale: downscale factor for HOG detection.
        min_face_px: a face smaller than this (side, at ``detect_scale``) triggers one upsampling.
    """
    detect_scale: float = 0.5
    min_face_px: int = 80
    prev_box: np.ndarray | None = None   # last detector box of the chosen face (identity)
    last_boxes: np.ndarray | None = None  # every detector box of the last detect() call (K, 4)

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """Detector box of the tracked face on ``frame``; raises ``FaceError('no_face')``."""
        boxes = detect_faces(frame, self.detect_scale, 0)
        small = len(boxes) == 0 or (boxes[:, 2] - boxes[:, 0]).max() * self.detect_scale < self.min_face_px
        if small:
            up = detect_faces(frame, self.detect_scale, 1)
            if len(up):
                boxes = up
        if len(boxes) == 0 and self.detect_scale < 1.0:  # last resort: full resolution, upsampled
            boxes = detect_faces(frame, 1.0, 1)
        if len(boxes) == 0:
            raise FaceError("no_face", "dlib found no face")
        box = pick_face(boxes, self.prev_box)
        self.prev_box = box
        self.last_boxes = boxes
        return box

    def run(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks for contiguous ``frames (T, H, W, 3)``.

        Returns:
            ``landmarks (T, 68, 2) float32`` and the detector boxes used ``(T, 4) float32``.
        """
        box = self.detect(frames[0])
        lms, boxes = follow_run(frames, box)
        self.prev_box = boxes[-1]
        return lms, boxes


def follow_run(frames: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follow the face of detector box ``box`` (on ``frames[0]``) through contiguous ``frames (T, H, W, 3)``.

    Returns:
        ``landmarks (T, 68, 2) float32`` and the detector boxes used ``(T, 4) float32``.
    """
    box = np.asarray(box, np.float32)
    lm = landmarks(frames[0], box)
    # detector box expressed relative to the landmark box (centre offset and size ratio)
    lb = _lm_box(lm)
    lsz = np.maximum(lb[2:] - lb[:2], 1.0)
    rel_c = ((box[:2] + box[2:]) / 2 - (lb[:2] + lb[2:]) / 2) / lsz
    rel_s = (box[2:] - box[:2]) / lsz
    lms, boxes = [lm], [box]
    for frame in frames[1:]:
        lb = _lm_box(lms[-1])
        lsz = np.maximum(lb[2:] - lb[:2], 1.0)
        c = (lb[:2] + lb[2:]) / 2 + rel_c * lsz
        half = rel_s * lsz / 2
        pbox = np.concatenate([c - half, c + half]).astype(np.float32)
        lms.append(landmarks(frame, pbox))
        boxes.append(pbox)
    return np.stack(lms).astype(np.float32), np.stack(boxes).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a (..., 4)`` and ``b (..., 4)`` (broadcast)."""
    lo, hi = np.maximum(a[..., :2], b[..., :2]), np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-6)


def _face_present(frame: np.ndarray, box: np.ndarray) -> bool:
    """Whether HOG finds a face overlapping detector box ``box`` (IoU >= 0.3) in the region around it
    (twice its side), rescaled so the face is :data:`REDETECT_SIDE` px: cheap, a small image."""
    side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
    c = (box[:2] + box[2:]) / 2
    region = np.array([c[0] - side, c[1] - side, c[0] + side, c[1] + side], np.float32)
    scale = REDETECT_SIDE / side
    crop = crop_square(frame if frame.ndim == 3 else frame[..., None].repeat(3, -1), region,
                       max(int(round(2 * side * scale)), 16))
    target = (box - np.tile(region[:2], 2)) * scale
    for upsample in (0, 1):
        found = detect_faces(crop, 1.0, upsample)
        if len(found) and _iou(found, target[None]).max() >= 0.3:
            return True
    return False


def lost_at(frames: np.ndarray, lms: np.ndarray, boxes: np.ndarray) -> int | None:
    """The first frame of a followed run at which the face is lost, or ``None``.

    Lost: its landmark box is less than :data:`MIN_INSIDE` inside the frame (the face left it), or
    HOG no longer finds a face at the followed box on the run's last frame (then the break is
    reported at the last frame).

    Args:
        frames: ``(T, H, W, 3)`` the run.
        lms: ``(T, 68, 2)`` followed landmarks (source pixels).
        boxes: ``(T, 4)`` followed detector boxes.
    """
    h, w = frames.shape[1:3]
    lo, hi = lms.min(1), lms.max(1)                                        # (T, 2)
    area = np.prod(np.maximum(hi - lo, 1e-6), -1)
    inside = np.prod(np.clip(np.minimum(hi, [w, h]) - np.maximum(lo, 0), 0, None), -1) / area
    out = np.flatnonzero((inside < MIN_INSIDE) | ~np.isfinite(inside))
    if len(out):
        return int(out[0])
    if len(frames) > 1 and not _face_present(frames[-1], boxes[-1]):
        return len(frames) - 1
    return None


def link_tracks(runs: list[np.ndarray], primary: list[np.ndarray | None]) -> list[dict[int, np.ndarray]]:
    """Link the other faces of each run into tracks, by position and size.

    Args:
        runs: per run, every detector box of its first frame ``(K_r, 4)``.
        primary: per run, the primary face's box (excluded, and the size reference), or ``None``.

    Returns:
        Tracks, each ``{run: detector box}``, in order of creation. A box links to the track whose
        last box is nearest (centre distance < :data:`LINK_MAX_DIST` x its side, sides within
        :data:`LINK_MAX_SCALE`); an unlinked box starts a track. Boxes overlapping the primary face
        (IoU >= 0.3) or smaller than :data:`EXTRA_FACE_MIN_REL` x its side are ignored.
    """
    tracks: list[dict[int, np.ndarray]] = []
    for r, (boxes, prim) in enumerate(zip(runs, primary)):
        if prim is None or boxes is None or len(boxes) == 0:
            continue
        side = lambda b: float(max(b[2] - b[0], b[3] - b[1], 1.0))  # noqa: E731
        cands = [b for b in boxes if _iou(b, prim) < 0.3 and side(b) >= EXTRA_FACE_MIN_REL * side(prim)]
        pairs = []
        for i, b in enumerate(cands):
            for k, t in enumerate(tracks):
                last = t[max(t)]
                d = np.linalg.norm((b[:2] + b[2:]) / 2 - (last[:2] + last[2:]) / 2) / side(last)
                ratio = max(side(b), side(last)) / min(side(b), side(last))
                if d < LINK_MAX_DIST and ratio < LINK_MAX_SCALE and r not in t:
                    pairs.append((d, i, k))
        used_c, used_t = set(), set()
        for d, i, k in sorted(pairs):
            if i not in used_c and k not in used_t:
                tracks[k][r] = cands[i]
                used_c.add(i)
                used_t.add(k)
        tracks += [{r: b} for i, b in enumerate(cands) if i not in used_c]
    return tracks


def square_box(lm: np.ndarray, margin: float) -> np.ndarray:
    """Square ``x0, y0, x1, y1`` around landmarks ``(..., 68, 2)`` (all frames together), with margin.

    The side is the larger side of the landmark box times ``1 + 2*margin``; the centre is the
    landmark box centre. One box for a run keeps the crop still, so the crop adds no motion.
    """
    pts = lm.reshape(-1, 2)
    lo, hi = pts.min(0), pts.max(0)
    c = (lo + hi) / 2
    side = max(int(round(float((hi - lo).max()) * (1 + 2 * margin))), 2)
    x0, y0 = int(round(c[0] - side / 2)), int(round(c[1] - side / 2))  # integer pixels: exact crops
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float32)


def crop_square(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop ``box`` from ``frame (H, W, 3)`` (zero padding outside the frame), resize to ``size``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = size / (x1 - x0)
    m = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]], dtype=np.float64)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if scale < 1:  # area-average then sub-pixel place: resize the padded region
        ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
        ix1, iy1 = int(np.ceil(x1)), int(np.ceil(y1))
        h, w = frame.shape[:2]
        pad = cv2.copyMakeBorder(frame[max(iy0, 0):min(iy1, h), max(ix0, 0):min(ix1, w)],
                                 max(-iy0, 0), max(iy1 - h, 0), max(-ix0, 0), max(ix1 - w, 0),
                                 cv2.BORDER_CONSTANT, value=0)
        return cv2.resize(pad, (size, size), interpolation=interp)
    return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def inter_ocular(lm: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (points 36 and 45) of ``(..., 68, 2)`` landmarks."""
    return np.linalg.norm(lm[..., 36, :] - lm[..., 45, :], axis=-1)
