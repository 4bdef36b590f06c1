"""A student's own environment, registered on import, for the ``module:EnvId`` tests in test_errors.py.

``gymnasium.make("envs_for_tests:EndlessConstant-v0")`` imports this module, which registers the env.
"""

import gymnasium as gym
import numpy as np


class EndlessConstant(gym.Env):
    """Reward 1 every step, whatever the action; never terminates (the TimeLimit truncates it)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), 1.0, False, False, {}


if "EndlessConstant-v0" not in gym.registry:
    gym.register("EndlessConstant-v0", entry_point=EndlessConstant, max_episode_steps=20)
