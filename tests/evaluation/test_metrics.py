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
