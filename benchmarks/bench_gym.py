"""Benchmark minippo against Stable-Baselines3 on Gymnasium tasks, with the same hyperparameters.

Usage (see benchmarks/README.md)::

    python benchmarks/bench_gym.py                                  # CartPole-v1, Pendulum-v1; seeds 0-4
    python benchmarks/bench_gym.py --envs Acrobot-v1 --seeds 0 1 2 --algos ppo
    python benchmarks/bench_gym.py --envs CartPole-v1 --seeds 0 --total-steps 3000 --out /tmp/bench  # smoke

What runs. For every env in ``--envs``, every algorithm in ``--algos`` (default: all of
``minippo.train.ALGORITHMS`` at run time) and every seed in ``--seeds``, one minippo run
(``minippo.train``, its per-env defaults) and, unless ``--no-sb3`` or the package is missing, one run of
the Stable-Baselines3 counterpart with the *same* hyperparameters translated to SB3's keywords:

    minippo ppo   ->  stable_baselines3.PPO    (a one-to-one mapping)
    minippo vpg   ->  stable_baselines3.A2C    (closest counterpart only: A2C is a synchronous
                                                actor-critic policy gradient, one combined
                                                policy+value gradient step per rollout)
    minippo trpo  ->  sb3_contrib.TRPO         (max_kl -> target_kl, CG and line-search settings)

Each run lives in its own process (multiprocessing "spawn", nothing imported from the other library),
calls ``torch.set_num_threads(1)`` and runs on the CPU. Runs go one at a time by default (``--jobs 1``)
so steps/s is not distorted; the order interleaves libraries (seed 0 minippo, seed 0 SB3, seed 1 ...)
so slow drift of the machine hits both alike.

What it measures, per run:

    steps to threshold   env steps (summed over the parallel envs) at the end of the first rollout
                         after which the mean return of the last 10 finished episodes reaches the
                         threshold: CartPole-v1 >= 475, Pendulum-v1 >= -200, Acrobot-v1 >= -100.
                         The rolling mean is sampled once per rollout (iteration) for both libraries:
                         minippo's progress.csv column rolling_return_mean, SB3 through a callback that
                         collects Monitor's infos["episode"] at each step and samples at _on_rollout_end.
                         "not reached" if it never does within the budget.
    final return         mean return of the last 10 finished training episodes (stochastic policy).
    wall s               seconds from building the envs to the end of training (imports excluded;
                         minippo's per-iteration progress.csv and checkpoint.pt writes included).
    steps/s              total env steps / wall s.
    peak RSS MiB         peak resident memory of the run's process (getrusage ru_maxrss), Python,
                         torch and the library included.

Summary rows are medians over seeds. For the median of steps-to-threshold a seed that never reached the
threshold counts as infinitely many steps, so the median is "not reached" when half or more failed.
The ratio columns are minippo / SB3 on the minippo row: steps-to-threshold ratio < 1 means minippo
needed fewer env steps (better sample efficiency); steps/s ratio > 1 means minippo ran faster.

Output: the tables (Markdown, readable as plain text) on stdout, and in ``--out`` (default
benchmarks/results/): ``bench.md`` (header with the exact command and machine, tables, the hyperparameter
mapping), ``per_seed.csv``, ``summary.csv`` and ``curves.csv`` (rolling return vs env steps per run).
"""

from __future__ import annotations

# Only the standard library at module level: with "spawn" every child re-imports this module, and a
# child must load only the library it benchmarks so that its peak RSS is its own.
import argparse
import csv
import datetime
import importlib
import importlib.metadata
import importlib.util
import math
import multiprocessing as mp
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from multiprocessing.connection import wait
from pathlib import Path

THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0, "Acrobot-v1": -100.0}
DEFAULT_ENVS = ["CartPole-v1", "Pendulum-v1"]

# minippo algorithm -> (module, class) of its SB3 counterpart.
SB3_COUNTERPARTS = {"ppo": ("stable_baselines3", "PPO"), "vpg": ("stable_baselines3", "A2C"),
                    "trpo": ("sb3_contrib", "TRPO")}
