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
clipping, AdamW over timm's weight-decay groups, timm's warm-up + cosine (per step). A non-finite loss or
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
import dataclasses
import hashlib
import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from stfmamba.amp import resolve_amp
from stfmamba.config import Params, STFV8Config, TrainingConfig, to_dict
from stfmamba.data.clips import Normalize
from stfmamba.data.dataset import VideoSBIDataset, worker_init
from stfmamba.io import atomic_path, write_text
from stfmamba.models.checkpoint import default_max_clips, save_model_file
from stfmamba.training import distributed as D
from stfmamba.training.budget import BudgetTracker
from stfmamba.training.optim import build_optimizer, build_scheduler, current_lr, group_lrs
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


@torch.no_grad()
def evaluate_sbi(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                 amp: torch.dtype | None) -> dict[str, float]:
    """SBI-validation AUC and loss-free accuracy of ``model`` on a :class:`VideoSBIDataset` loader.

    Returns:
        ``{"auc": float, "acc": float, "n_clips": int}``; for a two-stream model (``model.frame_stream``)
        also ``"margins"``: ``{"stf": (N,), "frame": (N,), "y": (N,)}`` numpy arrays, each stream's logit
        margin per clip (what :func:`fit_stream_scale` fits).
    """
    model.eval()
    norm = Normalize.of(model)   # the model's own mean / std (model.data_config)
    scores, labels, m_stf, m_frame = [], [], [], []
    for batch in loader:
        x = norm(batch["x"].flatten(0, 1).to(device))   # (2B, 3, T, H, W) float
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x, **mouth_input(batch, norm, device))
        logits = out["logits"]
        scores.append(torch.softmax(logits.float(), -1)[:, 1].cpu())
        labels.append(batch["y"].flatten())
        if "stf_logits" in out:
            for acc, key in ((m_stf, "stf_logits"), (m_frame, "frame_stream_logits")):
                lg = out[key].float()
                acc.append((lg[:, 1] - lg[:, 0]).cpu())
    s, y = torch.cat(scores).numpy(), torch.cat(labels).numpy()
    ok = np.isfinite(s)
    auc = float(roc_auc_score(y[ok], s[ok])) if ok.all() and len(set(y)) == 2 else float("nan")
    res = {"auc": auc, "acc": float(((s > 0.5) == (y == 1)).mean()), "n_clips": int(len(y))}
    if m_stf:
        res["margins"] = {"stf": torch.cat(m_stf).numpy(), "frame": torch.cat(m_frame).numpy(), "y": y}
    return res


def fit_stream_scale(model: torch.nn.Module, res: dict) -> dict | None:
    """``model.stream_fusion: equal_say``: set ``model.stream_scale`` to 1 / std of each stream's margin.

    ``res`` is :func:`evaluate_sbi`'s result for the model as trained (scales at one). Returns
    ``{"std_stf", "std_frame", "fused_auc"}`` (the validation AUC of the rescaled sum), or None for a model
    without the option. A stream whose margins do not vary keeps scale 1 (nothing to normalise).
    """
    scale = getattr(model, "stream_scale", None)
    if scale is None or "margins" not in res:
        return None
    mg = res["margins"]
    stds = [float(np.std(mg[k])) for k in ("stf", "frame")]
    if not all(np.isfinite(stds)):
        raise FloatingPointError(f"stream margins on the validation clips are not finite (std {stds}); "
                                 "model.stream_fusion=equal_say cannot be fitted")
    inv = [1.0 / v if v > 1e-8 else 1.0 for v in stds]
    with torch.no_grad():
        scale.copy_(torch.tensor(inv, dtype=scale.dtype))
    fused = mg["stf"] * inv[0] + mg["frame"] * inv[1]
    y = mg["y"]
    auc = float(roc_auc_score(y, fused)) if len(set(y)) == 2 and np.isfinite(fused).all() else float("nan")
    return {"std_stf": stds[0], "std_frame": stds[1], "fused_auc": auc}


def reset_stream_scale(model: torch.nn.Module) -> None:
    """Training always sees the plain sum of the streams: ``stream_scale`` back to ones (no-op without it)."""
    scale = getattr(model, "stream_scale", None)
    if scale is not None:
        with torch.no_grad():
            scale.fill_(1.0)


