"""Detection metrics on video and clip scores (pure computation, no I/O).

The protocol follows the video-level deepfake literature (FF++ / Celeb-DF tables): a video's score
is the mean fake probability of its clips; for each manipulation method the test reals are
ranked against that method's fakes, and ``overall`` ranks all test reals against all test fakes.
Reported per subset: ROC AUC (primary), average precision, equal error rate, accuracy at a 0.5
threshold and the clip-level AUC (every clip scored on its own).

A subset with only one class has no AUC / AP / EER: those entries are ``None`` (JSON ``null``),
never a made-up 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

OVERALL = "overall"


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores: (N,)`` for ``labels: (N,)`` in {0, 1}; None with a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else None


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (fake = positive class); None with a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(average_precision_score(labels, scores)) if _both_classes(labels) else None


def eer(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Equal error rate: the point of the ROC curve where FPR = FNR (= 1 - TPR).

    The ROC is piecewise linear between sklearn's operating points, so the crossing is found by
    linear interpolation of ``FNR - FPR`` between the two points around its sign change.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if not _both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    diff = (1.0 - tpr) - fpr  # decreasing from 1 (all rejected) to -1 (all accepted)
    i = int(np.nonzero(diff <= 0)[0][0])
    if diff[i] == 0 or i == 0:
        return float(fpr[i])
    # linear interpolation between point i-1 (diff > 0) and point i (diff <= 0)
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    return float(fpr[i - 1] + w * (fpr[i] - fpr[i - 1]))


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float | None:
    """Fraction of videos whose ``score >= threshold`` matches ``label == 1``; None when empty."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.size == 0:
        return None
    return float(np.mean((scores >= threshold).astype(int) == labels))


@dataclass(frozen=True)
class SubsetMetrics:
    """All metrics of one subset (one manipulation, or ``overall``)."""
    auc: float | None
    ap: float | None
    eer: float | None
    acc: float | None
    clip_auc: float | None
    n_real: int
    n_fake: int


def subset_metrics(labels: np.ndarray, scores: np.ndarray, clip_labels: np.ndarray,
                   clip_scores: np.ndarray) -> SubsetMetrics:
    """Metrics of one subset.

    Args:
        labels: ``(N,)`` video labels, 0 real / 1 fake.
        scores: ``(N,)`` video fake probabilities (mean over clips).
        clip_labels: ``(M,)`` label of every clip (its video's label).
        clip_scores: ``(M,)`` fake probability of every clip.
    """
    labels = np.asarray(labels).astype(int)
    return SubsetMetrics(
        auc=auc(labels, scores), ap=average_precision(labels, scores), eer=eer(labels, scores),
        acc=accuracy(labels, scores), clip_auc=auc(clip_labels, clip_scores),
        n_real=int((labels == 0).sum()), n_fake=int((labels == 1).sum()))


def per_method_metrics(labels: np.ndarray, methods: np.ndarray, scores: np.ndarray,
                       clip_video: np.ndarray, clip_scores: np.ndarray) -> dict[str, SubsetMetrics]:
    """``overall`` plus one entry per manipulation method (all reals vs that method's fakes).

    Args:
        labels: ``(N,)`` video labels of the scored videos.
        methods: ``(N,)`` method names (``"real"`` for reals).
        scores: ``(N,)`` video scores.
        clip_video: ``(M,)`` index into the N videos of every clip.
        clip_scores: ``(M,)`` clip scores.

    Returns:
        ``{"overall": ..., "<method>": ...}`` with methods in sorted order.
    """
    labels, methods = np.asarray(labels).astype(int), np.asarray(methods).astype(str)
    scores, clip_video = np.asarray(scores, dtype=np.float64), np.asarray(clip_video, dtype=int)
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    out: dict[str, SubsetMetrics] = {}
    subsets = {OVERALL: np.ones_like(labels, dtype=bool)}
    for m in sorted(set(methods[labels == 1].tolist())):
        subsets[str(m)] = (labels == 0) | (methods == m)
    for name, keep in subsets.items():
        ck = keep[clip_video] if clip_video.size else np.zeros(0, dtype=bool)
        out[name] = subset_metrics(labels[keep], scores[keep], labels[clip_video][ck], clip_scores[ck])
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[tuple[float, float, float]]:
    """ROC curve ``[(fpr, tpr, threshold), ...]``; empty with a single class."""
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return []
    fpr, tpr, thr = roc_curve(labels, np.asarray(scores, dtype=np.float64))
    thr = np.minimum(thr, 1.0)  # sklearn puts +inf first; cap it so the CSV stays finite
    return [(float(a), float(b), float(c)) for a, b, c in zip(fpr, tpr, thr)]
