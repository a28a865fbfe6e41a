"""The preprocessing manifest: one CSV row per video, plus the per-video ``.npz`` files.

``data/preprocessed/<dataset>/manifest.csv`` has the columns :data:`COLUMNS`; ``npz`` is relative
to the dataset folder (``<method>/<video_id>.npz``), ``status`` is ``ok`` or ``failed`` (with a
``reason``). ``n_unique_frames`` counts the distinct source frames behind the ``n_frames`` stored
(fewer when a short video's runs overlap), ``run_starts`` lists the first source frame of each run
(space separated) and ``decode_errors`` the broken packets / frames met while reading. Manifests
written before these three columns existed are read with ``n_unique_frames = n_frames``,
``decode_errors = 0`` and empty ``run_starts``. ``faces`` is the number of face tracks kept
(``preprocess.max_faces``; 0 for a failed video) and ``extra_npz`` the ``;``-joined npz paths of the
faces other than the primary one (``<method>/<video_id>__face1.npz;...``; empty with one face);
manifests written before them are read with ``faces = 1`` (``0`` when failed) and no extras.
``group`` and ``identity`` are the adapter row's source video and person
(:class:`~stfmamba.data.adapters.base.VideoRow`, empty when unknown; empty in manifests written
before them, and the evaluation then derives the groups from the ids). A row is identified by
``(method, video_id)``: FF++
reuses ``<target>_<source>`` ids across methods and the demo reuses the real's id for each of its
manipulations.

Sharding: with ``num_shards > 1`` each machine writes ``manifest.shard-<i>-of-<n>.csv``;
:func:`merge_shards` (run by the preprocess stage once every part is present, or by hand with
``python stages/preprocess.py --merge``) combines them into ``manifest.csv``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stfmamba.io import atomic_path

__all__ = ["COLUMNS", "MANIFEST", "read_manifest", "write_manifest", "face_npz", "load_npz", "save_npz",
           "shard_name", "merge_shards", "ManifestError"]

COLUMNS = ["video_id", "dataset", "split", "method", "label", "src_path", "npz", "status", "reason",
           "n_frames", "src_hash", "params_hash", "n_unique_frames", "decode_errors", "run_starts", "faces",
           "extra_npz", "group", "identity"]
MANIFEST = "manifest.csv"
NPZ_KEYS = ("frames", "landmarks", "boxes", "frame_idx", "metadata")


class ManifestError(RuntimeError):
    """A missing or malformed manifest / npz; the message names the file and the fix."""


def _dtypes() -> dict[str, Any]:
    return {"video_id": str, "dataset": str, "split": str, "method": str, "label": int, "src_path": str,
            "npz": str, "status": str, "reason": str, "n_frames": int, "src_hash": str, "params_hash": str,
            "n_unique_frames": int, "decode_errors": int, "run_starts": str, "extra_npz": str,
            "group": str, "identity": str}


def read_manifest(dataset_dir: str | Path, name: str = MANIFEST) -> pd.DataFrame:
    """The manifest of ``data/preprocessed/<dataset>`` as a DataFrame with :data:`COLUMNS`.

    Raises:
        ManifestError: the file is missing (run the preprocess stage) or lacks columns.
    """
    path = Path(dataset_dir) / name
    if not path.is_file():
        parts = sorted(Path(dataset_dir).glob("manifest.shard-*-of-*.csv")) if Path(dataset_dir).is_dir() else []
        hint = (f"; found shard parts {[p.name for p in parts]}: run `python stages/preprocess.py --merge`"
                if parts else "; run `dvc repro preprocess` (or python stages/preprocess.py)")
        raise ManifestError(f"{path}: manifest not found{hint}")
    header = pd.read_csv(path, nrows=0).columns
    df = pd.read_csv(path, dtype={k: v for k, v in _dtypes().items() if k in header}, keep_default_na=False)
    if "n_unique_frames" not in df.columns and "n_frames" in df.columns:
        df["n_unique_frames"] = df["n_frames"]
    df = df.assign(**{c: default for c, default in (("decode_errors", 0), ("run_starts", ""), ("extra_npz", ""),
                                                                  ("group", ""), ("identity", ""))
                      if c not in df.columns})
    ok = (df["status"] == "ok").astype(int) if "status" in df.columns else 1
    faces = pd.to_numeric(df["faces"], errors="coerce") if "faces" in df.columns else None
    df["faces"] = ok if faces is None else faces.fillna(ok).astype(int)   # empty cell (a row without it): default
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: columns {missing} missing; re-run the preprocess stage")
    return df[COLUMNS]


def face_npz(row: Any) -> list[str]:
    """The npz paths of every face of a manifest row: the primary one first, then ``extra_npz``."""
    extra = str(row.get("extra_npz", "") if hasattr(row, "get") else "")
    return [str(row["npz"])] + [e for e in extra.split(";") if e]


def write_manifest(df: pd.DataFrame, dataset_dir: str | Path, name: str = MANIFEST) -> Path:
    """Write ``df`` (sorted by split, method, video_id) atomically; returns the path."""
    path = Path(dataset_dir) / name
    df = df.reindex(columns=COLUMNS).sort_values(["split", "method", "video_id"], kind="stable")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def save_npz(path: str | Path, frames: np.ndarray, landmarks: np.ndarray, boxes: np.ndarray,
             frame_idx: np.ndarray, metadata: dict[str, Any]) -> None:
    """Write one video's npz atomically (uncompressed: loading must be fast for training).

    Args:
        frames: ``(N, H, W, 3) uint8`` RGB crops.
        landmarks: ``(N, 68, 2) float32`` in crop pixels.
        boxes: ``(N, 4) float32`` crop boxes ``x0, y0, x1, y1`` in source pixels.
        frame_idx: ``(N,) int64`` source frame indices.
        metadata: JSON-able dict (video_id, src_path, fps, n_src_frames, ...).
    """
    with atomic_path(path) as tmp:   # the temp ends in .npz: np.savez appends nothing
        np.savez(tmp, frames=frames.astype(np.uint8), landmarks=landmarks.astype(np.float32),
                 boxes=boxes.astype(np.float32), frame_idx=frame_idx.astype(np.int64),
                 metadata=np.array(json.dumps(metadata, sort_keys=True)))


def load_npz(path: str | Path, keys: tuple[str, ...] = NPZ_KEYS) -> dict[str, Any]:
    """One video's arrays: ``frames``, ``landmarks``, ``boxes``, ``frame_idx`` and ``metadata`` (a dict),
    or only ``keys`` of them (loaders read just what they use).

    Raises:
        ManifestError: missing file or missing keys (naming the file; re-run preprocess).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: npz not found; run `dvc repro preprocess` (or `dvc pull`)")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in keys if k not in z.files]
        if missing:
            raise ManifestError(f"{path}: keys {missing} missing; delete it and re-run preprocess")
        out = {k: z[k] for k in keys if k != "metadata"}
        if "metadata" in keys:
            out["metadata"] = json.loads(str(z["metadata"]))
    return out


def shard_name(shard_index: int, num_shards: int) -> str:
    """Manifest file name of one shard (``manifest.csv`` when there is a single shard)."""
    return MANIFEST if num_shards == 1 else f"manifest.shard-{shard_index}-of-{num_shards}.csv"


def merge_shards(dataset_dir: str | Path, num_shards: int) -> Path:
    """Combine the ``num_shards`` shard manifests of a dataset into ``manifest.csv``.

    Raises:
        ManifestError: a shard part is missing (it names which machine still has to run).
    """
    dataset_dir = Path(dataset_dir)
    names = [shard_name(i, num_shards) for i in range(num_shards)]
    missing = [n for n in names if not (dataset_dir / n).is_file()]
    if missing:
        raise ManifestError(f"{dataset_dir}: shard manifests {missing} missing; run preprocess with "
                            "preprocess.shard_index set to each missing shard (and copy its outputs here) first")
    df = pd.concat([read_manifest(dataset_dir, n) for n in names], ignore_index=True)
    df = df.drop_duplicates(["method", "video_id"], keep="last")
    return write_manifest(df, dataset_dir)
