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

A model with a mouth stream (``InputSpec.mouth_size``, ``ClipSpec.mouth_size``) also gets each clip's
mouth clip, cut from the same frames with the npz ``landmarks`` by
:func:`~stfmamba.data.clips.mouth_clip` (the training dataset's function); its static clip has the
static mouth clip (the first frame's mouth crop repeated).

Every clip is scored a third time **shuffled** (the same frames in a fixed order that never keeps
two neighbours together, :func:`~stfmamba.data.clips.shuffled_clips`; the mouth clip in the same
order): ``shuffled_score``. A shuffled clip holds exactly the clip's frames, so per-frame evidence
is the same on both and the real - shuffled AUC gap (``order_gain``) is what the model reads from the
sequence itself; the static gap also drops ``T - 1`` frames of evidence. :func:`clip_probs` is the one forward of a
batch of clips, here and in ``stfmamba predict``.

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
from stfmamba.data.clips import ClipSpec, Normalize, clip_tensor, mouth_tensor, shuffled_clips, static_clips
from stfmamba.data.manifest import face_npz, load_npz

__all__ = ["ClipSpec", "VIDEO_COLUMNS", "CLIP_COLUMNS", "STREAM_SCORES", "video_clips", "video_mouth_clips",
           "clip_scores", "clip_probs", "autocast_for", "score_videos"]

VIDEO_COLUMNS = ["video_id", "method", "label", "status", "reason", "score", "static_score", "shuffled_score",
                 "stf_score", "frame_stream_score", "frame_stream_static_score", "n_clips", "faces",
                 "face_scores", "group", "identity"]   # group / identity: the manifest's ("" = unknown)
CLIP_COLUMNS = ["row", "video_id", "method", "label", "clip_start", "score", "static_score", "shuffled_score",
                "face"]  # row: index into videos


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


def video_mouth_clips(frames: np.ndarray, landmarks: np.ndarray, spec: ClipSpec) -> torch.Tensor:
    """The mouth clips of :func:`video_clips`' clips: ``(K, 3, T, s, s)`` uint8 (``s = spec.mouth_size``),
    one per ``spec.starts()``, cut by :func:`~stfmamba.data.clips.mouth_clip` with the clip's landmarks.

    Raises:
        ValueError: ``spec`` has no mouth stream, or the landmarks do not cover the frames.
    """
    if spec.mouth_size is None:
        raise ValueError("video_mouth_clips: the clip spec has no mouth stream (mouth_size None)")
    starts, t = spec.starts(), spec.num_frames
    if landmarks is None or landmarks.ndim != 3 or len(landmarks) < max(starts) + t:
        raise ValueError(f"mouth stream: landmarks {None if landmarks is None else landmarks.shape} do not cover "
                         f"the clips (need ({max(starts) + t}, 68, 2))")
    return torch.stack([mouth_tensor(frames[s:s + t], landmarks[s:s + t], spec.mouth_size, spec.mouth_margin)
                        for s in starts])


# a two-stream model's (model.frame_stream) share of the logits -> the score column it gives
STREAM_SCORES = {"stf_logits": "stf_score", "frame_stream_logits": "frame_stream_score"}


def clip_scores(model: torch.nn.Module, x: torch.Tensor, norm: Normalize, device: torch.device, amp: str,
                mouth: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Fake probabilities (softmax class 1) of a batch of uint8 clips ``x: (B, 3, T, H, W)`` and, for a
    model with a mouth stream, their uint8 mouth clips ``(B, 3, T, s, s)``: both normalised with
    ``norm`` on ``device``, one forward under :func:`autocast_for`. Returns ``{"score": (B,) float32}``
    and, for a model with a frame stream, each stream scored alone from the same forward:
    ``stf_score`` (softmax of the STF head's logits, the temporal stream) and ``frame_stream_score``
    (of the per-frame logits averaged over the clip)."""
    kw = {} if mouth is None else {"mouth": norm(mouth.to(device))}
    with autocast_for(device, amp):
        out = model(norm(x.to(device)), **kw)

    def prob(logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=-1)[:, 1].cpu().numpy()

    res = {"score": prob(out["logits"])}
    if isinstance(out, dict):
        res.update({col: prob(out[key]) for key, col in STREAM_SCORES.items() if key in out})
    return res


def clip_probs(model: torch.nn.Module, x: torch.Tensor, norm: Normalize, device: torch.device, amp: str,
               mouth: torch.Tensor | None = None) -> np.ndarray:
    """The ``(B,)`` float32 fake probabilities of :func:`clip_scores` (the whole model)."""
    return clip_scores(model, x, norm, device, amp, mouth)["score"]


class _VideoClips(Dataset):
    """Item ``i`` -> ``(i, clips (K,3,T,H,W) uint8 or None, mouth clips (K,3,T,s,s) uint8 or None, error str)``
    for the i-th video (mouth clips only when ``spec.mouth_size``)."""

    def __init__(self, paths: list[Path], spec: ClipSpec):
        self.paths, self.spec = paths, spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        mouth = self.spec.mouth_size is not None
        try:
            data = load_npz(self.paths[i], keys=("frames", "landmarks") if mouth else ("frames",))
        except Exception as err:  # unreadable / missing file: reported, not raised
            return i, None, None, f"npz unreadable: {type(err).__name__}: {err}"
        frames = data["frames"]                                           # (N, S, S, 3) uint8
        try:
            clips = video_clips(frames, self.spec)
            return i, clips, video_mouth_clips(frames, data["landmarks"], self.spec) if mouth else None, ""
        except ValueError as err:
            return i, None, None, str(err)


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
    """Score the videos of ``rows`` (manifest rows) with ``model``, on real, static and shuffled clips.

    Args:
        model: a module whose ``forward(x: (B,3,T,H,W)[, mouth=(B,3,T,s,s)])`` returns ``{"logits": (B,2), ...}``.
        rows: manifest rows (video_id, method, label, status, reason, npz).
        dataset_dir: folder the ``npz`` column is relative to.
        spec: clip geometry (with ``mouth_size``: the model takes mouth clips too).
        norm: the model's input normalisation (``InputSpec.norm`` of its model file).
        batch_size: clips per forward pass (clips of several videos share a batch).
        num_workers: DataLoader workers reading npz files.
        device: torch device.
        amp: ``auto`` / ``bf16`` (bf16 autocast) or ``off``.
        progress: show a tqdm bar.

    Returns:
        ``(videos, clips)``: one row per video (:data:`VIDEO_COLUMNS`; ``score`` / ``static_score`` /
        ``shuffled_score`` NaN when failed; ``stf_score`` / ``frame_stream_score``, each stream of a
        two-stream model scored alone on the real clips, and ``frame_stream_static_score``, its frame
        stream on the static clips (what averaging ``T`` frames gives a stream without temporal input),
        NaN for any other model) and one row per scored clip (:data:`CLIP_COLUMNS`).
    """
    device = torch.device(device)
    model = model.to(device).eval()
    rows = rows.reset_index(drop=True)
    videos = pd.DataFrame({
        "video_id": rows["video_id"].astype(str), "method": rows["method"].astype(str),
        "label": rows["label"].astype(int), "status": "ok", "reason": "", "score": np.nan,
        "static_score": np.nan, "shuffled_score": np.nan, "stf_score": np.nan, "frame_stream_score": np.nan,
        "frame_stream_static_score": np.nan, "n_clips": 0, "faces": 0, "face_scores": "",
        "group": rows["group"].astype(str) if "group" in rows else "",
        "identity": rows["identity"].astype(str) if "identity" in rows else ""})
    bad = rows["status"].astype(str) != "ok"
    videos.loc[bad, "status"] = "failed"
    videos.loc[bad, "reason"] = [f"preprocess: {r}" if r else "preprocess failed" for r in rows.loc[bad, "reason"].astype(str)]
    todo = [(i, f, npz) for i in range(len(rows)) if not bad[i] for f, npz in enumerate(face_npz(rows.loc[i]))]
    data = _VideoClips([Path(dataset_dir) / npz for _, _, npz in todo], spec)
    loader = DataLoader(data, batch_size=None, shuffle=False, num_workers=num_workers)
    clip_rows: list[tuple[int, str, str, int, int, float, float, float, int]] = []
    per_face: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
    face_err: dict[int, list[str]] = {}
    buf: list[tuple[int, int, int, torch.Tensor, torch.Tensor | None]] = []
    # (video row, face, clip start, (3,T,H,W) uint8, mouth clip (3,T,s,s) uint8 or None)
    starts = spec.starts()
    with_static = spec.num_frames > 1   # T = 1: the static (and the shuffled) clip is the clip

    def flush() -> None:
        if not buf:
            return
        x = torch.stack([b[3] for b in buf])                                     # (B, 3, T, H, W) uint8
        mouth = torch.stack([b[4] for b in buf]) if buf[0][4] is not None else None   # (B, 3, T, s, s) uint8
        scored = clip_scores(model, x, norm, device, amp, mouth)
        prob = scored["score"]
        streams = np.stack([scored.get(c, np.full(len(prob), np.nan, np.float32))
                            for c in STREAM_SCORES.values()], axis=1)                   # (B, 2): NaN without
        if with_static:
            st_scored = clip_scores(model, static_clips(x), norm, device, amp,
                                    None if mouth is None else static_clips(mouth))
            static = st_scored["score"]
            frame_static = st_scored.get("frame_stream_score", np.full(len(prob), np.nan, np.float32))
        else:
            static, frame_static = prob, streams[:, 1]
        shuffled = (clip_probs(model, shuffled_clips(x), norm, device, amp,
                               None if mouth is None else shuffled_clips(mouth)) if with_static else prob)
        for (v, f, s, *_), p, q, r, st, fs in zip(buf, prob, static, shuffled, streams, frame_static):
            per_face.setdefault((v, f), []).append((float(p), float(q), float(r), *map(float, st), float(fs)))
            clip_rows.append((v, videos.at[v, "video_id"], videos.at[v, "method"], int(videos.at[v, "label"]), s,
                              float(p), float(q), float(r), f))
        buf.clear()

    for j, clips, mouths, err in tqdm(loader, total=len(data), desc="evaluate", disable=not progress, leave=False):
        v, f, _ = todo[j]
        if clips is None:
            face_err.setdefault(v, []).append(err if f == 0 else f"face {f}: {err}")
            continue
        for k, (s, c) in enumerate(zip(starts, clips)):
            buf.append((v, f, s, c, None if mouths is None else mouths[k]))
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
        p = [np.asarray(per_face[(v, f)]) for f in fs]   # per face (K, 6): real, static, shuffled clip, 2 streams,
                                                          # the frame stream on the static clip
        if not all(np.all(np.isfinite(q[:, :3])) for q in p):
            videos.at[v, "status"], videos.at[v, "reason"] = "failed", "non-finite model output"
            continue
        means = np.stack([q.mean(0) for q in p])          # (F, 3): mean over clips of each face
        videos.at[v, "score"], videos.at[v, "static_score"] = float(means[:, 0].max()), float(means[:, 1].max())
        videos.at[v, "shuffled_score"] = float(means[:, 2].max())
        for k, col in enumerate(STREAM_SCORES.values()):   # each stream alone, aggregated the same way
            videos.at[v, col] = float(means[:, 3 + k].max())
        videos.at[v, "frame_stream_static_score"] = float(means[:, 5].max())
        videos.at[v, "n_clips"] = int(sum(len(q) for q in p))
        videos.at[v, "faces"] = len(fs)
        videos.at[v, "face_scores"] = ";".join(f"{m:.6f}" for m in means[:, 0])
    clips_df = pd.DataFrame(clip_rows, columns=CLIP_COLUMNS)
    failed_rows = set(np.nonzero((videos["status"] != "ok").to_numpy())[0].tolist())
    clips_df = clips_df[~clips_df["row"].isin(failed_rows)].reset_index(drop=True)
    return videos, clips_df
