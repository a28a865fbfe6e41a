"""Metrics against values computed by hand on small score lists."""
import numpy as np
import pytest

from stfmamba.evaluation.metrics import (accuracy, auc, average_precision, eer, per_method_metrics,
                                         roc_points)


def test_auc_ap_eer_hand_computed():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    # fake>real pairs: (0.4>0.1), (0.9>0.1), (0.9>0.6) of 4 -> 3/4
    assert auc(labels, scores) == pytest.approx(0.75)
    # ranked: 0.9 (fake, P=1), 0.6 (real), 0.4 (fake, P=2/3) -> AP = (1 + 2/3) / 2
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    # at threshold 0.6: FPR = 1/2, FNR = 1/2
    assert eer(labels, scores) == pytest.approx(0.5)
    # >= 0.5: 0.6 wrong, 0.4 wrong -> 2/4
    assert accuracy(labels, scores) == pytest.approx(0.5)


def test_eer_interpolates_between_operating_points():
    # thresholds 0.9 -> (FPR 0, FNR 1/2); 0.5 -> (FPR 1, FNR 1/2): the curves cross at 1/2
    assert eer(np.array([0, 1, 1]), np.array([0.5, 0.4, 0.9])) == pytest.approx(0.5)
    # FPR stays 1/3 while FNR drops 1/2 -> 0: the crossing is at 1/3
    assert eer(np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.5, 0.6, 0.55, 0.9])) == pytest.approx(1 / 3)
    # perfect separation
    assert eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0)


def test_eer_known_by_construction():
    # 10 reals, 10 fakes; 2 reals score above every fake and 2 fakes below every real: at the
    # threshold between them 2 of 10 reals pass (FPR 0.2) and 2 of 10 fakes are missed (FNR 0.2)
    reals = np.r_[np.linspace(0.30, 0.45, 8), [0.95, 0.97]]
    fakes = np.r_[[0.05, 0.07], np.linspace(0.60, 0.90, 8)]
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    assert eer(labels, np.r_[reals, fakes]) == pytest.approx(0.2)
    # two unit Gaussians 2 apart: the EER is at the midpoint threshold, Phi(-1) = 0.158655
    rng = np.random.default_rng(0)
    n = 200_000
    labels = np.r_[np.zeros(n, int), np.ones(n, int)]
    assert eer(labels, np.r_[rng.normal(-1, 1, n), rng.normal(1, 1, n)]) == pytest.approx(0.158655, abs=0.003)
    # order-preserving transforms do not move it; flipping the scores turns EER e into 1 - e
    scores = np.r_[reals, fakes]
    labels = np.r_[np.zeros(10, int), np.ones(10, int)]
    assert eer(labels, np.exp(5 * scores)) == pytest.approx(0.2)
    assert eer(labels, -scores) == pytest.approx(0.8)


def test_single_class_gives_none_not_half():
    assert auc(np.array([1, 1]), np.array([0.2, 0.9])) is None
    assert eer(np.array([0, 0]), np.array([0.2, 0.9])) is None
    assert average_precision(np.array([0]), np.array([0.3])) is None
    assert roc_points(np.array([1, 1]), np.array([0.1, 0.2])) == []
    assert accuracy(np.array([]), np.array([])) is None


