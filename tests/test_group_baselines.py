"""RLOO and GRPO (issue 13): the group baselines against hand computations and brute-force sums, the
unbiasedness of the leave-one-out estimator by enumeration, GRPO's k3 KL estimator, the reuse of VPG's
and PPO's losses, the grouped text rollout, and short runs that raise the reward-model score."""

import ast
import itertools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lm_pipeline import CONFIG
from torch.distributions import Categorical

import minippo
from minippo import grpo, ppo, rloo, vpg
from minippo.errors import MinippoError
from minippo.lm.rlhf import GROUP_BASELINES, UPDATES, RLHFConfig, run_rlhf
from minippo.lm.text_rollout import AdaptiveKLController, GPTActorCritic, TextRollout
from minippo.rollout import GroupBaseline, group_advantages

torch.set_num_threads(1)
PACKAGE = Path(minippo.__file__).parent


def test_leave_one_out_and_group_mean_std_advantages_by_hand():
    # Two prompts, k = 4 samples each; rewards only at each response's last token, T = 3.
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    ends = torch.tensor([0, 2, 1, 2, 2, 0, 1, 2])
    rewards = torch.zeros(3, 8)
    rewards[ends, torch.arange(8)] = returns
    valid = torch.arange(3).unsqueeze(1) <= ends.unsqueeze(0)

    adv, ret = group_advantages(rewards, valid, 4, "leave_one_out")
    # Sample 0: 1 − (2 + 3 + 6) / 3 = −8/3; sample 3: 6 − (1 + 2 + 3) / 3 = 4; equal rewards: 0.
    expected = torch.tensor([1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2, 0, 0, 0, 0])
    torch.testing.assert_close(adv[valid], expected.expand(3, 8)[valid])
    torch.testing.assert_close(ret[valid], returns.expand(3, 8)[valid])
    assert (adv[~valid] == 0).all() and (ret[~valid] == 0).all()

    adv, _ = group_advantages(rewards, valid, 4, "group_mean_std")
    # Group 1: mean 3, unbiased std sqrt(((−2)² + 1 + 0 + 9) / 3) = sqrt(14/3).
    first = (torch.tensor([1.0, 2.0, 3.0, 6.0]) - 3) / math.sqrt(14 / 3)
    torch.testing.assert_close(adv[valid], torch.cat([first, torch.zeros(4)]).expand(3, 8)[valid], atol=1e-6,
                               rtol=1e-6)


def test_a_return_is_the_sum_of_the_rewards_of_the_response_only():
    rewards = torch.tensor([[1.0, 0.5], [2.0, 7.0]])  # sample 1 ends at t = 0: its 7.0 is padding
    valid = torch.tensor([[True, True], [True, False]])
    _, ret = group_advantages(rewards, valid, 2)
    assert ret[0, 0] == 3.0 and ret[0, 1] == 0.5


@pytest.mark.parametrize("k, N", [(1, 4), (3, 4), (0, 4)])
def test_group_size_must_be_at_least_two_and_divide_the_batch(k, N):
    with pytest.raises(MinippoError, match="group_size"):
        group_advantages(torch.zeros(2, N), torch.ones(2, N, dtype=torch.bool), k)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-10, 10), min_size=6, max_size=6), st.sampled_from([2, 3, 6]),
       st.lists(st.integers(-100, 100), min_size=6, max_size=6))  # integers: sums are exact in float64
