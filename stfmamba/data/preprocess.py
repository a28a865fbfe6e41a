"""Preprocessing (design §2): sampled runs of frames → face crops + 68 landmarks, one npz per video.

Per video: ``num_segments`` runs of ``frames_per_segment`` contiguous frames, evenly spaced in
time, are decoded by seeking (:func:`stfmamba.data.video.read_clip`: upright, indexed by timestamp,
overlapping runs for short videos, broken packets skipped); dlib finds the face on the first frame
of each run at ``detect_scale`` and follows it through the run (:class:`~stfmamba.data.faces.RunTracker`);
each run gets one square crop box around all of its landmarks plus ``margin`` (a still crop adds no
motion of its own, which matters to a detector of temporal artefacts); crops are resized to
``crop_size`` and landmarks mapped into crop pixels.

Every face (:func:`process_faces`, ``max_faces > 1``): face 0 is the primary face above, computed
exactly as with ``max_faces = 1`` (training uses it); the other faces the detector finds on the
runs' first frames are linked into tracks across runs (:func:`~stfmamba.data.faces.link_tracks`)
and cropped the same way. A face track lost within a run (:func:`~stfmamba.data.faces.lost_at`)
is recorded in ``track_breaks``; for an extra face, that run, and a run where it was not detected,
is **filled** with a copy of its nearest good run (``filled_runs``; repeated frames, as for short
videos), and a track good in fewer than half of the runs is **dropped** (recorded too). The
primary face's breaks are recorded only: its crops are today's.

The dataset driver (:func:`preprocess_dataset`) fans videos out to worker processes with a tqdm
bar, writes every npz atomically, records one manifest row per video (``ok`` or ``failed`` with a
reason: one bad video never stops the stage; a worker that dies, e.g. a segfault in a native
library, costs its video only: a failed row ``worker_crashed: signal N``, and a fresh worker takes
over), skips videos whose source hash and params hash are unchanged since the last run (resumable;
the manifest is flushed every few videos; crashed videos are not retried), and does only the
videos of shard ``shard_index`` of ``num_shards`` (a stable hash of ``method/video_id``).
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
import zlib
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from stfmamba.config import PreprocessConfig
from stfmamba.data.adapters.base import VideoRow
from stfmamba.data.faces import FaceError, RunTracker, crop_square, follow_run, link_tracks, lost_at, square_box
from stfmamba.data.manifest import (COLUMNS, ManifestError, merge_shards, read_manifest, save_npz,
                                    shard_name, write_manifest)
from stfmamba.data.video import VideoError, read_clip

__all__ = ["PREPROCESS_VERSION", "CRASH_ENV", "FaceClip", "process_video", "process_faces", "extra_npz_name",
           "params_hash", "src_hash", "in_shard",
           "preprocess_dataset", "PreprocessSummary"]

PREPROCESS_VERSION = 3   # bump when the output of process_video changes for the same params (2: timestamp
                         # indexing, rotation, overlapping runs, decode-error tolerance; 3: a run with no
                         # face on its first frame is filled instead of failing the video)
_HASHED_FIELDS = ("num_segments", "frames_per_segment", "crop_size", "margin", "detect_scale", "min_face_px",
                  "min_frames")
_FLUSH_EVERY = 20        # rewrite the manifest after this many finished videos (crash-safe resume)
VIDEO_TIMEOUT_S = 900.0  # a worker busy this long on one video is killed (row: worker_timeout)
# Test hook: a pool worker given the video whose id is this variable's value SIGKILLs itself before
# processing it. Honoured only when set, and only in pool workers (workers >= 1), never in process.
CRASH_ENV = "STFMAMBA_TEST_CRASH_VIDEO"


@dataclass
class FaceClip:
    """The arrays of one preprocessed video (the npz contract)."""
    frames: np.ndarray      # (N, S, S, 3) uint8 RGB crops
    landmarks: np.ndarray   # (N, 68, 2) float32, crop pixels
    boxes: np.ndarray       # (N, 4) float32 crop box in source pixels
    frame_idx: np.ndarray   # (N,) int64 source frame index (position in presentation order)
    fps: float
    n_src_frames: int
    run_starts: list[int]   # first source frame of each run
    n_unique_frames: int    # distinct source frames among the N (< N when runs overlap or repeat)
    decode_errors: int      # broken packets / frames met and skipped while reading
    rotation: int           # display rotation applied (degrees counter-clockwise)
    variable_rate: bool     # the source has a variable frame rate
    face: int = 0           # track number: 0 = the primary (largest) face, 1.. the others by size
    track_breaks: list[dict] = field(default_factory=list)   # {"face", "run", "frame", "action"} (max_faces > 1)
    filled_runs: list[int] = field(default_factory=list)     # runs copied from the nearest good run (a run
                                                             # where the face was not detected, or lost: extras)


def params_hash(cfg: PreprocessConfig) -> str:
    """Hash of the params that change the output (not workers / shards)."""
    extra = {"max_faces": cfg.max_faces} if cfg.max_faces != 1 else {}   # 1 = the single-face output: same hash
    blob = json.dumps({k: getattr(cfg, k) for k in _HASHED_FIELDS} | {"version": PREPROCESS_VERSION} | extra,
                      sort_keys=True)
    return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def src_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """Fast content hash of a source video: size + first and last MiB (survives ``dvc checkout``)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        h = hashlib.blake2b(str(size).encode(), digest_size=8)
        with path.open("rb") as f:
            h.update(f.read(chunk))
            if size > 2 * chunk:
                f.seek(-chunk, os.SEEK_END)
                h.update(f.read(chunk))
        return h.hexdigest()
    except OSError:
        return "missing"