def test_per_method_reals_against_each_method():
    labels = np.array([0, 0, 1, 1, 1, 1])
    methods = np.array(["real", "real", "A", "A", "B", "B"])
    scores = np.array([0.3, 0.4, 0.8, 0.9, 0.1, 0.2])
    clip_video = np.array([0, 0, 1, 2, 3, 4, 5, 5])
    clip_scores = np.array([0.2, 0.4, 0.4, 0.9, 0.8, 0.1, 0.1, 0.3])
    m = per_method_metrics(labels, methods, scores, clip_video, clip_scores)
    assert list(m) == ["overall", "A", "B"]
    assert m["A"].auc == pytest.approx(1.0) and m["B"].auc == pytest.approx(0.0)
    assert m["overall"].auc == pytest.approx(0.5)  # 4 of 8 pairs
    assert (m["A"].n_real, m["A"].n_fake) == (2, 2)
    # clip-level, method A: reals 0.2,0.4,0.4 vs fakes 0.9,0.8 -> 1.0
    assert m["A"].clip_auc == pytest.approx(1.0)
    # clip-level, method B: fakes 0.1,0.1,0.3 vs reals 0.2,0.4,0.4: pairs won: 0.3>0.2 -> 1/9
    assert m["B"].clip_auc == pytest.approx(1 / 9)


# ----------------------------------------------------------------------------- cluster bootstrap (issue 18)
def _sources(n_src, fakes_per_src, spread, seed=0, real_shares=True, real_spread=None):
    """``n_src`` source videos, each a real and ``fakes_per_src`` fakes made from it; the fakes of a
    source share the source's offset (scores strongly correlated within a source), plus small noise;
    the real shares it too unless ``real_shares`` is False (then it gets an offset of its own, spread
    ``real_spread``)."""
    rng = np.random.default_rng(seed)
    offset = rng.normal(0, spread, n_src)
    own = rng.normal(0, spread if real_spread is None else real_spread, n_src)
    ids, labels, scores = [], [], []
    for i in range(n_src):
        ids += [f"s{i:02d}"] * (1 + fakes_per_src)
        labels += [0] + [1] * fakes_per_src
        real = (offset if real_shares else own)[i] + rng.normal(0, 0.1)
        scores += [real] + list(offset[i] + 0.5 + rng.normal(0, 0.1, fakes_per_src))
    return np.array(ids), np.array(labels), np.array(scores)


def test_weighted_aucs_equal_sklearn_with_sample_weight():
    from sklearn.metrics import roc_auc_score

    from stfmamba.evaluation.metrics import weighted_aucs
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40), 1)                       # many ties
    w = rng.integers(0, 4, (30, 40)).astype(float)
    w[:, labels == 0] += 1                                      # both classes present in every row
    w[:, np.nonzero(labels == 1)[0][0]] += 1
    expect = [roc_auc_score(labels, scores, sample_weight=row) for row in w]
    assert np.allclose(weighted_aucs(labels, scores, w), expect, atol=1e-12)


def test_cluster_ids_demo_ffpp_and_identity():
    from stfmamba.evaluation.metrics import cluster_ids, derive_groups
    # the demo: a fake has its real's id; FF++: <target>_<source> goes with the target real
    ids = np.array(["franck_032", "franck_032", "000", "003", "000_003", "003_000", "lonely_fake"])
    labels = np.array([0, 1, 0, 0, 1, 1, 1])
    assert derive_groups(ids, labels).tolist() == ["franck_032", "franck_032", "000", "003", "000", "003",
                                                   "lonely_fake"]
    cl, by = cluster_ids(ids, labels)
    assert by == "source" and len(set(cl)) == 4
    cl, by = cluster_ids(ids[2:4], labels[2:4])
    assert by == "video"
    who = np.array(["franck", "franck", "cap", "cap", "cap", "cap", "x"])
    cl, by = cluster_ids(ids, labels, identities=who, min_identities=3)
    assert by == "identity" and len(set(cl)) == 3
    # too few people to resample (a bootstrap over 3 people has 10 distinct resamples): source videos
    cl, by = cluster_ids(ids, labels, identities=who)
    assert by == "source" and len(set(cl)) == 4
    # an explicit group wins over the ids; a partly known identity is not "identity"
    cl, by = cluster_ids(np.array(["a", "b", "c"]), np.array([0, 1, 0]), groups=np.array(["", "a", ""]),
                         identities=np.array(["", "", "p"]), min_identities=1)
    assert by == "source" and cl[0] == cl[1] != cl[2]


