"""Benchmark: the project's preprocessing vs the SBI / DeepfakeBench way, on the demo videos.

    python benchmarks/preprocess.py [--videos 24] [--segments 2] [--frames 8] [--json out.json]

Both sides process the same videos and the same sampled frame indices (``num_segments`` runs of
``frames_per_segment`` frames), one video at a time, interleaved, in this one process:

* ``project`` — :func:`stfmamba.data.preprocess.process_video`: seek to each run, HOG on a
  ``detect_scale`` frame (upsampling only for small faces) on the first frame of each run, the
  face followed through the run by the shape predictor, 68 landmarks at full resolution, crops.
* ``baseline`` — as SBI's ``crop_dlib_ff.py`` and DeepfakeBench's preprocessor do it: decode every
  frame of the video, and on each sampled frame run HOG with one upsampling at full resolution,
  take the largest face, then the 68 landmarks, then a square crop.

Reported: sampled frames per second and seconds per video (wall and CPU time of this process —
CPU time is the steadier figure on a shared machine), the speed-up, and the mean landmark
disagreement between the two as a fraction of the baseline's inter-ocular distance
(outer eye corners).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stfmamba.config import PreprocessConfig, load_params
from stfmamba.data import faces
from stfmamba.data.preprocess import process_video
from stfmamba.data.video import read_all, run_starts
from stfmamba.io import write_json

REPO = Path(__file__).resolve().parents[1]


def baseline(path: Path, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """SBI / DeepfakeBench style: decode all, full-res HOG (upsample 1) + landmarks per sampled frame.

    Returns:
        landmarks ``(N, 68, 2)`` in source pixels and the sampled frame indices ``(N,)``.
    """
    frames, _ = read_all(path)
    starts = run_starts(len(frames), cfg.num_segments, cfg.frames_per_segment)
    idx = np.concatenate([np.arange(s, s + cfg.frames_per_segment) for s in starts])
    lms = []
    for i in idx:
        boxes = faces.detect_faces(frames[i], 1.0, 1)
        if len(boxes) == 0:
            lms.append(np.full((68, 2), np.nan, np.float32))
            continue
        lm = faces.landmarks(frames[i], faces.pick_face(boxes))
        faces.crop_square(frames[i], faces.square_box(lm, cfg.margin), cfg.crop_size)
        lms.append(lm)
    return np.stack(lms), idx


def project(path: Path, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """The project's preprocessing; landmarks mapped back to source pixels."""
    clip = process_video(path, cfg)
    scale = (clip.boxes[:, 2] - clip.boxes[:, 0]) / cfg.crop_size           # source px per crop px
    lm = clip.landmarks * scale[:, None, None] + clip.boxes[:, None, :2]
    return lm, clip.frame_idx


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--root", default=None, help="demo dataset root (default: demo.out_dir of params)")
    ap.add_argument("--videos", type=int, default=24, help="videos to process (reals and fakes, evenly picked)")
    ap.add_argument("--segments", type=int, default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params.preprocess
    over = {k: v for k, v in (("num_segments", args.segments), ("frames_per_segment", args.frames)) if v}
    if over:
        from dataclasses import replace
        cfg = replace(cfg, **over)
    root = Path(args.root or params.demo.out_dir)
    videos = sorted(root.rglob("*.mp4"))
    if not videos:
        raise SystemExit(f"{root}: no demo videos; run `dvc repro demo` (or python stages/demo.py) first")
    videos = [videos[i] for i in np.unique(np.linspace(0, len(videos) - 1, args.videos).astype(int))]
    faces.predictor(), faces.detector()                                       # load models before timing
    wall = {"project": 0.0, "baseline": 0.0}
    cpu = {"project": 0.0, "baseline": 0.0}
    errors = []
    for path in videos:
        for name, fn in (("project", project), ("baseline", baseline)):
            w0, c0 = _clock()
            out = fn(path, cfg)
            w1, c1 = _clock()
            wall[name] += w1 - w0
            cpu[name] += c1 - c0
            if name == "project":
                lm_p, idx_p = out
            else:
                lm_b, idx_b = out
        assert (idx_p == idx_b).all(), f"{path}: the two sides sampled different frames"
        iod = faces.inter_ocular(lm_b)
        err = np.linalg.norm(lm_p - lm_b, axis=-1).mean(-1) / iod                # (N,) per frame
        errors.append(err[np.isfinite(err)])
    errs = np.concatenate(errors)
    n_frames = len(videos) * cfg.stored_frames
    res = {"videos": len(videos), "sampled_frames_per_video": cfg.stored_frames,
           "detect_scale": cfg.detect_scale, "frames_compared": int(len(errs))}
    for name in ("project", "baseline"):
        res[name] = {"fps_wall": n_frames / wall[name], "fps_cpu": n_frames / cpu[name],
                     "s_per_video_wall": wall[name] / len(videos), "s_per_video_cpu": cpu[name] / len(videos)}
    res["speedup_wall"] = wall["baseline"] / wall["project"]
    res["speedup_cpu"] = cpu["baseline"] / cpu["project"]
    res["landmark_error_iod_mean"] = float(errs.mean())
    res["landmark_error_iod_p95"] = float(np.percentile(errs, 95))
    print(f"{len(videos)} demo videos x {cfg.stored_frames} sampled frames ({cfg.num_segments} runs of "
          f"{cfg.frames_per_segment}), {n_frames} frames per side\n")
    print("| | sampled frames/s (wall) | s/video (wall) | frames/s (CPU) | s/video (CPU) |")
    print("|---|---|---|---|---|")
    for name in ("project", "baseline"):
        r = res[name]
        print(f"| {name} | {r['fps_wall']:.1f} | {r['s_per_video_wall']:.3f} | {r['fps_cpu']:.1f} | {r['s_per_video_cpu']:.3f} |")
    print(f"\nspeed-up: {res['speedup_wall']:.1f}x wall, {res['speedup_cpu']:.1f}x CPU")
    print(f"landmark disagreement: mean {100 * res['landmark_error_iod_mean']:.2f} % of the inter-ocular distance "
          f"(95th percentile {100 * res['landmark_error_iod_p95']:.2f} %) over {len(errs)} frames")
    if args.json:
        write_json(args.json, res, indent=1)
    return res


if __name__ == "__main__":
    main()