def test_group_advantages_have_zero_mean_per_group_and_ignore_a_shift_of_the_group(values, k, shifts):
    rewards = torch.tensor([values], dtype=torch.float64)
    valid = torch.ones_like(rewards, dtype=torch.bool)
    # The same constant added to every reward of a group (a different one per group).
    shift = torch.tensor(shifts[:rewards.shape[1] // k], dtype=torch.float64).repeat_interleave(k)
    for baseline in ("leave_one_out", "group_mean_std"):
        adv, _ = group_advantages(rewards, valid, k, baseline)
        assert adv.view(-1, k).sum(1).abs().max() < 1e-6
        shifted, _ = group_advantages(rewards + shift, valid, k, baseline)
        torch.testing.assert_close(shifted, adv, atol=1e-6, rtol=1e-6)


def test_leave_one_out_policy_gradient_is_unbiased_by_enumeration():
    """E[ (1/k) Σ_i ∇log π(a_i) · (r(a_i) − mean_{j≠i} r(a_j)) ] over all k-tuples of arms equals the true
    gradient ∇ E_π[r] of a 3-armed softmax bandit; with the group mean (i included) it is biased."""
    logits = torch.tensor([0.3, -0.5, 0.1], dtype=torch.float64, requires_grad=True)
    reward = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
    probs = torch.softmax(logits, 0)
    (true_gradient,) = torch.autograd.grad((probs * reward).sum(), logits)

    k = 3
    expected = {name: torch.zeros(3, dtype=torch.float64) for name in ("leave_one_out", "mean")}
    for arms in itertools.product(range(3), repeat=k):
        arms = torch.tensor(arms)
        weight = probs.detach()[arms].prod()
        r = reward[arms].view(1, k)
        valid = torch.ones(1, k, dtype=torch.bool)
        loo, _ = group_advantages(r, valid, k, "leave_one_out")
        for name, adv in (("leave_one_out", loo[0]), ("mean", r[0] - r[0].mean())):
            loss = vpg.policy_gradient_loss(Categorical(logits=logits).log_prob(arms), adv)
            (g,) = torch.autograd.grad(loss, logits)
            expected[name] += weight * -g
    torch.testing.assert_close(expected["leave_one_out"], true_gradient, rtol=1e-10, atol=1e-12)
    # The group mean includes the sample itself: the gradient shrinks by (k − 1)/k.
    torch.testing.assert_close(expected["mean"], true_gradient * (k - 1) / k, rtol=1e-10, atol=1e-12)


def test_k3_is_zero_at_the_reference_and_averages_to_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    log_ref = torch.log_softmax(torch.randn(5, generator=g, dtype=torch.float64), 0)
    assert grpo.k3_kl(log_pi, log_pi).abs().max() == 0
    assert (grpo.k3_kl(log_pi, log_ref) >= 0).all()
    exact = (log_pi.exp() * (log_pi - log_ref)).sum()  # KL(π ‖ π_ref) by a brute-force sum
    torch.testing.assert_close((log_pi.exp() * grpo.k3_kl(log_pi, log_ref)).sum(), exact)


def test_rloo_and_grpo_import_the_losses_of_vpg_and_ppo_and_trpo_no_longer_imports_vpg():
    assert rloo.policy_gradient_loss is vpg.policy_gradient_loss
    assert grpo.clipped_surrogate_loss is ppo.clipped_surrogate_loss
    for name in ("rloo.py", "grpo.py"):
        source = (PACKAGE / name).read_text()
        assert "def policy_gradient_loss" not in source and "def clipped_surrogate_loss" not in source
    trpo_imports = [node.module for node in ast.walk(ast.parse((PACKAGE / "trpo.py").read_text()))
                    if isinstance(node, ast.ImportFrom)]
    assert "vpg" not in trpo_imports and "value_function" in trpo_imports
    assert UPDATES["rloo"][0] is rloo.RLOO and UPDATES["grpo"][0] is grpo.GRPO
    assert GROUP_BASELINES == {"rloo": "leave_one_out", "grpo": "group_mean_std"}


def test_grouped_text_rollout_repeats_each_prompt_k_times(pipeline):
    p = pipeline
    source = TextRollout(p["prompts"], p["reference"], p["reward_model"], p["tokenizer"], p["annotator"], 12,
                         CONFIG.completion_len, AdaptiveKLController(0.1), seed=0, group_size=4)
    batch = source.collect(GPTActorCritic(p["reference"]))
    P = batch.obs.shape[1] - CONFIG.completion_len
    prompts = batch.obs[:, :P].view(3, 4, P)
    assert (prompts == prompts[:, :1]).all()  # one prompt per group ...
    assert not (batch.obs[:, P:].view(3, 4, -1) == batch.obs[:4, P:].view(1, 4, -1)).all()  # ... k samples
    adv, _ = GroupBaseline(4)(batch)
    assert adv.shape == batch.rewards.shape and batch.ref_log_probs.shape == batch.log_probs.shape
    with pytest.raises(MinippoError, match="does not divide"):
        TextRollout(p["prompts"], p["reference"], p["reward_model"], p["tokenizer"], p["annotator"], 10,
                    CONFIG.completion_len, AdaptiveKLController(0.1), group_size=4)


def test_grpo_needs_a_reference_for_its_kl_term_and_beta_is_its_kl_coef():
    assert RLHFConfig(algo="grpo", beta=0.07).algorithm_config().kl_coef == 0.07
    config = RLHFConfig(algo="grpo", beta=0.07, hyperparameters={"kl_in_reward": True})
    assert config.algorithm_config().kl_coef == 0 and config.reward_beta() == 0.07
    assert RLHFConfig(algo="grpo", beta=0.07).reward_beta() == 0
    with pytest.raises(MinippoError, match="--beta"):
        RLHFConfig(algo="grpo", hyperparameters={"kl_coef": 0.1}).algorithm_config()
    with pytest.raises(MinippoError, match="divide"):
        RLHFConfig(algo="rloo", num_sequences=10, group_size=4)
    with pytest.raises(MinippoError, match="kl_target"):
        RLHFConfig(algo="grpo", kl_target=5.0)


@pytest.mark.parametrize("algo", ["rloo", "grpo"])
def test_short_rloo_and_grpo_runs_raise_the_reward_model_score(algo, pipeline, cache_dir, tmp_path):
    config = RLHFConfig(**{**CONFIG.__dict__, "algo": algo, "iterations": 8, "num_sequences": 32,
                           "group_size": 4})
    result = run_rlhf(config, out=tmp_path / algo, cache_dir=cache_dir, show_progress=False, log=None)
    before, after = result.summary["before"], result.summary["after"]
    assert after["rm_score"] > before["rm_score"] + 0.4, (before, after)  # seed 0: +0.86 RLOO, +0.71 GRPO
    assert after["gold_reward"] > before["gold_reward"] + 0.3, (before, after)  # +0.82, +0.81
    assert 0 < after["kl_ref"] < 20, after  # 3.6, 0.7 nats