def mouth_input(batch: dict, norm: Normalize, device: torch.device, non_blocking: bool = False) -> dict:
    """The model's keyword inputs besides the clips: ``{"mouth": (2B, 3, T, s, s) float}`` when the
    items carry mouth clips (``model.mouth_stream``), normalised like the clips; else ``{}``."""
    if "mouth" not in batch:
        return {}
    return {"mouth": norm(batch["mouth"].flatten(0, 1).to(device, non_blocking=non_blocking))}


def _recovery_hint(tr: TrainingConfig) -> str:
    return (f"lower training.lr (now {tr.lr}, phase b: {tr.lr_phase_b}), lengthen training.warmup_epochs "
            f"(now {tr.warmup_epochs}), or raise training.qp_min (now {tr.qp_min}) so the H.264 augmentation "
            "is less destructive; then rerun: training resumes from the last good checkpoint")


def freeze_bn_stats(model: torch.nn.Module) -> int:
    """``training.bn_policy: frozen``: the BatchNorm layers of the pretrained part of ``model``
    (``model.pretrained_param_names()``) in eval mode, so their running statistics stay at the
    weights' values (their affine parameters still train). Call after every ``model.train()``.

    Returns:
        The number of BatchNorm layers frozen.
    """
    names = getattr(model, "pretrained_param_names", lambda: set())()
    prefixes = {n.rsplit(".", 1)[0] for n in names}
    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) and name in prefixes:
            mod.eval()
            n += 1
    return n


def freeze_pretrained(model: torch.nn.Module) -> int:
    """``training.pretrained_lr_mult: 0``: the pretrained parameters (``model.pretrained_param_names()``)
    get no gradient. Their modules are also put in eval mode by :func:`freeze_pretrained_modes` after
    every ``model.train()`` (BatchNorm statistics, dropout and drop-path as at inference), so the
    frozen part computes exactly what it computed when loaded.

    Returns:
        The number of parameters frozen.
    """
    names = getattr(model, "pretrained_param_names", lambda: set())()
    n = 0
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(False)
            n += 1
    return n


def freeze_pretrained_modes(model: torch.nn.Module) -> int:
    """Eval mode for every module all of whose parameters are frozen pretrained ones (and for the
    parameter-free modules inside them); call after every ``model.train()``. Returns the count."""
    names = getattr(model, "pretrained_param_names", lambda: set())()
    n = 0
    for name, mod in model.named_modules():
        own = [f"{name}.{k}" if name else k for k, _ in mod.named_parameters()]
        if own and all(k in names for k in own) and not any(p.requires_grad for p in mod.parameters()):
            mod.eval()
            n += 1
    return n


# --------------------------------------------------------------------------- inputs
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


# --------------------------------------------------------------------------- the run's parts
@dataclass(frozen=True)
class Run:
    """One phase run: its settings, its files and the process it runs in."""
    params: Params
    phase: str
    spec: PhaseSpec
    cfg: STFV8Config
    paths: TrainPaths
    info: D.DistInfo
    amp: torch.dtype | None   # autocast dtype, None for fp32
    t0: float                 # time.monotonic() at the start

    @property
    def tr(self) -> TrainingConfig:
        """The phase's knobs: params.training, with the baseline's batch / epochs / lr for ``frame``."""
        return self.cfg.training

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def epochs(self) -> int:
        return self.spec.epochs(self.tr)


@dataclass
class TrainState:
    """The trainer's counters: saved in every resume checkpoint (``"trainer"``), restored on resume."""
    epoch: int = 0                  # epochs finished
    batch_in_epoch: int = 0         # micro-batches of the current epoch done
    step: int = 0                   # optimizer steps done (skipped ones included)
    best_auc: float = -1.0          # SBI-val AUC of the saved model
    best_epoch: int = -1            # its epoch (0-based); -1: no model saved yet
    skipped_steps: int = 0          # non-finite steps skipped in all
    bad_in_row: int = 0             # ... and in a row now
    hours: float = 0.0              # wall-clock hours spent (budget), updated at each checkpoint
    history: list = field(default_factory=list)    # one dict per validated epoch
    loss_sum: float = 0.0           # this epoch's training loss summed over good steps
    loss_n: int = 0                 # ... their number
    parts_sum: dict = field(default_factory=dict)  # this epoch's loss terms, summed likewise
    init_report: dict | None = None  # what load_flexible loaded from the previous phase's model

    def start_next_epoch(self) -> None:
        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        self.loss_sum, self.loss_n, self.parts_sum = 0.0, 0, {}


