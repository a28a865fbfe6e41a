"""Per-frame target supervision (``training.frame_target_weight``): a head on the STF stages'
per-frame features learns *when* a clip is manipulated, from the dataset's ``frame_y``."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from stfmamba.config import ConfigError, Params, STFV8Config, from_dict
from stfmamba.data.dataset import VideoSBIDataset
from stfmamba.models import build_model
from stfmamba.models.losses import STFV8Loss
from stfmamba.training import TrainPaths, train

from trainkit import fixed_batch, tiny_params


def _temporal(p, kinds=("blend_ramp",), prob=1.0):
    p = dataclasses.replace(p, training=dataclasses.replace(p.training, temporal_fake_prob=prob,
                                                              temporal_fake_kinds=kinds))
    return dataclasses.replace(p, features=dataclasses.replace(p.features, use_temporal_fakes=True))


def test_head_only_with_the_weight_and_the_loss_term(tiny_dataset):
    p0 = tiny_params(tiny_dataset)
    p1 = tiny_params(tiny_dataset, frame_target_weight=0.5)
    m0, m1 = build_model(STFV8Config.phase_a(p0)), build_model(STFV8Config.phase_a(p1))
    extra = set(m1.state_dict()) - set(m0.state_dict())
    assert extra and all(k.startswith("frame_target_head.") for k in extra)
    t = p0.model.num_frames
    x = torch.randn(2, 3, t, p0.model.img_size, p0.model.img_size)
    assert "frame_target_logits" not in m0(x)
    out = m1(x)
    assert out["frame_target_logits"].shape == (2, t)
    y = torch.tensor([0, 1])
    target = torch.stack([torch.zeros(t), torch.linspace(0, 1, t)])
    loss = STFV8Loss(STFV8Config.phase_a(p1))
    total, parts = loss(out, y, frame_targets=target)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(out["frame_target_logits"].float(), target)
    assert parts["frame_target"] == pytest.approx(float(expect.detach()), rel=1e-5)
    assert total.item() == pytest.approx(parts["ce"] + 0.1 * parts["hll"] + 0.5 * parts["frame_target"]
                                         + 1e-4 * parts["sdim_l1"], rel=1e-5)
    with pytest.raises(ValueError, match="frame_target_weight"):
        loss(out, y)
    with pytest.raises(ValueError, match="do not match"):
        loss(out, y, frame_targets=target[:, :2])
    # the frame baseline has no STF stages: the key is the video model's only
    assert STFV8Config.frame_baseline(p1).training.frame_target_weight == 0.0
    with pytest.raises(ConfigError, match="frame_target_weight"):
        from_dict(Params, {"training": {"frame_target_weight": -1.0}})


def test_frame_target_head_learns_which_frames_are_blended(tiny_dataset):
    """Fitting one batch of real ``blend_ramp`` pairs (blend ratio following a curve over the clip, 0 on
    some frames): the per-frame term falls, its gradient reaches the STF stages, and the head ranks the
    blended frames of the fakes above their unblended frames and the reals' frames."""
    model, loss_fn, x, y, batch = fixed_batch(_temporal(tiny_params(tiny_dataset, frame_target_weight=1.0)))
    ft = torch.cat([b["frame_y"] for b in batch])                      # (2N, T)
    assert (ft[1::2] == 0).any() and (ft[1::2] > 0.5).any(), "blend_ramp fakes have unblended and blended frames"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(40):
        out = model(x)
        total, parts = loss_fn(out, y, frame_targets=ft)
        first = parts["frame_target"] if first is None else first
        opt.zero_grad()
        if step == 0:   # the per-frame term alone reaches the temporal stages
            out["frame_target_logits"].sum().backward(retain_graph=True)
            assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in model.stages[-1].parameters())
            opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(x)
    _, parts = loss_fn(out, y, frame_targets=ft)
    assert parts["frame_target"] < first - 0.1
    prob = torch.sigmoid(out["frame_target_logits"])
    blended = prob[ft > 0.5]
    unblended = prob[ft == 0]
    assert blended.mean() > unblended.mean() + 0.2


def test_training_with_the_per_frame_target(tiny_dataset, tmp_path):
    """The trainer feeds ``frame_y`` to the term (logged as ``frame_target``) and the model file keeps the head."""
    from stfmamba.models.checkpoint import load_model_file
    p = _temporal(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), epochs_phase_a=1,
                              clips_per_video=1, frame_target_weight=1.0), kinds=("blend_ramp", "region_retime"),
                  prob=0.5)
    paths = TrainPaths.for_phase(p, "a", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    m = train(p, "a", paths)
    assert m["steps"] >= 1 and m["skipped_steps"] == 0
    loaded, cfg, _ = load_model_file(paths.model_out)
    assert cfg.training.frame_target_weight == 1.0 and loaded.frame_target_head is not None
    curve = paths.live_dir / "plots" / "metrics" / "train" / "loss_frame_target.tsv"
    assert curve.exists(), "the per-frame term is logged with the other loss parts"


def test_stf_stream_term_can_see_only_the_temporal_fakes(tiny_dataset):
    """training.stf_stream_fakes: temporal: the STF-stream cross-entropy is taken over the reals and the
    temporal pseudo-fakes only (the items say which fakes are temporal); the clip term still sees all."""
    import torch.nn.functional as F
    p = _temporal(tiny_params(tiny_dataset), kinds=("blend_ramp", "region_retime"), prob=0.5)
    ds = VideoSBIDataset.from_params(p, "train", True)
    flags = [ds[i]["temporal_fake"] for i in range(len(ds))]
    kinds = [ds.pair_info(i, common_aug=False)["kind"] for i in range(len(ds))]
    assert all(not f[0] for f in flags) and [bool(f[1]) for f in flags] == [k != "sbi" for k in kinds]
    torch.manual_seed(0)
    stf, frame = torch.randn(6, 2), torch.randn(6, 2)
    out = {"logits": stf + frame, "stf_logits": stf, "frame_stream_logits": frame,
           "hll_energy": torch.rand(6), "all_band_energy": torch.rand(6) + 1, "aux_losses": {}}
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    temporal = torch.tensor([False, True, False, False, False, True])
    train = dataclasses.replace(p.training, stf_stream_weight=1.0)
    cfg_all = STFV8Config("t", p.model, p.features, train)
    cfg_tmp = STFV8Config("t", p.model, p.features, dataclasses.replace(train, stf_stream_fakes="temporal"))
    _, parts_all = STFV8Loss(cfg_all)(out, y, temporal_fakes=temporal)
    _, parts_tmp = STFV8Loss(cfg_tmp)(out, y, temporal_fakes=temporal)
    keep = (y == 0) | temporal
    assert parts_all["stf_ce"] == pytest.approx(float(F.cross_entropy(stf, y, label_smoothing=0.1)), rel=1e-5)
    assert parts_tmp["stf_ce"] == pytest.approx(float(F.cross_entropy(stf[keep], y[keep], label_smoothing=0.1)),
                                                rel=1e-5)
    assert parts_tmp["ce"] == parts_all["ce"]
    with pytest.raises(ValueError, match="temporal_fake"):
        STFV8Loss(cfg_tmp)(out, y)
    with pytest.raises(ConfigError, match="stf_stream_fakes"):   # nothing temporal to see
        from_dict(Params, {"training": {"stf_stream_fakes": "temporal"}})
