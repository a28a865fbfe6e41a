"""Shortcut audit of Video-SBI: fakes must differ from their reals only in what a real face swap shares.

Pairs come from the production dataset (:class:`VideoSBIDataset`, production SBI config of the
training params) on real demo crops (112 px, real dlib landmarks, the production crop functions),
100 pairs before the augmentations common to real and fake (those would hide a difference,
not remove it). Each test names the shortcut it guards; the statistics are
:func:`stfmamba.data.sbi.pair_statistics` (face region = where the blend mask is ≥ 95 % of its
maximum, the same pixels in real and fake).

Bounds, and why:

* duplicates (b): nearest-neighbour up-sampling copies pixels, also in texture where natural and
  linearly resampled images practically never repeat a pixel exactly (reals: < 0.7 % of textured
  pairs in every clip). A pair counts as traced when its fake has ≥ 1 percentage point more
  duplicated textured pixel pairs than its real; at most 5 % of pairs may be traced (a 5 %
  false-alarm rate; the original code traced about 20 %).
* blockiness (b): the median fake/real ratio of the 8×8 boundary step within ±5 %.
* sharpness, noise, brightness (c): SBI's source–target augmentation puts the same transforms on
  either side with p = ½, so under "no systematic cue" the fake is sharper / noisier / brighter
  than its real in half the pairs. With 100 pairs the binomial standard deviation is 5 %; the
  band [30 %, 70 %] is ±4σ (pairs of one video are correlated, hence the wide band). The median
  fake/real ratio must lie in [0.8, 1.25], symmetric in log scale (0.8 = 1/1.25): a 25 % median
  shift is what one JPEG-quality step or a 0.5 px blur does; the original code gave 1.5.
"""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from stfmamba.data.clips import model_clip
from stfmamba.data.dataset import VideoSBIDataset
from stfmamba.data.manifest import load_npz
from stfmamba.data.sbi import pair_statistics

from trainkit import tiny_params, write_dataset

AUDIT_CROP = 112
N_PAIRS = 100


@pytest.fixture(scope="module")
def audit_params(tmp_path_factory):
    """Training params on a 112 px crop version of the tiny real dataset (25 clips per video)."""
    ddir = write_dataset(tmp_path_factory.mktemp("audit"), "tiny", crop=AUDIT_CROP)
    return tiny_params(ddir, clips_per_video=N_PAIRS // 4)


@pytest.fixture(scope="module")
def pairs(audit_params):
    """``N_PAIRS`` (real, fake, mask) of the production dataset, before the common augmentation."""
    ds = VideoSBIDataset.from_params(audit_params, "train", True)
    assert len(ds) == N_PAIRS
    return [ds.pair(i, common_aug=False) for i in range(len(ds))]


@pytest.fixture(scope="module")
def stats(pairs) -> pd.DataFrame:
    return pd.DataFrame([pair_statistics(*p) for p in pairs])


def test_fake_equals_real_outside_the_blend_mask(pairs):
    """(a) Before the common augmentation the fake is the real exactly outside the (1 px dilated)
    mask, at the stored crop size: no global change of the fake (e.g. a transformed target paired
    with the untouched clip as the real) and no resampling of the whole frame."""
    for real, fake, mask in pairs:
        assert real.shape == fake.shape and real.shape[1:3] == (AUDIT_CROP, AUDIT_CROP)
        outside = np.stack([cv2.dilate((m > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0 for m in mask])
        assert outside.mean() > 0.2
        assert np.array_equal(fake[outside], real[outside])
        core = mask >= 0.95 * mask.max()
        assert (fake[core] != real[core]).any(-1).mean() > 0.2      # the blend did something


def test_no_resampling_trace_in_fakes_only(stats):
    """(b) Duplicated adjacent pixels (nearest up-sampling) and 8×8 blockiness: fakes like reals."""
    traced = (stats.fake_dup - stats.real_dup) >= 0.01
    assert traced.mean() <= 0.05, f"{traced.mean():.0%} of fakes carry duplicated pixels their real lacks"
    block = np.median(stats.fake_block / stats.real_block)
    assert 0.95 <= block <= 1.05, f"median 8x8 blockiness ratio fake/real {block:.3f}"


@pytest.mark.parametrize("key", ["lap", "noise", "bright"])
def test_sharpness_noise_brightness_overlap(stats, key):
    """(c) Sharpness (Laplacian variance), noise and brightness of fakes and reals overlap both ways."""
    ratio = stats[f"fake_{key}"] / stats[f"real_{key}"]
    above = (stats[f"fake_{key}"] > stats[f"real_{key}"]).mean()
    assert 0.8 <= np.median(ratio) <= 1.25, f"{key}: median fake/real {np.median(ratio):.3f}"
    assert 0.3 <= above <= 0.7, f"{key}: fake above its real in {above:.0%} of pairs"


def test_labels_real_first_fake_second(audit_params):
    """(d) ``y == (0, 1)`` and ``x[1]`` is the clip that differs from the untouched real frames inside
    the mask (with the colour transform on the source, the real is the untouched clip)."""
    from dataclasses import replace
    ds = VideoSBIDataset.from_params(audit_params, "val", False)
    ds.sbi = replace(ds.sbi, source_aug_prob=1.0)
    size = ds.spec.img_size
    for i in range(len(ds)):
        item = ds[i]
        assert item["y"].tolist() == [0, 1] and item["x"].shape[:2] == (2, 3)
        vid, start = ds.items[i]
        frames = load_npz(ds.videos[vid][1])["frames"][start:start + ds.spec.num_frames]
        untouched = model_clip(frames, size).astype(int)                     # (T, size, size, 3)
        real, fake = (item["x"][k].permute(1, 2, 3, 0).numpy().astype(int) for k in (0, 1))
        _, _, mask = ds.pair(i, common_aug=False)
        full = np.repeat(mask[..., None] / mask.max(), 3, -1)                # (T, S, S, 3) in [0, 1]
        core = model_clip((full * 255).astype(np.uint8), size)[..., 0] > 200
        assert np.array_equal(real, untouched), "x[0] must be the real clip"
        assert (fake != untouched).any(-1)[core].mean() > 0.2, "x[1] must be the fake"
