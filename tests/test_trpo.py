"""Tests of minippo/trpo.py: conjugate gradient against a direct solve, the Fisher-vector product against
the explicit Hessian of the mean KL, the line search, one real update, and learning on CartPole."""

import copy
import csv

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import kl_divergence
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from minippo.envs import make_vec_env
from minippo.errors import MinippoError
from minippo.policies import MLPActorCritic
from minippo.rollout import GymRollout, compute_gae
from minippo.train import train
from minippo.trpo import (
    TRPO,
    TRPOConfig,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    line_search,
    surrogate_objective,
)
from minippo.value_function import split_parameters

torch.set_num_threads(1)


@pytest.mark.parametrize("n, seed", [(1, 0), (5, 1), (20, 2), (60, 3)])
def test_conjugate_gradient_solves_spd_system(n, seed):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * n * torch.eye(n, dtype=torch.float64)  # SPD, moderately conditioned
    b = torch.randn(n, generator=g, dtype=torch.float64)
    x, residual_norm = conjugate_gradient(lambda v: A @ v, b, iterations=n, residual_tol=1e-30)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    assert residual_norm < 1e-6


def test_conjugate_gradient_stopped_early_reports_true_residual_and_reduces_error():
    g = torch.Generator().manual_seed(4)
    M = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = M @ M.T + torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(A, b)
    a_norm_errors = [x_star @ A @ x_star]  # x = 0 before the first iteration
    for iterations in range(1, 7):
        products = []

        def Avp(v, products=products):
            products.append(v)
            return A @ v

        x, residual_norm = conjugate_gradient(Avp, b, iterations)
        assert len(products) == iterations
        torch.testing.assert_close(residual_norm, torch.linalg.norm(b - A @ x), rtol=1e-8, atol=1e-10)
        error = x_star - x
        a_norm_errors.append(error @ A @ error)
    # CG minimises the A-norm of the error over a growing subspace, so that error strictly falls (the
    # residual norm need not).
    assert all(a_norm_errors[k + 1] < a_norm_errors[k] for k in range(6))


def test_conjugate_gradient_zero_right_hand_side_stops_at_once():
    x, residual_norm = conjugate_gradient(lambda v: pytest.fail("no product needed"), torch.zeros(4))
    assert torch.equal(x, torch.zeros(4)) and residual_norm == 0