@dataclass
class Data:
    """The training data of this rank and (rank 0) the SBI-validation loader."""
    train_ds: VideoSBIDataset
    sampler: DistributedSampler
    val_loader: DataLoader | None
    batches_per_epoch: int   # micro-batches of this rank per epoch
    steps_per_epoch: int     # optimizer steps per epoch


@dataclass
class Parts:
    """What the training loop updates."""
    model: torch.nn.Module
    net: torch.nn.Module      # model, or its DDP wrapper
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: CosineLRScheduler
    scaler: torch.amp.GradScaler
    budget: BudgetTracker
    inputs: dict              # input_fingerprint(), stored with every checkpoint
    teacher: object = None    # FrameTeacher of training.distill_from (training/distill.py), or None
    ema: object = None        # timm ModelEmaV3 of the model (training.ema_decay > 0), or None

    @property
    def kept(self) -> torch.nn.Module:
        """The weights validated and written to the model file: the moving average, or the model."""
        return self.ema.module if self.ema is not None else self.model


# --------------------------------------------------------------------------- the steps
def train(params: Params, phase: str, paths: TrainPaths, return_model: bool = False):
    """Train one phase; returns the metrics dict (also written to ``paths.metrics_out`` by rank 0).

    The steps, in order (the order of the RNG draws is part of the result): set up the process and
    seeds, build the model, build the data, build optimizer and schedule, resume (or initialise
    from the previous phase), then epochs of :func:`train_one_epoch` each followed by
    :func:`validate_and_select` and a checkpoint, and :func:`finish` writes the metrics.

    Args:
        params: the validated ``params.yaml``.
        phase: a key of :data:`PHASES`.
        paths: inputs and outputs of the phase.
        return_model: also return this rank's final (last-step, not best) model.

    Returns:
        Metrics: kept_epoch, kept_val_auc (best_epoch, best_val_auc with select: best), epochs, steps, skipped_steps, budget_stopped, wall_time_s, ...
        — or ``(metrics, model)`` with ``return_model``.
    """
    run = start_run(params, phase, paths)
    model, loss_fn = build_model_and_loss(run)
    if run.info.distributed:   # same init everywhere (DDP also broadcasts rank 0's), then per-rank dropout streams
        seed_everything(run.tr.seed + run.info.rank)
    data = build_data(run)
    optimizer, scheduler = build_optimizer_and_schedule(run, model, data)
    scaler = torch.amp.GradScaler(run.device.type, enabled=False)  # bf16 needs no loss scaling; kept for fp16 ports
    state, resumed_from, inputs, ema_state = resume_or_init(run, model, optimizer, scheduler, scaler)
    reset_stream_scale(model)     # a Phase A model file brings its fitted scales: Phase B trains the plain sum
    ema = build_ema(run, model, resumed_from, ema_state)
    model = model.to(run.device)
    if run.info.distributed and run.device.type == "cuda" and run.tr.bn_policy == "train":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)   # same keys: model files are unchanged
    net = (DDP(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
           if run.info.distributed else model)
    budget = BudgetTracker(params.budget, hours_before=state.hours)
    parts = Parts(model, net, loss_fn, optimizer, scheduler, scaler, budget, inputs, build_teacher(run), ema)
    live = open_live(run, data, state, resumed_from)

    budget_stopped = False
    while state.epoch < run.epochs and not budget_stopped:
        budget_stopped = train_one_epoch(run, data, parts, state)
        epoch_done = not budget_stopped or state.batch_in_epoch >= data.batches_per_epoch
        if run.info.is_main and (epoch_done or state.best_epoch < 0):
            res = validate_and_select(run, data, parts, state)
            log_epoch(run, live, parts, state, res)
        if epoch_done:
            state.start_next_epoch()
            save_checkpoint(run, parts, state)
        D.barrier(run.info)

    metrics = finish(run, data, parts, state, budget_stopped, resumed_from, live)
    return (metrics, model) if return_model else metrics


def start_run(params: Params, phase: str, paths: TrainPaths) -> Run:
    """Check the phase, join the process group (torchrun), seed every RNG, pick the autocast dtype."""
    if phase not in PHASES:
        raise KeyError(f"unknown phase '{phase}' (known: {sorted(PHASES)})")
    spec = PHASES[phase]
    cfg = spec.make_config(params)
    t0 = time.monotonic()
    info = D.setup()
    seed_everything(cfg.training.seed)
    return Run(params, phase, spec, cfg, paths, info, resolve_amp(cfg.training.amp, info.device), t0)


def build_model_and_loss(run: Run) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The phase's model on the device (its initialisation draws from the just-seeded RNG) and its loss."""
    from stfmamba.models import build_model
    from stfmamba.models.losses import STFV8Loss

    model = build_model(run.cfg).to(run.device)
    if run.tr.pretrained_lr_mult == 0:   # frozen: no gradient (nor its compute), no optimizer state
        n = freeze_pretrained(model)
        if run.info.is_main:
            log.info("training.pretrained_lr_mult=0: %d pretrained parameters frozen (no gradient, eval mode)", n)
    if run.tr.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise RuntimeError("training.grad_checkpointing is true but the model has no set_grad_checkpointing()")
        model.set_grad_checkpointing(True)
    return model, STFV8Loss(run.cfg)


def build_ema(run: Run, model: torch.nn.Module, resumed_from: int | None, ema_state: dict | None):
    """``training.ema_decay > 0``: timm's :class:`~timm.utils.ModelEmaV3` of ``model`` (parameters and
    buffers, warm-up on: the early, barely trained weights fade fast), started from the model as
    initialised, or on resume from the average stored in the checkpoint (``ema_state``); ``None`` when off."""
    decay = run.tr.ema_decay
    if decay <= 0:
        return None
    from timm.utils import ModelEmaV3
    ema = ModelEmaV3(model, decay=decay, use_warmup=True)
    if resumed_from is not None:
        if ema_state is None:
            raise RuntimeError(f"{run.paths.ckpt_dir}: resumed at step {resumed_from} but the checkpoint holds no "
                               "weight average (training.ema_decay > 0): delete that directory to start the phase again")
        ema.module.load_state_dict(ema_state)
    reset_stream_scale(ema.module)
    if run.info.is_main:
        log.info("training.ema_decay=%g: the model file holds the moving average of the weights", decay)
    return ema


def build_teacher(run: Run):
    """The frozen frame teacher of ``training.distill_from`` (training/distill.py), or ``None``."""
    src = run.tr.distill_from
    if src in ("", "none") or run.cfg.model.frame_level:
        return None
    from stfmamba.training.distill import FrameTeacher
    teacher = FrameTeacher(src, run.device)
    if run.info.is_main:
        log.info("distilling from %s (%s, %d px, sha256 %s…), weight %g", src, teacher.arch, teacher.img_size,
                 teacher.sha256[:12], run.tr.distill_weight)
    return teacher


def build_data(run: Run) -> Data:
    """The training set with this rank's shard (:class:`DistributedSampler`), and on rank 0 the
    SBI-validation loader."""
    tr, info = run.tr, run.info
    train_ds = VideoSBIDataset.from_params(run.params, "train", True, run.cfg.features, run.cfg.model, tr)
    val_ds = (VideoSBIDataset.from_params(run.params, "val", False, run.cfg.features, run.cfg.model, tr)
              if info.is_main else None)
    sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=tr.seed, drop_last=False)
    batches_per_epoch = math.ceil(len(sampler) / tr.batch_size)
    val_loader = (DataLoader(val_ds, batch_size=tr.batch_size, shuffle=False, num_workers=tr.num_workers,
                             worker_init_fn=worker_init if tr.num_workers > 0 else None)
                  if val_ds is not None else None)
    return Data(train_ds, sampler, val_loader, batches_per_epoch, math.ceil(batches_per_epoch / tr.accum_steps))


