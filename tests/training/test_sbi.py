"""Video-SBI, drift and pair augmentation on real frames with real dlib landmarks.

The shortcut audit (statistics of fakes vs reals over many dataset pairs) is in test_sbi_audit.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from stfmamba.data import drift as D
from stfmamba.data.augment import PairAugConfig, augment_pair, build_pair_transform, h264_roundtrip
from stfmamba.data.manifest import load_npz
from stfmamba.data.sbi import (HULL_VARIANTS, SBIConfig, blur_mask, face_motion, follow_face, hull_mask,
                                self_blend_clip)


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
    assert res.fake.shape == res.real.shape == frames.shape and res.fake.dtype == res.real.dtype == np.uint8
    assert res.mask.shape == frames.shape[:3]
    assert res.mask.min() >= 0.0 and res.mask.max() <= 1.0
    assert (res.mask.reshape(len(frames), -1).max(1) > 0.2).all(), "every frame has a mask"
    # blending changed pixels inside the mask and left everything else equal to the real (the target)
    diff = np.abs(res.fake.astype(int) - res.real.astype(int)).sum(-1)
    assert diff[res.mask > 0.5 * res.mask.max()].mean() > 0.5
    assert (diff[res.mask == 0] == 0).all()
    # the same seed gives the same fake: one seed per clip
    again = self_blend_clip(frames, lms, np.random.default_rng(3), SBIConfig(drift=drift, use_tps=use_tps))
    assert np.array_equal(again.fake, res.fake) and np.array_equal(again.real, res.real)


def test_colour_transform_goes_to_source_or_target(clip):
    """SBI's source-target augmentation: with the source branch the real is the untouched clip,
    with the target branch the real carries the transform (and both branches occur at p = 0.5)."""
    frames, lms = clip
    for seed in range(4):
        src = self_blend_clip(frames, lms, np.random.default_rng(seed), SBIConfig(source_aug_prob=1.0))
        assert np.array_equal(src.real, frames)
        tgt = self_blend_clip(frames, lms, np.random.default_rng(seed), SBIConfig(source_aug_prob=0.0))
        assert not np.array_equal(tgt.real, frames)
    untouched = [np.array_equal(self_blend_clip(frames, lms, np.random.default_rng(s)).real, frames) for s in range(40)]
    assert 0.25 < np.mean(untouched) < 0.75


def _hull_clip(size: int = 224, t: int = 3):
    """Frames that are white inside the face hull and black outside, with their landmarks."""
    rng = np.random.default_rng(0)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([size / 2 + 0.3 * size * np.cos(ang), size / 2 + 0.35 * size * np.sin(ang)], 1)
    lm = (lm + rng.normal(0, 1, lm.shape)).astype(np.float32)
    img = (hull_mask(lm, (size, size))[..., None] * np.full(3, 255)).astype(np.uint8)
    return np.repeat(img[None], t, 0), np.repeat(lm[None], t, 0)


def _centroid(w: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum()


def test_mask_follows_the_source_geometry():
    """The source and the mask go through the same affine: the mask sits on the shifted source face.

    Source = a white hull on black (untouched: the colour transform goes to the target), blend ratio 1:
    the fake's white region is where the warped source face is; its centroid must be the mask's.
    If only the source moved (the old code), the two centroids would differ by the affine shift.
    """
    frames, lms = _hull_clip()
    cfg = SBIConfig(source_aug_prob=0.0, blend_ratios=(1.0,), hull_variants=("facehull",), drift="none")
    moved = []
    for seed in range(6):
        res = self_blend_clip(frames, lms, np.random.default_rng(seed), cfg)
        white = (res.fake[0].min(-1) > 200) & (res.mask[0] > 0.5)
        c_mask = _centroid(res.mask[0] > 0.5)
        assert np.abs(c_mask - _centroid(white)).max() < 1.5, seed
        moved.append(np.abs(c_mask - _centroid(frames[0, ..., 0] > 0)).max())
    assert max(moved) > 2.0, "the affine moves source and mask away from the hull"


def test_one_parameter_set_per_clip():
    """A still clip (identical frames and landmarks) gets an identical fake in every frame."""
    frames, lms = _hull_clip(96, t=4)
    frames = frames // 2 + 40
    for seed in range(3):
        res = self_blend_clip(frames, lms, np.random.default_rng(seed), SBIConfig(drift="none"))
        assert all(np.array_equal(res.fake[i], res.fake[0]) for i in range(1, 4))
        assert all(np.array_equal(res.mask[i], res.mask[0]) for i in range(1, 4))


def test_fields_follow_the_face():
    """The elastic / TPS field of frame t is frame 0's field moved with the face."""
    field = np.zeros((64, 64, 2), np.float32)
    field[20:30, 20:30] = 1.0
    lm = np.random.default_rng(0).uniform(16, 48, (1, 68, 2)).astype(np.float32)
    lms = np.concatenate([lm, lm + np.array([5.0, 3.0], np.float32)])
    m = face_motion(lms)
    np.testing.assert_allclose(m[1], [[1, 0, 5], [0, 1, 3]], atol=1e-5)
    moved = follow_face(field, m[1])
    assert np.array_equal(moved[23:33, 25:35], field[20:30, 20:30]) and moved[20:23, 20:25].max() == 0


