"""Tests of minippo/stats.py (Agarwal et al. 2021's statistics through rliable) against cases whose answer
is known by hand: the IQM of a known array, P(X > Y) of dominated and identical data, the performance
profile as a count of runs above τ, the AUC of straight-line curves, and the bootstrap's intervals
(contain the estimate, shrink with more runs, reproducible from the seed)."""

import numpy as np
import pytest

from minippo.errors import MinippoError
from minippo.plot import Run
from minippo.stats import (
    auc_scores,
    compute_stats,
    final_return_scores,
    format_stats,
    improvement_probabilities,
    iqm,
    iqm_intervals,
    performance_profiles,
    plot_performance_profile,
    score_distribution,
    stats_notes,
)

pytest.importorskip("rliable")

REPS = 200  # enough for these checks, and fast


def make_run(algo, steps, returns, seed=0, env_id="CartPole-v1"):
    return Run(path=f"{algo}-s{seed}", env_id=env_id, algo=algo, seed=seed,
               total_steps=steps[-1] if steps else 0, steps=np.array(steps),
               returns=np.array(returns, dtype=float), final_return=returns[-1] if returns else float("nan"))


def test_iqm_of_known_arrays():
    # 1..8: drop the lowest 2 and the highest 2 (25% each), mean of 3, 4, 5, 6 = 4.5.
    assert iqm(np.arange(1, 9).reshape(8, 1)) == pytest.approx(4.5)
    # An outlier in the top quarter does not move it; it would move the mean by 999/8.
    assert iqm(np.array([[1], [2], [3], [4], [5], [6], [7], [1007]])) == pytest.approx(4.5)
    # 3 runs: ⌊0.75⌋ = 0 cut at each end, so the IQM is the mean.
    assert iqm(np.array([[0.0], [1.0], [5.0]])) == pytest.approx(2.0)
    # Over a [runs, tasks] matrix the 25% are cut from all R·M scores pooled: 1..8 as [4, 2].
    assert iqm(np.arange(1, 9).reshape(4, 2)) == pytest.approx(4.5)


def test_iqm_interval_contains_the_estimate_shrinks_with_runs_and_is_reproducible():
    rng = np.random.default_rng(0)
    few, many = rng.normal(100, 20, size=(5, 1)), rng.normal(100, 20, size=(100, 1))
    result = iqm_intervals({"few": few, "many": many}, reps=REPS, seed=1)
    for name, scores in (("few", few), ("many", many)):
        point, low, high = result[name]
        assert point == pytest.approx(iqm(scores))
        assert low <= point <= high
    width = {name: high - low for name, (_, low, high) in result.items()}
    # Narrower with 20 times the runs (not the √20 ≈ 4.5 times of 1/√n: the 5-run bootstrap is too narrow,
    # the under-coverage that stats_notes warns about).
    assert width["many"] < width["few"]
    # Same seed, same interval; the global NumPy stream is left as it was.
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    assert iqm_intervals({"few": few, "many": many}, reps=REPS, seed=1) == result
    assert np.random.rand() == expected_next
    assert iqm_intervals({"few": few}, reps=REPS, seed=2)["few"] != result["few"]


def test_constant_scores_have_a_zero_width_interval():
    assert iqm_intervals({"a": np.full((4, 1), 7.0)}, reps=REPS) == {"a": (7.0, 7.0, 7.0)}


def test_probability_of_improvement_is_1_for_dominated_data_and_half_for_identical_data():
    low, high, same = np.array([[1.0], [2.0], [3.0]]), np.array([[10.0], [20.0], [30.0]]), np.array(
        [[1.0], [2.0], [3.0]])
    poi = improvement_probabilities({"high": high, "low": low}, reps=REPS)
    # Every run of "high" beats every run of "low", in the data and in every resample.
    assert poi[("high", "low")] == pytest.approx((1.0, 1.0, 1.0))
    assert poi[("low", "high")] == pytest.approx((0.0, 0.0, 0.0))
    p, lo, hi = improvement_probabilities({"a": low, "b": same}, reps=REPS)[("a", "b")]
    assert p == 0.5 and lo < 0.5 < hi
    # By hand: X = {1, 3}, Y = {2}: X beats Y in 1 of 2 pairs; X = {2, 3}, Y = {2}: 1 win + 1 tie = 1.5/2.
    assert improvement_probabilities({"x": np.array([[1.0], [3.0]]), "y": np.array([[2.0]])},
                                     reps=REPS)[("x", "y")][0] == pytest.approx(0.5)
    assert improvement_probabilities({"x": np.array([[2.0], [3.0]]), "y": np.array([[2.0]])},
                                     reps=REPS)[("x", "y")][0] == pytest.approx(0.75)


