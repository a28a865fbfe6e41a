"""Checks of the preprocessed data before training: counts, failures and every npz's shapes and ranges.

:func:`check_npz_arrays` validates one video's loaded arrays against the preprocess contract (pure:
arrays in, problems out; training's cheaper header-only check is
:func:`stfmamba.data.dataset.check_npz_header`); :func:`verify_dataset` reads a dataset's manifest and npz files; :func:`verify` applies the
needs of the pipeline (training needs train and val reals, testing needs test reals and fakes)
and returns a report whose ``errors`` say what is missing and how to fix it.
"""
from __future__ import annotations

import zipfile

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from stfmamba.config import Params, PreprocessConfig
from stfmamba.data.manifest import ManifestError, load_npz, read_manifest

__all__ = ["check_npz_arrays", "verify_dataset", "verify"]


def check_npz_arrays(z: dict[str, Any], cfg: PreprocessConfig) -> list[str]:
    """Problems of one video's arrays (empty list = fine).

    Expects ``frames (N, S, S, 3) uint8``, ``landmarks (N, 68, 2) float32`` finite and inside the
    crop, ``boxes (N, 4)`` finite with positive size, ``frame_idx (N,) int64`` contiguous within each
    run, with ``N = num_segments * frames_per_segment`` and ``S = crop_size``.
    """
    n, s = cfg.stored_frames, cfg.crop_size
    want = {"frames": ((n, s, s, 3), np.uint8), "landmarks": ((n, 68, 2), np.float32),
            "boxes": ((n, 4), np.float32), "frame_idx": ((n,), np.int64)}
    problems = []
    for key, (shape, dtype) in want.items():
        a = z[key]
        if a.shape != shape or a.dtype != dtype:
            problems.append(f"{key}: {a.dtype}{list(a.shape)}, expected {np.dtype(dtype)}{list(shape)}")
    if problems:
        return problems
    lm = z["landmarks"]
    if not np.isfinite(lm).all():
        problems.append("landmarks: NaN or inf")
    elif lm.min() < 0 or lm.max() > s:
        problems.append(f"landmarks: outside the crop [0, {s}] (min {lm.min():.1f}, max {lm.max():.1f})")
    b = z["boxes"]
    if not np.isfinite(b).all() or ((b[:, 2:] - b[:, :2]) <= 0).any():
        problems.append("boxes: non-finite or empty box")
    fi = z["frame_idx"].reshape(cfg.num_segments, cfg.frames_per_segment)
    if (np.diff(fi, axis=1) != 1).any():
        problems.append("frame_idx: a run is not contiguous")
    if z["frames"].max() == 0:
        problems.append("frames: all black")
    for key in ("video_id", "src_path", "fps", "n_src_frames"):
        if key not in z["metadata"]:
            problems.append(f"metadata: '{key}' missing")
    return problems


def verify_dataset(dataset_dir: str | Path, cfg: PreprocessConfig, check_files: bool = True) -> dict[str, Any]:
    """Counts and problems of one preprocessed dataset.

    Returns:
        ``{"videos", "ok", "failed", "splits": {split: {method: {"ok", "failed"}}}, "failure_reasons":
        {reason: count}, "failures": [{method, video_id, reason}], "npz_checked", "npz_problems": [...]}``.

    Raises:
        ManifestError: no manifest (names the command that makes it).
    """
    dataset_dir = Path(dataset_dir)
    df = read_manifest(dataset_dir)
    splits: dict[str, dict[str, dict[str, int]]] = {}
    for (split, method, status), cnt in df.groupby(["split", "method", "status"]).size().items():
        splits.setdefault(split, {}).setdefault(method, {"ok": 0, "failed": 0})[status] = int(cnt)
    failed = df[df.status != "ok"]
    reasons = Counter(r.split(":")[0] for r in failed.reason)
    problems = []
    checked = 0
    if check_files:
        for rec in df[df.status == "ok"].itertuples():
            path = dataset_dir / rec.npz
            try:
                found = check_npz_arrays(load_npz(path), cfg)
            except (ManifestError, OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
                found = [str(err)]
            checked += 1
            problems += [f"{path}: {p}" for p in found]
    return {"videos": int(len(df)), "ok": int((df.status == "ok").sum()), "failed": int(len(failed)),
            "splits": splits, "failure_reasons": dict(reasons),
            "failures": [{"method": r.method, "video_id": r.video_id, "reason": r.reason} for r in failed.itertuples()],
            "npz_checked": checked, "npz_problems": problems}


def _ok(rep: dict, split: str, real: bool) -> int:
    methods = rep["splits"].get(split, {})
    return sum(v["ok"] for m, v in methods.items() if (m == "real") == real)


def verify(params: Params, check_files: bool = True) -> dict[str, Any]:
    """Verify every dataset the pipeline uses; ``errors`` lists what blocks training or testing."""
    root = Path(params.data.preprocessed_dir)
    report: dict[str, Any] = {"datasets": {}, "errors": []}
    errors = report["errors"]
    fix = "check data.datasets.{name} in params.yaml (root, splits) and re-run `dvc repro preprocess`"
    for name in params.data.used():
        try:
            rep = verify_dataset(root / name, params.preprocess, check_files)
        except ManifestError as err:
            errors.append(str(err))
            continue
        report["datasets"][name] = rep
        needs = []
        if name == params.data.train:
            needs += [("train", True, "real train videos (Video-SBI training)"),
                      ("val", True, "real val videos (model selection)")]
        if name == params.data.test or name in params.data.cross:
            needs += [("test", True, "real test videos"), ("test", False, "fake test videos")]
        for split, real, what in needs:
            if _ok(rep, split, real) == 0:
                n_failed = sum(v["failed"] for m, v in rep["splits"].get(split, {}).items() if (m == "real") == real)
                why = f" ({n_failed} failed: {rep['failure_reasons']})" if n_failed else " (none listed)"
                errors.append(f"dataset '{name}': no usable {what} in split '{split}'{why}; " + fix.format(name=name))
        for p in rep["npz_problems"][:20]:
            errors.append(f"dataset '{name}': {p}; delete the npz and re-run `dvc repro preprocess`")
    return report
