"""The trainer end to end on the tiny real-frame dataset with a debug-sized STF-Mamba."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from stfmamba.config import STFV8Config
from stfmamba.models import build_model
from stfmamba.models.checkpoint import load_model_file
from stfmamba.training import TrainPaths, train
from stfmamba.training.optim import MIN_LR_RATIO, build_optimizer, build_scheduler, current_lr

from trainkit import tiny_params

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}


def _run(params, phase, out: Path, **kw):
    paths = TrainPaths.for_phase(params, phase, out / "models", out / "metrics", out / "live")
    return train(params, phase, paths, **kw), paths


def test_weight_decay_groups():
    """timm's groups: no decay for every 1-D parameter (norms, biases, A_log, D), decay for the rest."""
    model = build_model(STFV8Config.debug())
    groups = build_optimizer(model, 1e-3, 0.05).param_groups
    by_wd = {g["weight_decay"]: g["params"] for g in groups}
    assert sorted(by_wd) == [0.0, 0.05] and all(g["lr"] == 1e-3 for g in groups)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in by_wd[0.05])
    assert all(p.ndim <= 1 for p in by_wd[0.0]) and any(names[id(p)].endswith("A_log") for p in by_wd[0.0])
    assert len(by_wd[0.05]) + len(by_wd[0.0]) == len(list(model.parameters()))


@pytest.mark.parametrize("warmup", [10, 0])
def test_schedule_is_warmup_then_cosine_to_the_floor(warmup):
    """The lr of optimizer step s (set by ``step_update(s)``) against the closed form: linear from
    lr/W at step 0 to the peak at step W, then cosine to MIN_LR_RATIO · lr at step T."""
    peak, total = 2e-3, 110
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=peak)
    sched = build_scheduler(opt, warmup, total)
    lrs = [current_lr(opt)]                     # step 0: set when the scheduler is built
    for s in range(1, total + 1):
        sched.step_update(s)
        lrs.append(current_lr(opt))
    floor, mid = MIN_LR_RATIO * peak, warmup + (total - warmup) // 2
    if warmup:
        assert lrs[0] == pytest.approx(peak / warmup)                                  # start of warm-up
        assert lrs[warmup // 2] == pytest.approx(peak / warmup + warmup // 2 * (peak - peak / warmup) / warmup)
        assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup + 1]))              # rising
    assert lrs[warmup] == pytest.approx(peak)                                           # end of warm-up: the peak
    assert lrs[mid] == pytest.approx((peak + floor) / 2)                                # half-way down the cosine
    assert lrs[total - 1] == pytest.approx(floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (total - 1 - warmup)
                                                                                      / (total - warmup))))
    assert lrs[total] == pytest.approx(floor)                                           # the floor at the end
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))                  # falling


