"""Evaluation reports: metrics JSON for ``dvc metrics``, CSVs for ``dvc plots``, a PNG, score tables.

Layout of one report (``out`` = e.g. ``plots/eval_phase_a``)::

    metrics JSON        {"auc": {"overall": .., "<method>": ..},        failures excluded (primary)
                         "auc_ci95": {"<method>": [lo, hi]},            cluster-bootstrap 95 % interval of auc
                                                                        (null when it collapses, e.g. at AUC 1)
                         "auc_lower95": {..},                           one-sided 95 % lower bound of auc
                         "auc_ci95_by": {..},                           "identity" | "source" | "video": what
                                                                        the bootstrap resamples
                         "auc_groups": {"<method>": {"real": r, "fake": f}},  clusters holding a real / a fake
                         "auc_identities": {..},                        people shown (null: unknown)
                         "temporal_gain": {..},                         auc - static_auc (null: frame model)
                         "temporal_gain_ci95": {..},                    its paired cluster-bootstrap interval
                         "auc_fail05": {..},                            failures scored 0.5 (SBI protocol)
                         "static_auc": {..},                            static clips (first frame x T)
                         "shuffled_auc": {..},                          shuffled clips (the frames reordered)
                         "order_gain": {..}, "order_gain_ci95": {..},   auc - shuffled_auc (null: frame model)
                         "ap": {..}, "eer": {..}, "acc": {..}, "clip_auc": {..},
                         "failed": {"<method>": {"real": n, "fake": m}},
                         "n_real": {..}, "n_fake": {..},                scored videos
                         "videos": {"total", "scored", "failed"}}
                        -> ``dvc metrics diff`` rows ``auc.<method>``, ``static_auc.overall``, ...
    out/scores.csv      one row per video: video_id, method, label, status, reason, score, static_score,
                        shuffled_score, n_clips,
                        faces, face_scores (score = max over faces of the mean over clips; face_scores "0.12;0.87")
    out/clips.csv       one row per scored clip (score, static_score, shuffled_score, face; clip_auc uses every face's clips)
    out/failures.csv    the videos that could not be scored and why (also printed)
    out/roc/<name>.csv  ROC curve (fpr, tpr, threshold) per method / dataset -> ``dvc plots`` lines
    out/auc.csv         name, auc -> ``dvc plots`` horizontal bars
    out/temporal_gain.csv  name, temporal_gain, lo, hi, order_gain, order_lo, order_hi, frame_stream_gain
                        -> ``dvc plots`` bars
                        (video models only:
                        not written with ``temporal=False``, a stale one is removed)
    out/roc.png         the same two figures as a PNG

Every file is written atomically through :mod:`stfmamba.io`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stfmamba import io
from stfmamba.evaluation.metrics import OVERALL, auc, per_method_metrics, roc_points

METRIC_KEYS = ("auc", "auc_ci95", "auc_lower95", "auc_ci95_by", "auc_fail05", "static_auc", "temporal_gain",
               "temporal_gain_ci95", "shuffled_auc", "order_gain", "order_gain_ci95", "ap", "eer", "acc", "clip_auc")
GAIN_CSV = "temporal_gain.csv"


# --------------------------------------------------------------------------- pure: tables -> dicts
def summarize(videos: pd.DataFrame, clips: pd.DataFrame, temporal: bool = True) -> dict[str, Any]:
    """Metrics JSON of one dataset from the engine's tables.

    ``auc`` and the other primary metrics use the scored videos only; the failed ones are counted
    (``failed``) and enter ``auc_fail05`` at 0.5.

    Args:
        videos: one row per video (``engine.VIDEO_COLUMNS``; ``static_score`` optional).
        clips: one row per scored clip (``engine.CLIP_COLUMNS``; ``row`` indexes ``videos``).
        temporal: False for a frame-level model (``temporal_gain`` null).

    The bootstrap clusters come from ``videos``' ``group`` / ``identity`` columns when present
    (:func:`~stfmamba.evaluation.metrics.cluster_ids`; missing or empty: derived from the ids).

    Returns:
        ``{"auc": {"overall": .., "<method>": ..}, ..., "videos": {"total", "scored", "failed"}}``.
    """
    videos = videos.reset_index(drop=True)
    failed = (videos["status"] != "ok").to_numpy()
    clips = clips[clips["row"].isin(np.nonzero(~failed)[0])]
    static = videos["static_score"].to_numpy(dtype=float) if "static_score" in videos else None
    shuffled = videos["shuffled_score"].to_numpy(dtype=float) if "shuffled_score" in videos else None
    per = per_method_metrics(videos["label"].to_numpy(), videos["method"].to_numpy(),
                             videos["score"].to_numpy(dtype=float), clips["row"].to_numpy(dtype=int),
                             clips["score"].to_numpy(dtype=float), failed=failed, static_scores=static,
                             video_ids=videos["video_id"].astype(str).to_numpy(),
                             groups=videos["group"].astype(str).to_numpy() if "group" in videos else None,
                             identities=videos["identity"].astype(str).to_numpy() if "identity" in videos else None,
                             temporal=temporal, shuffled_scores=shuffled)
    out: dict[str, Any] = {k: {name: _plain(getattr(m, k)) for name, m in per.items()} for k in METRIC_KEYS}
    out["auc_groups"] = {name: {"real": m.auc_groups_real, "fake": m.auc_groups_fake} for name, m in per.items()}
    out["auc_identities"] = {name: m.auc_identities for name, m in per.items()}
    out["failed"] = {name: {"real": m.failed_real, "fake": m.failed_fake} for name, m in per.items()}
    out["n_real"] = {name: m.n_real for name, m in per.items()}
    out["n_fake"] = {name: m.n_fake for name, m in per.items()}
    out.update(stream_aucs(videos))
    n_failed = int(failed.sum())
    out["videos"] = {"total": int(len(videos)), "scored": int(len(videos) - n_failed), "failed": n_failed}
    return out


STREAM_AUC_KEYS = {"stf_score": "stf_stream_auc", "frame_stream_score": "frame_stream_auc"}


def stream_aucs(videos: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """AUC of each stream of a two-stream model scored alone (``stf_stream_auc``: the STF head, the
    temporal stream; ``frame_stream_auc``: the per-frame logits averaged), overall and per method (all
    reals vs that method's fakes, scored videos only, as ``auc``), and ``frame_stream_gain``: the frame
    stream's AUC minus its AUC on the static clips, the part of a real - static gap that averaging more
    frames gives a stream without temporal input. Empty for a model without the streams (its
    ``stf_score`` column is NaN or absent)."""
    ok = (videos["status"] == "ok").to_numpy()
    labels, methods = videos["label"].to_numpy(dtype=int), videos["method"].astype(str).to_numpy()
    subsets = {OVERALL: np.ones(len(videos), dtype=bool)}
    subsets.update({m: (labels == 0) | (methods == m) for m in sorted(set(methods[labels == 1].tolist()))})
    out: dict[str, dict[str, float | None]] = {}
    for col, key in STREAM_AUC_KEYS.items():
        scores = videos[col].to_numpy(dtype=float) if col in videos else np.full(len(videos), np.nan)
        if not np.isfinite(scores[ok]).any():
            continue
        out[key] = {name: auc(labels[keep & ok], scores[keep & ok]) for name, keep in subsets.items()}
    # the frame stream's own real - static gap: a stream with no temporal input gains only from averaging
    # T frames against one; temporal_gain is read next to it (it grows with T and the scored clips)
    col = "frame_stream_static_score"
    static = videos[col].to_numpy(dtype=float) if col in videos else np.full(len(videos), np.nan)
    if "frame_stream_auc" in out and np.isfinite(static[ok]).any():
        out["frame_stream_gain"] = {}
        for name, keep in subsets.items():
            a, b = out["frame_stream_auc"][name], auc(labels[keep & ok], static[keep & ok])
            out["frame_stream_gain"][name] = None if a is None or b is None else a - b
    return out


def _plain(v: Any) -> Any:
    """Tuples (the AUC interval) as JSON lists."""
    return list(v) if isinstance(v, tuple) else v


def roc_curves(videos: pd.DataFrame) -> dict[str, list[tuple[float, float, float]]]:
    """ROC points of ``overall`` and of each method (reals vs that method's fakes)."""
    ok = videos[videos["status"] == "ok"]
    curves = {OVERALL: roc_points(ok["label"].to_numpy(), ok["score"].to_numpy())}
    for m in sorted(set(ok.loc[ok["label"] == 1, "method"].astype(str).tolist())):
        sub = ok[(ok["label"] == 0) | (ok["method"] == m)]
        curves[m] = roc_points(sub["label"].to_numpy(), sub["score"].to_numpy())
    return curves


def failures(videos: pd.DataFrame) -> pd.DataFrame:
    """The rows of videos that could not be scored: video_id, method, label, reason."""
    return videos.loc[videos["status"] != "ok", ["video_id", "method", "label", "reason"]].reset_index(drop=True)


def _finite(v: Any) -> Any:
    """JSON-safe value: NaN / inf -> None (JSON null)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return _finite(v.item())
    return v


# --------------------------------------------------------------------------- I/O
def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN -> null)."""
    io.write_json(path, _finite(obj))


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """Atomically write ``df`` as CSV without the index."""
    with io.atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False)


def write_curves(out: Path, curves: dict[str, list[tuple[float, float, float]]], bars: dict[str, float | None],
                 title: str) -> None:
    """``out/roc/<name>.csv`` per curve, ``out/auc.csv`` and ``out/roc.png``; stale curve files removed.

    The ROC CSVs are written here rather than with DVCLive's ``Live.log_sklearn_plot("roc", ...)``
    (dvclive 3.49, measured for issue 12): it would write the same curves (``<dir>/plots/sklearn/
    <name>.json``, fields ``fpr``, ``tpr``, ``threshold``) and ``dvc plots show`` renders them, but
    ``Live()`` first opens the DVC repository around the working directory, and outside the pipeline
    (``python -m stfmamba.evaluation`` run inside some git repository) that means it runs
    ``dvc init`` in the user's repository and stages ``.dvc/``, and in a git repository without
    commits it stops with ``SCMError: Empty git repo``. It also writes with a plain ``open`` (not
    atomic) and puts sklearn's ``inf`` threshold in the file as ``Infinity`` (not JSON).
    """
    out = Path(out)
    roc_dir = out / "roc"
    roc_dir.mkdir(parents=True, exist_ok=True)
    keep = set()
    for name, pts in curves.items():
        if not pts:
            continue
        fname = f"{name}.csv"
        keep.add(fname)
        write_csv(roc_dir / fname, pd.DataFrame(pts, columns=["fpr", "tpr", "threshold"]))
    for stale in roc_dir.glob("*.csv"):
        if stale.name not in keep:
            stale.unlink()
    write_csv(out / "auc.csv", pd.DataFrame({"name": list(bars), "auc": [_finite(v) for v in bars.values()]}))
    write_png(out / "roc.png", curves, bars, title)


def write_png(path: Path, curves: dict[str, list[tuple[float, float, float]]], bars: dict[str, float | None],
              title: str) -> None:
    """ROC curves (left) and AUC bars (right) as one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, pts in curves.items():
        if pts:
            a = np.asarray(pts)
            ax1.plot(a[:, 0], a[:, 1], label=name, lw=2.2 if name == OVERALL else 1.2)
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax1.legend(fontsize=7, loc="lower right")
    names = list(bars)
    vals = [v if v is not None else 0.0 for v in bars.values()]
    ax2.barh(names, vals, color=["#999" if bars[n] is None else "#3b75af" for n in names])
    for y, (n, v) in enumerate(bars.items()):
        ax2.text(0.01, y, "n/a" if v is None else f"{v:.3f}", va="center", fontsize=8, color="w" if v else "k")
    ax2.set(xlim=(0, 1), xlabel="video AUC", title="AUC")
    ax2.invert_yaxis()
    fig.suptitle(title)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def gain_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """``name, temporal_gain, lo, hi, order_gain, order_lo, order_hi, frame_stream_gain`` from a metrics
    dict (the ``dvc plots`` bars of the temporal gain, the order gain and, for a two-stream model, the
    frame stream's own gain: what averaging T frames adds without time; empty cells: n/a)."""
    def bounds(key: str, i: int) -> list[Any]:
        ci = metrics.get(f"{key}_ci95") or {}
        return [None if ci.get(n) is None else ci[n][i] for n in metrics["temporal_gain"]]

    names = list(metrics["temporal_gain"])
    order = metrics.get("order_gain") or {}
    own = metrics.get("frame_stream_gain") or {}
    return pd.DataFrame({"name": names, "temporal_gain": [_finite(metrics["temporal_gain"][n]) for n in names],
                         "lo": bounds("temporal_gain", 0), "hi": bounds("temporal_gain", 1),
                         "order_gain": [_finite(order.get(n)) for n in names],
                         "order_lo": bounds("order_gain", 0), "order_hi": bounds("order_gain", 1),
                         "frame_stream_gain": [_finite(own.get(n)) for n in names]})


def write_gain(out: Path, metrics: dict[str, Any], temporal: bool) -> None:
    """``out/temporal_gain.csv`` for a video model; removed (stale) for a frame model."""
    path = Path(out) / GAIN_CSV
    if temporal:
        write_csv(path, gain_table(metrics))
    elif path.exists():
        path.unlink()


def write_dataset_report(out: Path, videos: pd.DataFrame, clips: pd.DataFrame, title: str,
                         temporal: bool = True) -> dict[str, Any]:
    """Scores / clips / failures CSVs, ROC + AUC plots (+ the temporal gain of a video model,
    ``temporal``) of one dataset; returns its metrics dict."""
    out = Path(out)
    metrics = summarize(videos, clips, temporal=temporal)
    write_csv(out / "scores.csv", videos)
    write_csv(out / "clips.csv", clips)
    write_csv(out / "failures.csv", failures(videos))
    write_curves(out, roc_curves(videos), dict(metrics["auc"]), title)
    write_gain(out, metrics, temporal)
    return metrics


def describe_failures(name: str, videos: pd.DataFrame, limit: int = 20) -> str:
    """A human-readable summary of the failed videos of one dataset (for the stage log)."""
    bad = failures(videos)
    if bad.empty:
        return f"{name}: all {len(videos)} videos scored"
    lines = [f"{name}: {len(bad)} of {len(videos)} videos could not be scored (not counted as 0.5):"]
    lines += [f"  {r.video_id} [{r.method}]: {r.reason}" for r in bad.head(limit).itertuples()]
    if len(bad) > limit:
        lines.append(f"  ... {len(bad) - limit} more in failures.csv")
    return "\n".join(lines)


def markdown_table(metrics: dict[str, Any], title: str = "subset") -> str:
    """A Markdown table, one row per subset: AUC [95 % CI] (or ``[>= lower bound]`` when the interval
    collapses) with what the bootstrap resampled, AUC with failures at 0.5, static-clip AUC, temporal
    gain [95 % CI], shuffled-clip AUC, order gain [95 % CI], (two-stream models: each stream's AUC alone), AP, EER,
    acc@0.5, clip AUC, scored reals / fakes (failed)."""
    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    def cell(key: str, name: str) -> str:
        v = metrics.get(key, {}).get(name)
        if key in ("auc", "temporal_gain", "order_gain"):
            ci = metrics.get(f"{key}_ci95", {}).get(name)
            if ci is not None:
                return fmt(v) + f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            low = metrics.get("auc_lower95", {}).get(name) if key == "auc" else None
            return fmt(v) + ("" if low is None else f" [>= {low:.3f}]")
        if key == "auc_ci95_by":
            by, g = metrics.get(key, {}).get(name), metrics.get("auc_groups", {}).get(name)
            people = metrics.get("auc_identities", {}).get(name)
            return "n/a" if by is None else ((by if g is None else f"{by} ({g['real']} / {g['fake']})")
                                             + ("" if not people else f", {people} people"))
        return fmt(v)

    streams = tuple(k for k in (*STREAM_AUC_KEYS.values(), "frame_stream_gain") if k in metrics)   # two-stream models
    cols = ("auc", "auc_ci95_by", "auc_fail05", "static_auc", "temporal_gain", "shuffled_auc", "order_gain",
            *streams, "ap", "eer", "acc", "clip_auc")
    heads = {"stf_stream_auc": "STF stream alone", "frame_stream_auc": "frame stream alone",
             "frame_stream_gain": "frame stream's own gain"}
    rows = [f"| {title} | AUC [95 % CI] | resampled (real / fake groups) | AUC (failed = 0.5) | static AUC "
            "| temporal gain [95 % CI] | shuffled AUC | order gain [95 % CI] | "
            + "".join(f"{heads[k]} | " for k in streams)
            + "AP | EER | acc@0.5 | clip AUC | reals / fakes (failed) |",
            "|---" * (len(cols) + 2) + "|"]
    for name in metrics["auc"]:
        n = f"{metrics['n_real'][name]} / {metrics['n_fake'][name]}" if "n_real" in metrics else ""
        if "failed" in metrics:
            n += f" ({metrics['failed'][name]['real']} / {metrics['failed'][name]['fake']})"
        rows.append(f"| {name} | " + " | ".join(cell(k, name) for k in cols) + f" | {n} |")
    return "\n".join(rows)
