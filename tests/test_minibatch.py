"""The masks and minibatches of the core (minippo/rollout.py): masked means against sums written out by
hand, the same losses on a padded [T, n] minibatch as on the flat batch of its transitions, and no ragged
last minibatch."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Categorical

from minippo.ppo import PPO, PPOConfig, clipped_surrogate_loss
from minippo.rollout import Minibatch, explained_variance, masked_mean, normalize_advantages, shuffled_chunks
from minippo.trpo import surrogate_objective
from minippo.vpg import policy_gradient_loss


def test_masked_mean_is_the_mean_of_the_kept_entries_and_ignores_inf_elsewhere():
    x = torch.tensor([[1.0, float("inf")], [4.0, 10.0], [float("nan"), 7.0]])
    mask = torch.tensor([[True, False], [True, True], [False, True]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 4 + 10 + 7) / 4)
    assert masked_mean(x[:2, :1], None).item() == pytest.approx(2.5)


def test_normalize_advantages_over_the_kept_entries_by_hand():
    adv = torch.tensor([[1.0, 100.0], [2.0, 3.0]])
    mask = torch.tensor([[True, False], [True, True]])
    kept = [1.0, 2.0, 3.0]
    mean = sum(kept) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in kept) / 2)  # unbiased, like Tensor.std
    out = normalize_advantages(adv, mask)
    assert out[mask].tolist() == pytest.approx([(a - mean) / std for a in kept], abs=1e-6)
    # Without a mask it is exactly the usual standardisation.
    flat = torch.tensor(kept)
    assert torch.equal(normalize_advantages(flat), (flat - flat.mean()) / (flat.std() + 1e-8))


def test_clipped_surrogate_on_a_hand_built_masked_batch():
    # Two sequences of three steps; the second ends after its first step (two padded positions).
    log_probs = torch.log(torch.tensor([[0.5, 0.2], [0.3, 0.9], [0.6, 0.9]]))
    old = torch.log(torch.tensor([[0.4, 0.2], [0.3, 0.1], [0.3, 0.1]]))
    adv = torch.tensor([[1.0, -2.0], [-1.0, 50.0], [2.0, 50.0]])
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    eps = 0.2
    # ratios of the kept positions: 1.25, 1.0, 1.0, 2.0 with advantages 1, -2, -1, 2
    by_hand = [min(1.25 * 1, 1.2 * 1), min(1.0 * -2, 1.0 * -2), min(1.0 * -1, 1.0 * -1),
               min(2.0 * 2, 1.2 * 2)]
    loss, _ = clipped_surrogate_loss(log_probs, old, adv, eps, mask)
    assert loss.item() == pytest.approx(-sum(by_hand) / 4, abs=1e-6)
    # TRPO's surrogate and VPG's loss: means over the same four positions.
    assert surrogate_objective(log_probs, old, adv, mask).item() == pytest.approx(
        (1.25 * 1 + 1.0 * -2 + 1.0 * -1 + 2.0 * 2) / 4, abs=1e-6)
    lp = log_probs[mask]
    assert policy_gradient_loss(log_probs, adv, mask).item() == pytest.approx(
        -float((lp * adv[mask]).sum()) / 4, abs=1e-6)
    assert explained_variance(adv, adv + 1, mask) == pytest.approx(1.0)


class TablePolicy(nn.Module):
    """A policy over 3 actions whose observation is an integer state id (so any shape S works)."""

    def __init__(self, num_states: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.logits = nn.Parameter(torch.randn(num_states, 3, generator=g))
        self.critic = nn.Parameter(torch.randn(num_states, generator=g))

    def evaluate(self, mb):
        return Categorical(logits=self.logits[mb.obs]), self.critic[mb.obs]

    def values(self, mb):
        return self.critic[mb.obs]


def test_ppo_loss_on_padded_sequences_equals_the_loss_on_their_transitions_alone():
    T, n = 5, 4
    g = torch.Generator().manual_seed(1)
    obs = torch.arange(T * n).reshape(T, n)
    mask = torch.ones(T, n, dtype=torch.bool)
    mask[3:, 0] = mask[1:, 2] = False  # sequence 0 ends at step 2, sequence 2 at step 0
    rand = lambda: torch.randn(T, n, generator=g)
    actions = torch.randint(0, 3, (T, n), generator=g)
    padded = Minibatch(obs, actions, rand() - 1, rand(), rand(), rand(), mask)
    # The padded positions hold junk that must not matter.
    for field in ("log_probs", "values", "advantages", "returns"):
        getattr(padded, field)[~mask] = 1e6
    flat = Minibatch(*(getattr(padded, f)[mask] for f in ("obs", "actions", "log_probs", "values",
                                                          "advantages", "returns")))
    policy = TablePolicy(T * n)
    ppo = PPO(policy, PPOConfig(entropy_coef=0.01, clip_value_loss=True))
    loss_padded, parts_padded = ppo.loss(padded, 0.2)
    loss_flat, parts_flat = ppo.loss(flat, 0.2)
    assert loss_padded.item() == pytest.approx(loss_flat.item(), rel=1e-5)
    assert parts_padded["value_loss"].item() == pytest.approx(parts_flat["value_loss"].item(), rel=1e-5)
    grad_padded = torch.autograd.grad(loss_padded, policy.logits)[0]
    grad_flat = torch.autograd.grad(loss_flat, policy.logits)[0]
    assert torch.allclose(grad_padded, grad_flat, atol=1e-6)
    assert grad_padded[obs[~mask]].eq(0).all()  # padded positions get no gradient


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 500), size=st.integers(1, 200), seed=st.integers(0, 10_000))
def test_shuffled_chunks_cover_everything_once_and_none_is_ragged(n, size, seed):
    chunks = shuffled_chunks(n, size, torch.Generator().manual_seed(seed))
    assert sorted(torch.cat(chunks).tolist()) == list(range(n))
    assert len(chunks) == max(1, n // size)
    # No chunk smaller than the configured size (or than n), none as large as twice the size.
    assert all(min(size, n) <= len(c) for c in chunks)
    assert all(len(c) < 2 * size for c in chunks)
