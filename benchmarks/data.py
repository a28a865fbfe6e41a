"""Benchmark: Video-SBI data throughput and the H.264 augmentation round trip.

    python benchmarks/data.py [--items 24] [--repeats 15] [--json out.json]

1. H.264 round trip of a 32-frame 224 px clip (real frames of data/demo/source/franck.mp4):
   in process with PyAV (``h264_pyav``) vs the seed's way — raw frames to a temp file, one
   ffmpeg process to encode, another to decode, read back (``h264_ffmpeg``). Median of
   ``--repeats`` runs each, interleaved, in the same process; the ratio is the claim. Wall and
   CPU time (this process + its ffmpeg children) are both reported: on a shared machine the CPU
   time is the steadier figure.
2. Video-SBI pairs per second for one worker (``VideoSBIDataset.__getitem__`` in this process:
   npz load, SBI fake, common augmentation, tensor conversion) for the demo profile
   (64 px, T = 8) and the full profile (224 px, T = 32), with the H.264 pass off and on for every
   pair (``compression_prob = 1``: the worst case; training uses 0.5).

The npz inputs are made once by the real preprocessing (``process_video``) in a temp folder.
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from stfmamba.config import PreprocessConfig
from stfmamba.data.augment import PairAugConfig, h264_ffmpeg, h264_pyav
from stfmamba.data.dataset import ClipSpec, VideoSBIDataset
from stfmamba.data.manifest import COLUMNS, save_npz, write_manifest
from stfmamba.data.preprocess import process_video
from stfmamba.data.sbi import SBIConfig

SOURCE = Path(__file__).resolve().parents[1] / "data" / "demo" / "source" / "franck.mp4"
PROFILES = {  # name -> (crop_size = img_size, frames_per_segment = num_frames)
    "demo": (64, 8),
    "full": (224, 32),
}


def make_dataset(root: Path, crop: int, frames: int) -> Path:
    """A one-video preprocessed dataset (real dlib crops of franck.mp4) under ``root``."""
    cfg = PreprocessConfig(num_segments=2, frames_per_segment=frames, crop_size=crop)
    clip = process_video(SOURCE, cfg)
    ddir = root / f"bench_{crop}"
    save_npz(ddir / "real" / "v0.npz", clip.frames, clip.landmarks, clip.boxes, clip.frame_idx,
             {"video_id": "v0", "src_path": str(SOURCE), "fps": clip.fps, "n_src_frames": clip.n_src_frames})
    row = dict(video_id="v0", dataset="bench", split="train", method="real", label=0, src_path=str(SOURCE),
               npz="real/v0.npz", status="ok", reason="", n_frames=len(clip.frames), src_hash="", params_hash="")
    write_manifest(pd.DataFrame([row], columns=COLUMNS), ddir)
    return ddir


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the ffmpeg processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_h264(frames: np.ndarray, repeats: int, qp: int = 30) -> dict:
    """Median wall and CPU milliseconds of both round trips (CPU time is robust to a busy machine)."""
    wall, cpu = {"pyav": [], "ffmpeg": []}, {"pyav": [], "ffmpeg": []}
    h264_pyav(frames, qp), h264_ffmpeg(frames, qp)      # warm-up
    for _ in range(repeats):
        for name, fn in (("pyav", h264_pyav), ("ffmpeg", h264_ffmpeg)):
            t, c = time.perf_counter(), _cpu_seconds()
            fn(frames, qp)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(_cpu_seconds() - c)
    w = {k: float(np.median(v)) * 1000 for k, v in wall.items()}
    c = {k: float(np.median(v)) * 1000 for k, v in cpu.items()}
    return {"pyav_ms": w["pyav"], "ffmpeg_two_process_ms": w["ffmpeg"], "speedup": w["ffmpeg"] / w["pyav"],
            "pyav_cpu_ms": c["pyav"], "ffmpeg_two_process_cpu_ms": c["ffmpeg"],
            "cpu_speedup": c["ffmpeg"] / c["pyav"]}


def bench_pairs(ddir: Path, crop: int, frames: int, compression: bool, items: int, drift: str) -> float:
    spec = ClipSpec(num_segments=2, frames_per_segment=frames, num_frames=frames, img_size=crop)
    aug = PairAugConfig(compression=compression, compression_prob=1.0)
    ds = VideoSBIDataset(ddir, "train", spec, SBIConfig(drift=drift), aug, train=True, clips_per_video=items)
    ds[0]  # warm-up (builds the albumentations pipelines)
    t = time.perf_counter()
    for i in range(items):
        ds[i]
    return items / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    # one worker = one thread, as in a DataLoader worker (torch sets 1 thread there; cv2 by worker_init)
    import cv2
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="stf_bench_") as tmp:
        dirs = {name: make_dataset(Path(tmp), c, f) for name, (c, f) in PROFILES.items()}
        from stfmamba.data.manifest import load_npz
        clip = load_npz(dirs["full"] / "real" / "v0.npz")["frames"][:32]
        out["h264_32x224"] = bench_h264(clip, args.repeats)
        h = out["h264_32x224"]
        print(f"H.264 round trip, 32 frames 224 px, QP 30: PyAV in process {h['pyav_ms']:.1f} ms, "
              f"temp file + 2 ffmpeg processes {h['ffmpeg_two_process_ms']:.1f} ms -> {h['speedup']:.2f}x "
              f"(CPU time {h['pyav_cpu_ms']:.1f} vs {h['ffmpeg_two_process_cpu_ms']:.1f} ms -> {h['cpu_speedup']:.2f}x)")
        for name, (c, f) in PROFILES.items():
            for comp in (False, True):
                for drift in ("brownian", "multiscale"):
                    rate = bench_pairs(dirs[name], c, f, comp, args.items, drift)
                    key = f"pairs_per_s/{name}/{'h264' if comp else 'no_h264'}/{drift}"
                    out[key] = rate
                    print(f"{name:5s} {c}px T={f:2d}  H.264 {'on ' if comp else 'off'}  drift {drift:10s}: "
                          f"{rate:7.2f} pairs/s per worker")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
