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
