"""Evaluation's side of the input contract (model file vs params), static clips and the AUC interval."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, Normalize
from stfmamba.config import ConfigError, PreprocessConfig, STFV8Config, to_dict
from stfmamba.data.clips import ClipSpec, shuffle_order, shuffled_clips, static_clips
from stfmamba.data.manifest import save_npz
from stfmamba.evaluation.__main__ import main as cli_main
from stfmamba.evaluation.engine import score_videos
from stfmamba.evaluation.metrics import auc, bootstrap_auc_ci
from stfmamba.evaluation.reports import summarize
from stfmamba.evaluation.run import check_input_contract
from stfmamba.models import build_model
from stfmamba.models.checkpoint import input_settings, save_model_file

TRAINED = PreprocessConfig(num_segments=2, frames_per_segment=4, crop_size=64, margin=0.25, detect_scale=0.5)
MODEL = STFV8Config.debug().model     # img_size 32, num_frames 4


def _meta(pre=TRAINED):
    return {"input": input_settings(pre, MODEL)}


# ----------------------------------------------------------------------------- model file vs params
def test_matching_preprocess_passes():
    assert check_input_contract(_meta(), TRAINED, MODEL, model_path="m.pt", params_path="p.yaml") == []


def test_conflicting_margin_names_key_values_and_fix():
    pre = dataclasses.replace(TRAINED, margin=0.4)
    with pytest.raises(ConfigError) as err:
        check_input_contract(_meta(), pre, MODEL, model_path="models/phase_a.pt", params_path="p.yaml")
    msg = str(err.value)
    assert "preprocess.margin: p.yaml has 0.4, models/phase_a.pt was trained with 0.25" in msg
    assert "Set preprocess.margin: 0.25 in p.yaml" in msg and "crop_size" not in msg


def test_every_conflicting_crop_key_is_reported_at_once():
    pre = dataclasses.replace(TRAINED, margin=0.4, crop_size=96)
    with pytest.raises(ConfigError, match=r"preprocess.crop_size: p.yaml has 96, m.pt was trained with 64; "
                                          r"preprocess.margin: p.yaml has 0.4"):
        check_input_contract(_meta(), pre, MODEL, model_path="m.pt", params_path="p.yaml")


def test_sampling_settings_may_differ_with_a_warning():
    pre = dataclasses.replace(TRAINED, num_segments=4, detect_scale=0.25)
    with pytest.warns(UserWarning) as caught:
        notes = check_input_contract(_meta(), pre, MODEL, model_path="m.pt", params_path="p.yaml")
    assert [n.split(":")[0] for n in notes] == ["preprocess.detect_scale", "preprocess.num_segments"]
    assert "preprocess.num_segments: p.yaml has 4, m.pt was trained with 2" in notes[1]
    assert [str(w.message) for w in caught] == notes


def test_old_model_file_gets_the_geometry_check_only():
    pre = dataclasses.replace(TRAINED, margin=1.0)
    assert check_input_contract({"input": None}, pre, MODEL, model_path="m.pt", params_path="p.yaml") == []
    with pytest.raises(ConfigError, match="preprocess.crop_size=16 / frames_per_segment=4 are smaller"):
        check_input_contract({"input": None}, dataclasses.replace(pre, crop_size=16), MODEL,
                             model_path="m.pt", params_path="p.yaml")


def test_cli_refuses_a_conflicting_params_margin(tmp_path, capsys):
    cfg = STFV8Config.debug()
    save_model_file(tmp_path / "model.pt", build_model(cfg), cfg, preprocess=TRAINED)
    # a params file for this model whose preprocess section says margin 0.5
    params = {"preprocess": {**to_dict(TRAINED), "margin": 0.5}, "model": to_dict(cfg.model)}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = cli_main(["--checkpoint", str(tmp_path / "model.pt"), "--dataset-root", str(tmp_path / "none.csv"),
                     "--adapter", "csv", "--out", str(tmp_path / "out"), "--params", str(tmp_path / "params.yaml")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"preprocess.margin: {tmp_path / 'params.yaml'} has 0.5, {tmp_path / 'model.pt'} was trained with 0.25" in err
    assert not (tmp_path / "out").exists()    # refused before any preprocessing


# ----------------------------------------------------------------------------- static clips
class Motion(torch.nn.Module):
    """Logit of 'fake' = mean absolute frame-to-frame change: a purely temporal scorer."""

    def forward(self, x):  # x: (B, 3, T, H, W)
        m = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4)) if x.shape[2] > 1 else x.mean(dim=(1, 2, 3, 4))
        return {"logits": torch.stack([torch.zeros_like(m), 10 * m], dim=1)}


def _flicker_dataset(root, n=3):
    """n still reals and n fakes whose brightness flickers from frame to frame (8 frames, 16 px)."""
    recs = []
    rng = np.random.default_rng(0)
    for label in (0, 1):
        for i in range(n):
            base = rng.integers(40, 200, size=(1, 16, 16, 3))
            amp = 25 * (i + 1) if label else 0
            frames = np.clip(base + amp * (np.arange(8) % 2)[:, None, None, None], 0, 255).astype(np.uint8)
            npz = f"{label}/{i}.npz"
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            save_npz(root / npz, frames, np.zeros((8, 68, 2), np.float32), np.zeros((8, 4), np.float32),
                     np.arange(8), {"video_id": f"v{i}"})
            recs.append(dict(video_id=f"v{i}", method="flicker" if label else "real", label=label, npz=npz,
                             status="ok", reason=""))
    return pd.DataFrame(recs)


def test_static_clips_repeat_the_first_frame():
    x = torch.arange(2 * 3 * 4 * 2 * 2).reshape(2, 3, 4, 2, 2)
    s = static_clips(x)
    assert s.shape == x.shape and torch.equal(s[:, :, 3], x[:, :, 0]) and torch.equal(s[:, :, :1], x[:, :, :1])


def test_static_auc_shows_what_motion_adds(tmp_path):
    rows = _flicker_dataset(tmp_path)
    spec = ClipSpec(num_segments=2, frames_per_segment=4, num_frames=4, img_size=16)
    videos, clips = score_videos(Motion(), rows, tmp_path, spec, norm=Normalize(IMAGENET_MEAN, IMAGENET_STD), progress=False, amp="off")
    assert (videos["status"] == "ok").all()
    # a static clip has no motion at all: every static score is sigmoid(0)
    assert np.allclose(videos["static_score"], 0.5) and np.allclose(clips["static_score"], 0.5)
    m = summarize(videos, clips)
    assert m["auc"]["overall"] == 1.0 and m["static_auc"]["overall"] == 0.5


@pytest.mark.parametrize("t", [2, 3, 4, 5, 8, 16, 32])
def test_shuffle_order_keeps_every_frame_and_no_neighbours(t):
    order = shuffle_order(t)
    assert sorted(order) == list(range(t)) and order != list(range(t))
    if t >= 4:   # every step of the shuffled clip jumps at least two frames of the clip
        assert all(abs(a - b) >= 2 for a, b in zip(order, order[1:]))
    x = torch.arange(2 * 3 * t * 2).reshape(2, 3, t, 2, 1)
    assert torch.equal(shuffled_clips(x), x[:, :, order])


class Ramp(torch.nn.Module):
    """Logit of 'fake' = 0.1 x how smooth the brightness ramp is: the mean frame-to-frame change minus
    its spread (a steady ramp scores high; the same frames out of order jump and score low)."""

    def forward(self, x):  # x: (B, 3, T, H, W)
        d = x.mean(dim=(1, 3, 4)).diff(dim=1).abs()           # (B, T - 1)
        return {"logits": torch.stack([torch.zeros_like(d[:, 0]), 0.1 * (d.mean(1) - 3 * d.std(1))], dim=1)}


def test_order_gain_separates_sequence_evidence_from_per_frame_evidence(tmp_path):
    """Fakes are steady brightness ramps, reals the same frames in random order per video: a model
    that reads the sequence (Ramp) loses its edge on shuffled clips (order gain > 0); a per-frame
    model (mean brightness) scores shuffled clips exactly as the clips (order gain 0), although its
    static clips (one frame) score differently."""
    rng = np.random.default_rng(1)
    recs = []
    for label in (0, 1):
        for i in range(4):
            levels = 40 + 12 * np.arange(8) + 3 * i
            if label == 0:
                levels = rng.permutation(levels)
            frames = np.broadcast_to(levels[:, None, None, None], (8, 16, 16, 3)).astype(np.uint8).copy()
            npz = f"{label}/{i}.npz"
            (tmp_path / str(label)).mkdir(parents=True, exist_ok=True)
            save_npz(tmp_path / npz, frames, np.zeros((8, 68, 2), np.float32), np.zeros((8, 4), np.float32),
                     np.arange(8), {"video_id": f"v{label}{i}"})
            recs.append(dict(video_id=f"v{label}{i}", method="ramp" if label else "real", label=label, npz=npz,
                             status="ok", reason=""))
    rows = pd.DataFrame(recs)
    spec = ClipSpec(num_segments=1, frames_per_segment=8, num_frames=8, img_size=16)
    norm = Normalize((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))     # keeps the 0-255 levels
    videos, clips = score_videos(Ramp(), rows, tmp_path, spec, norm=norm, progress=False, amp="off")
    m = summarize(videos, clips)
    assert m["auc"]["overall"] == 1.0 and m["shuffled_auc"]["overall"] < 0.75
    assert m["order_gain"]["overall"] == pytest.approx(1.0 - m["shuffled_auc"]["overall"])
    assert m["order_gain"]["overall"] > 0.25

    class MeanLevel(torch.nn.Module):
        def forward(self, x):
            v = x.mean(dim=(1, 2, 3, 4))
            return {"logits": torch.stack([torch.zeros_like(v), v / 50], dim=1)}

    videos, clips = score_videos(MeanLevel(), rows, tmp_path, spec, norm=norm, progress=False, amp="off")
    assert np.allclose(videos["shuffled_score"], videos["score"], atol=1e-6)
    assert not np.allclose(videos["static_score"], videos["score"], atol=1e-3)
    assert summarize(videos, clips)["order_gain"]["overall"] == pytest.approx(0.0)


def test_frame_model_static_score_is_its_score(tmp_path):
    rows = _flicker_dataset(tmp_path)
    spec = ClipSpec(num_segments=2, frames_per_segment=4, num_frames=1, img_size=16, max_clips_per_video=3)
    videos, clips = score_videos(Motion(), rows, tmp_path, spec, norm=Normalize(IMAGENET_MEAN, IMAGENET_STD), progress=False, amp="off")
    assert (videos["n_clips"] == 3).all()
    assert np.array_equal(videos["static_score"], videos["score"]) and np.array_equal(clips["static_score"], clips["score"])


# ----------------------------------------------------------------------------- bootstrap interval
def _scores(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    return labels, np.r_[rng.normal(0.0, 1.0, n), rng.normal(1.0, 1.0, n)]


def test_bootstrap_interval_contains_the_auc_and_narrows_with_more_videos():
    y, s = _scores(30, 1)
    lo, hi = bootstrap_auc_ci(y, s)
    assert lo < auc(y, s) < hi and 0.0 <= lo and hi <= 1.0
    assert bootstrap_auc_ci(y, s) == (lo, hi)      # fixed seed: the same interval every run
    y4, s4 = _scores(480, 1)                        # 16x the videos: about a quarter of the width
    lo4, hi4 = bootstrap_auc_ci(y4, s4)
    assert lo4 < auc(y4, s4) < hi4
    assert hi4 - lo4 < 0.5 * (hi - lo)


def test_bootstrap_keeps_the_class_sizes_and_needs_both_classes():
    assert bootstrap_auc_ci(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])) is None
    # one real and one fake: a stratified resample always holds both, so the AUC is always defined
    assert bootstrap_auc_ci(np.array([0, 1]), np.array([0.2, 0.9]), n_resamples=50) == (1.0, 1.0)
