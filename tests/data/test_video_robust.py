"""Robust reading and robust stages, on real files written with PyAV from the demo media and real dlib.

A variable-frame-rate copy, a copy with a 90° display-matrix rotation, a 2-second clip, a file with
a corrupt middle, and a pool worker killed mid-video (the ``STFMAMBA_TEST_CRASH_VIDEO`` hook).
"""
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stfmamba.config import PreprocessConfig
from stfmamba.data.adapters import VideoRow
from stfmamba.data.manifest import load_npz, read_manifest
from stfmamba.data.preprocess import CRASH_ENV, process_video, preprocess_dataset
from stfmamba.data.verify import check_npz_arrays
from stfmamba.data.video import VideoError, read_all, read_clip, read_runs

SOURCE = Path(__file__).resolve().parents[2] / "data" / "demo" / "source"
CFG = PreprocessConfig(num_segments=4, frames_per_segment=8, crop_size=64, margin=0.25, detect_scale=0.5,
                       min_face_px=80, workers=0, min_frames=16)


def write_pts(path: Path, frames: np.ndarray, pts_ms: list[int], rotation: int | None = None, gop: int = 12) -> Path:
    """H.264 MP4 of ``frames (N, H, W, 3)`` with the given timestamps (ms) and an optional display rotation."""
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.time_base = s.codec_context.time_base = tb
        s.options = {"preset": "veryfast", "threads": "1", "x264-params": f"keyint={gop}:min-keyint={gop}:bframes=0"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for arr, p in zip(frames, pts_ms):
            f = av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2YUV_I420),
                                           format="yuv420p")
            f.pts, f.time_base = int(p), tb
            for pk in s.encode(f):
                out.mux(pk)
        for pk in s.encode():
            out.mux(pk)
    return path


def cfr_pts(n: int, fps: float = 24) -> list[int]:
    return [int(round(i * 1000 / fps)) for i in range(n)]


@pytest.fixture(scope="module")
def franck() -> np.ndarray:
    return read_runs(SOURCE / "franck.mp4", [0], 96)[0]     # (96, 288, 360, 3): one face, moving a little


def source_landmarks(clip) -> np.ndarray:
    """Landmarks of a FaceClip mapped back from crop pixels to (upright) source pixels."""
    side = clip.boxes[:, 2] - clip.boxes[:, 0]
    return clip.landmarks * (side / CFG.crop_size)[:, None, None] + clip.boxes[:, None, :2]


def test_variable_frame_rate(tmp_path, franck):
    durations = np.random.default_rng(0).choice([33, 50, 83], size=len(franck))      # 30, 20 and 12 fps mixed
    pts = np.concatenate([[0], np.cumsum(durations[:-1])]).tolist()
    path = write_pts(tmp_path / "vfr.mp4", franck, pts)
    clip = read_clip(path, CFG.num_segments, CFG.frames_per_segment, CFG.min_frames)
    assert clip.variable_rate and clip.n_src_frames == 96 and clip.decode_errors == 0
    runs = clip.frame_idx.reshape(4, 8)
    assert (np.diff(runs, axis=1) == 1).all() and (runs[1:, 0] >= runs[:-1, -1] + 1).all()   # contiguous, disjoint
    assert runs[0, 0] == 0 and runs[-1, -1] == 95
    # evenly spaced in TIME: each start within one frame duration of its target time
    t = np.asarray(pts, float)
    targets = np.linspace(t[0], t[96 - 8], 4)
    assert (np.abs(t[runs[:, 0]] - targets) <= 83).all()
    full, _ = read_all(path)                                     # frame i = i-th frame in presentation order
    np.testing.assert_array_equal(clip.frames, full[clip.frame_idx])
    face = process_video(path, CFG)
    assert np.isfinite(face.landmarks).all() and face.n_unique_frames == 32


def test_rotated_copy_is_read_upright(tmp_path, franck):
    frames = franck[:48]
    sideways = np.ascontiguousarray(np.rot90(frames, -1, axes=(1, 2)))    # stored rotated 90° clockwise
    rot = write_pts(tmp_path / "rot.mp4", sideways, cfr_pts(48), rotation=90)
    ref = write_pts(tmp_path / "ref.mp4", frames, cfr_pts(48))
    with av.open(str(rot)) as c:                                 # the tag is really in the file
        f = next(c.decode(video=0))
        assert (f.rotation, f.width, f.height) == (90, 288, 360)
    clip = read_clip(rot, 4, 8, 16)
    assert clip.rotation == 90 and clip.frames.shape[1:] == (288, 360, 3)
    assert np.abs(clip.frames.astype(int) - frames[clip.frame_idx]).mean() < 3
    a, b = process_video(rot, CFG), process_video(ref, CFG)
    np.testing.assert_array_equal(a.frame_idx, b.frame_idx)
    err = np.linalg.norm(source_landmarks(a) - source_landmarks(b), axis=-1)
    assert np.median(err) < 2.0 and err.mean() < 3.0, (np.median(err), err.mean())


def test_short_clip_overlapping_runs(tmp_path, franck):
    path = write_pts(tmp_path / "two_seconds.mp4", franck[:48], cfr_pts(48))   # 48 frames < 4 x 16
    cfg = replace(CFG, frames_per_segment=16)
    face = process_video(path, cfg)
    assert face.frames.shape == (64, 64, 64, 3) and face.n_unique_frames == 48
    runs = face.frame_idx.reshape(4, 16)
    assert runs[:, 0].tolist() == [0, 11, 21, 32] and (np.diff(runs, axis=1) == 1).all()
    tiny = write_pts(tmp_path / "half_second.mp4", franck[:12], cfr_pts(12))
    with pytest.raises(VideoError, match="too_short"):
        read_clip(tiny, 4, 8, 16)                                # 12 < min_frames = 16
    assert read_clip(tiny, 4, 8, 8).n_unique_frames == 12        # a lower min_frames accepts it


