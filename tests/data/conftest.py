"""Fixtures of the data tests: a tiny demo dataset built by the real demo code from the committed
media, and a folder of broken videos (truncated, empty, text, no face, too short)."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stfmamba.config import DemoConfig, PreprocessConfig
from stfmamba.data.video import read_runs, write_video

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "data" / "demo" / "source"


def tiny_demo_config(root: Path) -> DemoConfig:
    """One video per split, 30-frame clips: every code path of the demo stage in a few seconds."""
    return DemoConfig(source_dir=str(SOURCE), out_dir=str(root / "raw"), cross_dir=str(root / "raw_cross"),
                      clip_frames=30, seed=0, splits_dir=str(REPO / "splits" / "demo"),
                      max_videos_per_split=1, workers=1)


def run_demo_stage(cfg: DemoConfig, tmp: Path) -> subprocess.CompletedProcess:
    """``python stages/demo.py`` in a fresh process (as ``dvc repro`` runs it) with ``cfg`` as demo params."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["demo"] = dataclasses.asdict(cfg)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    p = subprocess.run([sys.executable, str(REPO / "stages" / "demo.py"), "--params", str(params)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> DemoConfig:
    root = tmp_path_factory.mktemp("demo_a")
    cfg = tiny_demo_config(root)
    run_demo_stage(cfg, root)
    return cfg


@pytest.fixture(scope="session")
def pre_cfg() -> PreprocessConfig:
    return PreprocessConfig(num_segments=2, frames_per_segment=8, crop_size=64, margin=0.25, detect_scale=0.5,
                            min_face_px=80, workers=2, min_frames=16)


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory, tiny_demo) -> dict[str, Path]:
    """Broken inputs next to two good ones, keyed by the reason each should fail with."""
    d = tmp_path_factory.mktemp("bad")
    good = sorted((Path(tiny_demo.out_dir) / "original_sequences").rglob("*.mp4"))[0]
    data = good.read_bytes()
    out = {"good": d / "good.mp4", "truncated": d / "truncated.mp4", "empty": d / "empty.mp4",
           "text": d / "text.mp4", "no_face": d / "background.mp4", "short": d / "short.mp4"}
    shutil.copy(good, out["good"])
    out["truncated"].write_bytes(data[: len(data) // 3])
    out["empty"].write_bytes(b"")
    out["text"].write_text("this is not a video\n")
    frames, _ = read_runs(SOURCE / "franck.mp4", [0], 24)
    write_video(out["no_face"], np.ascontiguousarray(frames[:, :, :80]), fps=24)   # blue background strip
    write_video(out["short"], frames[:10], fps=24)                                  # 10 < 2 x 8 frames
    return out
