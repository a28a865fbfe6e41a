"""The temporal pseudo-fake family (stfmamba/data/temporal.py) on real frames with real dlib landmarks.

Clips: 112 px crops of the tiny real dataset (2 runs of 4 frames, clips of 4 frames), the run as the
context ``region_retime`` borrows other times from. The shortcut audit of the family (statistics of
many dataset pairs) is in test_temporal_audit.py.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stfmamba.config import TEMPORAL_FAKE_KINDS, ConfigError, Params, STFV8Config, from_dict
from stfmamba.data.clips import random_clip_start
from stfmamba.data.dataset import VideoSBIDataset, sbi_config
from stfmamba.data.manifest import load_npz
from stfmamba.data.sbi import SBIConfig, self_blend_clip, temporal_statistics
from stfmamba.data.temporal import (RAMPS, REGIONS, TEMPORAL_KINDS, TIME_MAPS, ClipContext, TemporalConfig,
                                    temporal_fake_clip)

from trainkit import FRAMES_PER_SEGMENT, tiny_params, write_dataset

CROP = 112
KINDS = list(TEMPORAL_KINDS)
SBI = SBIConfig(drift="multiscale")
ALWAYS = TemporalConfig(prob=1.0, min_change=0.0)    # region_retime never declines (for the pixel tests)


@pytest.fixture(scope="module")
def ddir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("temporal"), "tiny", crop=CROP)


@pytest.fixture(scope="module")
def runs(ddir):
    """Every run of every fixture video: ``[(frames (4, S, S, 3), landmarks (4, 68, 2))]``."""
    out = []
    for k in range(6):
        d = load_npz(ddir / "real" / f"v{k:02d}.npz")
        for r in range(len(d["frames"]) // FRAMES_PER_SEGMENT):
            sl = slice(r * FRAMES_PER_SEGMENT, (r + 1) * FRAMES_PER_SEGMENT)
            out.append((d["frames"][sl], d["landmarks"][sl]))
    return out


def _make(run, seed, kind, cfg=ALWAYS, t=3, offset=1):
    """The temporal fake of ``run``'s frames ``offset .. offset + t`` (the whole run as context)."""
    frames, lms = run
    clip = slice(offset, offset + t)
    return temporal_fake_clip(frames[clip], lms[clip], np.random.default_rng(seed), cfg, kind=kind, sbi=SBI,
                              context=ClipContext(frames, lms, offset))


def _static(run, t=4):
    frames, lms = run
    return np.repeat(frames[:1], t, 0), np.repeat(lms[:1], t, 0)


# --------------------------------------------------------------------------- registry and config
def test_registry_names_match_config():
    assert tuple(TEMPORAL_KINDS) == TEMPORAL_FAKE_KINDS
    assert set(REGIONS) == {"mouth", "lower_face", "eyes"} and set(TIME_MAPS) == {"shift", "reverse", "freeze", "retime"}
    assert set(RAMPS) == {"rise", "fall", "pulse", "dip"}
    with pytest.raises(KeyError, match="unknown temporal fake kind 'flicker'.*region_retime"):
        temporal_fake_clip(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 68, 2), np.float32),
                           np.random.default_rng(0), kind="flicker")


def test_config_keys_default_off_and_validated():
    p = Params()
    assert p.features.use_temporal_fakes is False and p.training.temporal_fake_prob == 0.0
    assert p.training.temporal_fake_kinds == TEMPORAL_FAKE_KINDS
    with pytest.raises(ConfigError, match=r"training\.temporal_fake_kinds: unknown kind 'mouth_swap'.*"
                                          r"Valid kinds: region_retime, blend_ramp, feature_drift"):
        from_dict(Params, {"training": {"temporal_fake_kinds": ["region_retime", "mouth_swap"]}})
    with pytest.raises(ConfigError, match="Did you mean 'blend_ramp'"):
        from_dict(Params, {"training": {"temporal_fake_kinds": ["blend_ramps"]}})
    with pytest.raises(ConfigError, match=r"training\.temporal_fake_prob: value 1.5 is out of range"):
        from_dict(Params, {"training": {"temporal_fake_prob": 1.5}})
    with pytest.raises(ConfigError, match="use_temporal_fakes is true but training.temporal_fake_prob is 0"):
        from_dict(Params, {"features": {"use_temporal_fakes": True}})
    on = from_dict(Params, {"features": {"use_temporal_fakes": True},
                            "training": {"temporal_fake_prob": 0.3, "temporal_fake_kinds": ["feature_drift"]}})
    assert "TemporalFakes" in STFV8Config.phase_a(on).describe()
    frame = STFV8Config.frame_baseline(on)                       # single frames: no motion, the family is off
    assert frame.features.use_temporal_fakes is False and frame.training == STFV8Config.frame_baseline(Params()).training


