"""``minippo eval --video`` and ``train --video-every``: GIFs of the saved policy, read back with Pillow;
an MP4 read back with ffmpeg; an env that cannot render and an MP4 without an encoder are one error line
each."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_errors import one_error_line
from gifs import gif_frames

from minippo.cli import main
from minippo.train import evaluate
from minippo.video import frame_duration_ms, record

pytest.importorskip("pygame")  # the video extra (gymnasium[classic-control]) brings it; dev includes it

TINY = ["--hp", "num_steps=16", "--num-envs", "1", "--no-progress"]  # 16 env steps per iteration


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "run"
    assert main(["train", "--total-steps", "64", *TINY, "--out", str(out), "--video-every", "3"]) == 0
    return out


def test_eval_video_writes_every_step_of_the_episodes(run, tmp_path, capsys):
    returns = evaluate(run / "checkpoint.pt", 2)  # CartPole pays 1 per step: the returns are the lengths
    out = tmp_path / "out.gif"
    assert main(["eval", str(run), "--video", str(out), "--episodes", "2"]) == 0
    recorded = int(sum(returns)) + 2  # an episode of L steps is L + 1 frames
    assert f"2 episodes, {recorded} frames" in capsys.readouterr().out
    frames = gif_frames(out)
    # Pillow merges a frame identical to the one before into a longer one, so count the durations.
    assert sum(d for _, d in frames) == recorded * frame_duration_ms(50)
    assert {f.size for f, _ in frames} == {(600, 400)}
    assert len({f.tobytes() for f, _ in frames}) > 1  # the cart moves


def test_eval_video_writes_an_mp4_with_every_frame(run, tmp_path, capsys):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")  # the video extra brings it; dev includes it
    returns = evaluate(run / "checkpoint.pt", 1)
    out = tmp_path / "out.mp4"
    assert main(["eval", str(run), "--video", str(out)]) == 0
    recorded = int(returns[0]) + 1
    assert f"1 episodes, {recorded} frames" in capsys.readouterr().out
    reader = imageio_ffmpeg.read_frames(str(out))  # ffmpeg decodes the file back
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(400, 600, 3) for f in reader]
    assert meta["size"] == (600, 400) and meta["fps"] == 50
    assert len(frames) == recorded
    assert len({f.tobytes() for f in frames}) > 1  # the cart moves
    first, _, _ = record(run / "checkpoint.pt", 1)
    # H.264 is lossy: the decoded first frame is near the rendered one, not equal to it.
    assert np.abs(frames[0].astype(int) - first[0].astype(int)).mean() < 3


def test_eval_video_returns_are_evaluate_returns(run, tmp_path, capsys):
    assert main(["eval", str(run), "--episodes", "3"]) == 0
    plain = capsys.readouterr().out.strip()
    assert main(["eval", str(run), "--episodes", "3", "--video", str(tmp_path / "v.gif")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == plain


def test_video_every_writes_a_gif_every_n_iterations_and_at_the_end(run):
    assert sorted(p.name for p in (run / "videos").iterdir()) == ["iter-00003.gif", "iter-00004.gif"]
    assert all(len(gif_frames(p)) >= 2 for p in (run / "videos").iterdir())


def test_env_that_cannot_render_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--env", "envs_for_tests:NoRender-v0", "--total-steps", "32", *TINY, "--out",
                 str(out), "--video-every", "1"]) == 2
    assert "cannot render rgb_array frames" in one_error_line(capsys)
    assert not out.exists()
    assert main(["train", "--env", "envs_for_tests:NoRender-v0", "--total-steps", "32", *TINY, "--out",
                 str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--video", str(tmp_path / "v.gif")]) == 2
    assert "cannot render rgb_array frames" in one_error_line(capsys)


def test_mp4_without_an_encoder_and_a_bad_suffix_are_one_line(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # makes the import raise ImportError
    assert main(["eval", str(run), "--video", str(tmp_path / "v.mp4")]) == 2
    assert "pip install imageio-ffmpeg (or write a .gif)" in one_error_line(capsys)
    assert main(["eval", str(run), "--video", str(tmp_path / "v.avi")]) == 2
    assert "must end in .gif or .mp4" in one_error_line(capsys)
    assert not list(tmp_path.iterdir())


def test_missing_renderer_is_one_line_with_the_fix(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pygame", None)
    assert main(["eval", str(run), "--video", str(tmp_path / "v.gif")]) == 2
    assert 'pip install "minippo[video]"' in one_error_line(capsys)


@pytest.fixture(scope="module")
def hopper_run(tmp_path_factory):
    pytest.importorskip("mujoco")  # the mujoco extra; dev includes it
    out = tmp_path_factory.mktemp("hopper") / "run"
    assert main(["train", "--env", "Hopper-v5", "--total-steps", "32", *TINY, "--out", str(out)]) == 0
    return out


def eval_video(run, path, mujoco_gl):
    """``minippo eval RUN --video PATH`` in a fresh process without a display: MuJoCo picks its OpenGL
    backend from MUJOCO_GL when it is first imported, so each setting needs its own process."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    if mujoco_gl:
        env["MUJOCO_GL"] = mujoco_gl
    # In the folder of the video: MuJoCo writes MUJOCO_LOG.TXT into the working folder when it fails.
    return subprocess.run([sys.executable, "-m", "minippo.cli", "eval", str(run), "--video", str(path)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=path.parent)


def test_mujoco_without_a_display_is_one_line_naming_mujoco_gl(hopper_run, tmp_path):
    done = eval_video(hopper_run, tmp_path / "h.gif", None)  # GLFW, MuJoCo's default, needs a display
    assert done.returncode == 2 and not (tmp_path / "h.gif").exists()
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "MuJoCo could not load or start its OpenGL backend (MUJOCO_GL=unset" in done.stderr
    assert "set MUJOCO_GL=egl" in done.stderr


def test_mujoco_renders_off_screen_with_egl(hopper_run, tmp_path):
    done = eval_video(hopper_run, tmp_path / "h.gif", "egl")
    if done.returncode == 2 and "MUJOCO_GL=egl" in done.stderr:
        pytest.skip(f"no EGL on this machine: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    frames = gif_frames(tmp_path / "h.gif")
    assert {f.size for f, _ in frames} == {(480, 480)}  # Gymnasium's MuJoCo default
    assert len({f.tobytes() for f, _ in frames}) > 1  # the hopper moves (or falls)


def test_mujoco_renders_through_the_models_tracking_camera():
    pytest.importorskip("mujoco")
    import mujoco

    from minippo.video import make_render_env

    env = make_render_env("Hopper-v5")  # no frame is drawn: no OpenGL needed
    try:
        model = env.unwrapped.model
        track = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, "track")
        assert track != -1 and env.unwrapped.mujoco_renderer.camera_id == track  # not the free camera (-1)
    finally:
        env.close()
