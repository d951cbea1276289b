"""Label-free selection scores on hand-checkable maps."""

import numpy as np
import pytest

from semi2i.selection import (
    agreement_from_confusion,
    agreement_matrix,
    agreement_scores,
    class_balance,
    class_frequencies,
    confusion,
)


def test_agreement_of_two_small_maps_by_hand():
    a = np.array([[0, 0], [1, 2]])
    b = np.array([[0, 1], [1, 2]])
    cm = confusion(a, b, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    # IoU class 0: 1/2, class 1: 1/2, class 2: 1 -> mean 2/3, whichever map is the reference
    assert agreement_from_confusion(cm) == pytest.approx(2 / 3)
    assert agreement_from_confusion(confusion(b, a, 3)) == pytest.approx(2 / 3)
    assert agreement_from_confusion(confusion(a, a, 3)) == 1.0


def test_ignore_values_and_invalid_pixels_do_not_count():
    a = np.array([0, 1, 255, 1])
    b = np.array([0, 0, 0, 1])
    assert confusion(a, b, 2).sum() == 3
    assert confusion(a, b, 2, valid=np.array([1, 0, 1, 1])).tolist() == [[1, 0], [0, 1]]


def test_good_candidates_outrank_a_clique_of_failures():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(2, 60, 60))

    def noisy(p, fill=None):
        out = truth.copy()
        flip = rng.random(truth.shape) < p
        out[flip] = rng.integers(0, 4, size=flip.sum()) if fill is None else fill
        return list(out)

    maps = {
        "good1": noisy(0.1), "good2": noisy(0.15), "good3": noisy(0.2),
        # two failures that agree with each other: both paint most of the city class 3
        "bad1": noisy(0.8, fill=3), "bad2": noisy(0.8, fill=3),
        "random": list(rng.integers(0, 4, size=truth.shape)),
    }
    names, matrix = agreement_matrix(maps, 4)
    assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1)
    scores = agreement_scores(names, matrix)
    for kind in ("mean", "spectral"):
        ranked = sorted(names, key=lambda n: -scores[n][kind])
        assert set(ranked[:3]) == {"good1", "good2", "good3"}, (kind, ranked)
        assert ranked[-1] == "random"


def test_class_balance():
    source = np.array([0.5, 0.5, 0.0])
    assert class_frequencies([np.array([0, 0, 1, 255])], 3).tolist() == pytest.approx([2 / 3, 1 / 3, 0])
    assert class_balance([np.array([0, 1])], source) == pytest.approx(1.0)
    assert class_balance([np.array([2, 2])], source) == pytest.approx(0.0)
    assert class_balance([np.array([0, 0])], source) == pytest.approx(0.5)


def test_candidates_must_cover_the_same_rasters():
    with pytest.raises(ValueError, match="different numbers of rasters"):
        agreement_matrix({"a": [np.zeros((2, 2))], "b": [np.zeros((2, 2))] * 2}, 2)
    with pytest.raises(ValueError, match="at least two"):
        agreement_matrix({"a": [np.zeros((2, 2))]}, 2)


def test_scores_by_hand_on_a_three_candidate_matrix_and_a_non_voting_candidate():
    names = ["a", "b", "c", "oracle"]
    m = np.array([[1.0, 0.8, 0.2, 0.9],
                  [0.8, 1.0, 0.4, 0.7],
                  [0.2, 0.4, 1.0, 0.3],
                  [0.9, 0.7, 0.3, 1.0]])
    scores = agreement_scores(names, m, voters=["a", "b", "c"])
    assert scores["a"]["mean"] == pytest.approx(0.5)
    assert scores["c"]["mean"] == pytest.approx(0.3)
    assert scores["oracle"]["mean"] == pytest.approx((0.9 + 0.7 + 0.3) / 3)  # scored, never a voter
    values, vectors = np.linalg.eigh(np.array([[0, 0.8, 0.2], [0.8, 0, 0.4], [0.2, 0.4, 0]]))
    w = np.abs(vectors[:, -1])
    assert scores["a"]["spectral"] == pytest.approx((0.8 * w[1] + 0.2 * w[2]) / (w[1] + w[2]))
    assert scores["oracle"]["spectral"] == pytest.approx((0.9 * w[0] + 0.7 * w[1] + 0.3 * w[2]) / w.sum())
    # the oracle's map changes nobody's score
    without = agreement_scores(names[:3], m[:3, :3])
    for n in "abc":
        assert without[n] == pytest.approx(scores[n])



def test_seed_choice_rejects_inverted_seeds_then_takes_the_medoid():
    from semi2i.semi2i_seeds import base_method, kept_seeds, medoid, seed_methods, seed_of

    assert seed_methods(1) == ["semi2i"] and seed_methods(3) == ["semi2i_seed0", "semi2i_seed1", "semi2i_seed2"]
    assert base_method("semi2i_seed2") == "semi2i" and base_method("semi2i_seedx") == "semi2i_seedx"
    assert seed_of(7, "semi2i_seed2") == 2007 and seed_of(7, "semi2i") == 7
    seeds = seed_methods(4)
    tone = {"semi2i_seed0": 0.8, "semi2i_seed1": -0.3, "semi2i_seed2": 0.9, "semi2i_seed3": None}
    kept = kept_seeds(seeds, tone)
    assert kept == ["semi2i_seed0", "semi2i_seed2", "semi2i_seed3"]
    # seed 2 agrees best with the others (the typical draw); the inverted seed 1 never counts
    names = kept
    maps = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.5], [0.2, 0.5, 1.0]])
    scores = {n: s["mean"] for n, s in agreement_scores(names, maps).items()}
    assert medoid(kept, scores) == "semi2i_seed2"
    assert medoid(["semi2i_seed0", "semi2i_seed1"], {"semi2i_seed0": 0.4, "semi2i_seed1": 0.4}) == "semi2i_seed0"
    assert kept_seeds(["semi2i_seed0"], {"semi2i_seed0": -0.5}) == ["semi2i_seed0"]  # nothing better to keep
