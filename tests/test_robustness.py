"""Nothing lost, no traceback on any input (issue 12): corrupt run files, envs that break mid-training, and
Hypothesis fuzzing of the command line and of the bytes of a run folder.

Every command here runs in-process through ``minippo.cli.main`` and must either succeed or exit with
status 2 and one line ``minippo: error: ...`` on stderr (:func:`cli_errors.one_error_line`), leaving every
file of the run folder byte-identical.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cli_errors import one_error_line
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from minippo.cli import main
from minippo.logger import load_checkpoint, save_checkpoint
from minippo.train import ALGORITHMS, TrainConfig

TINY = ["--hp", "num_steps=16", "--num-envs", "1", "--no-progress"]  # 16 env steps per iteration


def files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (relative path -> bytes): to show that nothing was written."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def iterations(run_dir: Path) -> list[int]:
    """The iteration column of a well-formed progress.csv (complete lines of the header's width)."""
    text = (run_dir / "progress.csv").read_text()
    lines = list(csv.reader(text.splitlines()))
    assert text.endswith("\n") and all(len(line) == len(lines[0]) for line in lines)
    return [int(line[0]) for line in lines[1:]]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real finished run of 2 iterations (32 env steps): config.json, progress.csv, checkpoint.pt."""
    run = tmp_path_factory.mktemp("robust") / "ppo-s0"
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(run)]) == 0
    return run


# --- Corrupt or foreign run files: one line naming the file, nothing written -------------------------

def bit_flip_in_data(data: bytes) -> bytes:
    """Flip one bit in the middle of the largest tensor record: the zip stays valid, the weights change."""
    at = len(data) // 4  # inside the tensor data of a 144 kB checkpoint (data.pkl is its first 13 kB)
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:]


def first_comma_flipped(data: bytes) -> bytes:
    """'iteration,global_step' -> 'iteration-global_step': one bit (0x2C ^ 0x01) that ruins the header."""
    at = data.index(b",")
    return data[:at] + b"-" + data[at + 1:]


def checkpoint_of(state) -> bytes:
    """The bytes of a checkpoint file holding ``state`` (written as minippo writes them, or plain)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.pt"
        if isinstance(state, dict):
            save_checkpoint(path, state)
        else:
            torch.save(state, path)
        return path.read_bytes()


JUNK = random.Random(0).randbytes(300)
JSON_CORRUPTIONS = {
    "empty": lambda data: b"",
    "truncated": lambda data: data[:len(data) // 2],
    "random bytes": lambda data: JUNK,
    "bit flip": lambda data: bytes([data[0] ^ 0x20]) + data[1:],  # '{' -> '['
    "a JSON list": lambda data: b"[]",
    "a JSON object of another shape": lambda data: b'{"train": 3}',
    "not UTF-8": lambda data: b"\xff\xfe" + data,
}
CORRUPTIONS = {
    "checkpoint.pt": {
        "empty": lambda data: b"",
        "truncated": lambda data: data[:len(data) // 2],
        "random bytes": lambda data: JUNK,
        "bit flip": bit_flip_in_data,
        "bytes inserted": lambda data: data[:5000] + b"\x00junk" + data[5000:],
        "a torch list": lambda data: checkpoint_of([]),
        "a checkpoint of another shape": lambda data: checkpoint_of({"config": {"train": 3}}),
    },
    "config.json": JSON_CORRUPTIONS,
    "done.json": JSON_CORRUPTIONS,
    "progress.csv": {
        "empty": lambda data: b"",
        "truncated in the header": lambda data: data[:12],
        "random bytes": lambda data: JUNK,
        "bit flip": first_comma_flipped,
        "a foreign header": lambda data: b"step,reward\n16,1.0\n32,2.0\n",
        "not UTF-8": lambda data: data[:40] + b"\xff" + data[40:],
    },
}
# Which commands read which file. eval reads only checkpoint.pt: a corrupt config.json or progress.csv
# does not stop it (test_eval_reads_only_the_checkpoint); plot reads config.json and progress.csv.
COMMANDS = {"checkpoint.pt": ["eval", "resume", "compare"], "config.json": ["plot", "resume", "compare"],
            "progress.csv": ["plot", "resume", "compare"], "done.json": ["compare"]}
CASES = [(command, name, how) for name, corruptions in CORRUPTIONS.items() for how in corruptions
         for command in COMMANDS[name]]


def comparison_folder(run_dir: Path, root: Path) -> Path:
    """A finished comparison of one run (ppo, seed 0, 32 env steps) made from ``run_dir``: what
    ``minippo compare --algos ppo --seeds 0 --total-steps 32 --out <root>/cmp`` leaves, without training."""
    out = root / "cmp"
    shutil.copytree(run_dir, out / "ppo-s0")
    done = {"env_id": "CartPole-v1", "algo": "ppo", "seed": 0, "total_steps": 32, "global_step": 32}
    (out / "ppo-s0" / "done.json").write_text(json.dumps(done))
    return out


def run_command(command: str, out: Path, root: Path) -> int:
    """Run ``command`` in-process on the comparison folder ``out`` (or its one run folder)."""
    run = out / "ppo-s0"
    argv = {"eval": ["eval", str(run), "--episodes", "1"],
            "resume": ["train", "--resume", str(run), "--no-progress"],
            "plot": ["plot", str(run), "--out", str(root / "x.png")],
            "compare": ["compare", "--algos", "ppo", "--seeds", "0", "--total-steps", "32", "--jobs", "1",
                        "--out", str(out)]}[command]
    return main(argv)


def test_the_uncorrupted_folder_passes_every_command(run_dir, tmp_path, capsys):
    out = comparison_folder(run_dir, tmp_path)
    for command in ("eval", "resume", "plot", "compare"):
        assert run_command(command, out, tmp_path) == 0, capsys.readouterr().err
    assert (tmp_path / "x.png").is_file() and (out / "summary.md").is_file()
    assert iterations(out / "ppo-s0") == [1, 2] and load_checkpoint(out / "ppo-s0")["iteration"] == 2


@pytest.mark.parametrize("command,name,how", CASES, ids=[f"{c}-{n}-{h}" for c, n, h in CASES])
def test_corrupt_run_file_is_one_line_naming_it_and_nothing_is_written(command, name, how, run_dir, tmp_path,
                                                                       capsys):
    out = comparison_folder(run_dir, tmp_path)
    path = out / "ppo-s0" / name
    path.write_bytes(CORRUPTIONS[name][how](path.read_bytes()))
    before = files(tmp_path)
    assert run_command(command, out, tmp_path) == 2
    line = one_error_line(capsys)
    assert str(path) in line, line
    if command == "compare":
        assert "--redo" in line
    assert files(tmp_path) == before


@pytest.mark.parametrize("command", ["resume", "compare"])
def test_another_runs_config_json_is_refused(command, run_dir, tmp_path, capsys):
    out = comparison_folder(run_dir, tmp_path)
    path = out / "ppo-s0" / "config.json"
    config = json.loads(path.read_text())
    config["train"]["seed"] = 1
    path.write_text(json.dumps(config))
    before = files(tmp_path)
    assert run_command(command, out, tmp_path) == 2
    line = one_error_line(capsys)
    assert f"{path} is another run's (ppo on CartPole-v1, seed 1)" in line and "seed 0" in line
    assert files(tmp_path) == before


def test_resume_with_rows_missing_from_progress_csv(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    lines = (run / "progress.csv").read_bytes().splitlines(keepends=True)
    (run / "progress.csv").write_bytes(b"".join(lines[:2]))  # the header and iteration 1; checkpoint: 2
    before = files(tmp_path)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "rows for iterations 1..1 only, but the checkpoint is at iteration 2" in line
    assert files(tmp_path) == before


def test_eval_reads_only_the_checkpoint(run_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.json").write_bytes(b"\xff junk")
    (run / "progress.csv").write_bytes(b"")
    before = files(tmp_path)
    assert main(["eval", str(run), "--episodes", "1"]) == 0
    assert "return over 1 episodes" in capsys.readouterr().out
    assert files(tmp_path) == before


def test_compare_without_redo_keeps_a_run_with_rows_but_no_checkpoint(run_dir, tmp_path, capsys):
    out = comparison_folder(run_dir, tmp_path)
    (out / "ppo-s0" / "done.json").unlink()
    (out / "ppo-s0" / "checkpoint.pt").unlink()  # two rows of curve, nothing to resume from
    before = files(tmp_path)
    assert run_command("compare", out, tmp_path) == 2
    line = one_error_line(capsys)
    assert "holds rows of several iterations but" in line and "has no checkpoint.pt" in line
    assert files(tmp_path) == before


# --- An env that breaks mid-training: the error names it and the iteration; the last checkpoint stays ---

@pytest.mark.parametrize("env,expected", [
    ("FailingStep-v0", "raised RuntimeError (simulator diverged at call 41) in step()"),
    ("NaNObservation-v0", "returned a NaN observation in env index 0 of num_envs=1"),
    ("NaNReward-v0", "returned a NaN reward in env index 0 of num_envs=1"),
])
def test_broken_env_stops_with_its_name_and_iteration_and_keeps_the_last_checkpoint(env, expected, tmp_path,
                                                                                    capsys):
    run = tmp_path / "run"
    # The 41st step call is the 43rd vector step (two autoreset steps after 20-step episodes): iteration 3.
    assert main(["train", "--env", f"envs_for_tests:{env}", "--total-steps", "128", *TINY,
                 "--out", str(run)]) == 2
    line = one_error_line(capsys)
    assert f"The environment {env} {expected} at rollout step 11 of 16 of iteration 3" in line
    assert f"the checkpoint of iteration 2 in {run} is kept" in line
    assert "second line" not in line  # only the first line of the env's own message
    state = load_checkpoint(run)
    assert state["iteration"] == 2 and state["global_step"] == 32
    assert iterations(run) == [1, 2]


def test_broken_env_in_the_first_iteration_leaves_no_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--env", "envs_for_tests:NaNReward-v0", "--total-steps", "128", "--hp",
                 "num_steps=64", "--num-envs", "1", "--no-progress", "--out", str(run)]) == 2
    line = one_error_line(capsys)
    assert f"of iteration 1; no iteration was completed, so {run} holds no checkpoint." in line
    assert not (run / "checkpoint.pt").exists() and (run / "progress.csv").read_text() == ""


# --- Fuzzing the command line: every input trains or is refused in one line --------------------------

# train() takes these as its own arguments, so minippo/cli.py refuses them in --hp
# (test_hp_naming_a_command_line_option_is_refused); the fuzzing draws the other keys.
COMMAND_LINE_NAMES = {"env_id", "algo", "seed", "total_steps", "num_envs", "device", "out", "overwrite",
                      "show_progress"}
HYPERPARAMETERS = sorted({f.name for cls in (TrainConfig, *(config for _, config, _ in ALGORITHMS.values()))
                          for f in dataclasses.fields(cls)} - COMMAND_LINE_NAMES)
JUNK_KEYS = ["clip_rnge", "", "lr", " learning_rate", "LEARNING_RATE", "num_steps ", "a=b", "__class__"]
NO_DIGITS = st.characters(blacklist_categories=("Nd", "Cs"))  # no huge counts (num_epochs=9999999999)
VALUES = st.one_of(
    st.integers(-3, 12).map(str),
    st.sampled_from(["0.5", "0.1", "0.99", "3", "1e-3", "True", "False", "(32,)", "[8, 8]", "'clip'"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", "-1e400", "1e5", "0.5", "1.5", "()", "[]",
                     "{}", "abc", "None", "True", "False", "false", "(64,)", "64,64", "[0]", "(-1, 2)", "''",
                     "'clip'", "'kl_penalty'", "1j", "[[1]]", "{'a': 1}", "1e-300", "2**8", ""]),
    st.lists(st.integers(-2, 70), max_size=3).map(str),
    st.text(NO_DIGITS, max_size=10),
)


def mostly(valid: st.SearchStrategy, junk: st.SearchStrategy, times: int = 3) -> st.SearchStrategy:
    """``valid`` about ``times`` times as often as ``junk``, so that enough examples get past it
    (``st.one_of`` would pick each about equally often)."""
    return st.sampled_from([True] * times + [False]).flatmap(lambda ok: valid if ok else junk)


TOTAL_STEPS = mostly(st.integers(8, 64).map(str), st.integers(-3, 7).map(str) | st.sampled_from(
    ["nan", "inf", "1e400", "3.2e1", "1e1", "abc", "1.5", "-0", "0x10", "64.0", ""]))
SEED = mostly(st.integers(0, 5).map(str), st.sampled_from(["4294967295", "4294967296", "18446744073709551616",
                                                           "-1", "-3", "1.5", "abc", "1e3", ""]))
NUM_ENVS = mostly(st.integers(1, 4).map(str), st.sampled_from(["0", "-2", "1025", "1024", "1.5", "abc", ""]))
NAN_LOSS = "Training stopped before applying this update"  # a finite but absurd coefficient can overflow


def exits_cleanly(argv: list[str], capsys) -> int:
    """Run the CLI; return its status after asserting the output rule (argparse's own refusals exit 2
    through SystemExit, with its usage line then one ``minippo train: error:`` line)."""
    try:
        status = main(argv)
    except SystemExit as e:
        err = capsys.readouterr().err
        assert e.code == 2 and "Traceback" not in err, err
        assert err.strip().splitlines()[-1].startswith("minippo train: error: argument "), err
        return 2
    if status == 0:
        capsys.readouterr()
    else:
        line = one_error_line(capsys)
        assert status == 2 or (status == 1 and NAN_LOSS in line), (status, line)
    return status


@st.composite
def train_command(draw) -> list[str]:
    """``minippo train`` arguments with a tiny budget (``--hp num_steps=8``, at most 64 env steps when
    valid): the algorithm, its ``--total-steps``, ``--seed``, ``--num-envs``, and up to 2 ``--hp``."""
    algo = draw(st.sampled_from(sorted(ALGORITHMS)))
    own = sorted({f.name for cls in (TrainConfig, ALGORITHMS[algo][1]) for f in dataclasses.fields(cls)}
                 - COMMAND_LINE_NAMES)
    junk_key = st.sampled_from(HYPERPARAMETERS + JUNK_KEYS) | st.text(NO_DIGITS, max_size=8).filter(
        lambda key: key not in COMMAND_LINE_NAMES)
    argv = ["train", "--algo", algo, "--total-steps", draw(TOTAL_STEPS), "--seed", draw(SEED),
            "--num-envs", draw(NUM_ENVS), "--hp", "num_steps=8", "--no-progress"]
    keys = mostly(st.sampled_from(own), junk_key, times=9)
    for key, value in draw(st.lists(st.tuples(keys, VALUES), max_size=2)):
        argv += ["--hp", f"{key}={value}"]
    return argv


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=train_command())
def test_any_command_line_trains_or_is_refused_in_one_line(argv, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        status = exits_cleanly([*argv, "--out", str(out)], capsys)
        event(f"exit status {status}")
        if status == 0:  # a well-formed run folder
            config = json.loads((out / "config.json").read_text())
            rows = iterations(out)
            assert rows == list(range(1, config["num_iterations"] + 1))
            assert load_checkpoint(out)["iteration"] == len(rows) == math.ceil(
                config["train"]["total_steps"] / (config["train"]["num_steps"] * config["train"]["num_envs"]))


@pytest.mark.parametrize("hp", ["seed=3", "total_steps=64", "num_envs=2", "device=cpu", "env_id=Acrobot-v1",
                                "algo=vpg", "out=elsewhere", "show_progress=False"])
def test_hp_naming_a_command_line_option_is_refused(hp, tmp_path, capsys):
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(tmp_path / "run"), "--hp", hp]) == 2
    line = one_error_line(capsys)
    assert hp.partition("=")[0] in line and "instead" in line


def test_fuzzing_finds_fixed(tmp_path, capsys):
    """What the fuzzing found, each now refused in one line (each was a traceback or, for 'false', a
    silently inverted switch)."""
    for hp, message in [("num_epochs=1.5", "num_epochs=1.5 is not an int: it must be an int in [1, inf]"),
                        ("minibatch_size=1e400", "minibatch_size=inf is not an int"),
                        ("normalize_obs=false", "normalize_obs='false' is not True or False"),
                        ("anneal_lr=1", "anneal_lr=1 is not True or False")]:
        assert main(["train", "--total-steps", "32", *TINY, "--out", str(tmp_path / "run"), "--hp", hp]) == 2
        assert message in one_error_line(capsys)
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(tmp_path / "run"),
                 "--seed", str(2**64)]) == 2
    line = one_error_line(capsys)
    assert "seed=18446744073709551616 is out of range: it must be in [0, 4294967295]" in line
    assert not (tmp_path / "run").exists()


