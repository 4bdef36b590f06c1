"""A student's own environments, registered on import: EndlessConstant-v0 for the ``module:EnvId`` tests in
test_errors.py, and envs whose step goes wrong after a while (raises, or returns NaN) for test_robustness.py.

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


class FaultyEnv(EndlessConstant):
    """EndlessConstant until its ``FAULT_AT``-th ``step`` call (counted over resets), then faulty every step
    (each subclass says how): for the tests of a broken env stopping training (test_robustness.py)."""

    FAULT_AT = 41  # with num_steps=16 and 1 env, the 41st call is in the 3rd rollout (TimeLimit 20)

    def __init__(self):
        self.calls = 0

    def step(self, action):
        self.calls += 1
        obs, reward, terminated, truncated, info = super().step(action)
        if self.calls >= self.FAULT_AT:
            obs, reward = self.fault(obs, reward)
        return obs, reward, terminated, truncated, info

    def fault(self, obs, reward):
        raise NotImplementedError


class FailingStep(FaultyEnv):
    def fault(self, obs, reward):
        raise RuntimeError(f"simulator diverged at call {self.calls}\nsecond line of the message")


class NaNObservation(FaultyEnv):
    def fault(self, obs, reward):
        obs[1] = np.nan
        return obs, reward


class NaNReward(FaultyEnv):
    def fault(self, obs, reward):
        return obs, float("nan")


for _name, _cls in (("FailingStep-v0", FailingStep), ("NaNObservation-v0", NaNObservation),
                    ("NaNReward-v0", NaNReward)):
    if _name not in gym.registry:
        gym.register(_name, entry_point=_cls, max_episode_steps=20)


class NoRender(EndlessConstant):
    """EndlessConstant that takes a ``render_mode`` but renders nothing (no ``rgb_array``): for
    test_video.py's check that recording it is refused in one line."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode=None):
        self.render_mode = render_mode


if "NoRender-v0" not in gym.registry:
    gym.register("NoRender-v0", entry_point=NoRender, max_episode_steps=20)
