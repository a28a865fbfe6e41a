"""Video I/O with PyAV: probe, seek-and-read runs of frames, write H.264.

Preprocessing keeps a few short runs of contiguous frames per video, so reading never decodes the
whole file: for each run we seek to the keyframe at or before the run's first frame and decode
forward only until the run is complete (the way a video player seeks). Frame indices are derived
from presentation timestamps, so they are the same whatever keyframe the seek lands on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np

__all__ = ["VideoError", "VideoInfo", "probe", "read_runs", "read_all", "iter_frames", "write_video", "run_starts"]


class VideoError(RuntimeError):
    """A video that cannot be used; ``reason`` is a short machine-friendly tag for the manifest."""

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
    """First frame of each of ``num_segments`` evenly spaced runs of ``frames_per_segment`` frames.

    The runs span the whole video (first run at frame 0, last ending at the last frame) and never
    overlap. Raises ``VideoError("too_few_frames")`` when the video is shorter than all runs together.
    """
    need = num_segments * frames_per_segment
    if n_frames < need:
        raise VideoError("too_few_frames", f"{n_frames} frames < num_segments*frames_per_segment = {need}")
    last = n_frames - frames_per_segment
    return [int(round(v)) for v in np.linspace(0, last, num_segments)]


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """``(H, W, 3) uint8 RGB`` of a decoded frame.

    yuv420p (nearly every H.264 file) is converted by OpenCV (BT.601, limited range, the same
    convention as FFmpeg's default) because its conversions are bit-exact, whereas swscale's SIMD
    paths can round differently depending on buffer alignment, which made decoded frames differ
    between runs.
    """
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


def _frame_index(frame: av.VideoFrame, stream: av.video.stream.VideoStream, fps: float) -> int:
    start = stream.start_time or 0
    pts = frame.pts if frame.pts is not None else 0
    return int(round(float((pts - start) * stream.time_base) * fps))


def read_runs(path: str | Path, starts: Sequence[int], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``length`` contiguous frames from each start index, seeking before every run.

    Args:
        path: the video file.
        starts: first frame index of each run (ascending).
        length: frames per run.

    Returns:
        ``frames (len(starts)*length, H, W, 3) uint8 RGB`` and ``frame_idx (len(starts)*length,) int64``.

    Raises:
        VideoError: ``unreadable`` (decoder error) or ``too_few_frames`` (a run ran past the end).
    """
    out: list[np.ndarray] = []
    idx: list[int] = []
    with _open(path) as container:
        s = container.streams.video[0]
        s.thread_type = "SLICE"
        fps = float(s.average_rate or s.guessed_rate or 25)
        tb = s.time_base
        start_pts = s.start_time or 0
        try:
            for run_start in starts:
                target_pts = start_pts + int(round(Fraction(run_start) / Fraction(fps).limit_denominator(100000) / tb))
                container.seek(max(target_pts, start_pts), stream=s, backward=True, any_frame=False)
                got = 0
                for frame in container.decode(s):
                    i = _frame_index(frame, s, fps)
                    if i < run_start:
                        continue
                    if i != run_start + got:   # a gap or repeat in the timestamps: not a contiguous run
                        raise VideoError("bad_timestamps", f"{path}: frame {i} where {run_start + got} was expected")
                    out.append(_rgb(frame))
                    idx.append(i)
                    got += 1
                    if got == length:
                        break
                if got < length:
                    raise VideoError("too_few_frames", f"{path}: run at frame {run_start} ended after {got}/{length} frames")
        except av.error.FFmpegError as err:
            raise VideoError("unreadable", f"{path}: decoding failed: {err}") from None
    return np.stack(out), np.asarray(idx, dtype=np.int64)


def iter_frames(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames one by one (``(H, W, 3) uint8 RGB``), up to ``max_frames``; constant memory."""
    with _open(path) as container:
        s = container.streams.video[0]
        try:
            for i, frame in enumerate(container.decode(s)):
                if max_frames is not None and i >= max_frames:
                    break
                yield _rgb(frame)
        except av.error.FFmpegError as err:
            raise VideoError("unreadable", f"{path}: decoding failed: {err}") from None


def read_all(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Decode every frame (up to ``max_frames``): ``(N, H, W, 3) uint8 RGB`` and the fps."""
    frames = []
    with _open(path) as container:
        s = container.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        try:
            for frame in container.decode(s):
                frames.append(_rgb(frame))
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale:
        frames = np.stack([cv2.resize(f, scale, interpolation=cv2.INTER_AREA) for f in frames])
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w") as container:
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
    os.replace(tmp, path)
