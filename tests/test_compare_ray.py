"""`minippo compare --ray` on a local Ray (2 CPUs): the runs come back to --out as files, equal to those
of the process pool for the same seeds, and a failed run, skipping finished runs and resuming unfinished
ones work as without Ray (tests/test_compare.py, tests/test_resume.py). One test, ~30 s: Ray starts three
times."""

import csv
import json
import shutil

import pytest

from minippo.cli import main
from minippo.compare import read_folder, write_folder

pytest.importorskip("ray")

TIME_COLUMNS = ("time_s", "steps_per_s")  # wall-clock numbers: the only columns that may differ


def progress_without_time(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIME_COLUMNS} for row in csv.DictReader(f)]


def assert_same_run(ray_run, pool_run):
    assert progress_without_time(ray_run) == progress_without_time(pool_run)
    assert (ray_run / "config.json").read_text() == (pool_run / "config.json").read_text()
    done_ray, done_pool = (json.loads((run / "done.json").read_text()) for run in (ray_run, pool_run))
    assert {**done_ray, "time_s": 0} == {**done_pool, "time_s": 0}


def test_ray_runs_equal_the_pool_runs_and_fail_skip_and_resume_alike(tmp_path, capsys):
    tiny = ["compare", "--algos", "ppo", "--seeds", "0", "1", "--jobs", "2"]  # 256 env steps an iteration
    pool, on_ray = tmp_path / "pool", tmp_path / "ray"
    assert main([*tiny, "--total-steps", "1024", "--out", str(pool)]) == 0

    # ppo-s1 fails on the Ray worker (its config.json is a folder, and folders travel too); ppo-s0 goes on.
    (on_ray / "ppo-s1" / "config.json").mkdir(parents=True)
    capsys.readouterr()
    assert main([*tiny, "--total-steps", "1024", "--out", str(on_ray), "--ray"]) == 1
    printed = capsys.readouterr().out
    assert "on a local Ray with 2 CPUs" in printed
    assert f"failed: ppo-s1: IsADirectoryError: [Errno 21] Is a directory: '{on_ray / 'ppo-s1'}" in printed
    assert "Traceback" in (on_ray / "ppo-s1" / "error.txt").read_text()  # sent back with the run's files
    assert not (on_ray / "ppo-s1" / "done.json").exists()
    assert_same_run(on_ray / "ppo-s0", pool / "ppo-s0")
    assert "| ppo | 1 |" in (on_ray / "summary.md").read_text()

    # Fixed: the same command trains ppo-s1 only; ppo-s0 is kept as it was.
    (on_ray / "ppo-s1" / "config.json").rmdir()
    kept = (on_ray / "ppo-s0" / "progress.csv").stat().st_mtime_ns
    assert main([*tiny, "--total-steps", "1024", "--out", str(on_ray), "--ray"]) == 0
    assert "1 already finished" in capsys.readouterr().out
    assert (on_ray / "ppo-s0" / "progress.csv").stat().st_mtime_ns == kept
    assert not (on_ray / "ppo-s1" / "error.txt").exists()  # deleted on the worker, so here too
    assert_same_run(on_ray / "ppo-s1", pool / "ppo-s1")
    assert "| ppo | 2 |" in (on_ray / "summary.md").read_text()
    assert (on_ray / "returns.png").is_file()

    # A larger budget: both runs are unfinished, so each backend resumes them from their checkpoints (the
    # worker gets the folder's files), and the resumed runs are the same too.
    assert main([*tiny, "--total-steps", "2048", "--out", str(pool)]) == 0
    assert main([*tiny, "--total-steps", "2048", "--out", str(on_ray), "--ray"]) == 0
    for name in ("ppo-s0", "ppo-s1"):
        assert [int(row["iteration"]) for row in progress_without_time(on_ray / name)] == list(range(1, 9))
        assert_same_run(on_ray / name, pool / name)


def test_write_folder_makes_the_folder_hold_exactly_the_files(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "tb").mkdir(parents=True)
    (source / "tb" / "events").write_bytes(b"\x00\x01")
    (source / "empty").mkdir()
    (source / "progress.csv").write_text("new")
    (target / "old").mkdir(parents=True)
    (target / "old" / "stale.txt").write_text("gone")
    (target / "progress.csv").write_text("old")
    (target / "done.json").write_text("{}")  # the run sent back has none: it must not look finished
    write_folder(target, read_folder(source))
    assert read_folder(target) == read_folder(source) == {
        "empty": None, "progress.csv": b"new", "tb": None, "tb/events": b"\x00\x01"}
    shutil.rmtree(source)
    assert read_folder(source) == {}
