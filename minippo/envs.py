"""Making Gymnasium vector envs, with clear errors for ids and spaces minippo cannot use.

Everything here is Gymnasium's own machinery: ``gym.make_vec`` with the sync vector env (on 2 cores the
async one is slower for these small envs), ``RecordEpisodeStatistics`` for episode returns and lengths,
``ClipAction`` so that Gaussian actions are clipped to the bounds only when sent to the env, and the
optional ``NormalizeObservation`` / ``NormalizeReward`` wrappers for continuous control.
"""

from __future__ import annotations

import difflib
import importlib
import os

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers import vector as vw

from .errors import MinippoError

# Which optional extra installs the dependencies of an env family.
_EXTRAS = {"box2d": "box2d", "mujoco": "mujoco"}


def check_env_id(env_id: str) -> None:
    """Raise :class:`MinippoError` if ``env_id`` is not registered with Gymnasium, suggesting close ids.

    Gymnasium's ``"module:EnvId-v0"`` syntax is accepted, as ``gymnasium.make`` accepts it: ``module`` is
    imported first (it is expected to call ``gymnasium.register``), then ``EnvId-v0`` must be registered.
    """
    module, _, name = env_id.rpartition(":")
    if module:
        _import_env_module(module, env_id)
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry.keys()), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if module:
        raise MinippoError(f"Module {module!r} was imported but did not register the environment id "
                           f"{name!r}.{hint} Register it in {module} with gymnasium.register({name!r}, "
                           "entry_point=...).")
    raise MinippoError(f"Unknown environment id {env_id!r}.{hint} "
                       "List the ids with: python -c \"import gymnasium; gymnasium.pprint_registry()\"")


def _import_env_module(module: str, env_id: str) -> None:
    """Import the module named in a ``"module:EnvId"`` id, turning any failure into one clear error."""
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise MinippoError(f"Cannot import module {module!r} named in the environment id {env_id!r}: {e}. "
                           "Put it on the Python path, e.g. PYTHONPATH=. if it is a .py file in the current "
                           "folder.") from None
    except Exception as e:  # the student's module itself fails while importing
        raise MinippoError(f"Importing module {module!r} named in the environment id {env_id!r} raised "
                           f"{type(e).__name__}: {e}") from None


def make_vec_env(env_id: str, num_envs: int, *, normalize_obs: bool = False,
                 normalize_reward: bool = False, gamma: float = 0.99) -> gym.vector.VectorEnv:
    """Make ``num_envs`` copies of ``env_id`` in a sync vector env (autoreset ``NEXT_STEP``).

    Wrappers, innermost first: ``RecordEpisodeStatistics`` (so episode returns are raw, unscaled),
    ``ClipAction`` for ``Box`` actions, then optionally ``NormalizeObservation`` and ``NormalizeReward``
    (which scales rewards by a running estimate of the std of the γ-discounted return).

    Raises:
        MinippoError: unknown id (with close matches), an unimportable ``module`` of a
            ``"module:EnvId"`` id, a missing optional dependency (names the extra to
            install), or an observation space that is not a flat ``Box`` / an action space that is
            neither ``Discrete`` nor ``Box``.
    """
    check_env_id(env_id)
    name = env_id.rpartition(":")[2]  # check_env_id has imported the module of a "module:EnvId" id
    try:
        envs = gym.make_vec(name, num_envs=num_envs, vectorization_mode="sync")
    except gym.error.DependencyNotInstalled as e:
        family = next((x for x in _EXTRAS if x in str(gym.spec(name).entry_point)), None)
        fix = f"pip install 'minippo[{_EXTRAS[family]}]'" if family else "install the package it names"
        raise MinippoError(f"{env_id} needs an optional dependency that is not installed ({e}). "
                           f"Fix: {fix}") from None
    except Exception as e:
        if not is_mujoco(name):
            raise
        raise mujoco_gl_error(env_id, e) from None
    check_spaces(envs.single_observation_space, envs.single_action_space, env_id)
    envs = vw.RecordEpisodeStatistics(envs)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        envs = vw.ClipAction(envs)
    if normalize_obs:
        envs = vw.NormalizeObservation(envs)
    if normalize_reward:
        envs = vw.NormalizeReward(envs, gamma=gamma)
    return envs


def is_mujoco(env_id: str) -> bool:
    """Whether the registered ``env_id`` is one of Gymnasium's MuJoCo envs."""
    return "mujoco" in str(gym.spec(env_id).entry_point)