def build_optimizer_and_schedule(run: Run, model: torch.nn.Module, data: Data
                                 ) -> tuple[torch.optim.Optimizer, CosineLRScheduler]:
    """AdamW with timm's weight-decay groups at the phase's lr; timm's warm-up + cosine over the
    phase's optimizer steps (:mod:`stfmamba.training.optim`)."""
    optimizer = build_optimizer(model, run.spec.lr(run.tr), run.tr.weight_decay, run.tr.pretrained_lr_mult)
    scheduler = build_scheduler(optimizer, run.tr.warmup_epochs * data.steps_per_epoch,
                                run.epochs * data.steps_per_epoch)
    return optimizer, scheduler


def _load_checkpoint_if_valid(run: Run, inputs: dict) -> tuple[dict | None, Path | None]:
    """The resume checkpoint, or ``None`` when there is none, it is of an older format, or the
    config or the inputs changed since it was written (each discard is logged with its reason)."""
    resume_path = find_resume(run.paths.ckpt_dir, run.paths.durable_dir)
    if resume_path is None:
        return None, None
    try:
        ck = load_resume(resume_path)
    except ResumeFormatError as err:   # an older resume file: never unpickled, a new run
        log.warning("resume discarded: %s; starting phase %s from scratch (it will be overwritten)", err, run.phase)
        return None, resume_path
    # only what changes the result forces a new run (not workers, checkpoint cadence or folders, nor
    # the other phase's settings); nor may new training data or a retrained initial model be ignored
    changes = config_changes(ck["config"], to_dict(run.cfg), ignored_keys(run.phase))
    old_inputs = ck.get("inputs") or {}
    changes += [f"input {k} changed (content hash {old_inputs.get(k)} -> {inputs.get(k)})"
                for k in sorted(set(inputs) | set(old_inputs)) if old_inputs.get(k) != inputs.get(k)]
    if changes:
        log.warning("%s: resume discarded: %s; starting phase %s from scratch (it will be overwritten)",
                    resume_path, "; ".join(changes), run.phase)
        return None, resume_path
    return ck, resume_path


