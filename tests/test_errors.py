"""Bad input gives a clear error (and a non-zero exit from the command), and loses nothing."""

import csv
import json
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_errors import one_error_line

from minippo import MinippoError, NonFiniteLossError, evaluate, train
from minippo.cli import main
from minippo.logger import load_checkpoint


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "minippo.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_unknown_env_id_suggests_close_matches(capsys):
    assert main(["train", "--env", "CartPol-v1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Unknown environment id 'CartPol-v1'" in err and "CartPole-v1" in err
    assert "Traceback" not in err


def test_cli_reports_unknown_env_without_traceback():
    proc = run_cli("train", "--env", "LunarLandr-v3")
    assert proc.returncode == 2
    assert "LunarLander-v3" in proc.stderr and "Traceback" not in proc.stderr


def test_unsupported_observation_space():
    with pytest.raises(MinippoError, match="observation space.*flat Box"):
        train("Blackjack-v1", total_steps=100, show_progress=False)


class MultiBinaryEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_unsupported_action_space():
    if "minippo-test/MultiBinary-v0" not in gym.registry:
        gym.register("minippo-test/MultiBinary-v0", entry_point=MultiBinaryEnv, max_episode_steps=5)
    with pytest.raises(MinippoError, match="action space.*Discrete.*Box"):
        train("minippo-test/MultiBinary-v0", total_steps=100, show_progress=False)


@pytest.mark.parametrize("hp,match", [("clip_range=1.5", r"clip_range=1\.5 is out of range: it must be in \(0, 1\)"),  # noqa: E501
                                      ("gamma=1.2", r"gamma=1\.2 is out of range: it must be in \[0, 1\]"),
                                      ("learning_rate=-1", r"learning_rate=-1 is out of range"),
                                      ("num_epochs=0", r"num_epochs=0 is out of range"),
                                      ("clip_rnge=0.1", r"Unknown hyperparameter.*clip_rnge")])
def test_out_of_range_hyperparameters_are_named(hp, match, capsys):
    assert main(["train", "--hp", hp, "--no-progress", "--total-steps", "100"]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_negative_total_steps(capsys):
    assert main(["train", "--total-steps", "-5", "--no-progress"]) == 2
    assert "total_steps=-5 is out of range" in capsys.readouterr().err


def test_cuda_without_gpu_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["train", "--device", "cuda", "--no-progress", "--total-steps", "100"]) == 2
    assert "no CUDA GPU is available" in capsys.readouterr().err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train("CartPole-v1", total_steps=2048, seed=0, out=out, show_progress=False)
    return out


def test_run_folder_and_eval(small_run, capsys):
    config = json.loads((small_run / "config.json").read_text())
    assert config["train"]["env_id"] == "CartPole-v1" and config["train"]["algo"] == "ppo"
    state = load_checkpoint(small_run / "checkpoint.pt")
    assert state["iteration"] == 8 and state["global_step"] == 2048
    returns = evaluate(small_run / "checkpoint.pt", episodes=3)
    assert len(returns) == 3 and all(r > 0 for r in returns)
    assert main(["eval", str(small_run), "--episodes", "2"]) == 0
    assert "return over 2 episodes (deterministic actions)" in capsys.readouterr().out


def test_corrupt_checkpoint(small_run, tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    data = (small_run / "checkpoint.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])  # a truncated file, as after a crash without atomic writes
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "corrupt or not a minippo checkpoint" in err and "Traceback" not in err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(MinippoError, match="corrupt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(MinippoError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_that_does_not_match_the_env(small_run, capsys):
    assert main(["eval", str(small_run), "--env", "Acrobot-v1"]) == 2
    assert "does not match Acrobot-v1" in capsys.readouterr().err


class NaNRewardEnv(gym.Env):
    """Rewards are fine for 3 · 64 steps (summed over all resets), then 1e30: finite, so the env check of
    the rollout lets them through, but large enough to overflow the loss to inf."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        NaNRewardEnv.steps += 1
        reward = 1e30 if NaNRewardEnv.steps > 3 * 64 else 1.0
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), reward, False, False, {}


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    if "minippo-test/NaN-v0" not in gym.registry:
        gym.register("minippo-test/NaN-v0", entry_point=NaNRewardEnv, max_episode_steps=10)
    NaNRewardEnv.steps = 0
    with pytest.raises(NonFiniteLossError, match="NaN"):
        train("minippo-test/NaN-v0", total_steps=64 * 10, num_envs=1, num_steps=64, seed=0, out=tmp_path,
              show_progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 3  # iterations 1–3 were clean; the 4th hit the NaN
    assert all(torch.isfinite(p).all() for p in state["policy"].values())
    with open(tmp_path / "progress.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


class InterruptingEnv(NaNRewardEnv):
    def step(self, action):
        NaNRewardEnv.steps += 1
        if NaNRewardEnv.steps == 2 * 64 + 10:
            raise KeyboardInterrupt
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), 1.0, False, False, {}


def test_ctrl_c_keeps_finished_iterations(tmp_path):
    if "minippo-test/Interrupt-v0" not in gym.registry:
        gym.register("minippo-test/Interrupt-v0", entry_point=InterruptingEnv, max_episode_steps=10)
    NaNRewardEnv.steps = 0
    result = train("minippo-test/Interrupt-v0", total_steps=64 * 10, num_envs=1, num_steps=64, seed=0,
                   out=tmp_path, show_progress=False)
    assert result.status == "interrupted" and result.iterations == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 2
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


# --- No traceback on any input: one line on stderr, exit status 2 ---------------------------------------

def test_negative_seed_is_refused(capsys):
    assert main(["train", "--seed", "-1", "--no-progress", "--total-steps", "2048"]) == 2
    assert "seed=-1 is out of range" in one_error_line(capsys)


def test_out_that_cannot_be_a_folder(tmp_path, capsys):
    assert main(["train", "--out", "/proc/x", "--no-progress", "--total-steps", "2048"]) == 2
    line = one_error_line(capsys)
    assert "/proc/x" in line and "Give --out a folder you can write to" in line
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    assert main(["train", "--out", str(a_file), "--no-progress", "--total-steps", "2048"]) == 2
    line = one_error_line(capsys)
    assert str(a_file) in line and "is an existing file" in line and "new folder" in line
    assert a_file.read_text() == "keep me"


def test_non_numeric_hyperparameter_names_parameter_and_type(capsys):
    assert main(["train", "--hp", "learning_rate=abc", "--no-progress", "--total-steps", "2048"]) == 2
    assert "learning_rate='abc' is not a number: it must be a number in (0, 1]" in one_error_line(capsys)
    assert main(["train", "--hp", "num_steps=abc", "--no-progress"]) == 2
    assert "num_steps='abc' is not a whole number" in one_error_line(capsys)
    assert main(["train", "--hp", "hidden_sizes=abc", "--no-progress"]) == 2
    assert "hidden_sizes='abc'" in one_error_line(capsys)


@pytest.mark.parametrize("value,expected", [("64", [64]), ("64,64", [64, 64]), ("(32,16)", [32, 16])])
def test_hidden_sizes_forms(value, expected, tmp_path, capsys):
    assert main(["train", "--hp", f"hidden_sizes={value}", "--hp", "num_steps=16", "--num-envs", "1",
                 "--total-steps", "16", "--no-progress", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["train"]["hidden_sizes"] == expected


def test_total_steps_as_an_integral_float(tmp_path, capsys):
    assert main(["train", "--total-steps", "3.2e1", "--hp", "num_steps=16", "--num-envs", "1",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["global_step"] == 32
    assert main(["train", "--total-steps", "1.5", "--no-progress"]) == 2
    assert "total_steps=1.5 is not a whole number" in one_error_line(capsys)


def test_budget_smaller_than_one_batch(tmp_path, capsys):
    assert main(["train", "--hp", "num_steps=100000", "--total-steps", "100", "--num-envs", "8",
                 "--no-progress", "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys)
    assert "total_steps=100 is smaller than one batch" in line and "100000 × 8 = 800000" in line
    assert "Raise --total-steps to at least 800000" in line
    assert not (tmp_path / "run").exists()


# --- A student's own environment: Gymnasium's "module:EnvId" ids ------------------------------------------

STUDENT_ENV = "envs_for_tests:EndlessConstant-v0"  # tests/ is on sys.path under pytest


def test_student_env_module_via_the_python_api(tmp_path):
    result = train(STUDENT_ENV, total_steps=64, num_envs=2, num_steps=32, out=tmp_path, show_progress=False)
    assert result.global_step == 64 and result.episode_returns[0] == 20.0  # 20 steps of reward 1
    assert evaluate(tmp_path, episodes=2) == [20.0, 20.0]


def test_student_env_module_via_the_cli(tmp_path, capsys):
    assert main(["train", "--env", STUDENT_ENV, "--total-steps", "64", "--num-envs", "2", "--hp",
                 "num_steps=32", "--no-progress", "--out", str(tmp_path)]) == 0
    assert main(["eval", str(tmp_path), "--episodes", "2"]) == 0
    assert "return over 2 episodes" in capsys.readouterr().out


@pytest.mark.parametrize("env_id,match", [
    ("no_such_module_xyz:Endless-v0", "Cannot import module 'no_such_module_xyz'"),
    ("envs_for_tests:Missing-v0", "Module 'envs_for_tests' was imported but did not register"),
])
def test_student_env_module_errors(env_id, match, capsys):
    assert main(["train", "--env", env_id, "--no-progress", "--total-steps", "64"]) == 2
    assert match in one_error_line(capsys)
    with pytest.raises(MinippoError, match=match):
        train(env_id, total_steps=64, show_progress=False)
