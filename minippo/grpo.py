"""Group Relative Policy Optimization, GRPO (Shao et al. 2024, "DeepSeekMath: Pushing the Limits of
Mathematical Reasoning in Open Language Models", §4.1).

PPO without a value function: the advantage of a completion is its reward standardised within the group
of G completions of the same prompt, and the KL to the reference policy is a loss term instead of a
per-token reward penalty. Per iteration, on a batch of N/G prompts with G completions each::

    A_i   = (r_i − mean_j r_j) / std_j r_j          for every token of completion i   (§4.1.2)
    for epoch = 1..K, for each shuffled minibatch of whole completions:
        ρ_t   = π_θ(a_t|s_t) / π_old(a_t|s_t)
        L     = −mean_t min(ρ_t A_i, clip(ρ_t, 1−ε, 1+ε) A_i)       PPO's clipped surrogate (eq. 21)
              + β mean_t k3_t,  k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1   the KL term (eq. 4)
        one Adam step on L, gradient norm clipped

The advantages come from the loop's estimator, :class:`minippo.rollout.GroupBaseline`
("group_mean_std"); the surrogate is :func:`minippo.ppo.clipped_surrogate_loss`, imported, not copied.
k3 (Schulman 2020, "Approximating KL divergence") is an unbiased, always non-negative estimate of
KL(π_θ ‖ π_ref) from tokens sampled by π_θ (π_old here, a small bias the paper accepts too).

``kl_coef`` is β of the loss term. To put the KL in the reward instead (as RLOO and PPO do), set
``kl_coef = 0`` and give the rollout a β (``minippo rlhf --algo grpo --hp kl_in_reward=True``).

Means are over every response token of a minibatch (as DAPO, Yu et al. 2025, and TRL do); the paper's
eq. 21 averages within each completion first, which weights the tokens of short completions more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import MinippoError, check_finite, check_range
from .ppo import clipped_surrogate_loss
from .rollout import masked_mean
from .value_function import split_parameters


@dataclass
class GRPOConfig:
    """GRPO's hyperparameters, with typical ranges. The group size G is a setting of the rollout
    (``RLHFConfig.group_size``).

    learning_rate   Adam step size (1e-6 – 1e-4).
    num_epochs      passes over each batch, K (1 – 4; DeepSeekMath uses 1).
    minibatch_size  token positions per minibatch (whole completions: minibatch_size // T of them).
    clip_range      ε of the clipped surrogate (0.1 – 0.3).
    kl_coef         β of the k3 KL loss term (0 – 0.1; DeepSeekMath uses 0.04). ``minippo rlhf`` sets it
                    from ``--beta``.
    kl_in_reward    False: the KL is the loss term above and the rollout's rewards hold the score alone.
                    True: the KL penalty is in the per-token rewards (β of the rollout) and kl_coef is 0.
    max_grad_norm   the gradient's norm is clipped to this.
    """

    learning_rate: float = 5e-5
    num_epochs: int = 2
    minibatch_size: int = 16 * 48
    clip_range: float = 0.2
    kl_coef: float = 0.04
    kl_in_reward: bool = False
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)
        check_range("num_epochs", self.num_epochs, 1, integer=True)
        check_range("minibatch_size", self.minibatch_size, 1, integer=True)
        check_range("clip_range", self.clip_range, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("kl_coef", self.kl_coef, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_inclusive=False)


def k3_kl(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref), ``[*S]`` (DeepSeekMath eq. 4; Schulman 2020's k3):

        k3 = π_ref/π_θ − log(π_ref/π_θ) − 1 ≥ 0

    Args: log π_θ(a|s) (with gradient) and log π_ref(a|s), both ``[*S]``, for tokens a sampled from π_θ.
    """
    log_ratio = ref_log_probs - log_probs
    return log_ratio.exp() - log_ratio - 1.0


class GRPO:
    """The GRPO update. Holds the Adam optimiser of the policy's parameters (a value head is left alone)
    and the minibatch-shuffling generator.

    Args:
        policy: any policy with ``evaluate(minibatch) -> (dist, values)``.
        config: :class:`GRPOConfig`. seed: seeds the minibatch shuffling.
    """

    def __init__(self, policy: nn.Module, config: GRPOConfig, seed: int = 0):
        self.policy, self.config = policy, config
        self.params = split_parameters(policy)[0]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, eps=1e-5, fused=True)
        self.generator = torch.Generator().manual_seed(seed)

    def loss(self, mb) -> tuple[Tensor, dict[str, Tensor]]:
        """``−L^CLIP + β·mean(k3)`` on a minibatch, and its parts.

        Raises:
            MinippoError: ``kl_coef`` > 0 and the minibatch has no ``ref_log_probs`` (no reference).
        """
        c = self.config
        dist, _ = self.policy.evaluate(mb)
        log_probs = dist.log_prob(mb.actions)
        policy_loss, ratio = clipped_surrogate_loss(log_probs, mb.log_probs, mb.advantages, c.clip_range,
                                                    mb.mask)
        loss, kl = policy_loss, torch.zeros(())
        if c.kl_coef > 0:
            if mb.ref_log_probs is None:
                raise MinippoError("GRPO's KL term needs the reference policy's log-probabilities, which "
                                   "this rollout does not provide; set kl_coef=0.")
            kl = masked_mean(k3_kl(log_probs, mb.ref_log_probs), mb.mask)
            loss = policy_loss + c.kl_coef * kl
        return loss, {"policy_loss": policy_loss, "kl_k3": kl, "ratio": ratio, "dist": dist,
                      "log_ratio": log_probs - mb.log_probs}

    def update(self, batch, progress: float) -> dict[str, float]:
        """One GRPO iteration on ``batch``, whose ``advantages`` are group-standardised rewards.

        Returns, for the updated policy on the whole batch: policy_loss, kl_k3 (mean k3 per token, nats),
        approx_kl (KL(π_old ‖ π_θ) as in PPO), clip_fraction, entropy; and kl_coef, learning_rate.

        Raises:
            NonFiniteLossError: a loss is NaN/inf; the update is abandoned before its step.
        """
        c = self.config
        for _ in range(c.num_epochs):
            for mb in batch.minibatches(c.minibatch_size, self.generator):
                loss, _ = self.loss(mb)
                check_finite(loss, "GRPO loss")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, c.max_grad_norm)
                self.optimizer.step()
        with torch.no_grad():
            data = batch.all()
            _, parts = self.loss(data)
            ratio, log_ratio, mask = parts["ratio"], parts["log_ratio"], data.mask
            return {"policy_loss": parts["policy_loss"].item(), "kl_k3": parts["kl_k3"].item(),
                    "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
                    "clip_fraction": masked_mean(((ratio - 1.0).abs() > c.clip_range).float(), mask).item(),
                    "entropy": masked_mean(parts["dist"].entropy(), mask).item(),
                    "kl_coef": c.kl_coef, "learning_rate": c.learning_rate}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
