"""The learned baseline of VPG and TRPO: a value function V(s) fitted by regression on the returns,
separately from the policy (PPO instead trains both with one loss, and RLOO and GRPO need no V at all).

Both algorithms take the policy's parameters and the value function's apart by name
(:func:`split_parameters`), step the policy their own way (one gradient step; a natural-gradient step
in a trust region), then call :func:`fit_value_function`. Advantage normalisation, the third piece they
share with PPO, is :func:`minippo.rollout.normalize_advantages`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from .errors import check_finite
from .rollout import masked_mean


def split_parameters(policy: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split a policy's parameters into ``(policy_params, value_params)`` by name.

    Value parameters are those whose name starts with ``critic`` (the MLP's value network) or
    ``value_head`` (the value head of a language-model policy); every other parameter belongs to the
    policy, e.g. ``actor.*`` and ``log_std`` of :class:`minippo.policies.MLPActorCritic`. Parameters
    with ``requires_grad=False`` are left out of both lists.

    Splitting by name, not by module, keeps VPG and TRPO free of any knowledge of the network.
    """
    policy_params, value_params = [], []
    for name, param in policy.named_parameters():
        if param.requires_grad:
            is_value = name.startswith("critic") or name.startswith("value_head")
            (value_params if is_value else policy_params).append(param)
    return policy_params, value_params


def _value_minibatches(batch, minibatch_size: int | None, generator: torch.Generator | None
                       ) -> Iterator:
    """Endless stream of minibatches for value fitting: the whole batch again and again, or shuffled
    epochs of ``minibatch_size`` transitions."""
    while True:
        if minibatch_size is None:
            yield batch.all()
        else:
            yield from batch.minibatches(minibatch_size, generator)


def fit_value_function(policy: nn.Module, optimizer: torch.optim.Optimizer, batch, iterations: int,
                       minibatch_size: int | None = None, generator: torch.Generator | None = None
                       ) -> float:
    """Regress V on the λ-returns: ``iterations`` Adam steps on ``mean((V(s) − R)²)``.

    Used by VPG and TRPO, which (unlike PPO) fit the value function separately from the policy.

    Args:
        policy: has ``values(minibatch) -> values`` (V(s) with gradient, shaped like the minibatch).
        optimizer: steps the value parameters only (see :func:`split_parameters`), so the policy
            is left as it is even where a network shares layers between the two.
        batch: a :class:`minippo.rollout.Batch` with ``returns`` set (R, in reward units).
        iterations: number of Adam steps. minibatch_size: transitions per step, or None for the whole
            batch. generator: seeds the minibatch shuffling.

    Returns the mean squared error averaged over the steps, in squared reward units; NaN for 0 iterations
    (nothing is fitted).

    Raises:
        NonFiniteLossError: the value loss is NaN/inf; no step is taken with it.
    """
    if iterations == 0:
        return float("nan")
    total = 0.0
    stream = _value_minibatches(batch, minibatch_size, generator)
    for _ in range(iterations):
        mb = next(stream)
        values = policy.values(mb)  # the critic alone: the actor's forward pass is not needed here
        value_loss = masked_mean((values - mb.returns) ** 2, mb.mask)
        check_finite(value_loss, "value loss")
        optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        optimizer.step()
        total += value_loss.item()
    return total / iterations
