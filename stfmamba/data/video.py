"""Video I/O with PyAV: probe, seek-and-read runs of frames, write H.264.

Preprocessing keeps a few short runs of contiguous frames per video, so reading never decodes the
whole file: for each run we seek to the keyframe at or before the run's first frame and decode
forward only until the run is complete (the way a video player seeks).

Reading rules (:func:`read_clip`): frame ``i`` is the ``i``-th frame in presentation order, taken
from the packets' timestamps (demuxed, not decoded), so a variable frame rate is a normal video
and runs are spaced evenly in time; a display rotation is applied so faces come out upright; a
short video gives overlapping runs; a broken packet costs the frames that depend on it, not the
video.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np

from stfmamba.io import atomic_path

__all__ = ["VideoError", "VideoInfo", "VideoClip", "probe", "read_runs", "read_clip", "read_all", "iter_frames",
           "write_video", "run_starts", "sample_runs"]


class VideoError(RuntimeError):
    """A video that cannot be used; ``reason`` is a short machine-friendly tag for the manifest.

    The one error of the data pipeline for "skip this video, record why": reading problems raise it
    directly, face problems raise its subclass :class:`~stfmamba.data.faces.FaceError`.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class VideoInfo:
    n_frames: int      # number of video frames (from the container, else counted from packets)
    fps: float
    width: int
    height: int


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise VideoError("missing", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise VideoError("unreadable", f"{path} is empty (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoError("unreadable", f"{path}: {err}") from None
    if not container.streams.video:
        container.close()
        raise VideoError("unreadable", f"{path} has no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps and size of a video without decoding it.

    Raises:
        VideoError: ``missing`` / ``unreadable`` when the file cannot be opened as a video.
    """
    with _open(path) as container:
        s = container.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        n = int(s.frames or 0)
        if n <= 0:  # some containers do not store a frame count: count packets (no decoding)
            try:
                n = sum(1 for p in container.demux(s) if p.size)
            except av.error.FFmpegError as err:
                raise VideoError("unreadable", f"{path}: {err}") from None
        return VideoInfo(n, fps, int(s.codec_context.width), int(s.codec_context.height))


def run_starts(n_frames: int, num_segments: int, frames_per_segment: int) -> list[int]:
    """First frame of each of ``num_segments`` evenly spaced runs of ``frames_per_segment`` frames
    of a constant-frame-rate video (:func:`sample_runs` is the general, timestamp-based rule).

    The runs span the whole video (first run at frame 0, last ending at the last frame) and never
    overlap. Raises ``VideoError("too_few_frames")`` when the video is shorter than all runs together.
    """
    need = num_segments * frames_per_segment
    if n_frames < need:
        raise VideoError("too_few_frames", f"{n_frames} frames < num_segments*frames_per_segment = {need}")
    last = n_frames - frames_per_segment
    return [int(round(v)) for v in np.linspace(0, last, num_segments)]


def sample_runs(pts: np.ndarray, num_segments: int, frames_per_segment: int) -> list[int]:
    """Start indices of ``num_segments`` runs of ``frames_per_segment`` frames, evenly spaced in time.

    Args:
        pts: ``(n,)`` presentation timestamps of the frames, ascending (any unit); index ``i`` of
            this array is frame ``i``.
        num_segments: runs to sample.
        frames_per_segment: frames per run (``L``).

    Returns:
        ascending run starts in ``[0, n - L]``: the first at frame 0, the last ending at the last
        frame, the others at the frames nearest to evenly spaced times. With ``n >= num_segments*L``
        the runs never overlap (a variable frame rate can crowd them; they are pushed apart); with
        fewer frames they overlap, down to all runs on the same frames when ``n == L``. For a
        constant frame rate this is :func:`run_starts`.
    """
    n, L = len(pts), frames_per_segment
    if n < L:
        raise VideoError("too_short", f"{n} frames < frames_per_segment = {L}")
    last = n - L
    t = np.asarray(pts, dtype=np.float64)
    targets = np.linspace(t[0], t[last], num_segments)
    pos = np.interp(targets, t, np.arange(n, dtype=np.float64))     # fractional frame index
    starts = np.clip(np.floor(pos + 0.5 + 1e-9), 0, last).astype(int).tolist()
    if n >= num_segments * L:                                       # room for disjoint runs: keep them so
        for k in range(1, num_segments):
            starts[k] = max(starts[k], starts[k - 1] + L)
        starts[-1] = min(starts[-1], last)
        for k in range(num_segments - 2, -1, -1):
            starts[k] = min(starts[k], starts[k + 1] - L)
    return [int(v) for v in starts]


def _rgb(frame: av.VideoFrame, rotation: int = 0) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` of a decoded frame, turned upright by ``rotation`` (degrees counter-clockwise).

    yuv420p (nearly every H.264 file) is converted by OpenCV (BT.601, limited range, the same
    convention as FFmpeg's default) because its conversions are bit-exact, whereas swscale's SIMD
    paths can round differently depending on buffer alignment, which made decoded frames differ
    between runs.
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        rgb = cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    k = int(round(rotation / 90)) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Display rotation in degrees counter-clockwise: the frame's display matrix, else the legacy
    ``rotate`` stream tag (degrees clockwise, written by old FFmpeg versions and some phones)."""
    try:
        rot = int(round(frame.rotation or 0))
    except (AttributeError, ValueError):
        rot = 0
    if rot == 0:
        try:
            rot = -int(float(stream.metadata.get("rotate", 0)))
        except ValueError:
            rot = 0
    return rot


@dataclass
class VideoClip:
    """Runs of frames read by :func:`read_clip`."""
    frames: np.ndarray          # (num_segments*L, H, W, 3) uint8 RGB, upright
    frame_idx: np.ndarray       # (num_segments*L,) int64 source frame index (position in presentation order)
    run_starts: list[int]       # first frame of each run as stored (after relocation around broken frames)
    n_src_frames: int           # frames in the file (video packets)
    fps: float                  # average frame rate
    rotation: int               # display rotation applied, degrees counter-clockwise
    decode_errors: int          # packets rejected by the decoder + decoded frames dropped as broken
    variable_rate: bool         # frame durations differ by more than 10 %

    @property
    def n_unique_frames(self) -> int:
        return int(len(np.unique(self.frame_idx)))


class _Reader:
    """An open video plus its timestamp table; decodes runs of contiguous, intact frames."""

    def __init__(self, path: str | Path):
        self.path = path
        self.container = _open(path)
        self.stream = s = self.container.streams.video[0]
        s.thread_type = "SLICE"
        self.fps = float(s.average_rate or s.guessed_rate or 25)
        try:   # every frame's timestamp from the packets (demuxing reads the file, it does not decode)
            pts = sorted({p.pts for p in self.container.demux(s) if p.size and p.pts is not None})
        except av.error.FFmpegError as err:
            self.container.close()
            raise VideoError("unreadable", f"{path}: {err}") from None
        self.pts = np.asarray(pts, dtype=np.int64)
        self.index = {int(p): i for i, p in enumerate(pts)}
        self.rotation: int | None = None
        self.errors = 0

    def close(self) -> None:
        self.container.close()

    def _index_of(self, frame: av.VideoFrame, prev: int) -> int:
        if frame.pts is None:
            return prev + 1
        i = self.index.get(int(frame.pts))
        if i is None:   # a timestamp the packets did not carry: the nearest frame
            i = int(np.clip(np.searchsorted(self.pts, frame.pts), 0, len(self.pts) - 1))
        return i

    def run(self, start: int, length: int, limit: int,
            strict: bool = False) -> tuple[list[np.ndarray], list[int], int | None]:
        """Decode forward from frame ``start`` until ``length`` contiguous intact frames are found
        before frame ``limit``.

        A packet the decoder rejects, a frame it flags corrupt, and every frame after a rejected
        packet up to the next keyframe (it references broken data) are dropped and counted in
        ``self.errors``; the run then restarts after them. With ``strict`` any of these, or a gap
        in the timestamps, raises instead.

        Returns:
            the frames and indices (``length`` of them, or fewer when ``limit`` came first) and the
            first broken frame index met (``None`` when none).
        """
        s = self.stream
        frames: list[np.ndarray] = []
        idx: list[int] = []
        first_bad: int | None = None
        cur = start                # where the run being collected starts
        tainted = False
        prev = start - 1
        try:
            self.container.seek(int(self.pts[start]), stream=s, backward=True, any_frame=False)
        except av.error.FFmpegError as err:
            if strict:
                raise VideoError("unreadable", f"{self.path}: seek failed: {err}") from None
            self.errors += 1
            return frames, idx, start
        for packet in self.container.demux(s):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as err:
                if strict:
                    raise VideoError("unreadable", f"{self.path}: decoding failed: {err}") from None
                self.errors += 1
                tainted = True
                continue
            for frame in decoded:
                i = prev = self._index_of(frame, prev)
                if frame.key_frame and not frame.is_corrupt:
                    tainted = False
                if i < cur:
                    continue
                if i >= limit:
                    return frames, idx, first_bad
                bad = tainted or frame.is_corrupt
                gap = i != cur + len(frames)
                if strict and (bad or gap):
                    what = "a corrupt frame" if bad else f"frame {i} where {cur + len(frames)} was expected"
                    raise VideoError("bad_timestamps" if gap else "unreadable", f"{self.path}: {what}")
                if bad or gap:
                    if first_bad is None:
                        first_bad = cur + len(frames)
                    frames, idx = [], []
                    if bad:
                        self.errors += 1
                        cur = i + 1
                        continue
                    cur = i
                if self.rotation is None:
                    self.rotation = _rotation(frame, s)
                frames.append(_rgb(frame, self.rotation))
                idx.append(i)
                if len(frames) == length:
                    return frames, idx, first_bad
        return frames, idx, first_bad


def read_runs(path: str | Path, starts: Sequence[int], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``length`` contiguous frames from each start index, seeking before every run (strict:
    any decode error fails; :func:`read_clip` is the tolerant reader preprocessing uses).

    Args:
        path: the video file.
        starts: first frame index of each run (ascending); frame ``i`` is the ``i``-th frame in
            presentation order.
        length: frames per run.

    Returns:
        ``frames (len(starts)*length, H, W, 3) uint8 RGB`` (upright) and ``frame_idx (len(starts)*length,) int64``.

    Raises:
        VideoError: ``unreadable`` (decoder error) or ``too_few_frames`` (a run ran past the end).
    """
    out: list[np.ndarray] = []
    idx: list[int] = []
    reader = _Reader(path)
    try:
        n = len(reader.pts)
        for run_start in starts:
            if run_start + length > n:
                raise VideoError("too_few_frames", f"{path}: run at frame {run_start} ends past the {n} frames")
            f, i, _ = reader.run(run_start, length, n, strict=True)
            if len(f) < length:
                raise VideoError("too_few_frames",
                                 f"{path}: run at frame {run_start} ended after {len(f)}/{length} frames")
            out += f
            idx += i
    finally:
        reader.close()
    return np.stack(out), np.asarray(idx, dtype=np.int64)


def read_clip(path: str | Path, num_segments: int, frames_per_segment: int, min_frames: int = 0) -> VideoClip:
    """The preprocessing reader: ``num_segments`` runs of ``frames_per_segment`` contiguous frames,
    evenly spaced in time, upright, around broken data.

    * Frames are indexed by presentation timestamp (variable frame rate is a normal video); the
      runs are placed by :func:`sample_runs`.
    * A display rotation (display matrix, or the legacy ``rotate`` tag) is applied.
    * A video with fewer than ``num_segments*L`` frames gives overlapping runs, so the clip keeps
      its length; below ``max(min_frames, L)`` frames it fails with ``too_short`` (a video with
      ``num_segments*L`` frames never does, whatever ``min_frames``).
    * A run that meets broken frames (see :meth:`_Reader.run`) restarts after them; if it cannot
      finish before the end of the file it is read just before the first broken frame instead, and
      if that fails too it becomes a copy of the nearest intact run.

    Raises:
        VideoError: ``missing`` / ``unreadable`` (nothing decodes) / ``too_short``.
    """
    L = frames_per_segment
    reader = _Reader(path)
    try:
        n = len(reader.pts)
        if n == 0:
            raise VideoError("unreadable", f"{path}: no video packets")
        need = min(max(min_frames, L), num_segments * L)   # a video with a full clip's frames is never too short
        if n < need:
            raise VideoError("too_short", f"{n} frames < min(max(preprocess.min_frames, frames_per_segment), "
                                          f"num_segments*frames_per_segment) = {need}")
        starts = sample_runs(reader.pts, num_segments, L)
        runs: dict[int, tuple[list[np.ndarray], list[int]]] = {}    # wanted start -> frames, indices
        for st in starts:
            if st in runs:
                continue
            f, i, first_bad = reader.run(st, L, n)
            if len(f) < L and first_bad is not None and first_bad >= L:
                f, i, _ = reader.run(first_bad - L, L, first_bad)   # the frames just before the damage
            if len(f) == L:
                runs[st] = (f, i)
        if not runs:
            raise VideoError("unreadable", f"{path}: no run of {L} intact frames "
                                           f"({reader.errors} decode errors)")
        good = sorted(runs)
        frames: list[np.ndarray] = []
        idx: list[int] = []
        stored: list[int] = []
        for st in starts:
            src = st if st in runs else min(good, key=lambda g: (abs(g - st), g))
            f, i = runs[src]
            frames += f
            idx += i
            stored.append(i[0])
        d = np.diff(reader.pts)
        return VideoClip(np.stack(frames), np.asarray(idx, dtype=np.int64), stored, n, reader.fps,
                         int(reader.rotation or 0), reader.errors,
                         bool(len(d) and d.max() > 1.1 * d.min()))   # jitter of a rounded timebase is not VFR
    finally:
        reader.close()


def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames one by one (``(H, W, 3) uint8 RGB``, upright), up to ``max_frames``; constant memory."""
    with _open(path) as container:
        s = container.streams.video[0]
        rotation = None
        try:
            for i, frame in enumerate(container.decode(s)):
                if max_frames is not None and i >= max_frames:
                    break
                rotation = _rotation(frame, s) if rotation is None else rotation
                yield _rgb(frame, rotation)
        except av.error.FFmpegError as err:
            raise VideoError("unreadable", f"{path}: decoding failed: {err}") from None


def read_all(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame (up to ``max_frames``): ``(N, H, W, 3) uint8 RGB`` (upright) and the fps."""
    frames = []
    with _open(path) as container:
        s = container.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        rotation = None
        try:
            for frame in container.decode(s):
                rotation = _rotation(frame, s) if rotation is None else rotation
                frames.append(_rgb(frame, rotation))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as err:
            raise VideoError("unreadable", f"{path}: decoding failed: {err}") from None
    if not frames:
        raise VideoError("unreadable", f"{path}: no decodable frames")
    return np.stack(frames), fps


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 23, gop: int = 30,
                scale: tuple[int, int] | None = None) -> None:
    """Write ``frames (N, H, W, 3) uint8 RGB`` as H.264 (yuv420p) MP4, atomically.

    Deterministic for the same input: single-threaded libx264 with fixed options.

    Args:
        path: output ``.mp4``.
        frames: the frames (H and W are made even by cropping one pixel if needed).
        fps: frame rate.
        crf: x264 constant rate factor (higher = stronger compression).
        gop: keyframe interval (short GOPs keep seeking cheap).
        scale: optional output ``(width, height)``; frames are area-resized with OpenCV first
            (deterministic, unlike the threaded swscale path).
    """
    if scale:
        frames = np.stack([cv2.resize(f, scale, interpolation=cv2.INTER_AREA) for f in frames])
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        s = container.add_stream("libx264", rate=rate)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p"
        # threads=1 and mbtree=0: x264's float macroblock-tree can round differently from run to
        # run (SIMD path vs alignment), which changed the output bytes between processes
        s.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                     "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:mbtree=0:threads=1"}
        s.codec_context.thread_count = 1
        for arr in frames:
            yuv = cv2.cvtColor(np.ascontiguousarray(arr[:h, :w]), cv2.COLOR_RGB2YUV_I420)  # bit-exact, see _rgb
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            for packet in s.encode(frame):
                container.mux(packet)
        for packet in s.encode():
            container.mux(packet)
