"""Detection metrics on video and clip scores (pure computation, no I/O).

The protocol follows the video-level deepfake literature (FF++ / Celeb-DF tables): a video's score
is the mean fake probability of its clips; for each manipulation method the test reals are
ranked against that method's fakes, and ``overall`` ranks all test reals against all test fakes.
Reported per subset: ROC AUC (primary), average precision, equal error rate, accuracy at a 0.5
threshold and the clip-level AUC (every clip scored on its own), all on the videos that could be
scored. Beside them, so that a number is read with its uncertainty and its exclusions:

- ``auc_ci95``: a 95 % percentile interval of the AUC from a **cluster bootstrap**
  (:func:`cluster_bootstrap`): whole clusters of dependent videos are resampled — a person
  (``identity``) where the dataset names them, else a source video (a real together with the fakes
  made from it), else the video alone (:func:`cluster_ids`); ``auc_ci95_by`` says which
  (``"identity"`` | ``"source"`` | ``"video"``), ``auc_groups`` how many clusters hold a real /
  a fake and ``auc_identities`` how many people the videos show (when known; people are resampled
  only from :data:`MIN_IDENTITIES` of them on — below, a bootstrap over people is no interval).
  Until issue 18 the interval resampled reals and fakes as independent videos
  (:func:`bootstrap_auc_ci`, kept for comparison). That is wrong either way when fakes are made
  from the reals: too narrow when the fakes of one source are easy or hard together, too wide when
  a fake's score moves with its own real's (pairing them cancels the shared part; on the demo the
  by-source interval is the narrower one). When every real is ranked below every fake (AUC 1)
  every resample gives 1, the interval collapses to [1, 1] and says nothing: ``auc_ci95`` is then
  ``None`` and only the one-sided bound below is reported;
- ``auc_lower95``: a one-sided 95 % lower bound of the AUC: the 5th percentile of the cluster
  bootstrap, or at AUC 1 the exact bound of :func:`perfect_auc_lower_bound`;
- ``auc_fail05``: the AUC when every video that could not be scored gets 0.5 (the SBI protocol —
  failures excluded is optimistic when they are many);
- ``failed_real`` / ``failed_fake``: how many videos of the subset could not be scored;
- ``static_auc``: the AUC on static clips (first frame repeated), the model without motion;
- ``temporal_gain`` = ``auc - static_auc``: what the motion adds, and ``temporal_gain_ci95`` its
  paired cluster-bootstrap interval (both AUCs on the same resampled clusters). ``None`` for a
  frame-level model (``temporal=False``: its static clip is its clip, the gain is 0 by definition
  and not a measurement), and the interval ``None`` when it collapses (e.g. both AUCs 1 throughout);
- ``shuffled_auc``: the AUC on shuffled clips (the clip's own frames in an order that keeps no two
  neighbours together), and ``order_gain`` = ``auc - shuffled_auc`` with ``order_gain_ci95`` (paired,
  as above): what the order of the frames adds. A shuffled clip keeps every frame, so a per-frame
  score is the same on both; the static clip also drops ``T - 1`` frames of evidence, which a model
  that averages per-frame evidence (the frame stream) turns into a "temporal gain" with no motion
  in it (docs/ablations.md). ``None`` for a frame-level model, like the temporal gain.

A subset with only one class has no AUC / AP / EER: those entries are ``None`` (JSON ``null``),
never a made-up 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

OVERALL = "overall"
N_BOOTSTRAP = 2000     # bootstrap resamples of the AUC interval (cluster bootstrap)
BOOTSTRAP_SEED = 0     # the same seed for every subset: intervals are reproducible run to run
FAILED_SCORE = 0.5     # score given to an unscorable video in ``auc_fail05`` only
LOWER_ALPHA = 0.05     # one-sided level of ``auc_lower95``
MAX_REDRAWS = 100      # a one-class cluster resample is redrawn up to this many times, then skipped
MIN_IDENTITIES = 8     # fewer people than this: the bootstrap resamples source videos, not people


def _both_classes(labels: np.ndarray) -> bool:
    return labels.size > 0 and 0 < int(labels.sum()) < labels.size


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of ``scores: (N,)`` for ``labels: (N,)`` in {0, 1}; None with a single class."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    return float(roc_auc_score(labels, scores)) if _both_classes(labels) else None


def bootstrap_auc_ci(labels: np.ndarray, scores: np.ndarray, n_resamples: int = 1000,
                     level: float = 0.95, seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Stratified bootstrap percentile interval of the ROC AUC; None with a single class.

    Every video is taken as independent: the reported ``auc_ci95`` before issue 18, kept for
    comparison. The metrics now use :func:`cluster_bootstrap`.

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


# --------------------------------------------------------------------------- clusters and the cluster bootstrap
def derive_groups(video_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Source video of each video when the adapter gave none: a real is its own source; a fake
    belongs to the real of the same id (the demo: a fake has its real's id), else to the real named
    by the part of its id before the first ``_`` (FF++ ``<target>_<source>``: the target, whose frames
    the fake is made of), else to itself (it stays independent: no real is known to share its frames).
    """
    ids, labels = np.asarray(video_ids).astype(str), np.asarray(labels).astype(int)
    reals = set(ids[labels == 0].tolist())
    out = ids.astype(object)   # no fixed-width truncation
    for i in np.nonzero(labels == 1)[0]:
        v = ids[i]
        if v not in reals:
            target = v.split("_", 1)[0]
            out[i] = target if target in reals else v
    return out.astype(str)


