"""Tests of minippo/compare.py: the summary table against hand-worked numbers, input checks, and
`minippo compare` end to end on a tiny budget (real PPO runs in 2 worker processes, ~10 s each test)."""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_error_line

from minippo.cli import main
from minippo.compare import compare, compare_grid, format_summary, summarize, summary_notes
from minippo.errors import MinippoError
from minippo.plot import Run

TINY = ["--algos", "ppo", "--seeds", "0", "1", "--total-steps", "2000", "--jobs", "2"]


def make_run(algo, steps, returns, time_s=10.0, steps_per_s=100.0):
    return Run(path=None, env_id="CartPole-v1", algo=algo, seed=0, total_steps=steps[-1],
               steps=np.array(steps), returns=np.array(returns, dtype=float), final_return=returns[-1],
               global_step=steps[-1], time_s=time_s, steps_per_s=steps_per_s)


def test_summary_by_hand():
    # Threshold 100. "a": its runs first reach 100 at steps 300 and 500 and never → median of
    # (300, 500, ∞) = 500. "b": only one of three reaches it → median ∞ → "not reached".
    runs = [make_run("a", [100, 300, 400], [50, 100, 90], time_s=10),
            make_run("a", [100, 500], [50, 120], time_s=20),
            make_run("a", [100, 600], [50, 60], time_s=30),
            make_run("b", [100, 200], [10, 100], steps_per_s=50),
            make_run("b", [100, 200], [10, 20], steps_per_s=150),
            make_run("b", [100, 200], [10, 30], steps_per_s=100)]
    a, b = summarize(runs, threshold=100)
    assert a["algo"] == "a" and a["seeds"] == 3
    assert a["final_return_mean"] == pytest.approx((90 + 120 + 60) / 3)
    assert a["final_return_std"] == pytest.approx(30.0)  # sample std of 90, 120, 60: √((0+900+900)/2)
    assert a["steps_to_threshold"] == 500 and a["seeds_reached"] == 2
    assert a["wall_time_s"] == pytest.approx(20.0)
    assert math.isinf(b["steps_to_threshold"]) and b["seeds_reached"] == 1
    assert b["steps_per_s"] == pytest.approx(100.0)
    table = format_summary([a, b], threshold=100)
    assert "| a | 3 | 90.0 ± 30.0 | 500 | 2/3 | 20.0 |" in table
    assert "| b | 3 | 50.0 ± 43.6 | not reached | 1/3 |" in table
    (one,) = summarize(runs[:1], threshold=100)
    assert "| a | 1 | 90.0 | 300 | 1/1 |" in format_summary([one], threshold=100)  # no ± with one seed


def test_summary_notes_say_what_the_plus_minus_and_the_band_are():
    # "a" has 3 runs with a curve, "b" 1 (its second run finished no episode, so it has no curve), "c" 5.
    runs = [make_run("a", [100, 200], [1, 2])] * 3 + [make_run("b", [100, 200], [1, 2])]
    runs += [Run(path=None, env_id="CartPole-v1", algo="b", seed=1, total_steps=200, steps=np.array([]),
                 returns=np.array([]))]
    runs += [make_run("c", [100, 200], [1, 2])] * 5
    notes = summary_notes(runs, band="auto")
    assert "mean ± sample standard deviation (ddof=1) over the seeds" in notes
    assert "not a confidence interval" in notes
    assert ("shaded band = min–max range over 3 seeds (a); no band (1 seed) (b); "
            "95% t-interval of the mean (5 seeds) (c).") in notes
    assert "± 1 std over 3 seeds (a)" in summary_notes(runs[:3], band="std")


