"""Evaluation drivers: a checkpoint + preprocessed datasets -> metrics JSON, score tables, plots.

Used by ``stages/evaluate.py`` (inside DVC) and ``python -m stfmamba.evaluation`` (outside).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from stfmamba.config import EvalConfig, PreprocessConfig
from stfmamba.data.manifest import read_manifest
from stfmamba.evaluation.engine import ClipSpec, score_videos
from stfmamba.evaluation.reports import describe_failures, write_csv, write_curves, write_dataset_report, write_json


@dataclass(frozen=True)
class DatasetResult:
    name: str
    videos: pd.DataFrame   # engine.VIDEO_COLUMNS
    clips: pd.DataFrame    # engine.CLIP_COLUMNS
    metrics: dict[str, Any]


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """``(model, cfg, meta)`` from a model file written by ``save_model_file``."""
    from stfmamba.models.checkpoint import load_model_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found; train it first (dvc repro train_phase_a / "
                                "train_phase_b) or fetch it with `dvc pull`")
    model, cfg, meta = load_model_file(path, map_location=device)
    return model, cfg, meta


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_dataset(model: torch.nn.Module, model_cfg, name: str, dataset_dir: str | Path, out_dir: str | Path,
                     pre: PreprocessConfig, ev: EvalConfig, *, split: str | None = "test",
                     device: str | torch.device | None = None, amp: str = "auto",
                     progress: bool = True) -> DatasetResult:
    """Score the ``split`` videos of one preprocessed dataset and write its report to ``out_dir``.

    Args:
        model: the detector (``forward(x: (B,3,T,H,W)) -> {"logits": (B,2), ...}``).
        model_cfg: its ``ModelConfig`` (``num_frames``, ``img_size``).
        name: dataset name (report titles).
        dataset_dir: ``data/preprocessed/<name>`` (manifest + npz).
        out_dir: report folder (scores.csv, clips.csv, failures.csv, roc/, auc.csv, roc.png).
        pre: preprocessing params (clip geometry of the npz files).
        ev: evaluation params (clip cap, batch size, workers).
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
    spec = ClipSpec(pre.num_segments, pre.frames_per_segment, model_cfg.num_frames, model_cfg.img_size,
                    ev.clips_per_video)
    videos, clips = score_videos(model, rows, Path(dataset_dir), spec, batch_size=ev.batch_size,
                                 num_workers=ev.num_workers, device=device or default_device(), amp=amp,
                                 progress=progress)
    metrics = write_dataset_report(Path(out_dir), videos, clips, title=f"{name}: video-level ROC / AUC")
    print(describe_failures(name, videos))
    return DatasetResult(name, videos, clips, metrics)


def cross_metrics(results: list[DatasetResult]) -> dict[str, Any]:
    """Metrics JSON of ``eval_cross``: ``auc.<dataset>`` (overall) etc. on top, every detail below."""
    out: dict[str, Any] = {k: {r.name: r.metrics[k]["overall"] for r in results}
                           for k in ("auc", "ap", "eer", "acc", "clip_auc")}
    out["videos"] = {r.name: r.metrics["videos"] for r in results}
    out["by_dataset"] = {r.name: {k: v for k, v in r.metrics.items() if k != "videos"} for r in results}
    return out


def write_cross_summary(out_dir: str | Path, results: list[DatasetResult]) -> dict[str, Any]:
    """Overall ROC per dataset + AUC bars per dataset under ``out_dir``; returns the metrics dict."""
    from stfmamba.evaluation.reports import roc_curves
    curves = {r.name: roc_curves(r.videos)["overall"] for r in results}
    metrics = cross_metrics(results)
    write_curves(Path(out_dir), curves, dict(metrics["auc"]), "cross-dataset: video-level ROC / AUC")
    return metrics


def save_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Atomically write a metrics JSON."""
    write_json(Path(path), metrics)


__all__ = ["DatasetResult", "load_checkpoint", "default_device", "evaluate_dataset", "cross_metrics",
           "write_cross_summary", "save_metrics", "write_csv"]