def cluster_ids(video_ids: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None,
                identities: np.ndarray | None = None,
                min_identities: int = MIN_IDENTITIES) -> tuple[np.ndarray, str]:
    """The resampling cluster of every video and what the clusters are.

    A video's cluster is its ``identity`` (the person) when known, else its ``group`` (source video;
    empty: :func:`derive_groups`). Videos of one cluster share a person or frames, so their scores
    are not independent; different clusters are taken as independent.

    People are used only when there are at least ``min_identities`` of them. With fewer, a bootstrap
    over people is not an interval: 2 people give 3 distinct resamples ({A, A}, {A, B}, {B, B}), and
    their percentiles were *narrower* than the by-source interval on the demo (measured: Phase A
    overall [0.750, 0.809] by person vs [0.738, 0.845] by source). Then the clusters are the source
    videos, ``auc_identities`` (:func:`count_identities`) still says how few people there are, and
    every interval is about new videos of these people, not about new people.

    Args:
        video_ids: ``(N,)`` ids.
        labels: ``(N,)`` 0 real / 1 fake.
        groups: ``(N,)`` source video per video (``""`` = unknown), or None.
        identities: ``(N,)`` person per video (``""`` = unknown), or None.
        min_identities: fewest distinct people for clustering by person.

    Returns:
        ``(clusters (N,) str, by)``: ``by`` is ``"identity"`` when every video is clustered by its
        person, else ``"source"`` when some cluster holds more than one video (source videos, and
        people where known), else ``"video"``.
    """
    ids = np.asarray(video_ids).astype(str)
    n = ids.size
    g = np.full(n, "", dtype=object) if groups is None else np.asarray(groups).astype(str)
    who = np.full(n, "", dtype=object) if identities is None else np.asarray(identities).astype(str)
    if count_identities(who) < min_identities:
        who = np.full(n, "", dtype=object)
    derived = derive_groups(ids, labels)
    src = np.where(g != "", g, derived).astype(str)
    clusters = np.array([f"identity:{p}" if p else f"source:{q}" for p, q in zip(who, src)], dtype=object)
    if n and all(bool(p) for p in who):
        by = "identity"
    elif n and len(set(clusters.tolist())) < n:
        by = "source"
    else:
        by = "video"
    return clusters.astype(str), by


def count_identities(identities: np.ndarray | None) -> int:
    """Distinct known people (``""`` = unknown) — ``auc_identities``; 0 when none is known."""
    if identities is None:
        return 0
    return len({str(p) for p in np.asarray(identities).astype(str).tolist() if p})