def resume_or_init(run: Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   scheduler: CosineLRScheduler, scaler: torch.amp.GradScaler
                   ) -> tuple[TrainState, int | None, dict, dict | None]:
    """Continue from the resume checkpoint if it may be (weights, optimizer, schedule, RNG states,
    counters), else start fresh — from the previous phase's model for phase ``b``.

    Returns:
        ``(state, resumed_from_step or None, input_fingerprint, the checkpoint's weight average or None)``.
    """
    state = TrainState()
    inputs = input_fingerprint(run.params, run.paths)
    ck, resume_path = _load_checkpoint_if_valid(run, inputs)
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        per_rank = ck.get("rng_per_rank", [ck["rng"]])
        set_rng_state(per_rank[run.info.rank] if run.info.rank < len(per_rank) else ck["rng"])  # world size may change
        state = TrainState(**ck["trainer"])
        scheduler.step_update(state.step)   # the lr of the next step (timm's scheduler is told the step)
        if run.info.is_main:
            log.info("resumed phase %s from %s at epoch %d batch %d step %d", run.phase, resume_path, state.epoch,
                     state.batch_in_epoch, state.step)
        return state, state.step, inputs, ck.get("ema")
    if run.spec.init_from:
        state.init_report = init_from_previous_phase(run, model)
    return state, None, inputs, None


def init_from_previous_phase(run: Run, model: torch.nn.Module) -> dict:
    """Load every tensor of the previous phase's model file whose name and shape match; log the rest.

    Returns:
        ``{"from", "missing", "unexpected", "mismatched"}`` (stored in the checkpoints and metrics).
    """
    from stfmamba.models.checkpoint import load_flexible, load_model_file

    init_model, phase = run.paths.init_model, run.phase
    if init_model is None or not init_model.is_file():
        raise FileNotFoundError(f"{init_model}: phase {phase} starts from phase {run.spec.init_from}'s model; "
                                f"run `dvc repro train_phase_{run.spec.init_from}` first")
    src_model, _, _ = load_model_file(init_model)
    rep = load_flexible(model, src_model.state_dict())
    if run.info.is_main:
        n_total = len(model.state_dict())
        log.info("phase %s initialised from %s: %d/%d tensors loaded; new (missing): %d, unused: %d, "
                 "shape-mismatched: %d", phase, init_model, n_total - len(rep.missing), n_total,
                 len(rep.missing), len(rep.unexpected), len(rep.mismatched))
        prefixes = sorted({k.rsplit(".", 1)[0] for k in rep.missing})
        new_modules = [m for m in prefixes if not any(m.startswith(q + ".") for q in prefixes)]
        log.info("  new modules: %s", ", ".join(new_modules) or "none")
        for k in rep.missing:
            log.debug("  new: %s", k)
    return {"from": str(init_model), "missing": list(rep.missing), "unexpected": list(rep.unexpected),
            "mismatched": [str(m) for m in rep.mismatched]}


def open_live(run: Run, data: Data, state: TrainState, resumed_from: int | None):
    """Rank 0's dvclive logger (continued after a resume) with the run's parameters; ``None`` elsewhere."""
    if not run.info.is_main:
        return None
    from dvclive import Live
    live = Live(str(run.paths.live_dir), resume=resumed_from is not None, save_dvc_exp=False, dvcyaml=False)
    live.log_params({"phase": run.phase, "describe": run.cfg.describe(), "config": to_dict(run.cfg),
                     "budget": to_dict(run.params.budget), "world_size": run.info.world_size,
                     "amp": str(run.amp), "train_videos": len(data.train_ds.videos),
                     "excluded_videos": len(data.train_ds.excluded)})
    if state.init_report is not None and resumed_from is None:
        live.log_params({"init_from": state.init_report})
    return live


