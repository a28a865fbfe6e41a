"""The Phase A / Phase B trainer (Video-SBI, model selection on SBI-validation AUC).

Phases (registry :data:`PHASES`): ``a`` trains the V7.3 architecture with the V8 training fixes
from scratch; ``b`` trains the V8.0 model, initialised from ``models/phase_a.pt`` with
:func:`~stfmamba.models.checkpoint.load_flexible` (every key whose name and shape match; the rest
is reported and logged); ``frame`` trains the frame-level SBI baseline (a timm classifier on
single frames and their SBI fakes, ``params.baseline``) into ``models/frame.pt``. Each phase's
config (:class:`~stfmamba.config.STFV8Config`) carries the clip geometry and training knobs it
uses (``cfg.model``, ``cfg.training``).

One optimizer step: ``accum_steps`` micro-batches of ``batch_size`` real clips + their fakes
(``2·batch_size`` clips), bf16 autocast where the hardware has it, :class:`STFV8Loss`, gradient
clipping, AdamW with weight-decay groups, warm-up then cosine (per step). A non-finite loss or
gradient norm skips the step (counted); ``max_bad_steps`` in a row raise
:class:`TrainingDiverged`. After each epoch the SBI-validation AUC (sklearn) decides whether the
model is saved as the phase's best (``save_model_file``). Resume checkpoints
(:mod:`stfmamba.training.state`) every ``checkpoint_every`` steps and at each epoch end; a
restart resumes from the exact batch, optimizer step and RNG state. The budget tracker stops the
run cleanly (checkpoint written, best model kept, ``budget_stopped`` in the metrics).

Runs single-process or under ``torchrun`` (DDP; rank 0 validates, logs and writes files).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from stfmamba.amp import resolve_amp
from stfmamba.config import Params, STFV8Config, TrainingConfig, to_dict
from stfmamba.data.dataset import VideoSBIDataset, normalize_clips, worker_init
from stfmamba.training import distributed as D
from stfmamba.training.budget import BudgetTracker
from stfmamba.training.optim import build_optimizer, build_scheduler
from stfmamba.training.state import (ResumeFormatError, config_changes, find_resume, ignored_keys, load_resume,
                                     rng_state, save_resume, set_rng_state)

log = logging.getLogger(__name__)
BEST_NAME = "best.pt"   # copy of the phase's best model kept in the checkpoint folder


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row."""


@dataclass(frozen=True)
class PhaseSpec:
    """What distinguishes the training phases."""
    name: str
    make_config: Callable[[Params], STFV8Config]
    epochs: Callable[[TrainingConfig], int]
    lr: Callable[[TrainingConfig], float]
    init_from: str | None   # phase whose model file initialises this one
    stem: str = ""          # output name (models/<stem>.pt, ...); default phase_<name>

    @property
    def out_name(self) -> str:
        return self.stem or f"phase_{self.name}"


PHASES: dict[str, PhaseSpec] = {
    "a": PhaseSpec("a", STFV8Config.phase_a, lambda t: t.epochs_phase_a, lambda t: t.lr, None),
    "b": PhaseSpec("b", STFV8Config.phase_b, lambda t: t.epochs_phase_b, lambda t: t.lr_phase_b, "a"),
    # the frame-level baseline: frame_baseline() puts baseline.epochs / baseline.lr in epochs_phase_a / lr
    "frame": PhaseSpec("frame", STFV8Config.frame_baseline, lambda t: t.epochs_phase_a, lambda t: t.lr, None,
                       stem="frame"),
}


@dataclass(frozen=True)
class TrainPaths:
    """Where a phase reads and writes (all relative to the project root unless absolute)."""
    model_out: Path        # models/phase_x.pt (best SBI-val AUC); models/frame.pt for the baseline
    metrics_out: Path      # metrics/train_phase_x.json (train_frame.json)
    live_dir: Path         # dvclive/phase_x (dvclive/frame)
    ckpt_dir: Path         # <training.checkpoint_dir>/phase_x (DVC persist output)
    durable_dir: Path | None  # <training.durable_copy>/phase_x or None
    init_model: Path | None   # models/phase_a.pt for phase b

    @classmethod
    def for_phase(cls, params: Params, phase: str, models_dir: str | Path = "models",
                  metrics_dir: str | Path = "metrics", live_root: str | Path = "dvclive") -> "TrainPaths":
        spec = PHASES[phase]
        tr, name = params.training, spec.out_name
        durable = None if tr.durable_copy in ("", "none") else Path(tr.durable_copy) / name
        init = Path(models_dir) / f"{PHASES[spec.init_from].out_name}.pt" if spec.init_from else None
        return cls(Path(models_dir) / f"{name}.pt", Path(metrics_dir) / f"train_{name}.json",
                   Path(live_root) / name, Path(tr.checkpoint_dir) / name, durable, init)


