"""Tutorial 02 (GAE and truncation), run once on its small budget: the numbers its prose relies on."""

import pytest
from notebooks import count_figures, execute_notebook

VARIABLES = ["gae_definition_gap", "lambda1_gap", "lambdas", "bias", "variance", "mse", "best_lambda",
             "truncated_next_value", "terminated_next_value", "v_bootstrap", "v_no_bootstrap",
             "v_negative_bootstrap", "v_negative_no_bootstrap"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute_notebook("02_gae_and_truncation.ipynb", tmp_path_factory.mktemp("nb02"), VARIABLES)


def test_the_notebook_runs_and_draws_its_three_figures(run):
    nb, _ = run
    assert count_figures(nb) == 3  # bias/variance against λ, the time-limit toy, solution 1's episode


def test_gae_by_its_definition_equals_compute_gae(run):
    _, v = run
    assert v["gae_definition_gap"] < 1e-4  # the sum Σ (γλ)^l δ_{t+l} against the backward recursion
    assert v["lambda1_gap"] < 1e-3        # λ = 1: the λ-return is the reward-to-go G_t


def test_lambda_trades_bias_for_variance(run):
    _, v = run
    lambdas, bias, variance = v["lambdas"], v["bias"], v["variance"]
    assert lambdas[0] == 0.0 and lambdas[-1] == 1.0
    # The prose: bias² falls and variance rises from λ = 0 to λ = 1 ...
    assert all(abs(a) >= abs(b) for a, b in zip(bias, bias[1:]))
    assert all(a <= b for a, b in zip(variance, variance[1:]))
    assert abs(bias[0]) > 3 * abs(bias[-2]) and variance[-1] > 10 * variance[0]
    assert bias[-1] == pytest.approx(0.0, abs=1e-3)  # λ = 1 is G_0 itself
    # ... and the mean squared error is smallest strictly between the two ends.
    assert 0.0 < v["best_lambda"] < 1.0
    assert min(v["mse"]) < min(v["mse"][0], v["mse"][-1])


def test_truncation_bootstraps_and_termination_does_not(run):
    _, v = run
    assert v["truncated_next_value"] != 0.0
    assert v["terminated_next_value"] == 0.0


def test_a_time_limit_treated_as_a_termination_biases_the_value(run):
    _, v = run
    assert v["v_bootstrap"] == pytest.approx(100.0, rel=1e-3)   # 1 / (1 − γ)
    assert v["v_no_bootstrap"] < 50.0                            # far too low with reward +1 ...
    assert v["v_negative_bootstrap"] == pytest.approx(-100.0, rel=1e-3)
    assert v["v_negative_no_bootstrap"] > -50.0                  # ... and too high with reward −1
