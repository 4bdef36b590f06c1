"""Tutorial 07 (beyond PPO: best-of-n, RLOO, GRPO, DPO), executed once on its small budget from a cold cache:
it pretrains the tiny GPT and fits the reward model, measures best-of-n, runs RLOO, GRPO, PPO and DPO
briefly, and reads the shipped frontier; the numbers its prose relies on hold, and its frontier table and
sentences are those minippo.lm.frontier computes from figures/rlhf_frontier.json."""

import json
import math
from pathlib import Path

import pytest
from notebooks import count_figures, execute_notebook

from minippo.lm.best_of_n import best_of_n_kl
from minippo.lm.frontier import BUDGETS, DEFAULT_METHODS, best_within, findings, knob_means

FRONTIER = Path(__file__).resolve().parent.parent / "figures" / "rlhf_frontier.json"

VARIABLES = ["PRETRAIN_STEPS", "ITERATIONS", "BEST_OF", "KL_N", "pretrain_stats", "reward_stats", "before",
             "bon", "rm_rises", "toy_fine", "toy_two", "model_kl", "loo_hand_gap", "loo_centred_gap",
             "rloo_advantages", "same_functions", "grpo_hand_gap", "grpo_rloo_gap", "grpo_hand_advantages",
             "k3_check", "k3_expectation_gap", "rl_after", "dpo_hand_gap", "held_out", "dpo_before",
             "dpo_after", "methods", "frontier_table", "leaders", "leader_gaps", "headline", "bon_kl_gap",
             "gold_before_spread", "frontier_findings", "no_spread_advantages", "tied_scores",
             "dpo_initial_loss", "dpo_initial_accuracy", "bon16_gold", "bon16_rm", "std_amplify"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute_notebook("07_beyond_ppo.ipynb", tmp_path_factory.mktemp("nb07"), VARIABLES)


def test_runs_on_the_small_budget_from_a_cold_cache_and_draws_five_figures(run):
    nb, v = run
    # best-of-n against n, its KL against n, the RL curves, where the runs landed, the frontier
    assert count_figures(nb) == 5
    assert v["PRETRAIN_STEPS"] <= 500 and v["ITERATIONS"] <= 20
    assert v["pretrain_stats"]["cached"] is False and v["reward_stats"]["cached"] is False


def test_best_of_n_raises_the_reward_model_score_with_n_at_the_analytic_kl(run):
    _, v = run
    bon = {int(n): e for n, e in v["bon"].items()}
    assert bon[1]["gold_reward"] == v["before"]["gold_reward"]  # n = 1 is π_ref's own sample
    assert v["rm_rises"] and bon[1]["rm_score"] < bon[4]["rm_score"] < bon[16]["rm_score"], bon
    assert bon[16]["rm_score"] > bon[1]["rm_score"] + 0.5, bon
    assert bon[16]["gold_reward"] > bon[1]["gold_reward"] + 0.3, bon
    assert bon[16]["response_length"] < bon[1]["response_length"], bon  # r_φ's favourites are shorter
    assert all(e["kl_ref"] == best_of_n_kl(n) for n, e in bon.items())


def test_the_kl_formula_is_exact_on_a_fine_support_and_an_upper_bound_elsewhere(run):
    _, v = run
    fine = v["toy_fine"]
    assert fine["exact"] == pytest.approx(fine["formula"], abs=1e-3)
    assert abs(fine["monte_carlo"] - fine["formula"]) < 4 * fine["standard_error"], fine
    assert fine["standard_error"] < 0.02
    for n, kl in v["toy_two"].items():  # two equally likely outcomes: below log 2 whatever n
        assert kl <= math.log(2) + 1e-12 and kl < best_of_n_kl(int(n))
    estimate = {int(n): kl for n, kl in v["model_kl"].items()}
    assert sorted(estimate) == list(v["KL_N"])
    assert all(0 < kl <= best_of_n_kl(n) + 1e-9 for n, kl in estimate.items())
    assert estimate[64] < best_of_n_kl(64) - 0.01  # π_ref's likely completions make the bound loose at n = 64


def test_the_leave_one_out_and_group_standardised_advantages_worked_by_hand(run):
    _, v = run
    assert v["loo_hand_gap"] < 1e-6 and v["loo_centred_gap"] < 1e-6
    assert v["rloo_advantages"] == pytest.approx([4 / 3, -4 / 3, 0, 0, -4 / 3, -4 / 3, -4 / 3, 4], abs=1e-5)
    s = math.sqrt(2 / 3)  # the unbiased std of (3, 1, 2, 2); (0, 0, 0, 4) has std 2
    assert v["grpo_hand_advantages"] == pytest.approx([1 / s, -1 / s, 0, 0, -0.5, -0.5, -0.5, 1.5], abs=1e-5)
    assert v["grpo_hand_gap"] < 1e-5 and v["grpo_rloo_gap"] < 1e-5
    assert v["same_functions"] == {"rloo_vpg": True, "grpo_ppo": True}


def test_k3_is_non_negative_and_averages_to_the_exact_kl(run):
    _, v = run
    assert v["k3_expectation_gap"] < 1e-12
    for name, c in v["k3_check"].items():
        assert c["k3_min"] >= 0 and c["k1_negative"] > 0, (name, c)
        assert abs(c["k3_mean"] - c["kl"]) < 4 * c["k3_se"], (name, c)
        assert abs(c["k1_mean"] - c["kl"]) < 4 * c["k1_se"], (name, c)
    near = v["k3_check"]["near"]
    assert near["k3_std"] < 0.5 * near["k1_std"], near


def test_short_rloo_grpo_and_ppo_runs_raise_the_reward_model_score(run):
    _, v = run
    assert set(v["rl_after"]) == {"rloo", "grpo", "ppo"}
    for algo, e in v["rl_after"].items():
        assert e["rm_score"] > v["before"]["rm_score"] + 0.5, (algo, e)
        assert 0 < e["kl_ref"] < 30, (algo, e)


def test_dpo_learns_the_held_out_preferences_and_raises_the_reward_model_score(run):
    _, v = run
    assert v["dpo_hand_gap"] < 1e-6
    assert v["held_out"]["accuracy"] > 0.55 and v["held_out"]["gold_accuracy"] > 0.55, v["held_out"]
    assert v["dpo_after"]["rm_score"] > v["dpo_before"]["rm_score"] + 0.1
    assert v["dpo_after"]["kl_ref"] > 0


def test_the_frontier_table_and_sentences_are_the_library_s_on_the_shipped_file(run):
    _, v = run
    points = json.loads(FRONTIER.read_text())["points"]
    assert set(v["methods"]) == {p["method"] for p in points} >= set(DEFAULT_METHODS)
    # structural facts of any honest file: best-of-n's KL is the formula, one π_ref per seed
    for p in points:
        if p["method"] == "best-of-n":
            assert p["kl"] == pytest.approx(best_of_n_kl(int(p["value"])), abs=1e-12)
    assert v["bon_kl_gap"] < 1e-12 and v["gold_before_spread"] == 0.0
    for method in v["methods"]:
        for budget in BUDGETS:
            assert v["frontier_table"][method][str(budget)] == best_within(method, points, budget)
        assert v["frontier_table"][method][str(max(BUDGETS))] is not None  # a point within 10 nats
    for budget in BUDGETS:
        gains = {m: best_within(m, points, budget) for m in v["methods"]}
        ranked = sorted((r["gold"], m) for m, r in gains.items() if r is not None)
        leader, second = ranked[-1][1], ranked[-2][1]
        assert v["leaders"][str(budget)] == leader
        gap = v["leader_gaps"][str(budget)]
        assert gap["second"] == second and gap["gap"] == pytest.approx(ranked[-1][0] - ranked[-2][0])
        spread = max(gains[leader]["gold_std"], gains[second]["gold_std"])
        assert gap["established"] == (gap["gap"] >= 2 * spread)
    if len(set(v["leaders"].values())) == 1:
        assert v["headline"].startswith("One method leads within every budget")
    assert v["frontier_findings"] == findings(points, v["methods"])
    assert all(knob_means(m, points) for m in v["methods"])


def test_solutions(run):
    _, v = run
    assert v["no_spread_advantages"] == 0.0 and v["tied_scores"] <= 0.01                 # 1
    assert v["dpo_initial_loss"] == pytest.approx(math.log(2), abs=1e-6)                # 2
    assert v["dpo_initial_accuracy"] == 0.0
    assert v["bon16_gold"] >= v["bon16_rm"]                                              # 3
    grpo_tiny, grpo_big = v["std_amplify"]["group_mean_std"]                             # 4
    assert grpo_tiny == pytest.approx(grpo_big, abs=1e-3)
    assert max(abs(a) for a in grpo_tiny) == pytest.approx(math.sqrt(3) / 2, abs=1e-3)
    rloo_tiny, rloo_big = v["std_amplify"]["leave_one_out"]
    assert rloo_big == pytest.approx([1000 * a for a in rloo_tiny], rel=1e-3)
