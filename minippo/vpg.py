"""Vanilla policy gradient: REINFORCE with a learned baseline (Williams 1992, "Simple Statistical
Gradient-Following Algorithms for Connectionist Reinforcement Learning"), in the form of OpenAI Spinning
Up's VPG, with GAE(γ, λ) advantages (Schulman et al. 2016).

Per iteration, on a batch collected by the current policy π_θ with GAE advantages Â and λ-returns R::

    g       = ∇θ mean( log π_θ(a|s) · Â )             the policy gradient (score-function estimator)
    θ      ← one Adam step along g                    (on the loss −mean(log π_θ(a|s) · Â))
    repeat value_iterations times:
        φ  ← one Adam step on mean( (V_φ(s) − R)² )   fit the baseline by regression on the returns

What the baseline V does to g depends on λ. With λ = 1, Â_t is the discounted return minus V(s_t): a
baseline that depends only on the state, which lowers the variance of g and never biases it. With
λ < 1, GAE also *bootstraps* from V (Â_t sums TD residuals r + γV(s') − V(s)), so an inaccurate V
biases g in exchange for a further drop in variance (GAE paper, §3). In a two-step example with a wrong
critic the expected gradient is +0.2475 (the true one) at λ = 1, +0.2327 at λ = 0.97, 0 at λ = 0.5 and
−0.2475 at λ = 0 (see ``test_gae_lambda_below_one_biases_the_gradient_when_the_critic_is_wrong`` in
``tests/test_vpg.py``). The policy and the value function have separate optimisers (and learning
rates), because they are fitted to different objectives. The value fitting and the parameter split, which
TRPO shares, live in :mod:`minippo.value_function`.

Symbols: ``B`` is the number of valid transitions in the batch (see :mod:`minippo.rollout`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import kl_divergence

from .errors import check_finite, check_range
from .rollout import explained_variance, masked_mean, normalize_advantages
from .value_function import fit_value_function, split_parameters

# Defaults per environment. Keys are fields of VPGConfig or of minippo.train.TrainConfig; "default" is
# used for any env not listed ("default" is Spinning Up's VPG: 4000 steps per batch, policy lr 3e-4).
# VPG takes a single gradient step per batch, so the tuned entries use many small batches and a large
# policy step size; each reached a near-solved return on seed 0 within its total_steps.
DEFAULTS: dict[str, dict] = {
    "default": dict(total_steps=500_000, num_envs=8, num_steps=500, gamma=0.99, gae_lambda=0.97,
                    policy_lr=3e-4, value_lr=1e-3, value_iterations=80),
    "CartPole-v1": dict(total_steps=100_000, num_envs=8, num_steps=128, gamma=0.99, gae_lambda=0.97,
                        policy_lr=5e-3, value_lr=1e-3, value_iterations=80),
    "Acrobot-v1": dict(total_steps=200_000, num_envs=8, num_steps=256, gamma=0.99, gae_lambda=0.97,
                       policy_lr=1e-2, value_lr=1e-3, value_iterations=80, normalize_obs=True),
    "Pendulum-v1": dict(total_steps=200_000, num_envs=4, num_steps=250, gamma=0.9, gae_lambda=0.95,
                        policy_lr=1e-2, value_lr=1e-3, value_iterations=80, normalize_reward=True),
    # MuJoCo: Spinning Up's VPG as its benchmarks run it (4000 steps per batch, policy lr 3e-4, value lr
    # 1e-3 for 80 steps, gamma 0.99, lambda 0.97, no normalisation), for 1M steps.
    **{env_id: dict(total_steps=1_000_000, num_envs=8, num_steps=500, gamma=0.99, gae_lambda=0.97,
                    policy_lr=3e-4, value_lr=1e-3, value_iterations=80)
       for env_id in ("Hopper-v5", "HalfCheetah-v5")},
}


@dataclass
class VPGConfig:
    """VPG's hyperparameters, with typical ranges.

    policy_lr             Adam step size of the single policy step per batch (3e-4 – 1e-2).
    value_lr              Adam step size of the value-function regression (1e-4 – 1e-2).
    value_iterations      Adam steps on the value loss per batch (10 – 100; Spinning Up uses 80). 0: the
                          value function is never fitted (the failure mode of Spinning Up's exercise 2.1).
    value_minibatch_size  transitions per value step; None fits on the whole batch every step.
    normalize_advantages  standardise Â over the whole batch. Subtracting the mean acts as a constant
                          baseline, so this changes the estimate of g, not only its scale (see
                          :func:`minippo.rollout.normalize_advantages`).
    """

    policy_lr: float = 3e-4
    value_lr: float = 1e-3
    value_iterations: int = 80
    value_minibatch_size: int | None = None
    normalize_advantages: bool = True

    def __post_init__(self):
        check_range("policy_lr", self.policy_lr, 0, 1, low_inclusive=False)
        check_range("value_lr", self.value_lr, 0, 1, low_inclusive=False)
        check_range("value_iterations", self.value_iterations, 0, integer=True)
        if self.value_minibatch_size is not None:
            check_range("value_minibatch_size", self.value_minibatch_size, 1, integer=True)


def policy_gradient_loss(log_probs: Tensor, advantages: Tensor, mask: Tensor | None = None) -> Tensor:
    """``−mean(log π_θ(a|s) · Â)``: its negative gradient is the policy-gradient estimate
    ``ĝ = mean(∇θ log π_θ(a|s) · Â)`` (Williams 1992; Schulman et al. 2016 eq. 1 with Ψ_t = Â_t).

    Args:
        log_probs: log π_θ(a|s), ``[*S]``, with gradient. advantages: Â, ``[*S]``, no gradient.
        mask: ``[*S]`` bool, the positions that are transitions (None: all); the mean is over them.

    Returns a scalar. Its value is not an objective worth watching; only its gradient means something.
    """
    return -masked_mean(log_probs * advantages, mask)


class VPG:
    """The VPG update. Holds the two Adam optimisers (policy and value), the state between iterations.

    Args:
        policy: any policy with ``evaluate(minibatch) -> (dist, values)`` (see ``minippo.policies``);
            its parameters are split with :func:`split_parameters`.
        config: :class:`VPGConfig`.
        seed: seeds the value minibatch shuffling.
    """

    def __init__(self, policy: nn.Module, config: VPGConfig, seed: int = 0):
        self.policy, self.config = policy, config
        policy_params, value_params = split_parameters(policy)
        self.policy_optimizer = torch.optim.Adam(policy_params, lr=config.policy_lr, fused=True)
        self.value_optimizer = torch.optim.Adam(value_params, lr=config.value_lr, fused=True)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, batch, progress: float) -> dict[str, float]:
        """One VPG iteration on ``batch`` (a :class:`minippo.rollout.Batch` with advantages and returns).

        ``progress`` (the fraction of training done) is accepted for the shared loop and unused.
        Returns policy_loss, value_loss, entropy, kl (the exact mean KL(π_old ‖ π_new) over the
        batch after the policy step), explained_variance (of V_old for R), policy_lr, value_lr.

        Raises:
            NonFiniteLossError: a loss is NaN/inf; the update is abandoned before its step.
        """
        c = self.config
        data = batch.all()
        mask = data.mask  # every mean is over the transitions only (see minippo.rollout.Minibatch)
        advantages = data.advantages
        if c.normalize_advantages:
            advantages = normalize_advantages(advantages, mask)

        # The one policy-gradient step.
        dist, _ = self.policy.evaluate(data)
        policy_loss = policy_gradient_loss(dist.log_prob(data.actions), advantages, mask)
        check_finite(policy_loss, "VPG policy loss")
        self.policy_optimizer.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.policy_optimizer.step()

        with torch.no_grad():
            entropy = masked_mean(dist.entropy(), mask)
            new_dist, _ = self.policy.evaluate(data)
            kl = masked_mean(kl_divergence(dist, new_dist), mask)  # dist was computed before the step: π_old

        value_loss = fit_value_function(self.policy, self.value_optimizer, batch, c.value_iterations,
                                        c.value_minibatch_size, self.generator)
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss, "entropy": entropy.item(),
                "kl": kl.item(), "explained_variance": explained_variance(data.values, data.returns, mask),
                "policy_lr": c.policy_lr, "value_lr": c.value_lr}

    def state_dict(self) -> dict:
        return {"policy_optimizer": self.policy_optimizer.state_dict(),
                "value_optimizer": self.value_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])
        self.value_optimizer.load_state_dict(state["value_optimizer"])