def independent_pairs(labels: np.ndarray, clusters: np.ndarray) -> int:
    """How many (real, fake) pairs can be formed from distinct clusters, each cluster used once:
    ``min(R, F, floor(C / 2))`` with ``R`` / ``F`` the clusters holding a real / a fake and ``C``
    all clusters (a cluster holding both can give either side)."""
    labels, clusters = np.asarray(labels).astype(int), np.asarray(clusters).astype(str)
    r = len(set(clusters[labels == 0].tolist()))
    f = len(set(clusters[labels == 1].tolist()))
    return int(min(r, f, len(set(clusters.tolist())) // 2))


def perfect_auc_lower_bound(k: int, alpha: float = LOWER_ALPHA) -> float | None:
    """Exact one-sided ``1 - alpha`` lower bound of the AUC when every real is ranked below every fake.

    Let ``theta`` be the probability that a fake of one cluster outscores a real of another,
    independent cluster (the AUC that carries over to new people / source videos). Take ``k``
    (real, fake) pairs from distinct clusters, each cluster used once (:func:`independent_pairs`),
    chosen without looking at the scores: their outcomes are ``k`` independent Bernoulli(``theta``)
    trials, and with a perfect ranking all ``k`` are won. ``P(k wins | theta) = theta ** k``, so
    ``theta < alpha ** (1 / k)`` is rejected at level ``alpha`` — the Clopper-Pearson bound for
    ``k`` successes in ``k`` trials::

        auc_lower95 = alpha ** (1 / k)      (k = 2: 0.224, 6: 0.607, 12: 0.779, 60: 0.951)

    It grows with the number of independent clusters, not with the number of videos in them.
    Assumption: clusters are independent (videos of one cluster may depend on each other arbitrarily).

    Returns:
        the bound, or None when ``k == 0`` (fewer than two clusters: no independent comparison).
    """
    return float(alpha ** (1.0 / k)) if k > 0 else None


def _cluster_weights(labels: np.ndarray, clusters: np.ndarray, n_resamples: int,
                     seed: int) -> tuple[list[np.ndarray], int]:
    """Video weights of ``n_resamples`` cluster resamples (``C`` clusters drawn with replacement out
    of ``C``; a video's weight is how often its cluster was drawn) and how many were skipped.

    A resample whose drawn clusters hold only one class is redrawn (up to :data:`MAX_REDRAWS`
    times, then skipped): with a real and its fakes in one cluster this is rare.
    """
    labels = np.asarray(labels).astype(int)
    keys, inv = np.unique(np.asarray(clusters).astype(str), return_inverse=True)
    c = keys.size
    has_real = np.bincount(inv[labels == 0], minlength=c) > 0
    has_fake = np.bincount(inv[labels == 1], minlength=c) > 0
    rng = np.random.default_rng(seed)
    out, skipped = [], 0
    for _ in range(n_resamples):
        for _try in range(MAX_REDRAWS):
            counts = np.bincount(rng.integers(0, c, c), minlength=c)
            if (counts * has_real).sum() and (counts * has_fake).sum():
                out.append(counts[inv].astype(np.float64))
                break
        else:
            skipped += 1
    return out, skipped


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of every row of ``weights: (B, N)`` (video weights), ties counted 1/2.

    ``AUC_b = sum_ij w_bi w_bj [s_j > s_i] + 1/2 [s_j = s_i]  /  (sum_i w_bi  sum_j w_bj)`` over reals
    ``i`` and fakes ``j`` — the Mann-Whitney form of scikit-learn's weighted ``roc_auc_score`` (the
    trapezoidal area under the weighted ROC curve). ``(B,)``; NaN where a class has zero weight.
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    r, f = s[y == 0], s[y == 1]
    pair = (f[None, :] > r[:, None]) + 0.5 * (f[None, :] == r[:, None])    # (n_real, n_fake)
    wr, wf = w[:, y == 0], w[:, y == 1]
    den = wr.sum(1) * wf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("br,rf,bf->b", wr, pair, wf, optimize=True) / den


@dataclass(frozen=True)
class ClusterBootstrap:
    """Result of :func:`cluster_bootstrap` on one subset."""
    auc_ci95: tuple[float, float] | None          # percentile interval; None when collapsed
    auc_lower95: float | None                     # one-sided lower bound
    by: str                                       # identity | source | video
    groups_real: int                              # clusters holding a real
    groups_fake: int                              # clusters holding a fake
    temporal_gain_ci95: tuple[float, float] | None = None   # paired interval of auc - static_auc
    n_resamples: int = 0                          # resamples used (skipped ones excluded)
    order_gain_ci95: tuple[float, float] | None = None      # paired interval of auc - shuffled_auc


def cluster_bootstrap(labels: np.ndarray, scores: np.ndarray, clusters: np.ndarray, by: str = "source",
                      static_scores: np.ndarray | None = None, n_resamples: int = N_BOOTSTRAP,
                      level: float = 0.95, seed: int = BOOTSTRAP_SEED,
                      shuffled_scores: np.ndarray | None = None) -> ClusterBootstrap | None:
    """Cluster bootstrap of the ROC AUC (and, paired, of ``auc - static_auc``); None with one class.

    Each resample draws ``C`` of the ``C`` clusters with replacement (the classes are not stratified:
    a cluster carries its reals and fakes together) and scores every video with its cluster's
    multiplicity as weight: :func:`weighted_aucs`, which equals scikit-learn's
    ``roc_auc_score(..., sample_weight=w)`` (tested) and does all resamples in one matrix product
    (``roc_auc_score`` costs ~1.7 ms a call here: 2000 resamples x 2 x 5 subsets would add ~35 s to an
    evaluation on the shared CPU). The point AUC is ``roc_auc_score``'s. Seeded ``numpy`` generator;
    one-class resamples are redrawn (:func:`_cluster_weights`).

    Args:
        labels: ``(N,)`` 0 real / 1 fake (scored videos only).
        scores: ``(N,)`` video scores.
        clusters: ``(N,)`` cluster key per video (:func:`cluster_ids`).
        by: what the clusters are (reported).
        static_scores: ``(N,)`` scores on static clips: the same resamples give the paired interval
            of ``auc - static_auc``.
        n_resamples: resamples drawn.
        level: coverage of the two-sided interval.
        seed: generator seed.
        shuffled_scores: ``(N,)`` scores on shuffled clips: the paired interval of ``auc - shuffled_auc``.

    Returns:
        intervals, bound and cluster counts (:class:`ClusterBootstrap`). At AUC 1 every resample is 1:
        no interval, and the lower bound is :func:`perfect_auc_lower_bound`; otherwise the bound is
        the ``alpha`` quantile of the resampled AUCs (None with fewer than two clusters).
    """
    y = np.asarray(labels).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    cl = np.asarray(clusters).astype(str)
    if not _both_classes(y):
        return None
    q = [(1 - level) / 2, (1 + level) / 2]
    k = independent_pairs(y, cl)
    point = float(roc_auc_score(y, s))
    weights, _ = _cluster_weights(y, cl, n_resamples, seed)
    w = np.stack(weights) if weights else np.zeros((0, y.size))
    aucs = weighted_aucs(y, s, w)

    def paired_ci(control: np.ndarray | None) -> tuple[float, float] | None:
        if control is None:
            return None
        c = np.asarray(control, dtype=np.float64)
        if not np.all(np.isfinite(c)):
            return None
        gains = aucs - weighted_aucs(y, c, w)
        if not gains.size or np.ptp(gains) <= 1e-12:
            return None
        lo, hi = np.quantile(gains, q)
        return float(lo), float(hi)

    gain_ci, order_ci = paired_ci(static_scores), paired_ci(shuffled_scores)
    collapsed = aucs.size == 0 or np.ptp(aucs) <= 1e-12
    if point >= 1.0:
        ci, lower = None, perfect_auc_lower_bound(k)
    else:
        ci = None if collapsed else tuple(float(v) for v in np.quantile(aucs, q))
        lower = None if k == 0 or aucs.size == 0 else float(np.quantile(aucs, LOWER_ALPHA))
    return ClusterBootstrap(ci, lower, by, len(set(cl[y == 0].tolist())), len(set(cl[y == 1].tolist())),
                            gain_ci, int(aucs.size), order_ci)


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
    auc_ci95: tuple[float, float] | None = None   # cluster-bootstrap interval of ``auc`` (None: collapsed)
    auc_fail05: float | None = None               # AUC with the unscorable videos at 0.5
    static_auc: float | None = None               # AUC on static clips (None: not scored)
    failed_real: int = 0         # reals of the subset that could not be scored
    failed_fake: int = 0         # fakes of the subset that could not be scored
    auc_lower95: float | None = None              # one-sided 95 % lower bound of ``auc``
    auc_ci95_by: str | None = None                # clusters of the bootstrap: identity | source | video
    auc_groups_real: int = 0                      # clusters holding a scored real
    auc_groups_fake: int = 0                      # clusters holding a scored fake
    auc_identities: int | None = None             # distinct people among the scored videos (None: unknown)
    temporal_gain: float | None = None            # auc - static_auc (None: frame model / not scored)
    temporal_gain_ci95: tuple[float, float] | None = None   # paired cluster-bootstrap interval
    shuffled_auc: float | None = None             # AUC on shuffled clips (None: not scored)
    order_gain: float | None = None               # auc - shuffled_auc (None: frame model / not scored)
    order_gain_ci95: tuple[float, float] | None = None      # paired cluster-bootstrap interval


def subset_metrics(labels: np.ndarray, scores: np.ndarray, clip_labels: np.ndarray, clip_scores: np.ndarray,
                   failed: np.ndarray | None = None, static_scores: np.ndarray | None = None,
                   n_resamples: int = N_BOOTSTRAP, clusters: np.ndarray | None = None, cluster_by: str = "video",
                   temporal: bool = True, identities: np.ndarray | None = None,
                   shuffled_scores: np.ndarray | None = None) -> SubsetMetrics:
    """Metrics of one subset.

    Args:
        labels: ``(N,)`` video labels, 0 real / 1 fake, of every video of the subset.
        scores: ``(N,)`` video fake probabilities (mean over clips); ignored where ``failed``.
        clip_labels: ``(M,)`` label of every scored clip (its video's label).
        clip_scores: ``(M,)`` fake probability of every scored clip.
        failed: ``(N,)`` True for the videos that could not be scored (default: non-finite score).
        static_scores: ``(N,)`` video scores on static clips, or None.
        n_resamples: bootstrap resamples of ``auc_ci95``.
        clusters: ``(N,)`` bootstrap cluster of every video (:func:`cluster_ids`); None: each video alone.
        cluster_by: what ``clusters`` are (``identity`` | ``source`` | ``video``), reported.
        temporal: False for a frame-level model: no ``temporal_gain`` (0 by definition).
        identities: ``(N,)`` person per video (``""`` unknown), for ``auc_identities`` only.
        shuffled_scores: ``(N,)`` video scores on shuffled clips, or None.
    """
    labels, scores = np.asarray(labels).astype(int), np.asarray(scores, dtype=np.float64)
    failed = ~np.isfinite(scores) if failed is None else np.asarray(failed, dtype=bool)
    ok = ~failed
    y, s = labels[ok], scores[ok]
    if clusters is None:
        clusters, cluster_by = np.arange(labels.size).astype(str), "video"
    st = None if static_scores is None else np.asarray(static_scores, dtype=np.float64)[ok]
    a = auc(y, s)
    static = None if st is None else auc(y, st)
    sh = None if shuffled_scores is None else np.asarray(shuffled_scores, dtype=np.float64)[ok]
    shuffled = None if sh is None else auc(y, sh)
    boot = cluster_bootstrap(y, s, np.asarray(clusters).astype(str)[ok], cluster_by,
                             static_scores=st if temporal and static is not None else None, n_resamples=n_resamples,
                             shuffled_scores=sh if temporal and shuffled is not None else None)
    gain = a - static if temporal and a is not None and static is not None else None
    order = a - shuffled if temporal and a is not None and shuffled is not None else None
    return SubsetMetrics(
        auc=a, ap=average_precision(y, s), eer=eer(y, s), acc=accuracy(y, s),
        clip_auc=auc(clip_labels, clip_scores), n_real=int((y == 0).sum()), n_fake=int((y == 1).sum()),
        auc_ci95=None if boot is None else boot.auc_ci95,
        auc_fail05=auc(labels, np.where(failed, FAILED_SCORE, scores)),
        static_auc=static,
        failed_real=int((failed & (labels == 0)).sum()), failed_fake=int((failed & (labels == 1)).sum()),
        auc_lower95=None if boot is None else boot.auc_lower95,
        auc_ci95_by=None if boot is None else boot.by,
        auc_groups_real=0 if boot is None else boot.groups_real,
        auc_groups_fake=0 if boot is None else boot.groups_fake,
        auc_identities=None if identities is None else (count_identities(np.asarray(identities).astype(str)[ok])
                                                        or None),
        temporal_gain=gain, temporal_gain_ci95=None if boot is None or gain is None else boot.temporal_gain_ci95,
        shuffled_auc=shuffled, order_gain=order,
        order_gain_ci95=None if boot is None or order is None else boot.order_gain_ci95)


def per_method_metrics(labels: np.ndarray, methods: np.ndarray, scores: np.ndarray,
                       clip_video: np.ndarray, clip_scores: np.ndarray, *, failed: np.ndarray | None = None,
                       static_scores: np.ndarray | None = None, n_resamples: int = N_BOOTSTRAP,
                       video_ids: np.ndarray | None = None, groups: np.ndarray | None = None,
                       identities: np.ndarray | None = None, temporal: bool = True,
                       shuffled_scores: np.ndarray | None = None) -> dict[str, SubsetMetrics]:
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
        video_ids: ``(N,)`` ids, for the bootstrap clusters (:func:`cluster_ids`); None: every video
            is its own cluster (``auc_ci95_by = "video"``).
        groups: ``(N,)`` source video of each video (``""``: derived from the ids), or None.
        identities: ``(N,)`` person of each video (``""``: unknown), or None.
        temporal: False for a frame-level model (no ``temporal_gain`` / ``order_gain``).
        shuffled_scores: ``(N,)`` video scores on shuffled clips, or None.

    Returns:
        ``{"overall": ..., "<method>": ...}`` with methods in sorted order; a method whose fakes all
        failed is listed (``auc`` None, its failures counted).
    """
    labels, methods = np.asarray(labels).astype(int), np.asarray(methods).astype(str)
    scores, clip_video = np.asarray(scores, dtype=np.float64), np.asarray(clip_video, dtype=int)
    clip_scores = np.asarray(clip_scores, dtype=np.float64)
    failed = ~np.isfinite(scores) if failed is None else np.asarray(failed, dtype=bool)
    static = None if static_scores is None else np.asarray(static_scores, dtype=np.float64)
    shuffled = None if shuffled_scores is None else np.asarray(shuffled_scores, dtype=np.float64)
    if video_ids is None:
        clusters, by = np.arange(labels.size).astype(str), "video"
    else:
        clusters, by = cluster_ids(video_ids, labels, groups, identities)
    out: dict[str, SubsetMetrics] = {}
    subsets = {OVERALL: np.ones_like(labels, dtype=bool)}
    for m in sorted(set(methods[labels == 1].tolist())):
        subsets[str(m)] = (labels == 0) | (methods == m)
    for name, keep in subsets.items():
        ck = keep[clip_video] & ~failed[clip_video] if clip_video.size else np.zeros(0, dtype=bool)
        sub_by = by if by != "source" or len(set(clusters[keep].tolist())) < int(keep.sum()) else "video"
        out[name] = subset_metrics(labels[keep], scores[keep], labels[clip_video][ck], clip_scores[ck],
                                   failed=failed[keep], static_scores=None if static is None else static[keep],
                                   n_resamples=n_resamples, clusters=clusters[keep], cluster_by=sub_by,
                                   temporal=temporal, identities=None if identities is None else
                                   np.asarray(identities).astype(str)[keep],
                                   shuffled_scores=None if shuffled is None else shuffled[keep])
    return out


def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[tuple[float, float, float]]:
    """ROC curve ``[(fpr, tpr, threshold), ...]``; empty with a single class."""
    labels = np.asarray(labels).astype(int)
    if not _both_classes(labels):
        return []
    fpr, tpr, thr = roc_curve(labels, np.asarray(scores, dtype=np.float64))
    thr = np.minimum(thr, 1.0)  # sklearn puts +inf first; cap it so the CSV stays finite
    return [(float(a), float(b), float(c)) for a, b, c in zip(fpr, tpr, thr)]