def in_shard(row: VideoRow, shard_index: int, num_shards: int) -> bool:
    """Stable assignment of a video to a shard (adding videos does not move the others)."""
    return zlib.crc32(f"{row.method}/{row.video_id}".encode()) % num_shards == shard_index


def process_video(path: str | Path, cfg: PreprocessConfig) -> FaceClip:
    """Sample, detect, landmark and crop the primary (largest) face of one video.

    Args:
        path: the video file.
        cfg: preprocessing params (``max_faces`` is ignored: one face).

    Returns:
        a :class:`FaceClip` with ``N = num_segments * frames_per_segment`` frames.

    Raises:
        VideoError: missing / unreadable / too_short.
        FaceError: no_face.
    """
    return process_faces(path, cfg, max_faces=1)[0]


def _crop_run(frames: np.ndarray, lm: np.ndarray, margin: float, S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One still square box around a run's landmarks ``(L, 68, 2)``: crops ``(L, S, S, 3)``, crop-pixel
    landmarks and the box."""
    box = square_box(lm, margin)                                # one still box per run
    scale = S / float(box[2] - box[0])
    crops = np.stack([crop_square(f, box, S) for f in frames])
    return crops, (lm - box[:2]) * scale, box                   # landmarks in crop pixels


def process_faces(path: str | Path, cfg: PreprocessConfig, max_faces: int | None = None) -> list[FaceClip]:
    """Sample, detect, landmark and crop every face of one video (at most ``max_faces``).

    Args:
        path: the video file.
        cfg: preprocessing params.
        max_faces: cap on the faces kept (default ``cfg.max_faces``); 1 = the primary face only.

    Returns:
        ``[primary, face 1, ...]``: :class:`FaceClip` s of ``N`` frames each; the primary is exactly
        :func:`process_video`'s output, the others ordered by face size (largest first).

    Raises:
        VideoError: missing / unreadable / too_short.
        FaceError: no_face (no primary face).
    """
    max_faces = cfg.max_faces if max_faces is None else max_faces
    clip = read_clip(path, cfg.num_segments, cfg.frames_per_segment, cfg.min_frames)
    frames = clip.frames
    tracker = RunTracker(cfg.detect_scale, cfg.min_face_px)
    L = cfg.frames_per_segment
    S = cfg.crop_size
    R = cfg.num_segments
    crops = np.empty((len(frames), S, S, 3), np.uint8)
    lms = np.empty((len(frames), 68, 2), np.float32)
    boxes = np.empty((len(frames), 4), np.float32)
    run_boxes, prim_boxes, breaks, missing = [], [], [], []
    for r in range(R):
        sl = slice(r * L, (r + 1) * L)
        try:
            lm, det = tracker.run(frames[sl])                   # (L, 68, 2) source pixels
        except FaceError as err:
            if err.reason != "no_face":
                raise
            missing.append(r)                                   # filled below from the nearest good run
            run_boxes.append(np.zeros((0, 4), np.float32))
            prim_boxes.append(None)
            breaks.append({"face": 0, "run": r, "frame": int(clip.frame_idx[sl.start]), "action": "filled"})
            continue
        crops[sl], lms[sl], boxes[sl] = _crop_run(frames[sl], lm, cfg.margin, S)
        if max_faces > 1:
            run_boxes.append(tracker.last_boxes)
            prim_boxes.append(det[0])
            t = lost_at(frames[sl], lm, det)
            if t is not None:
                breaks.append({"face": 0, "run": r, "frame": int(clip.frame_idx[sl.start + t]), "action": "kept"})
    if len(missing) == R:
        raise FaceError("no_face", f"dlib found no face on the first frame of any of the {R} runs")
    frame_idx = np.array(clip.frame_idx).copy()
    for r in missing:   # a run whose first frame has no detectable face: a copy of the nearest good run
        src = min((g for g in range(R) if g not in missing), key=lambda g: (abs(g - r), g))
        sl, ssl = slice(r * L, (r + 1) * L), slice(src * L, (src + 1) * L)
        crops[sl], lms[sl], boxes[sl], frame_idx[sl] = crops[ssl], lms[ssl], boxes[ssl], frame_idx[ssl]
    if not np.isfinite(lms).all():
        raise FaceError("bad_landmarks", "non-finite landmarks")
    common = dict(fps=clip.fps, n_src_frames=clip.n_src_frames, run_starts=clip.run_starts,
                  decode_errors=clip.decode_errors, rotation=clip.rotation, variable_rate=clip.variable_rate)
    n_unique = int(len(np.unique(frame_idx))) if missing else clip.n_unique_frames
    out = [FaceClip(crops, lms, boxes, frame_idx, n_unique_frames=n_unique, filled_runs=missing, **common)]
    if max_faces <= 1:
        return out

    # other faces: tracks detected in at least half the runs, largest first
    side = lambda b: float(b[2] - b[0])  # noqa: E731
    tracks = [t for t in link_tracks(run_boxes, prim_boxes) if 2 * len(t) >= R]
    tracks.sort(key=lambda t: -np.mean([side(b) for b in t.values()]))
    for track in tracks:
        if len(out) >= max_faces:
            break
        face = len(out)
        good: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        face_breaks = []
        for r, det_box in sorted(track.items()):
            sl = slice(r * L, (r + 1) * L)
            lm, det = follow_run(frames[sl], det_box)
            t = lost_at(frames[sl], lm, det)
            if t is not None or not np.isfinite(lm).all():
                face_breaks.append({"face": face, "run": r, "frame": int(clip.frame_idx[sl.start + (t or 0)]),
                                    "action": "filled"})
                continue
            good[r] = _crop_run(frames[sl], lm, cfg.margin, S)
        if 2 * len(good) < R:   # unreliable: dropped (its breaks are still recorded)
            breaks += [b | {"action": "dropped"} for b in face_breaks]
            continue
        breaks += face_breaks
        f_crops, f_lms = np.empty_like(crops), np.empty_like(lms)
        f_boxes, f_idx = np.empty_like(boxes), np.array(clip.frame_idx).copy()
        filled = []
        for r in range(R):
            src = min(good, key=lambda g: (abs(g - r), g))       # nearest good run (earlier on ties)
            if src != r:
                filled.append(r)
            sl, ssl = slice(r * L, (r + 1) * L), slice(src * L, (src + 1) * L)
            f_crops[sl], f_lms[sl], f_boxes[sl] = good[src][0], good[src][1], good[src][2]
            f_idx[sl] = np.asarray(clip.frame_idx)[ssl]
        out.append(FaceClip(f_crops, f_lms, f_boxes, f_idx, n_unique_frames=int(len(np.unique(f_idx))), face=face,
                            filled_runs=filled, **common))
    for fc in out:
        fc.track_breaks = breaks
    return out


def extra_npz_name(npz_rel: str, face: int) -> str:
    """Relative npz path of extra face ``face`` (>= 1) of the video whose primary npz is ``npz_rel``."""
    return f"{npz_rel[:-len('.npz')]}__face{face}.npz"


# --------------------------------------------------------------------------- dataset driver
def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)


def _job(row: dict[str, Any], npz_path: str, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Process one video, write its npz, return its manifest row (never raises)."""
    cfg = PreprocessConfig(**cfg_dict)
    try:
        faces = process_faces(row["src_path"], cfg)
        clip = faces[0]
        meta = {"video_id": row["video_id"], "src_path": row["src_path"], "fps": clip.fps,
                "n_src_frames": clip.n_src_frames, "method": row["method"], "label": row["label"],
                "params_hash": row["params_hash"], "src_hash": row["src_hash"],
                "n_unique_frames": clip.n_unique_frames, "run_starts": clip.run_starts,
                "decode_errors": clip.decode_errors, "rotation": clip.rotation,
                "variable_frame_rate": clip.variable_rate}
        if cfg.max_faces > 1:   # max_faces = 1: exactly the single-face npz
            meta |= {"face": 0, "faces": len(faces), "track_breaks": clip.track_breaks}
        if clip.filled_runs:    # runs with no face on their first frame, copied from the nearest good run
            meta |= {"filled_runs": clip.filled_runs}
        save_npz(npz_path, clip.frames, clip.landmarks, clip.boxes, clip.frame_idx, meta)
        extras = []
        for fc in faces[1:]:
            rel = extra_npz_name(row["npz"], fc.face)
            save_npz(extra_npz_name(npz_path, fc.face), fc.frames, fc.landmarks, fc.boxes, fc.frame_idx,
                     meta | {"face": fc.face, "n_unique_frames": fc.n_unique_frames, "filled_runs": fc.filled_runs})
            extras.append(rel)
        _remove_stale_extras(npz_path, len(faces))
        return row | {"status": "ok", "reason": "", "n_frames": int(len(clip.frames)),
                      "n_unique_frames": clip.n_unique_frames, "decode_errors": clip.decode_errors,
                      "run_starts": " ".join(map(str, clip.run_starts)), "faces": len(faces),
                      "extra_npz": ";".join(extras)}
    except VideoError as err:   # FaceError included: every reason a video cannot be used
        reason = f"{err.reason}: {err.detail}" if err.detail else err.reason
    except Exception as err:  # noqa: BLE001 - one bad video must never stop the stage
        reason = f"error: {type(err).__name__}: {err}"
    _remove_stale_extras(npz_path, 1)
    return _failed(row, reason)


def _remove_stale_extras(npz_path: str, n_faces: int) -> None:
    """Delete ``<video>__face<k>.npz`` files of an earlier run for ``k >= n_faces``."""
    k = max(n_faces, 1)
    while Path(extra_npz_name(npz_path, k)).is_file():   # extras are numbered 1, 2, ... without gaps
        Path(extra_npz_name(npz_path, k)).unlink(missing_ok=True)
        k += 1


def _failed(row: dict[str, Any], reason: str) -> dict[str, Any]:
    return row | {"status": "failed", "reason": reason.replace("\n", " ")[:300], "n_frames": 0,
                  "n_unique_frames": 0, "decode_errors": 0, "run_starts": "", "faces": 0, "extra_npz": ""}


def _worker_main(conn) -> None:
    """Pool worker: receive ``(row, npz_path, cfg_dict)``, send back the row, until ``None``."""
    _init_worker()
    crash_id = os.environ.get(CRASH_ENV)
    while True:
        task = conn.recv()
        if task is None:
            return
        row, npz_path, cfg_dict = task
        if crash_id and row["video_id"] == crash_id:     # test hook, see CRASH_ENV
            os.kill(os.getpid(), signal.SIGKILL)
        conn.send(_job(row, npz_path, cfg_dict))


class _Worker:
    """One spawned worker process, its pipe and the task it holds."""

    def __init__(self, ctx):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.task: tuple[dict, str] | None = None
        self.since = 0.0

    def give(self, task: tuple[dict, str], cfg_dict: dict[str, Any]) -> None:
        self.task, self.since = task, time.monotonic()
        self.conn.send((task[0], task[1], cfg_dict))

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _died(proc) -> str:
    proc.join(5)
    code = proc.exitcode
    if code is not None and code < 0:
        return f"worker_crashed: signal {-code} ({signal.Signals(-code).name})" if -code in signal.valid_signals() \
            else f"worker_crashed: signal {-code}"
    return f"worker_crashed: exit code {code}"


def _run_pool(todo: list[tuple[dict, str]], cfg_dict: dict[str, Any], workers: int, on_done) -> None:
    """Run ``todo`` on ``workers`` spawned processes; ``on_done(row)`` for every video, in completion order.

    A worker that dies (signal, ``os._exit``) or exceeds :data:`VIDEO_TIMEOUT_S` on a video yields a
    failed row for that video only and is replaced by a fresh one; the other videos go on.
    """
    ctx = get_context("spawn")
    queue = list(reversed(todo))
    pool = [_Worker(ctx) for _ in range(min(workers, len(todo)))]
    try:
        for w in pool:
            if queue:
                w.give(queue.pop(), cfg_dict)
        while any(w.task is not None for w in pool):
            busy = [w for w in pool if w.task is not None]
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=5.0))
            for k, w in enumerate(pool):
                if w.task is None:
                    continue
                out = None
                if w.conn in ready or w.proc.sentinel in ready:
                    try:
                        if w.conn.poll():
                            out = w.conn.recv()
                    except (EOFError, OSError):
                        pass
                    if out is None and not w.proc.is_alive():
                        out = _failed(w.task[0], _died(w.proc))
                elif time.monotonic() - w.since > VIDEO_TIMEOUT_S:
                    w.proc.kill()
                    out = _failed(w.task[0], f"worker_timeout: no result after {VIDEO_TIMEOUT_S:.0f}s")
                if out is None:
                    continue
                on_done(out)
                w.task = None
                if not w.proc.is_alive() or out["reason"].startswith(("worker_crashed", "worker_timeout")):
                    w.stop()
                    pool[k] = w = _Worker(ctx)
                if queue:
                    w.give(queue.pop(), cfg_dict)
    finally:
        for w in pool:
            w.stop()