def test_mask_follows_landmarks(clip):
    frames, lms = clip
    h, w = frames.shape[1:3]
    shifted = lms[0] + np.array([5.0, 0.0], np.float32)
    a, b = hull_mask(lms[0], (h, w)), hull_mask(shifted, (h, w))
    cx = lambda m: (np.nonzero(m)[1]).mean()  # noqa: E731
    assert cx(b) - cx(a) == pytest.approx(5.0, abs=1.0)


def test_blur_mask_erode_or_dilate():
    """SBI's blur: the soft edge lies inside the hull (erode) or outside it (dilate)."""
    m = np.zeros((64, 64), np.float32)
    m[16:48, 16:48] = 1
    er = blur_mask(m, 9, 9, dilate=False)
    di = blur_mask(m, 9, 9, dilate=True)
    for b in (er, di):
        assert 0 <= b.min() and b.max() == pytest.approx(1.0)
    assert er[m == 0].max() == 0 and er[m == 1].min() < 0.5          # soft edge inside
    assert di[m == 1].min() > 0.999 and di[m == 0].max() > 0.5       # soft edge outside


@pytest.mark.parametrize("profile", sorted(D.PROFILES))
def test_multiscale_drift_bounded_and_mean_reverting(profile):
    """V8 drift: bounded by the cap, a few px typically, rarely near the cap (the old one sat at it)."""
    norms = []
    for seed in range(100):
        off = D.multiscale_drift(np.random.default_rng(seed), 32, scale=1.0, profile=profile)
        assert off.shape == (32, 2) and np.all(off[0] == 0)
        assert np.linalg.norm(off, axis=1).max() < D.CAP_PX
        norms.append(np.linalg.norm(off[1:], axis=1))
    norms = np.concatenate(norms)
    assert 0.8 < np.median(norms) < 4.0
    assert (norms > 0.9 * D.CAP_PX).mean() < 0.02
    big = D.multiscale_drift(np.random.default_rng(0), 32, scale=2.0, profile=profile)
    assert np.allclose(big, 2.0 * D.multiscale_drift(np.random.default_rng(0), 32, scale=1.0, profile=profile))


def test_brownian_drift_bounded():
    for seed in range(20):
        off = D.brownian_drift(np.random.default_rng(seed), 64, scale=1.0)
        assert np.abs(off).max() <= D.BROWNIAN_CLAMP_PX + 1e-9
    assert np.abs(D.brownian_drift(np.random.default_rng(0), 64)).max() > 0.5


def test_h264_changes_pixels_keeps_shape(clip):
    frames = np.concatenate([clip[0], clip[0][:, :, ::-1]])[:, :39]   # odd height: padding path
    out = h264_roundtrip(frames, 40)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - frames.astype(int)).mean() > 1.0
    lossless = h264_roundtrip(frames, 0)
    assert np.abs(lossless.astype(int) - frames.astype(int)).mean() < np.abs(out.astype(int) - frames.astype(int)).mean()


def test_h264_without_pyav_or_libx264_says_how_to_fix(clip, monkeypatch):
    """PyAV with libx264 is required (no ffmpeg-subprocess fallback): the error names the fix."""
    import types

    from stfmamba.data import augment
    monkeypatch.setattr(augment, "av", None)
    with pytest.raises(RuntimeError, match="pip install av"):
        h264_roundtrip(clip[0], 30)
    monkeypatch.setattr(augment, "av", types.SimpleNamespace(codecs_available=set(), __version__="0"))
    with pytest.raises(RuntimeError, match="without the libx264 encoder: pip install"):
        h264_roundtrip(clip[0], 30)


def test_pair_gets_the_same_augmentation(clip):
    real = clip[0]
    cfg = PairAugConfig(compression=True, compression_prob=1.0, qp_min=35, qp_max=35)
    r, f, info = augment_pair(real, real.copy(), np.random.default_rng(1), cfg)
    assert info["qp"] == 35 and r.shape == real.shape
    assert np.array_equal(r, f), "identical inputs must come out identical: one transform for the pair"
    assert not np.array_equal(r, real)