SB3_NOTES = {
    "ppo": "SB3 PPO: same algorithm. Differences left: minippo stops the epochs early when the *epoch* "
           "mean approx-KL exceeds target_kl, SB3 when a *minibatch* KL exceeds 1.5 target_kl (only "
           "matters when target_kl is set).",
    "vpg": "SB3 A2C is the closest counterpart, not the same algorithm: it takes ONE gradient step per "
           "rollout on the combined loss policy + vf_coef*value - ent_coef*entropy, with Adam here "
           "(use_rms_prop=False). Any separate value-function learning rate or number of value steps "
           "in minippo's VPG has no A2C equivalent (see 'no SB3 counterpart').",
    "trpo": "sb3_contrib TRPO: max_kl -> target_kl, conjugate-gradient steps and damping, line-search "
            "shrinking factor and iterations; the critic is fitted with Adam for n_critic_updates epochs "
            "of minibatches of batch_size (full batch if minippo names no value minibatch size). Left: "
            "SB3's line search accepts when KL(new||old) < target_kl, minippo when KL(old||new) <= max_kl.",
}
COMMON_NOTES = [
    "Envs: minippo uses gymnasium.make_vec (sync) + RecordEpisodeStatistics; SB3 make_vec_env "
    "(DummyVecEnv + Monitor), seeded with the same seed. Both clip Gaussian actions to the bounds only "
    "when sending them to the env, and bootstrap V(final observation) on time-limit truncation.",
    "minippo keeps Gymnasium's NEXT_STEP autoreset: the step after an episode ends is a reset step that "
    "costs one env step and is left out of the update; SB3 has no such step (about 1 step per episode, "
    "e.g. 0.2% of CartPole's steps at 500-step episodes, 0.5% of Pendulum's).",
    "Learning-rate / clip-range annealing: minippo uses value*(1-(i-1)/K) at iteration i of K; SB3 gets "
    "the schedule value*min(1, p+1/K) of its progress_remaining p = 1-i/K, which is the same number, "
    "and total_timesteps = K*num_steps*num_envs, so both do exactly K iterations.",
    "VecNormalize gets clip_obs = clip_reward = inf because Gymnasium's NormalizeObservation / "
    "NormalizeReward (used by minippo) do not clip.",
]


# ----------------------------------------------------------------------------------------------------
# Translating minippo's merged config into SB3 keyword arguments
# ----------------------------------------------------------------------------------------------------

class LinearSchedule:
    """SB3 schedule (a function of progress_remaining p, 1 -> 0) that equals minippo's linear annealing
    ``value * (1 - (i-1)/K)`` at iteration i of K, since SB3 calls it with p = 1 - i/K."""

    def __init__(self, value: float, num_iterations: int):
        self.value, self.num_iterations = float(value), int(num_iterations)

    def __call__(self, progress_remaining: float) -> float:
        return self.value * min(1.0, progress_remaining + 1.0 / self.num_iterations)

    def __repr__(self) -> str:
        return f"linear({self.value:g} -> {self.value / self.num_iterations:g})"


class _Fields:
    """minippo's algorithm config as a dict; remembers which fields were translated."""

    def __init__(self, fields: dict):
        self.fields, self.used = dict(fields), set()

    def get(self, *names: str, default=None):
        for name in names:
            if name in self.fields:
                self.used.add(name)
                return self.fields[name]
        return default

    def unused(self) -> dict:
        return {k: v for k, v in self.fields.items() if k not in self.used}


def num_iterations(train_cfg: dict) -> int:
    """minippo's number of iterations, as in minippo.train.train."""
    return max(1, math.ceil(train_cfg["total_steps"] / (train_cfg["num_steps"] * train_cfg["num_envs"])))


