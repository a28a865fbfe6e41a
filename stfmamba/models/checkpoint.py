"""Model files: ``{"model": state_dict, "config": to_dict(cfg), "meta": {...}}`` written atomically.

``load_model_file`` rebuilds the :class:`~stfmamba.config.STFV8Config` from the stored dict
(validated with ``config.from_dict``), builds the model and loads the weights strictly.
``load_flexible`` (Phase A → Phase B) loads every tensor whose name and shape match and reports
the rest. Key layout: see ``docs/model.md`` (e.g. ``stages.2.blocks.0.temporal.bimamba.mixer.A_log``:
the temporal mixer's registry name is part of the key, so different architectures never collide).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from stfmamba.config import FeatureFlags, ModelConfig, STFV8Config, TrainingConfig, from_dict, to_dict

__all__ = ["LoadReport", "save_model_file", "load_model_file", "load_flexible", "config_from_dict"]


class LoadReport(NamedTuple):
    """Keys the model has but the file lacks, keys the file has but the model lacks, and keys in
    both whose shapes differ (not loaded)."""
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


def config_from_dict(d: dict) -> STFV8Config:
    """Inverse of ``to_dict(cfg)`` for :class:`STFV8Config` (every part validated)."""
    if not isinstance(d, dict) or "model" not in d:
        raise ValueError(f"model file config must be a mapping with 'model', 'features', 'training'; got {d!r:.80}")
    return STFV8Config(name=d.get("name", "STFV8"), model=from_dict(ModelConfig, d["model"], "config.model"),
                       features=from_dict(FeatureFlags, d.get("features", {}), "config.features"),
                       training=from_dict(TrainingConfig, d.get("training", {}), "config.training"))


def save_model_file(path: str | os.PathLike, model: nn.Module, cfg: STFV8Config, **meta) -> Path:
    """Write ``model``'s weights, ``cfg`` and ``meta`` to ``path`` atomically (tmp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"model": state, "config": to_dict(cfg), "meta": dict(meta)}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_model_file(path: str | os.PathLike, map_location="cpu"):
    """Read a model file -> ``(model, cfg, meta)`` (model in eval mode, weights loaded strictly).

    The timm trunk (if any) is built with ``pretrained=none``: its weights are in the file.
    """
    from stfmamba.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (run the training stage, or `dvc pull {path}`)")
    blob = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(blob, dict) or not {"model", "config"} <= set(blob):
        raise ValueError(f"{path}: not an STF-Mamba model file (expected keys 'model', 'config', 'meta')")
    cfg = config_from_dict(blob["config"])
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none"))
    model = build_model(build_cfg, grad_checkpointing=False)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored config: {err}") from None
    return model.eval(), cfg, blob.get("meta", {})


def load_flexible(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor of ``state_dict`` whose name and shape match ``model``'s; report the rest."""
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in state_dict.items() if k in own and own[k].shape != v.shape)
    model.load_state_dict(matched, strict=False)
    return LoadReport(missing=sorted(k for k in own if k not in state_dict),
                      unexpected=sorted(k for k in state_dict if k not in own), mismatched=mismatched)
