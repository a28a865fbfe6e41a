"""Evaluation engine: score every clip of every test video of a preprocessed dataset.

A video's clips are the non-overlapping ``num_frames`` windows of each of its runs
(:func:`stfmamba.data.clips.clip_starts`), at most ``clips_per_video`` of them, evenly spaced.
The video score is the mean fake probability (softmax class 1) over its clips.

Rows are identified by position (the manifest's key is ``(method, video_id)``: FF++ and the demo
reuse a real's id for its manipulations), so clips point at their video with a ``row`` index.

A video that cannot be scored (preprocessing failed, npz missing or unreadable, too few frames,
a non-finite output) gets status ``failed`` and a reason; it is counted and listed in the report,
never given a score.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stfmamba.amp import resolve_amp
from stfmamba.data.clips import clip_starts, frames_to_tensor
from stfmamba.data.manifest import load_npz

VIDEO_COLUMNS = ["video_id", "method", "label", "status", "reason", "score", "n_clips"]
CLIP_COLUMNS = ["row", "video_id", "method", "label", "clip_start", "score"]  # row: index into the videos table


@dataclass(frozen=True)
class ClipSpec:
    """How clips are cut from a preprocessed video and fed to the model."""
    num_segments: int        # runs per video (preprocess.num_segments)
    frames_per_segment: int  # frames per run (preprocess.frames_per_segment)
    num_frames: int          # T of the model
    img_size: int            # H = W of the model
    clips_per_video: int     # cap on clips per video (evenly spaced subset of the windows)

    def starts(self) -> list[int]:
        """Start frame of every clip scored per video."""
        starts = clip_starts(self.num_segments, self.frames_per_segment, self.num_frames)
        if len(starts) > self.clips_per_video:
            pick = np.linspace(0, len(starts) - 1, self.clips_per_video).round().astype(int)
            starts = [starts[i] for i in pick]
        return starts


class _VideoClips(Dataset):
    """Item ``i`` -> ``(i, clips (K,3,T,H,W) or None, error str)`` for the i-th video."""

    def __init__(self, paths: list[Path], spec: ClipSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        spec = self.spec
        try:
            frames = load_npz(self.paths[i], keys=("frames",))["frames"]  # (N, H, W, 3) uint8
        except Exception as err:  # unreadable / missing file: reported, not raised
            return i, None, f"npz unreadable: {type(err).__name__}: {err}"
        starts = spec.starts()
        if not starts:
            return i, None, "no clip fits: frames_per_segment < num_frames"
        need = max(starts) + spec.num_frames
        if frames.ndim != 4 or frames.shape[0] < need:
            return i, None, f"too few frames: {frames.shape[0] if frames.ndim else 0} < {need}"
        clips = torch.stack([frames_to_tensor(frames[s:s + spec.num_frames], spec.img_size) for s in starts])
        return i, clips, ""


def autocast_for(device: torch.device, amp: str):
    """Autocast context for inference, the training rule: ``bf16`` forces bf16 autocast, ``off``
    disables it, ``auto`` uses bf16 where it is native (a bf16 GPU, or an AVX-512 BF16 / AMX CPU).

    Measured on the demo models (benchmarks/eval_amp.py, docs/pipeline.md): bf16 speeds up the
    Phase B (Hydra) model and slows the Phase A model a little on this CPU; set ``training.amp: off``
    to force fp32.
    """
    dtype = resolve_amp(amp, device)
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()


@torch.no_grad()
def score_videos(model: torch.nn.Module, rows: pd.DataFrame, dataset_dir: Path, spec: ClipSpec, *,
                 batch_size: int = 8, num_workers: int = 0, device: str | torch.device = "cpu",
                 amp: str = "auto", progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the videos of ``rows`` (manifest rows) with ``model``.

    Args:
        model: a module whose ``forward(x: (B,3,T,H,W))`` returns ``{"logits": (B,2), ...}``.
        rows: manifest rows (video_id, method, label, status, reason, npz).
        dataset_dir: folder the ``npz`` column is relative to.
        spec: clip geometry.
        batch_size: clips per forward pass (clips of several videos share a batch).
        num_workers: DataLoader workers reading npz files.
        device: torch device.
        amp: ``auto`` / ``bf16`` (bf16 autocast) or ``off``.
        progress: show a tqdm bar.

    Returns:
        ``(videos, clips)``: one row per video (:data:`VIDEO_COLUMNS`; ``score`` NaN when failed)
        and one row per scored clip (:data:`CLIP_COLUMNS`).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    rows = rows.reset_index(drop=True)
    videos = pd.DataFrame({
        "video_id": rows["video_id"].astype(str), "method": rows["method"].astype(str),
        "label": rows["label"].astype(int), "status": "ok", "reason": "", "score": np.nan, "n_clips": 0})
    bad = rows["status"].astype(str) != "ok"
    videos.loc[bad, "status"] = "failed"
    videos.loc[bad, "reason"] = [f"preprocess: {r}" if r else "preprocess failed" for r in rows.loc[bad, "reason"].astype(str)]
    todo = [i for i in range(len(rows)) if not bad[i]]
    data = _VideoClips([Path(dataset_dir) / str(rows.at[i, "npz"]) for i in todo], spec)
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=num_workers)
    clip_rows: list[tuple[int, str, str, int, int, float]] = []
    per_video: dict[int, list[float]] = {}
    buf: list[tuple[int, int, torch.Tensor]] = []  # (video row, clip start, (3,T,H,W))
    starts = spec.starts()

    def flush() -> None:
        if not buf:
            return
        x = torch.stack([c for _, _, c in buf]).to(device)  # (B, 3, T, H, W)
        with autocast_for(device, amp):
            logits = model(x)["logits"]
        prob = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()  # (B,)
        for (v, s, _), p in zip(buf, prob):
            per_video.setdefault(v, []).append(float(p))
            clip_rows.append((v, videos.at[v, "video_id"], videos.at[v, "method"], int(videos.at[v, "label"]), s, float(p)))
        buf.clear()

    for j, clips, err in tqdm(loader, total=len(data), desc="evaluate", disable=not progress, leave=False):
        v = todo[j]
        if clips is None:
            videos.at[v, "status"], videos.at[v, "reason"] = "failed", err
            continue
        for s, c in zip(starts, clips):
            buf.append((v, s, c))
            if len(buf) >= batch_size:
                flush()
    flush()
    for v, probs in per_video.items():
        if not np.all(np.isfinite(probs)):
            videos.at[v, "status"], videos.at[v, "reason"] = "failed", "non-finite model output"
            continue
        videos.at[v, "score"], videos.at[v, "n_clips"] = float(np.mean(probs)), len(probs)
    clips_df = pd.DataFrame(clip_rows, columns=CLIP_COLUMNS)
    failed_rows = set(np.nonzero((videos["status"] != "ok").to_numpy())[0].tolist())
    clips_df = clips_df[~clips_df["row"].isin(failed_rows)].reset_index(drop=True)
    return videos, clips_df
