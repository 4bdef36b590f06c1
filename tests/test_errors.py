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
    """Rewards are fine for ``good_steps`` steps (summed over all resets), then NaN."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)
    steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), {}

    def step(self, action):
        NaNRewardEnv.steps += 1
        reward = float("nan") if NaNRewardEnv.steps > 3 * 64 else 1.0
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