def sb3_spec(algo: str, train_cfg: dict, algo_cfg: dict, adam_eps: float | None = None
             ) -> tuple[dict, dict, list[str]]:
    """``(kwargs for the SB3 class, minippo fields with no SB3 counterpart, notes)``.

    ``train_cfg`` / ``algo_cfg`` are ``dataclasses.asdict`` of what ``minippo.train.make_configs``
    returns; ``adam_eps`` the eps of minippo's Adam (:func:`minippo_adam_eps`), given to SB3's Adam.
    ``kwargs`` holds everything but the env: ``policy_kwargs``, and the VecNormalize settings under the
    private key ``_vec_normalize`` (None if neither observations nor rewards are normalised).
    """
    from torch import nn

    t, a = train_cfg, _Fields(algo_cfg)
    K = num_iterations(t)
    batch = t["num_steps"] * t["num_envs"]
    notes: list[str] = []

    def schedule(value, anneal):
        return LinearSchedule(value, K) if anneal else value

    kwargs: dict = dict(n_steps=t["num_steps"], gamma=t["gamma"], gae_lambda=t["gae_lambda"])

    def optional(sb3_name: str, *names: str, convert=lambda v: v):
        value = a.get(*names)
        if value is None:
            notes.append(f"{sb3_name}: SB3's default (minippo has none of {', '.join(names)})")
        else:
            kwargs[sb3_name] = convert(value)

    if algo == "ppo":
        anneal_clip = a.get("anneal_clip_range", default=False)
        clip = a.get("clip_range")
        kwargs.update(
            batch_size=a.get("minibatch_size"), n_epochs=a.get("num_epochs"),
            learning_rate=schedule(a.get("learning_rate"), a.get("anneal_lr", default=False)),
            clip_range=schedule(clip, anneal_clip),
            clip_range_vf=schedule(clip, anneal_clip) if a.get("clip_value_loss", default=False) else None,
            ent_coef=a.get("entropy_coef", default=0.0), vf_coef=a.get("value_coef", default=0.5),
            max_grad_norm=a.get("max_grad_norm", default=0.5),
            normalize_advantage=a.get("normalize_advantages", default=True),
            target_kl=a.get("target_kl"))
    elif algo == "vpg":
        lr = a.get("policy_lr", "learning_rate", "policy_learning_rate", "pi_lr")
        if lr is None:
            notes.append("learning_rate: SB3's default (minippo's VPG names no policy learning rate)")
        anneal = a.get("anneal_lr", default=False)
        kwargs.update(learning_rate=lr and schedule(lr, anneal), use_rms_prop=False,
                      ent_coef=a.get("entropy_coef", default=0.0),
                      normalize_advantage=a.get("normalize_advantages", default=False))
        if a.get("value_coef", "vf_coef") is None:
            notes.append("vf_coef: A2C's default 0.5 (minippo's VPG fits V with its own optimiser)")
        else:
            kwargs["vf_coef"] = a.get("value_coef", "vf_coef")
        grad_norm = a.get("max_grad_norm")
        # A2C always clips the gradient norm; an infinite bound clips nothing, like a minippo without it.
        kwargs["max_grad_norm"] = float("inf") if grad_norm is None else grad_norm
    elif algo == "trpo":
        value_lr = a.get("value_lr", "value_learning_rate", "vf_lr", "learning_rate")
        if value_lr is not None:
            kwargs["learning_rate"] = schedule(value_lr, a.get("anneal_lr", default=False))
        else:
            notes.append("learning_rate (critic): SB3's default")
        # minippo: value_iterations Adam steps, each on the whole batch (value_minibatch_size None) or on
        # one minibatch. SB3: n_critic_updates epochs, each over all minibatches of batch_size.
        value_mb = a.get("value_minibatch_size", "minibatch_size")
        kwargs["batch_size"] = value_mb or batch
        value_steps = a.get("value_iterations", "value_epochs", "train_v_iters")
        if value_steps is None:
            notes.append("n_critic_updates: SB3's default (minippo names no number of value steps)")
        elif value_mb is None or value_mb >= batch:
            kwargs["n_critic_updates"] = value_steps
        else:
            minibatches_per_epoch = math.ceil(batch / value_mb)
            kwargs["n_critic_updates"] = max(1, round(value_steps / minibatches_per_epoch))
            notes.append(f"n_critic_updates = round({value_steps} value steps / {minibatches_per_epoch} "
                         f"minibatches per epoch): SB3 counts epochs, minippo steps")
        optional("target_kl", "max_kl", "target_kl")
        optional("cg_max_steps", "cg_iterations", "cg_iters", "cg_max_steps")
        optional("cg_damping", "damping", "cg_damping")
        optional("line_search_shrinking_factor", "backtrack_ratio", "backtrack_coef",
                 "line_search_shrinking_factor")
        optional("line_search_max_iter", "backtrack_iterations", "backtrack_iters", "line_search_max_iter")
        kwargs["normalize_advantage"] = a.get("normalize_advantages", default=True)
        residual_tol = a.get("cg_residual_tol")
        if residual_tol is not None:
            same = residual_tol == 1e-10
            notes.append(f"cg_residual_tol={residual_tol:g}: " + ("the value SB3 TRPO hard-codes" if same
                         else "mismatch, SB3 TRPO hard-codes 1e-10"))
    else:
        raise ValueError(f"no SB3 counterpart for {algo!r}")

    # None means "off" for PPO's target_kl and clip_range_vf; elsewhere it means "not in minippo's config".
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in ("target_kl", "clip_range_vf")}
    kwargs["policy_kwargs"] = dict(net_arch=dict(pi=list(t["hidden_sizes"]), vf=list(t["hidden_sizes"])),
                                   activation_fn=nn.Tanh, ortho_init=True, log_std_init=t["log_std_init"])
    if adam_eps is not None:  # else SB3's ActorCriticPolicy uses Adam with eps 1e-5
        kwargs["policy_kwargs"]["optimizer_kwargs"] = dict(eps=adam_eps)
    kwargs["_vec_normalize"] = (dict(norm_obs=t["normalize_obs"], norm_reward=t["normalize_reward"],
                                     gamma=t["gamma"], clip_obs=float("inf"), clip_reward=float("inf"))
                                if t["normalize_obs"] or t["normalize_reward"] else None)
    return kwargs, a.unused(), notes


