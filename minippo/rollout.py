"""The rollout/GAE core shared by VPG, TRPO and PPO: a time-major batch, GAE(γ, λ), and collection from
Gymnasium vector environments.

Symbols used in every docstring of this module:

    T   steps per rollout (time)
    N   parallel streams: the environments of a vector env, or the sequences of a text batch
    B   transitions in a minibatch

Data flow of one iteration::

    policy ──► rollout source ──► Batch [T, N] ──► compute_gae ──► advantages, returns [T, N]
                                                                       │
                                        algorithm.update(batch) ◄──────┘

Any *rollout source* (a vector env here, generated text in ``minippo.lm``) produces an object with the
fields and methods of :class:`Batch`; the algorithms use nothing else, so they never branch on the task.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from .errors import EnvStepError, MinippoError


@dataclass
class Minibatch:
    """A set of transitions for one gradient step. Every tensor has the same leading shape ``S``:
    ``[B]`` for shuffled Gymnasium transitions, ``[T, n]`` for whole text sequences.

    =============  ====================  ==========================================================
    field          shape                 meaning
    =============  ====================  ==========================================================
    obs            [*S, *obs_shape]      what the policy needs to evaluate these positions
    actions        [*S, *action_shape]   actions taken
    log_probs      [*S]                  log π_old(a|s) under the policy that collected the batch
    values         [*S]                  V_old(s), value estimates at collection time
    advantages     [*S]                  GAE(γ, λ) advantages Â
    returns        [*S]                  λ-returns Â + V_old(s), the value-function targets
    mask           [*S] bool or None     True where the position is a transition; False where it
                                         only pads a sequence (a text token after the end of the
                                         response). None: every position is a transition.
    ref_log_probs  [*S] or None          log π_ref(a|s) under a frozen reference policy (text
                                         tasks; GRPO's KL term). None where there is none.
    =============  ====================  ==========================================================

    Every mean the algorithms take over a minibatch is :func:`masked_mean` with ``mask``, so padded
    positions never reach a loss, a gradient or a statistic, and no algorithm needs to know which task
    the minibatch came from.
    """

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    advantages: Tensor
    returns: Tensor
    mask: Tensor | None = None
    ref_log_probs: Tensor | None = None

    def select(self, index: Tensor) -> Minibatch:
        """The transitions at ``index`` (an index tensor into the leading dimension) of every field."""
        return Minibatch(*(None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                           for f in fields(self)))


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x`` ``[*S]`` over the positions where ``mask`` ``[*S]`` is True (all of them if ``mask``
    is None). Values at masked-out positions never matter, even if they are inf or NaN.

    Raises nothing; an all-False mask gives NaN (0/0), which the loss checks then report.
    """
    if mask is None:
        return x.mean()
    return torch.where(mask, x, 0.0).sum() / mask.sum()


def normalize_advantages(advantages: Tensor, mask: Tensor | None = None) -> Tensor:
    """Standardise ``advantages`` ``[*S]`` to mean 0 and (unbiased) std 1 over the positions where
    ``mask`` is True; unchanged if there are fewer than 2. Masked-out positions are shifted and scaled
    too, and must stay masked out.

    This changes more than the scale of the gradient: subtracting the batch mean acts like an extra
    constant baseline, so the policy-gradient *estimate* itself changes (on a Pendulum batch the two
    estimates have cosine 0.88). It is a variance-reduction heuristic (Huang et al. 2022, "The 37
    Implementation Details of PPO", detail 7), not part of the algorithms' derivations.
    """
    count = advantages.numel() if mask is None else int(mask.sum())
    if count < 2:
        return advantages
    if mask is None:
        mean, std = advantages.mean(), advantages.std()
    else:
        mean = masked_mean(advantages, mask)
        std = (masked_mean((advantages - mean) ** 2, mask) * count / (count - 1)).sqrt()
    return (advantages - mean) / (std + 1e-8)


@dataclass
class Batch:
    """One rollout of ``T`` steps from ``N`` parallel environments, time-major.

    =============  ====================  ==========================================================
    field          shape                 meaning
    =============  ====================  ==========================================================
    obs            [T, N, *obs_shape]    observation s_t the action was chosen in
    actions        [T, N, *action_shape] action a_t (unclipped, as sampled)
    log_probs      [T, N]                log π(a_t|s_t) of the collecting policy
    values         [T, N]                V(s_t)
    rewards        [T, N]                r_t, after any reward scaling wrapper
    dones          [T, N]                1.0 where the episode ended at t (terminated or truncated)
    next_values    [T, N]                V(s_{t+1}): 0 after a termination; V(final observation)
                                         after a truncation (the episode did not really end)
    valid          [T, N] bool           False where a position is not a transition of the policy:
                                         Gymnasium's autoreset steps (see GymRollout), text tokens
                                         after the end of the response; left out of every update
    advantages     [T, N]                filled in by the training loop with :func:`compute_gae`
                                         (or another estimator, e.g. :class:`GroupBaseline`)
    returns        [T, N]                likewise
    ref_log_probs  [T, N] or None        log π_ref(a_t|s_t) under a frozen reference policy, where
                                         the source has one (text); None for Gymnasium
    =============  ====================  ==========================================================

    ``episode_returns`` / ``episode_lengths`` list every episode that finished during the rollout (raw,
    unscaled rewards; length in env steps). ``info`` holds extra per-rollout statistics a source wants
    logged. ``num_steps`` counts the env steps consumed, ``T * N``.
    """

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    dones: Tensor
    next_values: Tensor
    valid: Tensor
    advantages: Tensor | None = None
    returns: Tensor | None = None
    ref_log_probs: Tensor | None = None
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    info: dict[str, float] = field(default_factory=dict)
    _flat: tuple | None = field(default=None, repr=False)

    @property
    def num_steps(self) -> int:
        return self.rewards.numel()

    def all(self) -> Minibatch:
        """Every valid transition, flattened to ``[B]`` in time-major order (computed once, then cached:
        the algorithms call it every epoch)."""
        if self.advantages is None or self.returns is None:
            raise RuntimeError("Batch.advantages/returns are not set: call compute_gae first.")
        if self._flat is None or self._flat[0] is not self.advantages or self._flat[1] is not self.returns:
            mask = self.valid.reshape(-1)
            flat = lambda x: x.reshape(-1, *x.shape[2:])[mask]
            self._flat = self.advantages, self.returns, Minibatch(
                flat(self.obs), flat(self.actions), flat(self.log_probs), flat(self.values),
                flat(self.advantages), flat(self.returns))
        return self._flat[2]

    def minibatches(self, minibatch_size: int, generator: torch.Generator | None = None
                    ) -> Iterator[Minibatch]:
        """Shuffle the valid transitions and yield ``max(1, B // minibatch_size)`` minibatches of
        ``minibatch_size`` transitions; the remainder of the division joins the last one, which so holds
        between ``minibatch_size`` and ``2 · minibatch_size − 1`` transitions. One pass over this
        iterator is one epoch.

        Why merge the remainder: the autoreset steps are dropped, so B is rarely a multiple of the
        minibatch size, and a ragged last minibatch of a handful of transitions would still get a full
        Adam step, with advantages standardised over 2 samples to ±0.707 whatever they were. If one
        minibatch holds the whole batch, it is yielded as it is: the order of the transitions does not
        change a mean over all of them."""
        data = self.all()
        n = data.log_probs.shape[0]
        if minibatch_size >= n:
            yield data
            return
        for index in shuffled_chunks(n, minibatch_size, generator, data.log_probs.device):
            yield data.select(index)


def shuffled_chunks(n: int, chunk_size: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> list[Tensor]:
    """A random permutation of ``range(n)`` cut into ``max(1, n // chunk_size)`` index tensors of
    ``chunk_size``; the remainder of the division joins the last one, which so holds between
    ``chunk_size`` and ``2 · chunk_size − 1`` indices (all ``n`` if ``n < chunk_size``)."""
    order = torch.randperm(n, generator=generator).to(device)
    count = max(1, n // chunk_size)
    return [order[k * chunk_size:(k + 1) * chunk_size if k < count - 1 else n] for k in range(count)]


def compute_gae(rewards: Tensor, values: Tensor, next_values: Tensor, dones: Tensor,
                gamma: float, gae_lambda: float) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation, GAE(γ, λ) (Schulman et al. 2016, "High-Dimensional Continuous
    Control Using Generalized Advantage Estimation", §3 eq. 16):

        δ_t = r_t + γ V(s_{t+1}) − V(s_t)                  (TD residual; V(s_{t+1}) = next_values[t])
        Â_t = Σ_{l≥0} (γλ)^l δ_{t+l}, summed up to the end of the episode or of the rollout

    computed backwards as ``Â_t = δ_t + γλ (1 − done_t) Â_{t+1}``. The λ-return used as the value target
    is ``Â_t + V(s_t)``.

    Args:
        rewards, values, next_values, dones: ``[T, N]`` float tensors (see :class:`Batch`). ``dones``
            cuts the sum at an episode boundary; whether to bootstrap there is decided by ``next_values``
            (0 on termination, the value of the final observation on truncation).
        gamma: discount γ in [0, 1]. gae_lambda: λ in [0, 1]; λ=0 gives one-step TD, λ=1 Monte Carlo.

    Returns:
        ``(advantages, returns)``, both ``[T, N]``.
    """
    deltas = rewards + gamma * next_values - values
    not_done = 1.0 - dones
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def group_advantages(rewards: Tensor, valid: Tensor, group_size: int, baseline: str = "leave_one_out"
                     ) -> tuple[Tensor, Tensor]:
    """Advantages from a *group baseline*: each sequence is compared with the other samples drawn for the
    same prompt, instead of with a learned value function. Used by RLOO and GRPO.

    The columns come in groups of ``k = group_size`` consecutive sequences sharing a prompt. With
    ``R_i = Σ_t r_t`` the undiscounted return of sequence i (its score, minus β·KL where the KL penalty is
    in the rewards):

    - ``"leave_one_out"`` (RLOO; Kool et al. 2019, Ahmadian et al. 2024 eq. 6):
      ``A_i = R_i − 1/(k−1) Σ_{j≠i} R_j``, the mean return of the *other* k−1 samples. It does not
      depend on sample i, so the policy gradient stays unbiased.
    - ``"group_mean_std"`` (GRPO; Shao et al. 2024, "DeepSeekMath", §4.1.2 outcome supervision):
      ``A_i = (R_i − mean_j R_j) / std_j R_j``, with the unbiased std over the group (+1e-8; a group of
      equal returns gets advantage 0).

    Every token of sequence i gets ``A_i`` (it is a sequence-level, outcome-only estimate).

    Args:
        rewards: ``[T, N]`` per-token rewards. valid: ``[T, N]`` bool, the tokens of each response.
        group_size: k ≥ 2, which must divide N. baseline: ``"leave_one_out"`` or ``"group_mean_std"``.

    Returns:
        ``(advantages, returns)``, both ``[T, N]``: A_i and R_i on every valid token of sequence i, 0 after
        its end.

    Raises:
        MinippoError: k < 2, k does not divide N, or an unknown ``baseline``.
    """
    T, N = rewards.shape
    if group_size < 2 or N % group_size:
        raise MinippoError(f"A group baseline needs groups of k ≥ 2 samples per prompt that divide the "
                           f"batch, got k={group_size} for N={N} sequences; set group_size to a divisor "
                           "of num_sequences, at least 2.")
    returns = torch.where(valid, rewards, 0.0).sum(0).view(N // group_size, group_size)  # [groups, k]
    if baseline == "leave_one_out":
        others_mean = (returns.sum(1, keepdim=True) - returns) / (group_size - 1)
        advantages = returns - others_mean
    elif baseline == "group_mean_std":
        advantages = (returns - returns.mean(1, keepdim=True)) / (returns.std(1, keepdim=True) + 1e-8)
    else:
        raise MinippoError(f"Unknown group baseline {baseline!r}; use 'leave_one_out' or 'group_mean_std'.")
    on_tokens = lambda x: torch.where(valid, x.reshape(1, N), 0.0)  # noqa: E731
    return on_tokens(advantages), on_tokens(returns)


@dataclass
class GAE:
    """The default advantage estimator of the training loop: :func:`compute_gae` with (γ, λ) on a
    :class:`Batch`. ``estimator(batch) -> (advantages, returns)``, both ``[T, N]``."""

    gamma: float
    gae_lambda: float

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        return compute_gae(batch.rewards, batch.values, batch.next_values, batch.dones, self.gamma,
                           self.gae_lambda)


@dataclass
class GroupBaseline:
    """The advantage estimator of RLOO and GRPO: :func:`group_advantages` on a :class:`Batch` whose
    columns come in groups of ``group_size`` samples of one prompt. ``estimator(batch) -> (advantages,
    returns)``, both ``[T, N]``; ``baseline`` is ``"leave_one_out"`` or ``"group_mean_std"``."""

    group_size: int
    baseline: str = "leave_one_out"

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor]:
        return group_advantages(batch.rewards, batch.valid, self.group_size, self.baseline)


class GymRollout:
    """Collects ``[T, N]`` batches from a Gymnasium vector env (``N = envs.num_envs``).

    Autoreset: we keep Gymnasium's default ``AutoresetMode.NEXT_STEP``, because Gymnasium's vector
    ``NormalizeObservation`` wrapper requires it (Gymnasium 1.4). In that mode the observation
    returned on the step where an episode ends *is* the final observation, so the next step's value
    estimate V(s_{t+1}) is exactly the bootstrap value a truncated episode needs; a terminated one gets 0.
    The step after an episode ends is an *autoreset step*: the env ignores the action, resets and returns
    reward 0. Such steps are marked ``valid=False`` and left out of the update (they cost one env step
    per episode, counted in the env-step budget).

    A faulty env stops the rollout at once with :class:`minippo.errors.EnvStepError`, naming the env id,
    the rollout step and the env: when ``envs.step`` raises (its exception type and first message line are
    kept), or returns a NaN or infinite observation or reward (which would otherwise reach GAE and the
    update as a NaN loss, far from its cause).

    Args:
        envs: a vector env from :func:`minippo.envs.make_vec_env` (it records episode statistics).
        num_steps: ``T``, steps per env per rollout.
        seed: seeds the first reset.
        device: where the batch tensors live (the policy's device).
    """

    def __init__(self, envs: gym.vector.VectorEnv, num_steps: int, seed: int | None = None,
                 device: torch.device | str = "cpu"):
        self.envs, self.num_steps, self.device = envs, num_steps, torch.device(device)
        obs, _ = envs.reset(seed=seed)
        envs.action_space.seed(seed)
        self.obs = self._to_tensor(obs)
        self.autoreset = np.zeros(envs.num_envs, dtype=bool)  # True: the next step is an autoreset step

    def _to_tensor(self, x: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device)

    @torch.no_grad()
    def collect(self, policy) -> Batch:
        """Run ``policy.act`` for ``T`` steps in every env and return the :class:`Batch` (values come
        from one ``policy.value`` pass over the collected observations at the end)."""
        T, N = self.num_steps, self.envs.num_envs
        obs_buf = torch.zeros((T + 1, N, *self.obs.shape[1:]), device=self.device)
        log_probs = torch.zeros((T, N), device=self.device)
        # Env outputs stay in NumPy until the rollout ends: one conversion instead of T.
        rewards, terminated_buf, dones = (np.zeros((T, N), dtype=np.float32) for _ in range(3))
        valid = np.zeros((T, N), dtype=bool)
        actions_list, episode_returns, episode_lengths = [], [], []

        for t in range(T):
            obs_buf[t] = self.obs
            valid[t] = ~self.autoreset
            action, log_probs[t] = policy.act(self.obs)
            actions_list.append(action)
            try:
                next_obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            except Exception as e:  # a bug in the env: say which env and when, keep its type and message
                message = str(e).splitlines()[0] if str(e) else ""
                raise EnvStepError(f"The environment {self._env_id()} raised {type(e).__name__} ({message}) "
                                   f"in step() at rollout step {t + 1} of {T}") from e
            self._check_finite(next_obs, "observation", t)
            self._check_finite(reward, "reward", t)
            rewards[t] = reward
            self.obs = self._to_tensor(next_obs)
            terminated_buf[t] = terminated
            dones[t] = self.autoreset = terminated | truncated
            if "episode" in info:  # from gymnasium's RecordEpisodeStatistics wrapper
                finished = info["_episode"]
                episode_returns += info["episode"]["r"][finished].astype(float).tolist()
                episode_lengths += info["episode"]["l"][finished].astype(int).tolist()

        obs_buf[T] = self.obs
        # The values are only needed for GAE, so one forward pass over all T+1 observations replaces T
        # small ones. V(s_{t+1}) is the value of the observation returned by step t, which is the final
        # observation if the episode ended there: exactly the bootstrap value a truncated episode needs.
        # A terminated episode has no future, so nothing is bootstrapped.
        values = policy.value(obs_buf)
        next_values = values[1:] * (1.0 - self._to_tensor(terminated_buf))
        return Batch(obs=obs_buf[:T], actions=torch.stack(actions_list), log_probs=log_probs,
                     values=values[:T], rewards=self._to_tensor(rewards), dones=self._to_tensor(dones),
                     next_values=next_values, valid=torch.as_tensor(valid, device=self.device),
                     episode_returns=episode_returns,
                     episode_lengths=episode_lengths)

    def _env_id(self) -> str:
        spec = getattr(self.envs, "spec", None)
        return spec.id if spec is not None else type(self.envs.unwrapped).__name__

    def _check_finite(self, x, what: str, t: int) -> None:
        """Raise :class:`EnvStepError` unless the step output ``x`` (``[N, ...]`` observations or ``[N]``
        rewards) is numbers, all finite."""
        where = f"at rollout step {t + 1} of {self.num_steps}"
        try:
            x = np.asarray(x, dtype=np.float64).reshape(self.envs.num_envs, -1)
        except (TypeError, ValueError):
            raise EnvStepError(f"The environment {self._env_id()} returned an {what} that is not an array of "
                               f"numbers {where}") from None
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            env = int(np.argmax(bad))
            kind = "NaN" if np.isnan(x[env]).any() else "infinite"
            raise EnvStepError(f"The environment {self._env_id()} returned a {kind} {what} in env index "
                               f"{env} of num_envs={self.envs.num_envs} {where}")


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor | None = None) -> float:
    """1 − Var[R − V] / Var[R] over the positions where ``mask`` is True (all if None), for ``values`` and
    ``returns`` ``[*S]``: 1 is a perfect value function, 0 no better than a constant, and it is
    negative when V is worse than a constant (e.g. a critic that has not caught up with a policy that
    just changed)."""
    if mask is not None:
        values, returns = values[mask], returns[mask]
    var = returns.var()
    return float("nan") if var == 0 else float(1 - (returns - values).var() / var)