def test_reverse_pair_is_one_minus_with_the_mirrored_interval():
    rng = np.random.default_rng(3)
    poi = improvement_probabilities({"a": rng.normal(size=(5, 1)), "b": rng.normal(0.5, 1, size=(5, 1))},
                                    reps=REPS)
    p, low, high = poi[("a", "b")]
    assert poi[("b", "a")] == pytest.approx((1 - p, 1 - high, 1 - low))
    assert improvement_probabilities({"a": np.ones((2, 1))}) == {}


def test_performance_profile_is_the_fraction_of_runs_above_tau():
    scores = np.array([[1.0], [2.0], [3.0], [4.0]])
    taus = np.array([0.0, 1.0, 2.5, 4.0, 5.0])
    # above 0: all 4; above 1: 2, 3, 4 (strictly); above 2.5: 3, 4; above 4 or 5: none.
    expected = [1.0, 0.75, 0.5, 0.0, 0.0]
    np.testing.assert_allclose(score_distribution(scores, taus), expected)
    profile, low, high = performance_profiles({"a": scores}, taus, reps=REPS)["a"]
    np.testing.assert_allclose(profile, expected)
    assert np.all(low <= profile) and np.all(profile <= high)
    assert low[0] == high[0] == 1.0  # every resample of these runs is above 0
    fig = plot_performance_profile({"a": scores, "b": scores + 1}, reps=REPS)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["a (4 runs)", "b (4 runs)"]


def test_auc_is_the_mean_return_over_the_common_range():
    # Common range [100, 300] (latest first step, earliest last step). "a" rises linearly from 0 to 200
    # there: mean 100 on a symmetric grid. "b" is flat at 50 in it (its 400-step point is past the range).
    runs = [make_run("a", [100, 300], [0, 200]), make_run("b", [0, 100, 300, 400], [0, 50, 50, 500])]
    scores = auc_scores(runs)
    assert scores["a"] == pytest.approx(np.array([[100.0]]))
    assert scores["b"] == pytest.approx(np.array([[50.0]]))
    assert final_return_scores(runs)["b"] == pytest.approx(np.array([[500.0]]))
    with pytest.raises(MinippoError, match="share no range"):
        auc_scores([make_run("a", [100, 200], [1, 2]), make_run("b", [300, 400], [1, 2])])
    with pytest.raises(MinippoError, match="2 envs"):
        final_return_scores([make_run("a", [1], [1]), make_run("a", [1], [1], env_id="Pendulum-v1")])


def test_compute_stats_leaves_out_runs_without_an_episode_and_formats_the_tables():
    runs = [make_run("ppo", [100, 200], [10, 20 + s], seed=s) for s in range(3)]
    runs += [make_run("vpg", [100, 200], [1, 2 + s], seed=s) for s in range(3)]
    runs += [make_run("vpg", [], [], seed=3)]  # no episode finished
    result = compute_stats(runs, reps=REPS)
    assert result["runs"] == {"ppo": 3, "vpg": 3}
    assert [run.seed for run in result["left_out"]] == [3]
    assert result["iqm"]["final_return"]["ppo"][0] == pytest.approx(21.0)  # 3 runs: the mean of 20, 21, 22
    assert result["iqm"]["auc"]["vpg"][0] == pytest.approx(np.mean([1.5, 2.0, 2.5]))
    assert result["poi"]["final_return"][("ppo", "vpg")] == pytest.approx((1.0, 1.0, 1.0))
    table = format_stats(result)
    assert "| ppo | 3 | 21.0 [" in table
    assert "| ppo | — | 1.00 [1.00, 1.00] |" in table and "| vpg | 0.00 [0.00, 0.00] | — |" in table
    assert "Left out (no episode finished, so no score): vpg-s3." in table
    assert "With 3 runs per algorithm these intervals are wide" in stats_notes(result)
    with pytest.raises(MinippoError, match="No run finished an episode"):
        compute_stats(runs[-1:])