def minippo_adam_eps(algo: str, train_config, algo_config) -> tuple[float | None, str]:
    """The eps of the Adam optimiser(s) minippo's ``algo`` builds (read from a freshly built instance,
    so it follows the code), and a note for the mapping. ``(None, note)`` if none is found."""
    import gymnasium as gym
    import torch

    from minippo.policies import MLPActorCritic
    from minippo.train import ALGORITHMS

    env = gym.make(train_config.env_id)
    policy = MLPActorCritic(env.observation_space.shape[0], env.action_space, train_config.hidden_sizes,
                            train_config.log_std_init)
    env.close()
    algorithm = ALGORITHMS[algo][0](policy, algo_config, seed=0)
    eps = {name: group["eps"] for name, opt in vars(algorithm).items()
           if isinstance(opt, torch.optim.Adam) for group in opt.param_groups[:1]}
    if not eps:
        return None, "Adam eps: SB3's default 1e-5 (no Adam optimiser found in minippo's algorithm)"
    first = next(iter(eps.values()))
    note = f"Adam eps {first:g} as minippo's ({', '.join(f'{k} eps={v:g}' for k, v in eps.items())})"
    if len(set(eps.values())) > 1:
        note += "; they differ, SB3's single optimiser gets the first"
    return first, note


# ----------------------------------------------------------------------------------------------------
# One run, in its own process
# ----------------------------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _float(cell: str) -> float:
    return float(cell) if cell not in ("", None) else float("nan")