def test_bad_input_raises_before_any_run(tmp_path):
    with pytest.raises(MinippoError, match="Unknown algorithm.*'nope'"):
        compare(algos=["ppo", "nope"], out=tmp_path, show_progress=False)
    with pytest.raises(MinippoError, match="Unknown environment id 'CartPol-v1'"):
        compare("CartPol-v1", out=tmp_path, show_progress=False)
    with pytest.raises(MinippoError, match="seed=-1"):
        compare(algos=["ppo"], seeds=[0, -1], out=tmp_path, show_progress=False)
    with pytest.raises(MinippoError, match="total_steps=0"):
        compare(algos=["ppo"], total_steps=0, out=tmp_path, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_compare_command_error_is_one_line(tmp_path, capsys):
    assert main(["compare", "--env", "Nope-v0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minippo: error: Unknown environment id") and err.count("\n") == 1


def test_compare_tiny_budget(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--out", str(out)]) == 0
    for seed in (0, 1):
        run_dir = out / f"ppo-s{seed}"
        done = json.loads((run_dir / "done.json").read_text())
        assert done["seed"] == seed and done["total_steps"] == 2000 and done["global_step"] >= 2000
        assert (run_dir / "progress.csv").is_file() and (run_dir / "checkpoint.pt").is_file()
    assert (out / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "returns.svg").read_text().lstrip().startswith("<?xml")
    with open(out / "summary.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["algo"] == "ppo" and row["seeds"] == "2" and float(row["steps_per_s"]) > 0
    summary_md = (out / "summary.md").read_text()
    assert "| ppo | 2 |" in summary_md
    assert "shaded band = min–max range over 2 seeds (ppo)." in summary_md
    assert "| ppo | 2 |" in capsys.readouterr().out


def test_failed_run_is_reported_and_the_rest_go_on_then_resume(tmp_path, capsys):
    out = tmp_path / "cmp"
    # Break ppo-s1 only: its config.json is a folder, so minippo.train fails to write it.
    (out / "ppo-s1" / "config.json").mkdir(parents=True)
    assert main(["compare", *TINY, "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "failed: ppo-s1: IsADirectoryError" in printed
    assert "Traceback" in (out / "ppo-s1" / "error.txt").read_text()
    assert (out / "ppo-s0" / "done.json").is_file() and not (out / "ppo-s1" / "done.json").exists()
    assert (out / "returns.png").is_file()
    summary_md = (out / "summary.md").read_text()
    assert "| ppo | 1 |" in summary_md and "no band (1 seed) (ppo)" in summary_md  # from the finished run

    # Fix the cause and run the same command: only ppo-s1 is trained, ppo-s0 is kept as it was.
    (out / "ppo-s1" / "config.json").rmdir()
    kept = (out / "ppo-s0" / "progress.csv").stat().st_mtime_ns
    assert main(["compare", *TINY, "--out", str(out)]) == 0
    assert "1 already finished" in capsys.readouterr().out
    assert (out / "ppo-s0" / "progress.csv").stat().st_mtime_ns == kept
    assert (out / "ppo-s1" / "done.json").is_file() and not (out / "ppo-s1" / "error.txt").exists()
    assert "| ppo | 2 |" in (out / "summary.md").read_text()


def write_finished_run(path, algo, seed, steps, returns, total_steps=2000, env_id="CartPole-v1"):
    """A run folder as a finished comparison leaves it (config.json, progress.csv, done.json), so that
    compare() reuses it instead of training."""
    path.mkdir(parents=True)
    train = {"env_id": env_id, "algo": algo, "seed": seed, "total_steps": total_steps}
    (path / "config.json").write_text(json.dumps({"train": train, "algorithm": {}}))
    lines = ["iteration,global_step,time_s,rolling_return_mean,steps_per_s"]
    lines += [f"{i},{s},{i:.1f},{r},{s / i}" for i, (s, r) in enumerate(zip(steps, returns, strict=True), 1)]
    (path / "progress.csv").write_text("\n".join(lines) + "\n")
    (path / "done.json").write_text(json.dumps({**train, "global_step": steps[-1], "time_s": 3.0,
                                                "final_return": returns[-1]}))


def write_dominated_runs(out):
    """Three finished seeds of ppo and of vpg on CartPole-v1, every ppo run ending above every vpg run (so
    P(ppo > vpg) = 1); ppo's final returns are 200, 210, 220."""
    for seed in range(3):
        write_finished_run(out / f"ppo-s{seed}", "ppo", seed, [500, 1000, 2000], [20, 100, 200 + 10 * seed])
        write_finished_run(out / f"vpg-s{seed}", "vpg", seed, [400, 1200, 2000], [20, 40, 50 + 10 * seed])


def test_compare_writes_the_rliable_statistics_of_its_runs(tmp_path, capsys):
    pytest.importorskip("rliable")
    from minippo.stats import compute_stats

    out = tmp_path / "cmp"
    write_dominated_runs(out)
    result = compare(algos=["ppo", "vpg"], seeds=[0, 1, 2], total_steps=2000, out=out, show_progress=False,
                     stats_reps=200, stats_seed=7)
    assert not result.failed and len(result.runs) == 6
    assert (out / "performance_profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.stats["poi"]["final_return"][("ppo", "vpg")] == pytest.approx((1.0, 1.0, 1.0))

    # The numbers in stats.csv are those of minippo.stats on the same runs, reps and seed.
    expected = compute_stats(result.runs, reps=200, seed=7)
    with open(out / "stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (2 + 2)  # 2 scores × (2 IQMs + 2 ordered pairs)
    for row in rows:
        if row["statistic"] == "iqm":
            value = expected["iqm"][row["metric"]][row["algo"]]
        else:
            value = expected["poi"][row["metric"]][(row["algo"], row["versus"])]
        assert [float(row[k]) for k in ("estimate", "ci_low", "ci_high")] == pytest.approx(value)
    # By hand: 3 runs, so the IQM is the mean; ppo's final returns are 200, 210, 220.
    ppo_final = next(r for r in rows if r["metric"] == "final_return" and r["algo"] == "ppo"
                     and r["statistic"] == "iqm")
    assert float(ppo_final["estimate"]) == pytest.approx(210.0)

    summary_md = (out / "summary.md").read_text()
    assert "| ppo | 3 |" in summary_md  # today's table is still there, above the statistics
    iqm = expected["iqm"]["final_return"]["ppo"]
    assert f"| ppo | 3 | {iqm[0]:.1f} [{iqm[1]:.1f}, {iqm[2]:.1f}] |" in summary_md
    assert "| ppo | — | 1.00 [1.00, 1.00] |" in summary_md
    assert "AUC = mean return over env steps 500–2,000" in summary_md
    assert "### How to read them" in summary_md and "With 3 runs per algorithm" in summary_md


def test_compare_without_rliable_says_how_to_get_the_statistics(tmp_path, monkeypatch):
    monkeypatch.setattr("minippo.compare.rliable_available", lambda: False)
    out = tmp_path / "cmp"
    for seed in range(2):
        write_finished_run(out / f"ppo-s{seed}", "ppo", seed, [500, 2000], [20, 100])
    result = compare(algos=["ppo"], seeds=[0, 1], total_steps=2000, out=out, show_progress=False)
    assert result.stats is None and (out / "summary.csv").is_file() and (out / "returns.png").is_file()
    assert not (out / "stats.csv").exists() and not (out / "performance_profile.png").exists()
    assert 'rliable is not installed; get them with `pip install "minippo[stats]"`' in (out / "summary.md"
                                                                                          ).read_text()


def test_compare_tensorboard_writes_events_for_every_run(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "cmp"
    assert main(["compare", "--algos", "ppo", "vpg", "--seeds", "0", "--total-steps", "1024", "--jobs", "1",
                 "--out", str(out), "--tensorboard"]) == 0
    for name in ("ppo-s0", "vpg-s0"):
        events = EventAccumulator(str(out / name / "tb"))
        events.Reload()
        steps = [e.step for e in events.Scalars("episodic_return_mean")]
        assert steps and steps == sorted(steps) and steps[-1] == 1024, (name, steps)


def test_compare_grid_writes_a_folder_and_a_figure_per_env(tmp_path, capsys):
    # One PPO batch of Acrobot (16 envs × 256 steps); 16 of CartPole's. Both runs share the 2 workers.
    out = tmp_path / "grid"
    assert main(["compare", "--env", "CartPole-v1", "Acrobot-v1", "--algos", "ppo", "--seeds", "0",
                 "--total-steps", "4096", "--jobs", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Acrobot-v1", "CartPole-v1"]
    for env_id in ("CartPole-v1", "Acrobot-v1"):
        done = json.loads((out / env_id / "ppo-s0" / "done.json").read_text())
        assert done["env_id"] == env_id and done["global_step"] == 4096
        assert (out / env_id / "returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / env_id / "summary.md").read_text().startswith(f"# {env_id}: ppo")
        with open(out / env_id / "summary.csv", newline="") as f:
            assert [row["algo"] for row in csv.DictReader(f)] == ["ppo"]
    printed = capsys.readouterr().out
    assert printed.index("CartPole-v1\n| algorithm |") < printed.index("Acrobot-v1\n| algorithm |")

    # The same grid again: both runs are finished, so nothing is trained.
    assert main(["compare", "--env", "CartPole-v1", "Acrobot-v1", "--algos", "ppo", "--seeds", "0",
                 "--total-steps", "4096", "--jobs", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("1 already finished") == 2 and "Training" not in printed


def test_compare_grid_default_out_and_one_env_as_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for env_id in ("CartPole-v1", "Acrobot-v1"):  # finished runs, so that nothing is trained
        write_finished_run(tmp_path / "runs" / "compare-CartPole-v1+Acrobot-v1" / env_id / "ppo-s0", "ppo", 0,
                           [500, 2000], [20, 100], env_id=env_id)
    grid = compare_grid(["CartPole-v1", "Acrobot-v1", "CartPole-v1"], ["ppo"], [0], total_steps=2000,
                        show_progress=False)
    assert list(grid) == ["CartPole-v1", "Acrobot-v1"]
    assert grid["Acrobot-v1"].out == Path("runs/compare-CartPole-v1+Acrobot-v1/Acrobot-v1")
    assert (grid["Acrobot-v1"].out / "returns.png").is_file()
    with pytest.raises(MinippoError, match="No environments"):
        compare_grid([], ["ppo"], [0])
    # One env: the comparison folder is `out` itself, as ever.
    write_finished_run(tmp_path / "one" / "ppo-s0", "ppo", 0, [500, 2000], [20, 100])
    assert main(["compare", "--env", "CartPole-v1", "--algos", "ppo", "--seeds", "0", "--total-steps", "2000",
                 "--out", "one"]) == 0
    assert (tmp_path / "one" / "returns.png").is_file() and not (tmp_path / "one" / "CartPole-v1").exists()


def test_compare_ray_without_ray_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "cmp"
    assert main(["compare", "--algos", "ppo", "--seeds", "0", "--out", str(out), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err == 'minippo: error: --ray needs Ray, which is not installed: pip install "minippo[ray]"\n'
    assert not out.exists()


def test_plot_stats_prints_the_statistics_compare_writes_and_saves_a_profile_per_env(tmp_path, capsys):
    pytest.importorskip("rliable")
    from minippo.plot import load_runs
    from minippo.stats import compute_stats, format_stats

    runs = tmp_path / "runs"
    write_dominated_runs(runs)
    for seed in range(3):
        write_finished_run(runs / f"acro-s{seed}", "ppo", seed, [500, 2000], [-500, -100 - seed],
                           env_id="Acrobot-v1")
    out = tmp_path / "fig" / "returns.png"
    assert main(["plot", str(runs), "--out", str(out), "--stats"]) == 0
    printed = capsys.readouterr().out
    # The same tables as compare's summary.md (default resamples and seed), one section per env.
    cartpole = [run for run in load_runs([runs]) if run.env_id == "CartPole-v1"]
    assert format_stats(compute_stats(cartpole)) in printed
    assert "| ppo | — | 1.00 [1.00, 1.00] |" in printed  # every ppo run ends above every vpg run
    assert "## Acrobot-v1: statistics" in printed and "| ppo | 3 | -101.0 [" in printed
    for env_id in ("CartPole-v1", "Acrobot-v1"):
        assert (tmp_path / "fig" / f"returns_profile_{env_id}.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_stats_without_rliable_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import minippo.stats

    for seed in range(2):
        write_finished_run(tmp_path / "runs" / f"ppo-s{seed}", "ppo", seed, [500, 2000], [20, 100])
    monkeypatch.setattr(minippo.stats, "rliable_available", lambda: False)
    out = tmp_path / "fig" / "returns.png"
    assert main(["plot", str(tmp_path / "runs"), "--out", str(out), "--stats"]) == 2
    assert 'needs rliable, which is not installed: pip install "minippo[stats]"' in one_error_line(capsys)
    assert not (tmp_path / "fig").exists()
