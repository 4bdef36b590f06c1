"""PPO: the clipped surrogate's gradient, the other objectives (unclipped, adaptive KL penalty), and
learning on CartPole-v1 and Pendulum-v1 on fixed seeds."""

import csv

import numpy as np
import pytest
import torch

from minippo import train
from minippo.errors import MinippoError
from minippo.ppo import PPO, PPOConfig, clipped_surrogate_loss
from minippo.rollout import Minibatch, explained_variance, normalize_advantages


def _surrogate_grad(ratio: float, advantage: float, clip_range: float = 0.2) -> float:
    """d(−L^CLIP)/d log π for one sample whose probability ratio is ``ratio``."""
    log_prob = torch.tensor([np.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss, r = clipped_surrogate_loss(log_prob, torch.zeros(1, dtype=torch.float64),
                                     torch.tensor([advantage], dtype=torch.float64), clip_range)
    assert r.item() == pytest.approx(ratio)
    loss.backward()
    return log_prob.grad.item()


@pytest.mark.parametrize("ratio,advantage", [(1.3, 1.0), (1.21, 2.0), (0.7, -1.0), (0.79, -0.5)])
def test_no_gradient_once_the_ratio_is_clipped_in_the_advantages_direction(ratio, advantage):
    assert _surrogate_grad(ratio, advantage) == 0.0


@pytest.mark.parametrize("ratio,advantage", [(1.1, 1.0), (0.9, -1.0), (0.7, 1.0), (1.3, -1.0), (1.0, 2.0)])
def test_gradient_inside_the_range_or_against_the_advantage(ratio, advantage):
    # Inside [1−ε, 1+ε], or outside but on the side that makes things worse: the unclipped term is
    # the min, and d(−r·Â)/d log π = −r·Â.
    assert _surrogate_grad(ratio, advantage) == pytest.approx(-ratio * advantage)


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), returns) == pytest.approx(0.0)