def test_two_epochs_lower_the_training_loss(tiny_dataset, tmp_path):
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), clips_per_video=4, lr=1e-2,
                         label_smoothing=0.0, epochs_phase_a=2)
    m, paths = _run(params, "a", tmp_path)
    assert m["epochs"] == 2 and m["steps"] == 16 and m["skipped_steps"] == 0 and not m["budget_stopped"]
    loss = [float(r.split("\t")[1]) for r in
            (paths.live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().split("\n")[1:] if r]
    assert len(loss) == 2 and loss[1] < loss[0]
    val = [float(r.split("\t")[1]) for r in
           (paths.live_dir / "plots" / "metrics" / "val" / "sbi_auc.tsv").read_text().split("\n")[1:] if r]
    # training.select: best (the default) keeps the epoch with the highest SBI-val AUC
    assert m["select"] == "best" and m["kept_val_auc"] == pytest.approx(max(val))
    assert m["kept_epoch"] == 1 + val.index(max(val)) and m["last_val_auc"] == pytest.approx(val[-1])
    assert (m["best_epoch"], m["best_val_auc"]) == (m["kept_epoch"], m["kept_val_auc"])   # select: best only
    saved = json.loads(paths.metrics_out.read_text())
    assert saved["steps"] == 16 and saved["budget_stopped"] is False
    model, cfg, meta = load_model_file(paths.model_out)
    assert cfg.model == params.model and meta["phase"] == "a"
    assert (paths.ckpt_dir / "last.pt").is_file()
    # rerunning the finished phase (DVC deleted the model output) restores the best model, no retraining
    best = torch.load(paths.model_out, weights_only=False)
    paths.model_out.unlink()
    again, _ = _run(params, "a", tmp_path)
    assert again["resumed_from_step"] == 16 and again["steps"] == 16
    restored = torch.load(paths.model_out, weights_only=False)
    assert restored["meta"] == best["meta"]
    assert all(torch.equal(v, restored["model"][k]) for k, v in best["model"].items())


@pytest.mark.parametrize("select, kept", [("last", 2), ("best", 1)])
def test_select_keeps_the_last_or_the_best_epoch(tiny_dataset, tmp_path, monkeypatch, select, kept):
    """``training.select: last`` (the demo's fixed schedule) saves the last epoch's model whatever its
    SBI-val AUC; ``best`` the epoch with the highest. The validation AUC is forced to fall (0.9, then
    0.6) so the two rules must pick different epochs."""
    import stfmamba.training.trainer as trainer_mod
    aucs = iter([0.9, 0.6])
    monkeypatch.setattr(trainer_mod, "evaluate_sbi", lambda *a, **k: {"auc": next(aucs), "acc": 0.5, "n_clips": 2})
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), select=select, epochs_phase_a=2)
    m, paths = _run(params, "a", tmp_path)
    assert m["select"] == select and m["kept_epoch"] == kept
    assert m["kept_val_auc"] == pytest.approx([0.9, 0.6][kept - 1]) and m["last_val_auc"] == pytest.approx(0.6)
    # best_* names the kept model only where it is the best one (select: best); not with select: last
    assert ("best_val_auc" in m) == (select == "best") and ("best_epoch" in m) == (select == "best")
    _, _, meta = load_model_file(paths.model_out)
    assert meta["epoch"] == kept - 1 and meta["val_auc"] == pytest.approx([0.9, 0.6][kept - 1])


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_matches_uninterrupted(tiny_dataset, tmp_path):
    over = {"clips_per_video": 4, "checkpoint_every": 1, "epochs_phase_a": 1}
    full, killed = tmp_path / "full", tmp_path / "killed"
    cmd = [sys.executable, str(HERE / "trainkit.py"), str(tiny_dataset), str(killed), "a", json.dumps(over)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the uninterrupted reference runs in this process meanwhile, single-threaded like the subprocess
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(tiny_params(tiny_dataset, checkpoint_dir=str(full / "ckpt"), **over), "a", full)
    finally:
        torch.set_num_threads(threads)
    info_file = killed / "ckpt" / "phase_a" / "last.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if info_file.is_file() and json.loads(info_file.read_text())["step"] >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = json.loads(info_file.read_text())
    assert at_kill["epoch"] == 0 and 0 < at_kill["batch_in_epoch"] < 8, f"not killed mid-epoch: {at_kill}"
    ck_kill = torch.load(killed / "ckpt" / "phase_a" / "last.pt", weights_only=False)
    assert not (killed / "metrics" / "train_phase_a.json").exists()

    subprocess.run(cmd, check=True, env=ENV, capture_output=True)
    m = json.loads((killed / "metrics" / "train_phase_a.json").read_text())
    assert m["resumed_from_step"] == at_kill["step"] and m["steps"] == 8

    a = torch.load(full / "ckpt" / "phase_a" / "last.pt", weights_only=False)
    b = torch.load(killed / "ckpt" / "phase_a" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-5), f"weights differ at {k}"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.allclose(sa["exp_avg"], sb["exp_avg"], atol=1e-6) and sa["step"] == sb["step"]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["scheduler"] == b["scheduler"]
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [g["lr"] for g in b["optimizer"]["param_groups"]]
    # the resumed run really started from the checkpoint taken at the kill
    assert ck_kill["trainer"]["step"] == at_kill["step"] and ck_kill["optimizer"]["state"]


@pytest.mark.slow
def test_ddp_two_ranks_identical_weights(tiny_dataset, tmp_path):
    over = json.dumps({"clips_per_video": 1, "epochs_phase_a": 1, "batch_size": 1})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "trainkit.py"), str(tiny_dataset), str(tmp_path), "a", over]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    init = build_model(STFV8Config.phase_a(tiny_params(tiny_dataset))).state_dict()
    moved = 0
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks differ at {k}"
        moved += int(not torch.allclose(w0[k], init[k]))
    assert moved > 0, "no weight changed: no optimizer step happened"
    m = json.loads((tmp_path / "metrics" / "train_phase_a.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 2   # 4 videos / (2 ranks x batch 1)
    ck = torch.load(tmp_path / "ckpt" / "phase_a" / "last.pt", weights_only=False)
    assert len(ck["rng_per_rank"]) == 2 and not torch.equal(ck["rng_per_rank"][0]["torch"],
                                                            ck["rng_per_rank"][1]["torch"])


def test_budget_tracker_stops_the_run(tiny_dataset, tmp_path):
    from stfmamba.config import BudgetConfig
    from dataclasses import replace
    params = replace(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), clips_per_video=4),
                     budget=BudgetConfig(max_budget=1.0, cost_per_hour=3.6e4, safety_margin=0.05))
    m, paths = _run(params, "a", tmp_path)
    assert m["budget_stopped"] is True and m["steps"] < 16
    assert json.loads(paths.metrics_out.read_text())["budget_stopped"] is True
    assert paths.model_out.is_file() and (paths.ckpt_dir / "last.pt").is_file()


