"""Tests of minippo/plot.py: reading run folders back, the interpolate-then-average aggregation and its
bands (against numbers worked out by hand or by scipy, and their coverage by simulation), the legend's
account of the band, and `minippo plot` on small synthetic run folders."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from minippo.cli import main
from minippo.errors import MinippoError
from minippo.plot import Run, aggregate, band_label, find_run_dirs, load_run, load_runs, plot_runs

COLUMNS = ["iteration", "global_step", "time_s", "episodic_return_mean", "episodic_length_mean", "episodes",
           "rolling_return_mean", "steps_per_s"]


def write_run(path, steps, returns, env_id="CartPole-v1", algo="ppo", seed=0):
    """A run folder as minippo.train writes it; ``None`` in ``returns`` is an iteration with no finished
    episode yet (an empty cell)."""
    path.mkdir(parents=True)
    config = {"train": {"env_id": env_id, "algo": algo, "seed": seed, "total_steps": steps[-1]},
              "algorithm": {}}
    (path / "config.json").write_text(json.dumps(config))
    lines = [",".join(COLUMNS)]
    for i, (step, ret) in enumerate(zip(steps, returns, strict=True), start=1):
        cell = "" if ret is None else str(ret)
        episodes = 0 if ret is None else 1
        lines.append(f"{i},{step},{0.01 * i:.2f},{cell},{cell},{episodes},{cell},{step / (0.01 * i)}")
    (path / "progress.csv").write_text("\n".join(lines) + "\n")
    return path


def make_run(steps, returns, algo="ppo", env_id="CartPole-v1"):
    return Run(path=None, env_id=env_id, algo=algo, seed=0, total_steps=steps[-1] if steps else 0,
               steps=np.array(steps), returns=np.array(returns, dtype=float))


# Run A logs every 100 steps, run B at 150, 350, 450. They overlap on [150, 400] (the latest first step,
# the earliest last step); a 6-point grid there is 150, 200, 250, 300, 350, 400.
#   A interpolated: 15, 20, 25, 30, 35, 40      (A is 10 per 100 steps)
#   B interpolated:  0, 10, 20, 30, 40, 40      (B rises 0 → 40 from 150 to 350, then stays at 40)
RUN_A = ([100, 200, 300, 400], [10, 20, 30, 40])
RUN_B = ([150, 350, 450], [0, 40, 40])
GRID = [150, 200, 250, 300, 350, 400]
MEAN = [7.5, 15, 22.5, 30, 37.5, 40]


def test_aggregate_interpolates_onto_the_overlap_and_averages():
    steps, mean, _, _ = aggregate([make_run(*RUN_A), make_run(*RUN_B)], grid=6)
    np.testing.assert_allclose(steps, GRID)
    np.testing.assert_allclose(mean, MEAN)


def test_std_band_is_mean_plus_minus_sample_std():
    # Two values a, b have sample std |a − b| / √2: at 150 that is 15/√2, at 300 it is 0, at 350 5/√2.
    _, mean, low, high = aggregate([make_run(*RUN_A), make_run(*RUN_B)], grid=6, band="std")
    half_width = np.array([15, 10, 5, 0, 5, 0]) / math.sqrt(2)
    np.testing.assert_allclose(low, np.array(MEAN) - half_width)
    np.testing.assert_allclose(high, np.array(MEAN) + half_width)


def test_range_band_of_two_runs_is_their_min_and_max():
    # The default band ("auto") for 2 runs is the range: A where A < B, B where B < A.
    for band in ("auto", "range"):
        _, _, low, high = aggregate([make_run(*RUN_A), make_run(*RUN_B)], grid=6, band=band)
        np.testing.assert_array_equal(low, [0, 10, 20, 30, 35, 40])
        np.testing.assert_array_equal(high, [15, 20, 25, 30, 40, 40])


def test_three_runs_and_an_explicit_grid():
    # C is a flat 100 from step 50 to 500: it covers the whole overlap, which stays [150, 400].
    runs = [make_run(*RUN_A), make_run(*RUN_B), make_run([50, 500], [100, 100])]
    steps, mean, low, high = aggregate(runs, grid=np.array([250.0, 400.0]))
    np.testing.assert_allclose(mean, [(25 + 20 + 100) / 3, (40 + 40 + 100) / 3])
    # 3 runs: the default band is exactly [min, max] of the three (A 25, B 20, C 100 at 250; 40, 40, 100).
    np.testing.assert_array_equal(low, [20, 40])
    np.testing.assert_array_equal(high, [100, 100])
    assert band_label("auto", 3) == "min–max range over 3 seeds"


def _flat_runs(values):
    """One run per row of ``values`` ([n, G]), logging at steps 0, 1, …, G−1: aggregate() on the grid
    0 … G−1 sees exactly these values, so every grid step is an independent n-seed sample."""
    steps = np.arange(values.shape[1])
    return [make_run(steps.tolist(), row) for row in values]


def test_t95_band_is_the_student_t_interval_of_the_mean():
    values = np.random.default_rng(1).normal(10.0, 3.0, size=(6, 4))  # 6 runs, 4 grid steps
    grid = np.arange(4.0)
    _, mean, low, high = aggregate(_flat_runs(values), grid=grid, band="t95")
    expected_low, expected_high = stats.t.interval(0.95, df=5, loc=values.mean(axis=0),
                                                   scale=stats.sem(values, axis=0))
    np.testing.assert_allclose(mean, values.mean(axis=0))
    np.testing.assert_allclose(low, expected_low)
    np.testing.assert_allclose(high, expected_high)
    # By hand: t_{0.975, 5} = 2.5706, s / √6 with s the sample std.
    np.testing.assert_allclose(high - mean, 2.570582 * values.std(axis=0, ddof=1) / math.sqrt(6), rtol=1e-6)
    assert band_label("t95", 6) == "95% t-interval of the mean (6 seeds)"


def test_auto_band_is_the_range_up_to_4_runs_and_the_t_interval_from_5():
    values = np.random.default_rng(2).normal(size=(5, 3))
    grid = np.arange(3.0)
    four, five = _flat_runs(values[:4]), _flat_runs(values)
    for auto, explicit in ((aggregate(four, grid), aggregate(four, grid, band="range")),
                           (aggregate(five, grid), aggregate(five, grid, band="t95"))):
        for a, b in zip(auto, explicit, strict=True):
            np.testing.assert_array_equal(a, b)
    assert band_label("auto", 4) == "min–max range over 4 seeds"
    assert band_label("auto", 5) == "95% t-interval of the mean (5 seeds)"
    assert band_label("std", 3) == "± 1 std over 3 seeds"


def test_t95_covers_the_true_mean_95_percent_of_the_time_and_the_3_seed_range_75_percent():
    # 20,000 grid steps, each an independent sample of n normal "seeds" with true mean 7: the share of
    # steps whose band holds 7 is the band's coverage (standard error ≈ 0.002 at 95%).
    rng = np.random.default_rng(0)
    grid = np.arange(20_000.0)
    _, _, low, high = aggregate(_flat_runs(rng.normal(7.0, 2.0, size=(5, 20_000))), grid=grid)  # auto: t95
    assert 0.94 <= np.mean((low <= 7.0) & (7.0 <= high)) <= 0.96
    # The 3-seed range holds the mean with probability 1 − 2 · 0.5³ = 0.75: why it is not called a 95% CI.
    _, _, low, high = aggregate(_flat_runs(rng.normal(7.0, 2.0, size=(3, 20_000))), grid=grid)  # auto: range
    assert 0.73 <= np.mean((low <= 7.0) & (7.0 <= high)) <= 0.77


def test_one_run_has_no_band():
    for band in ("auto", "range", "t95", "std"):
        _, mean, low, high = aggregate([make_run(*RUN_A)], grid=6, band=band)
        np.testing.assert_array_equal(low, mean)
        np.testing.assert_array_equal(high, mean)
        assert band_label(band, 1) is None


def test_aggregate_errors():
    with pytest.raises(MinippoError, match="share no range"):
        aggregate([make_run([100, 200], [1, 2]), make_run([300, 400], [1, 2])])
    with pytest.raises(MinippoError, match="no episode finished"):
        aggregate([make_run([], [])])
    with pytest.raises(MinippoError, match="grid must lie"):
        aggregate([make_run(*RUN_A)], grid=np.array([50.0]))
    with pytest.raises(MinippoError, match="Unknown band"):
        aggregate([make_run(*RUN_A)], band="iqr")
    with pytest.raises(MinippoError, match="percentile bootstrap band was removed"):
        aggregate([make_run(*RUN_A), make_run(*RUN_B)], band="ci95")


def test_load_run_skips_empty_cells(tmp_path):
    run = load_run(write_run(tmp_path / "r", [64, 128, 192, 256], [None, None, 20.0, 30.0], seed=3))
    assert (run.env_id, run.algo, run.seed, run.total_steps) == ("CartPole-v1", "ppo", 3, 256)
    np.testing.assert_array_equal(run.steps, [192, 256])
    np.testing.assert_array_equal(run.returns, [20.0, 30.0])
    assert run.final_return == 30.0 and run.global_step == 256 and run.time_s == pytest.approx(0.04)


def test_find_run_dirs_searches_folders_recursively(tmp_path):
    a = write_run(tmp_path / "cmp" / "ppo-s0", *RUN_A)
    b = write_run(tmp_path / "cmp" / "deeper" / "ppo-s1", *RUN_B)
    (tmp_path / "cmp" / "notes").mkdir()
    assert find_run_dirs([tmp_path / "cmp"]) == [b, a]  # sorted by path: cmp/deeper/... < cmp/ppo-s0
    assert find_run_dirs([a, tmp_path / "cmp"]) == [b, a]  # no duplicates
    with pytest.raises(MinippoError, match="No run folders"):
        find_run_dirs([tmp_path / "cmp" / "notes"])
    with pytest.raises(MinippoError, match="does not exist"):
        find_run_dirs([tmp_path / "nowhere"])


def _legend(ax):
    """An Axes' legend as (title, [labels])."""
    legend = ax.get_legend()
    return legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()]


