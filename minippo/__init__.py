"""minippo: VPG, TRPO and PPO from scratch in PyTorch, on one rollout/GAE core.

Where each idea lives:

    rollout.py    Batch [T, N], GAE(γ, λ), collecting from Gymnasium vector envs
    envs.py       making vector envs (Gymnasium wrappers), clear errors for bad ids and spaces
    policies.py   MLP actor-critic: categorical (Discrete) and diagonal Gaussian (Box) heads
    ppo.py        the PPO update (clipped surrogate)
    train.py      the loop shared by all algorithms: collect → GAE → update → log → checkpoint
    logger.py     progress.csv, config.json, atomic checkpoints
    cli.py        the `minippo` command
"""

from .errors import MinippoError, NonFiniteLossError
from .rollout import Batch, GymRollout, Minibatch, compute_gae
from .train import evaluate, train

__all__ = ["Batch", "GymRollout", "MinippoError", "Minibatch", "NonFiniteLossError", "compute_gae",
           "evaluate", "train"]
__version__ = "0.1.0"
