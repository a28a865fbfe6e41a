"""Evaluation drivers: a checkpoint + preprocessed datasets -> metrics JSON, score tables, plots.

Used by ``stages/evaluate.py`` (inside DVC) and ``python -m stfmamba.evaluation`` (outside).

Both check the preprocessing of the evaluated data against the one the model was trained with
(:func:`check_input_contract`, the ``input`` record of the model file): crop settings that change
what the model sees (``preprocess.crop_size``, ``preprocess.margin``) must match — a mismatch is a
:class:`~stfmamba.config.ConfigError` naming the key, both values and the fix; settings that only
change how faces are found or how many clips there are (``detect_scale``, ``num_segments``,
``frames_per_segment``, ``min_face_px``, ``min_frames``, ``max_faces``) may differ, with a warning.
The clip geometry (``clip_frames``, ``img_size``), the clips per video, the normalisation and
whether the model is a frame model are the model file's (:class:`~stfmamba.models.checkpoint.InputSpec`).

Every face track of a video listed in the manifest (``npz`` + ``extra_npz``) is scored; the video's
score is the max over its faces of the mean over clips (:func:`~stfmamba.evaluation.engine.score_videos`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from stfmamba.config import ConfigError, EvalConfig, ModelConfig, Params, PreprocessConfig
from stfmamba.data.manifest import read_manifest
from stfmamba.evaluation.engine import score_videos
from stfmamba.evaluation.metrics import OVERALL
from stfmamba.evaluation.reports import (STREAM_AUC_KEYS, describe_failures, roc_curves, write_csv, write_curves,
                                         write_dataset_report, write_gain, write_json)


@dataclass(frozen=True)
class DatasetResult:
    name: str
    videos: pd.DataFrame   # engine.VIDEO_COLUMNS
    clips: pd.DataFrame    # engine.CLIP_COLUMNS
    metrics: dict[str, Any]
    temporal: bool = True  # a video model (``num_frames > 1``): its temporal gain is reported


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """``(model, cfg, meta)`` from a model file written by ``save_model_file``."""
    from stfmamba.models.checkpoint import load_model_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found; train it first (dvc repro train_phase_a / "
                                "train_phase_b) or fetch it with `dvc pull`")
    model, cfg, meta = load_model_file(path, map_location=device)
    return model, cfg, meta


CROP_KEYS = ("crop_size", "margin")   # change the pixels the model sees: must match the model file
SAMPLING_KEYS = ("detect_scale", "num_segments", "frames_per_segment", "min_face_px", "min_frames",
                 "max_faces")   # may differ (warning): which faces are found and how many clips are scored


def _same(a: Any, b: Any) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) if isinstance(a, float) or isinstance(b, float) else a == b


def check_input_contract(meta: dict[str, Any], pre: PreprocessConfig, model_cfg: ModelConfig, *,
                         model_path: str | Path, params_path: str | Path) -> list[str]:
    """Check the evaluation's preprocessing against the model file's input contract.

    Args:
        meta: the model file's meta (``meta["input"]``: see :func:`stfmamba.models.checkpoint.input_settings`;
            ``None`` for an old model file, which only gets the geometry checks).
        pre: the ``preprocess`` section the evaluated npz files are (or will be) made with.
        model_cfg: the model file's ``ModelConfig`` (clip size; the clip length is the recorded
            ``input.scoring.clip_frames``: 1 for a frame model, else ``num_frames``).
        model_path: for messages.
        params_path: the params file ``pre`` comes from, for messages.

    Returns:
        The warnings issued (settings that differ without changing the crops).

    Raises:
        ConfigError: a crop setting differs from the model file's, or the crops / runs are too small
            for the model's clips.
    """
    scoring = (meta.get("input") or {}).get("scoring") or {}
    t = scoring.get("clip_frames", 1 if model_cfg.frame_level else model_cfg.num_frames)
    if model_cfg.img_size > pre.crop_size or t > pre.frames_per_segment:
        raise ConfigError(
            f"{params_path}: preprocess.crop_size={pre.crop_size} / frames_per_segment={pre.frames_per_segment} "
            f"are smaller than the clips of {model_path} (model.img_size={model_cfg.img_size}, "
            f"{t} frames per clip); use the params file (profile) the model was trained with")
    stored = (meta.get("input") or {}).get("preprocess")
    if not stored:
        return []
    conflicts = [(k, getattr(pre, k), stored[k]) for k in CROP_KEYS
                 if k in stored and not _same(getattr(pre, k), stored[k])]
    if conflicts:
        what = "; ".join(f"preprocess.{k}: {params_path} has {mine!r}, {model_path} was trained with {theirs!r}"
                         for k, mine, theirs in conflicts)
        fix = ", ".join(f"preprocess.{k}: {theirs!r}" for k, _, theirs in conflicts)
        raise ConfigError(
            f"{what}. The model would see faces cropped differently from its training crops. Set {fix} in "
            f"{params_path} and preprocess the evaluated videos again (`dvc repro`, or pass --params with the "
            "profile the model was trained with), or evaluate a model trained with these crop settings")
    notes = []
    for k in SAMPLING_KEYS:
        if k in stored and not _same(getattr(pre, k), stored[k]):
            notes.append(f"preprocess.{k}: {params_path} has {getattr(pre, k)!r}, {model_path} was trained with "
                         f"{stored[k]!r} (allowed: it changes face detection or how many clips are scored, "
                         "not the crops)")
            warnings.warn(notes[-1], UserWarning, stacklevel=2)
    return notes


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scoring_spec(meta: dict[str, Any], cfg, params: Params, *, model_path: str | Path, params_path: str | Path,
                 params_override: bool):
    """The model file's :class:`~stfmamba.models.checkpoint.InputSpec`, with the params' clips per
    video (``eval.max_clips_per_video``, or ``baseline.eval_frames`` for a frame model) when
    ``params_override`` and they differ (printed). Keys an old model file lacks take the params' values."""
    from stfmamba.models.checkpoint import default_max_clips, input_spec
    spec = input_spec(meta, cfg, model_path=model_path, fallback=params)
    if params_override:
        key = "baseline.eval_frames" if spec.frame_level else "eval.max_clips_per_video"
        spec = spec.override(f"{params_path} ({key})", model_path,
                             max_clips_per_video=default_max_clips(spec.frame_level, params))
    return spec