def save_checkpoint(run: Run, parts: Parts, state: TrainState) -> None:
    """Called at the same step on every rank: gathers each rank's RNG state, rank 0 writes."""
    rngs = D.all_gather_object(rng_state(), run.info)
    if not run.info.is_main:
        return
    state.hours = parts.budget.hours
    extra = {"ema": parts.ema.module.state_dict()} if parts.ema is not None else {}
    save_resume({**extra, "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
                 "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(), "rng": rngs[0],
                 "rng_per_rank": rngs, "config": to_dict(run.cfg), "inputs": parts.inputs,
                 "trainer": dataclasses.asdict(state), "step": state.step, "epoch": state.epoch,
                 "batch_in_epoch": state.batch_in_epoch}, run.paths.ckpt_dir, run.paths.durable_dir)


def train_one_epoch(run: Run, data: Data, parts: Parts, state: TrainState) -> bool:
    """The rest of epoch ``state.epoch`` from micro-batch ``state.batch_in_epoch`` on: forward,
    backward, every ``accum_steps`` micro-batches an optimizer step (:func:`optimizer_step`), then
    the schedule, the budget and the periodic checkpoint.

    Returns:
        Whether the budget stopped the run (the checkpoint is then written).
    """
    tr, info, device = run.tr, run.info, run.device
    epoch, start_batch = state.epoch, state.batch_in_epoch
    data.train_ds.set_epoch(epoch)
    data.sampler.set_epoch(epoch)
    loader = DataLoader(data.train_ds, batch_size=tr.batch_size, num_workers=tr.num_workers,
                        sampler=SkipSampler(data.sampler, start_batch * tr.batch_size),
                        generator=torch.Generator().manual_seed(tr.seed + epoch),
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        worker_init_fn=worker_init if tr.num_workers > 0 else None)
    parts.net.train()
    if tr.pretrained_lr_mult == 0:
        freeze_pretrained_modes(parts.model)
    elif tr.bn_policy == "frozen":
        freeze_bn_stats(parts.model)
    bar = tqdm(total=data.batches_per_epoch, initial=start_batch, disable=not info.is_main,
               desc=f"phase {run.phase} epoch {epoch + 1}/{run.epochs}", leave=False,
               mininterval=0.5 if sys.stderr.isatty() else 30.0)   # sparse lines in DVC / pod logs
    parts.optimizer.zero_grad(set_to_none=True)
    micro_loss, micro_parts = 0.0, {}
    budget_stopped = False
    norm = Normalize.of(parts.model)   # the model's own mean / std (model.data_config), stored in its model file
    for b, batch in enumerate(loader, start=start_batch):
        x = norm(batch["x"].flatten(0, 1).to(device, non_blocking=True))  # (2B, 3, T, H, W)
        y = batch["y"].flatten().to(device)                           # (2B,)
        masks = batch["mask"].flatten(0, 1).to(device) if "mask" in batch else None   # (2B, T, H, W)
        frame_y = batch["frame_y"].flatten(0, 1).to(device) if "frame_y" in batch else None   # (2B, T)
        temporal = batch["temporal_fake"].flatten().to(device) if "temporal_fake" in batch else None   # (2B,)
        extra = mouth_input(batch, norm, device, non_blocking=True)   # {"mouth": (2B, 3, T, s, s)} or {}
        last_micro = (b + 1) % tr.accum_steps == 0 or b + 1 == data.batches_per_epoch
        sync = parts.net.no_sync() if info.distributed and not last_micro else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=run.amp or torch.float32, enabled=run.amp is not None):
                out = parts.net(x, **extra)
                teach = (parts.teacher.features(batch["x"].flatten(0, 1).to(device, non_blocking=True))
                         if parts.teacher is not None else None)                  # (2B, T, D)
                loss, loss_parts = parts.loss_fn(out, y, masks, teach, frame_targets=frame_y,
                                                  temporal_fakes=temporal)
            (loss / tr.accum_steps).backward()
        micro_loss += float(loss.detach()) / tr.accum_steps
        micro_parts = {k: micro_parts.get(k, 0.0) + float(v) / tr.accum_steps for k, v in loss_parts.items()}
        bar.update(1)
        if not last_micro:
            continue
        optimizer_step(run, parts, state, micro_loss, micro_parts)
        state.step += 1
        parts.scheduler.step_update(state.step)   # the lr of the next step
        parts.budget.step()
        state.batch_in_epoch = b + 1
        if info.is_main:
            bar.set_postfix(loss=f"{micro_loss:.4f}", lr=f"{current_lr(parts.optimizer):.2e}")
        micro_loss, micro_parts = 0.0, {}
        budget_stopped = D.any_rank(parts.budget.should_stop(), info)
        if budget_stopped or state.step % tr.checkpoint_every == 0:
            save_checkpoint(run, parts, state)
        if budget_stopped:
            if info.is_main:
                log.warning("budget: %.2f of %.2f spent (limit %.2f with safety margin): stopping phase %s "
                            "cleanly at step %d", parts.budget.spent, run.params.budget.max_budget,
                            parts.budget.limit, run.phase, state.step)
            break
    bar.close()
    return budget_stopped