def mujoco_gl_error(env_id: str, e: Exception) -> MinippoError:
    """The one-line error for a MuJoCo env whose OpenGL backend failed, with the fix. MuJoCo renders with
    the backend named by ``MUJOCO_GL`` (default GLFW, which needs a display); Gymnasium loads it when it
    makes the env, and uses it when it renders."""
    reason = (str(e).splitlines() or [""])[0]
    return MinippoError(
        f"{env_id}: MuJoCo could not load or start its OpenGL backend (MUJOCO_GL="
        f"{os.environ.get('MUJOCO_GL', 'unset')}; {type(e).__name__}: {reason}). To render on a machine "
        "without a display, set MUJOCO_GL=egl (or osmesa, where libOSMesa is installed) before the command, "
        "e.g. MUJOCO_GL=egl minippo eval RUN_DIR --video out.gif; training does not render: unset MUJOCO_GL.")


def check_spaces(observation_space: gym.Space, action_space: gym.Space, env_id: str = "this env") -> None:
    """Raise :class:`MinippoError` unless observations are a flat ``Box`` and actions ``Discrete`` or a
    flat ``Box`` (what :class:`minippo.policies.MLPActorCritic` supports)."""
    if not (isinstance(observation_space, gym.spaces.Box) and len(observation_space.shape) == 1):
        raise MinippoError(
            f"{env_id} has observation space {observation_space}; minippo's MLP policy needs a flat Box "
            "(a 1-D vector). Wrap the env (e.g. gymnasium.wrappers.FlattenObservation) or pick another env.")
    if isinstance(action_space, gym.spaces.Discrete):
        return
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return
    raise MinippoError(
        f"{env_id} has action space {action_space}; minippo supports Discrete (categorical policy) and "
        "flat Box (diagonal Gaussian policy) action spaces.")


def space_signature(envs: gym.vector.VectorEnv) -> dict:
    """A small description of the spaces, stored in checkpoints to detect a mismatched env on load."""
    obs, act = envs.single_observation_space, envs.single_action_space
    sig = {"obs_shape": list(obs.shape), "action_type": type(act).__name__}
    sig["action_n" if isinstance(act, gym.spaces.Discrete) else "action_shape"] = (
        int(act.n) if isinstance(act, gym.spaces.Discrete) else list(act.shape))
    return sig


def _find_wrapper(envs: gym.vector.VectorEnv, cls: type):
    while isinstance(envs, gym.vector.VectorWrapper):
        if isinstance(envs, cls):
            return envs
        envs = envs.env
    return None


def _running_stats(rms) -> dict:
    """A Gymnasium ``RunningMeanStd`` as tensors ``{"mean", "var", "count"}`` (for a checkpoint)."""
    return {"mean": torch.as_tensor(rms.mean), "var": torch.as_tensor(rms.var),
            "count": torch.tensor(float(rms.count))}


def _set_running_stats(rms, stats: dict) -> None:
    rms.mean = stats["mean"].numpy().astype(np.float64)
    rms.var = stats["var"].numpy().astype(np.float64)
    rms.count = float(stats["count"])


def get_obs_normalization(envs: gym.vector.VectorEnv) -> dict | None:
    """The running mean/var/count of ``NormalizeObservation`` as tensors (for a checkpoint), or None."""
    wrapper = _find_wrapper(envs, vw.NormalizeObservation)
    return None if wrapper is None else _running_stats(wrapper.obs_rms)


def get_reward_normalization(envs: gym.vector.VectorEnv) -> dict | None:
    """The running statistics of the discounted return that ``NormalizeReward`` divides rewards by, as
    tensors (for a checkpoint), or None."""
    wrapper = _find_wrapper(envs, vw.NormalizeReward)
    return None if wrapper is None else _running_stats(wrapper.return_rms)


def set_reward_normalization(envs: gym.vector.VectorEnv, stats: dict | None) -> None:
    """Restore the statistics saved by :func:`get_reward_normalization` (they keep updating)."""
    wrapper = _find_wrapper(envs, vw.NormalizeReward)
    if wrapper is not None and stats is not None:
        _set_running_stats(wrapper.return_rms, stats)


def set_obs_normalization(envs: gym.vector.VectorEnv, stats: dict | None, freeze: bool = True) -> None:
    """Restore the statistics saved by :func:`get_obs_normalization`; ``freeze`` stops further updates
    (for evaluation)."""
    wrapper = _find_wrapper(envs, vw.NormalizeObservation)
    if wrapper is None or stats is None:
        return
    _set_running_stats(wrapper.obs_rms, stats)
    wrapper.update_running_mean = not freeze
