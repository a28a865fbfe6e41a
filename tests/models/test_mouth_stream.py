"""The mouth stream (``model.mouth_stream``): the mouth crop, the model's second input, the model file.

The crop tests use real frames and real dlib landmarks (the training tests' fixture builder,
``tests/training/trainkit.py``) at the demo profile's 128 px crops.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stfmamba.config import PreprocessConfig, STFV8Config
from stfmamba.data.clips import MOUTH_MARGIN, ClipSpec, mouth_box, mouth_clip
from stfmamba.data.faces import MOUTH
from stfmamba.models import build_model
from stfmamba.models.checkpoint import input_spec, load_model_file, save_model_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from trainkit import SOURCE, make_npz  # noqa: E402

T = 4


def mouth_cfg(on: bool = True, **model) -> STFV8Config:
    cfg = STFV8Config.debug()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mouth_stream=on, mouth_size=16,
                                                              mouth_dim=16, **model))


@pytest.fixture(scope="module")
def npz128() -> dict:
    return make_npz(SOURCE / "franck.mp4", 0, crop=128)


def test_mouth_box_is_centred_on_the_lips_and_covers_them(npz128):
    frames, lms = npz128["frames"][:T], npz128["landmarks"][:T]
    size = 48
    clip = mouth_clip(frames, lms, size)
    assert clip.shape == (T, size, size, 3) and clip.dtype == np.uint8
    x0, y0, side = mouth_box(lms)
    lips = lms[:, MOUTH].reshape(-1, 2)
    mapped = (lips - [x0, y0]) * size / side              # lip landmarks in mouth-crop pixels
    assert np.all(mapped >= 0) and np.all(mapped <= size)  # every lip point of every frame is inside
    centre = mapped.mean(0)
    assert np.all(np.abs(centre - size / 2) < 0.12 * size), centre   # the mean lip point near the centre
    # the margin: the lips' larger extent is 1 / (1 + 2 * margin) of the side
    extent = (lips.max(0) - lips.min(0)).max()
    assert side == pytest.approx(extent * (1 + 2 * MOUTH_MARGIN), abs=1)
    # a mouth-sized box of a 128 px face crop: about a third to a half of it
    assert 0.25 * 128 < side < 0.65 * 128


def test_mouth_crop_is_one_still_box_and_a_static_clip_stays_static(npz128):
    import cv2
    frames, lms = npz128["frames"][:T], npz128["landmarks"][:T]
    assert not np.allclose(lms[0], lms[-1])            # the landmarks move within the run
    clip = mouth_clip(frames, lms, 48)
    x0, y0, side = mouth_box(lms)                      # one box for the clip: every frame cut with it
    assert x0 >= 0 and y0 >= 0 and x0 + side <= 128 and y0 + side <= 128   # inside the crop: no padding
    interp = cv2.INTER_AREA if side > 48 else cv2.INTER_LINEAR
    for f, m in zip(frames, clip):
        want = cv2.resize(np.ascontiguousarray(f[y0:y0 + side, x0:x0 + side]), (48, 48), interpolation=interp)
        assert np.array_equal(m, want)
    static = np.repeat(frames[:1], T, axis=0)          # a still clip, with the moving landmarks
    still = mouth_clip(static, lms, 48)
    assert all(np.array_equal(still[0], s) for s in still[1:])
    assert not all(np.array_equal(clip[0], s) for s in clip[1:])   # the real clip's mouth moves


def test_mouth_crop_pads_outside_the_crop_and_checks_its_inputs():
    frames = np.full((2, 40, 40, 3), 200, np.uint8)
    lms = np.zeros((2, 68, 2), np.float32)
    lms[:, MOUTH] = np.array([[30.0, 34.0], [44.0, 42.0]]).repeat(10, 0)   # box partly beyond the bottom right
    out = mouth_clip(frames, lms, 16)
    assert out.shape == (2, 16, 16, 3) and out[:, 0, 0].min() == 200 and out[:, -1, -1].max() == 0
    with pytest.raises(ValueError, match="68, 2"):
        mouth_clip(frames, lms[:, :60], 16)
    with pytest.raises(ValueError, match="landmark frames"):
        mouth_clip(frames, lms[:1], 16)
    bad = lms.copy()
    bad[0, 50] = np.nan
    with pytest.raises(ValueError, match="finite"):
        mouth_clip(frames, bad, 16)


def test_forward_backward_with_the_mouth_stream_every_parameter_gets_a_gradient():
    cfg = mouth_cfg()
    model = build_model(cfg).train()
    x, mouth = torch.randn(2, 3, T, 32, 32), torch.randn(2, 3, T, 16, 16)
    out = model(x, mouth=mouth)
    assert out["logits"].shape == (2, 2) and torch.isfinite(out["logits"]).all()
    out["logits"].square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()] == []
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if n.startswith("mouth."))
    assert model.head.in_features == cfg.model.stage4_dim + cfg.model.mouth_dim
    # the mouth input matters, and a missing / mismatched one is refused
    model.eval()
    a = model(x, mouth=mouth)["logits"]
    assert not torch.allclose(a, model(x, mouth=torch.randn_like(mouth))["logits"])
    with pytest.raises(ValueError, match="mouth stream"):
        model(x)
    with pytest.raises(ValueError, match="do not match"):
        model(x, mouth=torch.randn(2, 3, T - 1, 16, 16))
    model.set_grad_checkpointing(True)
    assert model.mouth.grad_checkpointing


def test_stream_off_changes_nothing():
    """Off (the default): no mouth module, the head as before, and the same weights and outputs as a
    model built from a config that does not mention the keys at all."""
    base = STFV8Config.debug()
    assert base.model.mouth_stream is False
    off = mouth_cfg(on=False)                              # other mouth sizes, stream off
    torch.manual_seed(0)
    m0 = build_model(base).eval()
    torch.manual_seed(0)
    m1 = build_model(off).eval()
    s0, s1 = m0.state_dict(), m1.state_dict()
    assert list(s0) == list(s1) and not any(k.startswith("mouth") for k in s0)
    assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert m0.head.in_features == base.model.stage4_dim and m0.mouth is None and not m0.needs_mouth
    x = torch.randn(2, 3, T, 32, 32)
    assert torch.equal(m0(x)["logits"], m1(x)["logits"])
    with pytest.raises(ValueError, match="no mouth stream"):
        m0(x, mouth=torch.randn(2, 3, T, 16, 16))
    # the model file records no mouth keys, and its spec builds no mouth clips
    from stfmamba.models.checkpoint import input_settings
    rec = input_settings(PreprocessConfig(), base.model)
    assert rec["model"] == {"img_size": 32, "num_frames": T}
    # the frame baseline never has one, even with model.mouth_stream on in the params
    from stfmamba.config import Params
    p = Params()
    p = dataclasses.replace(p, model=dataclasses.replace(p.model, mouth_stream=True))
    assert STFV8Config.frame_baseline(p).model.mouth_stream is False
    assert STFV8Config.phase_a(p).model.mouth_stream and STFV8Config.phase_b(p).model.mouth_stream


def test_model_file_round_trip_with_the_mouth_stream(tmp_path):
    cfg = mouth_cfg()
    torch.manual_seed(1)
    model = build_model(cfg).eval()
    pre = PreprocessConfig(num_segments=2, frames_per_segment=4, crop_size=40)
    path = save_model_file(tmp_path / "mouth.pt", model, cfg, preprocess=pre, phase="a")
    blob = torch.load(path, weights_only=True)
    assert blob["input"]["model"] == {"img_size": 32, "num_frames": T, "mouth_stream": True, "mouth_size": 16,
                                      "mouth_margin": MOUTH_MARGIN}
    loaded, cfg2, meta = load_model_file(path)
    assert cfg2 == cfg and loaded.needs_mouth
    spec = input_spec(meta, cfg2)
    assert spec.mouth_stream and spec.mouth_size == 16 and spec.mouth_margin == MOUTH_MARGIN
    cs = spec.clip_spec(pre)
    assert cs == ClipSpec(2, 4, T, 32, spec.max_clips_per_video, 16, MOUTH_MARGIN)
    x, mouth = torch.randn(2, 3, T, 32, 32), torch.randn(2, 3, T, 16, 16)
    assert torch.equal(model(x, mouth=mouth)["logits"], loaded(x, mouth=mouth)["logits"])
    # a file without the record (written before the stream existed) takes none
    old = input_spec({"input": {"preprocess": {}, "model": {"img_size": 32, "num_frames": T}}},
                     mouth_cfg(on=False), warn=False)
    assert not old.mouth_stream and old.clip_spec(pre).mouth_size is None


def test_phase_a_mouth_stream_loads_whole_into_phase_b():
    from stfmamba.config import Params
    from stfmamba.models.checkpoint import load_flexible
    p = Params()
    p = dataclasses.replace(p, model=mouth_cfg().model)
    a, b = build_model(STFV8Config.phase_a(p)), build_model(STFV8Config.phase_b(p))
    report = load_flexible(b, a.state_dict())
    touched = report.missing + report.unexpected + report.mismatched
    assert report.missing and not any(k.startswith(("mouth.", "head.")) for k in touched)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items() if k.startswith("mouth."))
