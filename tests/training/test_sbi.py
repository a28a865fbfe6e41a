"""Video-SBI, drift and pair augmentation on real frames with real dlib landmarks."""
from __future__ import annotations

import numpy as np
import pytest

from stfmamba.data import drift as D
from stfmamba.data.augment import PairAugConfig, augment_pair, h264_roundtrip
from stfmamba.data.manifest import load_npz
from stfmamba.data.sbi import HULL_VARIANTS, SBIConfig, blur_mask, hull_mask, self_blend_clip


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    d = load_npz(tiny_dataset / "real" / "v00.npz")
    return d["frames"][:4], d["landmarks"][:4]


@pytest.mark.parametrize("variant", sorted(HULL_VARIANTS))
def test_hull_variants_nonempty_inside_face(clip, variant):
    frames, lms = clip
    h, w = frames.shape[1:3]
    m = hull_mask(lms[0], (h, w), variant)
    assert m.shape == (h, w) and set(np.unique(m)) <= {0.0, 1.0}
    assert m.sum() > 0.05 * h * w
    # inside the face: within the landmark box grown by the forehead lift (extended hull)
    x0, y0 = lms[0].min(0)
    x1, y1 = lms[0].max(0)
    ys, xs = np.nonzero(m)
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) + 1
    assert ys.max() <= np.ceil(y1) + 1 and ys.min() >= y0 - (y1 - y0) * 0.5


@pytest.mark.parametrize("drift", ["brownian", "multiscale"])
@pytest.mark.parametrize("use_tps", [False, True])
def test_self_blend_clip_mask_and_fake(clip, drift, use_tps):
    frames, lms = clip
    res = self_blend_clip(frames, lms, np.random.default_rng(3), SBIConfig(drift=drift, use_tps=use_tps))
    assert res.fake.shape == frames.shape and res.fake.dtype == np.uint8
    assert res.mask.shape == frames.shape[:3]
    assert res.mask.min() >= 0.0 and res.mask.max() <= 1.0
    assert (res.mask.reshape(len(frames), -1).max(1) > 0.2).all(), "every frame has a mask"
    # blending changed pixels inside the mask and left the far background alone
    diff = np.abs(res.fake.astype(int) - frames.astype(int)).sum(-1)
    assert diff[res.mask > 0.5 * res.mask.max()].mean() > 0.5
    assert (diff[res.mask == 0] == 0).all()
    # the same seed gives the same fake: one seed per clip
    again = self_blend_clip(frames, lms, np.random.default_rng(3), SBIConfig(drift=drift, use_tps=use_tps))
    assert np.array_equal(again.fake, res.fake)


def test_mask_follows_landmarks(clip):
    frames, lms = clip
    h, w = frames.shape[1:3]
    shifted = lms[0] + np.array([5.0, 0.0], np.float32)
    a, b = hull_mask(lms[0], (h, w)), hull_mask(shifted, (h, w))
    cx = lambda m: (np.nonzero(m)[1]).mean()  # noqa: E731
    assert cx(b) - cx(a) == pytest.approx(5.0, abs=1.0)


def test_blur_mask_range():
    m = np.zeros((32, 32), np.float32)
    m[8:24, 8:24] = 1
    b = blur_mask(m, 7, 3)
    assert 0 <= b.min() and b.max() == pytest.approx(1.0) and 0 < b[8, 8] < 1


@pytest.mark.parametrize("profile", sorted(D.PROFILES))
def test_multiscale_drift_bounded_by_cap(profile):
    for seed in range(20):
        off = D.multiscale_drift(np.random.default_rng(seed), 32, scale=1.0, profile=profile, cap_px=6.0)
        assert off.shape == (32, 2) and np.all(off[0] == 0)
        assert np.linalg.norm(off, axis=1).max() <= 6.0 + 1e-9
    steps = np.linalg.norm(np.diff(D.multiscale_drift(np.random.default_rng(0), 64, profile="jittery",
                                                      cap_px=1e9), axis=0), axis=1)
    assert steps.min() >= D.STEP_MIN_PX - 1e-9 and steps.max() <= D.STEP_MAX_PX + 1e-9


def test_brownian_drift_bounded():
    for seed in range(20):
        off = D.brownian_drift(np.random.default_rng(seed), 64, scale=1.0)
        assert np.abs(off).max() <= D.BROWNIAN_CLAMP_PX + 1e-9
    assert np.abs(D.brownian_drift(np.random.default_rng(0), 64)).max() > 0.5


@pytest.mark.parametrize("backend", ["pyav", "ffmpeg"])
def test_h264_changes_pixels_keeps_shape(clip, backend):
    frames = np.concatenate([clip[0], clip[0][:, :, ::-1]])[:, :39]   # odd height: padding path
    out = h264_roundtrip(frames, 40, backend)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames.astype(int)).mean() > 1.0
    lossless = h264_roundtrip(frames, 0, backend)
    assert np.abs(lossless.astype(int) - frames.astype(int)).mean() < np.abs(out.astype(int) - frames.astype(int)).mean()


def test_pyav_and_ffmpeg_degrade_alike(clip):
    frames = clip[0].astype(int)
    err = {b: np.abs(h264_roundtrip(clip[0], 30, b).astype(int) - frames).mean() for b in ("pyav", "ffmpeg")}
    assert err["pyav"] == pytest.approx(err["ffmpeg"], rel=0.25)


def test_pair_gets_the_same_augmentation(clip):
    real = clip[0]
    cfg = PairAugConfig(compression=True, compression_prob=1.0, qp_min=35, qp_max=35)
    r, f, info = augment_pair(real, real.copy(), np.random.default_rng(1), cfg)
    assert info["qp"] == 35 and r.shape == real.shape
    assert np.array_equal(r, f), "identical inputs must come out identical: one transform for the pair"
    assert not np.array_equal(r, real)
