"""Profiles rewrite params.yaml values in place (comments kept), validated, and round-trip."""
import shutil
from pathlib import Path

import pytest
import yaml

from stfmamba.config import ConfigError, load_params
from stfmamba.profiles import PROFILES_DIR, apply_profile, available

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def params(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    return p


def test_profiles_exist():
    assert {"a100", "rtx4090", "demo"} <= set(available())


@pytest.mark.parametrize("name", ["a100", "rtx4090"])
def test_pod_profile_full_sizes_then_back_to_demo(params, name):
    before = yaml.safe_load(params.read_text())
    changes = apply_profile(name, params)
    assert changes
    p = load_params(params)
    assert (p.model.img_size, p.model.num_frames, p.preprocess.crop_size) == (224, 32, 224)
    assert (p.model.stem_dim, *p.model.dims) == (48, 96, 192, 384, 384)
    assert p.budget.cost_per_hour > 0 and p.data.train == "ffpp"
    assert (p.baseline.arch, p.baseline.pretrained, p.baseline_img_size) == ("efficientnet_b4", "hub", 224)
    text = params.read_text()
    assert "# square face crop side (px)" in text and "crop_size: 224" in text  # comment kept on the changed line
    apply_profile("demo", params)
    assert yaml.safe_load(params.read_text()) == before  # the committed params.yaml is the demo profile


def test_rtx4090_keeps_effective_batch_with_accumulation(params):
    apply_profile("rtx4090", params)
    p = load_params(params)
    assert p.training.batch_size * p.training.accum_steps == 8 and p.training.grad_checkpointing


def test_invalid_profile_writes_nothing(params, tmp_path):
    bad = tmp_path / "profiles"
    bad.mkdir()
    (bad / "broken.yaml").write_text("model:\n  num_frames: 64\n")  # longer than frames_per_segment
    before = params.read_text()
    with pytest.raises(ConfigError, match="num_frames"):
        apply_profile("broken", params, bad)
    assert params.read_text() == before
    with pytest.raises(ConfigError, match="not found"):
        apply_profile("nope", params, PROFILES_DIR)


@pytest.mark.parametrize("name", ["a100", "rtx4090"])
def test_pod_profile_models_build_from_local_weights_and_train_a_step(params, name, tmp_path):
    """A pod without network: each pod profile's video model and frame baseline start from a local
    weights file (made here from timm's architecture, with its ImageNet head, as a pod would copy it)
    and take one training step at a tiny input size."""
    import dataclasses

    import timm
    import torch

    from stfmamba.config import STFV8Config
    from stfmamba.models import build_model
    from stfmamba.models.losses import STFV8Loss
    from stfmamba.training.optim import build_optimizer

    apply_profile(name, params)
    p = load_params(params)
    assert p.model.spatial_backbone != "none" and p.model.pretrained == "hub"   # pretrained by default
    files = {}
    for arch in (p.model.spatial_backbone, p.baseline.arch):
        files[arch] = tmp_path / f"{arch}.pth"
        torch.save(timm.create_model(arch, pretrained=False).state_dict(), files[arch])
    model_cfg = dataclasses.replace(p.model, pretrained=str(files[p.model.spatial_backbone]), img_size=64, num_frames=4)
    p = dataclasses.replace(p, model=model_cfg, baseline=dataclasses.replace(
        p.baseline, pretrained=str(files[p.baseline.arch]), img_size=64))
    for cfg in (STFV8Config.phase_b(p), STFV8Config.frame_baseline(p)):
        torch.manual_seed(0)
        model = build_model(cfg, grad_checkpointing=False).train()
        assert model.weights_info.kind == "file" and model.weights_info.loaded > 0
        ref = torch.load(files[cfg.model.spatial_backbone if cfg.model.arch == "stfmamba" else cfg.model.arch])
        own = model.state_dict()
        first = next(k for k in own if k.endswith(next(iter(ref))))   # the weights really are the file's
        assert torch.equal(own[first], next(iter(ref.values())))
        before = own[first].clone()
        opt = build_optimizer(model, 1e-4, 0.05, p.training.pretrained_lr_mult)
        t = cfg.model.num_frames
        x = torch.randn(2, 3, t, 64, 64)
        loss, _ = STFV8Loss(cfg)(model(x), torch.tensor([0, 1]))
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert not torch.equal(model.state_dict()[first], before)   # the pretrained part trains too
