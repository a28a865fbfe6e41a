"""One crop contract from training to evaluation, on the tiny real-frame dataset (real dlib crops).

- the same npz gives the same uint8 and float model input through the training dataset and the
  evaluation engine (crops of 40 px, model input 32 px: the resize is exercised);
- a model file written by the trainer loads with ``torch.load(weights_only=True)`` and carries the
  preprocessing and clip settings it was trained with;
- the evaluation stage uses them: matching params run, a conflicting ``preprocess.margin`` stops
  with an error naming the key and both values.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stfmamba.config import STFV8Config, to_dict
from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, ClipSpec, Normalize, shuffled_clips, static_clips
from stfmamba.data import dataset as dataset_module
from stfmamba.data.dataset import VideoSBIDataset
from stfmamba.data.manifest import load_npz, read_manifest
from stfmamba.evaluation.engine import score_videos, video_clips
from stfmamba.models import build_model
from stfmamba.models.checkpoint import load_model_file
from stfmamba.training import TrainPaths, train

from trainkit import CROP, tiny_params

ROOT = Path(__file__).resolve().parents[2]


class Recorder(torch.nn.Module):
    """Keeps every input batch; scores nothing in particular."""

    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):  # x: (B, 3, T, H, W)
        self.inputs.append(x.clone())
        return {"logits": torch.zeros(x.shape[0], 2)}


def _no_sbi(frames, landmarks, rng, cfg, src_tf):
    """Stand-in for ``self_blend_clip``: the real clip untouched (SBI may colour-transform it)."""
    return types.SimpleNamespace(real=frames, fake=frames.copy(), mask=np.zeros(frames.shape[:3], np.float32))


def test_dataset_and_engine_feed_the_model_the_same_clip(tiny_dataset, monkeypatch):
    params = tiny_params(tiny_dataset)
    t, size = params.model.num_frames, params.model.img_size
    assert CROP > size        # the resize is part of what is compared
    monkeypatch.setattr(dataset_module, "self_blend_clip", _no_sbi)
    ds = VideoSBIDataset.from_params(params, "val", False)    # fixed clips, no augmentation
    spec = ClipSpec(params.preprocess.num_segments, params.preprocess.frames_per_segment, t, size)
    rows = read_manifest(tiny_dataset)
    rows = rows[rows["split"] == "val"]
    rec = Recorder()
    norm = Normalize.of(build_model(STFV8Config.phase_a(params)))   # the trainer's: the model's data_config
    videos, clips = score_videos(rec, rows, tiny_dataset, spec, norm=norm, batch_size=1, progress=False, amp="off")
    assert (videos["status"] == "ok").all() and len(clips) == len(ds) == 4
    # each batch: real clips, then static, then shuffled
    real_inputs, static_inputs, shuffled_inputs = rec.inputs[0::3], rec.inputs[1::3], rec.inputs[2::3]
    for k in range(len(ds)):
        real_u8 = ds[k]["x"][0]                                          # (3, T, 32, 32) uint8, the real clip
        vid, start = ds.items[k]
        frames = load_npz(ds.videos[vid][1])["frames"]
        engine_u8 = video_clips(frames, spec)[spec.starts().index(start)]
        assert real_u8.dtype == engine_u8.dtype == torch.uint8 and real_u8.shape == (3, t, size, size)
        assert torch.equal(real_u8, engine_u8)
        # the float input the engine gave the model is the trainer's normalisation of the dataset's clip
        assert torch.equal(real_inputs[k][0], norm(real_u8))
        assert torch.equal(static_inputs[k][0], static_clips(norm(real_u8)))
        assert torch.equal(shuffled_inputs[k][0], shuffled_clips(norm(real_u8)))
    # the check can fail: the old evaluation resize (torch area on floats) gave other pixels
    clip = torch.from_numpy(np.ascontiguousarray(frames[start:start + t])).permute(3, 0, 1, 2).float()
    old = torch.nn.functional.interpolate(clip, size=(size, size), mode="area")
    assert (old - engine_u8.float()).abs().max() >= 1.0


def test_training_validation_normalises_with_the_models_own_mean_and_std():
    """The trainer's SBI validation feeds the model its own data_config normalisation (here timm's
    0.5 / 0.5, inputs in [-1, 1]), not a hard-coded ImageNet one."""
    from stfmamba.training.trainer import evaluate_sbi

    class Half(Recorder):
        data_config = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}

    x = torch.zeros(1, 2, 3, 2, 4, 4, dtype=torch.uint8)
    x[:, 1] = 255
    rec = Half()
    evaluate_sbi(rec, [{"x": x, "y": torch.tensor([[0, 1]])}], torch.device("cpu"), None)
    seen = rec.inputs[0]                                       # (2, 3, T, H, W): the real, then the fake
    assert (seen[0] == -1.0).all() and (seen[1] == 1.0).all()


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """A Phase A model file written by the trainer (1 epoch, debug model) and its params."""
    out = tmp_path_factory.mktemp("contract")
    params = tiny_params(tiny_dataset, checkpoint_dir=str(out / "ckpt"), epochs_phase_a=1, clips_per_video=1)
    paths = TrainPaths.for_phase(params, "a", out / "models", out / "metrics", out / "live")
    train(params, "a", paths)
    return params, paths


def test_trainer_model_file_is_plain_and_carries_its_input_settings(trained):
    params, paths = trained
    pre = params.preprocess
    expected = {"preprocess": {"crop_size": CROP, "margin": pre.margin, "detect_scale": pre.detect_scale,
                               "num_segments": pre.num_segments, "frames_per_segment": pre.frames_per_segment,
                               "min_face_px": pre.min_face_px, "min_frames": pre.min_frames,
                               "max_faces": pre.max_faces},
                "model": {"img_size": params.model.img_size, "num_frames": params.model.num_frames},
                "scoring": {"frame_level": False, "clip_frames": params.model.num_frames,
                            "max_clips_per_video": params.eval.max_clips_per_video},
                "normalize": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "channel_order": "RGB"}}
    for path in (paths.model_out, paths.ckpt_dir / "best.pt"):
        blob = torch.load(path, weights_only=True)
        assert blob["input"] == expected and blob["meta"]["phase"] == "a"
    _, cfg, meta = load_model_file(paths.model_out)
    assert meta["input"] == expected and cfg.model == params.model


def _stage_dir(tmp_path: Path, params, paths, tiny_dataset, eval_cfg=None, **preprocess) -> Path:
    """A project folder for ``stages/evaluate.py --phase a``: models/phase_a.pt, params.yaml and
    the tiny dataset with a test split (three of its videos relabelled as fakes)."""
    work = tmp_path / "project"
    (work / "models").mkdir(parents=True)
    shutil.copy(paths.model_out, work / "models" / "phase_a.pt")
    data = work / "preprocessed" / "tiny"
    shutil.copytree(tiny_dataset, data)
    m = pd.read_csv(data / "manifest.csv")
    m["split"] = "test"
    m.loc[3:, "label"], m.loc[3:, "method"] = 1, "Relabelled"
    m.to_csv(data / "manifest.csv", index=False)
    p = dataclasses.replace(params, data=dataclasses.replace(params.data, preprocessed_dir="preprocessed"),
                            preprocess=dataclasses.replace(params.preprocess, **preprocess),
                            eval=eval_cfg or params.eval)
    (work / "params.yaml").write_text(yaml.safe_dump(to_dict(p)))
    return work


def _evaluate(work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / "evaluate.py"), "--phase", "a", "--params",
                           "params.yaml", "--no-progress"], cwd=work, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_evaluation_stage_uses_the_model_file_settings(trained, tiny_dataset, tmp_path):
    params, paths = trained
    work = _stage_dir(tmp_path / "ok", params, paths, tiny_dataset)
    p = _evaluate(work)
    assert p.returncode == 0, p.stdout + p.stderr
    m = json.loads((work / "metrics" / "eval_phase_a.json").read_text())
    assert m["videos"] == {"total": 6, "scored": 6, "failed": 0}
    assert set(m["auc"]) == set(m["static_auc"]) == set(m["auc_ci95"]) == {"overall", "Relabelled"}
    assert m["failed"]["overall"] == {"real": 0, "fake": 0} and m["auc_fail05"] == m["auc"]
    lo, hi = m["auc_ci95"]["overall"]
    assert lo <= m["auc"]["overall"] <= hi
    assert "override" not in p.stdout      # the params the model was trained with: nothing overridden
    scores = pd.read_csv(work / "plots" / "eval_phase_a" / "scores.csv")
    assert (scores["n_clips"] == params.eval.max_clips_per_video).all()   # the model file's clips per video

    # a params value that differs from the model file's overrides it, and says so
    one = _stage_dir(tmp_path / "one", params, paths, tiny_dataset,
                     eval_cfg=dataclasses.replace(params.eval, max_clips_per_video=1))
    p = _evaluate(one)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (f"override: scoring.max_clips_per_video=1 from params.yaml (eval.max_clips_per_video) (the model file "
            f"models/phase_a.pt records {params.eval.max_clips_per_video})") in p.stdout
    assert (pd.read_csv(one / "plots" / "eval_phase_a" / "scores.csv")["n_clips"] == 1).all()

    bad = _stage_dir(tmp_path / "bad", params, paths, tiny_dataset, margin=0.4)
    p = _evaluate(bad)
    assert p.returncode == 2
    assert (f"preprocess.margin: params.yaml has 0.4, models/phase_a.pt was trained with "
            f"{params.preprocess.margin}") in p.stderr
    assert f"Set preprocess.margin: {params.preprocess.margin} in params.yaml" in p.stderr
    assert not (bad / "metrics").exists()