def test_by_source_interval_is_wider_than_the_independent_one():
    from stfmamba.evaluation.metrics import bootstrap_auc_ci, cluster_bootstrap, cluster_ids
    # the fakes of one source are easy or hard together (their scores share the source's offset): 96
    # fakes, but 12 independent draws of "how good are this source's fakes"
    ids, labels, scores = _sources(12, 8, spread=0.6, real_shares=False, real_spread=0.2)
    a = auc(labels, scores)
    assert 0.6 < a < 1.0
    lo_i, hi_i = bootstrap_auc_ci(labels, scores, n_resamples=500)
    clusters, by = cluster_ids(ids, labels)
    assert by == "source"
    b = cluster_bootstrap(labels, scores, clusters, by, n_resamples=500)
    lo, hi = b.auc_ci95
    assert lo < a < hi and (b.groups_real, b.groups_fake) == (12, 12)
    assert hi - lo > 1.5 * (hi_i - lo_i)           # 108 videos, but only 12 independent sources
    assert b.auc_lower95 > lo                       # one-sided 95 % bound: above the two-sided 2.5 % end


def test_perfect_separation_gives_a_lower_bound_that_grows_with_the_groups():
    from stfmamba.evaluation.metrics import cluster_bootstrap, cluster_ids, perfect_auc_lower_bound
    bounds = []
    for n_src in (2, 6, 12, 40):
        ids, labels, scores = _sources(n_src, 4, spread=0.0)
        scores = np.where(labels == 1, 1.0 + scores, scores - 1.0)        # every fake above every real
        assert auc(labels, scores) == 1.0
        b = cluster_bootstrap(labels, scores, cluster_ids(ids, labels)[0], n_resamples=200)
        assert b.auc_ci95 is None                                         # [1, 1] says nothing: not reported
        # k = n_src // 2 pairs of distinct sources -> 0.05 ** (1 / k)
        assert b.auc_lower95 == pytest.approx(0.05 ** (1 / (n_src // 2)))
        assert b.auc_lower95 == perfect_auc_lower_bound(n_src // 2)
        bounds.append(b.auc_lower95)
    assert bounds == sorted(bounds) and bounds[0] == pytest.approx(0.05) and bounds[-1] < 1.0
    # many videos in few sources do not tighten it: 2 sources of 50 fakes each
    ids, labels, scores = _sources(2, 50, spread=0.0)
    scores = np.where(labels == 1, 1.0, 0.0)
    assert cluster_bootstrap(labels, scores, cluster_ids(ids, labels)[0], n_resamples=50).auc_lower95 == \
        pytest.approx(0.05)
    assert perfect_auc_lower_bound(0) is None


def test_cluster_bootstrap_is_deterministic_given_the_seed():
    from stfmamba.evaluation.metrics import cluster_bootstrap, cluster_ids
    ids, labels, scores = _sources(10, 3, spread=0.5, seed=1)
    cl = cluster_ids(ids, labels)[0]
    static = scores + np.random.default_rng(9).normal(0, 0.3, scores.size)
    one = cluster_bootstrap(labels, scores, cl, static_scores=static, n_resamples=300, seed=4)
    assert one == cluster_bootstrap(labels, scores, cl, static_scores=static, n_resamples=300, seed=4)
    assert one.auc_ci95 != cluster_bootstrap(labels, scores, cl, n_resamples=300, seed=5).auc_ci95
    assert one.n_resamples == 300


def test_people_are_resampled_from_enough_of_them_and_always_counted():
    ids, labels, scores = _sources(16, 2, spread=0.5, seed=3)
    methods = np.where(labels == 1, "A", "real")
    none = np.zeros(0, int), np.zeros(0)
    two = np.array(["ann" if int(v[1:]) % 2 else "bob" for v in ids])                # 2 people
    m = per_method_metrics(labels, methods, scores, *none, video_ids=ids, identities=two, n_resamples=200)
    o = m["overall"]
    assert (o.auc_ci95_by, o.auc_groups_real, o.auc_identities) == ("source", 16, 2)
    eight = np.array([f"p{int(v[1:]) // 2}" for v in ids])                            # 8 people, 2 sources each
    o = per_method_metrics(labels, methods, scores, *none, video_ids=ids, identities=eight,
                           n_resamples=200)["overall"]
    assert (o.auc_ci95_by, o.auc_groups_real, o.auc_groups_fake, o.auc_identities) == ("identity", 8, 8, 8)
    assert per_method_metrics(labels, methods, scores, *none, video_ids=ids, n_resamples=20)["overall"] \
        .auc_identities is None


def test_one_class_resamples_are_redrawn():
    from stfmamba.evaluation.metrics import cluster_bootstrap
    # 2 real-only and 2 fake-only clusters: about 1 draw in 8 holds one class and is redrawn
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    b = cluster_bootstrap(labels, scores, np.array(["a", "b", "c", "d"]), "video", n_resamples=400)
    assert b.n_resamples == 400 and b.auc_ci95[0] < 0.75 < b.auc_ci95[1]
    assert cluster_bootstrap(np.array([1, 1]), np.array([0.2, 0.3]), np.array(["a", "b"])) is None


def test_temporal_gain_paired_and_absent_for_a_frame_model():
    ids, labels, scores = _sources(12, 4, spread=0.3, seed=2)
    static = np.where(labels == 1, scores - 0.4, scores)       # without motion the fakes look less fake
    methods = np.where(labels == 1, "A", "real")
    m = per_method_metrics(labels, methods, scores, np.zeros(0, int), np.zeros(0), static_scores=static,
                           video_ids=ids, n_resamples=500)
    o = m["overall"]
    assert o.temporal_gain == pytest.approx(o.auc - o.static_auc) and o.temporal_gain > 0
    lo, hi = o.temporal_gain_ci95
    assert lo < o.temporal_gain < hi
    assert (o.auc_ci95_by, o.auc_groups_real, o.auc_groups_fake) == ("source", 12, 12)
    # paired: shifting the static scores of every video by a constant changes neither AUC nor the gain
    m2 = per_method_metrics(labels, methods, scores, np.zeros(0, int), np.zeros(0), static_scores=static + 3.0,
                            video_ids=ids, n_resamples=500)
    assert m2["overall"].temporal_gain_ci95 == pytest.approx(o.temporal_gain_ci95)
    frame = per_method_metrics(labels, methods, scores, np.zeros(0, int), np.zeros(0), static_scores=scores,
                               video_ids=ids, n_resamples=50, temporal=False)
    assert frame["overall"].temporal_gain is None and frame["overall"].temporal_gain_ci95 is None
    assert frame["overall"].static_auc == frame["overall"].auc


def test_order_gain_paired_like_the_temporal_gain():
    ids, labels, scores = _sources(12, 4, spread=0.3, seed=5)
    shuffled = np.where(labels == 1, scores - 0.3, scores)     # out of order the fakes look less fake
    methods = np.where(labels == 1, "A", "real")
    m = per_method_metrics(labels, methods, scores, np.zeros(0, int), np.zeros(0), shuffled_scores=shuffled,
                           video_ids=ids, n_resamples=500)["overall"]
    assert m.order_gain == pytest.approx(m.auc - m.shuffled_auc) and m.order_gain > 0
    lo, hi = m.order_gain_ci95
    assert lo < m.order_gain < hi
    assert m.static_auc is None and m.temporal_gain is None     # each control is its own
    frame = per_method_metrics(labels, methods, scores, np.zeros(0, int), np.zeros(0), shuffled_scores=scores,
                               video_ids=ids, n_resamples=50, temporal=False)["overall"]
    assert frame.order_gain is None and frame.order_gain_ci95 is None and frame.shuffled_auc == frame.auc