def test_budget_stop_then_resume_continues_the_schedule(tiny_dataset, tmp_path, monkeypatch):
    """A run stopped mid-warm-up (budget) and resumed ends with the weights, lr and schedule of the
    uninterrupted run: the resumed steps use the restored step's lr, not the warm-up's start."""
    import stfmamba.training.trainer as trainer_mod
    over = dict(clips_per_video=2, epochs_phase_a=2, warmup_epochs=1, lr=1e-2)   # 4 steps / epoch, W = 4, T = 8
    full, cut = tmp_path / "full", tmp_path / "cut"
    _run(tiny_params(tiny_dataset, checkpoint_dir=str(full / "ckpt"), **over), "a", full)

    class StopAfter3(trainer_mod.BudgetTracker):
        def should_stop(self) -> bool:
            return self._steps >= 3
    params = tiny_params(tiny_dataset, checkpoint_dir=str(cut / "ckpt"), **over)
    with monkeypatch.context() as mp:
        mp.setattr(trainer_mod, "BudgetTracker", StopAfter3)
        first, _ = _run(params, "a", cut)
    assert first["budget_stopped"] and first["steps"] == 3
    again, _ = _run(params, "a", cut)
    assert again["resumed_from_step"] == 3 and again["steps"] == 8
    a = torch.load(full / "ckpt" / "phase_a" / "last.pt", weights_only=True)
    b = torch.load(cut / "ckpt" / "phase_a" / "last.pt", weights_only=True)
    assert [h["lr"] for h in a["trainer"]["history"]] == [h["lr"] for h in b["trainer"]["history"]]
    assert a["scheduler"] == b["scheduler"]
    for k, v in a["model"].items():
        assert torch.allclose(v, b["model"][k], atol=1e-6), f"weights differ at {k}"


def test_phase_b_starts_from_phase_a(tiny_dataset, tmp_path):
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), epochs_phase_a=1, lr_phase_b=0.0,
                         clips_per_video=1)
    _run(params, "a", tmp_path)
    mb, paths_b = _run(params, "b", tmp_path)
    a_sd = torch.load(tmp_path / "models" / "phase_a.pt", weights_only=False)["model"]
    b_model, cfg_b, meta_b = load_model_file(paths_b.model_out)
    b_sd = b_model.state_dict()
    new = [k for k in b_sd if k not in a_sd]
    assert mb["init_new_tensors"] == len(new) > 0, "Phase B has Hydra mixers that Phase A lacks"
    shared = [k for k in b_sd if k in a_sd and b_sd[k].shape == a_sd[k].shape]
    assert len(shared) > len(new)
    for k in shared:   # lr 0: the loaded weights are kept exactly
        assert torch.equal(b_sd[k], a_sd[k]), k
    assert cfg_b.features.use_hydra and meta_b["phase"] == "b"


def test_non_finite_steps_are_skipped_then_stop_with_recovery_hint(tiny_dataset, tmp_path):
    from stfmamba.training import TrainingDiverged
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), lr=1e30, max_bad_steps=2,
                         clips_per_video=4, grad_clip=0.0, checkpoint_every=1)
    with pytest.raises(TrainingDiverged, match=r"2 non-finite steps in a row.*training\.lr.*training\.warmup_epochs.*training\.qp_min"):
        _run(params, "a", tmp_path)
    # the last checkpoint comes from before the stop: one bad step counted, the run not marked done
    ck = torch.load(tmp_path / "ckpt" / "phase_a" / "last.pt", weights_only=False)
    assert ck["trainer"]["skipped_steps"] == 1
    assert not (tmp_path / "metrics" / "train_phase_a.json").exists()


