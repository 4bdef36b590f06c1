"""minippo: VPG, TRPO and PPO from scratch in PyTorch, on one rollout/GAE core.

Where each idea lives:

    rollout.py         Batch [T, N], GAE(γ, λ), group baselines, collecting from Gymnasium vector envs
    envs.py            making vector envs (Gymnasium wrappers), clear errors for bad ids and spaces
    policies.py        MLP actor-critic: categorical (Discrete) and diagonal Gaussian (Box) heads
    vpg.py             REINFORCE with a learned baseline (the policy-gradient loss)
    value_function.py  fitting V separately from the policy, as VPG and TRPO do
    trpo.py            Fisher-vector products, conjugate gradient, the KL-constrained line search
    ppo.py             the PPO update (clipped surrogate)
    rloo.py, grpo.py   no value function: leave-one-out and group-standardised baselines (text)
    train.py           the loop shared by all algorithms: collect → advantages → update → log → checkpoint
    logger.py          progress.csv, config.json, atomic checkpoints
    lm/                the tiny GPT, the reward model, RLHF, best-of-n and DPO
    cli.py             the `minippo` command
"""

from .errors import EnvStepError, MinippoError, NonFiniteLossError
from .rollout import Batch, GymRollout, Minibatch, compute_gae
from .train import evaluate, resume, train

__all__ = ["Batch", "EnvStepError", "GymRollout", "MinippoError", "Minibatch", "NonFiniteLossError",
           "compute_gae", "evaluate", "resume", "train"]
__version__ = "0.1.0"
