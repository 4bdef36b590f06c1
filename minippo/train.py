"""The training loop shared by every algorithm and every task — collect, GAE, update, log, checkpoint —
and its Gymnasium front end :func:`train` plus :func:`evaluate`.

One iteration of :func:`run_loop`::

    batch = source.collect(policy)                                   # [T, N]
    batch.advantages, batch.returns = advantage_estimator(batch)     # GAE(γ, λ), or a group baseline
    stats = algorithm.update(batch, progress)                        # VPG, TRPO or PPO
    progress.csv += one row;  checkpoint.pt := new state             # written atomically
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import ppo, trpo, vpg
from .envs import (
    check_env_id,
    get_obs_normalization,
    get_reward_normalization,
    make_vec_env,
    set_obs_normalization,
    set_reward_normalization,
    space_signature,
)
from .errors import EnvStepError, MinippoError, check_range
from .logger import (
    CSVLogger,
    keep_progress_rows,
    load_checkpoint,
    log_scalars,
    progress_rows,
    read_run_config,
    require_tensorboard,
    save_checkpoint,
    tensorboard_writer,
    write_json,
)
from .policies import MLPActorCritic
from .rollout import GAE, GymRollout
from .video import make_render_env, record_training_video

# name -> (update class, its config dataclass, its per-env defaults)
ALGORITHMS: dict[str, tuple[type, type, dict]] = {
    "ppo": (ppo.PPO, ppo.PPOConfig, ppo.DEFAULTS),
    "vpg": (vpg.VPG, vpg.VPGConfig, vpg.DEFAULTS),
    "trpo": (trpo.TRPO, trpo.TRPOConfig, trpo.DEFAULTS),
}


@dataclass
class TrainConfig:
    """Settings shared by all algorithms on Gymnasium tasks.

    env_id            a registered Gymnasium id, e.g. "CartPole-v1".
    algo              "ppo" (and "vpg", "trpo" where registered in ALGORITHMS).
    total_steps       env-step budget, summed over the N envs (> 0).
    num_envs          N, parallel envs in the sync vector env (1 – 64).
    num_steps         T, steps per env per rollout; a batch has T·N transitions.
    gamma             discount γ in [0, 1].
    gae_lambda        GAE λ in [0, 1].
    seed              seeds the envs, the network init and the sampling.
    device            "auto" (CUDA if present), "cpu" or "cuda".
    normalize_obs     Gymnasium's NormalizeObservation (running mean/std; saved in checkpoints).
    normalize_reward  Gymnasium's NormalizeReward (scales by the std of the discounted return).
    hidden_sizes      hidden widths of the actor and critic MLPs.
    log_std_init      initial log σ of the Gaussian policy (continuous actions).
    """

    env_id: str = "CartPole-v1"
    algo: str = "ppo"
    total_steps: int = 100_000
    num_envs: int = 8
    num_steps: int = 128
    gamma: float = 0.99
    gae_lambda: float = 0.95
    seed: int = 0
    device: str = "auto"
    normalize_obs: bool = False
    normalize_reward: bool = False
    hidden_sizes: tuple[int, ...] = (64, 64)
    log_std_init: float = 0.0

    def __post_init__(self):
        self.hidden_sizes = _hidden_sizes(self.hidden_sizes)
        if self.algo not in ALGORITHMS:
            raise MinippoError(f"Unknown algorithm {self.algo!r}; choose one of {sorted(ALGORITHMS)}.")
        self.total_steps = _whole_number("total_steps", self.total_steps)
        self.num_envs = _whole_number("num_envs", self.num_envs)
        self.num_steps = _whole_number("num_steps", self.num_steps)
        self.seed = _whole_number("seed", self.seed)
        check_range("total_steps", self.total_steps, 1)
        check_range("num_envs", self.num_envs, 1, 1024)
        check_range("num_steps", self.num_steps, 1)
        # Non-negative for NumPy and Gymnasium; 32 bits, the range every seeded library accepts (a seed
        # of 2**64 or more made torch.manual_seed raise OverflowError).
        check_range("seed", self.seed, 0, 2**32 - 1)
        check_range("gamma", self.gamma, 0, 1)
        check_range("gae_lambda", self.gae_lambda, 0, 1)
        if not isinstance(self.device, str) or (self.device not in ("auto", "cpu", "cuda")
                                                and not self.device.startswith("cuda:")):
            raise MinippoError(f"device={self.device!r} is not one of auto, cpu, cuda.")


def _whole_number(name: str, value) -> int:
    """``value`` as an int; integral floats such as ``1e5`` are accepted, anything else is refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise MinippoError(f"{name}={value!r} is not a whole number: it must be an int, e.g. {name}=100000 "
                           "(1e5 is accepted too).")
    return int(value)


