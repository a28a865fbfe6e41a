"""Resume checkpoints: everything needed to continue a run exactly where it stopped.

One file per phase, ``<checkpoint_dir>/phase_<x>/last.pt``, holding model, optimizer, scheduler,
grad scaler, the RNG states of python / numpy / torch (and CUDA), epoch, batch within the epoch,
optimizer step and the trainer's counters. It is written atomically (temp file + ``os.replace``),
so a kill at any moment leaves either the previous or the new checkpoint, never a torn one. A
small ``last.json`` next to it says which step it holds (for humans and for the kill test). With
``training.durable_copy`` set, each checkpoint is also copied (atomically) to
``<durable_copy>/phase_<x>/`` — e.g. a network volume that survives the pod — and a restart on a
fresh pod resumes from there when the local one is missing.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CKPT_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and every CUDA device)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_resume(state: dict[str, Any], ckpt_dir: Path, durable_dir: Path | None = None) -> Path:
    """Write ``state`` to ``ckpt_dir/last.pt`` (+ ``last.json``) atomically, and copy to ``durable_dir``.

    Args:
        state: the trainer's state dict (must hold ``step``, ``epoch``, ``batch_in_epoch``).
        ckpt_dir: the phase's checkpoint folder (a DVC ``persist`` output).
        durable_dir: optional second location.

    Returns:
        The path of the checkpoint.
    """
    path = ckpt_dir / CKPT_NAME
    _atomic_torch_save(state, path)
    info = json.dumps({k: state[k] for k in ("step", "epoch", "batch_in_epoch")})
    _atomic_write_text(info, ckpt_dir / "last.json")
    if durable_dir is not None:
        durable_dir.mkdir(parents=True, exist_ok=True)
        tmp = durable_dir / f".{CKPT_NAME}.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, durable_dir / CKPT_NAME)
        _atomic_write_text(info, durable_dir / "last.json")
    return path


def find_resume(ckpt_dir: Path, durable_dir: Path | None = None) -> Path | None:
    """The checkpoint to resume from: the local one, else the durable copy, else ``None``."""
    for d in (ckpt_dir, durable_dir):
        if d is not None and (d / CKPT_NAME).is_file():
            return d / CKPT_NAME
    return None


def load_resume(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_resume` (on CPU; tensors are moved by their owners)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - name the file and the fix
        raise RuntimeError(f"{path}: cannot read the resume checkpoint ({err}); delete it to start the phase "
                           "from scratch") from err
