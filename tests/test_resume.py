"""Resume, overwrite protection, failed writes, kill -9 and same-seed determinism (issue 12)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_errors import one_error_line

from minippo.cli import main
from minippo.logger import load_checkpoint
from minippo.train import resume, train

train_module = sys.modules["minippo.train"]  # the module; `minippo.train` is the function

TINY = ["--hp", "num_steps=16", "--num-envs", "1", "--no-progress"]  # 16 env steps per iteration


def snapshot(folder: Path) -> dict:
    """Every file's bytes and modification time: to show a folder was left untouched."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def progress_rows(run_dir: Path) -> list[dict]:
    """The rows of progress.csv, checking that it is well-formed: complete lines of the header's width."""
    text = (run_dir / "progress.csv").read_text()
    assert text.endswith("\n"), "progress.csv ends in a partial line"
    lines = list(csv.reader(text.splitlines()))
    assert all(len(line) == len(lines[0]) for line in lines), "a row of the wrong width"
    return [dict(zip(lines[0], line)) for line in lines[1:]]


def iterations(run_dir: Path) -> list[int]:
    return [int(row["iteration"]) for row in progress_rows(run_dir)]


# --- Never lose a run ---------------------------------------------------------------------------------

def test_out_on_an_existing_run_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "64", *TINY, "--out", str(run)]) == 0
    before = snapshot(run)
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(run)]) == 2
    line = one_error_line(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before

    assert main(["train", "--total-steps", "32", *TINY, "--out", str(run), "--overwrite"]) == 0
    assert iterations(run) == [1, 2]
    assert load_checkpoint(run)["global_step"] == 32


def test_failed_checkpoint_write_keeps_the_previous_checkpoint_and_csv(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "48", *TINY, "--out", str(run)]) == 0
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "progress.csv")}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train_module, "save_checkpoint", disk_full)
    assert main(["train", "--resume", str(run), "--total-steps", "96", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "Could not save iteration 4" in line and "No space left on device" in line and "intact" in line
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / "checkpoint.pt.tmp").exists()


def test_failed_csv_write_keeps_the_previous_checkpoint_and_csv(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "48", *TINY, "--out", str(run)]) == 0
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "progress.csv")}

    def half_a_row_then_fail(self, row):
        self.writer.writerow(["4", "6"])  # the start of a row...
        raise OSError(28, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(csv.DictWriter, "writerow", half_a_row_then_fail)
    assert main(["train", "--resume", str(run), "--total-steps", "96", "--no-progress"]) == 2
    assert "intact" in one_error_line(capsys)
    assert {name: (run / name).read_bytes() for name in before} == before


# --- Resume -------------------------------------------------------------------------------------------

def test_resume_drops_rows_after_the_checkpoint_and_continues(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "80", *TINY, "--out", str(run)]) == 0
    with open(run / "progress.csv", "a") as f:  # a row written just before a kill, then half of one
        f.write("6,96" + ",1" * (len(progress_rows(run)[0]) - 2) + "\n7,11")
    assert main(["train", "--resume", str(run), "--total-steps", "160", "--no-progress"]) == 0
    assert iterations(run) == list(range(1, 11))
    assert load_checkpoint(run)["global_step"] == 160
    assert [int(r["global_step"]) for r in progress_rows(run)] == list(range(16, 161, 16))

    # At its budget already: nothing more is trained, nothing is lost.
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert iterations(run) == list(range(1, 11))