class SkipSampler(Sampler):
    """The first ``skip`` indices of ``base`` dropped (resuming mid-epoch without loading them)."""

    def __init__(self, base: Sampler, skip: int):
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        for i, idx in enumerate(self.base):
            if i >= self.skip:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


# --------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


@torch.no_grad()
def evaluate_sbi(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                 amp: torch.dtype | None) -> dict[str, float]:
    """SBI-validation AUC and loss-free accuracy of ``model`` on a :class:`VideoSBIDataset` loader.

    Returns:
        ``{"auc": float, "acc": float, "n_clips": int}``.
    """
    model.eval()
    scores, labels = [], []
    for batch in loader:
        x = normalize_clips(batch["x"].flatten(0, 1).to(device))   # (2B, 3, T, H, W) float
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)["logits"]
        scores.append(torch.softmax(logits.float(), -1)[:, 1].cpu())
        labels.append(batch["y"].flatten())
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    ok = np.isfinite(s)
    auc = float(roc_auc_score(y[ok], s[ok])) if ok.all() and len(set(y)) == 2 else float("nan")
    return {"auc": auc, "acc": float(((s > 0.5) == (y == 1)).mean()), "n_clips": int(len(y))}


def _recovery_hint(tr: TrainingConfig) -> str:
    return (f"lower training.lr (now {tr.lr}, phase b: {tr.lr_phase_b}), lengthen training.warmup_epochs "
            f"(now {tr.warmup_epochs}), or raise training.qp_min (now {tr.qp_min}) so the H.264 augmentation "
            "is less destructive; then rerun: training resumes from the last good checkpoint")


# --------------------------------------------------------------------------- main loop
def input_fingerprint(params: Params, paths: TrainPaths) -> dict[str, str | None]:
    """Content hashes of what a phase trains from besides its config: the training dataset's
    manifest and (Phase B) the initial model file. A resume checkpoint is only resumed when these
    match, so new data or a retrained Phase A never silently brings back an old model."""
    def digest(path: Path | None) -> str | None:
        if path is None or not path.is_file():
            return None
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    manifest = Path(params.data.preprocessed_dir) / params.data.train / "manifest.csv"
    return {"manifest": digest(manifest), "init_model": digest(paths.init_model)}