def optimizer_step(run: Run, parts: Parts, state: TrainState, loss: float, loss_parts: dict[str, float]) -> None:
    """Clip the accumulated gradients and step — or, when the loss or the gradient norm is not finite
    on any rank, skip the step (counted; ``max_bad_steps`` in a row raise :class:`TrainingDiverged`)."""
    tr = run.tr
    params_list = [p for p in parts.model.parameters() if p.requires_grad]
    gnorm = torch.nn.utils.clip_grad_norm_(params_list, tr.grad_clip if tr.grad_clip > 0 else float("inf"))
    bad = D.any_rank(not (math.isfinite(loss) and math.isfinite(float(gnorm))), run.info)
    if bad:
        state.skipped_steps += 1
        state.bad_in_row += 1
        parts.optimizer.zero_grad(set_to_none=True)
        log.warning("non-finite loss/grad at step %d (loss=%s, grad_norm=%s): step skipped (%d in a row)",
                    state.step, loss, float(gnorm), state.bad_in_row)
        if state.bad_in_row >= tr.max_bad_steps:
            raise TrainingDiverged(f"{state.bad_in_row} non-finite steps in a row (training.max_bad_steps="
                                   f"{tr.max_bad_steps}) at step {state.step}: {_recovery_hint(tr)}")
    else:
        parts.optimizer.step()
        if parts.ema is not None:
            parts.ema.update(parts.model, step=state.step)
        state.bad_in_row = 0
        state.loss_sum += loss
        state.loss_n += 1
        for k, v in loss_parts.items():
            state.parts_sum[k] = state.parts_sum.get(k, 0.0) + v
    parts.optimizer.zero_grad(set_to_none=True)


def validate_and_select(run: Run, data: Data, parts: Parts, state: TrainState) -> dict:
    """Rank 0: SBI-validation of the current model; save it as the phase's model when it is the
    best so far (``select: best``) or always (``select: last``).

    Returns:
        :func:`evaluate_sbi`'s result.
    """
    kept = parts.kept                 # the weight average with training.ema_decay > 0
    res = evaluate_sbi(kept, data.val_loader, run.device, run.amp)
    auc = res["auc"]
    if run.tr.select == "last":   # fixed schedule: the model of the last epoch (SBI-val AUC is only logged)
        better = True
    else:
        better = state.best_epoch < 0 or (math.isfinite(auc) and auc > state.best_auc)
    if better:
        state.best_auc, state.best_epoch = (auc if math.isfinite(auc) else -1.0), state.epoch
        # the phase's model, and a copy next to the resume checkpoint: a rerun of a finished phase
        # (DVC removed the out) restores models/phase_x.pt from there instead of retraining
        # its input contract: the preprocessing, the model's mean / std and how a video is scored
        # (eval.max_clips_per_video clips, or baseline.eval_frames single frames for a frame model)
        max_clips = default_max_clips(run.cfg.model.frame_level, run.params)
        extra = {"teacher": parts.teacher.as_dict()} if parts.teacher is not None else {}
        fusion = fit_stream_scale(kept, res)   # model.stream_fusion=equal_say: fitted on these clips
        if fusion is not None:
            extra["stream_fusion"] = fusion
            res["fused_auc"] = fusion["fused_auc"]
            log.info("model.stream_fusion=equal_say: margin std STF %.3f, frame %.3f; SBI-val AUC of the rescaled "
                     "sum %.4f", fusion["std_stf"], fusion["std_frame"], fusion["fused_auc"])
        try:
            for path in (run.paths.model_out, run.paths.ckpt_dir / BEST_NAME):
                save_model_file(path, kept, run.cfg, phase=run.phase, epoch=state.epoch, step=state.step,
                                val_auc=auc, describe=run.cfg.describe(), preprocess=run.params.preprocess,
                                weights=parts.model.weights_info.as_dict(), max_clips_per_video=max_clips, **extra)
        finally:
            reset_stream_scale(kept)                  # training goes on with the plain sum
    return res


