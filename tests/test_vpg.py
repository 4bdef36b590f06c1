"""Tests of minippo/vpg.py: the policy-gradient loss against the analytic score-function gradient, the
parameter split, value fitting, one update through the VPG class, and learning on CartPole."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from minippo.errors import MinippoError
from minippo.policies import MLPActorCritic
from minippo.rollout import Batch, compute_gae
from minippo.train import train
from minippo.vpg import VPG, VPGConfig, fit_value_function, policy_gradient_loss, split_parameters

torch.set_num_threads(1)


def test_policy_gradient_loss_matches_score_function_gradient_on_a_bandit():
    # Softmax policy over 3 arms: ∇θ log π(a) = onehot(a) − π, so the ascent direction is
    # ∇θ mean(log π(a) · A) = mean(A · (onehot(a) − π)).
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, 3, (50,), generator=g)
    advantages = torch.randn(50, generator=g, dtype=torch.float64)

    loss = policy_gradient_loss(Categorical(logits=logits).log_prob(actions), advantages)
    (grad,) = torch.autograd.grad(loss, logits)

    probs = torch.softmax(logits.detach(), 0)
    onehot = nn.functional.one_hot(actions, 3).double()
    expected = (advantages[:, None] * (onehot - probs)).mean(0)
    torch.testing.assert_close(-grad, expected, rtol=1e-10, atol=1e-12)


class BanditPolicy(nn.Module):
    """A one-state, 3-armed softmax policy with a scalar baseline, speaking the policy interface."""

    def __init__(self):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.3, -0.2, 0.1]))
        self.value_head = nn.Parameter(torch.zeros(()))

    def evaluate(self, mb):
        shape = mb.actions.shape
        return Categorical(logits=self.logits.expand(*shape, 3)), self.value_head.expand(shape)

    def values(self, mb):
        return self.evaluate(mb)[1]


def _bandit_batch(actions, advantages, returns):
    T = len(actions)
    col = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(T, 1)
    return Batch(obs=torch.zeros(T, 1, 1), actions=torch.as_tensor(actions).reshape(T, 1),
                 log_probs=torch.zeros(T, 1), values=torch.zeros(T, 1), rewards=col(returns),
                 dones=torch.ones(T, 1), next_values=torch.zeros(T, 1), valid=torch.ones(T, 1, dtype=bool),
                 advantages=col(advantages), returns=col(returns))


def _expected_gae_gradient(gae_lambda: float, wrong_values: tuple[float, float, float],
                           gamma: float = 0.99) -> float:
    """E[∇θ log π(a₀) · Â₀] in a two-step MDP, by enumerating both actions (no sampling).

    Step 0: from s₀ the action a₀ ∈ {0, 1}, π(a₀ = 1) = σ(θ) at θ = 0, leads to s₁ᵃ (a₀ = 1) or s₁ᵇ.
    Step 1: one possible action; reward 1 in s₁ᵃ, 0 in s₁ᵇ; then the episode terminates. So J(θ) =
    γ σ(θ) and the true gradient is γ σ'(0) = γ/4. The critic V(s₀), V(s₁ᵃ), V(s₁ᵇ) is ``wrong_values``.
    """
    theta = torch.zeros((), requires_grad=True)
    log_pi = torch.stack([torch.log(1 - torch.sigmoid(theta)), torch.log(torch.sigmoid(theta))])  # a = 0, 1
    v0, v1a, v1b = wrong_values
    # The two trajectories as two columns [T=2, N=2]: column 0 took a₀ = 1 (→ s₁ᵃ), column 1 a₀ = 0.
    rewards = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    values = torch.tensor([[v0, v0], [v1a, v1b]])
    next_values = torch.tensor([[v1a, v1b], [0.0, 0.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    advantages, _ = compute_gae(rewards, values, next_values, dones, gamma, gae_lambda)
    prob = log_pi.exp().detach()
    # Only step 0 depends on θ (step 1 has a single action, ∇ log π = 0 there).
    expected = prob[1] * log_pi[1] * advantages[0, 0] + prob[0] * log_pi[0] * advantages[0, 1]
    return torch.autograd.grad(expected, theta)[0].item()


def test_gae_lambda_below_one_biases_the_gradient_when_the_critic_is_wrong():
    """The claim in vpg.py's docstring: V is an unbiasing baseline only at λ = 1."""
    true_gradient = 0.99 * 0.25  # d/dθ γ σ(θ) at θ = 0
    wrong = (0.0, 0.0, 1.0)  # V says the rewarded state s₁ᵃ is worth 0 and s₁ᵇ is worth 1
    assert _expected_gae_gradient(1.0, wrong) == pytest.approx(true_gradient)  # +0.2475: unbiased
    assert _expected_gae_gradient(0.97, wrong) == pytest.approx(0.2327, abs=1e-4)
    assert _expected_gae_gradient(0.5, wrong) == pytest.approx(0.0, abs=1e-7)
    assert _expected_gae_gradient(0.0, wrong) == pytest.approx(-true_gradient)  # the wrong sign
    # At λ = 1 any critic gives the true gradient; with the true values (V(s₁ᵃ) = 1, V(s₁ᵇ) = 0) every λ
    # does.
    for values in [(3.0, -2.0, 5.0), (0.5, 0.1, 0.9)]:
        assert _expected_gae_gradient(1.0, values) == pytest.approx(true_gradient)
    for gae_lambda in (0.0, 0.5, 0.97):
        assert _expected_gae_gradient(gae_lambda, (0.99 * 0.5, 1.0, 0.0)) == pytest.approx(true_gradient)


