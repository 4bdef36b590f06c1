"""Tutorial 05 (RLHF in miniature), executed once on its small budget from a cold cache: it pretrains the
tiny GPT, trains the reward model, runs VPG, TRPO and PPO on text and the β sweep, and the numbers its
prose relies on hold."""

import math

import pytest
from notebooks import count_figures, execute_notebook

VARIABLES = ["PRETRAIN_STEPS", "ITERATIONS", "BETA", "BETAS", "pretrain_stats", "reward_stats",
             "fresh_agreement", "probe_gold", "probe_scores", "probe_disagreements", "return_identity_gap",
             "rewards_after_end_max", "trained_identity_gap", "before", "ppo_after", "sweep_final",
             "proxy_gain_beta0", "gold_gain_beta0", "algorithm_final", "initial_bt_loss", "body_grad",
             "head_grad", "gold_reward_gold_gain", "gold_after", "kl_inside", "kl_after"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute_notebook("05_rlhf_in_miniature.ipynb", tmp_path_factory.mktemp("nb05"), VARIABLES)


def test_runs_on_the_small_budget_from_a_cold_cache_and_draws_four_figures(run):
    nb, v = run
    # the reward model against gold, PPO's run, the β sweep, the three algorithms
    assert count_figures(nb) == 4
    assert v["PRETRAIN_STEPS"] <= 500 and v["ITERATIONS"] <= 20
    assert v["pretrain_stats"]["cached"] is False and v["reward_stats"]["cached"] is False


def test_pretraining_loss_falls_far_below_the_unigram_entropy(run):
    _, v = run
    stats = v["pretrain_stats"]
    assert stats["val_loss"] < 0.25 * stats["unigram_entropy"], stats


def test_the_reward_model_beats_chance_on_held_out_pairs_learned_from_noisy_labels(run):
    _, v = run
    stats = v["reward_stats"]
    assert stats["val_accuracy"] >= 0.65, stats
    assert stats["val_accuracy_unseen"] > 0.55 and stats["val_unseen_pairs"] >= 30, stats
    assert stats["label_accuracy"] < 0.97, stats  # the labels were noisy
    assert v["fresh_agreement"] > 0.6
    # the probes find disagreements, each a pair that gold and r_φ order differently
    assert v["probe_disagreements"]
    for a, b in v["probe_disagreements"]:
        assert v["probe_gold"][a] > v["probe_gold"][b] and v["probe_scores"][a] <= v["probe_scores"][b]


def test_a_fresh_reward_model_has_loss_log_2_and_no_gradient_into_its_body(run):
    _, v = run
    assert v["initial_bt_loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert v["body_grad"] == 0.0 and v["head_grad"] > 0.0


def test_the_return_is_the_score_minus_beta_times_the_kl_over_the_response(run):
    _, v = run
    assert v["return_identity_gap"] < 1e-4
    assert v["trained_identity_gap"] < 1e-4
    assert v["rewards_after_end_max"] == 0.0  # tokens after the end of text carry nothing


def test_ppo_raises_the_proxy_and_the_gold_reward_at_beta_0_1(run):
    _, v = run
    before, after = v["before"], v["ppo_after"]
    assert after["rm_score"] > before["rm_score"] + 0.5, (before, after)
    assert after["gold_reward"] > before["gold_reward"] + 0.2, (before, after)
    assert after["response_length"] < before["response_length"]  # solution 2


def test_with_beta_0_the_proxy_holds_while_the_gold_reward_falls_behind(run):
    _, v = run
    final = {float(k): e for k, e in v["sweep_final"].items()}
    largest = final[max(v["BETAS"])]
    assert v["proxy_gain_beta0"] > 0.5                          # the proxy rises ...
    assert v["gold_gain_beta0"] < 0.5 * v["proxy_gain_beta0"]   # ... far more than the gold reward
    assert final[0.0]["rm_score"] > largest["rm_score"] - 0.1   # as high a proxy as the largest β ...
    assert final[0.0]["gold_reward"] < largest["gold_reward"] - 0.2  # ... and a lower gold reward


def test_the_final_kl_grows_as_beta_shrinks(run):
    _, v = run
    final = {float(k): e["kl_ref"] for k, e in v["sweep_final"].items()}
    assert final[0.0] == max(final.values())
    assert final[0.0] > 1.3 * final[max(v["BETAS"])]


def test_vpg_trpo_and_ppo_all_improve_on_the_text_task(run):
    _, v = run
    before = v["before"]
    assert set(v["algorithm_final"]) == {"vpg", "trpo", "ppo"}
    for algo, e in v["algorithm_final"].items():
        assert e["rm_score"] > before["rm_score"] + 0.5, (algo, e)
        assert e["gold_reward"] > before["gold_reward"] + 0.2, (algo, e)
        assert 0 < e["kl_ref"] < 30, (algo, e)


def test_solutions_3_and_4(run):
    _, v = run
    # With the gold reward itself as the reward, β = 0 raises it, past the r_φ-trained β = 0 policy.
    assert v["gold_reward_gold_gain"] > 0.5
    assert v["gold_after"]["gold_reward"] > float(v["sweep_final"]["0.0"]["gold_reward"]) + 0.3
    # The distribution after the end of text moves too, though nothing trains it there.
    assert v["kl_after"] > 0.1 and v["kl_inside"] > 0.1
