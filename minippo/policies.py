"""The MLP actor-critic for Gymnasium tasks.

A *policy* is anything with the three methods the rollout and the algorithms use:

    act(obs)        -> actions, log_probs               (collection; no gradient)
    value(obs)      -> values                           (V(s) for GAE, one pass over the rollout)
    evaluate(mb)    -> dist, values                     (the update; ``dist`` is a torch Distribution
                                                          whose batch shape is the minibatch shape S)
    values(mb)      -> values                           (value fitting in VPG/TRPO, without the actor)

``minippo.lm`` gives a small GPT with a value head the same three methods, so VPG, TRPO and PPO train
either without knowing which.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal


def mlp(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int, out_gain: float) -> nn.Sequential:
    """Linear-tanh layers with orthogonal init (gain √2 on hidden layers, ``out_gain`` on the last, zero
    biases), as in the PPO implementation details of Engstrom et al. 2020 / Huang et al. 2022."""
    layers, sizes = [], (in_dim, *hidden_sizes)
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [_init(nn.Linear(a, b), math.sqrt(2)), nn.Tanh()]
    layers.append(_init(nn.Linear(sizes[-1], out_dim), out_gain))
    return nn.Sequential(*layers)


def _init(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLPActorCritic(nn.Module):
    """Separate actor and critic MLPs (64-64 tanh by default).

    * ``Discrete(n)`` actions: a categorical distribution over ``n`` logits.
    * ``Box(d)`` actions: a diagonal Gaussian ``N(μ(s), diag σ²)`` with a state-independent, learned
      ``log_std`` of shape ``[d]``. Sampled actions are *not* clipped here; the env's ``ClipAction``
      wrapper clips what is sent to the env, while log-probabilities are of the unclipped sample.

    Args:
        obs_dim: size of the flat observation vector.
        action_space: a ``gymnasium.spaces.Discrete`` or 1-D ``Box``.
        hidden_sizes: widths of the hidden layers of both MLPs.
        log_std_init: initial log σ of the Gaussian (ignored for discrete actions).

    Shapes: ``obs`` is ``[*S, obs_dim]``; actions ``[*S]`` (int64) or ``[*S, d]``; log-probs and values
    ``[*S]``.
    """

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden_sizes: tuple[int, ...] = (64, 64),
                 log_std_init: float = 0.0):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        out_dim = int(action_space.n) if self.discrete else int(action_space.shape[0])
        # Small last-layer gain: the initial policy is near uniform / near zero-mean.
        self.actor = mlp(obs_dim, hidden_sizes, out_dim, out_gain=0.01)
        self.critic = mlp(obs_dim, hidden_sizes, 1, out_gain=1.0)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((out_dim,), float(log_std_init)))

    def distribution(self, obs: Tensor) -> Distribution:
        """π(·|s) for ``obs`` ``[*S, obs_dim]``; its batch shape is ``S``."""
        out = self.actor(obs)
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Independent(Normal(out, self.log_std.exp().expand_as(out), validate_args=False), 1,
                           validate_args=False)

    def value(self, obs: Tensor) -> Tensor:
        """V(s) ``[*S]``."""
        return self.critic(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Sample (or, if ``deterministic``, take the mode/mean of) an action for each observation.

        Returns ``(actions, log_probs)``."""
        dist = self.distribution(obs)
        if deterministic:
            action = dist.probs.argmax(-1) if self.discrete else dist.mean
        else:
            action = dist.sample()
        return action, dist.log_prob(action)

    def evaluate(self, mb) -> tuple[Distribution, Tensor]:
        """``(π(·|s), V(s))`` for the observations of a :class:`minippo.rollout.Minibatch`, with gradient."""
        return self.distribution(mb.obs), self.value(mb.obs)

    def values(self, mb) -> Tensor:
        """V(s) ``[*S]`` for the observations of a minibatch, with gradient (the critic alone)."""
        return self.value(mb.obs)
