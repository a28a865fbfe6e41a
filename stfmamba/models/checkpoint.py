"""Model files: ``{"model": state_dict, "config": to_dict(cfg), "input": {...}, "meta": {...}}`` written atomically.

``input`` is the input contract the model was trained with (what evaluation must reproduce)::

    {"preprocess": {"crop_size", "margin", "detect_scale", "num_segments", "frames_per_segment"},
     "model": {"img_size", "num_frames"}}

Everything stored is plain (dicts, lists, str, numbers, bools, None, tensors), so model files load
with ``torch.load(weights_only=True)``: reading one never runs pickled code.

``load_model_file`` rebuilds the :class:`~stfmamba.config.STFV8Config` from the stored dict
(validated with ``config.from_dict``), builds the model and loads the weights strictly; the input
contract comes back as ``meta["input"]`` (``None``, with a warning, for files written before it
was stored).
``load_flexible`` (Phase A → Phase B) loads every tensor whose name and shape match and reports
the rest. Key layout: see ``docs/model.md`` (e.g. ``stages.2.blocks.0.temporal.bimamba.mixer.A_log``:
the temporal mixer's registry name is part of the key, so different architectures never collide).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from stfmamba.config import (FeatureFlags, ModelConfig, PreprocessConfig, STFV8Config, TrainingConfig, from_dict,
                             to_dict)
from stfmamba.io import atomic_path

__all__ = ["LoadReport", "INPUT_KEYS", "input_settings", "save_model_file", "load_model_file", "load_flexible",
           "config_from_dict"]

# the settings of the input contract stored in a model file, by params section
INPUT_KEYS = {"preprocess": ("crop_size", "margin", "detect_scale", "num_segments", "frames_per_segment"),
              "model": ("img_size", "num_frames")}


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


def input_settings(preprocess: PreprocessConfig, model_cfg: ModelConfig) -> dict[str, dict]:
    """The input contract of a model file: ``{"preprocess": {...}, "model": {...}}`` (:data:`INPUT_KEYS`)."""
    return {"preprocess": {k: getattr(preprocess, k) for k in INPUT_KEYS["preprocess"]},
            "model": {k: getattr(model_cfg, k) for k in INPUT_KEYS["model"]}}


def _plain(v, key: str):
    """``v`` as the plain types ``torch.load(weights_only=True)`` accepts; TypeError naming ``key`` otherwise."""
    if v is None or isinstance(v, (bool, int, float, str, torch.Tensor)):
        return v
    if isinstance(v, dict):
        return {str(k): _plain(x, f"{key}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{key}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:   # numpy scalar
        return v.item()
    raise TypeError(f"model file {key}: {type(v).__name__} is not a plain value (dict, list, str, number, "
                    "tensor); convert it before saving")


def save_model_file(path: str | os.PathLike, model: nn.Module, cfg: STFV8Config,
                    preprocess: PreprocessConfig | None = None, **meta) -> Path:
    """Write ``model``'s weights, ``cfg``, the input contract and ``meta`` to ``path`` atomically.

    Args:
        path: the model file (written with :func:`stfmamba.io.atomic_path`).
        model: the module whose ``state_dict`` is stored.
        cfg: its config (rebuilds the model on load).
        preprocess: the preprocessing of the data it was trained on; stored with ``cfg.model``'s
            clip settings as ``input`` (:func:`input_settings`). ``None`` stores no contract.
        **meta: plain values (phase, epoch, val_auc, ...).
    """
    if "input" in meta:
        raise TypeError("save_model_file: 'input' is reserved for the input contract; pass preprocess=")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"model": state, "config": _plain(to_dict(cfg), "config"), "meta": _plain(dict(meta), "meta")}
    if preprocess is not None:
        blob["input"] = _plain(input_settings(preprocess, cfg.model), "input")
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_model_file(path: str | os.PathLike, map_location="cpu"):
    """Read a model file -> ``(model, cfg, meta)`` (model in eval mode, weights loaded strictly).

    Loaded with ``torch.load(weights_only=True)``. ``meta["input"]`` is the stored input contract
    (:func:`input_settings`), or ``None`` with a warning for a file written before it was stored.
    The timm trunk (if any) is built with ``pretrained=none``: its weights are in the file.
    """
    from stfmamba.models import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found (run the training stage, or `dvc pull {path}`)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a plain model file, refusing to unpickle it (torch.load weights_only=True: "
                         f"{str(err).splitlines()[0]}); re-save it with stfmamba.models.checkpoint.save_model_file"
                         ) from None
    if not isinstance(blob, dict) or not {"model", "config"} <= set(blob):
        raise ValueError(f"{path}: not an STF-Mamba model file (expected keys 'model', 'config', 'input', 'meta')")
    cfg = config_from_dict(blob["config"])
    build_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained="none"))
    model = build_model(build_cfg, grad_checkpointing=False)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored config: {err}") from None
    meta = dict(blob.get("meta", {}))
    meta["input"] = blob.get("input")
    if meta["input"] is None:
        warnings.warn(f"{path}: the model file does not record the preprocessing it was trained with (written "
                      "before model files carried it); evaluation cannot check the crop settings against it",
                      UserWarning, stacklevel=2)
    return model.eval(), cfg, meta


def load_flexible(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> LoadReport:
    """Load every tensor of ``state_dict`` whose name and shape match ``model``'s; report the rest."""
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in state_dict.items() if k in own and own[k].shape != v.shape)
    model.load_state_dict(matched, strict=False)
    return LoadReport(missing=sorted(k for k in own if k not in state_dict),
                      unexpected=sorted(k for k in state_dict if k not in own), mismatched=mismatched)
