"""Benchmark: Video-SBI data throughput and the H.264 augmentation round trip.

    python benchmarks/data.py [--items 24] [--repeats 15] [--json out.json]

1. H.264 round trip of a 32-frame 224 px clip (real frames of data/demo/source/franck.mp4):
   the augmentation's way (``h264_roundtrip``: PyAV codec contexts, packets kept in memory) vs the
   same libx264 settings through a temp MP4 file (PyAV container mux, then demux and decode:
   :func:`h264_via_file`). Median of ``--repeats`` runs each, interleaved, in the same process;
   the ratio is the claim. Wall and CPU time are both reported: on a shared machine the CPU time
   is the steadier figure. (Until issue 12 the baseline was the seed's ffmpeg-subprocess round
   trip, two ffmpeg processes and a raw temp file; that fallback was removed from the package, and
   with it this comparison: its last figures are in docs/training.md.)
2. Video-SBI pairs per second for one worker (``VideoSBIDataset.__getitem__`` in this process:
   npz load, SBI fake, common augmentation, tensor conversion) for the demo profile
   (64 px, T = 8) and the full profile (224 px, T = 32), with the H.264 pass off and on for every
   pair (``compression_prob = 1``: the worst case; training uses 0.5).

The npz inputs are made once by the real preprocessing (``process_video``) in a temp folder.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from stfmamba.config import PreprocessConfig
from stfmamba.data.augment import H264_PRESET, PairAugConfig, h264_roundtrip
from stfmamba.data.dataset import ClipSpec, VideoSBIDataset
from stfmamba.data.manifest import COLUMNS, save_npz, write_manifest
from stfmamba.data.preprocess import process_video
from stfmamba.data.sbi import SBIConfig
from stfmamba.io import write_json

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
    """CPU seconds of this process."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def h264_via_file(frames: np.ndarray, qp: int) -> np.ndarray:
    """Baseline: :func:`h264_roundtrip`'s libx264 settings, but muxed to a temp MP4 and read back.

    Same arguments and result as :func:`~stfmamba.data.augment.h264_roundtrip` (even sides only).
    """
    t, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="stf_h264_") as tmp:
        mp4 = str(Path(tmp) / "clip.mp4")
        with av.open(mp4, mode="w") as container:
            s = container.add_stream("libx264", rate=Fraction(25))
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {"qp": str(int(qp)), "preset": H264_PRESET, "threads": "1"}
            for img in frames:
                vf = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                container.mux(s.encode(vf))
            container.mux(s.encode())
        with av.open(mp4) as container:
            out = [cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
                   for f in container.decode(video=0)]
    return np.stack(out)


def bench_h264(frames: np.ndarray, repeats: int, qp: int = 30) -> dict:
    """Median wall and CPU milliseconds of both round trips (CPU time is robust to a busy machine)."""
    fns = {"memory": h264_roundtrip, "file": h264_via_file}
    wall, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for fn in fns.values():                              # warm-up
        fn(frames, qp)
    for _ in range(repeats):
        for name, fn in fns.items():
            t, c = time.perf_counter(), _cpu_seconds()
            fn(frames, qp)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(_cpu_seconds() - c)
    w = {k: float(np.median(v)) * 1000 for k, v in wall.items()}
    c = {k: float(np.median(v)) * 1000 for k, v in cpu.items()}
    return {"in_memory_ms": w["memory"], "temp_mp4_ms": w["file"], "speedup": w["file"] / w["memory"],
            "in_memory_cpu_ms": c["memory"], "temp_mp4_cpu_ms": c["file"],
            "cpu_speedup": c["file"] / c["memory"]}


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
        print(f"H.264 round trip, 32 frames 224 px, QP 30: codec contexts in memory {h['in_memory_ms']:.1f} ms, "
              f"through a temp MP4 {h['temp_mp4_ms']:.1f} ms -> {h['speedup']:.2f}x "
              f"(CPU time {h['in_memory_cpu_ms']:.1f} vs {h['temp_mp4_cpu_ms']:.1f} ms -> {h['cpu_speedup']:.2f}x)")
        for name, (c, f) in PROFILES.items():
            for comp in (False, True):
                for drift in ("brownian", "multiscale"):
                    rate = bench_pairs(dirs[name], c, f, comp, args.items, drift)
                    key = f"pairs_per_s/{name}/{'h264' if comp else 'no_h264'}/{drift}"
                    out[key] = rate
                    print(f"{name:5s} {c}px T={f:2d}  H.264 {'on ' if comp else 'off'}  drift {drift:10s}: "
                          f"{rate:7.2f} pairs/s per worker")
    if args.json:
        write_json(args.json, out)


if __name__ == "__main__":
    main()
