"""Proximal Policy Optimization with the clipped surrogate objective (Schulman et al. 2017, "Proximal
Policy Optimization Algorithms").

Per iteration, on a batch collected by the current policy π_old with GAE advantages Â::

    for epoch = 1..K:
        for each shuffled minibatch:
            ρ(θ)    = π_θ(a|s) / π_old(a|s)                                  probability ratio
            L^CLIP  = mean( min(ρ Â, clip(ρ, 1−ε, 1+ε) Â) )                   eq. 7
            L^VF    = mean( (V_θ(s) − R)² )            (optionally clipped around V_old)
            S       = mean( entropy of π_θ(·|s) )
            loss    = −L^CLIP + c_vf L^VF − c_ent S                           eq. 9 (as a loss)
            one Adam step on loss, gradient norm clipped to max_grad_norm
        stop early if the approximate KL(π_old ‖ π_θ) on the batch exceeds target_kl
    log the loss terms, approximate KL and clip fraction of the updated policy on the whole batch

``PPOConfig.objective`` swaps L^CLIP for the paper's alternatives, to see what the clip does:
"kl_penalty" (§4: mean(ρ Â) − β·KL, β adapted after each iteration) and "unclipped" (mean(ρ Â) alone).

Implementation details follow Huang et al. 2022, "The 37 Implementation Details of PPO".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import MinippoError, check_finite, check_range
from .rollout import explained_variance, masked_mean, normalize_advantages

# Defaults per environment: rl-zoo3's tables (hyperparams/ppo.yml) where they exist. Keys are fields of
# PPOConfig or of minippo.train.TrainConfig; "default" is used for any env not listed. rl-zoo3 keeps
# the learning rate constant unless it writes lin_..., so anneal_lr is set to False there. Where minippo
# still differs from rl-zoo3:
#   - total_steps: Acrobot 200k (rl-zoo3 1M) and Pendulum 200k (rl-zoo3 100k), the budgets VPG and
#     TRPO use too, so that the three are compared on one budget per task;
#   - Pendulum: rl-zoo3 explores with gSDE (use_sde, sde_sample_freq=4), which minippo does not
#     implement; minippo samples a plain state-independent diagonal Gaussian instead;
#   - rl-zoo3's "normalize: true" (Acrobot) is VecNormalize of observations and rewards, here
#     normalize_obs and normalize_reward (Gymnasium's wrappers);
#   - MuJoCo (Hopper-v5, HalfCheetah-v5): rl-zoo3's Optuna-tuned entries for these envs need ReLU
#     networks of 256x256 without orthogonal init, which minippo's MLP does not offer; minippo uses
#     the settings of the PPO paper's MuJoCo experiments instead (Schulman et al. 2017, Table 3: 2048
#     steps per batch, Adam 3e-4, 10 epochs, minibatch 64, gamma 0.99, lambda 0.95, clip 0.2, 1M steps),
#     which are also SB3's defaults and rl-zoo3's "mujoco-defaults" (normalize: true).
DEFAULTS: dict[str, dict] = {
    "default": dict(total_steps=500_000, num_envs=8, num_steps=256, gamma=0.99, gae_lambda=0.95,
                    learning_rate=3e-4, num_epochs=10, minibatch_size=256),
    "CartPole-v1": dict(total_steps=100_000, num_envs=8, num_steps=32, gamma=0.98, gae_lambda=0.8,
                        learning_rate=1e-3, anneal_lr=True, num_epochs=20, minibatch_size=256,
                        clip_range=0.2, anneal_clip_range=True, entropy_coef=0.0),
    "Acrobot-v1": dict(total_steps=200_000, num_envs=16, num_steps=256, gamma=0.99, gae_lambda=0.94,
                       learning_rate=3e-4, anneal_lr=False, num_epochs=4, minibatch_size=64,
                       normalize_obs=True, normalize_reward=True),
    "Pendulum-v1": dict(total_steps=200_000, num_envs=4, num_steps=1024, gamma=0.9, gae_lambda=0.95,
                        learning_rate=1e-3, anneal_lr=False, num_epochs=10, minibatch_size=64,
                        clip_range=0.2),
    "LunarLander-v3": dict(total_steps=1_000_000, num_envs=16, num_steps=1024, gamma=0.999,
                           gae_lambda=0.98, learning_rate=3e-4, anneal_lr=False, num_epochs=4,
                           minibatch_size=64, entropy_coef=0.01),
    **{env_id: dict(total_steps=1_000_000, num_envs=1, num_steps=2048, gamma=0.99, gae_lambda=0.95,
                    learning_rate=3e-4, anneal_lr=False, num_epochs=10, minibatch_size=64,
                    clip_range=0.2, entropy_coef=0.0, normalize_obs=True, normalize_reward=True)
       for env_id in ("Hopper-v5", "HalfCheetah-v5")},
}

# The choices of PPOConfig.objective.
OBJECTIVES = ("clip", "kl_penalty", "unclipped")


@dataclass
class PPOConfig:
    """PPO's hyperparameters, with typical ranges.

    learning_rate        Adam step size (1e-4 – 3e-3), linearly annealed to 0 if ``anneal_lr``.
    num_epochs           K passes over the batch per iteration (3 – 30).
    minibatch_size       transitions per gradient step (32 – 4096; tokens for text).
    clip_range           ε of the clipped surrogate, in (0, 1) (0.1 – 0.3); annealed if
                         ``anneal_clip_range``.
    clip_value_loss      clip the value update around V_old by ε too (as in OpenAI baselines).
    value_coef           c_vf, weight of the value loss (0.5 – 1).
    entropy_coef         c_ent, weight of the entropy bonus (0 – 0.01).
    max_grad_norm        global gradient-norm clip (0.5).
    target_kl            stop the epochs early once the approximate KL exceeds it (None: never; 0.01–0.05).
                         Early stopping only; not the KL-penalty target ``kl_penalty_target``.
    normalize_advantages standardise Â per minibatch.
    objective            the policy term of the loss (see :func:`kl_penalty_loss`):
                         "clip"        L^CLIP, eq. 7 (the default: PPO);
                         "kl_penalty"  mean(ρ Â) − β·KL(π_old ‖ π_θ), the paper's §4 adaptive KL penalty;
                         "unclipped"   mean(ρ Â), no clip and no penalty (eq. 6, L^CPI): nothing keeps
                                       π_θ near π_old over the K epochs, so it breaks with many epochs.
    kl_coef              β, the initial KL-penalty coefficient of "kl_penalty" (> 0; 0.1 – 10, the paper
                         uses 1 and reports that the rule adapts it quickly, so its start matters little).
    kl_penalty_target    d_targ of "kl_penalty" (> 0; 0.003 – 0.03): after each iteration, with d the
                         approximate KL of the update, β ← β/2 if d < d_targ/1.5 and β ← 2β if
                         d > 1.5·d_targ. It steers β only; early stopping is ``target_kl``.
    """

    learning_rate: float = 3e-4
    anneal_lr: bool = True
    num_epochs: int = 10
    minibatch_size: int = 64
    clip_range: float = 0.2
    anneal_clip_range: bool = False
    clip_value_loss: bool = False
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    normalize_advantages: bool = True
    objective: str = "clip"
    kl_coef: float = 1.0
    kl_penalty_target: float = 0.01

    def __post_init__(self):
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)
        check_range("num_epochs", self.num_epochs, 1, integer=True)
        check_range("minibatch_size", self.minibatch_size, 1, integer=True)
        check_range("clip_range", self.clip_range, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("value_coef", self.value_coef, 0)
        check_range("entropy_coef", self.entropy_coef, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_inclusive=False)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0, low_inclusive=False)
        if self.objective not in OBJECTIVES:
            raise MinippoError(f"objective={self.objective!r} is not one of {', '.join(OBJECTIVES)}; use "
                               "'clip' for PPO's clipped surrogate.")
        check_range("kl_coef", self.kl_coef, 0, low_inclusive=False)
        check_range("kl_penalty_target", self.kl_penalty_target, 0, low_inclusive=False)


def clipped_surrogate_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor,
                           advantages: torch.Tensor, clip_range: float,
                           mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``−L^CLIP`` (PPO eq. 7) and the probability ratio.

    Args:
        log_probs: log π_θ(a|s), ``[*S]``, with gradient. old_log_probs: log π_old(a|s), ``[*S]``.
        advantages: Â, ``[*S]``. clip_range: ε.
        mask: ``[*S]`` bool, the positions that are transitions (None: all); the mean is over them.

    Returns ``(loss, ratio)``. Where the ratio is already past 1+ε with Â > 0 (or below 1−ε with
    Â < 0) the min picks the clipped, constant term, so those samples give no gradient.
    """
    ratio = (log_probs - old_log_probs).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantages
    return -masked_mean(torch.min(unclipped, clipped), mask), ratio


