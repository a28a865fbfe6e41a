"""scripts/stream_fusion.py: fusion rules fitted on validation margins only, and the video AUCs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "stream_fusion.py"


@pytest.fixture(scope="module")
def fusion():
    spec = importlib.util.spec_from_file_location("stream_fusion", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _val(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(float)
    frame = 3.0 * y + rng.normal(0, 1.0, n) - 1.5          # the informative stream, large margins
    stf = rng.normal(0, 0.3, n)                              # noise
    return stf, frame, y


def test_stacking_follows_the_informative_stream(fusion):
    stf, frame, y = _val()
    rules = fusion.fit_fusions(stf, frame, y)
    w = rules["stacking"].fitted
    assert w["w_frame"] > 1.0 and abs(w["w_stf"]) < 0.5 * w["w_frame"]
    # swap the roles: the weight moves with the information
    w2 = fusion.fit_fusions(frame, stf, y)["stacking"].fitted
    assert w2["w_stf"] > 1.0 and abs(w2["w_frame"]) < 0.5 * w2["w_stf"]


def test_real_normalisation_uses_the_reals_only(fusion):
    stf, frame, y = _val(1)
    rules = fusion.fit_fusions(stf, frame, y)
    real = y == 0
    zs = rules["zreal_sum"](stf[real], np.full(real.sum(), frame[real].mean()))
    assert abs(zs.mean()) < 1e-9 and abs(zs.std() - 1.0) < 1e-9     # the frame term is 0 at the reals' mean
    z_stf = (stf - stf[real].mean()) / stf[real].std()
    z_frame = (frame - frame[real].mean()) / frame[real].std()
    assert np.allclose(rules["zreal_max"](stf, frame), np.maximum(z_stf, z_frame))
    assert np.allclose(rules["zreal_sum"](stf, frame), z_stf + z_frame)
    eq = rules["equal_say"](stf, frame)
    assert np.allclose(eq, stf / stf.std() + frame / frame.std())
    with pytest.raises(ValueError, match="at least 2 real and 2 fake"):
        fusion.fit_fusions(stf[:3], frame[:3], np.array([0.0, 0.0, 1.0]))


def test_video_aucs_mean_over_clips_max_over_faces(fusion):
    # row 0 real (two faces), row 1 fake A, row 2 fake B; two clips each
    clips = pd.DataFrame({"row": [0, 0, 0, 0, 1, 1, 2, 2], "face": [0, 0, 1, 1, 0, 0, 0, 0],
                          "label": [0, 0, 0, 0, 1, 1, 1, 1], "method": ["real"] * 4 + ["A", "A", "B", "B"]})
    # the real's second face scores 2 (max over faces), fake A 1.5, fake B 3
    z = np.array([0.0, 0.0, 2.0, 2.0, 1.0, 2.0, 3.0, 3.0])
    res = fusion.video_aucs(clips, z, ["A", "B"])
    assert res == {"A": 0.0, "B": 1.0, "overall": 0.5}
