"""params.yaml validation: unknown keys (with the closest valid key), wrong types, out-of-range values."""
from pathlib import Path

import pytest
import yaml

from stfmamba.config import ConfigError, load_params

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path, edit):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committed_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.demo.max_videos_per_split == 0
    # the sampled runs fit in one demo video and are spread over it (many poses, issue 10)
    assert p.preprocess.stored_frames == p.preprocess.num_segments * p.preprocess.frames_per_segment <= p.demo.clip_frames
    assert p.preprocess.num_segments >= 4
    assert p.data.used() == ["demo", "demo_cross"]


def test_unknown_key_names_closest(tmp_path):
    path = _write(tmp_path, lambda r: r["preprocess"].update(crop_sise=64))
    with pytest.raises(ConfigError, match=r"preprocess\.crop_sise: unknown key\. Did you mean 'preprocess\.crop_size'"):
        load_params(path)


def test_renamed_eval_clips_per_video_says_the_new_name(tmp_path):
    def old(raw):
        raw["eval"]["clips_per_video"] = raw["eval"].pop("max_clips_per_video")
    with pytest.raises(ConfigError, match=r"eval\.clips_per_video: this key was renamed; use 'eval\.max_clips_per_video"):
        load_params(_write(tmp_path, old))
    # the training-side draws per epoch keep their name
    p = load_params(REPO / "params.yaml")
    assert p.training.clips_per_video >= 1 and p.baseline.clips_per_video >= 1 and p.eval.max_clips_per_video >= 1


def test_unknown_section(tmp_path):
    path = _write(tmp_path, lambda r: r.update(preprocesss={}))
    with pytest.raises(ConfigError, match="Did you mean 'preprocess'"):
        load_params(path)


@pytest.mark.parametrize("section,key,value,msg", [
    ("preprocess", "num_segments", "two", "preprocess.num_segments: expected an integer"),
    ("demo", "max_videos_per_split", 1.5, "demo.max_videos_per_split: expected an integer"),
    ("features", "use_hydra", "yes", "features.use_hydra: expected true or false"),
    ("data", "cross", "demo_cross", "data.cross: expected a list"),
])
def test_wrong_type(tmp_path, section, key, value, msg):
    path = _write(tmp_path, lambda r: r[section].update({key: value}))
    with pytest.raises(ConfigError, match=msg.replace(".", r"\.")):
        load_params(path)


@pytest.mark.parametrize("section,key,value", [
    ("preprocess", "detect_scale", 0.0), ("preprocess", "margin", 3.0), ("demo", "max_videos_per_split", -1),
    ("training", "qp_max", 60)])
def test_out_of_range(tmp_path, section, key, value):
    path = _write(tmp_path, lambda r: r[section].update({key: value}))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: value .* out of range"):
        load_params(path)


def test_cross_field_checks(tmp_path):
    path = _write(tmp_path, lambda r: r["preprocess"].update(shard_index=2, num_shards=2))
    with pytest.raises(ConfigError, match="shard_index=2 must be < preprocess.num_shards=2"):
        load_params(path)
    path = _write(tmp_path, lambda r: r["data"].update(train="dmeo"))
    with pytest.raises(ConfigError, match="Did you mean 'demo'"):
        load_params(path)


@pytest.mark.parametrize("value", [[0.8, 0.4], [0.5], [0.0, 0.5], [0.5, 1.0]])
def test_downscale_range_must_be_an_ordered_pair_of_factors(tmp_path, value):
    path = _write(tmp_path, lambda r: r["training"].update(downscale_range=value))
    with pytest.raises(ConfigError, match=r"training.downscale_range=.* two scale factors \[low, high\]"):
        load_params(path)
