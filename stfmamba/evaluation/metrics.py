"""Detection metrics on video and clip scores (pure computation, no I/O).

The protocol follows the video-level deepfake literature (FF++ / Celeb-DF tables): a video's score
is the mean fake probability of its clips; for each manipulation method the test reals are
ranked against that method's fakes, and ``overall`` ranks all test reals against all test fakes.
Reported per subset: ROC AUC (primary), average precision, equal error rate, accuracy at a 0.5
threshold and the clip-level AUC (every clip scored on its own), all on the videos that could be
scored. Beside them, so that a number is read with its uncertainty and its exclusions:

- ``auc_ci95``: a stratified bootstrap 95 % percentile interval of the AUC (reals and fakes
  resampled separately with replacement, :data:`N_BOOTSTRAP` resamples, fixed seed);
- ``auc_fail05``: the AUC when every video that could not be scored gets 0.5 (the SBI protocol —
  failures excluded is optimistic when they are many);
- ``failed_real`` / ``failed_fake``: how many videos of the subset could not be scored;
- ``static_auc``: the AUC on static clips (first frame repeated), the model without motion.

A subset with only one class has no AUC / AP / EER: those entries are ``None`` (JSON ``null``),
never a made-up 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

OVERALL = "overall"
N_BOOTSTRAP = 1000     # bootstrap resamples of the AUC interval
BOOTSTRAP_SEED = 0     # the same seed for every subset: intervals are reproducible run to run
FAILED_SCORE = 0.5     # score given to an unscorable video in ``auc_fail05`` only


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores: (N,)`` for ``labels: (N,)`` in {0, 1}; None with a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else None


def bootstrap_auc_ci(labels: np.ndarray, scores: np.ndarray, n_resamples: int = N_BOOTSTRAP,
                     level: float = 0.95, seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Stratified bootstrap percentile interval of the ROC AUC; None with a single class.

    Each resample draws ``n_real`` reals and ``n_fake`` fakes with replacement (the class sizes of
    the test set are fixed by design, so they are kept), and scikit-learn's ``roc_auc_score`` scores it.

    Args:
        labels: ``(N,)`` in {0, 1}.
        scores: ``(N,)`` fake scores.
        n_resamples: bootstrap resamples.
        level: coverage of the interval.
        seed: seed of the resampling generator.

    Returns:
        ``(lo, hi)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled AUCs.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    if not _both_classes(labels):
        return None
    real, fake = scores[labels == 0], scores[labels == 1]
    y = np.r_[np.zeros(real.size, int), np.ones(fake.size, int)]
    rng = np.random.default_rng(seed)
    aucs = np.empty(n_resamples)
    for b in range(n_resamples):
        aucs[b] = roc_auc_score(y, np.r_[rng.choice(real, real.size), rng.choice(fake, fake.size)])
    lo, hi = np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (fake = positive class); None with a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(average_precision_score(labels, scores)) if _both_classes(labels) else None


def eer(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Equal error rate: the point of the ROC curve where FPR = FNR (= 1 - TPR); None with a single class.

    scikit-learn's ``roc_curve`` gives every operating point; along it ``FPR - FNR`` rises strictly
    from -1 (all rejected) to 1 (all accepted), and the curve is a straight line between two points,
    so the FPR where ``FPR - FNR`` crosses 0 is a linear interpolation (``np.interp``).
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if not _both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(np.interp(0.0, fpr - (1.0 - tpr), fpr))


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
    n_real: int                  # scored reals
    n_fake: int                  # scored fakes
    auc_ci95: tuple[float, float] | None = None   # bootstrap interval of ``auc``
    auc_fail05: float | None = None               # AUC with the unscorable videos at 0.5
    static_auc: float | None = None               # AUC on static clips (None: not scored)
    failed_real: int = 0         # reals of the subset that could not be scored
    failed_fake: int = 0         # fakes of the subset that could not be scored


def subset_metrics(labels: np.ndarray, scores: np.ndarray, clip_labels: np.ndarray, clip_scores: np.ndarray,
                   failed: np.ndarray | None = None, static_scores: np.ndarray | None = None,
                   n_resamples: int = N_BOOTSTRAP) -> SubsetMetrics:
    """Metrics of one subset.

    Args:
        labels: ``(N,)`` video labels, 0 real / 1 fake, of every video of the subset.
        scores: ``(N,)`` video fake probabilities (mean over clips); ignored where ``failed``.
        clip_labels: ``(M,)`` label of every scored clip (its video's label).
        clip_scores: ``(M,)`` fake probability of every scored clip.
        failed: ``(N,)`` True for the videos that could not be scored (default: non-finite score).
        static_scores: ``(N,)`` video scores on static clips, or None.
        n_resamples: bootstrap resamples of ``auc_ci95``.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    failed = ~np.isfinite(scores) if failed is None else np.asarray(failed, dtype=bool)
    ok = ~failed
    y, s = labels[ok], scores[ok]
    return SubsetMetrics(
        auc=auc(y, s), ap=average_precision(y, s), eer=eer(y, s), acc=accuracy(y, s),
        clip_auc=auc(clip_labels, clip_scores), n_real=int((y == 0).sum()), n_fake=int((y == 1).sum()),
        auc_ci95=bootstrap_auc_ci(y, s, n_resamples),
        auc_fail05=auc(labels, np.where(failed, FAILED_SCORE, scores)),
        static_auc=None if static_scores is None else auc(y, np.asarray(static_scores, dtype=np.float64)[ok]),
        failed_real=int((failed & (labels == 0)).sum()), failed_fake=int((failed & (labels == 1)).sum()))


def per_method_metrics(labels: np.ndarray, methods: np.ndarray, scores: np.ndarray,
                       clip_video: np.ndarray, clip_scores: np.ndarray, *, failed: np.ndarray | None = None,
                       static_scores: np.ndarray | None = None,
                       n_resamples: int = N_BOOTSTRAP) -> dict[str, SubsetMetrics]:
    """``overall`` plus one entry per manipulation method (all reals vs that method's fakes).

    Args:
        labels: ``(N,)`` video labels of every test video, scored or not.
        methods: ``(N,)`` method names (``"real"`` for reals).
        scores: ``(N,)`` video scores (anything, e.g. NaN, where ``failed``).
        clip_video: ``(M,)`` index into the N videos of every scored clip.
        clip_scores: ``(M,)`` clip scores.
        failed: ``(N,)`` True for the videos that could not be scored (default: non-finite score).
        static_scores: ``(N,)`` video scores on static clips, or None.
        n_resamples: bootstrap resamples of ``auc_ci95``.

    Returns:
        ``{"overall": ..., "<method>": ...}`` with methods in sorted order; a method whose fakes all
        failed is listed (``auc`` None, its failures counted).
    """
    labels, methods = np.asarray(labels).astype(int), np.asarray(methods).astype(str)
    scores, clip_video = np.asarray(scores, dtype=np.float64), np.asarray(clip_video, dtype=int)
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    failed = ~np.isfinite(scores) if failed is None else np.asarray(failed, dtype=bool)
    static = None if static_scores is None else np.asarray(static_scores, dtype=np.float64)
    out: dict[str, SubsetMetrics] = {}
    subsets = {OVERALL: np.ones_like(labels, dtype=bool)}
    for m in sorted(set(methods[labels == 1].tolist())):
        subsets[str(m)] = (labels == 0) | (methods == m)
    for name, keep in subsets.items():
        ck = keep[clip_video] & ~failed[clip_video] if clip_video.size else np.zeros(0, dtype=bool)
        out[name] = subset_metrics(labels[keep], scores[keep], labels[clip_video][ck], clip_scores[ck],
                                   failed=failed[keep], static_scores=None if static is None else static[keep],
                                   n_resamples=n_resamples)
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[tuple[float, float, float]]:
    """ROC curve ``[(fpr, tpr, threshold), ...]``; empty with a single class."""
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return []
    fpr, tpr, thr = roc_curve(labels, np.asarray(scores, dtype=np.float64))
    thr = np.minimum(thr, 1.0)  # sklearn puts +inf first; cap it so the CSV stays finite
    return [(float(a), float(b), float(c)) for a, b, c in zip(fpr, tpr, thr)]