def test_run_without_a_face_is_filled_not_fatal(tmp_path, franck):
    """A run whose first frame has no detectable face (here: grey frames, as in a cut or a fade) is filled
    with a copy of its nearest good run; the video stays usable, the npz says which run was filled."""
    good = write_pts(tmp_path / "good.mp4", franck, cfr_pts(96))
    starts = read_clip(good, 4, 8, 16).run_starts
    frames = franck.copy()
    frames[starts[1]:starts[1] + 8] = 128                      # run 1: no face at all
    gap = write_pts(tmp_path / "gap.mp4", frames, cfr_pts(96))
    ref, face = process_video(good, CFG), process_video(gap, CFG)
    assert face.filled_runs == [1] and face.n_unique_frames == 24
    idx = face.frame_idx.reshape(4, 8)
    assert (idx[1] == idx[0]).all() and (idx[[0, 2, 3]] == ref.frame_idx.reshape(4, 8)[[0, 2, 3]]).all()
    run = lambda a, r: a[r * 8:(r + 1) * 8]  # noqa: E731
    assert np.array_equal(run(face.frames, 1), run(face.frames, 0))
    assert np.abs(run(face.landmarks, 2) - run(ref.landmarks, 2)).max() < 1.0     # good runs as without the gap
    out = tmp_path / "pre"
    s = preprocess_dataset("g", [VideoRow("gap", gap, 0, "real", "test")], CFG, out, progress=False)
    z = load_npz(out / read_manifest(out).npz[0])
    assert s.ok == 1 and z["metadata"]["filled_runs"] == [1] and check_npz_arrays(z, CFG) == []
    frames[:] = 128                                             # no face anywhere: still a failure
    with pytest.raises(VideoError, match="no_face"):
        process_video(write_pts(tmp_path / "blank.mp4", frames, cfr_pts(96)), CFG)


def corrupt_middle(src: Path, dst: Path, first: int, last: int) -> None:
    """Copy ``src`` with the mdat bytes of packets ``first..last`` overwritten by noise."""
    with av.open(str(src)) as c:
        pk = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    data = bytearray(src.read_bytes())
    a, b = pk[first][0] + 8, pk[last][0] + pk[last][1]
    data[a:b] = np.random.default_rng(1).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def test_corrupt_middle_uses_what_decodes(tmp_path, franck):
    good = write_pts(tmp_path / "good.mp4", franck, cfr_pts(96), gop=24)
    bad = tmp_path / "corrupt.mp4"
    corrupt_middle(good, bad, 46, 52)                           # packets of frames 46-52, keyframe 48 among them
    with pytest.raises(VideoError, match="unreadable"):
        read_runs(bad, [40], 16)                                 # the strict reader fails there
    clip = read_clip(bad, 4, 8, 16)
    assert clip.decode_errors > 0 and clip.frames.shape[0] == 32
    assert not np.isin(clip.frame_idx, np.arange(46, 53)).any()            # no frame of the broken packets
    full, _ = read_all(good)
    ok = ~np.isin(clip.frame_idx, np.arange(46, 72))            # frames outside the damaged GOP decode exactly
    assert np.abs(clip.frames[ok].astype(int) - full[clip.frame_idx[ok]]).max() == 0
    out = tmp_path / "pre"
    rows = [VideoRow("corrupt", bad, 0, "real", "test")]
    s = preprocess_dataset("c", rows, CFG, out, progress=False)
    df = read_manifest(out)
    assert s.ok == 1 and int(df.decode_errors[0]) == clip.decode_errors > 0
    z = load_npz(out / df.npz[0])
    assert check_npz_arrays(z, CFG) == [] and z["metadata"]["decode_errors"] == clip.decode_errors
    assert int(df.n_unique_frames[0]) == z["metadata"]["n_unique_frames"] == len(np.unique(z["frame_idx"]))


def test_worker_crash_costs_one_video_and_is_not_retried(tmp_path, franck, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    rows = [VideoRow(v, write_pts(src / f"{v}.mp4", franck[:24], cfr_pts(24)), 0, "real", "test")
            for v in ("calm", "doomed")]
    out = tmp_path / "pre"
    monkeypatch.setenv(CRASH_ENV, "doomed")
    s = preprocess_dataset("d", rows, replace(CFG, num_segments=2, workers=1), out, progress=False)
    df = read_manifest(out).set_index("video_id")
    assert (s.processed, s.ok, s.failed) == (2, 1, 1)
    assert df.status["calm"] == "ok" and df.reason["doomed"].startswith("worker_crashed: signal 9")
    monkeypatch.delenv(CRASH_ENV)
    again = preprocess_dataset("d", rows, replace(CFG, num_segments=2, workers=1), out, progress=False)
    assert (again.processed, again.skipped, again.failed) == (0, 2, 1)          # not retried
    changed = preprocess_dataset("d", rows, replace(CFG, num_segments=2, workers=0, margin=0.3), out, progress=False)
    assert (changed.processed, changed.ok) == (2, 2)                            # new params: retried, fine now


def test_old_manifest_still_reads(tmp_path):
    old = ("video_id,dataset,split,method,label,src_path,npz,status,reason,n_frames,src_hash,params_hash\n"
           "a,d,test,real,0,a.mp4,real/a.npz,ok,,16,h,p\nb,d,test,real,0,b.mp4,real/b.npz,failed,no_face,0,h,p\n")
    (tmp_path / "manifest.csv").write_text(old)
    df = read_manifest(tmp_path)
    assert df.n_unique_frames.tolist() == [16, 0] and df.decode_errors.tolist() == [0, 0]
    assert df.run_starts.tolist() == ["", ""]