def train(params: Params, phase: str, paths: TrainPaths, return_model: bool = False):
    """Train one phase; returns the metrics dict (also written to ``paths.metrics_out`` by rank 0).

    Args:
        params: the validated ``params.yaml``.
        phase: a key of :data:`PHASES`.
        paths: inputs and outputs of the phase.
        return_model: also return this rank's final (last-step, not best) model.

    Returns:
        Metrics: best_val_auc, best_epoch, epochs, steps, skipped_steps, budget_stopped, wall_time_s, ...
        — or ``(metrics, model)`` with ``return_model``.
    """
    from stfmamba.models import build_model
    from stfmamba.models.checkpoint import load_flexible, load_model_file, save_model_file
    from stfmamba.models.losses import STFV8Loss

    if phase not in PHASES:
        raise KeyError(f"unknown phase '{phase}' (known: {sorted(PHASES)})")
    spec = PHASES[phase]
    cfg = spec.make_config(params)
    tr = cfg.training   # the phase's knobs: params.training, with the baseline's batch / epochs / lr for frame
    t0 = time.monotonic()
    info = D.setup()
    device = info.device
    seed_everything(tr.seed)
    amp = resolve_amp(tr.amp, device)

    model = build_model(cfg).to(device)
    if tr.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise RuntimeError("training.grad_checkpointing is true but the model has no set_grad_checkpointing()")
        model.set_grad_checkpointing(True)
    loss_fn = STFV8Loss(cfg)
    if info.distributed:   # same init everywhere (DDP also broadcasts rank 0's), then per-rank dropout streams
        seed_everything(tr.seed + info.rank)

    train_ds = VideoSBIDataset.from_params(params, "train", True, cfg.features, cfg.model, tr)
    val_ds = VideoSBIDataset.from_params(params, "val", False, cfg.features, cfg.model, tr) if info.is_main else None
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=tr.seed, drop_last=False)
    batches_per_epoch = math.ceil(len(sampler) / tr.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / tr.accum_steps)
    epochs = spec.epochs(tr)
    optimizer = build_optimizer(model, spec.lr(tr), tr.weight_decay)
    scheduler = build_scheduler(optimizer, tr.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=False)  # bf16 needs no loss scaling; kept for fp16 ports

    st = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_auc": -1.0, "best_epoch": -1, "skipped_steps": 0,
          "bad_in_row": 0, "hours": 0.0, "history": [], "loss_sum": 0.0, "loss_n": 0, "parts_sum": {},
          "init_report": None}
    resume_path = find_resume(paths.ckpt_dir, paths.durable_dir)
    resumed_from = None
    ck = None
    if resume_path is not None:
        try:
            ck = load_resume(resume_path)
        except ResumeFormatError as err:   # an older, pickled resume file: never unpickled, a new run
            log.warning("resume discarded: %s; starting phase %s from scratch (it will be overwritten)", err, phase)
    inputs = input_fingerprint(params, paths)
    if ck is not None:
        # only what changes the result forces a new run (not workers, checkpoint cadence or folders, nor
        # the other phase's settings); nor may new training data or a retrained initial model be ignored
        changes = config_changes(ck["config"], to_dict(cfg), ignored_keys(phase))
        old_inputs = ck.get("inputs") or {}
        changes += [f"input {k} changed (content hash {old_inputs.get(k)} -> {inputs.get(k)})"
                    for k in sorted(set(inputs) | set(old_inputs)) if old_inputs.get(k) != inputs.get(k)]
        if changes:
            log.warning("%s: resume discarded: %s; starting phase %s from scratch (it will be overwritten)",
                        resume_path, "; ".join(changes), phase)
            ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        per_rank = ck.get("rng_per_rank", [ck["rng"]])
        set_rng_state(per_rank[info.rank] if info.rank < len(per_rank) else ck["rng"])  # world size may change
        st.update(ck["trainer"])
        resumed_from = st["step"]
        if info.is_main:
            log.info("resumed phase %s from %s at epoch %d batch %d step %d", phase, resume_path, st["epoch"],
                     st["batch_in_epoch"], st["step"])
    elif spec.init_from:
        if paths.init_model is None or not paths.init_model.is_file():
            raise FileNotFoundError(f"{paths.init_model}: phase {phase} starts from phase {spec.init_from}'s model; "
                                    f"run `dvc repro train_phase_{spec.init_from}` first")
        src_model, _, _ = load_model_file(paths.init_model)
        rep = load_flexible(model, src_model.state_dict())
        st["init_report"] = {"from": str(paths.init_model), "missing": list(rep.missing),
                             "unexpected": list(rep.unexpected), "mismatched": [str(m) for m in rep.mismatched]}
        if info.is_main:
            n_total = len(model.state_dict())
            log.info("phase %s initialised from %s: %d/%d tensors loaded; new (missing): %d, unused: %d, "
                     "shape-mismatched: %d", phase, paths.init_model, n_total - len(rep.missing), n_total,
                     len(rep.missing), len(rep.unexpected), len(rep.mismatched))
            prefixes = sorted({k.rsplit(".", 1)[0] for k in rep.missing})
            new_modules = [m for m in prefixes if not any(m.startswith(q + ".") for q in prefixes)]
            log.info("  new modules: %s", ", ".join(new_modules) or "none")
            for k in rep.missing:
                log.debug("  new: %s", k)
    model = model.to(device)
    net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) if info.distributed else model
    budget = BudgetTracker(params.budget, hours_before=st["hours"])

    live = None
    if info.is_main:
        from dvclive import Live
        live = Live(str(paths.live_dir), resume=resumed_from is not None, save_dvc_exp=False, dvcyaml=False)
        live.log_params({"phase": phase, "describe": cfg.describe(), "config": to_dict(cfg),
                         "budget": to_dict(params.budget), "world_size": info.world_size,
                         "amp": str(amp), "train_videos": len(train_ds.videos),
                         "excluded_videos": len(train_ds.excluded)})
        if st["init_report"] is not None and resumed_from is None:
            live.log_params({"init_from": st["init_report"]})
    val_loader = (DataLoader(val_ds, batch_size=tr.batch_size, shuffle=False, num_workers=tr.num_workers,
                             worker_init_fn=worker_init if tr.num_workers > 0 else None)
                  if val_ds is not None else None)

    def checkpoint() -> None:
        """Called at the same step on every rank: gathers each rank's RNG state, rank 0 writes."""
        rngs = D.all_gather_object(rng_state(), info)
        if not info.is_main:
            return
        st["hours"] = budget.hours
        save_resume({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rngs[0],
                     "rng_per_rank": rngs,
                     "config": to_dict(cfg), "inputs": inputs, "trainer": dict(st), "step": st["step"], "epoch": st["epoch"],
                     "batch_in_epoch": st["batch_in_epoch"]}, paths.ckpt_dir, paths.durable_dir)

    def validate_and_select() -> dict:
        res = evaluate_sbi(model, val_loader, device, amp)
        auc = res["auc"]
        if tr.select == "last":   # fixed schedule: the model of the last epoch (SBI-val AUC is only logged)
            better = True
        else:
            better = st["best_epoch"] < 0 or (math.isfinite(auc) and auc > st["best_auc"])
        if better:
            st["best_auc"], st["best_epoch"] = (auc if math.isfinite(auc) else -1.0), st["epoch"]
            save_model_file(paths.model_out, model, cfg, phase=phase, epoch=st["epoch"], step=st["step"],
                            val_auc=auc, describe=cfg.describe(), preprocess=params.preprocess)
            # a copy next to the resume checkpoint: a rerun of a finished phase (DVC removed the out)
            # restores models/phase_x.pt from here instead of retraining
            save_model_file(paths.ckpt_dir / BEST_NAME, model, cfg, phase=phase, epoch=st["epoch"], step=st["step"],
                            val_auc=auc, describe=cfg.describe(), preprocess=params.preprocess)
        return res

    budget_stopped = False
    params_list = [p for p in model.parameters() if p.requires_grad]
    while st["epoch"] < epochs and not budget_stopped:
        epoch = st["epoch"]
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        start_batch = st["batch_in_epoch"]
        loader = DataLoader(train_ds, batch_size=tr.batch_size, num_workers=tr.num_workers,
                            sampler=SkipSampler(sampler, start_batch * tr.batch_size),
                            generator=torch.Generator().manual_seed(tr.seed + epoch),
                            pin_memory=device.type == "cuda", persistent_workers=False,
                            worker_init_fn=worker_init if tr.num_workers > 0 else None)
        net.train()
        bar = tqdm(total=batches_per_epoch, initial=start_batch, disable=not info.is_main,
                   desc=f"phase {phase} epoch {epoch + 1}/{epochs}", leave=False,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)   # sparse lines in DVC / pod logs
        optimizer.zero_grad(set_to_none=True)
        micro_loss, micro_parts = 0.0, {}
        for b, batch in enumerate(loader, start=start_batch):
            x = normalize_clips(batch["x"].flatten(0, 1).to(device, non_blocking=True))  # (2B, 3, T, H, W)
            y = batch["y"].flatten().to(device)                           # (2B,)
            last_micro = (b + 1) % tr.accum_steps == 0 or b + 1 == batches_per_epoch
            sync = net.no_sync() if info.distributed and not last_micro else contextlib.nullcontext()
            with sync:
                with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                    out = net(x)
                    loss, parts = loss_fn(out, y)
                (loss / tr.accum_steps).backward()
            micro_loss += float(loss.detach()) / tr.accum_steps
            micro_parts = {k: micro_parts.get(k, 0.0) + float(v) / tr.accum_steps for k, v in parts.items()}
            bar.update(1)
            if not last_micro:
                continue
            gnorm = torch.nn.utils.clip_grad_norm_(params_list, tr.grad_clip if tr.grad_clip > 0 else float("inf"))
            bad = D.any_rank(not (math.isfinite(micro_loss) and math.isfinite(float(gnorm))), info)
            if bad:
                st["skipped_steps"] += 1
                st["bad_in_row"] += 1
                optimizer.zero_grad(set_to_none=True)
                log.warning("non-finite loss/grad at step %d (loss=%s, grad_norm=%s): step skipped (%d in a row)",
                            st["step"], micro_loss, float(gnorm), st["bad_in_row"])
                if st["bad_in_row"] >= tr.max_bad_steps:
                    raise TrainingDiverged(f"{st['bad_in_row']} non-finite steps in a row (training.max_bad_steps="
                                           f"{tr.max_bad_steps}) at step {st['step']}: {_recovery_hint(tr)}")
            else:
                optimizer.step()
                st["bad_in_row"] = 0
                st["loss_sum"] += micro_loss
                st["loss_n"] += 1
                for k, v in micro_parts.items():
                    st["parts_sum"][k] = st["parts_sum"].get(k, 0.0) + v
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            budget.step()
            st["step"] += 1
            st["batch_in_epoch"] = b + 1
            if info.is_main:
                bar.set_postfix(loss=f"{micro_loss:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            micro_loss, micro_parts = 0.0, {}
            budget_stopped = D.any_rank(budget.should_stop(), info)
            if budget_stopped or st["step"] % tr.checkpoint_every == 0:
                checkpoint()
            if budget_stopped:
                if info.is_main:
                    log.warning("budget: %.2f of %.2f spent (limit %.2f with safety margin): stopping phase %s "
                                "cleanly at step %d", budget.spent, params.budget.max_budget, budget.limit,
                                phase, st["step"])
                break
        bar.close()
        epoch_done = not budget_stopped or st["batch_in_epoch"] >= batches_per_epoch
        if info.is_main and (epoch_done or st["best_epoch"] < 0):
            train_loss = st["loss_sum"] / max(1, st["loss_n"])
            res = validate_and_select()
            st["history"].append({"epoch": epoch, "train_loss": train_loss, "val_auc": res["auc"],
                                  "val_acc": res["acc"], "lr": scheduler.get_last_lr()[0], "step": st["step"]})
            live.step = epoch          # x axis = epoch, also after a resume (DVC may have removed the old logs)
            live.log_metric("train/loss", train_loss)
            for k, v in st["parts_sum"].items():     # the loss terms of STFV8Loss (cross-entropy, HLL, ...)
                live.log_metric(f"train/loss_{k}", v / max(1, st["loss_n"]))
            live.log_metric("train/lr", scheduler.get_last_lr()[0])
            live.log_metric("train/skipped_steps", st["skipped_steps"])
            live.log_metric("val/sbi_auc", res["auc"])
            live.log_metric("val/sbi_acc", res["acc"])
            live.log_metric("budget/spent", budget.spent)
            live.next_step()
            log.info("phase %s epoch %d: train loss %.4f, SBI-val AUC %.4f (best %.4f @ %d)", phase, epoch + 1,
                     train_loss, res["auc"], st["best_auc"], st["best_epoch"] + 1)
        if epoch_done:
            st.update(epoch=epoch + 1, batch_in_epoch=0, loss_sum=0.0, loss_n=0, parts_sum={})
            checkpoint()
        D.barrier(info)

    metrics = {"phase": phase, "select": tr.select, "best_val_auc": st["best_auc"], "best_epoch": st["best_epoch"] + 1,
               "last_val_auc": st["history"][-1]["val_auc"] if st["history"] else None,
               "epochs": st["epoch"], "steps": st["step"], "skipped_steps": st["skipped_steps"],
               "budget_stopped": budget_stopped, "budget_spent": budget.spent,
               "wall_time_s": time.monotonic() - t0, "resumed_from_step": resumed_from,
               "world_size": info.world_size, "amp": str(amp).replace("torch.", ""),
               "train_videos": len(train_ds.videos), "excluded_videos": len(train_ds.excluded),
               "last_train_loss": st["history"][-1]["train_loss"] if st["history"] else None}
    if st["init_report"] is not None:
        metrics["init_new_tensors"] = len(st["init_report"]["missing"])
        metrics["init_unused_tensors"] = len(st["init_report"]["unexpected"])
        metrics["init_mismatched_tensors"] = len(st["init_report"]["mismatched"])
    if info.is_main:
        best_copy = paths.ckpt_dir / BEST_NAME
        if not paths.model_out.is_file() and best_copy.is_file():   # finished phase rerun: restore the best model
            paths.model_out.parent.mkdir(parents=True, exist_ok=True)
            tmp = paths.model_out.with_name(f".{paths.model_out.name}.{os.getpid()}.tmp")
            shutil.copyfile(best_copy, tmp)
            os.replace(tmp, paths.model_out)
            log.info("phase %s was already complete in %s: restored %s", phase, paths.ckpt_dir, paths.model_out)
        _atomic_json(metrics, paths.metrics_out)
        live.end()
    D.barrier(info)
    return (metrics, model) if return_model else metrics