def test_durable_copy_resumes_on_a_fresh_machine(tiny_dataset, tmp_path):
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), durable_copy=str(tmp_path / "volume"),
                         clips_per_video=1, epochs_phase_a=1)
    first, paths = _run(params, "a", tmp_path)
    assert (tmp_path / "volume" / "phase_a" / "last.pt").is_file() and paths.durable_dir == tmp_path / "volume" / "phase_a"
    shutil.rmtree(tmp_path / "ckpt")            # the pod's local disk is gone
    again, _ = _run(params, "a", tmp_path)
    assert again["resumed_from_step"] == first["steps"] == again["steps"]


def test_gradient_accumulation_counts_optimizer_steps(tiny_dataset, tmp_path):
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "ckpt"), clips_per_video=2, accum_steps=2,
                         epochs_phase_a=1, grad_checkpointing=True)
    m, _ = _run(params, "a", tmp_path)
    assert m["steps"] == 2 and m["skipped_steps"] == 0   # 8 items / batch 2 = 4 micro-batches / 2


def test_changed_training_data_starts_a_fresh_run(tiny_dataset, tmp_path):
    """Same params, different manifest: the finished checkpoint must not be restored as the result."""
    import pandas as pd
    data = tmp_path / "preprocessed" / "tiny"
    shutil.copytree(tiny_dataset, data)
    params = tiny_params(data, checkpoint_dir=str(tmp_path / "ckpt"), clips_per_video=1, epochs_phase_a=1)
    first, _ = _run(params, "a", tmp_path)
    again, _ = _run(params, "a", tmp_path)                 # unchanged inputs: the finished run is resumed
    assert again["resumed_from_step"] == first["steps"]
    manifest = pd.read_csv(data / "manifest.csv")
    train_rows = manifest.index[(manifest["split"] == "train") & (manifest["label"] == 0)]
    assert len(train_rows) > 1
    manifest.drop(index=train_rows[:1]).to_csv(data / "manifest.csv", index=False)
    fresh, _ = _run(params, "a", tmp_path)
    assert fresh["resumed_from_step"] is None
    assert fresh["train_videos"] == first["train_videos"] - 1


def test_weight_average_is_what_the_model_file_holds_and_survives_a_resume(tiny_dataset, tmp_path, monkeypatch):
    """training.ema_decay > 0: training itself is unchanged (the same last weights as without it), the model
    file holds the moving average (not the last weights), and a run stopped and resumed ends with the
    average of the uninterrupted run (it is stored in the resume checkpoint)."""
    import stfmamba.training.trainer as trainer_mod
    over = dict(clips_per_video=2, epochs_phase_a=2, warmup_epochs=0, lr=1e-2, select="last")   # 4 steps / epoch
    (plain_m, plain_paths) = _run(tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "p" / "ckpt"), **over),
                                  "a", tmp_path / "p")
    params = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "e" / "ckpt"), ema_decay=0.9, **over)
    (_, last), paths = _run(params, "a", tmp_path / "e", return_model=True)
    plain, _, _ = load_model_file(plain_paths.model_out)
    avg, _, _ = load_model_file(paths.model_out)
    trained = [k for k, p in last.named_parameters() if p.requires_grad]
    last_sd, plain_sd, avg_sd = last.state_dict(), plain.state_dict(), avg.state_dict()
    for k in trained:                       # EMA draws no random number: the same trajectory
        assert torch.allclose(last_sd[k], plain_sd[k], atol=1e-6), f"training changed at {k}"
    moved = [k for k in trained if not torch.allclose(avg_sd[k], last_sd[k], atol=1e-6)]
    assert len(moved) > len(trained) // 2, "the model file holds the last weights, not their average"
    # stopped after 3 of 8 steps, resumed: the same average as the uninterrupted run
    class StopAfter3(trainer_mod.BudgetTracker):
        def should_stop(self) -> bool:
            return self._steps >= 3
    cut = tiny_params(tiny_dataset, checkpoint_dir=str(tmp_path / "c" / "ckpt"), ema_decay=0.9, **over)
    with monkeypatch.context() as mp:
        mp.setattr(trainer_mod, "BudgetTracker", StopAfter3)
        first, _ = _run(cut, "a", tmp_path / "c")
    assert first["budget_stopped"] and "ema" in torch.load(tmp_path / "c" / "ckpt" / "phase_a" / "last.pt",
                                                           weights_only=True)
    again, cut_paths = _run(cut, "a", tmp_path / "c")
    assert again["resumed_from_step"] == 3 and again["steps"] == 8
    resumed, _, _ = load_model_file(cut_paths.model_out)
    for k, v in avg_sd.items():
        assert torch.allclose(v.float(), resumed.state_dict()[k].float(), atol=1e-6), f"average differs at {k}"