def _run_minippo(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from minippo.train import train

    import_rss = _peak_rss_mib()
    with tempfile.TemporaryDirectory(prefix="bench-minippo-") as tmp:
        start = time.perf_counter()
        result = train(job["env_id"], job["algo"], total_steps=job["total_steps"], seed=job["seed"],
                       device="cpu", out=tmp, show_progress=False)
        wall = time.perf_counter() - start
        with open(Path(tmp) / "progress.csv", newline="") as f:
            curve = [(int(row["global_step"]), _float(row["rolling_return_mean"]))
                     for row in csv.DictReader(f)]
    return dict(total_steps=result.global_step, wall_s=wall, episode_returns=result.episode_returns,
                curve=curve, status=result.status, import_rss_mib=import_rss)


def _run_sb3(job: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    module_name, class_name = SB3_COUNTERPARTS[job["algo"]]
    algorithm_cls = getattr(importlib.import_module(module_name), class_name)
    kwargs, _, _ = sb3_spec(job["algo"], job["train_cfg"], job["algo_cfg"], job["adam_eps"])
    vec_normalize = kwargs.pop("_vec_normalize")
    t = job["train_cfg"]

    class EpisodeRecorder(BaseCallback):
        """Monitor's episode returns at every step; the rolling-10 mean once per rollout (as minippo)."""

        def __init__(self):
            super().__init__()
            self.returns: list[float] = []
            self.recent: deque[float] = deque(maxlen=10)
            self.curve: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(float(info["episode"]["r"]))
                    self.recent.append(float(info["episode"]["r"]))
            return True

        def _on_rollout_end(self) -> None:
            rolling = statistics.fmean(self.recent) if self.recent else float("nan")
            self.curve.append((int(self.model.num_timesteps), rolling))

    import_rss = _peak_rss_mib()
    start = time.perf_counter()
    env = make_vec_env(t["env_id"], n_envs=t["num_envs"], seed=t["seed"], vec_env_cls=DummyVecEnv)
    if vec_normalize is not None:
        env = VecNormalize(env, **vec_normalize)
    model = algorithm_cls("MlpPolicy", env, seed=t["seed"], device="cpu", verbose=0, **kwargs)
    recorder = EpisodeRecorder()
    model.learn(total_timesteps=num_iterations(t) * t["num_steps"] * t["num_envs"], callback=recorder)
    wall = time.perf_counter() - start
    env.close()
    return dict(total_steps=int(model.num_timesteps), wall_s=wall, episode_returns=recorder.returns,
                curve=recorder.curve, status="finished", import_rss_mib=import_rss)


def _child(job: dict, conn) -> None:
    """Entry point of a spawned process: run one job, send back its result with the peak RSS."""
    try:
        result = (_run_minippo if job["library"] == "minippo" else _run_sb3)(job)
    except BaseException as e:  # noqa: BLE001 (report any failure, keep the benchmark going)
        traceback.print_exc()
        result = dict(status=f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    result["peak_rss_mib"] = _peak_rss_mib()
    conn.send(result)
    conn.close()


# ----------------------------------------------------------------------------------------------------
# Scheduling, statistics, tables
# ----------------------------------------------------------------------------------------------------

def run_jobs(jobs: list[dict], num_parallel: int, on_result) -> None:
    """Run each job in a fresh spawned process, ``num_parallel`` at a time; ``on_result(job, result)``."""
    ctx = mp.get_context("spawn")
    pending, running = list(jobs), {}  # connection -> (process, job)
    while pending or running:
        while pending and len(running) < num_parallel:
            job = pending.pop(0)
            parent_conn, child_conn = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(job, child_conn), daemon=True)
            process.start()
            child_conn.close()
            running[parent_conn] = (process, job)
        for conn in wait(list(running)):
            process, job = running.pop(conn)
            try:
                result = conn.recv()
            except EOFError:  # the child died without a word (killed, out of memory, segfault)
                result = None
            process.join()
            if result is None:
                result = dict(status=f"failed: process exit code {process.exitcode}")
            on_result(job, result)


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float | None) -> float:
    """Env steps of the first rollout whose rolling mean reaches ``threshold``; inf if none; NaN if the
    env has no threshold."""
    if threshold is None:
        return float("nan")
    return next((float(step) for step, rolling in curve if rolling >= threshold), float("inf"))


def _median(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def _fmt_steps(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return "not reached" if math.isinf(x) else f"{int(x):,}"


def _fmt(x: float, digits: int = 1, thousands: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}" if thousands else f"{x:.{digits}f}"


def _ratio(a: float, b: float) -> float:
    if any(math.isnan(v) or math.isinf(v) for v in (a, b)) or b == 0:
        return float("nan")
    return a / b


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def summarise(records: list[dict]) -> list[dict]:
    """One row per (env, algo, library): medians over the seeds that did not fail, plus ratios."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["env"], r["algo"], r["library"]), []).append(r)
    summary = []
    for (env, algo, library), rows in groups.items():
        ok = [r for r in rows if r["status"] == "finished"]
        reached = sum(1 for r in ok if math.isfinite(r["steps_to_threshold"]))
        summary.append(dict(
            env=env, algo=algo, library=library, runs_ok=len(ok), seeds=len(rows),
            reached=reached if env in THRESHOLDS else "",
            threshold=THRESHOLDS.get(env, ""),
            median_steps_to_threshold=_median([r["steps_to_threshold"] for r in ok]),
            median_final_return=_median([r["final_return"] for r in ok]),
            median_wall_s=_median([r["wall_s"] for r in ok]),
            median_steps_per_s=_median([r["steps_per_s"] for r in ok]),
            median_peak_rss_mib=_median([r["peak_rss_mib"] for r in ok]),
            ratio_steps_to_threshold="", ratio_steps_per_s=""))
    by_key = {(s["env"], s["algo"], s["library"] == "minippo"): s for s in summary}
    for s in summary:
        other = by_key.get((s["env"], s["algo"], False))
        if s["library"] == "minippo" and other is not None:
            s["ratio_steps_to_threshold"] = _ratio(s["median_steps_to_threshold"],
                                                   other["median_steps_to_threshold"])
            s["ratio_steps_per_s"] = _ratio(s["median_steps_per_s"], other["median_steps_per_s"])
    return summary


def per_seed_rows(records: list[dict]) -> list[list[str]]:
    return [[r["env"], r["algo"], r["library"], str(r["seed"]), _fmt_steps(r["steps_to_threshold"]),
             _fmt(r["final_return"]), _fmt(r["wall_s"]), _fmt(r["steps_per_s"], 0, True),
             _fmt(r["peak_rss_mib"], 0), f"{r['total_steps']:,}" if r["total_steps"] else "n/a",
             r["status"]] for r in records]


PER_SEED_HEADER = ["env", "algo", "library", "seed", "steps to threshold", "final return", "wall s",
                   "steps/s", "peak RSS MiB", "total steps", "status"]
SUMMARY_HEADER = ["env", "algo", "library", "reached", "median steps to threshold", "median final return",
                  "median wall s", "median steps/s", "median peak RSS MiB", "steps-to-thr ratio minippo/SB3",
                  "steps/s ratio minippo/SB3"]


def summary_rows(summary: list[dict]) -> list[list[str]]:
    rows = []
    for s in summary:
        reached = f"{s['reached']}/{s['seeds']}" if s["reached"] != "" else "n/a"
        rows.append([s["env"], s["algo"], s["library"], reached, _fmt_steps(s["median_steps_to_threshold"]),
                     _fmt(s["median_final_return"]), _fmt(s["median_wall_s"]),
                     _fmt(s["median_steps_per_s"], 0, True), _fmt(s["median_peak_rss_mib"], 0),
                     _fmt(s["ratio_steps_to_threshold"], 2) if s["ratio_steps_to_threshold"] != "" else "",
                     _fmt(s["ratio_steps_per_s"], 2) if s["ratio_steps_per_s"] != "" else ""])
    return rows


# ----------------------------------------------------------------------------------------------------
# Header: command, machine, versions
# ----------------------------------------------------------------------------------------------------

def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision() -> str:
    repo = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + (" (uncommitted changes)" if dirty else "")) if rev else "unknown"


def header_lines(args, argv: list[str], sb3_available: dict[str, bool]) -> list[str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        "Command: `python " + shlex.join(argv) + "`",
        f"Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"Machine: {_cpu_model()}; os.cpu_count()={os.cpu_count()} (usable: {affinity}); "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}",
        f"Versions: minippo {_version('minippo')} (git {_git_revision()}), torch {_version('torch')}, "
        f"gymnasium {_version('gymnasium')}, numpy {_version('numpy')}, "
        f"stable-baselines3 {_version('stable-baselines3')}, sb3-contrib {_version('sb3-contrib')}",
        f"Runs: each in its own spawned process, torch.set_num_threads(1), device cpu, --jobs {args.jobs}"
        + (" (one run at a time)" if args.jobs == 1 else " (runs overlap: timings are perturbed)"),
        "SB3: " + ("disabled (--no-sb3)" if args.no_sb3 else
                   ", ".join(f"{m} {'installed' if ok else 'NOT installed (skipped)'}"
                             for m, ok in sb3_available.items())),
        "Thresholds (rolling mean of the last 10 episodes, sampled once per rollout): "
        + ", ".join(f"{e} >= {v:g}" for e, v in THRESHOLDS.items()),
    ]


# ----------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=DEFAULT_ENVS,
                   help=f"Gymnasium ids (default: {' '.join(DEFAULT_ENVS)}; thresholds known for "
                   f"{', '.join(THRESHOLDS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="default: 0 1 2 3 4")
    p.add_argument("--algos", nargs="+", help="minippo algorithms (default: all in minippo.train.ALGORITHMS)")
    p.add_argument("--total-steps", type=int, help="env-step budget for every run (default: the per-env "
                   "defaults of each algorithm)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1; 2 halves the wall time "
                   "on 2+ cores but perturbs steps/s and wall time)")
    p.add_argument("--no-sb3", action="store_true", help="run minippo only")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="folder for bench.md and the CSVs (default: benchmarks/results/)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    if args.total_steps is not None and args.total_steps < 1:
        p.error("--total-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    import dataclasses

    from minippo.envs import check_env_id
    from minippo.errors import MinippoError
    from minippo.train import ALGORITHMS, make_configs

    algos = args.algos or list(ALGORITHMS)
    try:
        unknown = [a for a in algos if a not in ALGORITHMS]
        if unknown:
            raise MinippoError(f"unknown algorithm(s) {unknown}; minippo has {sorted(ALGORITHMS)}")
        for env_id in args.envs:
            check_env_id(env_id)
        configs = {(env, algo): make_configs(algo, env, total_steps=args.total_steps, device="cpu")
                   for env in args.envs for algo in algos}
    except MinippoError as e:
        print(f"bench_gym.py: error: {e}", file=sys.stderr)
        return 2

    sb3_available = {m: importlib.util.find_spec(m) is not None
                     for m in sorted({m for m, _ in SB3_COUNTERPARTS.values()})}

    def counterpart(algo: str) -> str | None:
        if args.no_sb3 or algo not in SB3_COUNTERPARTS or not sb3_available[SB3_COUNTERPARTS[algo][0]]:
            return None
        module, name = SB3_COUNTERPARTS[algo]
        return f"{module}.{name}"

    header = header_lines(args, [sys.argv[0], *argv], sb3_available)
    print("# minippo vs Stable-Baselines3\n")
    print("\n".join(f"- {line}" for line in header), flush=True)

    # The hyperparameters of each (env, algo), minippo's and SB3's.
    mapping_md, adam_eps = [], {}
    for (env, algo), (train_config, algo_config) in configs.items():
        train_cfg, algo_cfg = dataclasses.asdict(train_config), dataclasses.asdict(algo_config)
        shown = {k: v for k, v in train_cfg.items() if k not in ("env_id", "algo", "seed", "device")}
        mapping_md += [f"### {env} {algo}", "",
                       f"- minippo: {shown} | {algo_cfg} ({num_iterations(train_cfg)} iteration(s))"]
        if counterpart(algo):
            adam_eps[(env, algo)], eps_note = minippo_adam_eps(algo, train_config, algo_config)
            kwargs, unused, notes = sb3_spec(algo, train_cfg, algo_cfg, adam_eps[(env, algo)])
            notes.append(eps_note)
            vec_normalize = kwargs.pop("_vec_normalize")
            policy_kwargs = kwargs.pop("policy_kwargs")
            policy_kwargs["activation_fn"] = policy_kwargs["activation_fn"].__name__
            mapping_md += [f"- {counterpart(algo)}: {kwargs}", f"  - policy_kwargs: {policy_kwargs}",
                           f"  - n_envs={train_cfg['num_envs']} (DummyVecEnv), VecNormalize: {vec_normalize}",
                           f"  - minippo fields with no SB3 counterpart: {unused or 'none'}",
                           *(f"  - {n}" for n in notes), f"  - {SB3_NOTES[algo]}"]
        mapping_md.append("")

    jobs = []
    for env in args.envs:
        for algo in algos:
            train_cfg, algo_cfg = (dataclasses.asdict(c) for c in configs[(env, algo)])
            for seed in args.seeds:
                libraries = ["minippo"] + ([counterpart(algo)] if counterpart(algo) else [])
                for library in libraries:
                    jobs.append(dict(library=library, env_id=env, algo=algo, seed=seed,
                                     total_steps=args.total_steps,
                                     train_cfg={**train_cfg, "seed": seed}, algo_cfg=algo_cfg,
                                     adam_eps=adam_eps.get((env, algo))))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)  # now, not after an hour of runs
    records: list[dict] = []
    curves: list[dict] = []
    started = time.perf_counter()
    print(f"\n{len(jobs)} runs, {args.jobs} at a time:", flush=True)

    def on_result(job: dict, result: dict) -> None:
        curve = result.get("curve", [])
        returns = result.get("episode_returns", [])
        total, wall = result.get("total_steps", 0), result.get("wall_s", float("nan"))
        record = dict(env=job["env_id"], algo=job["algo"], library=job["library"], seed=job["seed"],
                      threshold=THRESHOLDS.get(job["env_id"], ""),
                      steps_to_threshold=steps_to_threshold(curve, THRESHOLDS.get(job["env_id"])),
                      final_return=statistics.fmean(returns[-10:]) if returns else float("nan"),
                      episodes=len(returns), wall_s=wall, total_steps=total,
                      steps_per_s=total / wall if total and wall > 0 else float("nan"),
                      peak_rss_mib=result.get("peak_rss_mib", float("nan")),
                      import_rss_mib=result.get("import_rss_mib", float("nan")), status=result["status"])
        records.append(record)
        curves.extend(dict(env=record["env"], algo=record["algo"], library=record["library"],
                           seed=record["seed"], global_step=s, rolling_return_mean=r) for s, r in curve)
        row = per_seed_rows([record])[0]
        print(f"[{len(records)}/{len(jobs)}] {row[0]} {row[1]} {row[2]} seed {row[3]}: steps to threshold "
              f"{row[4]}, final return {row[5]}, {row[6]} s, {row[7]} steps/s, {row[8]} MiB, {row[10]}",
              flush=True)

    try:
        run_jobs(jobs, args.jobs, on_result)
    except KeyboardInterrupt:
        print("\nInterrupted: reporting the runs that finished.", flush=True)
    records.sort(key=lambda r: (args.envs.index(r["env"]), algos.index(r["algo"]), r["seed"],
                                r["library"] != "minippo"))
    summary = summarise(records)
    summary.sort(key=lambda s: (args.envs.index(s["env"]), algos.index(s["algo"]), s["library"] != "minippo"))

    summary_md = markdown_table(SUMMARY_HEADER, summary_rows(summary))
    per_seed_md = markdown_table(PER_SEED_HEADER, per_seed_rows(records))
    legend = ("Medians over seeds. Ratios are minippo / SB3: steps-to-threshold ratio < 1 = minippo needs "
              "fewer env steps; steps/s ratio > 1 = minippo runs faster. Peak RSS is per run (its own "
              "process), interpreter and libraries included.")
    elapsed = time.perf_counter() - started
    notes_md = "\n".join(f"- {n}" for n in COMMON_NOTES)
    tables = (f"## Summary\n\n{summary_md}\n\n{legend}\n\n## Per seed\n\n{per_seed_md}\n\n"
              f"## Hyperparameters\n\n{notes_md}\n\n" + "\n".join(mapping_md))
    print(f"\nTotal benchmark time: {elapsed:.0f} s\n\n{tables}")
    header_md = "\n".join(f"- {line}" for line in header)
    (out / "bench.md").write_text(f"# minippo vs Stable-Baselines3\n\n{header_md}\n"
                                  f"- Total benchmark time: {elapsed:.0f} s\n\n{tables}")
    write_csv(out / "per_seed.csv", records)
    write_csv(out / "summary.csv", summary)
    write_csv(out / "curves.csv", curves)
    print(f"Wrote {out / 'bench.md'}, per_seed.csv, summary.csv, curves.csv")
    return 0 if all(r["status"] == "finished" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
