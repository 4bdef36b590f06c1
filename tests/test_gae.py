"""GAE(γ, λ) against a brute-force sum, and truncation vs termination bootstrapping in the rollout."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from minippo.envs import make_vec_env
from minippo.rollout import Batch, GymRollout, compute_gae


def brute_force_gae(rewards, values, next_values, dones, gamma, lam):
    """Â_t = Σ_l (γλ)^l δ_{t+l}, the sum stopping after the step where the episode ended."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                delta = rewards[k, n] + gamma * next_values[k, n] - values[k, n]
                total += weight * delta
                if dones[k, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.0), (1.0, 1.0), (0.5, 0.7)])
def test_gae_matches_brute_force(gamma, lam):
    g = torch.Generator().manual_seed(0)
    T, N = 17, 5
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    next_values = torch.randn(T, N, generator=g, dtype=torch.float64)
    dones = (torch.rand(T, N, generator=g) < 0.2).double()
    adv, ret = compute_gae(rewards, values, next_values, dones, gamma, lam)
    expected = brute_force_gae(rewards.numpy(), values.numpy(), next_values.numpy(), dones.numpy(),
                               gamma, lam)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), expected + values.numpy(), rtol=1e-10, atol=1e-10)


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.25], [0.125]])
    next_values = torch.tensor([[0.25], [0.125], [0.0]])
    dones = torch.tensor([[0.0], [0.0], [1.0]])
    adv, ret = compute_gae(rewards, values, next_values, dones, gamma=0.5, gae_lambda=1.0)
    # Monte Carlo returns: G_2 = 3, G_1 = 2 + 0.5·3 = 3.5, G_0 = 1 + 0.5·3.5 = 2.75
    torch.testing.assert_close(ret[:, 0], torch.tensor([2.75, 3.5, 3.0]))
    torch.testing.assert_close(adv[:, 0], torch.tensor([2.25, 3.25, 2.875]))


class CountingEnv(gym.Env):
    """Observation = [step index]; reward 1 per step; terminates after ``terminate_at`` steps if set.
    Wrapped in a TimeLimit for truncation."""

    def __init__(self, terminate_at=None):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.terminate_at = terminate_at

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([float(self.t)], np.float32), 1.0, terminated, False, {}


class ValueIsObsPolicy:
    """A fake policy whose value function is V(s) = 10 + s (so bootstrap values are recognisable)."""

    def act(self, obs):
        return torch.zeros(obs.shape[0], dtype=torch.int64), torch.zeros(obs.shape[0])

    def value(self, obs):
        return 10.0 + obs[..., 0]


def _register(name, **kwargs):
    if name not in gym.registry:
        gym.register(name, entry_point=CountingEnv, kwargs=kwargs, max_episode_steps=3)


