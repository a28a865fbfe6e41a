"""VideoSBIDataset on the tiny real-frame dataset."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from stfmamba.data.dataset import VideoSBIDataset

from trainkit import tiny_params


def test_train_items_shapes_and_labels(tiny_dataset):
    p = tiny_params(tiny_dataset)
    ds = VideoSBIDataset.from_params(p, "train", True)
    assert len(ds) == 4 * p.training.clips_per_video and ds.excluded == []
    item = ds[0]
    t, s = p.model.num_frames, p.model.img_size
    assert item["x"].shape == (2, 3, t, s, s) and item["x"].dtype == torch.uint8
    assert item["y"].tolist() == [0, 1]
    assert not torch.equal(item["x"][0], item["x"][1])
    # a new epoch draws a new clip / fake
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["x"], item["x"])


def test_val_items_fixed(tiny_dataset):
    ds = VideoSBIDataset.from_params(tiny_params(tiny_dataset), "val", False)
    assert len(ds) == 2 * 2  # 2 val videos x 2 windows (2 runs of 4 frames, T=4)
    a = ds[3]["x"]
    ds.set_epoch(5)                       # validation fakes do not depend on the epoch
    assert torch.equal(a, ds[3]["x"])


def test_broken_npz_excluded_at_build(tiny_dataset, tmp_path):
    ddir = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, ddir)
    (ddir / "real" / "v01.npz").write_bytes(b"not a zip")
    (ddir / "real" / "v02.npz").unlink()
    p = tiny_params(ddir)
    ds = VideoSBIDataset.from_params(p, "train", True)
    reasons = dict(ds.excluded)
    assert set(reasons) == {"v01", "v02"}
    assert "unreadable" in reasons["v01"] and "missing" in reasons["v02"]
    assert {v for v, _ in ds.videos} == {"v00", "v03"}


def test_no_usable_videos_is_a_clear_error(tiny_dataset, tmp_path):
    ddir = tmp_path / "tiny"
    shutil.copytree(tiny_dataset, ddir)
    m = pd.read_csv(ddir / "manifest.csv")
    m["status"] = "failed"
    m.to_csv(ddir / "manifest.csv", index=False)
    with pytest.raises(Exception, match="no usable real videos"):
        VideoSBIDataset.from_params(tiny_params(ddir), "train", True)


def test_normalize_clips_matches_frames_to_tensor(tiny_dataset):
    import numpy as np
    from stfmamba.data.clips import Normalize, frames_to_tensor
    from stfmamba.data.dataset import normalize_clips
    from stfmamba.data.manifest import load_npz
    frames = load_npz(tiny_dataset / "real" / "v00.npz")["frames"][:4, :32, :32]
    u8 = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    for mean, std in (((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)):
        ours = normalize_clips(u8, mean, std)
        assert torch.allclose(ours, frames_to_tensor(frames, Normalize(mean, std)), atol=1e-6)
    # tf_efficientnet_lite0-style 0.5 / 0.5: inputs in [-1, 1]
    x = normalize_clips(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(3, 1, 1, 2), (0.5,) * 3,
                        (0.5,) * 3)
    assert x.min() == -1.0 and x.max() == 1.0
