"""The verify stage: counts and failures in metrics/data.json, npz checks, non-zero exit with a fix."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from stfmamba.config import Params, from_dict
from stfmamba.data.adapters import build_adapter
from stfmamba.data.manifest import load_npz, read_manifest, save_npz
from stfmamba.data.preprocess import preprocess_dataset
from stfmamba.data.verify import check_npz_arrays, verify

REPO = Path(__file__).resolve().parents[2]
METHODS = ["DemoSwapFlicker", "DemoSwapAE", "DemoReenact", "DemoMouthTex"]


def _params_dict(tiny_demo, pre_dir: Path) -> dict:
    return {"data": {"train": "demo", "test": "demo", "cross": ["demo_cross"], "preprocessed_dir": str(pre_dir),
                     "datasets": {"demo": {"adapter": "ffpp", "root": tiny_demo.out_dir,
                                           "splits": str(REPO / "splits" / "demo"), "methods": METHODS},
                                  "demo_cross": {"adapter": "csv",
                                                 "root": str(Path(tiny_demo.cross_dir) / "list.csv")}}},
            "preprocess": {"num_segments": 2, "frames_per_segment": 8, "crop_size": 64, "workers": 2},
            "model": {"img_size": 64, "num_frames": 8}}


@pytest.fixture(scope="module")
def preprocessed(tiny_demo, tmp_path_factory):
    pre = tmp_path_factory.mktemp("verify") / "preprocessed"
    raw = _params_dict(tiny_demo, pre)
    params = from_dict(Params, raw)
    for name in params.data.used():
        rows = build_adapter(params.data.datasets[name]).rows()
        preprocess_dataset(name, rows, params.preprocess, pre / name, progress=False)
    return raw, pre


def test_report_counts_and_failures(preprocessed):
    raw, _ = preprocessed
    report = verify(from_dict(Params, raw))
    assert report["errors"] == []
    demo = report["datasets"]["demo"]
    assert demo["splits"]["test"]["real"] == {"ok": 1, "failed": 11}        # tiny demo: 1 of 12 test reals built
    assert all(demo["splits"][s][m]["ok"] == 1 for s in ("val", "test") for m in METHODS)
    assert demo["failure_reasons"] == {"missing": 57 - 3} and demo["npz_checked"] == demo["ok"] == 11
    cross = report["datasets"]["demo_cross"]
    assert cross["videos"] == 5 and cross["npz_problems"] == []


def test_check_npz_catches_broken_arrays(preprocessed):
    raw, pre = preprocessed
    cfg = from_dict(Params, raw).preprocess
    rec = read_manifest(pre / "demo").query("status == 'ok'").iloc[0]
    z = load_npz(pre / "demo" / rec.npz)
    assert check_npz_arrays(z, cfg) == []
    bad = dict(z, landmarks=np.where(np.arange(68)[None, :, None] == 3, np.nan, z["landmarks"]).astype(np.float32))
    assert check_npz_arrays(bad, cfg) == ["landmarks: NaN or inf"]
    outside = dict(z, landmarks=z["landmarks"] + 70)
    assert "outside the crop" in check_npz_arrays(outside, cfg)[0]
    assert "frames: uint8[16, 32, 32, 3]" in check_npz_arrays(dict(z, frames=z["frames"][:, :32, :32]), cfg)[0]
    jump = dict(z, frame_idx=z["frame_idx"] * 2)
    assert check_npz_arrays(jump, cfg) == ["frame_idx: a run is not contiguous"]


def _stage(params: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, str(REPO / "stages" / "verify.py"), "--params", str(p),
                           "--out", str(tmp_path / "metrics" / "data.json")], capture_output=True, text=True)


def test_stage_writes_metrics(preprocessed, tmp_path):
    raw, _ = preprocessed
    p = _stage(raw, tmp_path)
    assert p.returncode == 0, p.stderr
    metrics = json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert metrics["datasets"]["demo"]["ok"] == 11 and metrics["errors"] == []


def test_stage_fails_on_empty_split_and_broken_npz(preprocessed, tmp_path):
    raw, pre = preprocessed
    # a copy of the data in which the test fakes are gone and one npz holds NaN landmarks
    import shutil
    copy = tmp_path / "pre"
    shutil.copytree(pre, copy)
    df = read_manifest(copy / "demo")
    df = df[~((df.split == "test") & (df.label == 1))]
    from stfmamba.data.manifest import write_manifest
    write_manifest(df, copy / "demo")
    rec = df[(df.status == "ok") & (df.split == "train")].iloc[0]
    z = load_npz(copy / "demo" / rec.npz)
    z["landmarks"][0, 0, 0] = np.nan
    save_npz(copy / "demo" / rec.npz, z["frames"], z["landmarks"], z["boxes"], z["frame_idx"], z["metadata"])
    # and another one truncated half-way (a broken download): reported, not a crash
    cut = df[(df.status == "ok") & (df.npz != rec.npz)].iloc[0]
    data = (copy / "demo" / cut.npz).read_bytes()
    (copy / "demo" / cut.npz).write_bytes(data[: len(data) // 2])
    raw = dict(raw, data=dict(raw["data"], preprocessed_dir=str(copy)))
    p = _stage(raw, tmp_path)
    assert p.returncode == 1
    assert "dataset 'demo': no usable fake test videos in split 'test'" in p.stderr
    assert "re-run `dvc repro preprocess`" in p.stderr
    assert f"{rec.npz}: landmarks: NaN or inf" in p.stderr
    assert f"{cut.npz}: " in p.stderr and "Traceback" not in p.stderr
    assert json.loads((tmp_path / "metrics" / "data.json").read_text())["errors"]


def test_stage_names_missing_manifest(tiny_demo, tmp_path):
    p = _stage(_params_dict(tiny_demo, tmp_path / "nothing"), tmp_path)
    assert p.returncode == 1 and "manifest not found; run `dvc repro preprocess`" in p.stderr