@pytest.mark.parametrize("ending", ["truncated", "terminated"])
def test_truncation_bootstraps_and_termination_does_not(ending):
    # Episodes of 3 steps that end by the TimeLimit (truncated) or by the env itself (terminated).
    name = f"minippo-test/Counting-{ending}-v0"
    _register(name, terminate_at=None if ending == "truncated" else 3)
    envs = make_vec_env(name, 1)
    batch = GymRollout(envs, num_steps=5, seed=0).collect(ValueIsObsPolicy())
    gamma, lam = 0.5, 1.0

    # Steps 0,1,2 are the episode (obs 0,1,2); step 2 returns the final obs 3; step 3 is the autoreset
    # step (action ignored, reward 0), step 4 is the first step of the next episode.
    np.testing.assert_array_equal(batch.obs[:, 0, 0].numpy(), [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(batch.valid[:, 0].numpy(), [True, True, True, False, True])
    np.testing.assert_array_equal(batch.dones[:, 0].numpy(), [0, 0, 1, 0, 0])
    bootstrap = 13.0 if ending == "truncated" else 0.0  # V(final obs = 3) = 13, or nothing
    assert batch.next_values[2, 0].item() == bootstrap

    adv, ret = compute_gae(batch.rewards, batch.values, batch.next_values, batch.dones, gamma, lam)
    batch.advantages, batch.returns = adv, ret
    # By hand, with γ = 0.5, λ = 1: returns are Monte Carlo returns plus the discounted bootstrap.
    #   G_2 = 1 + 0.5·b,  G_1 = 1 + 0.5·G_2,  G_0 = 1 + 0.5·G_1;  Â_t = G_t − V(s_t) = G_t − (10 + t)
    g2 = 1 + 0.5 * bootstrap
    g1 = 1 + 0.5 * g2
    g0 = 1 + 0.5 * g1
    np.testing.assert_allclose(ret[:3, 0].numpy(), [g0, g1, g2], rtol=1e-6)
    np.testing.assert_allclose(adv[:3, 0].numpy(), [g0 - 10, g1 - 11, g2 - 12], rtol=1e-6)
    # The autoreset step is left out of the update.
    assert batch.all().obs.shape[0] == 4
    envs.close()


def test_value_reaches_one_over_one_minus_gamma_only_with_bootstrapping():
    """On an endless task with reward 1 cut by a time limit, V(s) must learn Σ γ^k = 1/(1−γ). With the
    truncation treated as a termination it would learn a smaller number (as Stable-Baselines3's
    test_gae.py checks). The observation is constant, so V is one number."""

    class Constant(CountingEnv):
        def step(self, action):
            return np.array([0.0], np.float32), 1.0, False, False, {}

    if "minippo-test/Constant-v0" not in gym.registry:
        gym.register("minippo-test/Constant-v0", entry_point=Constant, max_episode_steps=8)
    torch.manual_seed(0)
    gamma = 0.8  # 1/(1−γ) = 5; a truncated-as-terminated episode of 8 steps has mean return ≈ 3.9
    envs = make_vec_env("minippo-test/Constant-v0", 4)
    source = GymRollout(envs, num_steps=16, seed=0)
    critic_bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([critic_bias], lr=0.2)

    class Policy(ValueIsObsPolicy):
        def value(self, obs):
            return critic_bias.expand(obs.shape[:-1])

    for _ in range(150):
        batch = source.collect(Policy())
        _, returns = compute_gae(batch.rewards, batch.values, batch.next_values, batch.dones, gamma, 0.0)
        loss = ((critic_bias - returns[batch.valid]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(critic_bias.item() - 1 / (1 - gamma)) < 0.1
    envs.close()


def _batch_with_invalid_steps(T: int = 6, N: int = 3) -> Batch:
    g = torch.Generator().manual_seed(0)
    rand = lambda: torch.rand((T, N), generator=g)
    valid = torch.ones((T, N), dtype=torch.bool)
    valid[2, 1] = valid[4, 0] = False  # two autoreset steps
    batch = Batch(obs=torch.arange(T * N, dtype=torch.float32).reshape(T, N, 1), actions=torch.zeros(T, N),
                  log_probs=rand(), values=rand(), rewards=rand(), dones=torch.zeros(T, N),
                  next_values=rand(), valid=valid)
    batch.advantages, batch.returns = rand(), rand()
    return batch


@pytest.mark.parametrize("minibatch_size", [1, 4, 16, 17, 1000])
def test_minibatches_cover_every_valid_transition_once(minibatch_size):
    batch = _batch_with_invalid_steps()
    seen = [mb.obs.reshape(-1) for mb in batch.minibatches(minibatch_size, torch.Generator().manual_seed(1))]
    expected = batch.obs.reshape(-1)[batch.valid.reshape(-1)]  # 16 valid transitions
    # The remainder joins the last minibatch: none is smaller than minibatch_size (unless the whole
    # batch is), none reaches twice its size.
    assert all(min(minibatch_size, len(expected)) <= len(s) < 2 * minibatch_size for s in seen)
    assert torch.equal(torch.cat(seen).sort().values, expected.sort().values)
    if minibatch_size >= len(expected):  # one minibatch: the whole batch
        assert len(seen) == 1