def log_epoch(run: Run, live, parts: Parts, state: TrainState, res: dict) -> None:
    """Rank 0: the epoch's line in ``state.history``, dvclive and the log."""
    train_loss = state.loss_sum / max(1, state.loss_n)
    lr, lrs = current_lr(parts.optimizer), group_lrs(parts.optimizer)
    state.history.append({"epoch": state.epoch, "train_loss": train_loss, "val_auc": res["auc"],
                          "val_acc": res["acc"], "lr": lr, "lr_pretrained": lrs.get("pretrained"), "step": state.step})
    live.step = state.epoch    # x axis = epoch, also after a resume (DVC may have removed the old logs)
    live.log_metric("train/loss", train_loss)
    for k, v in state.parts_sum.items():     # the loss terms of STFV8Loss (cross-entropy, HLL, ...)
        live.log_metric(f"train/loss_{k}", v / max(1, state.loss_n))
    live.log_metric("train/lr", lr)
    if "pretrained" in lrs:
        live.log_metric("train/lr_pretrained", lrs["pretrained"])
    live.log_metric("train/skipped_steps", state.skipped_steps)
    live.log_metric("val/sbi_auc", res["auc"])
    live.log_metric("val/sbi_acc", res["acc"])
    if "fused_auc" in res:
        live.log_metric("val/sbi_auc_fused", res["fused_auc"])
    live.log_metric("budget/spent", parts.budget.spent)
    live.next_step()
    log.info("phase %s epoch %d: train loss %.4f, SBI-val AUC %.4f (kept model: %.4f @ %d)", run.phase, state.epoch + 1,
             train_loss, res["auc"], state.best_auc, state.best_epoch + 1)


def finish(run: Run, data: Data, parts: Parts, state: TrainState, budget_stopped: bool,
           resumed_from: int | None, live) -> dict:
    """The phase's metrics; rank 0 restores the best model of an already finished phase if DVC
    removed it, writes the metrics file and closes dvclive."""
    history = state.history
    # kept_*: the epoch in the model file and its SBI-val AUC, whatever training.select is;
    # best_* only with select: best (the same epoch, chosen for that AUC)
    kept_auc = state.best_auc if state.best_epoch >= 0 and state.best_auc >= 0 else None
    metrics = {"phase": run.phase, "select": run.tr.select, "kept_epoch": state.best_epoch + 1,
               "kept_val_auc": kept_auc, "last_val_auc": history[-1]["val_auc"] if history else None,
               "epochs": state.epoch, "steps": state.step, "skipped_steps": state.skipped_steps,
               "budget_stopped": budget_stopped, "budget_spent": parts.budget.spent,
               "wall_time_s": time.monotonic() - run.t0, "resumed_from_step": resumed_from,
               "world_size": run.info.world_size, "amp": str(run.amp).replace("torch.", ""),
               "train_videos": len(data.train_ds.videos), "excluded_videos": len(data.train_ds.excluded),
               "last_train_loss": history[-1]["train_loss"] if history else None}
    if parts.teacher is not None:
        metrics["teacher_sha256"] = parts.teacher.sha256
    if run.tr.select == "best":
        metrics["best_epoch"], metrics["best_val_auc"] = metrics["kept_epoch"], metrics["kept_val_auc"]
    if state.init_report is not None:
        metrics["init_new_tensors"] = len(state.init_report["missing"])
        metrics["init_unused_tensors"] = len(state.init_report["unexpected"])
        metrics["init_mismatched_tensors"] = len(state.init_report["mismatched"])
    if run.info.is_main:
        paths = run.paths
        best_copy = paths.ckpt_dir / BEST_NAME
        if not paths.model_out.is_file() and best_copy.is_file():   # finished phase rerun: restore the best model
            with atomic_path(paths.model_out) as tmp:
                shutil.copyfile(best_copy, tmp)
            log.info("phase %s was already complete in %s: restored %s", run.phase, paths.ckpt_dir, paths.model_out)
        write_text(paths.metrics_out, json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        live.end()
    D.barrier(run.info)
    return metrics
