"""Preprocessing real videos with real dlib: contracted arrays, failures with reasons, resume, shards."""
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stfmamba.config import DatasetConfig
from stfmamba.data.adapters import VideoRow, build_adapter
from stfmamba.data.adapters.ffpp import read_split
from stfmamba.data.faces import inter_ocular
from stfmamba.data.manifest import COLUMNS, load_npz, read_manifest
from stfmamba.data.preprocess import in_shard, preprocess_dataset
from stfmamba.data.verify import check_npz_arrays

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"good": "ok", "good_fake": "ok", "truncated": "unreadable", "empty": "unreadable",
            "text": "unreadable", "background": "no_face", "short": "too_short", "gone": "missing"}


@pytest.fixture(scope="module")
def csv_dataset(bad_videos, tiny_demo):
    d = bad_videos["good"].parent
    fake = Path(tiny_demo.out_dir) / "manipulated_sequences" / "DemoSwapAE" / "c23" / "videos" / "franck_032.mp4"
    (d / "good_fake.mp4").write_bytes(fake.read_bytes())
    names = ["good", "truncated", "empty", "text", "background", "short", "gone"]
    lines = ["path,label,method"] + [f"{n}.mp4,0,real" for n in names] + ["good_fake.mp4,1,DemoSwapAE"]
    (d / "list.csv").write_text("\n".join(lines) + "\n")
    return DatasetConfig("csv", str(d / "list.csv"))


@pytest.fixture(scope="module")
def first_run(csv_dataset, pre_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "bad"
    rows = build_adapter(csv_dataset).rows()
    summary = preprocess_dataset("bad", rows, pre_cfg, out, progress=False)
    return rows, out, summary


def test_bad_videos_fail_with_reasons_rest_succeeds(first_run):
    rows, out, summary = first_run
    df = read_manifest(out)
    assert list(df.columns) == COLUMNS and len(df) == len(EXPECTED) == summary.total
    got = {r.video_id: (r.status if r.status == "ok" else r.reason.split(":")[0]) for r in df.itertuples()}
    assert got == EXPECTED
    assert summary.ok == 2 and summary.failed == 6 and summary.processed == 8
    assert (df[df.status == "failed"].n_frames == 0).all() and (df[df.status == "ok"].n_frames == 16).all()


def test_npz_contract(first_run, pre_cfg):
    _, out, _ = first_run
    df = read_manifest(out)
    for rec in df[df.status == "ok"].itertuples():
        z = load_npz(out / rec.npz)
        assert rec.npz == f"{rec.method}/{rec.video_id}.npz"
        assert z["frames"].shape == (16, 64, 64, 3) and z["frames"].dtype == np.uint8
        assert z["landmarks"].shape == (16, 68, 2) and z["landmarks"].dtype == np.float32
        assert z["boxes"].shape == (16, 4) and z["frame_idx"].dtype == np.int64
        assert z["frame_idx"].tolist() == [*range(8), *range(22, 30)]    # 30-frame clip: runs at 0 and 22
        assert z["metadata"]["video_id"] == rec.video_id and z["metadata"]["n_src_frames"] == 30
        assert check_npz_arrays(z, pre_cfg) == []
        lm = z["landmarks"]
        assert (lm[:, 36:48, 1].mean(1) < lm[:, 48:68, 1].mean(1)).all()        # eyes above the mouth
        assert (inter_ocular(lm) > 0.2 * 64).all()                               # a face, not a speck
        # a still crop per run: one box for the 8 frames of each run
        assert (z["boxes"][:8] == z["boxes"][0]).all() and (z["boxes"][8:] == z["boxes"][8]).all()


def test_second_run_does_no_work(first_run, pre_cfg):
    rows, out, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    again = preprocess_dataset("bad", rows, pre_cfg, out, progress=False)
    assert (again.processed, again.skipped, again.ok, again.failed) == (0, 8, 2, 6)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == before


def test_changed_source_is_redone(csv_dataset, pre_cfg, tmp_path):
    d = Path(csv_dataset.root).parent
    rows = [r for r in build_adapter(csv_dataset).rows() if r.video_id in ("good", "short")]
    cfg = replace(pre_cfg, workers=0)
    assert preprocess_dataset("x", rows, cfg, tmp_path, progress=False).processed == 2
    short = d / "short.mp4"
    original = short.read_bytes()
    try:
        short.write_bytes((d / "good.mp4").read_bytes())       # the short video gets fixed upstream
        s = preprocess_dataset("x", rows, cfg, tmp_path, progress=False)
        assert (s.processed, s.skipped, s.ok) == (1, 1, 2)
    finally:
        short.write_bytes(original)


def test_shards_cover_everything_once(csv_dataset, pre_cfg, tmp_path):
    rows = build_adapter(csv_dataset).rows()
    parts = [[r for r in rows if in_shard(r, i, 3)] for i in range(3)]
    assert sorted(r.video_id for p in parts for r in p) == sorted(r.video_id for r in rows)
    for i in range(2):
        cfg = replace(pre_cfg, workers=0, shard_index=i, num_shards=2)
        preprocess_dataset("bad", rows, cfg, tmp_path, progress=False)
        assert (tmp_path / f"manifest.shard-{i}-of-2.csv").is_file()
        assert (tmp_path / "manifest.csv").is_file() == (i == 1)               # merged once both parts exist
    df = read_manifest(tmp_path)
    assert sorted(df.video_id) == sorted(EXPECTED) and (df.status == "ok").sum() == 2


def test_ffpp_pairs_split_format(tmp_path, bad_videos):
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test.json").write_text('[["000", "003"]]')
    for s in ("train", "val"):
        (tmp_path / "splits" / f"{s}.json").write_text("[]")
    assert read_split(tmp_path / "splits" / "test.json") == (["000", "003"], ["000_003", "003_000"])
    real = tmp_path / "ff" / "original_sequences" / "youtube" / "c40" / "videos"
    fake = tmp_path / "ff" / "manipulated_sequences" / "Deepfakes" / "c40" / "videos"
    real.mkdir(parents=True)
    fake.mkdir(parents=True)
    for p in (real / "000.mp4", real / "003.mp4", fake / "000_003.mp4", fake / "003_000.mp4"):
        os.link(bad_videos["good"], p)
    rows = build_adapter(DatasetConfig("ffpp", str(tmp_path / "ff"), str(tmp_path / "splits"), "c40",
                                       ("Deepfakes",))).rows()
    assert sorted((r.video_id, r.label, r.method, r.split) for r in rows) == [
        ("000", 0, "real", "test"), ("000_003", 1, "Deepfakes", "test"), ("003", 0, "real", "test"),
        ("003_000", 1, "Deepfakes", "test")]
    assert all(isinstance(r, VideoRow) and r.path.is_file() for r in rows)
