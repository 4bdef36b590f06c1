"""Where one PPO iteration on CartPole-v1 spends its time, piece by piece (a script, not a test).

Times each piece of the iteration that ``minippo train`` runs with CartPole's defaults (8 envs × 32 steps,
20 epochs of one 256-transition minibatch) with ``torch.utils.benchmark`` (median of repeated runs, one
thread), and two bare kernels for scale: the network's tanh and 64×64 matmul on a minibatch.

    python benchmarks/profile_ppo.py

Run it on a quiet machine: anything else running perturbs the figures.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import gymnasium as gym
import torch
from torch import nn
from torch.utils.benchmark import Timer

from minippo.envs import make_vec_env
from minippo.logger import save_checkpoint
from minippo.policies import MLPActorCritic
from minippo.ppo import PPO
from minippo.rollout import GymRollout, compute_gae
from minippo.train import make_configs


def median_us(fn, min_run_time: float = 1.0) -> float:
    """Median wall time of ``fn()`` in microseconds."""
    return Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e6


def main() -> None:
    torch.set_num_threads(1)  # as minippo.train does on CPU
    train_config, ppo_config = make_configs("ppo", "CartPole-v1")
    T, N, epochs = train_config.num_steps, train_config.num_envs, ppo_config.num_epochs
    envs = make_vec_env("CartPole-v1", N)
    policy = MLPActorCritic(envs.single_observation_space.shape[0], envs.single_action_space)
    ppo = PPO(policy, ppo_config)
    source = GymRollout(envs, T, seed=0)
    batch = source.collect(policy)
    batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                  batch.dones, train_config.gamma, train_config.gae_lambda)
    mb, clip_range = next(batch.minibatches(ppo_config.minibatch_size)), ppo_config.clip_range
    obs, actions = batch.obs[0], batch.actions[0].numpy()
    bare_envs = envs
    while isinstance(bare_envs, gym.vector.VectorWrapper):  # down to the SyncVectorEnv
        bare_envs = bare_envs.env

    def backward():
        loss, _ = ppo.loss(mb, clip_range)
        ppo.optimizer.zero_grad(set_to_none=True)
        loss.backward()

    with torch.no_grad():
        dist = policy.distribution(obs)
    x, linear = torch.randn(mb.obs.shape[0], 64), nn.Linear(64, 64)
    state = {"policy": policy.state_dict(), "algorithm": ppo.state_dict()}
    tmp = tempfile.TemporaryDirectory()
    rows = {  # label: (µs per call, calls per iteration)
        "rollout: policy.act (actor, Categorical sample, log-prob)": (median_us(lambda: policy.act(obs)), T),
        "  of which Categorical(logits) + sample": (median_us(
            lambda: torch.distributions.Categorical(logits=dist.logits, validate_args=False).sample()), T),
        "rollout: envs.step (SyncVectorEnv + RecordEpisodeStatistics)": (
            median_us(lambda: envs.step(actions)), T),
        "  of which the bare SyncVectorEnv": (median_us(lambda: bare_envs.step(actions)), T),
        "rollout: collect() incl. V(s) pass, per step": (median_us(lambda: source.collect(policy)) / T, T),
        "GAE": (median_us(lambda: compute_gae(batch.rewards, batch.values, batch.next_values, batch.dones,
                                            train_config.gamma, train_config.gae_lambda)), 1),
        "update: forward, policy.evaluate (actor + critic)": (median_us(lambda: policy.evaluate(mb)), epochs),
        "update: forward + PPO loss + backward": (median_us(backward), epochs),
        "update: clip_grad_norm_": (median_us(lambda: nn.utils.clip_grad_norm_(policy.parameters(), 1e9)),
                                    epochs),
        "update: Adam step (fused)": (median_us(ppo.optimizer.step), epochs),
        "update: statistics (one no-grad pass)": (median_us(lambda: ppo.statistics(batch, clip_range)), 1),
        "checkpoint save": (median_us(lambda: save_checkpoint(Path(tmp.name) / "checkpoint.pt", state)), 1),
        "kernel: tanh on [256, 64]": (median_us(lambda: torch.tanh(x)), 4 * epochs),
        "kernel: Linear 64→64 on [256, 64]": (median_us(lambda: linear(x)), 2 * epochs),
    }
    envs.close()
    tmp.cleanup()

    print(f"PPO on CartPole-v1, one iteration = {T}×{N} env steps and {epochs} gradient steps "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread)\n")
    print(f"| {'piece':63s} | µs per call | calls/iter | ms/iter |")
    print(f"|{'-' * 65}|------------:|-----------:|--------:|")
    ms = {}
    for label, (us, calls) in rows.items():
        ms[label] = us * calls / 1e3
        print(f"| {label:63s} | {us:11.1f} | {calls:10d} | {ms[label]:7.2f} |")
    rollout = ms["rollout: collect() incl. V(s) pass, per step"]
    update = sum(ms[k] for k in ("update: forward + PPO loss + backward", "update: clip_grad_norm_",
                                 "update: Adam step (fused)", "update: statistics (one no-grad pass)"))
    iteration = rollout + update + ms["GAE"] + ms["checkpoint save"]
    print(f"\nrollout {rollout:.1f} ms + update {update:.1f} ms + GAE and checkpoint = {iteration:.1f} ms "
          f"per iteration, {T * N / iteration * 1e3:,.0f} env steps/s")
    kernels = ms["kernel: tanh on [256, 64]"] + ms["kernel: Linear 64→64 on [256, 64]"]
    print(f"the forward pass's tanh and 64×64 matmul kernels alone: {kernels:.1f} ms per iteration")

if __name__ == "__main__":
    main()
