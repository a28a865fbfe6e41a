"""Engine + reports on real npz files laid out as the preprocess contract, with failures."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from stfmamba.data.clips import IMAGENET_MEAN, IMAGENET_STD, Normalize
from stfmamba.data.manifest import save_npz

from stfmamba.evaluation.engine import ClipSpec, score_videos
from stfmamba.evaluation.reports import (describe_failures, markdown_table, summarize, write_dataset_report,
                                         write_json)

SPEC = ClipSpec(num_segments=2, frames_per_segment=4, num_frames=4, img_size=16, max_clips_per_video=8)


class Brightness(torch.nn.Module):
    """A fixed scorer: logit of 'fake' = mean normalised intensity (brighter clips look faker)."""

    def forward(self, x):  # x: (B, 3, T, H, W)
        m = x.mean(dim=(1, 2, 3, 4))
        return {"logits": torch.stack([torch.zeros_like(m), 4 * m], dim=1)}


def _write_npz(path, level, n=8, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(int(level))
    frames = np.clip(rng.normal(level, 5, size=(n, size, size, 3)), 0, 255).astype(np.uint8)
    save_npz(path, frames, np.zeros((n, 68, 2), np.float32), np.zeros((n, 4), np.float32),
             np.arange(n, dtype=np.int64), {"video_id": path.stem})


@pytest.fixture()
def dataset(tmp_path):
    rows = []
    for i, level in enumerate([60, 70, 80]):
        rows.append(dict(video_id=f"r{i}", method="real", label=0, level=level))
    for i, level in enumerate([150, 160]):
        rows.append(dict(video_id=f"a{i}", method="A", label=1, level=level))
    for i, level in enumerate([65, 200]):  # same ids as the reals, as FF++ / the demo do
        rows.append(dict(video_id=f"r{i}", method="B", label=1, level=level))
    recs = []
    for r in rows:
        npz = f"{r['method']}/{r['video_id']}.npz"
        _write_npz(tmp_path / npz, r["level"])
        recs.append(dict(video_id=r["video_id"], dataset="t", split="test", method=r["method"], label=r["label"],
                         npz=npz, status="ok", reason=""))
    recs.append(dict(video_id="f_pre", dataset="t", split="test", method="A", label=1, npz="", status="failed",
                     reason="no face"))
    recs.append(dict(video_id="f_missing", dataset="t", split="test", method="A", label=1, npz="A/none.npz",
                     status="ok", reason=""))
    (tmp_path / "A" / "bad.npz").write_bytes(b"not a zip")
    recs.append(dict(video_id="f_corrupt", dataset="t", split="test", method="B", label=1, npz="A/bad.npz",
                     status="ok", reason=""))
    _write_npz(tmp_path / "real" / "short.npz", 50, n=5)
    recs.append(dict(video_id="f_short", dataset="t", split="test", method="real", label=0, npz="real/short.npz",
                     status="ok", reason=""))
    return tmp_path, pd.DataFrame(recs)


def test_scores_failures_and_reports(dataset, tmp_path):
    root, manifest = dataset
    videos, clips = score_videos(Brightness(), manifest, root, SPEC, norm=Normalize(IMAGENET_MEAN, IMAGENET_STD), batch_size=3, progress=False, amp="off")
    failed = videos.set_index("video_id").loc[["f_pre", "f_missing", "f_corrupt", "f_short"]]
    assert (failed["status"] == "failed").all() and failed["score"].isna().all()
    assert failed.loc["f_pre", "reason"] == "preprocess: no face"
    assert "unreadable" in failed.loc["f_corrupt", "reason"] and "too few frames" in failed.loc["f_short", "reason"]
    ok = videos[videos["status"] == "ok"]
    assert len(ok) == 7 and (ok["n_clips"] == 2).all() and len(clips) == 14
    # video score is the mean of its clip scores
    mean_clip = clips.groupby("row")["score"].mean()
    assert np.allclose(ok["score"], mean_clip.loc[ok.index])

    m = summarize(videos, clips)
    assert m["videos"] == {"total": 11, "scored": 7, "failed": 4}
    assert m["auc"]["A"] == pytest.approx(1.0)
    # B fakes: level 65 beats the level-60 real only, level 200 beats all three -> 4 of 6 pairs
    assert m["auc"]["B"] == pytest.approx(4 / 6)
    # failures per subset: the short real is in every subset; A lost f_pre + f_missing, B f_corrupt
    assert m["failed"] == {"overall": {"real": 1, "fake": 3}, "A": {"real": 1, "fake": 2},
                           "B": {"real": 1, "fake": 1}}
    # SBI protocol, failed videos at 0.5 (reals score < 0.5 < fakes A here):
    # A: reals p60, p70, p80, 0.5 vs fakes p150, p160, 0.5, 0.5 -> 8 + 2 * 3 + 2 * 0.5 (ties) = 15 of 16
    assert m["auc_fail05"]["A"] == pytest.approx(15 / 16)
    # B: fakes p65 (beats p60), p200 (beats 4), 0.5 (beats 3, ties 1) -> 8.5 of 12
    assert m["auc_fail05"]["B"] == pytest.approx(8.5 / 12)
    lo, hi = m["auc_ci95"]["B"]
    assert 0.0 <= lo <= m["auc"]["B"] <= hi <= 1.0 and hi > lo
    # perfectly separated: every resample gives 1, so no interval (was [1.0, 1.0] before issue 18);
    # the lower bound instead: 3 reals + 2 fakes, each its own cluster -> k = min(3, 2, 5 // 2) = 2 pairs
    assert m["auc_ci95"]["A"] is None and m["auc_lower95"]["A"] == pytest.approx(0.05 ** 0.5)
    assert m["auc_ci95_by"]["A"] == "video" and m["auc_groups"]["A"] == {"real": 3, "fake": 2}
    # B's fakes reuse the reals' ids r0, r1 (as the demo does): each goes with its real
    assert m["auc_ci95_by"]["B"] == "source" and m["auc_groups"]["B"] == {"real": 3, "fake": 2}
    assert m["temporal_gain"]["B"] == pytest.approx(m["auc"]["B"] - m["static_auc"]["B"])
    # static clips of these constant-brightness videos look like the clips themselves
    assert ok["static_score"].notna().all() and np.allclose(ok["static_score"], ok["score"], atol=0.02)
    assert m["static_auc"]["B"] == pytest.approx(4 / 6)
    out = tmp_path / "report"
    metrics = write_dataset_report(out, videos, clips, "test")
    write_json(tmp_path / "m.json", metrics)
    back = json.loads((tmp_path / "m.json").read_text())
    assert set(back["auc"]) == {"overall", "A", "B"} and back["n_fake"]["A"] == 2
    assert back["auc_ci95"]["A"] is None and back["failed"]["A"] == {"real": 1, "fake": 2}
    gain = pd.read_csv(out / "temporal_gain.csv")
    assert list(gain.columns) == ["name", "temporal_gain", "lo", "hi", "order_gain", "order_lo", "order_hi",
                                  "frame_stream_gain"]
    assert gain["frame_stream_gain"].isna().all()   # one stream: no frame stream of its own
    assert list(gain["name"]) == ["overall", "A", "B"]
    # Brightness is a per-frame score: the shuffled clips hold the same frames, so no order gain
    assert np.allclose(ok["shuffled_score"], ok["score"], atol=1e-6) and m["order_gain"]["B"] == pytest.approx(0.0)
    assert gain["order_gain"].tolist() == pytest.approx([m["order_gain"][n] for n in ("overall", "A", "B")])
    write_dataset_report(out, videos, clips, "test", temporal=False)   # a frame model: no gain, stale file gone
    assert not (out / "temporal_gain.csv").exists()
    assert "static_score" in pd.read_csv(out / "scores.csv").columns
    assert {"static_score", "shuffled_score"} <= set(pd.read_csv(out / "clips.csv").columns)
    assert (out / "roc.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "roc").iterdir()) == ["A.csv", "B.csv", "overall.csv"]
    # the columns dvc.yaml's ROC plots name (x: fpr, y: tpr), from (0, 0) to (1, 1)
    roc_a = pd.read_csv(out / "roc" / "A.csv")
    assert list(roc_a.columns) == ["fpr", "tpr", "threshold"] and np.isfinite(roc_a.to_numpy()).all()
    assert tuple(roc_a.iloc[0, :2]) == (0.0, 0.0) and tuple(roc_a.iloc[-1, :2]) == (1.0, 1.0)
    assert len(pd.read_csv(out / "failures.csv")) == 4
    assert "4 of 11 videos could not be scored" in describe_failures("t", videos)
    assert "| A | 1.000 [>= 0.224] | video (3 / 2) | 0.938 | 1.000 | 0.000 | 1.000 | 0.000 | 1.000 | 0.000 | " \
        in markdown_table(m)
    assert "| 3 / 2 (1 / 2) |" in markdown_table(m)


def test_clip_cap_is_evenly_spaced():
    spec = ClipSpec(num_segments=4, frames_per_segment=8, num_frames=4, img_size=16, max_clips_per_video=3)
    assert spec.starts() == [0, 16, 28]  # windows 0,4,..,28; indices 0, 3.5->4, 7
    assert ClipSpec(2, 8, 8, 16, 8).starts() == [0, 8]


def test_cross_summary_carries_the_new_keys_and_the_gain_plot(dataset, tmp_path):
    from stfmamba.evaluation.run import DatasetResult, write_cross_summary
    root, manifest = dataset
    videos, clips = score_videos(Brightness(), manifest, root, SPEC, norm=Normalize(IMAGENET_MEAN, IMAGENET_STD), batch_size=4, progress=False, amp="off")
    r = DatasetResult("t", videos, clips, summarize(videos, clips))
    m = write_cross_summary(tmp_path / "cross", [r])
    for k in ("auc_lower95", "auc_ci95_by", "auc_groups", "auc_identities", "temporal_gain", "temporal_gain_ci95",
              "shuffled_auc", "order_gain", "order_gain_ci95"):
        assert m[k]["t"] == r.metrics[k]["overall"]
    gain = pd.read_csv(tmp_path / "cross" / "temporal_gain.csv")
    assert list(gain["name"]) == ["t"] and gain["temporal_gain"][0] == pytest.approx(m["temporal_gain"]["t"])
    frame = DatasetResult("t", videos, clips, summarize(videos, clips, temporal=False), temporal=False)
    m = write_cross_summary(tmp_path / "cross", [frame])
    assert m["temporal_gain"]["t"] is None and not (tmp_path / "cross" / "temporal_gain.csv").exists()


class TwoStream(torch.nn.Module):
    """A fixed two-stream scorer shaped like STF-Mamba with ``model.frame_stream``: the STF share reads
    change over time (the clip's temporal std), the frame share brightness; ``logits`` is their sum."""

    def forward(self, x):  # x: (B, 3, T, H, W)
        motion = x.std(dim=2).mean(dim=(1, 2, 3))
        bright = x.mean(dim=(1, 2, 3, 4))
        stf = torch.stack([torch.zeros_like(motion), 3 * motion - 1], dim=1)
        frame = torch.stack([torch.zeros_like(bright), 4 * bright], dim=1)
        return {"logits": stf + frame, "stf_logits": stf, "frame_stream_logits": frame}


class OneShare(torch.nn.Module):
    """One share of a two-stream model as the whole model (what scripts/stream_split.py scores)."""

    def __init__(self, model, key):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, x):
        return {"logits": self.model(x)[self.key]}


