"""Best-of-n: its analytic KL log n − (n − 1)/n against the exact KL of toy distributions (a brute-force
sum over the outcomes, and a Monte-Carlo estimate from best-of-n draws), then best-of-n of the tiny
pipeline's π_ref: n = 1 is plain sampling, ties go to the first sample, the reward-model score rises with
n, and the run folder has the shape of an RL run's.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minippo.errors import MinippoError
from minippo.lm.best_of_n import (
    BestOfNConfig,
    best_of_n,
    best_of_n_kl,
    evaluate_best_of_n,
    run_best_of_n,
)
from minippo.lm.corpus import document_text
from minippo.lm.gpt import sample

torch.set_num_threads(1)


def best_of_n_probs(p: np.ndarray, rewards: np.ndarray, n: int) -> np.ndarray:
    """π_bon of a categorical π_ref ``p`` whose outcomes have distinct ``rewards``: with the outcomes
    sorted by reward and F their cumulative probability, π_bon(y_i) = F(y_i)^n − F(y_{i−1})^n."""
    order = np.argsort(rewards)
    cdf = np.cumsum(p[order])
    below = np.concatenate([[0.0], cdf[:-1]])
    probs = np.empty_like(p)
    probs[order] = cdf ** n - below ** n
    return probs


def exact_kl(p: np.ndarray, rewards: np.ndarray, n: int) -> float:
    """KL(π_bon ‖ π_ref) = Σ_y π_bon(y) log(π_bon(y) / π_ref(y)), summed over every outcome."""
    q = best_of_n_probs(p, rewards, n)
    kept = q > 0
    return float(np.sum(q[kept] * np.log(q[kept] / p[kept])))


def test_best_of_n_kl_by_hand_and_bad_n():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(0.6931471806 - 0.5)
    assert best_of_n_kl(16) == pytest.approx(2.7725887222 - 0.9375)
    for bad in (0, -3, 2.0, True, "4"):
        with pytest.raises(MinippoError, match="n="):
            best_of_n_kl(bad)
    with pytest.raises(MinippoError, match="n=0"):
        BestOfNConfig(n=0)
    with pytest.raises(MinippoError, match="chunk_size"):
        BestOfNConfig(chunk_size=0)


def test_best_of_n_distribution_equals_an_enumeration_of_every_draw():
    """The test's own π_bon formula, checked by enumerating all K^n tuples of draws."""
    p, rewards, n = np.array([0.5, 0.2, 0.3]), np.array([2.0, -1.0, 0.5]), 3
    enumerated = np.zeros(3)
    for draw in itertools.product(range(3), repeat=n):
        enumerated[max(draw, key=lambda i: rewards[i])] += np.prod(p[list(draw)])
    assert np.allclose(best_of_n_probs(p, rewards, n), enumerated, atol=1e-12)
    # Two equally likely outcomes, n = 2: π_bon = (1/4, 3/4), KL by hand, below log 2 − 1/2.
    two = exact_kl(np.array([0.5, 0.5]), np.array([0.0, 1.0]), 2)
    assert two == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert two < best_of_n_kl(2) - 0.06


def test_the_formula_is_the_limit_of_a_finer_and_finer_support():
    n = 16
    sizes = (2, 10, 100, 1000, 10_000)  # uniform π_ref over K outcomes of distinct rewards
    gaps = [best_of_n_kl(n) - exact_kl(np.full(K, 1 / K), np.arange(K), n) for K in sizes]
    assert all(g > 0 for g in gaps)
    assert all(a > 10 * b for a, b in zip(gaps, gaps[1:]))  # about 1/K²
    assert gaps[0] > 1.0  # two outcomes: the true KL stays below log 2 while the formula says 1.84
    assert gaps[-1] < 1e-6


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=30), n=st.integers(1, 64),
       seed=st.integers(0, 2**16))
def test_the_formula_bounds_the_exact_kl_of_any_distribution(weights, n, seed):
    p = np.array(weights) / sum(weights)
    rewards = np.random.default_rng(seed).permutation(len(p)).astype(float)  # distinct
    kl = exact_kl(p, rewards, n)
    assert -1e-12 <= kl <= best_of_n_kl(n) + 1e-9
    if n == 1 or len(p) == 1:
        assert kl == pytest.approx(0.0, abs=1e-12)


