"""Tutorial 03 (the natural gradient and TRPO), run once on its small budget: the numbers its prose relies
on."""

import pytest
from notebooks import count_figures, execute_notebook

from minippo.plot import load_runs

VARIABLES = ["max_kl", "hessian_error", "fvp_error", "cg_errors", "natural_gradient_error",
             "step_predicted_kl_damped", "step_predicted_kl", "step_actual_kl", "step_k", "step_kl",
             "backoff_k", "backoff_kl", "backoff_improvement", "backoff_tries", "trpo_max_kl",
             "line_search_steps", "ev_fitted", "ev_unfitted", "ev_unfitted_max", "ratios", "downhill",
             "restored", "first_iteration_ev", "TOTAL_STEPS", "SEEDS"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("nb03")
    nb, values = execute_notebook("03_natural_gradient_and_trpo.ipynb", tmp_path, VARIABLES)
    return nb, values, tmp_path / "work"


def test_the_notebook_runs_draws_its_figures_and_trains_on_its_budget(run):
    nb, v, workdir = run
    assert count_figures(nb) == 4  # the backed-off line search, learning curves, KL per iteration, 0 vs 80
    runs = load_runs([workdir / "runs"])
    assert len(runs) == 4 * len(v["SEEDS"])  # VPG, TRPO, PPO and TRPO without value fitting, per seed
    # The small budget reached the kernel: no run went past one batch beyond it (TRPO's batches: 2048).
    assert all(v["TOTAL_STEPS"] - 2048 < run.global_step <= v["TOTAL_STEPS"] for run in runs)


def test_the_hessian_of_the_kl_is_the_fisher_matrix_and_the_products_match(run):
    _, v, _ = run
    assert v["hessian_error"] < 1e-4
    assert v["fvp_error"] < 1e-4


def test_conjugate_gradient_matches_a_direct_solve(run):
    _, v, _ = run
    errors = v["cg_errors"]
    assert errors[0] > 0.1 and errors[-1] < 1e-8  # inexact after 1 iteration, exact after P = 6
    assert v["natural_gradient_error"] < 1e-3      # TRPO's own system, 10 iterations


def test_the_hand_step_fills_the_damped_trust_region_and_passes_at_once(run):
    _, v, _ = run
    max_kl = v["max_kl"]
    assert v["step_predicted_kl_damped"] == pytest.approx(max_kl, rel=1e-4)  # η's definition
    assert v["step_predicted_kl"] < max_kl                                    # the undamped model: below
    assert v["step_k"] == 0 and v["step_kl"] == v["step_actual_kl"] <= max_kl


def test_the_line_search_backs_off_into_the_trust_region(run):
    _, v, _ = run
    max_kl, tries = v["max_kl"], v["backoff_tries"]
    assert v["backoff_k"] >= 1 and len(tries) == v["backoff_k"] + 1
    assert tries[0]["kl"] > 10 * max_kl  # the full step is far outside: the quadratic model failed
    for t in tries[:-1]:  # each rejected try broke one of the two conditions
        assert t["improvement"] <= 0 or t["kl"] > max_kl
        assert not t["accepted"]
    assert tries[-1]["accepted"]
    assert 0 < v["backoff_kl"] <= max_kl and v["backoff_improvement"] > 0


def test_trpo_never_leaves_its_trust_region_in_training(run):
    _, v, _ = run
    assert v["trpo_max_kl"] <= 0.01
    assert all(k >= -1 for k in v["line_search_steps"])


def test_without_value_fitting_the_critic_explains_nothing(run):
    _, v, _ = run
    assert v["ev_unfitted_max"] < 0.05
    assert v["ev_fitted"] > v["ev_unfitted"] + 0.05
    # Solution 4: at iteration 1 no critic has been fitted yet, so the two runs of a seed agree.
    for fitted, unfitted in v["first_iteration_ev"].values():
        assert fitted == unfitted


def test_the_solutions(run):
    _, v, _ = run
    (eta_1, kl_1), (eta_4, kl_4) = v["ratios"]["0.01"], v["ratios"]["0.04"]
    assert eta_4 / eta_1 == pytest.approx(2.0, rel=1e-6)  # η ∝ √KL_max
    assert 3.0 < kl_4 / kl_1 < 5.0                         # the KL is about quadratic in the step
    assert v["downhill"] == [-1, 0.0, 0.0] and v["restored"] is True