# --- Fuzzing the bytes of a run folder: eval and --resume succeed or refuse in one line ---------------

@st.composite
def damage(draw) -> tuple[str, Callable[[bytes], bytes]]:
    """A file of the run and a change of its bytes: a bit flipped, a cut, or bytes inserted, anywhere."""
    name = draw(st.sampled_from(["checkpoint.pt", "progress.csv"]))
    kind = draw(st.sampled_from(["flip", "truncate", "insert"]))
    where, bit = draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(0, 7))
    junk = draw(st.binary(min_size=1, max_size=8))

    def change(data: bytes) -> bytes:
        at = int(where * len(data))
        if kind == "flip":
            return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]
        return data[:at] if kind == "truncate" else data[:at] + junk + data[at:]

    return name, change


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=damage())
def test_damaged_bytes_never_give_a_traceback_or_change_a_file(change, run_dir, capsys):
    name, how = change
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(run_dir, run)
        (run / name).write_bytes(how((run / name).read_bytes()))
        before = files(run)
        status = main(["eval", str(run), "--episodes", "1"])
        if status != 0:
            assert status == 2 and "checkpoint.pt" in one_error_line(capsys)
        assert files(run) == before

        event(f"eval: exit status {status}")
        status = main(["train", "--resume", str(run), "--no-progress"])  # at its budget: trains nothing
        event(f"resume: exit status {status}")
        if status == 0:
            after = files(run)
            assert {k: v for k, v in after.items() if k != "progress.csv"} == {
                k: v for k, v in before.items() if k != "progress.csv"}
            # Only what a resume drops may go: the rows after the checkpoint, or half a row.
            assert before["progress.csv"].startswith(after["progress.csv"]) and iterations(run) == [1, 2]
        else:
            assert status == 2 and name in one_error_line(capsys)
            assert files(run) == before
