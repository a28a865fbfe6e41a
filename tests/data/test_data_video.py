"""Video I/O: seeking reads exactly the frames a full decode gives; run sampling; writer round trip."""
from pathlib import Path

import numpy as np
import pytest

from stfmamba.data.video import VideoError, probe, read_all, read_runs, run_starts, write_video

SOURCE = Path(__file__).resolve().parents[2] / "data" / "demo" / "source"


def test_seek_matches_full_decode():
    path = SOURCE / "cap13_edit2.mp4"          # keyframes every 250 frames: runs start mid-GOP
    full, _ = read_all(path, max_frames=700)
    frames, idx = read_runs(path, [3, 260, 640], 8)
    assert idx.tolist() == [*range(3, 11), *range(260, 268), *range(640, 648)]
    np.testing.assert_array_equal(frames, full[idx])


def test_run_starts_span_video():
    assert run_starts(120, 2, 8) == [0, 112]
    assert run_starts(16, 2, 8) == [0, 8]
    with pytest.raises(VideoError, match="too_few_frames"):
        run_starts(15, 2, 8)


def test_write_probe_roundtrip(tmp_path):
    frames = np.zeros((12, 48, 64, 3), np.uint8)
    frames[:, 10:30, 20:40] = 200
    write_video(tmp_path / "a.mp4", frames, fps=25)
    info = probe(tmp_path / "a.mp4")
    assert (info.n_frames, info.width, info.height, info.fps) == (12, 64, 48, 25.0)
    back, _ = read_all(tmp_path / "a.mp4")
    assert np.abs(back.astype(int) - frames).mean() < 3
