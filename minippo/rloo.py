"""REINFORCE Leave-One-Out, RLOO (Kool, van Hoof and Welling 2019, "Buy 4 REINFORCE Samples, Get a
Baseline for Free!"; for language models Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE
Style Optimization for Learning from Human Feedback in LLMs").

No value function: the baseline of each sample is the mean return of the other samples drawn for the
same prompt. Per iteration, on a batch of N/k prompts with k completions each::

    R_i  = score_i − β Σ_t log(π/π_ref)           the KL penalty folded into the sequence reward
    A_i  = R_i − 1/(k−1) Σ_{j≠i} R_j               leave-one-out baseline (Ahmadian et al. eq. 6)
    θ   ← one Adam step on −mean_t( log π_θ(a_t|s_t) · A_i )     VPG's policy-gradient loss

The advantages come from the loop's estimator, :class:`minippo.rollout.GroupBaseline`
("leave_one_out"); the loss is :func:`minippo.vpg.policy_gradient_loss`, imported, not copied. So RLOO is
VPG with the learned baseline swapped for k − 1 other samples.

The mean is over every response token of the batch. Summing log π over a response and averaging over
the N responses instead (the paper's sequence-level REINFORCE) gives the same direction up to the
factor (total response tokens) / N, constant within a batch, which the learning rate absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import kl_divergence

from .errors import check_finite, check_range
from .rollout import masked_mean
from .value_function import split_parameters
from .vpg import policy_gradient_loss


@dataclass
class RLOOConfig:
    """RLOO's hyperparameters, with typical ranges. The group size k and β are settings of the rollout
    (``RLHFConfig.group_size``, ``RLHFConfig.beta``), not of the update.

    learning_rate   Adam step size of the one policy step per batch (1e-5 – 1e-3).
    max_grad_norm   the gradient's norm is clipped to this (0.5 – 5).
    """

    learning_rate: float = 3e-4
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_inclusive=False)


class RLOO:
    """The RLOO update: one policy-gradient step per batch with leave-one-out advantages. Holds the
    Adam optimiser of the policy's parameters (a value head, if the network has one, is left alone).

    Args:
        policy: any policy with ``evaluate(minibatch) -> (dist, values)``.
        config: :class:`RLOOConfig`. seed: unused (nothing is shuffled); accepted for the shared loop.
    """

    def __init__(self, policy: nn.Module, config: RLOOConfig, seed: int = 0):
        self.policy, self.config = policy, config
        self.params = split_parameters(policy)[0]
        self.optimizer = torch.optim.Adam(self.params, lr=config.learning_rate, fused=True)
        self.generator = None

    def update(self, batch, progress: float) -> dict[str, float]:
        """One RLOO iteration on ``batch``, whose ``advantages`` are leave-one-out ones.

        Returns policy_loss, entropy, kl (exact mean KL(π_old ‖ π_new) per token after the step),
        advantage_abs (the mean absolute advantage: how much the samples of a prompt differ) and
        learning_rate.

        Raises:
            NonFiniteLossError: the loss is NaN/inf; no step is taken with it.
        """
        data = batch.all()
        mask = data.mask
        dist, _ = self.policy.evaluate(data)
        loss = policy_gradient_loss(dist.log_prob(data.actions), data.advantages, mask)
        check_finite(loss, "RLOO policy loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            new_dist, _ = self.policy.evaluate(data)
            kl = masked_mean(kl_divergence(dist, new_dist), mask)
            entropy = masked_mean(dist.entropy(), mask)
        return {"policy_loss": loss.item(), "entropy": entropy.item(), "kl": kl.item(),
                "advantage_abs": masked_mean(data.advantages.abs(), mask).item(),
                "learning_rate": self.config.learning_rate}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