def _hidden_sizes(value) -> tuple[int, ...]:
    """``64``, ``(64, 64)`` or ``[64, 64]`` → a tuple of positive ints (the hidden layer widths)."""
    sizes = value if isinstance(value, (tuple, list)) else (value,)
    if not sizes or any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1 for h in sizes):
        raise MinippoError(f"hidden_sizes={value!r} is not valid: it must be one or more positive ints, "
                           "e.g. --hp hidden_sizes=64 or --hp hidden_sizes=64,64.")
    return tuple(int(h) for h in sizes)


def make_configs(algo: str = "ppo", env_id: str = "CartPole-v1", **overrides) -> tuple[TrainConfig, object]:
    """Merge the algorithm's per-env defaults with ``overrides`` and split them into a
    :class:`TrainConfig` and the algorithm's config dataclass.

    Raises:
        MinippoError: unknown algorithm, unknown hyperparameter name, or a value out of its range.
    """
    if algo not in ALGORITHMS:
        raise MinippoError(f"Unknown algorithm {algo!r}; choose one of {sorted(ALGORITHMS)}.")
    _, algo_config_cls, defaults = ALGORITHMS[algo]
    merged = {**defaults["default"], **defaults.get(env_id, {}),
              **{k: v for k, v in overrides.items() if v is not None}}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    algo_fields = {f.name for f in dataclasses.fields(algo_config_cls)}
    unknown = set(merged) - train_fields - algo_fields
    if unknown:
        raise MinippoError(f"Unknown hyperparameter(s) {sorted(unknown)} for {algo}. Valid names: "
                           f"{sorted(train_fields | algo_fields)}.")
    for f in (*dataclasses.fields(TrainConfig), *dataclasses.fields(algo_config_cls)):
        # A switch must be a bool: --hp normalize_obs=false parses as the string 'false', which is truthy.
        if f.type == "bool" and f.name in merged and not isinstance(merged[f.name], bool):
            raise MinippoError(f"{f.name}={merged[f.name]!r} is not True or False: write e.g. --hp "
                               f"{f.name}=False.")
    try:
        train_config = TrainConfig(env_id=env_id, algo=algo,
                                   **{k: v for k, v in merged.items() if k in train_fields})
        algo_config = algo_config_cls(**{k: v for k, v in merged.items() if k in algo_fields})
    except TypeError as e:  # e.g. a string where a number belongs
        raise MinippoError(f"Bad hyperparameter value: {e}") from None
    return train_config, algo_config


