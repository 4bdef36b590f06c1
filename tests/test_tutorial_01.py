"""Tutorial 01, "The policy gradient from scratch": the notebook runs top to bottom on its small budget
and its measurements say what its prose says. Each assertion below is a claim of the notebook's text."""

import pytest
from gifs import gif_frames
from notebooks import count_figures, execute_notebook

from minippo.video import frame_duration_ms

VARIABLES = ["bandit_cosine", "eglp_ratio", "baseline_ratio", "variance", "distance", "noise", "step_kls",
             "step_returns", "return_old", "kl_ratio_10x", "merged_variance_ratio", "watch"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute_notebook("01_policy_gradient.ipynb", tmp_path_factory.mktemp("tutorial_01"), VARIABLES)


def test_draws_its_six_figures(run):
    nb, _ = run
    # E[∇log π] = 0, the learning curve, variance bars, bias against variance, KL and return per step.
    assert count_figures(nb) == 6


def test_log_derivative_trick_matches_the_exact_gradient(run):
    _, v = run
    assert v["bandit_cosine"] > 0.999  # 100k samples of a 5-armed bandit


def test_mean_score_is_zero_up_to_sampling_noise(run):
    _, v = run
    # ‖mean of ∇log π‖ over n samples / √(E‖∇log π‖² / n): about 1 for zero-mean noise, ≫ 1 otherwise.
    assert v["eglp_ratio"] < 3


def test_a_state_baseline_cancels_and_an_action_baseline_does_not(run):
    _, v = run
    assert v["baseline_ratio"]["b(s) = 100 V(s) + 50"] < 1e-4      # float round-off
    assert v["baseline_ratio"]["b(s, a) = 50 + 100 a"] > 0.1       # a bias


def test_each_step_of_the_derivation_lowers_the_variance(run):
    _, v = run
    var = v["variance"]
    assert var["R(τ)"] > 2 * var["G_t"]            # reward-to-go
    assert var["G_t"] > 2 * var["G_t − V(s_t)"]    # a learned baseline
    assert var["G_t − V(s_t)"] > var["GAE λ=0.97"]  # GAE with λ < 1


def test_unbiased_estimators_are_within_noise_and_gae_lambda_zero_is_biased(run):
    _, v = run
    distance, noise = v["distance"], v["noise"]
    for name in ("R(τ)", "G_t"):
        assert distance[name] < 3 * noise[name], name
    assert distance["GAE λ=0"] > 3 * noise["GAE λ=0"]
    assert distance["GAE λ=0"] > distance["GAE λ=0.97"]  # the bias is largest at the smallest λ


def test_kl_is_quadratic_for_small_steps_and_long_steps_collapse_the_return(run):
    _, v = run
    kls = v["step_kls"]
    assert all(a < b for a, b in zip(kls, kls[1:]))
    assert 50 < v["kl_ratio_10x"] < 200            # 10× the step, ~100× the KL
    assert v["step_returns"][-1] < 0.5 * v["return_old"]


def test_twice_the_episodes_halve_the_variance(run):
    _, v = run
    assert 0.25 < v["merged_variance_ratio"] < 0.85


def test_watch_it_shows_every_step_of_each_policys_episode(run):
    nb, v = run
    watch = v["watch"]
    assert list(watch) == ["untrained", "frozen", "trained"]
    for name, w in watch.items():
        frames = gif_frames(w["path"])
        assert w["frames"] == w["return"] + 1, name  # CartPole pays 1 per step: L steps, L + 1 frames
        assert sum(duration for _, duration in frames) == w["frames"] * frame_duration_ms(50), name
        assert {frame.size for frame, _ in frames} == {(300, 200)}, name  # half of 600 × 400
        assert len({frame.tobytes() for frame, _ in frames}) > 1, name  # the cart moves
    assert watch["trained"]["return"] > watch["untrained"]["return"]
    html = [o["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
            if "text/html" in o.get("data", {})]
    assert sum(text.count("data:image/gif;base64,") for text in html) == 3  # shown side by side