class _Distribution(nn.Module):
    """Wraps ``policy.distribution`` as ``forward`` so torch.func.functional_call can swap in parameters."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, obs):
        return self.policy.distribution(obs)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3),
                                          gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)],
                         ids=["categorical", "gaussian"])
def test_fisher_vector_product_equals_hessian_of_mean_kl(action_space):
    torch.manual_seed(0)
    policy = MLPActorCritic(2, action_space, hidden_sizes=(3,)).double()
    with torch.no_grad():  # move away from the near-uniform initial policy, so F is not degenerate
        for p in policy.actor.parameters():
            p.add_(0.5 * torch.randn_like(p))
    obs = torch.randn(7, 2, dtype=torch.float64)
    params, _ = split_parameters(policy)
    names = [n for n, p in policy.named_parameters() if any(p is q for q in params)]
    theta_old = parameters_to_vector(params).detach()
    with torch.no_grad():
        old_dist = policy.distribution(obs)

    # Brute force: the mean KL as a function of the flat parameter vector, and its full Hessian.
    wrapper = _Distribution(policy)

    def mean_kl(theta):
        chunks = torch.split(theta, [p.numel() for p in params])
        swapped = {"policy." + n: c.view_as(p) for n, c, p in zip(names, chunks, params, strict=True)}
        return kl_divergence(old_dist, functional_call(wrapper, swapped, (obs,))).mean()

    damping = 0.1
    hessian = torch.autograd.functional.hessian(mean_kl, theta_old)
    assert hessian.shape == (len(theta_old), len(theta_old))
    assert torch.linalg.matrix_norm(hessian) > 1e-3  # the comparison below is not trivially 0 == 0

    kl = kl_divergence(old_dist, policy.distribution(obs)).mean()
    kl_gradient = flat_grad(kl, params, create_graph=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(len(theta_old), generator=g, dtype=torch.float64)
        expected = hessian @ v + damping * v
        torch.testing.assert_close(fisher_vector_product(kl_gradient, params, v, damping), expected,
                                   rtol=1e-7, atol=1e-10)


def _collect(env_id, seed=0, num_envs=4, num_steps=128):
    torch.manual_seed(seed)
    envs = make_vec_env(env_id, num_envs)
    policy = MLPActorCritic(envs.single_observation_space.shape[0], envs.single_action_space)
    batch = GymRollout(envs, num_steps, seed=seed).collect(policy)
    envs.close()
    batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                  batch.dones, 0.99, 0.97)
    return policy, batch


def _surrogate_and_kl(old_policy, policy, data, advantages):
    with torch.no_grad():
        old_dist, new_dist = old_policy.evaluate(data)[0], policy.evaluate(data)[0]
        old_log_probs = old_dist.log_prob(data.actions)
        surrogate = surrogate_objective(new_dist.log_prob(data.actions), old_log_probs, advantages)
        surrogate_old = surrogate_objective(old_log_probs, old_log_probs, advantages)
        return (surrogate - surrogate_old).item(), kl_divergence(old_dist, new_dist).mean().item()


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_one_update_stays_in_trust_region_and_improves_surrogate(env_id):
    policy, batch = _collect(env_id)
    old_policy = copy.deepcopy(policy)
    config = TRPOConfig(max_kl=0.01, value_iterations=5)
    stats = TRPO(policy, config).update(batch, progress=0.0)

    assert stats["line_search_steps"] >= 0, "the step was rejected: this test would prove nothing"
    data = batch.all()
    advantages = (data.advantages - data.advantages.mean()) / (data.advantages.std() + 1e-8)
    improvement, kl = _surrogate_and_kl(old_policy, policy, data, advantages)
    assert 0 < kl <= config.max_kl * 1.5
    assert improvement > 0
    assert stats["kl"] == pytest.approx(kl, rel=1e-4)
    assert stats["surrogate_improvement"] == pytest.approx(improvement, rel=1e-3)
    assert stats["step_norm"] > 0
    # The policy step moved only the policy; the critic moved only through its own regression.
    policy_params, _ = split_parameters(policy)
    old_policy_params, _ = split_parameters(old_policy)
    assert not torch.equal(parameters_to_vector(policy_params), parameters_to_vector(old_policy_params))
    assert all(np.isfinite(v) for v in stats.values())


def _line_search_setup():
    policy, batch = _collect("CartPole-v1", seed=1, num_envs=2, num_steps=64)
    data = batch.all()
    params, _ = split_parameters(policy)
    with torch.no_grad():
        old_dist, _ = policy.evaluate(data)
    old_log_probs = old_dist.log_prob(data.actions)
    advantages = data.advantages

    @torch.no_grad()
    def surrogate_and_kl():
        dist, _ = policy.evaluate(data)
        return (surrogate_objective(dist.log_prob(data.actions), old_log_probs, advantages).item(),
                kl_divergence(old_dist, dist).mean().item())

    dist, _ = policy.evaluate(data)
    g = flat_grad(surrogate_objective(dist.log_prob(data.actions), old_log_probs, advantages), params)
    return params, g / g.norm(), surrogate_and_kl


def test_line_search_rejects_a_step_that_lowers_the_surrogate():
    params, direction, surrogate_and_kl = _line_search_setup()
    before = parameters_to_vector(params).clone()
    # Downhill along the gradient: no step size improves the surrogate, even with no KL limit.
    steps, improvement, kl = line_search(params, -0.1 * direction, surrogate_and_kl, max_kl=1e9)
    assert (steps, improvement, kl) == (-1, 0.0, 0.0)
    assert torch.equal(parameters_to_vector(params), before)


def test_line_search_backtracks_into_the_trust_region():
    params, direction, surrogate_and_kl = _line_search_setup()
    before = parameters_to_vector(params).clone()
    max_kl = 1e-3
    # Far too long a step uphill: the first tries break the KL limit and must be shrunk.
    steps, improvement, kl = line_search(params, 5.0 * direction, surrogate_and_kl, max_kl=max_kl)
    assert steps > 0 and improvement > 0 and 0 < kl <= max_kl
    torch.testing.assert_close(parameters_to_vector(params) - before, 0.5 ** steps * 5.0 * direction,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(max_kl=0.0), dict(damping=-0.1), dict(cg_iterations=0),
                                 dict(backtrack_ratio=1.0), dict(backtrack_iterations=0),
                                 dict(value_lr=0.0), dict(value_iterations=-1),
                                 dict(value_minibatch_size=0)])
def test_config_rejects_out_of_range_values(bad):
    name = next(iter(bad))
    with pytest.raises(MinippoError, match=name):
        TRPOConfig(**bad)


def test_trpo_learns_cartpole(tmp_path):
    result = train("CartPole-v1", "trpo", total_steps=25_000, seed=0, device="cpu", out=tmp_path,
                   show_progress=False)
    first = np.mean(result.episode_returns[:10])
    assert first < 40  # the initial, near-uniform policy
    assert result.final_return > 150, result.final_return
    with open(tmp_path / "progress.csv") as f:
        kls = [float(row["kl"]) for row in csv.DictReader(f)]
    assert max(kls) <= 0.01 * 1.5


def test_zero_value_iterations_never_fit_the_value_function():
    # Spinning Up's exercise 2.1: TRPO with the value fitting left out. The update must run, move the
    # policy, leave the critic exactly as it was and report a NaN value loss (nothing was fitted).
    policy, batch = _collect("CartPole-v1")
    _, value_params = split_parameters(policy)
    critic_before = parameters_to_vector(value_params).clone()
    stats = TRPO(policy, TRPOConfig(value_iterations=0)).update(batch, progress=0.0)
    assert np.isnan(stats["value_loss"])
    assert stats["step_norm"] > 0
    assert torch.equal(parameters_to_vector(value_params), critic_before)
