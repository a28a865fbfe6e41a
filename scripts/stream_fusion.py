"""Combine a two-stream model's streams in other ways, fitted on the SBI-validation clips only.

    python scripts/stream_split.py --model runs/x/models/phase_a.pt --out runs/x/split
    python scripts/stream_fusion.py --model runs/x/models/phase_a.pt --split runs/x/split [--params params.yaml]

A frame-stream model (``model.frame_stream``) scores a clip by the sum of its STF head's and its frame
head's logit margins. This asks whether another combination, chosen without the test set, would let
the motion-only STF stream count for more. One forward pass over the validation clips of
``data.train`` (val reals, their Video-SBI fakes and temporal pseudo-fakes, exactly as training
validates) gives each stream's margin per clip; from those alone it fits or normalises:

* ``sum`` — the model as trained;
* ``stacking`` — logistic regression on the two margins;
* ``equal_say`` — each margin divided by its standard deviation over all validation clips;
* ``zreal_sum`` / ``zreal_max`` — each margin z-scored on the validation *reals* only, then summed or
  the larger taken (a clip is suspect when either stream finds it unusual for a real).

Each rule is applied to the per-clip scores that ``stream_split.py`` wrote for the test split
(``<split>/stf_stream/clips.csv`` and ``<split>/frame_stream/clips.csv``; video score = mean clip
margin, max over faces) and reported with its validation AUC. ``weight_sweep`` scores ``w * STF +
frame`` on the test set for a few ``w``: an upper bound of what any such mix could give, not a
method. Prints one JSON line and writes ``<split>/stream_fusion.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

SWEEP = (0.0, 0.5, 1.0, 2.0, 3.0, 6.0, float("inf"))


def fit_fusions(stf: np.ndarray, frame: np.ndarray, y: np.ndarray) -> dict[str, Callable]:
    """Fusion rules fitted on validation margins ``stf`` / ``frame`` (per clip) with labels ``y``.

    Returns name -> ``f(stf, frame) -> score``; the fitted numbers are in ``f.fitted``.
    """
    from sklearn.linear_model import LogisticRegression

    stf, frame, y = (np.asarray(a, np.float64) for a in (stf, frame, y))
    real = y == 0
    if real.sum() < 2 or (~real).sum() < 2:
        raise ValueError(f"need at least 2 real and 2 fake validation clips, got {int(real.sum())} / {int((~real).sum())}")
    lr = LogisticRegression(C=1.0).fit(np.stack([stf, frame], 1), y)
    a, b = (float(c) for c in lr.coef_[0])
    s_all, f_all = stf.std() or 1.0, frame.std() or 1.0
    ms, ss = stf[real].mean(), stf[real].std() or 1.0
    mf, sf = frame[real].mean(), frame[real].std() or 1.0
    rules = {
        "sum": (lambda s, f: s + f, {}),
        "stacking": (lambda s, f: a * s + b * f, {"w_stf": a, "w_frame": b}),
        "equal_say": (lambda s, f: s / s_all + f / f_all, {"std_stf": s_all, "std_frame": f_all}),
        "zreal_sum": (lambda s, f: (s - ms) / ss + (f - mf) / sf, {"real_mean_std_stf": [ms, ss],
                                                                    "real_mean_std_frame": [mf, sf]}),
        "zreal_max": (lambda s, f: np.maximum((s - ms) / ss, (f - mf) / sf), {}),
    }
    out = {}
    for name, (fn, fitted) in rules.items():
        fn.fitted = {k: (np.round(v, 4).tolist() if isinstance(v, list) else round(v, 4)) for k, v in fitted.items()}
        out[name] = fn
    return out


def _margin(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def video_aucs(clips, z: np.ndarray, methods: list[str]) -> dict[str, float]:
    """AUC per method (its fakes vs every real) and overall, from per-clip scores ``z`` of ``clips``."""
    from sklearn.metrics import roc_auc_score

    vid = clips.assign(z=z).groupby(["row", "face"]).z.mean().groupby(level=0).max()
    lab = clips.groupby("row").label.first()
    meth = clips.groupby("row").method.first()
    res = {}
    for m in methods:
        k = (lab == 0) | (meth == m)
        if (lab[k] == 1).any():
            res[m] = round(float(roc_auc_score(lab[k], vid[k])), 4)
    res["overall"] = round(float(roc_auc_score(lab, vid)), 4)
    return res


def validation_margins(model, cfg, params) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each stream's logit margin, the label and the temporal-fake flag of every validation clip."""
    import torch
    from torch.utils.data import DataLoader

    from stfmamba.amp import resolve_amp
    from stfmamba.data.clips import Normalize
    from stfmamba.data.dataset import VideoSBIDataset

    ds = VideoSBIDataset.from_params(params, "val", False, features=cfg.features, model=cfg.model, training=cfg.training)
    norm = Normalize.of(model)
    ms, mf, ys, tk = [], [], [], []
    dtype = resolve_amp(params.training.amp, torch.device("cpu"))
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(ds, batch_size=params.eval.batch_size, num_workers=0):
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(norm(batch["x"].flatten(0, 1)))
            s, f = out["stf_logits"].float(), out["frame_stream_logits"].float()
            ms.append((s[:, 1] - s[:, 0]).numpy())
            mf.append((f[:, 1] - f[:, 0]).numpy())
            ys.append(batch["y"].flatten().numpy())
            tk.append(batch["temporal_fake"].flatten().numpy())
    return tuple(np.concatenate(a) for a in (ms, mf, ys, tk))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", required=True, help="the --out directory of scripts/stream_split.py for this model")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from stfmamba.config import Params, from_dict
    from stfmamba.evaluation.run import load_checkpoint
    from stfmamba.io import write_json

    params = from_dict(Params, yaml.safe_load(Path(args.params).read_text()))
    model, cfg, _ = load_checkpoint(args.model)
    if getattr(model, "frame_head", None) is None:
        raise SystemExit(f"{args.model}: this model has no frame stream (model.frame_stream: false); nothing to fuse")
    split = Path(args.split)
    paths = [split / n / "clips.csv" for n in ("stf_stream", "frame_stream")]
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"{p} is missing: run scripts/stream_split.py --model {args.model} --out {split} first")
    cs, cf = (pd.read_csv(p) for p in paths)
    if not (cs.video_id.equals(cf.video_id) and cs.clip_start.equals(cf.clip_start)):
        raise SystemExit(f"{paths[0]} and {paths[1]} list different clips: rerun scripts/stream_split.py")
    stf_v, frame_v, y, temporal = validation_margins(model, cfg, params)
    rules = fit_fusions(stf_v, frame_v, y)
    keep = (y == 0) | (temporal == 1)
    methods = sorted(m for m in cs.method.unique() if m != "real")
    s_t, f_t = _margin(cs.score.values), _margin(cf.score.values)
    result = {"model": args.model, "val_clips": int(len(y)), "val_temporal_fakes": int(temporal.sum()), "rules": {}}
    for name, fn in rules.items():
        v = fn(stf_v, frame_v)
        result["rules"][name] = {"fitted": fn.fitted, "val_auc": round(float(roc_auc_score(y, v)), 4),
                                 "val_auc_temporal": round(float(roc_auc_score(y[keep], v[keep])), 4),
                                 "test": video_aucs(cs, fn(s_t, f_t), methods)}
    result["weight_sweep"] = {("inf" if w == float("inf") else str(w)):
                              video_aucs(cs, s_t if w == float("inf") else w * s_t + f_t, methods) for w in SWEEP}
    write_json(split / "stream_fusion.json", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