def test_update_takes_one_adam_step_along_the_policy_gradient():
    policy = BanditPolicy()
    actions, advantages = [0, 1, 2, 2, 1, 0, 2], [1.0, -2.0, 0.5, 1.5, -1.0, -0.5, 2.0]
    batch = _bandit_batch(actions, advantages, returns=[3.0] * 7)
    before = policy.logits.detach().clone()
    expected_gradient = (torch.tensor(advantages)[:, None]
                         * (nn.functional.one_hot(torch.tensor(actions), 3) - torch.softmax(before, 0))
                         ).mean(0)

    lr = 1e-3
    config = VPGConfig(policy_lr=lr, value_lr=0.1, value_iterations=50, normalize_advantages=False)
    stats = VPG(policy, config).update(batch, progress=0.0)

    # Adam's first step is lr · m/√v = lr · sign(gradient), in the ascent direction of the objective.
    torch.testing.assert_close(policy.logits.detach() - before, lr * expected_gradient.sign(),
                               rtol=1e-3, atol=1e-7)
    assert stats["kl"] > 0
    assert stats["policy_lr"] == lr
    # The baseline was fitted by its own optimiser towards the returns (3.0).
    assert abs(policy.value_head.item() - 3.0) < abs(0.0 - 3.0)


def test_split_parameters_by_name():
    policy = MLPActorCritic(4, gym.spaces.Box(-1, 1, shape=(2,), dtype=np.float32), hidden_sizes=(8,))
    policy_params, value_params = split_parameters(policy)
    assert {id(p) for p in policy_params} == {id(p) for p in [*policy.actor.parameters(), policy.log_std]}
    assert {id(p) for p in value_params} == {id(p) for p in policy.critic.parameters()}
    bandit = BanditPolicy()
    assert split_parameters(bandit) == ([bandit.logits], [bandit.value_head])


@pytest.mark.parametrize("minibatch_size", [None, 3])
def test_fit_value_function_regresses_returns_and_leaves_policy_alone(minibatch_size):
    policy = BanditPolicy()
    batch = _bandit_batch([0, 1, 2, 0, 1, 2, 0], [0.0] * 7, returns=[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 2.0])
    _, value_params = split_parameters(policy)
    optimizer = torch.optim.Adam(value_params, lr=0.05)
    logits_before = policy.logits.detach().clone()
    fit_value_function(policy, optimizer, batch, iterations=200, minibatch_size=minibatch_size,
                       generator=torch.Generator().manual_seed(0))
    # The least-squares constant is the mean return, 2.0.
    assert policy.value_head.item() == pytest.approx(2.0, abs=0.1)
    assert torch.equal(policy.logits.detach(), logits_before)


@pytest.mark.parametrize("bad", [dict(policy_lr=0.0), dict(value_lr=2.0), dict(value_iterations=-1),
                                 dict(value_minibatch_size=0)])
def test_config_rejects_out_of_range_values(bad):
    name = next(iter(bad))
    with pytest.raises(MinippoError, match=name):
        VPGConfig(**bad)


def test_vpg_learns_cartpole(tmp_path):
    result = train("CartPole-v1", "vpg", total_steps=20_000, seed=0, device="cpu", out=tmp_path,
                   show_progress=False)
    assert np.mean(result.episode_returns[:10]) < 40  # the initial, near-uniform policy
    assert result.final_return > 100, result.final_return
