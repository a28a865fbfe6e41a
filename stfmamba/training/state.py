"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

One file per phase, ``<checkpoint_dir>/phase_<x>/last.pt``, holding model, optimizer, scheduler,
grad scaler, the RNG states of python / numpy / torch (and CUDA), epoch, batch within the epoch,
optimizer step and the trainer's counters. It is written atomically (:func:`stfmamba.io.atomic_path`),
so a kill at any moment leaves either the previous or the new checkpoint, never a torn one. A
small ``last.json`` next to it says which step it holds (for humans and for the kill test). With
``training.durable_copy`` set, each checkpoint is also copied (atomically) to
``<durable_copy>/phase_<x>/`` — e.g. a network volume that survives the pod — and a restart on a
fresh pod resumes from there when the local one is missing.

Everything in a resume file is plain (dicts, lists, str, numbers, bools, None, tensors): the RNG
states are stored as tensors (:func:`rng_state`), so the file loads with
``torch.load(weights_only=True)`` and reading it never runs pickled code. A file of an older format
(:data:`FORMATS`: 1 held pickled numpy arrays and tuples, 2 the state of PyTorch's ``LambdaLR``
instead of timm's ``CosineLRScheduler``) is refused with :class:`ResumeFormatError`, whose message
says what changed and to delete the checkpoint folder or start the phase fresh; the trainer
discards such a file with that warning and starts the phase afresh.

Whether a resume file may be continued is decided by :func:`config_changes`: the stored config is
compared with the current one minus the keys that do not change the result
(:data:`RUN_ONLY_KEYS`: workers, checkpoint cadence and folders) and minus the other phases'
settings (:data:`PHASE_KEYS`: Phase A does not restart because ``lr_phase_b`` changed).
"""
from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stfmamba.config import flatten_dict as _flatten, resume_ignored_keys
from stfmamba.io import atomic_path, write_text

CKPT_NAME = "last.pt"
RESUME_FORMAT = 3   # the format this version writes and reads (FORMATS)
# what each format stored, for the message that refuses an older one
FORMATS = {1: "pickled python / numpy RNG states (no 'format' key)",
           2: "plain values; PyTorch LambdaLR scheduler state, weight-decay group first",
           3: "plain values; timm CosineLRScheduler state, no-decay group first (timm param groups)"}

# config keys (dotted, as in to_dict(cfg)) that never change what a run computes
RUN_ONLY_KEYS = ("training.num_workers", "training.checkpoint_every", "training.checkpoint_dir",
                 "training.durable_copy")
# the settings only one phase reads: a change in another phase's keys keeps this phase's resume
PHASE_KEYS = {"a": ("training.epochs_phase_a", "training.lr"),
              "b": ("training.epochs_phase_b", "training.lr_phase_b"),
              "frame": ("training.epochs_phase_a", "training.lr")}   # frame_baseline() puts its own there

__all__ = ["CKPT_NAME", "RESUME_FORMAT", "FORMATS", "RUN_ONLY_KEYS", "PHASE_KEYS", "ResumeFormatError", "rng_state",
           "set_rng_state", "save_resume", "find_resume", "load_resume", "ignored_keys", "config_changes"]


class ResumeFormatError(ValueError):
    """A resume file that cannot be loaded safely (older pickled format, or not a resume file)."""


# --------------------------------------------------------------------------- RNG states as tensors
def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and every CUDA device), as plain values and tensors.

    Returns:
        ``{"python": {"version": int, "key": (625,) int64, "gauss": float | None},
        "numpy": {"key": (624,) int64, "pos": int, "has_gauss": int, "cached_gaussian": float},
        "torch": (n,) uint8, "cuda": [(m,) uint8, ...]}`` (``cuda`` only with a GPU).
    """
    version, key, gauss = random.getstate()
    _, np_key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {"python": {"version": int(version), "key": torch.tensor(key, dtype=torch.int64), "gauss": gauss},
             "numpy": {"key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["key"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["key"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- files
def save_resume(state: dict[str, Any], ckpt_dir: Path, durable_dir: Path | None = None) -> Path:
    """Write ``state`` to ``ckpt_dir/last.pt`` (+ ``last.json``) atomically, and copy to ``durable_dir``.

    Args:
        state: the trainer's state dict (must hold ``step``, ``epoch``, ``batch_in_epoch``; plain
            values and tensors only — RNG states from :func:`rng_state`). ``format`` is added.
        ckpt_dir: the phase's checkpoint folder (a DVC ``persist`` output).
        durable_dir: optional second location.

    Returns:
        The path of the checkpoint.
    """
    path = ckpt_dir / CKPT_NAME
    with atomic_path(path) as tmp:
        torch.save({**state, "format": RESUME_FORMAT}, tmp)
    info = json.dumps({k: state[k] for k in ("step", "epoch", "batch_in_epoch")})
    write_text(ckpt_dir / "last.json", info)
    if durable_dir is not None:
        with atomic_path(durable_dir / CKPT_NAME) as tmp:
            shutil.copyfile(path, tmp)
        write_text(durable_dir / "last.json", info)
    return path


def find_resume(ckpt_dir: Path, durable_dir: Path | None = None) -> Path | None:
    """The checkpoint to resume from: the local one, else the durable copy, else ``None``."""
    for d in (ckpt_dir, durable_dir):
        if d is not None and (d / CKPT_NAME).is_file():
            return d / CKPT_NAME
    return None


def load_resume(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_resume` with ``torch.load(weights_only=True)`` (on CPU;
    tensors are moved by their owners).

    Raises:
        ResumeFormatError: the file holds pickled objects (the older format) or is no resume file
            of format :data:`RESUME_FORMAT`; it is safe to discard.
        RuntimeError: the file cannot be read at all (names the file and the fix).
    """
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ResumeFormatError(f"{path}: resume checkpoint of an older format holds pickled objects and is not "
                                f"loaded ({str(err).splitlines()[0]})") from None
    except Exception as err:  # noqa: BLE001 - name the file and the fix
        raise RuntimeError(f"{path}: cannot read the resume checkpoint ({err}); delete it to start the phase "
                           "from scratch") from err
    if not isinstance(ck, dict) or ck.get("format") != RESUME_FORMAT:
        found = ck.get("format", 1) if isinstance(ck, dict) else type(ck).__name__
        what = FORMATS.get(found, "not a resume file")
        raise ResumeFormatError(f"{path}: resume checkpoint format {found} ({what}), "
                                f"this version reads format {RESUME_FORMAT} ({FORMATS[RESUME_FORMAT]}); it cannot be "
                                f"continued: delete {path.parent} (or the whole checkpoint folder) to start the "
                                "phase fresh")
    return ck


# --------------------------------------------------------------------------- may a resume continue?
def ignored_keys(phase: str) -> set[str]:
    """Config keys whose change keeps ``phase``'s resume: :data:`RUN_ONLY_KEYS` and the keys only
    other phases read (:data:`PHASE_KEYS`)."""
    return resume_ignored_keys(phase, PHASE_KEYS, RUN_ONLY_KEYS)


_ABSENT = object()


def _show(v: Any) -> str:
    return "<absent>" if v is _ABSENT else repr(v)


def config_changes(old: dict[str, Any], new: dict[str, Any], ignore: set[str] | frozenset[str] = frozenset()
                   ) -> list[str]:
    """What changed between two ``to_dict(cfg)`` configs, one message per key not in ``ignore``.

    Returns:
        e.g. ``["training.lr changed 0.0003 -> 0.001"]``; empty when the run may continue.
    """
    a, b = _flatten(old), _flatten(new)
    return [f"{k} changed {_show(a.get(k, _ABSENT))} -> {_show(b.get(k, _ABSENT))}"
            for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k, _ABSENT) != b.get(k, _ABSENT)]