def test_resume_refuses_settings_of_its_own(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--hp", "learning_rate=1e-3", "--no-progress"]) == 2
    assert "drop --hp" in one_error_line(capsys)
    assert main(["train", "--resume", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "No checkpoint" in one_error_line(capsys)


def test_resume_restores_normalization_optimizer_and_rng(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train("CartPole-v1", "ppo", total_steps=64, num_envs=2, num_steps=16, seed=3, out=run,
          show_progress=False, normalize_obs=True, normalize_reward=True)
    saved = load_checkpoint(run)
    restored = {}
    original = train_module.restore_loop_state

    def spy(state, policy, algorithm):
        out = original(state, policy, algorithm)
        restored["generator"] = algorithm.generator.get_state()
        restored["step"] = float(algorithm.optimizer.state_dict()["state"][0]["step"])
        return out

    monkeypatch.setattr(train_module, "restore_loop_state", spy)
    resume(run, total_steps=128, show_progress=False)
    assert (restored["generator"] == saved["rng"]["generator"]).all()
    assert restored["step"] == float(saved["algorithm"]["optimizer"]["state"][0]["step"]) > 0
    after = load_checkpoint(run)
    # The running statistics went on from the saved ones instead of starting again at zero.
    for key in ("obs_normalization", "reward_normalization"):
        assert float(after[key]["count"]) > float(saved[key]["count"]) + 60
    assert after["iteration"] == 4 and iterations(run) == [1, 2, 3, 4]


# --- Determinism --------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["ppo", "vpg", "trpo"])
def test_same_seed_gives_the_same_progress_csv(algo, tmp_path):
    for name in ("a", "b"):
        train("CartPole-v1", algo, total_steps=1024, num_envs=4, num_steps=64, seed=7, device="cpu",
              out=tmp_path / name, show_progress=False)
    time_columns = {"time_s", "steps_per_s"}
    a, b = ([{k: v for k, v in row.items() if k not in time_columns} for row in progress_rows(tmp_path / n)]
            for n in ("a", "b"))
    assert len(a) == 4 and a == b


# --- kill -9 ------------------------------------------------------------------------------------------

def checkpoint_iteration(run: Path) -> int:
    try:
        return load_checkpoint(run)["iteration"]
    except Exception:  # not written yet
        return 0


def test_kill_9_and_resume_reaches_the_cartpole_threshold(tmp_path):
    """SIGKILL `minippo train` at random moments, resume after each kill; the run ends as if whole."""
    rng = random.Random(0)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "minippo.cli", "train", "--total-steps", "100000", "--seed", "0",
               "--device", "cpu", "--no-progress"]
    kills, start = 0, time.monotonic()
    while kills < 5:
        args = ["--out", str(run)] if kills == 0 else ["--resume", str(run)]
        reached = checkpoint_iteration(run)
        process = subprocess.Popen(command + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait for at least one new checkpoint, then kill at a random moment a little later.
        while checkpoint_iteration(run) <= reached and process.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        assert process.poll() is None, process.stderr.read().decode()
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        kills += 1
        saved = load_checkpoint(run)  # always loads
        done = iterations(run)  # well-formed, contiguous; at most one row past the checkpoint
        assert done == list(range(1, len(done) + 1))
        assert len(done) in (saved["iteration"], saved["iteration"] + 1)
        assert time.monotonic() - start < 60

    finished = subprocess.run(command + ["--resume", str(run)], env=env, capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    rows = progress_rows(run)
    assert [int(r["iteration"]) for r in rows] == list(range(1, 392))  # ceil(100000 / 256) iterations
    assert int(rows[-1]["global_step"]) == load_checkpoint(run)["global_step"] == 391 * 256
    assert max(float(r["rolling_return_mean"] or 0) for r in rows) >= 475


def test_compare_resumes_an_unfinished_run_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "cmp"
    # An unfinished ppo-s0: half its budget, no done.json (as if the comparison was killed).
    assert main(["train", "--total-steps", "1024", "--seed", "0", "--device", "cpu", "--no-progress",
                 "--out", str(out / "ppo-s0")]) == 0
    first_rows = progress_rows(out / "ppo-s0")
    assert main(["compare", "--algos", "ppo", "--seeds", "0", "--total-steps", "2048", "--jobs", "1",
                 "--out", str(out)]) == 0
    rows = progress_rows(out / "ppo-s0")
    assert rows[:len(first_rows)] == first_rows and len(rows) == 8  # went on, did not start over
    assert (out / "ppo-s0" / "done.json").is_file()


def test_kill_9_compare_and_run_it_again(tmp_path):
    """SIGKILL `minippo compare` (its process group: the parent and its worker processes) at random
    moments, run the same command again after each kill; the comparison ends as if never interrupted."""
    rng = random.Random(1)
    out = tmp_path / "cmp"
    runs = [out / "ppo-s0", out / "ppo-s1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "minippo.cli", "compare", "--algos", "ppo", "--seeds", "0", "1",
               "--jobs", "2", "--total-steps", "5120", "--out", str(out)]  # 20 iterations of 256 env steps
    # Each launch spends seconds importing (the parent, then each worker), so two kills: the first a
    # moment after the first checkpoint is written, the second at a random moment of the next launch,
    # which may fall in its imports, in the resume (progress.csv rewritten) or in training.
    kills, start = 0, time.monotonic()
    for delay in (None, rng.uniform(4.0, 10.0)):
        launched = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # its own process group, workers included
        while process.poll() is None and (not any((run / "checkpoint.pt").exists() for run in runs)
                                          if delay is None else time.monotonic() - launched < delay):
            time.sleep(0.05)
        if delay is None:
            time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is not None:  # it finished first: nothing left to interrupt
            break
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        for run in runs:  # whatever the moment: a checkpoint that loads, rows up to it (or one more)
            if (run / "checkpoint.pt").exists():
                done = iterations(run)
                assert done == list(range(1, len(done) + 1))
                assert len(done) - load_checkpoint(run)["iteration"] in (0, 1)
    assert kills >= 1 and time.monotonic() - start < 60

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    for run in runs:
        rows = progress_rows(run)
        assert [int(r["iteration"]) for r in rows] == list(range(1, 21))  # none missing, none repeated
        state = load_checkpoint(run)
        assert state["iteration"] == 20 and int(rows[-1]["global_step"]) == state["global_step"] == 5120
        assert (run / "done.json").is_file()
    assert "| ppo | 2 |" in (out / "summary.md").read_text()
    assert all((out / name).is_file() for name in ("returns.png", "returns.svg", "summary.csv"))
