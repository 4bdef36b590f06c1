"""``--tensorboard``: the event files in ``RUN_DIR/tb`` hold exactly what ``progress.csv`` holds, read back
with TensorBoard's own reader, for a Gymnasium run, a resumed one and an RLHF run (which adds its
completions as text); a missing package or an offline method is one error line."""

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_error_line
from lm_pipeline import CLI_HP  # the `pipeline` and `cache_dir` fixtures: conftest.py

from minippo.cli import main

pytest.importorskip("tensorboard")  # the dev extra brings it (through minippo[tensorboard])
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = ["--hp", "num_steps=16", "--num-envs", "1", "--no-progress"]  # 16 env steps per iteration


def read_events(tb_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep all
    events.Reload()
    return events


def assert_scalars_match_csv(run: Path) -> list[dict]:
    """Every column of progress.csv is a scalar tag of that name whose (step, value) pairs are the CSV's
    (global_step, cell), in order, once each; an empty cell (NaN) has no event. Returns the rows."""
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    events = read_events(run / "tb")
    assert set(rows[0]) <= set(events.Tags()["scalars"])
    for column in rows[0]:
        logged = [(e.step, e.value) for e in events.Scalars(column)]
        expected = [(int(row["global_step"]), np.float32(float(row[column])))
                    for row in rows if row[column] != ""]
        assert [step for step, _ in logged] == [step for step, _ in expected], column
        # TensorBoard keeps a float32: the CSV's value rounded to float32 must be exactly it.
        assert [np.float32(v) for _, v in logged] == [v for _, v in expected], column
    return rows


def next_second() -> None:
    """Wait for the clock's next whole second. Event files are named by the second they were opened in and
    read in name order; a real resume is seconds to days later, a test's could share the second."""
    now = int(time.time())
    while int(time.time()) == now:
        time.sleep(0.02)


def test_train_writes_every_csv_column_as_scalars(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "96", *TINY, "--out", str(run), "--tensorboard"]) == 0
    assert "tensorboard --logdir" in capsys.readouterr().out
    rows = assert_scalars_match_csv(run)
    assert set(read_events(run / "tb").Tags()["scalars"]) == set(rows[0])  # and nothing else
    assert len(rows) == 6 and rows[-1]["global_step"] == "96"
    assert any(row["episodic_return_mean"] == "" for row in rows)  # an iteration with no episode ended


def test_resume_appends_and_purges_the_steps_after_the_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "64", *TINY, "--out", str(run), "--tensorboard"]) == 0
    # What a kill between the TensorBoard write and the checkpoint leaves: a point past the checkpoint.
    next_second()
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(run / "tb")) as writer:
        writer.add_scalar("policy_loss", 999.0, 80)
        writer.add_scalar("stale_tag", 1.0, 80)
    next_second()
    # No --tensorboard: a run that wrote tb/ goes on writing it.
    assert main(["train", "--resume", str(run), "--total-steps", "128", "--no-progress"]) == 0
    rows = assert_scalars_match_csv(run)  # policy_loss at step 80 is the resumed run's, once
    assert [int(row["global_step"]) for row in rows] == list(range(16, 129, 16))
    events = read_events(run / "tb")
    assert "stale_tag" not in events.Tags()["scalars"] or events.Scalars("stale_tag") == []


def test_overwrite_deletes_the_earlier_runs_events(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "64", *TINY, "--out", str(run), "--tensorboard"]) == 0
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(run), "--tensorboard", "--overwrite",
                 "--seed", "1"]) == 0
    assert len(list((run / "tb").iterdir())) == 1
    assert len(assert_scalars_match_csv(run)) == 2


def test_missing_tensorboard_package_is_one_line_with_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import raise ImportError
    run = tmp_path / "run"
    assert main(["train", "--total-steps", "32", *TINY, "--out", str(run), "--tensorboard"]) == 2
    assert 'pip install "minippo[tensorboard]"' in one_error_line(capsys)
    assert not run.exists()  # refused before anything was written
    assert main(["rlhf", "--out", str(run), "--no-progress", "--tensorboard"]) == 2
    assert 'pip install "minippo[tensorboard]"' in one_error_line(capsys)
    assert not run.exists()


def test_rlhf_offline_method_refuses_tensorboard(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["rlhf", "--algo", "dpo", "--out", str(run), "--no-progress", "--tensorboard"]) == 2
    assert "--tensorboard logs the iterations of RL" in one_error_line(capsys)


def text_of(events: EventAccumulator, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(f"{tag}/text_summary")]


def test_rlhf_writes_the_csv_columns_and_the_completions(pipeline, cache_dir, tmp_path):
    run = tmp_path / "run"
    args = ["rlhf", "--algo", "ppo", "--iterations", "2", "--device", "cpu", "--out", str(run),
            "--cache-dir", str(cache_dir), "--no-progress", "--tensorboard"] + [a for hp in CLI_HP
                                                                               for a in ("--hp", hp)]
    assert main(args) == 0
    rows = assert_scalars_match_csv(run)
    assert {"rm_score", "gold_reward", "kl_ref", "beta"} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    events = read_events(run / "tb")
    before, after = text_of(events, "samples/before"), text_of(events, "samples/after")
    assert [step for step, _ in before] == [0]
    assert [step for step, _ in after] == [int(rows[-1]["global_step"])]
    for (_, text), samples in ((before[0], summary["samples_before"]), (after[0], summary["samples_after"])):
        lines = text.split("\n\n")
        assert len(lines) == len(samples) == 6
        for line, (doc, gold) in zip(lines, samples):
            assert line == f"[{gold:+.0f}] `{doc.replace('`', chr(39))}`"