def test_plot_runs_groups_by_env_and_algo(tmp_path):
    write_run(tmp_path / "ppo-s0", *RUN_A)
    write_run(tmp_path / "ppo-s1", *RUN_B, seed=1)
    write_run(tmp_path / "vpg-s0", *RUN_A, algo="vpg")
    write_run(tmp_path / "ppo-s2", [64, 128], [None, None], seed=2)  # no episode finished: no curve
    write_run(tmp_path / "acrobot-ppo-s0", *RUN_A, env_id="Acrobot-v1")
    fig = plot_runs(load_runs([tmp_path]))
    acrobot, cartpole = fig.axes  # one panel per env, sorted: Acrobot-v1 first
    assert "Acrobot-v1" in acrobot.get_title() and "CartPole-v1" in cartpole.get_title()
    # CartPole: ppo has 2 seeds and a band, vpg 1 seed and none, so each label says its own band.
    title, labels = _legend(cartpole)
    assert labels == ["ppo (shaded: min–max range over 2 seeds)", "vpg (1 seed, no band)",
                      "reward threshold (475)"]
    assert title == "line: mean over seeds"
    assert len(cartpole.collections) == 1  # one shaded band: ppo's
    # Acrobot: one run, so nothing is shaded and the legend claims no band or interval.
    title, labels = _legend(acrobot)
    assert labels == ["ppo (1 seed)", "reward threshold (-100)"]
    assert title == "line: one seed per curve, no band"
    assert len(acrobot.collections) == 0
    for word in ("shaded", "range", "interval", "CI", "std", "%"):
        assert word not in title + " ".join(labels)


