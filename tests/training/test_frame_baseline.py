"""The frame-level SBI baseline: config section, per-frame loss, local weights, a short training run."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from stfmamba.data.clips import Normalize
from stfmamba.config import BaselineConfig, ConfigError, Params, STFV8Config, from_dict, load_params
from stfmamba.data.manifest import read_manifest
from stfmamba.evaluation.engine import ClipSpec, score_videos
from stfmamba.models import FrameClassifier, build_model
from stfmamba.models.checkpoint import load_model_file
from stfmamba.models.losses import STFV8Loss
from stfmamba.training import TrainPaths, train

from trainkit import FRAMES_PER_SEGMENT, NUM_SEGMENTS, tiny_params


def frame_cfg(**model) -> STFV8Config:
    cfg = STFV8Config.frame_baseline(Params())
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=32, **model))


# --------------------------------------------------------------------------- config
def test_baseline_section_is_validated():
    p = load_params()
    assert p.model.arch == "stfmamba" and p.baseline.num_frames == 1
    assert p.baseline_img_size == (p.baseline.img_size or p.model.img_size) <= p.preprocess.crop_size
    assert STFV8Config.frame_baseline(p).model.img_size == p.baseline_img_size
    with pytest.raises(ConfigError, match=r"baseline\.epoch: unknown key.*baseline\.epochs"):
        from_dict(Params, {"baseline": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"baseline\.eval_frames: value 0 is out of range"):
        from_dict(Params, {"baseline": {"eval_frames": 0}})
    with pytest.raises(ConfigError, match=r"baseline\.img_size=128 exceeds preprocess\.crop_size=64"):
        from_dict(Params, {"preprocess": {"crop_size": 64, "frames_per_segment": 32}, "model": {"img_size": 64},
                           "baseline": {"img_size": 128}})
    with pytest.raises(ConfigError, match=r"baseline\.img_size=8: use at least 16 px"):
        from_dict(Params, {"baseline": {"img_size": 8}})
    with pytest.raises(ConfigError, match=r"model\.num_frames=1: STF-Mamba needs"):
        from_dict(Params, {"model": {"num_frames": 1}})


def test_frame_phase_config_takes_the_baseline_knobs():
    b = BaselineConfig(arch="resnet18", img_size=48, num_frames=2, epochs=3, lr=5e-4, batch_size=7,
                       clips_per_video=5)
    p = Params(baseline=b)
    cfg = STFV8Config.frame_baseline(p)
    assert (cfg.model.arch, cfg.model.img_size, cfg.model.num_frames) == ("resnet18", 48, 2)
    t = cfg.training
    assert (t.batch_size, t.epochs_phase_a, t.lr, t.clips_per_video) == (7, 3, 5e-4, 5)
    assert not any(getattr(cfg.features, k) for k in cfg.features.ARCHITECTURE)
    assert cfg.features.use_compression_aug == p.features.use_compression_aug   # data-side flags kept
    paths = TrainPaths.for_phase(p, "frame")
    assert (str(paths.model_out), str(paths.metrics_out), str(paths.live_dir), str(paths.ckpt_dir)) == (
        "models/frame.pt", "metrics/train_frame.json", "dvclive/frame", "checkpoints/frame")
    assert paths.init_model is None


def test_frame_baseline_fine_tunes_every_layer_whatever_the_video_models_lr_mult():
    """training.pretrained_lr_mult is the video model's (the demo sets 0: its copy of the frame baseline is
    frozen); the frame baseline itself must still train its pretrained network, or it stays ImageNet
    features under a linear classifier (what a demo run with that key shared scored: loss 0.56, AUC 0.78)."""
    p = load_params()
    assert p.training.pretrained_lr_mult == 0.0 and p.model.frame_stream      # the committed demo
    cfg = STFV8Config.frame_baseline(p)
    assert cfg.training.pretrained_lr_mult == 1.0
    assert STFV8Config.phase_a(p).training.pretrained_lr_mult == 0.0


# --------------------------------------------------------------------------- model and loss
def test_clip_logits_are_the_log_mean_frame_probability():
    torch.manual_seed(0)
    model = build_model(frame_cfg()).eval()
    assert isinstance(model, FrameClassifier)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 32, 32))
    assert out["frame_logits"].shape == (2, 3, 2) and out["logits"].shape == (2, 2)
    torch.testing.assert_close(out["logits"].softmax(-1), out["frame_logits"].softmax(-1).mean(1))
    assert "hll_energy" not in out


def test_loss_is_cross_entropy_over_frames_without_hll_or_sdim():
    cfg = frame_cfg()
    torch.manual_seed(0)
    frame_logits = torch.randn(4, 3, 2)
    labels = torch.tensor([0, 1, 1, 0])
    out = {"logits": torch.randn(4, 2), "frame_logits": frame_logits, "aux_losses": {}}
    total, parts = STFV8Loss(cfg)(out, labels)
    ls = cfg.training.label_smoothing
    expected = F.cross_entropy(frame_logits.reshape(12, 2), labels.repeat_interleave(3), label_smoothing=ls)
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"ce", "total"} and parts["total"] == pytest.approx(float(expected))
    clip_ce = F.cross_entropy(out["logits"], labels, label_smoothing=ls)
    assert not torch.allclose(total, clip_ce)          # the clip logits are not what is trained


def test_local_weights_file_is_loaded_and_errors_are_clear(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    ref = timm.create_model("resnet18", pretrained=False)          # an ImageNet-style 1000-class state_dict
    with torch.no_grad():
        ref.conv1.weight.fill_(0.125)
        ref.layer4[1].bn2.running_var.fill_(3.0)
    weights = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), weights)
    model = build_model(frame_cfg(pretrained=str(weights)))
    assert torch.equal(model.net.conv1.weight, ref.conv1.weight)
    assert torch.equal(model.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert model.net.fc.weight.shape == (2, 512)                   # a fresh 2-class head
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(frame_cfg(pretrained=str(tmp_path / "nope.pth")))
    with pytest.raises(ValueError, match="resnet18"):
        build_model(frame_cfg(arch="resnet18x"))
    hf_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)      # no network: fail fast, say what to do
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="copy the weights file to this machine"):
        build_model(frame_cfg(pretrained="hub"))


# --------------------------------------------------------------------------- end to end
def test_frame_baseline_trains_saves_and_scores(tiny_dataset, tmp_path):
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"))
    params = dataclasses.replace(params, baseline=BaselineConfig(
        arch="resnet18", img_size=32, epochs=2, lr=1e-3, batch_size=4, clips_per_video=2, eval_frames=3))
    paths = TrainPaths.for_phase(params, "frame", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    assert paths.model_out.name == "frame.pt" and paths.ckpt_dir.name == "frame"
    m = train(params, "frame", paths)
    assert m["phase"] == "frame" and m["epochs"] == 2 and m["steps"] == 4 and m["skipped_steps"] == 0  # 4 videos x 2 / 4
    assert 0.0 <= m["kept_val_auc"] <= 1.0
    assert json.loads(paths.metrics_out.read_text())["steps"] == 4
    assert (paths.live_dir / "plots" / "metrics" / "train" / "loss_ce.tsv").is_file()
    assert not (paths.live_dir / "plots" / "metrics" / "train" / "loss_hll.tsv").exists()

    model, cfg, meta = load_model_file(paths.model_out)
    assert isinstance(model, FrameClassifier) and meta["phase"] == "frame"
    assert (cfg.model.arch, cfg.model.num_frames, cfg.model.img_size) == ("resnet18", 1, 32)
    rows = read_manifest(tiny_dataset)
    rows = rows[rows["split"] == "val"]
    spec = ClipSpec(NUM_SEGMENTS, FRAMES_PER_SEGMENT, 1, 32, 3)       # 3 evenly spaced single frames
    assert spec.starts() == [0, 4, 7]
    videos, clips = score_videos(model, rows, tiny_dataset, spec, norm=Normalize.of(model), batch_size=8, progress=False)
    assert (videos["status"] == "ok").all() and (videos["n_clips"] == 3).all()
    assert videos["score"].between(0, 1).all() and len(clips) == 3 * len(rows)