def resolve_device(device: str) -> torch.device:
    """"auto" → CUDA when available, else CPU. Raises :class:`MinippoError` for "cuda" without a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MinippoError("--device cuda was asked for but no CUDA GPU is available; use --device cpu "
                           "or auto.")
    return torch.device(device)


@dataclass
class RunResult:
    """What a finished (or stopped) run reports."""

    run_dir: Path
    iterations: int
    global_step: int
    time_s: float
    episode_returns: list[float] = field(default_factory=list)
    status: str = "finished"  # "finished", "interrupted" or "failed"

    @property
    def final_return(self) -> float:
        """Mean return of the last 10 finished episodes (NaN if none)."""
        last = self.episode_returns[-10:]
        return float(np.mean(last)) if last else float("nan")


def run_loop(source, policy: torch.nn.Module, algorithm, *, num_iterations: int, gamma: float,
             gae_lambda: float, run_dir: Path, checkpoint_extra: Callable[[], dict],
             show_progress: bool = True, desc: str = "", resume_from: dict | None = None,
             advantage_estimator: Callable | None = None, tensorboard=None,
             video_every: int | None = None) -> RunResult:
    """The loop every algorithm and task shares: collect → GAE → update → log → checkpoint.

    Args:
        source: a rollout source with ``collect(policy) -> Batch`` (:class:`minippo.rollout.GymRollout`
            or the text source of ``minippo.lm``).
        policy: the policy being trained. algorithm: an object with ``update(batch, progress) -> dict``
            and ``state_dict()`` (``ppo.PPO``, ``vpg.VPG``, ``trpo.TRPO``).
        num_iterations: number of collect/update iterations. gamma, gae_lambda: GAE(γ, λ).
        run_dir: receives ``progress.csv`` and ``checkpoint.pt`` (``config.json`` is the caller's).
        checkpoint_extra: returns what else the checkpoint holds (config, env signature, obs statistics).
        resume_from: a loaded checkpoint to continue from (:func:`restore_loop_state`): the loop starts at
            its iteration + 1 and appends to ``progress.csv``, dropping rows after that iteration.
        advantage_estimator: ``estimator(batch) -> (advantages, returns)``, both ``[T, N]``. None (the
            default): GAE(γ, λ), :class:`minippo.rollout.GAE`. RLOO and GRPO pass a group baseline,
            :class:`minippo.rollout.GroupBaseline` (then ``gamma`` and ``gae_lambda`` are unused).
        tensorboard: None, or a ``SummaryWriter`` (:func:`minippo.logger.tensorboard_writer`) that gets
            every progress.csv row as scalars too (:func:`minippo.logger.log_scalars`); the caller closes it.
        video_every: every that many iterations, and after the last, record one episode of the checkpoint
            just written to ``run_dir/videos/iter-XXXXX.gif`` (:func:`minippo.video.record_training_video`;
            Gymnasium runs only).

    Ctrl-C stops after saving nothing new: the checkpoint of the last completed iteration stays. A
    non-finite loss raises :class:`minippo.errors.NonFiniteLossError` the same way, after the CSV row of
    every completed iteration is on disk.
    """
    estimate_advantages = advantage_estimator or GAE(gamma, gae_lambda)
    run_dir.mkdir(parents=True, exist_ok=True)
    first, global_step, all_returns, time_before = 1, 0, [], 0.0
    if resume_from is not None:
        first, global_step, all_returns, time_before = restore_loop_state(resume_from, policy, algorithm)
        keep_progress_rows(run_dir / "progress.csv", first - 1)
    logger = CSVLogger(run_dir / "progress.csv", append=resume_from is not None)
    start = time.perf_counter() - time_before  # a resumed run's clock goes on from its checkpoint
    result = RunResult(run_dir, first - 1, global_step, time_before, all_returns)
    # Steps are env steps (tokens for text); tqdm shows steps/s itself.
    bar = tqdm(desc=desc, unit="step", unit_scale=True, disable=not show_progress, dynamic_ncols=True)
    try:
        for iteration in range(first, num_iterations + 1):
            try:
                batch = source.collect(policy)
            except EnvStepError as e:  # say when, and that nothing of the completed iterations is lost
                kept = (f"the checkpoint of iteration {iteration - 1} in {run_dir} is kept" if iteration > 1
                        else f"no iteration was completed, so {run_dir} holds no checkpoint")
                raise EnvStepError(f"{e} of iteration {iteration}; {kept}.") from e.__cause__
            batch.advantages, batch.returns = estimate_advantages(batch)
            stats = algorithm.update(batch, progress=(iteration - 1) / num_iterations)

            global_step += batch.num_steps
            all_returns += batch.episode_returns
            elapsed = time.perf_counter() - start
            row = {"iteration": iteration, "global_step": global_step, "time_s": round(elapsed, 3),
                   "episodic_return_mean": _mean(batch.episode_returns),
                   "episodic_length_mean": _mean(batch.episode_lengths),
                   "episodes": len(batch.episode_returns),
                   "rolling_return_mean": _mean(all_returns[-10:]),
                   "steps_per_s": round(global_step / elapsed, 1), **batch.info, **stats}
            if tensorboard is not None:  # first: a point past the checkpoint is purged when the run resumes
                log_scalars(tensorboard, row)
            save_iteration(logger, run_dir / "checkpoint.pt", row, {
                "iteration": iteration, "global_step": global_step, "time_s": elapsed,
                "recent_returns": all_returns[-10:], "rng": get_rng_states(algorithm),
                "policy": policy.state_dict(), "algorithm": algorithm.state_dict(), **checkpoint_extra()})
            if video_every and (iteration % video_every == 0 or iteration == num_iterations):
                record_training_video(run_dir, iteration)
            result.iterations, result.global_step, result.time_s = iteration, global_step, elapsed
            if bar.total is None:
                bar.total = num_iterations * batch.num_steps
                bar.update(global_step - batch.num_steps)  # a resumed run starts part way
            bar.set_postfix(iter=iteration, ret=f"{_mean(all_returns[-10:]):.1f}", refresh=False)
            bar.update(batch.num_steps)
    except KeyboardInterrupt:
        result.status = "interrupted"
    finally:
        bar.close()
        logger.close()
    return result


def save_iteration(logger: CSVLogger, checkpoint_path: Path, row: dict, state: dict) -> None:
    """Append ``row`` to progress.csv, then write the checkpoint. If either write fails (a full disk, a
    permission), the row is taken back out, so the previous checkpoint and progress.csv stay as they were
    and still agree, and one :class:`MinippoError` line says so."""
    try:
        logger.log(row)
        try:
            save_checkpoint(checkpoint_path, state)
        except BaseException:
            logger.undo_last()
            raise
    except OSError as e:
        raise MinippoError(f"Could not save iteration {row['iteration']} in {checkpoint_path.parent} "
                           f"({e.strerror or e}); the previous checkpoint and progress.csv are intact: "
                           "free some space or fix the permission, then continue with --resume.") from None


def get_rng_states(algorithm) -> dict:
    """Every random-number state the loop draws from: torch's (CPU and CUDA), numpy's global one and the
    algorithm's minibatch-shuffling generator, in a form ``torch.load(weights_only=True)`` accepts."""
    states = {"torch": torch.get_rng_state(), "numpy": _numpy_state_to_json(np.random.get_state())}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if getattr(algorithm, "generator", None) is not None:
        states["generator"] = algorithm.generator.get_state()
    return states


def _numpy_state_to_json(state: tuple) -> str:
    name, keys, pos, has_gauss, cached = state
    return json.dumps([name, keys.tolist(), pos, has_gauss, cached])


def restore_loop_state(state: dict, policy: torch.nn.Module, algorithm
                       ) -> tuple[int, int, list[float], float]:
    """Load the policy, the algorithm's state (optimisers; PPO's β) and the RNG states of a checkpoint.

    Returns ``(first_iteration, global_step, recent_returns, time_s)``: where the loop goes on from.
    """
    policy.load_state_dict(state["policy"])
    algorithm.load_state_dict(state["algorithm"])
    rng = state.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = json.loads(rng["numpy"])
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "generator" in rng and getattr(algorithm, "generator", None) is not None:
        algorithm.generator.set_state(rng["generator"])
    return (state["iteration"] + 1, state["global_step"], list(state.get("recent_returns", [])),
            float(state.get("time_s", 0.0)))


def _mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else float("nan")


RUN_FILES = ("config.json", "progress.csv", "checkpoint.pt")  # what makes a folder a run folder


def train(env_id: str = "CartPole-v1", algo: str = "ppo", *, total_steps: int | None = None,
          seed: int = 0, num_envs: int | None = None, device: str = "auto", out: str | Path | None = None,
          overwrite: bool = False, show_progress: bool = True, tensorboard: bool = False,
          video_every: int | None = None, **hyperparameters) -> RunResult:
    """Train ``algo`` on the Gymnasium task ``env_id`` and write a run folder.

    Any field of :class:`TrainConfig` or of the algorithm's config (e.g. ``ppo.PPOConfig``) can be passed
    as a keyword; the rest come from the algorithm's per-env ``DEFAULTS``. Example::

        result = minippo.train("CartPole-v1", "ppo", total_steps=50_000, seed=1, out="runs/cartpole")
        print(result.final_return)

    The run folder ``out`` (default ``runs/<env>-<algo>-s<seed>-<time>``) receives ``config.json``,
    ``progress.csv`` and ``checkpoint.pt``. An ``out`` that already holds a run is refused unless
    ``overwrite=True`` (its run files are then replaced); continue a run with :func:`resume` instead.
    ``tensorboard=True`` also writes every progress.csv row to ``out/tb/`` as TensorBoard scalars (tag = the
    column name, step = ``global_step``); it needs the ``tensorboard`` extra. ``video_every=N`` saves a GIF
    of one deterministic episode every N iterations and after the last, in ``out/videos/iter-XXXXX.gif``
    (:mod:`minippo.video`; classic control needs the ``video`` extra).
    On the CPU, PyTorch is set to one intra-op thread (``torch.set_num_threads(1)``), so that runs side by
    side (``minippo compare``) do not compete.

    Raises:
        MinippoError: unknown env id or algorithm, unsupported spaces, out-of-range hyperparameters,
            CUDA asked for without a GPU, an existing run in ``out``, ``tensorboard`` without the
            tensorboard package, ``video_every`` with an env that cannot render, or
            (:class:`minippo.errors.NonFiniteLossError`) a NaN loss.
    """
    check_env_id(env_id)
    train_config, algo_config = make_configs(algo, env_id, total_steps=total_steps, seed=seed,
                                             num_envs=num_envs, device=device, **hyperparameters)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # A "module:EnvId" id gets no ":" in the default folder name (it is not allowed on Windows).
    run_dir = (Path(out) if out is not None
               else Path("runs") / f"{env_id.replace(':', '.')}-{algo}-s{train_config.seed}-{stamp}")
    return _run_gym(train_config, algo_config, run_dir, show_progress=show_progress, overwrite=overwrite,
                    tensorboard=tensorboard, video_every=video_every)


def check_resumable(run_dir: str | Path) -> dict:
    """Check that the run in ``run_dir`` can be resumed, before anything is written, and return its loaded
    checkpoint. Checked:

    - ``checkpoint.pt`` loads (every record passes its CRC check, :func:`minippo.logger.load_checkpoint`)
      and holds a Gymnasium run's settings, which this version of minippo accepts, and its iteration;
    - ``config.json``, if there is one, is this run's (same env, algorithm and seed as the checkpoint). A
      missing one is fine: the checkpoint holds the settings, and resuming writes config.json again;
    - ``progress.csv`` has the complete rows of iterations 1..the checkpoint's
      (:func:`minippo.logger.progress_rows`).

    Raises:
        MinippoError: the first of these that fails, naming the file and what is wrong. Nothing is
            written, so the run folder stays as it was.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    saved = state.get("config")
    if not (isinstance(saved, dict) and isinstance(saved.get("train"), dict)
            and isinstance(saved.get("algorithm"), dict)):
        raise MinippoError(f"{checkpoint} holds no Gymnasium training config; cannot resume it with minippo "
                           "train (an RLHF run? continue those with minippo rlhf --resume).")
    train_dict = saved["train"]
    iteration = state.get("iteration")
    if not (type(iteration) is int and iteration >= 1 and type(state.get("global_step")) is int
            and isinstance(state.get("policy"), dict)):
        raise MinippoError(f"{checkpoint} is not the checkpoint of a training iteration (its iteration, "
                           "global_step or policy is missing or of the wrong type); cannot resume.")
    t = dict(train_dict)
    if not isinstance(t.get("algo"), str) or not isinstance(t.get("env_id"), str):
        raise MinippoError(f"{checkpoint} names no algorithm or env id; cannot resume.")
    try:
        make_configs(t.pop("algo"), t.pop("env_id"), **t, **saved["algorithm"])
    except (MinippoError, TypeError) as e:  # TypeError: a name in both sections, a key not a string
        raise MinippoError(f"{checkpoint} holds settings this version of minippo refuses ({e}); cannot "
                           "resume.") from None

    config_path = run_dir / "config.json"
    if config_path.exists():
        try:
            config = read_run_config(config_path)
        except MinippoError as e:
            raise MinippoError(f"{e} Restore it, or delete it to resume: the checkpoint holds the run's "
                               "settings, and --resume writes config.json again.") from None
        describe = lambda d: f"{d.get('algo')} on {d.get('env_id')}, seed {d.get('seed')}"  # noqa: E731
        if describe(config["train"]) != describe(train_dict):
            raise MinippoError(f"{config_path} is another run's ({describe(config['train'])}) than the "
                               f"checkpoint's ({describe(train_dict)}). Restore this run's config.json, or "
                               "delete it to resume: --resume writes it again from the checkpoint.")
    try:
        progress_rows(run_dir / "progress.csv", iteration)
    except MinippoError as e:
        raise MinippoError(f"{e} Cannot resume: restore the run's progress.csv, or train again with "
                           "--overwrite.") from None
    return state


def resume(run_dir: str | Path, *, total_steps: int | None = None, device: str | None = None,
           show_progress: bool = True, tensorboard: bool | None = None) -> RunResult:
    """Continue the run in ``run_dir`` from its checkpoint until its budget is reached.

    Restored: the policy, the optimiser state(s) (and PPO's β), the observation- and reward-normalisation
    statistics, the iteration and global step, and the RNG states (torch, numpy, the minibatch-shuffling
    generator, the env action space). Not restored: the episodes in flight. Gymnasium envs cannot be
    snapshotted, so the envs are reset (with a seed derived from the run's seed and the iteration), and a
    resumed run matches an uninterrupted one only approximately. ``progress.csv`` goes on at the next
    iteration; rows written after the checkpoint (just before a kill) are dropped.

    Args:
        total_steps: a new env-step budget, e.g. larger to train longer (default: the run's own).
        device: where to train (default: the run's setting).
        tensorboard: go on writing TensorBoard scalars to ``run_dir/tb`` (default: if the run did, i.e. if
            that folder exists). Steps after the checkpoint's, logged before a kill, are purged.

    Raises:
        MinippoError: a run folder that cannot be resumed (:func:`check_resumable`: a missing, corrupt or
            foreign checkpoint.pt, config.json or progress.csv; the message names the file, and nothing
            is written), or a bad ``total_steps``.
    """
    run_dir = Path(run_dir)
    state = check_resumable(run_dir)
    saved = state["config"]
    t = dict(saved["train"])
    if total_steps is not None:
        t["total_steps"] = total_steps
    if device is not None:
        t["device"] = device
    train_config, algo_config = make_configs(t.pop("algo"), t.pop("env_id"), **t, **saved["algorithm"])
    if tensorboard is None:
        tensorboard = (run_dir / "tb").is_dir()
    return _run_gym(train_config, algo_config, run_dir, show_progress=show_progress, resume_from=state,
                    tensorboard=tensorboard)


def _run_gym(c: TrainConfig, algo_config, run_dir: Path, *, show_progress: bool, overwrite: bool = False,
             resume_from: dict | None = None, tensorboard: bool = False, video_every: int | None = None
             ) -> RunResult:
    """Build the envs, policy and algorithm for ``c`` and run :func:`run_loop`: a new run, or (with
    ``resume_from``, a loaded checkpoint) the continuation of one. ``tensorboard``: also write the
    progress rows to ``run_dir/tb`` (:func:`open_tensorboard`); ``video_every``: see :func:`run_loop`."""
    dev = resolve_device(c.device)
    if dev.type == "cpu":
        # For these small networks a second thread gains little (~7% for CartPole PPO on an idle
        # 2-core machine) and costs much when runs share the cores, as `minippo compare` does.
        # This sets PyTorch's process-wide intra-op thread count.
        torch.set_num_threads(1)
    torch.manual_seed(c.seed)
    envs = make_vec_env(c.env_id, c.num_envs, normalize_obs=c.normalize_obs,
                        normalize_reward=c.normalize_reward, gamma=c.gamma)
    try:  # checked after the env, so that an unsupported env is reported first
        _check_budget(c)
        if tensorboard:  # a missing package is reported before anything is written
            require_tensorboard()
        if video_every is not None:  # so is an env that cannot render
            check_range("video_every", video_every, 1)
            make_render_env(c.env_id).close()
        if resume_from is None:
            make_run_dir(run_dir, overwrite)
    except MinippoError:
        envs.close()
        raise
    policy = MLPActorCritic(envs.single_observation_space.shape[0], envs.single_action_space,
                            c.hidden_sizes, c.log_std_init).to(dev)
    algorithm_cls = ALGORITHMS[c.algo][0]
    algorithm = algorithm_cls(policy, algo_config, seed=c.seed)
    reset_seed = c.seed if resume_from is None else resume_seed(c.seed, resume_from["iteration"])
    source = GymRollout(envs, c.num_steps, seed=reset_seed, device=dev)
    if resume_from is not None:
        restore_env_state(envs, resume_from)
    num_iterations = max(1, math.ceil(c.total_steps / (c.num_steps * c.num_envs)))

    config_dict = {"train": dataclasses.asdict(c), "algorithm": dataclasses.asdict(algo_config)}
    write_json(run_dir / "config.json", {**config_dict, "num_iterations": num_iterations,
                                         "torch": torch.__version__, "device_used": str(dev)})
    signature = space_signature(envs)

    def checkpoint_extra() -> dict:
        return {"config": config_dict, "env_id": c.env_id, "spaces": signature,
                "obs_normalization": get_obs_normalization(envs),
                "reward_normalization": get_reward_normalization(envs),
                "action_space_rng": json.dumps(envs.action_space.np_random.bit_generator.state)}

    writer = open_tensorboard(run_dir, resume_from) if tensorboard else None
    try:
        result = run_loop(source, policy, algorithm, num_iterations=num_iterations, gamma=c.gamma,
                          gae_lambda=c.gae_lambda, run_dir=run_dir, checkpoint_extra=checkpoint_extra,
                          show_progress=show_progress, desc=f"{c.algo} {c.env_id}", resume_from=resume_from,
                          tensorboard=writer, video_every=video_every)
    finally:
        envs.close()
        if writer is not None:
            writer.close()
    return result


def open_tensorboard(run_dir: Path, resume_from: dict | None = None):
    """The ``SummaryWriter`` of ``run_dir/tb``. A new run first deletes the event files an earlier run
    left there (after ``--overwrite``); a resumed one appends, purging the steps after its checkpoint's
    ``global_step`` (logged just before a kill), so that no step appears twice.

    Raises:
        MinippoError: the tensorboard package is not installed.
    """
    require_tensorboard()
    tb_dir = run_dir / "tb"
    if resume_from is None:
        for old in tb_dir.glob("events.out.tfevents.*"):
            old.unlink()
        return tensorboard_writer(tb_dir)
    return tensorboard_writer(tb_dir, purge_step=int(resume_from["global_step"]) + 1)


def resume_seed(seed: int, iteration: int) -> int:
    """The seed of the env reset when a run resumes after ``iteration``: new episodes, yet reproducible."""
    return seed + 1_000_003 * iteration


def restore_env_state(envs, state: dict) -> None:
    """Put back what a checkpoint holds of the envs: the observation- and reward-normalisation
    statistics (still updating, as in training) and the action space's RNG. The episodes in flight are
    not restorable: the envs have just been reset."""
    set_obs_normalization(envs, state.get("obs_normalization"), freeze=False)
    set_reward_normalization(envs, state.get("reward_normalization"))
    if "action_space_rng" in state:
        envs.action_space.np_random.bit_generator.state = json.loads(state["action_space_rng"])


def _check_budget(c: TrainConfig) -> None:
    """Refuse a budget smaller than one batch (it would still run a whole batch)."""
    batch = c.num_steps * c.num_envs
    if c.total_steps < batch:
        raise MinippoError(f"total_steps={c.total_steps} is smaller than one batch: num_steps × num_envs = "
                           f"{c.num_steps} × {c.num_envs} = {batch} env steps. Raise --total-steps to at "
                           f"least {batch}, or lower num_steps (--hp num_steps=...) or --num-envs.")


def make_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """Create the run folder, or say in one line why it cannot be. A folder holding a run is refused
    unless ``overwrite``; then its run files (:data:`RUN_FILES`) are deleted, other files are left."""
    if run_dir.exists() and not run_dir.is_dir():
        raise MinippoError(f"--out {run_dir} is an existing file, not a folder. Give --out a new folder "
                           "name, or move the file away.")
    if run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_FILES):
        if not overwrite:
            raise MinippoError(f"--out {run_dir} already holds a run. Use --resume {run_dir} to continue "
                               "it, --overwrite to replace it, or another --out.")
        for name in (*RUN_FILES, "checkpoint.pt.tmp", "config.json.tmp", "progress.csv.tmp"):
            if (run_dir / name).is_file():
                (run_dir / name).unlink()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MinippoError(f"Cannot create the run folder --out {run_dir}: {e.strerror}. Give --out a "
                           "folder you can write to.") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise MinippoError(f"Cannot write to the run folder --out {run_dir}: permission denied. Give --out "
                           "a folder you can write to.")


def load_policy(checkpoint: str | Path, env_id: str | None = None, device: str = "cpu"):
    """Rebuild the policy and an env from a checkpoint written by :func:`train`.

    Returns ``(policy, train_config_dict, obs_normalization)``.

    Raises:
        MinippoError: missing/corrupt checkpoint, or one whose spaces do not match ``env_id``.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a run folder: name its checkpoint.pt in the errors below
        checkpoint = checkpoint / "checkpoint.pt"
    state = load_checkpoint(checkpoint, map_location=device)
    try:
        config, saved_env, saved_spaces = state["config"]["train"], state["env_id"], state["spaces"]
        hidden_sizes = tuple(int(h) for h in config["hidden_sizes"])
        log_std_init = float(config["log_std_init"])
        if not (isinstance(saved_env, str) and isinstance(config["normalize_obs"], bool)):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise MinippoError(f"{checkpoint} lacks the config of a Gymnasium run; is it an RLHF checkpoint?"
                           ) from None
    env_id = env_id or saved_env
    envs = make_vec_env(env_id, 1)
    signature = space_signature(envs)
    if signature != saved_spaces:
        envs.close()
        raise MinippoError(f"The checkpoint was trained on {saved_env} (spaces {saved_spaces}) and does "
                           f"not match {env_id} (spaces {signature}). Evaluate it on {saved_env}.")
    try:
        policy = MLPActorCritic(envs.single_observation_space.shape[0], envs.single_action_space,
                                hidden_sizes, log_std_init)
        policy.load_state_dict(state["policy"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise MinippoError(f"The weights in {checkpoint} do not fit the policy network: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        envs.close()
    return policy.to(device), config, state.get("obs_normalization")


@torch.no_grad()
def evaluate(checkpoint: str | Path, episodes: int = 10, deterministic: bool = True, seed: int = 12345,
             env_id: str | None = None) -> list[float]:
    """Run the saved policy for ``episodes`` full episodes and return their (raw, unscaled) returns.

    Actions are the mode (argmax / Gaussian mean) if ``deterministic``, else sampled. Observation
    normalisation statistics are restored from the checkpoint and frozen.
    """
    check_range("episodes", episodes, 1)
    check_range("seed", seed, 0)
    policy, config, obs_stats = load_policy(checkpoint, env_id)
    env_id = env_id or config["env_id"]
    envs = make_vec_env(env_id, 1, normalize_obs=config["normalize_obs"])
    try:
        set_obs_normalization(envs, obs_stats, freeze=True)
    except (KeyError, TypeError, ValueError, AttributeError):
        envs.close()
        raise MinippoError(f"The observation-normalisation statistics in {checkpoint} are not readable; "
                           "is it a minippo checkpoint?") from None
    returns: list[float] = []
    obs, _ = envs.reset(seed=seed)
    while len(returns) < episodes:
        action, _ = policy.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=deterministic)
        obs, _, _, _, info = envs.step(action.numpy())
        if "episode" in info:
            returns += info["episode"]["r"][info["_episode"]].astype(float).tolist()
    envs.close()
    return returns[:episodes]