@dataclass
class PreprocessSummary:
    dataset: str
    total: int        # rows of this shard
    skipped: int      # unchanged since the last run
    processed: int    # done in this run
    ok: int           # ok rows in the manifest (this shard)
    failed: int
    seconds: float
    manifest: str

    def __str__(self) -> str:
        return (f"{self.dataset}: {self.total} videos, {self.processed} processed, {self.skipped} unchanged, "
                f"{self.ok} ok, {self.failed} failed in {self.seconds:.1f}s -> {self.manifest}")


def preprocess_dataset(name: str, rows: Iterable[VideoRow], cfg: PreprocessConfig, out_dir: str | Path,
                       progress: bool = True) -> PreprocessSummary:
    """Preprocess every video of one dataset (this machine's shard) into ``out_dir``.

    Args:
        name: dataset name (manifest ``dataset`` column).
        rows: the adapter's rows.
        cfg: preprocessing params (``workers``, ``shard_index``, ``num_shards`` included).
        out_dir: ``data/preprocessed/<name>``.
        progress: show a tqdm bar.

    Returns:
        a :class:`PreprocessSummary`; the manifest (or shard part) is written to ``out_dir``.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mname = shard_name(cfg.shard_index, cfg.num_shards)
    phash = params_hash(cfg)
    mine = [r for r in rows if in_shard(r, cfg.shard_index, cfg.num_shards)]

    previous: dict[tuple[str, str], dict] = {}
    try:
        for rec in read_manifest(out_dir, mname).to_dict("records"):
            previous[(rec["method"], rec["video_id"])] = rec
    except ManifestError:
        pass

    done: dict[tuple[str, str], dict] = {}
    todo: list[tuple[dict, str]] = []
    for r in mine:
        npz_rel = f"{r.method}/{r.video_id}.npz"
        rec = {"video_id": r.video_id, "dataset": name, "split": r.split, "method": r.method, "label": int(r.label),
               "src_path": str(r.path), "npz": npz_rel, "status": "", "reason": "", "n_frames": 0,
               "src_hash": src_hash(r.path), "params_hash": phash, "n_unique_frames": 0, "decode_errors": 0,
               "run_starts": "", "faces": 0, "extra_npz": "", "group": getattr(r, "group", ""),
               "identity": getattr(r, "identity", "")}
        old = previous.get((r.method, r.video_id))
        if (old is not None and old["src_hash"] == rec["src_hash"] and old["params_hash"] == phash
                and old["src_path"] == rec["src_path"]
                # a failure from our own code ("error: ...") is retried; a bad video is not
                and ((old["status"] == "failed" and not str(old["reason"]).startswith("error"))
                     or ((out_dir / npz_rel).is_file()
                         and all((out_dir / e).is_file() for e in str(old.get("extra_npz", "")).split(";") if e)))):
            done[(r.method, r.video_id)] = old | {"split": r.split, "label": int(r.label),
                                                  "group": getattr(r, "group", ""),
                                                  "identity": getattr(r, "identity", "")}
        else:
            todo.append((rec, str(out_dir / npz_rel)))
    skipped = len(done)

    def flush() -> None:
        write_manifest(pd.DataFrame(list(done.values()), columns=COLUMNS), out_dir, mname)

    cfg_dict = asdict(cfg)
    bar = tqdm(total=len(todo), desc=f"preprocess {name}", unit="video", disable=not progress or not todo)
    finished = 0

    def on_done(out: dict) -> None:
        nonlocal finished
        done[(out["method"], out["video_id"])] = out
        bar.update()
        finished += 1
        if finished % _FLUSH_EVERY == 0:
            flush()

    if cfg.workers == 0:      # in process: simplest to debug, but a native crash stops the stage
        _init_worker()
        for rec, npz in todo:
            on_done(_job(rec, npz, cfg_dict))
    elif todo:
        _run_pool(todo, cfg_dict, cfg.workers, on_done)
    bar.close()
    flush()
    if cfg.num_shards > 1 and all((out_dir / shard_name(i, cfg.num_shards)).is_file() for i in range(cfg.num_shards)):
        merge_shards(out_dir, cfg.num_shards)
    statuses = [d["status"] for d in done.values()]
    return PreprocessSummary(name, len(mine), skipped, len(todo), statuses.count("ok"), statuses.count("failed"),
                             time.perf_counter() - t0, str(out_dir / mname))