def test_each_stream_is_scored_alone_from_the_same_forward(dataset):
    """A two-stream model's videos carry each stream's score, equal to scoring that stream as the whole
    model; the metrics add each stream's AUC per method (and the table its columns); a one-stream
    model gets neither."""
    root, manifest = dataset
    kw = dict(norm=Normalize(IMAGENET_MEAN, IMAGENET_STD), batch_size=3, progress=False, amp="off")
    model = TwoStream()
    videos, clips = score_videos(model, manifest, root, SPEC, **kw)
    ok = videos["status"] == "ok"
    for key, col in (("stf_logits", "stf_score"), ("frame_stream_logits", "frame_stream_score")):
        alone, _ = score_videos(OneShare(model, key), manifest, root, SPEC, **kw)
        assert np.allclose(videos.loc[ok, col], alone.loc[ok, "score"], atol=1e-6)
        assert videos.loc[~ok, col].isna().all()
        if col == "frame_stream_score":   # and on the static clips, as the frame stream alone would be
            assert np.allclose(videos.loc[ok, "frame_stream_static_score"], alone.loc[ok, "static_score"], atol=1e-6)
            assert not np.allclose(videos.loc[ok, "frame_stream_static_score"], videos.loc[ok, col])
    m = summarize(videos, clips)
    # the frame stream's own gain: its AUC on real clips minus its AUC on the static clips
    alone_m = summarize(alone, _)
    for name in m["auc"]:
        want = alone_m["auc"][name] - alone_m["static_auc"][name]
        assert m["frame_stream_gain"][name] == pytest.approx(want, abs=1e-9)
    assert "frame stream's own gain |" in markdown_table(m)
    from stfmamba.evaluation.reports import gain_table
    assert gain_table(m)["frame_stream_gain"].tolist() == pytest.approx([m["frame_stream_gain"][n] for n in m["auc"]])
    stf = videos.loc[ok, "stf_score"].to_numpy()
    lab, meth = videos.loc[ok, "label"].to_numpy(), videos.loc[ok, "method"].to_numpy()
    from sklearn.metrics import roc_auc_score
    keep = (lab == 0) | (meth == "B")
    assert m["stf_stream_auc"]["B"] == pytest.approx(roc_auc_score(lab[keep], stf[keep]))
    assert set(m["stf_stream_auc"]) == set(m["auc"]) == set(m["frame_stream_auc"])
    # brightness alone separates A as the Brightness scorer does
    assert m["frame_stream_auc"]["A"] == pytest.approx(1.0)
    assert "STF stream alone | frame stream alone |" in markdown_table(m)
    one, one_clips = score_videos(Brightness(), manifest, root, SPEC, **kw)
    assert one["stf_score"].isna().all()
    m1 = summarize(one, one_clips)
    assert "stf_stream_auc" not in m1 and "STF stream alone" not in markdown_table(m1)
    assert "frame_stream_gain" not in m1 and one["frame_stream_static_score"].isna().all()
    from stfmamba.evaluation.run import DatasetResult, cross_metrics
    cross = cross_metrics([DatasetResult("t", videos, clips, m)])
    assert cross["stf_stream_auc"]["t"] == m["stf_stream_auc"]["overall"]
    assert cross["frame_stream_gain"]["t"] == m["frame_stream_gain"]["overall"]
    assert "stf_stream_auc" not in cross_metrics([DatasetResult("t", one, one_clips, m1)])
