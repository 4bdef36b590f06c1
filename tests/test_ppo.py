"""PPO: the clipped surrogate's gradient, and learning on CartPole-v1 and Pendulum-v1 on fixed seeds."""

import csv

import numpy as np
import pytest
import torch

from minippo import train
from minippo.ppo import clipped_surrogate_loss
from minippo.rollout import explained_variance


def _surrogate_grad(ratio: float, advantage: float, clip_range: float = 0.2) -> float:
    """d(−L^CLIP)/d log π for one sample whose probability ratio is ``ratio``."""
    log_prob = torch.tensor([np.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss, r = clipped_surrogate_loss(log_prob, torch.zeros(1, dtype=torch.float64),
                                     torch.tensor([advantage], dtype=torch.float64), clip_range)
    assert r.item() == pytest.approx(ratio)
    loss.backward()
    return log_prob.grad.item()


@pytest.mark.parametrize("ratio,advantage", [(1.3, 1.0), (1.21, 2.0), (0.7, -1.0), (0.79, -0.5)])
def test_no_gradient_once_the_ratio_is_clipped_in_the_advantages_direction(ratio, advantage):
    assert _surrogate_grad(ratio, advantage) == 0.0


@pytest.mark.parametrize("ratio,advantage", [(1.1, 1.0), (0.9, -1.0), (0.7, 1.0), (1.3, -1.0), (1.0, 2.0)])
def test_gradient_inside_the_range_or_against_the_advantage(ratio, advantage):
    # Inside [1−ε, 1+ε], or outside but on the side that makes things worse: the unclipped term is
    # the min, and d(−r·Â)/d log π = −r·Â.
    assert _surrogate_grad(ratio, advantage) == pytest.approx(-ratio * advantage)


def test_explained_variance():
    returns = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(returns, returns) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), returns) == pytest.approx(0.0)


def _rows(run_dir):
    with open(run_dir / "progress.csv") as f:
        return list(csv.DictReader(f))


def test_ppo_learns_cartpole(tmp_path):
    torch.set_num_threads(1)
    result = train("CartPole-v1", "ppo", total_steps=50_000, seed=0, out=tmp_path, show_progress=False)
    assert result.status == "finished"
    assert result.final_return >= 400, result.final_return
    rows = _rows(tmp_path)
    assert len(rows) == result.iterations
    expected_columns = {"iteration", "global_step", "time_s", "episodic_return_mean", "episodic_length_mean",
                        "steps_per_s", "policy_loss", "value_loss", "entropy", "approx_kl",
                        "clip_fraction", "explained_variance"}
    assert expected_columns <= set(rows[0])
    assert int(rows[-1]["global_step"]) == result.global_step >= 50_000


def test_ppo_improves_on_pendulum(tmp_path):
    torch.set_num_threads(1)
    result = train("Pendulum-v1", "ppo", total_steps=49_152, seed=0, out=tmp_path, show_progress=False)
    first = np.mean(result.episode_returns[:10])
    assert first < -900  # a random policy
    assert result.final_return > first + 300, (first, result.final_return)