def test_monte_carlo_kl_of_best_of_n_draws_matches_the_formula():
    K, n, m = 10_000, 8, 20_000
    generator = torch.Generator().manual_seed(0)
    p = 1 + torch.rand(K, generator=generator, dtype=torch.float64)
    p /= p.sum()
    rewards = torch.randperm(K, generator=generator).double()
    draws = torch.multinomial(p, m * n, replacement=True, generator=generator).view(m, n)  # [m, n] from π_ref
    kept = draws.gather(1, rewards[draws].argmax(1, keepdim=True)).squeeze(1)  # the best of each n
    q = torch.from_numpy(best_of_n_probs(p.numpy(), rewards.numpy(), n))
    log_ratio = (q[kept] / p[kept]).log()  # log π_bon(y) / π_ref(y) at best-of-n draws
    mean, standard_error = log_ratio.mean().item(), log_ratio.std().item() / math.sqrt(m)
    assert abs(mean - best_of_n_kl(n)) < 4 * standard_error, (mean, standard_error, best_of_n_kl(n))
    assert standard_error < 0.01  # a test that could tell log n − (n − 1)/n from, say, log n
    assert abs(exact_kl(p.numpy(), rewards.numpy(), n) - best_of_n_kl(n)) < 1e-4  # fine support


def test_n_1_is_plain_sampling_and_reproduces_evaluate(pipeline):
    stages = pipeline["stages"]
    prompts, T, eot = pipeline["prompts"][:40], stages.config.completion_len, pipeline["tokenizer"].eot_id
    tokens, scores = best_of_n(stages.reference, stages.reward_model, prompts, 1, T, eot,
                               torch.Generator().manual_seed(5))
    plain, _ = sample(stages.reference, prompts, T, torch.Generator().manual_seed(5))
    assert torch.equal(tokens, plain)

    result, reference = evaluate_best_of_n(stages, BestOfNConfig(n=1)), stages.evaluate(stages.reference)
    assert result["kl_ref"] == 0.0
    assert result["gold_reward"] == reference["gold_reward"]
    assert result["response_length"] == reference["response_length"]
    assert result["rm_score"] == pytest.approx(reference["rm_score"], rel=1e-5, abs=1e-6)


def test_the_highest_score_is_kept_and_ties_go_to_the_first_sample(pipeline):
    """Scored by the annotator's integer gold reward, many candidates tie: the first best one is kept."""
    stages, n = pipeline["stages"], 6
    prompts, T, eot = pipeline["prompts"][:30], stages.config.completion_len, pipeline["tokenizer"].eot_id
    tokenizer, annotator = pipeline["tokenizer"], pipeline["annotator"]

    def gold(tokens, ends):
        return torch.tensor([annotator.gold_reward(document_text(tokenizer, row)) for row in tokens])

    tokens, scores = best_of_n(stages.reference, gold, prompts, n, T, eot, torch.Generator().manual_seed(3))
    candidates, _ = sample(stages.reference, prompts.repeat_interleave(n, dim=0), T,
                           torch.Generator().manual_seed(3))
    candidate_gold = gold(candidates, None).view(len(prompts), n).tolist()
    ties = 0
    for i, golds in enumerate(candidate_gold):
        first_best = golds.index(max(golds))
        ties += golds.count(max(golds)) > 1
        assert torch.equal(tokens[i], candidates[i * n + first_best])
        assert scores[i] == max(golds)
    assert ties >= 5  # the rule was exercised


def test_reward_model_score_rises_with_n(pipeline):
    stages = pipeline["stages"]
    result = {n: evaluate_best_of_n(stages, BestOfNConfig(n=n), num_samples=256) for n in (1, 4, 8, 16)}
    rm = {n: r["rm_score"] for n, r in result.items()}
    assert rm[1] < rm[4] < rm[16], rm  # on this seed: 0.01, 1.01, 1.26
    assert rm[8] > rm[1] + 0.5, rm  # 1.21 vs 0.01
    assert result[16]["gold_reward"] > result[1]["gold_reward"] + 0.5, result  # 1.03 vs −0.3
    assert [result[n]["kl_ref"] for n in (1, 4, 16)] == [best_of_n_kl(n) for n in (1, 4, 16)]


def test_run_best_of_n_writes_a_summary_shaped_like_an_rl_run(pipeline, tmp_path):
    stages, lines = pipeline["stages"], []
    summary = run_best_of_n(stages, BestOfNConfig(n=2), tmp_path, log=lines.append)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert {"algo", "status", "pretrain", "reward_model", "before", "after", "total_time_s", "samples_before",
            "samples_after"} <= set(summary)
    assert summary["algo"] == "best-of-n" and summary["status"] == "finished"
    assert summary["before"] == stages.evaluate(stages.reference)
    assert summary["after"]["kl_ref"] == pytest.approx(math.log(2) - 0.5)
    assert set(summary["after"]) == set(summary["before"])
    assert len(summary["samples_after"]) == 6
    assert all(isinstance(doc, str) and isinstance(g, float) for doc, g in summary["samples_after"])
    assert summary["samples_before"] == stages.show(stages.reference)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["algorithm"]["n"] == 2 and config["rlhf"]["completion_len"] == stages.config.completion_len
    assert any("best of 2" in line for line in lines)