# --------------------------------------------------------------------------- determinism and one draw per clip
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_clip(runs, kind):
    a, b = _make(runs[0], 7, kind), _make(runs[0], 7, kind)
    for key in ("fake", "real", "mask", "frame_target"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key
    assert a.params == b.params and a.kind == kind
    other = _make(runs[0], 8, kind)
    assert not np.array_equal(other.fake, a.fake) or other.params != a.params


@pytest.mark.parametrize("kind", KINDS)
def test_draws_do_not_depend_on_the_pixels(runs, kind):
    """Every parameter is drawn once per clip, before any pixel is read: the generator is left in the
    same state by two different clips (and by a clip the kind declines), so the draw count is fixed."""
    states = []
    for run in (runs[0], runs[5], _static(runs[2], 4)):
        rng = np.random.default_rng(11)
        frames, lms = run
        temporal_fake_clip(frames[1:4], lms[1:4], rng, TemporalConfig(prob=1.0), kind=kind, sbi=SBI,
                           context=ClipContext(frames, lms, 1))
        states.append(rng.bit_generator.state["state"]["state"])
    assert states[0] == states[1] == states[2]


@pytest.mark.parametrize("kind", ["blend_ramp", "feature_drift"])
def test_one_parameter_set_replayed_on_every_frame(runs, kind):
    """A still clip shows what is shared by all frames: one mask (one hull, one pair of blur kernels)
    in every frame, scaled only by the clip's one temporal curve (blend_ramp) or not at all (feature_drift)."""
    frames, lms = _static(runs[1])
    for seed in range(3):
        res = temporal_fake_clip(frames, lms, np.random.default_rng(seed), ALWAYS, kind=kind,
                                 sbi=dataclasses.replace(SBI, drift="none"))
        on = res.frame_target > 0
        assert on.sum() >= 2
        unit = res.mask[on] / res.frame_target[on][:, None, None]
        assert np.allclose(unit, unit[0], atol=1e-5), "one mask for the whole clip"
        if kind == "blend_ramp":
            assert (res.frame_target == 0).any(), "some frame has no blend at all"
            assert np.array_equal(res.fake[~on], res.real[~on])
        else:
            assert np.allclose(res.frame_target, res.frame_target[0])


def test_region_retime_one_time_map_per_clip(runs):
    """The region of frame i shows frame ``source_frames[i]`` of the run, moved by one integer shift:
    each frame of the fake equals, inside its core, the shifted run frame the clip's time map names."""
    frames, lms = runs[3]
    for seed in range(6):
        res = _make(runs[3], seed, "region_retime", t=4, offset=0)
        src, shifts = res.params["source_frames"], res.params["shifts"]
        for i in range(4):
            core = res.mask[i] >= 0.999
            if src[i] == i:
                assert res.mask[i].max() == 0 and np.array_equal(res.fake[i], frames[i])
                continue
            dx, dy = shifts[i]
            ys, xs = np.nonzero(core)
            moved = frames[src[i]][np.clip(ys - dy, 0, CROP - 1), np.clip(xs - dx, 0, CROP - 1)]
            assert np.array_equal(res.fake[i][core], moved)


# --------------------------------------------------------------------------- where the fake differs
@pytest.mark.parametrize("kind", KINDS)
def test_fake_is_the_real_outside_the_mask(runs, kind):
    """Bit for bit outside the mask, so also its frame-to-frame change there (no global flicker)."""
    for k, run in enumerate(runs):
        res = _make(run, 100 + k, kind)
        outside = res.mask == 0
        assert outside.mean() > 0.2
        assert np.array_equal(res.fake[outside], res.real[outside])
        st = temporal_statistics(res.real, res.fake, res.mask)
        assert st["fake_tdiff_out"] == st["real_tdiff_out"]


@pytest.mark.parametrize("kind", KINDS)
def test_fake_differs_from_the_real_over_time_inside_the_mask(runs, kind):
    """Inside the mask the fake differs from its real, and its frame-to-frame change is not the real's:
    the difference fake - real itself changes from frame to frame. A no-op manipulation gives 0 for
    both (measured on these clips, medians over the 12 runs: region_retime 1.0 / 1.4 luma levels,
    blend_ramp 5.7 / 5.0, feature_drift 2.9 / 2.1; the bounds are half of the smallest)."""
    changes, wobble = [], []
    for k, run in enumerate(runs):
        res = _make(run, 200 + k, kind, t=4, offset=0)
        d = res.fake.astype(np.float32) - res.real.astype(np.float32)       # (T, H, W, 3)
        region = (res.mask > 0.5 * res.mask.max()).any(0)                   # pixels some frame changes
        changes.append(np.abs(d).mean(-1)[:, region].mean())
        wobble.append(np.abs(np.diff(d, axis=0)).mean(-1)[:, region].mean())
    assert np.median(changes) > 0.5, f"{kind}: the fake barely differs from its real ({np.median(changes):.2f})"
    assert np.median(wobble) > 0.5, f"{kind}: the difference does not change over time ({np.median(wobble):.2f})"


def test_static_clip_stays_static_through_region_retime(runs):
    """No temporal signal without motion: content from another time of a still clip is the same
    content, so the fake of a static clip is the static clip itself — and the kind declines it
    (with the default ``min_change``) rather than label it fake. blend_ramp and feature_drift do
    not have this property (documented in stfmamba/data/temporal.py): their curves move a still clip."""
    for k, run in enumerate(runs[:6]):
        frames, lms = _static(run)
        ctx = ClipContext(frames, lms, 0)
        res = temporal_fake_clip(frames, lms, np.random.default_rng(k), ALWAYS, kind="region_retime", context=ctx)
        assert res is None or np.array_equal(res.fake, frames)
        assert temporal_fake_clip(frames, lms, np.random.default_rng(k), TemporalConfig(), kind="region_retime",
                                  context=ctx) is None
        for kind in ("blend_ramp", "feature_drift"):
            moving = temporal_fake_clip(frames, lms, np.random.default_rng(k), ALWAYS, kind=kind,
                                        sbi=dataclasses.replace(SBI, drift="none"))
            assert not all(np.array_equal(moving.fake[i], moving.fake[0]) for i in range(1, 4))


def test_blend_ramp_targets_follow_the_ratio(runs):
    """blend_ramp: per-frame target = the frame's effective blend ratio, one frame at 0, clip still fake."""
    for seed in range(8):
        res = _make(runs[seed % len(runs)], seed, "blend_ramp", t=4, offset=0)
        assert res.frame_target.min() == 0.0 and res.frame_target.max() > 0.2
        np.testing.assert_allclose(res.mask.reshape(4, -1).max(1), res.frame_target, atol=1e-6)


# --------------------------------------------------------------------------- the dataset
def _params(ddir, prob, kinds=TEMPORAL_FAKE_KINDS, on=True):
    p = tiny_params(ddir, clips_per_video=8, temporal_fake_prob=prob, temporal_fake_kinds=kinds)
    return dataclasses.replace(p, features=dataclasses.replace(p.features, use_temporal_fakes=on))


def test_dataset_off_is_video_sbi_unchanged(ddir):
    """Flag off (the default): no draw for the family, every pair is the Video-SBI pair of before."""
    ds = VideoSBIDataset.from_params(_params(ddir, 0.5, on=False), "train", True)
    assert ds.temporal is None
    item = ds[0]                     # Video-SBI's per-frame target: the real's zeros, each fake frame's peak blend
    mask = ds.pair_info(0, common_aug=False)["mask"]
    np.testing.assert_allclose(item["frame_y"][1].numpy(), mask.reshape(len(mask), -1).max(1), atol=1e-6)
    assert item["frame_y"][0].abs().sum() == 0 and item["frame_y"][1].min() > 0
    s = ds.spec
    for i in range(4):
        vid, _ = ds.items[i]
        rng = ds._rng(i)
        start = random_clip_start(rng, s.num_segments, s.frames_per_segment, s.num_frames)
        d = load_npz(ds.videos[vid][1])
        res = self_blend_clip(d["frames"][start:start + 4], d["landmarks"][start:start + 4], rng, ds.sbi)
        real, fake, mask = ds.pair(i, common_aug=False)
        assert np.array_equal(real, res.real) and np.array_equal(fake, res.fake) and np.array_equal(mask, res.mask)


def test_dataset_mixes_the_families_deterministically(ddir):
    """On: about ``temporal_fake_prob`` of the fakes are temporal, each kind appears, the same index and
    epoch give the same clip, a new epoch a new one; items carry the per-frame targets."""
    ds = VideoSBIDataset.from_params(_params(ddir, 0.6), "train", True)
    assert ds.temporal.prob == 0.6 and ds.temporal.kinds == TEMPORAL_FAKE_KINDS
    assert ds.sbi == sbi_config(_params(ddir, 0.6).features)
    kinds = [ds.pair_info(i, common_aug=False)["kind"] for i in range(len(ds))]
    assert set(kinds) == {"sbi", *TEMPORAL_FAKE_KINDS}
    assert 0.35 <= np.mean([k != "sbi" for k in kinds]) <= 0.85
    a, b = ds[5], ds[5]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["frame_y"], b["frame_y"])
    assert a["frame_y"].shape == (2, 4) and a["frame_y"][0].abs().sum() == 0 and a["frame_y"][1].max() > 0
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["x"], a["x"])
    val = VideoSBIDataset.from_params(_params(ddir, 0.6), "val", False)
    assert torch.equal(val[1]["x"], val[1]["x"])
    only = VideoSBIDataset.from_params(_params(ddir, 1.0, ("feature_drift",)), "train", True)
    assert {only.pair_info(i, common_aug=False)["kind"] for i in range(8)} == {"feature_drift"}


def test_batches_collate_with_frame_targets(ddir):
    """A DataLoader batch of mixed Video-SBI and temporal items: x, y, mask and frame_y stack."""
    from torch.utils.data import DataLoader
    ds = VideoSBIDataset.from_params(_params(ddir, 0.5), "train", True)
    batch = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["x"].shape[:3] == (4, 2, 3) and batch["y"].tolist() == [[0, 1]] * 4
    assert batch["frame_y"].shape == (4, 2, 4) and batch["mask"].shape[:3] == (4, 2, 4)
    assert (batch["frame_y"][:, 0] == 0).all() and (batch["frame_y"][:, 1].amax(1) > 0).all()
