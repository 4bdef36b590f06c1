"""Videos of a saved policy: episodes in one Gymnasium env made with ``render_mode="rgb_array"``, written as
a GIF (Pillow) or an MP4 (imageio-ffmpeg, when installed).

An episode of L steps gives L + 1 frames: the first observation's, then one after each step. A frame is
``[H, W, 3] uint8`` (600 × 400 pixels for CartPole). Pillow stores a frame identical to the one before
as a longer frame, so a GIF may hold fewer frames than were recorded; its total duration is always
(frames recorded) × :func:`frame_duration_ms`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from .envs import _set_running_stats, check_env_id, is_mujoco, mujoco_gl_error
from .errors import MinippoError, check_range

VIDEO_FIX = 'pip install "minippo[video]"'
MP4_FIX = 'pip install imageio-ffmpeg (or write a .gif)'


def check_video_path(path: str | Path) -> Path:
    """``path`` as a Path if it ends in ``.gif``, or in ``.mp4`` with an encoder installed.

    Raises:
        MinippoError: another suffix, or ``.mp4`` without the ``imageio_ffmpeg`` package.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise MinippoError(f"Writing {path} needs an MP4 encoder, which is not installed: "
                               f"{MP4_FIX}.") from None
    elif suffix != ".gif":
        raise MinippoError(f"--video {path}: the file must end in .gif or .mp4.")
    return path


def make_render_env(env_id: str, normalize_obs: bool = False, obs_stats: dict | None = None) -> gym.Env:
    """One ``env_id`` env that renders ``rgb_array`` frames, with the wrappers the policy was trained
    behind: ``ClipAction`` for Box actions, and ``NormalizeObservation`` frozen at ``obs_stats``. MuJoCo
    envs render through their model's "track" camera, which follows the agent.

    Raises:
        MinippoError: unknown id, a renderer that is not installed (:data:`VIDEO_FIX`), or an env that
            cannot render ``rgb_array`` frames.
    """
    check_env_id(env_id)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # No display: no window could open anyway. SDL's dummy video driver keeps pygame (the classic-
        # control renderer) from printing "XDG_RUNTIME_DIR is invalid" while it looks for one.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    name = env_id.rpartition(":")[2]
    cannot = (f"{env_id} cannot render rgb_array frames, so it cannot be recorded (its metadata "
              "['render_modes'] must include 'rgb_array').")
    # MuJoCo: the models' "track" camera follows the body; Gymnasium's default free camera stays put, so a
    # good runner would leave the frame (a model without that camera falls back to the free one).
    camera = {"camera_name": "track"} if is_mujoco(name) else {}
    try:
        with warnings.catch_warnings():  # Gymnasium warns, then we say it in one line
            warnings.simplefilter("ignore")
            env = gym.make(name, render_mode="rgb_array", **camera)
    except gym.error.DependencyNotInstalled as e:
        raise MinippoError(f"Rendering {env_id} needs a package that is not installed ({e}). Fix: "
                           f"{VIDEO_FIX}") from None
    except TypeError:  # the env's constructor takes no render_mode
        raise MinippoError(cannot) from None
    except Exception as e:
        if not is_mujoco(name):
            raise
        raise mujoco_gl_error(env_id, e) from None
    if "rgb_array" not in env.metadata.get("render_modes", []):
        env.close()
        raise MinippoError(cannot)
    if isinstance(env.action_space, gym.spaces.Box):
        env = gym.wrappers.ClipAction(env)
    if normalize_obs:
        env = gym.wrappers.NormalizeObservation(env)
        if obs_stats is not None:
            _set_running_stats(env.obs_rms, obs_stats)
        env.update_running_mean = False
    return env


def _frame(env: gym.Env, env_id: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # GLFW warns before MuJoCo fails without a display; we say it once
            warnings.filterwarnings("ignore", module="glfw")
            frame = env.render()
    except gym.error.DependencyNotInstalled as e:  # classic control imports pygame only here
        raise MinippoError(f"Rendering {env_id} needs a package that is not installed ({e}). Fix: "
                           f"{VIDEO_FIX}") from None
    except Exception as e:  # MuJoCo renders with OpenGL; its default backend (GLFW) needs a display
        if not is_mujoco(env_id.rpartition(":")[2]):
            raise
        raise mujoco_gl_error(env_id, e) from None
    if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3):
        raise MinippoError(f"{env_id}'s render() returned {type(frame).__name__}"
                           f"{getattr(frame, 'shape', '')}, not an [H, W, 3] image; it cannot be recorded.")
    return frame.astype(np.uint8, copy=False)