def kl_penalty_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                    kl_coef: float, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``−mean(ρ Â) + β·KL̂`` (the negated L^KLPEN of PPO §4, eq. 8) and the probability ratio ρ.

    The batch stores only log π_old(a|s) of the action taken, so KL(π_old ‖ π_θ) is estimated on the
    sampled actions as KL̂ = mean((ρ − 1) − log ρ), unbiased for a ~ π_old and ≥ 0 per sample (Schulman
    2020, "Approximating KL divergence"; the same estimator as the logged ``approx_kl``).
    ``kl_coef`` = 0 gives the plain unclipped surrogate ``−mean(ρ Â)`` (eq. 6).

    Args: as :func:`clipped_surrogate_loss`, with ``kl_coef`` β ≥ 0 in place of ε.
    """
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()
    loss = -masked_mean(ratio * advantages, mask)
    if kl_coef > 0:
        loss = loss + kl_coef * masked_mean((ratio - 1.0) - log_ratio, mask)
    return loss, ratio


class PPO:
    """The PPO update. Holds its state between iterations: the Adam optimiser, and β (``kl_coef``) of
    objective="kl_penalty".

    Args:
        policy: any policy with ``evaluate(minibatch) -> (dist, values)`` (see ``minippo.policies``).
        config: :class:`PPOConfig`.
        seed: seeds the minibatch shuffling.
    """

    def __init__(self, policy: nn.Module, config: PPOConfig, seed: int = 0):
        self.policy, self.config = policy, config
        # fused: one kernel updates every parameter (a loop over a dozen small tensors costs ~3x more
        # than the arithmetic, a tenth of a CartPole update step). eps=1e-5 as in OpenAI baselines.
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5,
                                          fused=True)
        self.generator = torch.Generator().manual_seed(seed)
        self.kl_coef = config.kl_coef  # β of objective="kl_penalty", adapted after every iteration

    def update(self, batch, progress: float) -> dict[str, float]:
        """One PPO iteration on ``batch`` (a :class:`minippo.rollout.Batch` with advantages and returns).

        ``progress`` in [0, 1) is the fraction of training done, for learning-rate and ε annealing.
        Returns the statistics practitioners watch (see :meth:`statistics`), plus learning_rate,
        clip_range and the number of epochs run; with objective="kl_penalty" also ``kl_coef``, the β this
        update used (then β is adapted for the next one, :meth:`adapt_kl_coef`).

        Raises:
            NonFiniteLossError: a loss is NaN/inf; the update is abandoned before its step.
        """
        c = self.config
        lr = c.learning_rate * (1.0 - progress) if c.anneal_lr else c.learning_rate
        clip_range = c.clip_range * (1.0 - progress) if c.anneal_clip_range else c.clip_range
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        for epoch in range(1, c.num_epochs + 1):
            for mb in batch.minibatches(c.minibatch_size, self.generator):
                loss, _ = self.loss(mb, clip_range)
                check_finite(loss, "PPO loss")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
            if c.target_kl is not None and self.statistics(batch, clip_range)["approx_kl"] > c.target_kl:
                break  # the policy has moved far enough from π_old for this batch

        stats = {**self.statistics(batch, clip_range), "learning_rate": lr, "clip_range": clip_range,
                 "epochs": epoch}
        if c.objective == "kl_penalty":
            stats["kl_coef"] = self.kl_coef
            self.adapt_kl_coef(stats["approx_kl"])
        return stats

    def adapt_kl_coef(self, kl: float) -> None:
        """PPO §4's rule for β, given d = ``kl``, the approximate KL the last update reached: β ← β/2 if
        d < d_targ/1.5, β ← 2β if d > 1.5·d_targ, else unchanged (d_targ: ``kl_penalty_target``)."""
        target = self.config.kl_penalty_target
        if kl < target / 1.5:
            self.kl_coef /= 2
        elif kl > 1.5 * target:
            self.kl_coef *= 2

    def loss(self, mb, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """PPO's loss on a minibatch, ``−L^CLIP + c_vf L^VF − c_ent S`` (eq. 9 as a loss), and its parts.
        ``config.objective`` decides the policy term (−L^CLIP by default)."""
        c = self.config
        dist, values = self.policy.evaluate(mb)
        log_probs = dist.log_prob(mb.actions)
        mask = mb.mask  # every mean is over the transitions only (see Minibatch)
        advantages = mb.advantages
        if c.normalize_advantages:
            advantages = normalize_advantages(advantages, mask)

        if c.objective == "clip":
            policy_loss, ratio = clipped_surrogate_loss(log_probs, mb.log_probs, advantages, clip_range, mask)
        else:  # "kl_penalty", or "unclipped" (β = 0)
            kl_coef = self.kl_coef if c.objective == "kl_penalty" else 0.0
            policy_loss, ratio = kl_penalty_loss(log_probs, mb.log_probs, advantages, kl_coef, mask)
        if c.clip_value_loss:  # keep V near V_old, as the policy is kept near π_old
            clipped_values = mb.values + (values - mb.values).clamp(-clip_range, clip_range)
            squared_errors = torch.max((values - mb.returns) ** 2, (clipped_values - mb.returns) ** 2)
            value_loss = masked_mean(squared_errors, mask)
        else:
            value_loss = masked_mean((values - mb.returns) ** 2, mask)
        loss = policy_loss + c.value_coef * value_loss
        if c.entropy_coef > 0:  # (skipped at 0, where it would only add work)
            loss = loss - c.entropy_coef * masked_mean(dist.entropy(), mask)
        parts = {"policy_loss": policy_loss, "value_loss": value_loss, "dist": dist,
                 "ratio": ratio, "log_ratio": log_probs - mb.log_probs}
        return loss, parts

    @torch.no_grad()
    def statistics(self, batch, clip_range: float) -> dict[str, float]:
        """Diagnostics of the current policy on the whole batch (one forward pass):

        policy_loss, value_loss, entropy    the loss terms
        approx_kl           KL(π_old ‖ π_θ) estimated as mean((ρ − 1) − log ρ) (Schulman 2020, "Approximating
                            KL divergence"): how far this iteration moved the policy
        clip_fraction       share of transitions whose ratio ρ is outside [1 − ε, 1 + ε] (whatever the
                            objective)
        explained_variance  of the returns by V_old (1: perfect, ≤ 0: useless)
        """
        data = batch.all()
        _, parts = self.loss(data, clip_range)
        ratio, log_ratio, mask = parts["ratio"], parts["log_ratio"], data.mask
        return {"policy_loss": parts["policy_loss"].item(), "value_loss": parts["value_loss"].item(),
                "entropy": masked_mean(parts["dist"].entropy(), mask).item(),
                "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
                "clip_fraction": masked_mean(((ratio - 1.0).abs() > clip_range).float(), mask).item(),
                "explained_variance": explained_variance(data.values, data.returns, mask)}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict) -> None:
        """Restore the optimiser and β; a checkpoint from before β was saved keeps ``config.kl_coef``."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = state.get("kl_coef", self.config.kl_coef)