def _rows(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def test_ppo_learns_cartpole(tmp_path):
    torch.set_num_threads(1)
    result = train("CartPole-v1", "ppo", total_steps=50_000, seed=0, out=tmp_path, show_progress=False)
    assert result.status == "finished"
    assert result.final_return >= 400, result.final_return
    rows = _rows(tmp_path)
    assert len(rows) == result.iterations
    expected_columns = {"iteration", "global_step", "time_s", "episodic_return_mean", "episodic_length_mean",
                        "steps_per_s", "policy_loss", "value_loss", "entropy", "approx_kl",
                        "clip_fraction", "explained_variance"}
    assert expected_columns <= set(rows[0])
    assert int(rows[-1]["global_step"]) == result.global_step >= 50_000


def test_ppo_improves_on_pendulum(tmp_path):
    torch.set_num_threads(1)
    result = train("Pendulum-v1", "ppo", total_steps=49_152, seed=0, out=tmp_path, show_progress=False)
    first = np.mean(result.episode_returns[:10])
    assert first < -900  # a random policy
    assert result.final_return > first + 300, (first, result.final_return)


# --- PPOConfig.objective: the clip, the adaptive KL penalty (PPO §4) and the plain unclipped surrogate ---

class _TwoActionPolicy(torch.nn.Module):
    """The smallest policy with ``evaluate``: one categorical over 2 actions, the same in every state, and
    a value that has no parameters (so only the policy term of the loss has a gradient)."""

    def __init__(self, logits=(0.3, -0.2)):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def evaluate(self, mb):
        dist = torch.distributions.Categorical(logits=self.logits.expand(*mb.actions.shape, 2))
        return dist, torch.zeros(mb.actions.shape, dtype=torch.float64)


def _minibatch(policy, ratios, advantages, mask=None):
    """A Minibatch of action 0 in every position, whose old log-probabilities make ρ = ``ratios``."""
    n = len(ratios)
    actions = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        log_prob = torch.log_softmax(policy.logits, 0)[0]
    old_log_probs = log_prob - torch.log(torch.tensor(ratios, dtype=torch.float64))
    zeros = torch.zeros(n, dtype=torch.float64)
    return Minibatch(obs=zeros, actions=actions, log_probs=old_log_probs, values=zeros,
                     advantages=torch.tensor(advantages, dtype=torch.float64), returns=zeros, mask=mask)


def _policy_grad(objective, ratio, advantage, clip_range=0.2):
    policy = _TwoActionPolicy()
    ppo = PPO(policy, PPOConfig(objective=objective, normalize_advantages=False))
    loss, _ = ppo.loss(_minibatch(policy, [ratio], [advantage]), clip_range)
    loss.backward()
    return policy.logits.grad


@pytest.mark.parametrize("ratio,advantage", [(1.3, 1.0), (0.7, -1.0)])
def test_unclipped_objective_keeps_the_gradient_that_the_clip_removes(ratio, advantage):
    # ρ past 1 + ε with Â > 0 (or below 1 − ε with Â < 0): L^CLIP is flat there, mean(ρÂ) is not.
    assert torch.equal(_policy_grad("clip", ratio, advantage), torch.zeros(2, dtype=torch.float64))
    assert _policy_grad("unclipped", ratio, advantage).abs().max() > 0.1


def test_kl_penalty_loss_by_hand_with_a_mask():
    policy = _TwoActionPolicy()
    ratios, advantages = [0.5, 1.0, 1.6, 3.0], [1.0, -2.0, 0.5, 7.0]
    mask = torch.tensor([True, True, True, False])  # the last position pads: it must not count
    ppo = PPO(policy, PPOConfig(objective="kl_penalty", kl_coef=0.7, normalize_advantages=False))
    _, parts = ppo.loss(_minibatch(policy, ratios, advantages, mask), clip_range=0.2)
    rho, adv = np.array(ratios[:3]), np.array(advantages[:3])
    expected = -np.mean(rho * adv) + 0.7 * np.mean((rho - 1) - np.log(rho))
    assert parts["policy_loss"].item() == pytest.approx(expected, rel=1e-12)
    ppo.config.objective = "unclipped"  # β plays no part
    _, parts = ppo.loss(_minibatch(policy, ratios, advantages, mask), clip_range=0.2)
    assert parts["policy_loss"].item() == pytest.approx(-np.mean(rho * adv), rel=1e-12)


def test_default_objective_is_the_clipped_surrogate_unchanged():
    policy = _TwoActionPolicy()
    mb = _minibatch(policy, [0.5, 0.9, 1.1, 1.6], [1.0, -2.0, 0.5, 3.0])
    assert PPOConfig().objective == "clip"
    _, parts = PPO(policy, PPOConfig()).loss(mb, clip_range=0.2)
    dist, _ = policy.evaluate(mb)
    expected, _ = clipped_surrogate_loss(dist.log_prob(mb.actions), mb.log_probs,
                                         normalize_advantages(mb.advantages), 0.2)
    assert torch.equal(parts["policy_loss"], expected)


def test_kl_coef_halves_doubles_or_stays_by_the_rule():
    ppo = PPO(_TwoActionPolicy(), PPOConfig(objective="kl_penalty", kl_coef=1.0, kl_penalty_target=0.01))
    for kl, expected in [(0.02, 2.0), (0.016, 4.0), (0.014, 4.0), (0.007, 4.0), (0.006, 2.0), (0.0, 1.0)]:
        ppo.adapt_kl_coef(kl)  # > 1.5·d_targ = 0.015 doubles, < d_targ/1.5 ≈ 0.00667 halves
        assert ppo.kl_coef == expected, (kl, ppo.kl_coef)
    state = ppo.state_dict()
    restored = PPO(_TwoActionPolicy(), PPOConfig(objective="kl_penalty", kl_coef=1.0))
    restored.load_state_dict(state)
    assert restored.kl_coef == 1.0 and state["kl_coef"] == 1.0
    ppo.kl_coef = 8.0
    restored.load_state_dict(ppo.state_dict())
    assert restored.kl_coef == 8.0
    restored.load_state_dict({"optimizer": state["optimizer"]})  # a checkpoint from before β was saved
    assert restored.kl_coef == 1.0


def test_kl_penalty_run_logs_and_adapts_beta(tmp_path):
    torch.set_num_threads(1)
    train("CartPole-v1", "ppo", total_steps=4096, seed=0, out=tmp_path, show_progress=False,
          objective="kl_penalty", kl_coef=1.0, kl_penalty_target=0.01)
    rows = _rows(tmp_path)
    betas = [float(r["kl_coef"]) for r in rows]
    kls = [float(r["approx_kl"]) for r in rows]
    assert betas[0] == 1.0
    for beta, kl, next_beta in zip(betas, kls, betas[1:]):
        expected = beta / 2 if kl < 0.01 / 1.5 else 2 * beta if kl > 0.015 else beta
        assert next_beta == expected
    assert len(set(betas)) > 1  # the rule did act


@pytest.mark.parametrize("field,value", [("objective", "clipped"), ("kl_coef", 0.0),
                                         ("kl_penalty_target", -0.01)])
def test_bad_objective_settings_are_refused(field, value):
    with pytest.raises(MinippoError, match=field):
        PPOConfig(**{field: value})