@torch.no_grad()
def record_policy(policy: torch.nn.Module, env_id: str, episodes: int = 1, deterministic: bool = True,
                  seed: int = 12345, normalize_obs: bool = False, obs_stats: dict | None = None
                  ) -> tuple[list[np.ndarray], list[float], float]:
    """Run ``policy`` (any ``minippo.policies`` actor-critic, e.g. one being trained in a notebook) for
    ``episodes`` episodes in one rendering ``env_id`` env and keep every frame.

    The first episode starts from ``reset(seed=seed)``, the next ones from the env's own RNG, as in
    :func:`minippo.train.evaluate`, so the same seed gives the same episodes and returns as ``evaluate``.
    ``normalize_obs`` / ``obs_stats``: the observation normalisation the policy was trained behind.

    Returns:
        ``(frames, returns, fps)``: the frames ``[H, W, 3] uint8`` of all episodes in order, each episode's
        raw return, and the env's ``render_fps`` (30 if it names none).

    Raises:
        MinippoError: an env that cannot render (:func:`make_render_env`), ``episodes`` < 1, ``seed`` < 0.
    """
    check_range("episodes", episodes, 1)
    check_range("seed", seed, 0)
    env = make_render_env(env_id, normalize_obs, obs_stats)
    frames: list[np.ndarray] = []
    returns: list[float] = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed if episode == 0 else None)
            frames.append(_frame(env, env_id))
            total, done = 0.0, False
            while not done:
                action, _ = policy.act(torch.as_tensor(obs, dtype=torch.float32)[None],
                                       deterministic=deterministic)
                obs, reward, terminated, truncated, _ = env.step(action[0].numpy())
                total += float(reward)
                done = terminated or truncated
                frames.append(_frame(env, env_id))
            returns.append(total)
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
    return frames, returns, fps


def record(checkpoint: str | Path, episodes: int = 1, deterministic: bool = True, seed: int = 12345,
           env_id: str | None = None) -> tuple[list[np.ndarray], list[float], float]:
    """:func:`record_policy` for the policy saved in ``checkpoint``, behind the observation normalisation
    it was trained with. Returns ``(frames, returns, fps)`` as :func:`record_policy`.

    Raises:
        MinippoError: a bad checkpoint (:func:`minippo.train.load_policy`), an env that cannot render.
    """
    from .train import load_policy  # train imports this module

    check_range("episodes", episodes, 1)
    check_range("seed", seed, 0)
    policy, config, obs_stats = load_policy(checkpoint, env_id)
    return record_policy(policy, env_id or config["env_id"], episodes, deterministic, seed,
                         config["normalize_obs"], obs_stats)


def frame_duration_ms(fps: float) -> int:
    """A GIF frame's duration for ``fps``: a multiple of 10 ms (GIFs count hundredths of a second), at
    least 20 ms (browsers show shorter frames at 100 ms). CartPole's 50 fps → 20 ms."""
    return 10 * max(2, round(100 / fps))


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write ``frames`` (``[H, W, 3] uint8``, all the same size) to ``path``: a looping GIF, or an MP4
    (H.264) at ``fps``. The folder is created.

    Raises:
        MinippoError: as :func:`check_video_path`, no frames, or the file cannot be written.
    """
    path = check_video_path(path)
    if not frames:
        raise MinippoError("No frames to write.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".gif":
            from PIL import Image

            images = [Image.fromarray(frame) for frame in frames]
            images[0].save(path, save_all=True, append_images=images[1:], duration=frame_duration_ms(fps),
                           loop=0)
        else:
            import imageio_ffmpeg

            height, width = frames[0].shape[:2]
            writer = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, macro_block_size=2)
            writer.send(None)  # start the encoder
            for frame in frames:
                writer.send(np.ascontiguousarray(frame))
            writer.close()
    except OSError as e:
        raise MinippoError(f"Cannot write {path}: {e.strerror or e}.") from None
    return path


def record_video(checkpoint: str | Path, path: str | Path, episodes: int = 1, deterministic: bool = True,
                 seed: int = 12345, env_id: str | None = None) -> tuple[Path, list[float], int]:
    """:func:`record` then :func:`write_video`; the path is checked first, so that a bad one costs
    nothing. Returns ``(path, returns, number of frames recorded)``."""
    check_video_path(path)
    frames, returns, fps = record(checkpoint, episodes, deterministic, seed, env_id)
    return write_video(frames, path, fps), returns, len(frames)


def record_training_video(run_dir: str | Path, iteration: int) -> Path:
    """One deterministic episode of ``run_dir/checkpoint.pt`` (the one just written), saved as
    ``run_dir/videos/iter-XXXXX.gif`` (``minippo train --video-every``)."""
    run_dir = Path(run_dir)
    frames, _, fps = record(run_dir / "checkpoint.pt", 1)
    return write_video(frames, run_dir / "videos" / f"iter-{iteration:05d}.gif", fps)