def test_pair_scale_jitter_is_shared_and_varies():
    """The scale jitter changes the framing (a white square changes size in some pairs, by at most
    ~12 %) and is the same for real and fake."""
    img = np.zeros((1, 100, 100, 3), np.uint8)
    img[:, 30:70, 30:70] = 255
    cfg = PairAugConfig(compression=False)
    sides = []
    for seed in range(16):
        r, f, _ = augment_pair(img, img.copy(), np.random.default_rng(seed), cfg)
        assert np.array_equal(r, f) and r.shape == img.shape
        sides.append((r[0].max(-1) > 128).any(0).sum())
    sides = np.array(sides)
    assert (np.abs(sides - 40) >= 2).sum() >= 3 and np.all(np.abs(sides - 40) <= 6)


def _sharpness(frames: np.ndarray) -> float:
    """Mean absolute difference of horizontally adjacent pixels: falls when detail is lost."""
    x = frames.astype(np.float32)
    return float(np.abs(np.diff(x, axis=2)).mean())


def test_pair_downscale_lowers_resolution_alike_and_is_off_by_default(clip):
    """``training.downscale_prob``: the pair is shown at a lower resolution (detail lost, same size,
    the same factor for real and fake); at 0 the augmented pair is exactly what it was before the option."""
    real = clip[0]
    fake = real.copy()
    fake[:, 40:80, 40:80] = 255 - fake[:, 40:80, 40:80]      # a fake that differs from the real in a region
    plain = PairAugConfig(compression=False, jitter_prob=0.0)
    ds = PairAugConfig(compression=False, jitter_prob=0.0, downscale_prob=1.0, downscale_range=(0.4, 0.4))
    drops = []
    for seed in range(6):
        r0, f0, _ = augment_pair(real, fake, np.random.default_rng(seed), plain)
        r1, f1, _ = augment_pair(real, fake, np.random.default_rng(seed), ds)
        assert r1.shape == real.shape and f1.shape == fake.shape
        drops.append(_sharpness(r1) / _sharpness(r0))
        # outside the changed region real and fake stay equal: one factor for the pair
        assert np.array_equal(r1[:, :, :30], f1[:, :, :30])
    assert max(drops) < 0.85, f"detail left after a 0.4x downscale: {drops}"
    default = PairAugConfig(compression=False)
    assert default.downscale_prob == 0.0
    r0, f0, _ = augment_pair(real, fake, np.random.default_rng(3), default)
    r2, f2, _ = augment_pair(real, fake, np.random.default_rng(3), PairAugConfig(compression=False,
                                                                                 downscale_range=(0.2, 0.3)))
    assert np.array_equal(r0, r2) and np.array_equal(f0, f2)


def test_downscale_before_codec_encodes_the_small_pair_and_enlarges_its_artefacts(clip):
    """``training.downscale_before_codec``: a downscaled pair is JPEG / H.264 encoded at its reduced size
    and scaled back up, so the codec's loss grows with the face (less pixel-level detail than encoding
    the re-enlarged pair at the same QP); one factor and one QP for the real and its fake."""
    real = clip[0]
    fake = real.copy()
    fake[:, 40:80, 40:80] = 255 - fake[:, 40:80, 40:80]
    common = dict(jitter_prob=0.0, compression_prob=1.0, qp_min=40, qp_max=40, downscale_prob=1.0,
                  downscale_range=(0.4, 0.4))
    after = PairAugConfig(**common)
    before = PairAugConfig(**common, downscale_before_codec=True)
    for seed in range(6):
        r0, f0, i0 = augment_pair(real, fake, np.random.default_rng(seed), after)
        r1, f1, i1 = augment_pair(real, fake, np.random.default_rng(seed), before)
        assert r1.shape == real.shape and f1.shape == fake.shape and r1.dtype == np.uint8
        assert i1["scale"] == pytest.approx(0.4) and i1["qp"] == 40 and "scale" not in i0
        assert _sharpness(r1) < _sharpness(r0), f"seed {seed}: encoding the small pair kept more detail"
        r2, f2, _ = augment_pair(real, fake, np.random.default_rng(seed), before)
        assert np.array_equal(r1, r2) and np.array_equal(f1, f2)       # replayed from the pair's seed
    # no factor drawn: the pair keeps its size through JPEG and H.264
    keep = PairAugConfig(**(common | {"downscale_prob": 0.0}), downscale_before_codec=True)
    r3, _, i3 = augment_pair(real, fake, np.random.default_rng(0), keep)
    assert i3["scale"] is None and i3["qp"] == 40 and _sharpness(r3) > _sharpness(r1)
    with pytest.raises(ValueError, match="downscale_prob=0"):
        build_pair_transform(downscale_prob=0.3, codec=False)
