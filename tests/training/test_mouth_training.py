"""The mouth stream in training and scoring: dataset items, the augmentation's landmarks, a tiny
training run with ``model.mouth_stream`` on, and the evaluation engine's score against a direct forward.

Real frames and real dlib landmarks (the tiny dataset of ``trainkit.py``).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stfmamba.data.augment import PairAugConfig, augment_pair
from stfmamba.data.clips import ClipSpec, model_clip, mouth_clip
from stfmamba.data.dataset import VideoSBIDataset
from stfmamba.data.manifest import load_npz
from trainkit import tiny_params

MOUTH = 16


def mouth_params(dataset_dir: Path, **training):
    p = tiny_params(dataset_dir, **training)
    return dataclasses.replace(p, model=dataclasses.replace(p.model, mouth_stream=True, mouth_size=MOUTH,
                                                            mouth_dim=16))


def test_items_carry_the_mouth_clips_of_the_real_and_its_fake(tiny_dataset):
    p = mouth_params(tiny_dataset)
    val = VideoSBIDataset.from_params(p, "val", train=False)
    assert val.mouth_size == MOUTH
    item = val[0]
    assert item["mouth"].shape == (2, 3, p.model.num_frames, MOUTH, MOUTH) and item["mouth"].dtype == torch.uint8
    info = val.pair_info(0)
    vid, start = val.items[0]
    lms = load_npz(val.videos[vid][1], keys=("landmarks",))["landmarks"][start:start + p.model.num_frames]
    assert np.array_equal(info["landmarks"], lms)            # no common augmentation: the stored landmarks
    real = torch.from_numpy(mouth_clip(info["real"], lms, MOUTH)).permute(3, 0, 1, 2)
    fake = torch.from_numpy(mouth_clip(info["fake"], lms, MOUTH)).permute(3, 0, 1, 2)
    assert torch.equal(item["mouth"][0], real) and torch.equal(item["mouth"][1], fake)
    # the clips themselves are unchanged by the stream
    off = VideoSBIDataset.from_params(tiny_params(tiny_dataset), "val", train=False)
    assert off.mouth_size is None and "mouth" not in off[0]
    assert torch.equal(off[0]["x"], item["x"]) and torch.equal(off[0]["mask"], item["mask"])
    # training items (common augmentation on): mouth clips too, and the same frames as without the stream
    tr_on = VideoSBIDataset.from_params(mouth_params(tiny_dataset), "train", train=True)
    tr_off = VideoSBIDataset.from_params(tiny_params(tiny_dataset), "train", train=True)
    for i in range(3):
        a, b = tr_on[i], tr_off[i]
        assert a["mouth"].shape[-1] == MOUTH and torch.equal(a["x"], b["x"]) and torch.equal(a["mask"], b["mask"])


def test_common_augmentation_moves_the_landmarks_with_the_frames():
    """A bright dot at the landmarks: after zoom / shift / flip it is where the moved landmarks say."""
    rng = np.random.default_rng(3)
    seen_flip = seen_zoom = False
    for k in range(12):
        frames = np.full((2, 64, 64, 3), 40, np.uint8)
        px, py = 20 + k, 26 + (k % 5)
        frames[:, py - 1:py + 2, px - 1:px + 2] = 255
        lms = np.tile(np.array([px, py], np.float32), (2, 68, 1))
        cfg = PairAugConfig(compression=False, jitter_prob=1.0)
        real, fake, info = augment_pair(frames, frames.copy(), rng, cfg, mask=np.zeros((2, 64, 64), np.float32),
                                        landmarks=lms)
        got = info["landmarks"][0, 0]
        gray = real[0].astype(float).mean(-1)
        y, x = np.unravel_index(gray.argmax(), gray.shape)
        assert abs(x - got[0]) <= 1.5 and abs(y - got[1]) <= 1.5, (k, (x, y), got)
        seen_flip |= got[0] > 32
        seen_zoom |= info["zoom"] is not None
    assert seen_flip and seen_zoom
    # the same draws and frames as without landmarks
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    a = augment_pair(frames, frames, np.random.default_rng(5), PairAugConfig(compression=False))
    b = augment_pair(frames, frames, np.random.default_rng(5), PairAugConfig(compression=False),
                     landmarks=np.zeros((2, 68, 2), np.float32))
    assert np.array_equal(a[0], b[0]) and a[2]["zoom"] == b[2]["zoom"]


@pytest.fixture(scope="module")
def trained_mouth(tiny_dataset, tmp_path_factory):
    from stfmamba.training import TrainPaths, train
    out = tmp_path_factory.mktemp("mouth_run")
    params = mouth_params(tiny_dataset, epochs_phase_a=1, checkpoint_dir=str(out / "ckpt"))
    paths = TrainPaths.for_phase(params, "a", out / "models", out / "metrics", out / "live")
    metrics = train(params, "a", paths)
    return params, paths, metrics


def test_tiny_training_run_with_the_mouth_stream(trained_mouth):
    from stfmamba.models.checkpoint import input_spec, load_model_file
    params, paths, metrics = trained_mouth
    assert math.isfinite(metrics["last_train_loss"]) and metrics.get("skipped_steps", 0) == 0
    model, cfg, meta = load_model_file(paths.model_out)
    assert model.needs_mouth and cfg.model.mouth_stream
    assert meta["input"]["model"]["mouth_stream"] is True and meta["input"]["model"]["mouth_size"] == MOUTH
    assert input_spec(meta, cfg).mouth_size == MOUTH


def test_engine_score_equals_a_direct_forward(trained_mouth, tiny_dataset):
    """One scoring path: the engine's video score is the mean over the clips of a direct forward of
    the clip and its mouth clip, both cut by the functions of the crop contract."""
    from stfmamba.data.manifest import read_manifest
    from stfmamba.evaluation.engine import score_videos
    from stfmamba.models.checkpoint import input_spec, load_model_file
    params, paths, _ = trained_mouth
    model, cfg, meta = load_model_file(paths.model_out)
    spec = input_spec(meta, cfg)
    cs = spec.clip_spec(params.preprocess)
    assert cs.mouth_size == MOUTH
    rows = read_manifest(tiny_dataset)
    rows = rows[rows["split"] == "val"]
    videos, clips = score_videos(model, rows, tiny_dataset, cs, norm=spec.norm, batch_size=3, amp="off",
                                 progress=False)
    assert (videos["status"] == "ok").all() and len(videos) == 2
    for row, v in zip(rows.itertuples(), videos.itertuples()):
        data = load_npz(tiny_dataset / row.npz, keys=("frames", "landmarks"))
        t = cs.num_frames
        x = torch.stack([torch.from_numpy(model_clip(data["frames"][s:s + t], cs.img_size)).permute(3, 0, 1, 2)
                         for s in cs.starts()])
        m = torch.stack([torch.from_numpy(mouth_clip(data["frames"][s:s + t], data["landmarks"][s:s + t], MOUTH))
                         .permute(3, 0, 1, 2) for s in cs.starts()])
        with torch.no_grad():
            logits = model(spec.norm(x), mouth=spec.norm(m))["logits"]
            static = model(spec.norm(x[:, :, :1].expand_as(x)), mouth=spec.norm(m[:, :, :1].expand_as(m)))["logits"]
        p = torch.softmax(logits, -1)[:, 1].numpy()
        q = torch.softmax(static, -1)[:, 1].numpy()
        assert v.score == pytest.approx(float(p.mean()), abs=1e-6)
        assert v.static_score == pytest.approx(float(q.mean()), abs=1e-6)
        got = clips[clips["video_id"] == row.video_id]["score"].to_numpy()
        assert np.allclose(got, p, atol=1e-6)
