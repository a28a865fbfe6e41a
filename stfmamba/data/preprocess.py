"""Preprocessing (design §2): sampled runs of frames → face crops + 68 landmarks, one npz per video.

Per video: ``num_segments`` evenly spaced runs of ``frames_per_segment`` contiguous frames are
decoded by seeking (:func:`stfmamba.data.video.read_runs`); dlib finds the face on the first frame
of each run at ``detect_scale`` and follows it through the run (:class:`~stfmamba.data.faces.RunTracker`);
each run gets one square crop box around all of its landmarks plus ``margin`` (a still crop adds no
motion of its own, which matters to a detector of temporal artefacts); crops are resized to
``crop_size`` and landmarks mapped into crop pixels.

The dataset driver (:func:`preprocess_dataset`) fans videos out to worker processes with a tqdm
bar, writes every npz atomically, records one manifest row per video (``ok`` or ``failed`` with a
reason: one bad video never stops the stage), skips videos whose source hash and params hash are
unchanged since the last run (resumable; the manifest is flushed every few videos), and does only
the videos of shard ``shard_index`` of ``num_shards`` (a stable hash of ``method/video_id``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm import tqdm

from stfmamba.config import PreprocessConfig
from stfmamba.data.adapters.base import VideoRow
from stfmamba.data.faces import FaceError, RunTracker, crop_square, square_box
from stfmamba.data.manifest import (COLUMNS, ManifestError, merge_shards, read_manifest, save_npz,
                                    shard_name, write_manifest)
from stfmamba.data.video import VideoError, probe, read_runs, run_starts

__all__ = ["PREPROCESS_VERSION", "FaceClip", "process_video", "params_hash", "src_hash", "in_shard",
           "preprocess_dataset", "PreprocessSummary"]

PREPROCESS_VERSION = 1   # bump when the output of process_video changes for the same params
_HASHED_FIELDS = ("num_segments", "frames_per_segment", "crop_size", "margin", "detect_scale", "min_face_px")
_FLUSH_EVERY = 20        # rewrite the manifest after this many finished videos (crash-safe resume)


@dataclass
class FaceClip:
    """The arrays of one preprocessed video (the npz contract)."""
    frames: np.ndarray      # (N, S, S, 3) uint8 RGB crops
    landmarks: np.ndarray   # (N, 68, 2) float32, crop pixels
    boxes: np.ndarray       # (N, 4) float32 crop box in source pixels
    frame_idx: np.ndarray   # (N,) int64 source frame index
    fps: float
    n_src_frames: int


def params_hash(cfg: PreprocessConfig) -> str:
    """Hash of the params that change the output (not workers / shards)."""
    blob = json.dumps({k: getattr(cfg, k) for k in _HASHED_FIELDS} | {"version": PREPROCESS_VERSION}, sort_keys=True)
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
    """Sample, detect, landmark and crop one video.

    Args:
        path: the video file.
        cfg: preprocessing params.

    Returns:
        a :class:`FaceClip` with ``N = num_segments * frames_per_segment`` frames.

    Raises:
        VideoError: missing / unreadable / too_few_frames.
        FaceError: no_face.
    """
    info = probe(path)
    starts = run_starts(info.n_frames, cfg.num_segments, cfg.frames_per_segment)
    frames, frame_idx = read_runs(path, starts, cfg.frames_per_segment)
    tracker = RunTracker(cfg.detect_scale, cfg.min_face_px)
    L = cfg.frames_per_segment
    S = cfg.crop_size
    crops = np.empty((len(frames), S, S, 3), np.uint8)
    lms = np.empty((len(frames), 68, 2), np.float32)
    boxes = np.empty((len(frames), 4), np.float32)
    for r in range(cfg.num_segments):
        sl = slice(r * L, (r + 1) * L)
        lm, _ = tracker.run(frames[sl])                         # (L, 68, 2) source pixels
        box = square_box(lm, cfg.margin)                        # one still box per run
        scale = S / float(box[2] - box[0])
        for k, t in enumerate(range(sl.start, sl.stop)):
            crops[t] = crop_square(frames[t], box, S)
        lms[sl] = (lm - box[:2]) * scale                        # crop pixels
        boxes[sl] = box
    if not np.isfinite(lms).all():
        raise FaceError("bad_landmarks", "non-finite landmarks")
    return FaceClip(crops, lms, boxes, frame_idx, info.fps, info.n_frames)


# --------------------------------------------------------------------------- dataset driver
def _init_worker() -> None:
    import cv2
    cv2.setNumThreads(1)


def _job(row: dict[str, Any], npz_path: str, cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Worker: process one video, write its npz, return its manifest row (never raises)."""
    cfg = PreprocessConfig(**cfg_dict)
    try:
        clip = process_video(row["src_path"], cfg)
        meta = {"video_id": row["video_id"], "src_path": row["src_path"], "fps": clip.fps,
                "n_src_frames": clip.n_src_frames, "method": row["method"], "label": row["label"],
                "params_hash": row["params_hash"], "src_hash": row["src_hash"]}
        save_npz(npz_path, clip.frames, clip.landmarks, clip.boxes, clip.frame_idx, meta)
        return row | {"status": "ok", "reason": "", "n_frames": int(len(clip.frames))}
    except (VideoError, FaceError) as err:
        reason = f"{err.reason}: {err.detail}" if err.detail else err.reason
    except Exception as err:  # noqa: BLE001 - one bad video must never stop the stage
        reason = f"error: {type(err).__name__}: {err}"
    return row | {"status": "failed", "reason": reason.replace("\n", " ")[:300], "n_frames": 0}


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
               "src_hash": src_hash(r.path), "params_hash": phash}
        old = previous.get((r.method, r.video_id))
        if (old is not None and old["src_hash"] == rec["src_hash"] and old["params_hash"] == phash
                and old["src_path"] == rec["src_path"]
                # a failure from our own code ("error: ...") is retried; a bad video is not
                and ((old["status"] == "failed" and not str(old["reason"]).startswith("error"))
                     or (out_dir / npz_rel).is_file())):
            done[(r.method, r.video_id)] = old | {"split": r.split, "label": int(r.label)}
        else:
            todo.append((rec, str(out_dir / npz_rel)))
    skipped = len(done)

    def flush() -> None:
        write_manifest(pd.DataFrame(list(done.values()), columns=COLUMNS), out_dir, mname)

    cfg_dict = asdict(cfg)
    bar = tqdm(total=len(todo), desc=f"preprocess {name}", unit="video", disable=not progress or not todo)
    if cfg.workers == 0 or len(todo) <= 1:
        _init_worker()
        for i, (rec, npz) in enumerate(todo, 1):
            out = _job(rec, npz, cfg_dict)
            done[(out["method"], out["video_id"])] = out
            bar.update()
            if i % _FLUSH_EVERY == 0:
                flush()
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn"),
                                 initializer=_init_worker) as pool:
            futures = [pool.submit(_job, rec, npz, cfg_dict) for rec, npz in todo]
            for i, fut in enumerate(as_completed(futures), 1):
                out = fut.result()
                done[(out["method"], out["video_id"])] = out
                bar.update()
                if i % _FLUSH_EVERY == 0:
                    flush()
    bar.close()
    flush()
    if cfg.num_shards > 1 and all((out_dir / shard_name(i, cfg.num_shards)).is_file() for i in range(cfg.num_shards)):
        merge_shards(out_dir, cfg.num_shards)
    statuses = [d["status"] for d in done.values()]
    return PreprocessSummary(name, len(mine), skipped, len(todo), statuses.count("ok"), statuses.count("failed"),
                             time.perf_counter() - t0, str(out_dir / mname))