def test_legend_title_names_a_shared_band_and_its_seeds():
    runs = [make_run(*RUN_A), make_run(*RUN_B), make_run(*RUN_A, algo="vpg"), make_run(*RUN_B, algo="vpg")]
    assert _legend(plot_runs(runs).axes[0]) == (
        "line: mean over seeds\nshaded: min–max range over 2 seeds", ["ppo (2 seeds)", "vpg (2 seeds)",
                                                                     "reward threshold (475)"])
    title, _ = _legend(plot_runs(runs * 3, band="auto").axes[0])  # 6 runs per algorithm
    assert title == "line: mean over seeds\nshaded: 95% t-interval of the mean (6 seeds)"
    title, _ = _legend(plot_runs(runs, band="std").axes[0])
    assert title == "line: mean over seeds\nshaded: ± 1 std over 2 seeds"
    with pytest.raises(MinippoError, match="Unknown band"):
        plot_runs([make_run(*RUN_A)], band="ci95")  # refused even where no curve would have a band


def test_plot_command_writes_a_png(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for seed in range(3):  # noisy curves with many points, like real runs
        steps = np.arange(1, 101) * (256 + 64 * seed)
        write_run(tmp_path / "runs" / f"ppo-s{seed}", steps.tolist(),
                  (np.linspace(20, 500, 100) + rng.normal(0, 30, 100)).round(1).tolist(), seed=seed)
    out = tmp_path / "fig" / "returns.png"
    assert main(["plot", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert main(["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "t95.svg"), "--band", "t95"]) == 0
    assert "t-interval of the mean (3 seeds)" in (tmp_path / "t95.svg").read_text()
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000
    assert "3 runs" in capsys.readouterr().out


def test_plot_command_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minippo: error: No run folders") and err.count("\n") == 1
    write_run(tmp_path / "r", *RUN_A)
    assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "x.nope")]) == 2
    assert "Cannot save" in capsys.readouterr().err


def test_each_algorithm_has_one_colour_whichever_others_are_drawn():
    from matplotlib.colors import to_hex

    from minippo.plot import ALGORITHM_COLORS

    def line_colours(algos):
        runs = [make_run([10, 20, 30], [1.0, 2.0, 3.0], algo=a) for a in algos]
        fig = plot_runs(runs)
        return {line.get_label().split(" ")[0]: to_hex(line.get_color()) for line in fig.axes[0].lines
                if not line.get_label().startswith("reward threshold")}

    assert line_colours(["vpg", "trpo", "ppo"]) == {a: ALGORITHM_COLORS[a] for a in ("vpg", "trpo", "ppo")}
    assert line_colours(["ppo"]) == {"ppo": ALGORITHM_COLORS["ppo"]}
    assert line_colours(["trpo", "ppo"]) == {"trpo": ALGORITHM_COLORS["trpo"], "ppo": ALGORITHM_COLORS["ppo"]}
    assert len(set(ALGORITHM_COLORS.values())) == len(ALGORITHM_COLORS)


def test_font_scale_enlarges_every_text_and_svg_pdf_are_written(tmp_path):
    runs = [make_run([10, 20, 30], [1.0, 2.0, 3.0], algo=a) for a in ("ppo", "vpg")]
    normal, large = plot_runs(runs), plot_runs(runs, font_scale=2.0)
    size = lambda fig: fig.axes[0].xaxis.label.get_fontsize()
    assert size(large) == pytest.approx(2 * size(normal))
    assert large.axes[0].get_legend().get_texts()[0].get_fontsize() > \
        normal.axes[0].get_legend().get_texts()[0].get_fontsize()
    with pytest.raises(MinippoError, match="font_scale"):
        plot_runs(runs, font_scale=0)
    for suffix in ("svg", "pdf"):
        large.savefig(tmp_path / f"returns.{suffix}")
        assert (tmp_path / f"returns.{suffix}").stat().st_size > 1000