def evaluate_dataset(model: torch.nn.Module, spec, name: str, dataset_dir: str | Path, out_dir: str | Path,
                     pre: PreprocessConfig, ev: EvalConfig, *, split: str | None = "test",
                     device: str | torch.device | None = None, amp: str = "auto",
                     progress: bool = True) -> DatasetResult:
    """Score the ``split`` videos of one preprocessed dataset and write its report to ``out_dir``.

    Args:
        model: the detector (``forward(x: (B,3,T,H,W)) -> {"logits": (B,2), ...}``).
        spec: its model file's :class:`~stfmamba.models.checkpoint.InputSpec` (:func:`scoring_spec`):
            clip length and size, clips per video, normalisation.
        name: dataset name (report titles).
        dataset_dir: ``data/preprocessed/<name>`` (manifest + npz).
        out_dir: report folder (scores.csv, clips.csv, failures.csv, roc/, auc.csv, roc.png).
        pre: the preprocessing of the npz files (runs per video, frames per run).
        ev: evaluation params (batch size, workers).
        split: manifest split to evaluate (None = every row).
        device: torch device (default: CUDA when available).
        amp: ``auto`` / ``bf16`` / ``off``.
        progress: show a progress bar.
    """
    manifest = read_manifest(Path(dataset_dir))
    rows = manifest if split is None else manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"{Path(dataset_dir) / 'manifest.csv'}: no rows in split '{split}' "
                         f"(splits present: {sorted(set(manifest['split']))}); check data.datasets.{name}")
    videos, clips = score_videos(model, rows, Path(dataset_dir), spec.clip_spec(pre), norm=spec.norm,
                                 batch_size=ev.batch_size,
                                 num_workers=ev.num_workers, device=device or default_device(), amp=amp,
                                 progress=progress)
    temporal = spec.clip_frames > 1   # a frame model's static clip is its clip: no temporal gain
    metrics = write_dataset_report(Path(out_dir), videos, clips, title=f"{name}: video-level ROC / AUC",
                                   temporal=temporal)
    print(describe_failures(name, videos))
    return DatasetResult(name, videos, clips, metrics, temporal)


def cross_metrics(results: list[DatasetResult]) -> dict[str, Any]:
    """Metrics JSON of ``eval_cross``: ``auc.<dataset>``, ``auc_ci95.<dataset>``, ``auc_lower95``,
    ``auc_ci95_by``, ``auc_groups``, ``static_auc``, ``temporal_gain`` (+ ``_ci95``), ``shuffled_auc``,
    ``order_gain`` (+ ``_ci95``), ``failed.<dataset>``, ``stf_stream_auc`` / ``frame_stream_auc`` /
    ``frame_stream_gain`` (two-stream models) ... (overall of each dataset) on top, every per-method figure below."""
    keys = ("auc", "auc_ci95", "auc_lower95", "auc_ci95_by", "auc_groups", "auc_identities", "auc_fail05",
            "static_auc", "temporal_gain", "temporal_gain_ci95", "shuffled_auc", "order_gain", "order_gain_ci95",
            "failed", "ap", "eer", "acc", "clip_auc")
    keys += tuple(k for k in (*STREAM_AUC_KEYS.values(), "frame_stream_gain")
                  if any(k in r.metrics for r in results))   # two-stream models
    out: dict[str, Any] = {k: {r.name: r.metrics.get(k, {}).get("overall") for r in results} for k in keys}
    out["videos"] = {r.name: r.metrics["videos"] for r in results}
    out["by_dataset"] = {r.name: {k: v for k, v in r.metrics.items() if k != "videos"} for r in results}
    return out


def write_cross_summary(out_dir: str | Path, results: list[DatasetResult]) -> dict[str, Any]:
    """Overall ROC per dataset + AUC bars per dataset under ``out_dir``; returns the metrics dict."""
    curves = {r.name: roc_curves(r.videos)[OVERALL] for r in results}
    metrics = cross_metrics(results)
    write_curves(Path(out_dir), curves, dict(metrics["auc"]), "cross-dataset: video-level ROC / AUC")
    write_gain(Path(out_dir), metrics, all(r.temporal for r in results))
    return metrics


def save_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Atomically write a metrics JSON."""
    write_json(Path(path), metrics)


__all__ = ["DatasetResult", "load_checkpoint", "check_input_contract", "scoring_spec", "default_device",
           "evaluate_dataset",
           "cross_metrics", "write_cross_summary", "save_metrics", "write_csv"]
