"""Evaluation engine: score every clip of every test video of a preprocessed dataset.

A video's clips are the non-overlapping ``num_frames`` windows of each of its runs
(:meth:`stfmamba.data.clips.ClipSpec.starts`), at most ``max_clips_per_video`` of them, evenly spaced.
Each clip becomes model input through the crop contract of :mod:`stfmamba.data.clips` — the very
functions the training dataset uses (:func:`~stfmamba.data.clips.clip_tensor` in the loader,
uint8; the model's :class:`~stfmamba.data.clips.Normalize` on the device, the model file's
``input.normalize``). The video score is SBI's
protocol: the mean fake probability (softmax class 1) over the clips of each face track, max over
the video's faces (the manifest's ``npz`` and ``extra_npz``, :func:`~stfmamba.data.manifest.face_npz`;
one face: the mean over its clips). ``face_scores`` lists the per-face means (``;``-joined, face 0
first) and each clip row names its ``face``. A video one of whose faces cannot be scored fails.

Every clip is also scored as a **static clip** (its first frame repeated ``T`` times,
:func:`~stfmamba.data.clips.static_clips`): ``static_score`` per clip and per video. The AUC on
static clips next to the AUC on real clips shows what the temporal modelling adds. A frame-level
model (``T = 1``) has nothing to repeat: its static score is its score.

Rows are identified by position (the manifest's key is ``(method, video_id)``: FF++ and the demo
reuse a real's id for its manipulations), so clips point at their video with a ``row`` index.

A video that cannot be scored (preprocessing failed, npz missing or unreadable, too few frames,
crops smaller than the model input, a non-finite output) gets status ``failed`` and a reason; it is
counted and listed in the report, never given a score.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stfmamba.amp import resolve_amp
from stfmamba.data.clips import ClipSpec, Normalize, clip_tensor, static_clips
from stfmamba.data.manifest import face_npz, load_npz

__all__ = ["ClipSpec", "VIDEO_COLUMNS", "CLIP_COLUMNS", "video_clips", "autocast_for", "score_videos"]

VIDEO_COLUMNS = ["video_id", "method", "label", "status", "reason", "score", "static_score", "n_clips", "faces",
                 "face_scores", "group", "identity"]   # group / identity: the manifest's ("" = unknown)
CLIP_COLUMNS = ["row", "video_id", "method", "label", "clip_start", "score", "static_score", "face"]  # row: index into videos


def video_clips(frames: np.ndarray, spec: ClipSpec) -> torch.Tensor:
    """The evaluation clips of one video, as model input before normalisation.

    Args:
        frames: ``(N, S, S, 3)`` uint8, the npz ``frames``.
        spec: clip geometry.

    Returns:
        ``(K, 3, T, img_size, img_size)`` uint8, one clip per ``spec.starts()``.

    Raises:
        ValueError: no window fits, too few frames, or crops the contract cannot use (the reason).
    """
    starts = spec.starts()
    if not starts:
        raise ValueError(f"no clip fits: frames_per_segment={spec.frames_per_segment} < num_frames={spec.num_frames}")
    need = max(starts) + spec.num_frames
    if frames.ndim != 4 or frames.shape[0] < need:
        raise ValueError(f"too few frames: {frames.shape[0] if frames.ndim else 0} < {need}")
    return torch.stack([clip_tensor(frames[s:s + spec.num_frames], spec.img_size) for s in starts])


class _VideoClips(Dataset):
    """Item ``i`` -> ``(i, clips (K,3,T,H,W) uint8 or None, error str)`` for the i-th video."""

    def __init__(self, paths: list[Path], spec: ClipSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            frames = load_npz(self.paths[i], keys=("frames",))["frames"]  # (N, S, S, 3) uint8
        except Exception as err:  # unreadable / missing file: reported, not raised
            return i, None, f"npz unreadable: {type(err).__name__}: {err}"
        try:
            return i, video_clips(frames, self.spec), ""
        except ValueError as err:
            return i, None, str(err)


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
                 norm: Normalize, batch_size: int = 8, num_workers: int = 0, device: str | torch.device = "cpu",
                 amp: str = "auto", progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the videos of ``rows`` (manifest rows) with ``model``, on real and on static clips.

    Args:
        model: a module whose ``forward(x: (B,3,T,H,W))`` returns ``{"logits": (B,2), ...}``.
        rows: manifest rows (video_id, method, label, status, reason, npz).
        dataset_dir: folder the ``npz`` column is relative to.
        spec: clip geometry.
        norm: the model's input normalisation (``InputSpec.norm`` of its model file).
        batch_size: clips per forward pass (clips of several videos share a batch).
        num_workers: DataLoader workers reading npz files.
        device: torch device.
        amp: ``auto`` / ``bf16`` (bf16 autocast) or ``off``.
        progress: show a tqdm bar.

    Returns:
        ``(videos, clips)``: one row per video (:data:`VIDEO_COLUMNS`; ``score`` / ``static_score``
        NaN when failed) and one row per scored clip (:data:`CLIP_COLUMNS`).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    rows = rows.reset_index(drop=True)
    videos = pd.DataFrame({
        "video_id": rows["video_id"].astype(str), "method": rows["method"].astype(str),
        "label": rows["label"].astype(int), "status": "ok", "reason": "", "score": np.nan,
        "static_score": np.nan, "n_clips": 0, "faces": 0, "face_scores": "",
        "group": rows["group"].astype(str) if "group" in rows else "",
        "identity": rows["identity"].astype(str) if "identity" in rows else ""})
    bad = rows["status"].astype(str) != "ok"
    videos.loc[bad, "status"] = "failed"
    videos.loc[bad, "reason"] = [f"preprocess: {r}" if r else "preprocess failed" for r in rows.loc[bad, "reason"].astype(str)]
    todo = [(i, f, npz) for i in range(len(rows)) if not bad[i] for f, npz in enumerate(face_npz(rows.loc[i]))]
    data = _VideoClips([Path(dataset_dir) / npz for _, _, npz in todo], spec)
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=num_workers)
    clip_rows: list[tuple[int, str, str, int, int, float, float, int]] = []
    per_face: dict[tuple[int, int], list[tuple[float, float]]] = {}
    face_err: dict[int, list[str]] = {}
    buf: list[tuple[int, int, int, torch.Tensor]] = []  # (video row, face, clip start, (3,T,H,W) uint8)
    starts = spec.starts()
    with_static = spec.num_frames > 1   # T = 1: the static clip is the clip

    def fake_prob(x: torch.Tensor) -> np.ndarray:
        with autocast_for(device, amp):
            logits = model(x)["logits"]
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()  # (B,)

    def flush() -> None:
        if not buf:
            return
        x = norm(torch.stack([c for *_, c in buf]).to(device))  # (B, 3, T, H, W) float
        prob = fake_prob(x)
        static = fake_prob(static_clips(x)) if with_static else prob
        for (v, f, s, _), p, q in zip(buf, prob, static):
            per_face.setdefault((v, f), []).append((float(p), float(q)))
            clip_rows.append((v, videos.at[v, "video_id"], videos.at[v, "method"], int(videos.at[v, "label"]), s,
                              float(p), float(q), f))
        buf.clear()

    for j, clips, err in tqdm(loader, total=len(data), desc="evaluate", disable=not progress, leave=False):
        v, f, _ = todo[j]
        if clips is None:
            face_err.setdefault(v, []).append(err if f == 0 else f"face {f}: {err}")
            continue
        for s, c in zip(starts, clips):
            buf.append((v, f, s, c))
            if len(buf) >= batch_size:
                flush()
    flush()
    faces_of: dict[int, list[int]] = {}
    for v, f, _ in todo:
        faces_of.setdefault(v, []).append(f)
    for v, fs in faces_of.items():
        if v in face_err:
            videos.at[v, "status"], videos.at[v, "reason"] = "failed", "; ".join(face_err[v])
            continue
        p = [np.asarray(per_face[(v, f)]) for f in fs]   # per face (K, 2): real clip, static clip
        if not all(np.all(np.isfinite(q)) for q in p):
            videos.at[v, "status"], videos.at[v, "reason"] = "failed", "non-finite model output"
            continue
        means = np.stack([q.mean(0) for q in p])          # (F, 2): mean over clips of each face
        videos.at[v, "score"], videos.at[v, "static_score"] = float(means[:, 0].max()), float(means[:, 1].max())
        videos.at[v, "n_clips"] = int(sum(len(q) for q in p))
        videos.at[v, "faces"] = len(fs)
        videos.at[v, "face_scores"] = ";".join(f"{m:.6f}" for m in means[:, 0])
    clips_df = pd.DataFrame(clip_rows, columns=CLIP_COLUMNS)
    failed_rows = set(np.nonzero((videos["status"] != "ok").to_numpy())[0].tolist())
    clips_df = clips_df[~clips_df["row"].isin(failed_rows)].reset_index(drop=True)
    return videos, clips_df
