"""Tutorial 06 (comparing algorithms honestly): the shipped data are the benchmark's, and the notebook, run
once on its small budget, computes the numbers its prose relies on."""

import csv
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from notebooks import count_figures, execute_notebook

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tutorials" / "data"
SOURCES = [ROOT / "benchmarks" / "results" / name
           for name in ("ppo", "ppo_cartpole_seeds5-14", "ppo_cartpole_seeds15-29")]
VARIABLES = ["ratio_30", "ratio_first5", "pool_low", "pool_high", "seed_spread", "median_gap", "share_slower",
             "share_claims", "null_share_claims", "coverage", "range_theory", "coverage_boot_3", "iqm_ratio",
             "iqm_ratio_low", "iqm_ratio_high", "poi", "poi_low", "poi_high", "power", "seeds_for_80",
             "power_at_30_observed", "smallest_p_3", "lowest_final_return"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return execute_notebook("06_comparing_algorithms_honestly.ipynb", tmp_path_factory.mktemp("nb06"),
                            VARIABLES)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_shipped_data_are_the_benchmark_results():
    shipped = {(r["env"], r["library"], int(r["seed"])): r for r in rows(DATA / "ppo_per_seed.csv")}
    source = {(r["env"], r["library"], int(r["seed"])): r for folder in SOURCES
              for r in rows(folder / "per_seed.csv") if r["algo"] == "ppo"}
    assert shipped.keys() == source.keys()
    assert len(shipped) == 2 * 30 + 2 * 5   # CartPole seeds 0–29, Pendulum seeds 0–4, two libraries
    for key, row in shipped.items():
        assert float(row["steps_to_threshold"]) == float(source[key]["steps_to_threshold"])
        assert float(row["final_return"]) == pytest.approx(float(source[key]["final_return"]), abs=0.005)
        assert int(row["total_steps"]) == int(source[key]["total_steps"])

    curves = {(r["library"], int(r["seed"]), int(r["global_step"])): float(r["rolling_return_mean"])
              for folder in SOURCES for r in rows(folder / "curves.csv") if r["env"] == "CartPole-v1"}
    shipped_curves = rows(DATA / "cartpole_ppo_curves.csv")
    assert len(shipped_curves) == 60 * 48   # 60 runs, every 2,048 of ~100k env steps
    for r in shipped_curves:
        key = (r["library"], int(r["seed"]), int(r["global_step"]))
        assert float(r["rolling_return_mean"]) == pytest.approx(curves[key], abs=0.05)
    assert sum(path.stat().st_size for path in DATA.glob("*.csv")) < 200_000   # small enough to commit


def test_the_notebook_runs_and_draws_its_five_figures(run):
    nb, _ = run
    assert count_figures(nb) == 5


def test_the_readme_ratios_match_benchmarks_pool_seeds(run):
    """The notebook's 30-seed median ratio and interval are pool_seeds.py's, printed to 2 decimals."""
    _, v = run
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pool_seeds.py"), *map(str, SOURCES)],
                         capture_output=True, text=True, check=True).stdout
    ratio, low, high = re.search(r"= ([\d.]+), 95% bootstrap interval ([\d.]+)–([\d.]+)", out).groups()
    assert (f"{v['ratio_30']:.2f}", f"{v['pool_low']:.2f}", f"{v['pool_high']:.2f}") == (ratio, low, high)
    # The intro's story: five seeds made minippo look much slower, thirty cannot tell the two apart.
    assert v["ratio_first5"] >= 1.3
    assert v["pool_low"] <= 1 <= v["pool_high"]
    assert v["seed_spread"] > 5 * v["median_gap"]          # figure 1's title
    assert v["lowest_final_return"] >= 475                  # "final returns compare nothing here"


def test_small_studies_claim_differences_that_thirty_seeds_do_not_find(run):
    _, v = run
    claims = {int(n): s for n, s in v["share_claims"].items()}
    assert v["share_slower"]["5"] > 0.05                  # 5 seeds often claim "minippo is 30% slower"
    assert claims[1] > claims[3] > claims[5] > claims[10]  # fewer seeds, more false claims
    assert v["null_share_claims"]["5"] > 0.1               # with two identical libraries, too


def test_the_three_seed_percentile_bootstrap_covers_about_75_percent(run):
    _, v = run
    assert 0.70 <= v["coverage_boot_3"] <= 0.80
    assert abs(v["coverage_boot_3"] - v["range_theory"]["3"]) < 0.04   # it is [min, max]
    boot, t = v["coverage"]["percentile bootstrap"], v["coverage"]["t-interval"]
    assert boot["10"] < 0.93                                           # "short of 95% well beyond"
    assert all(t[n] > boot[n] for n in ("3", "4", "5", "7", "10"))     # "the t-interval does better"


def test_rliable_finds_no_difference_at_thirty_seeds(run):
    _, v = run
    assert v["iqm_ratio_low"] <= 1 <= v["iqm_ratio_high"]
    assert v["poi_low"] <= 0.5 <= v["poi_high"]
    assert v["iqm_ratio_low"] < v["iqm_ratio"] < v["iqm_ratio_high"]


def test_power_grows_with_seeds_and_with_the_difference(run):
    _, v = run
    power, n80 = v["power"], v["seeds_for_80"]
    assert max(power["1.0"].values()) <= 0.08                      # false-positive rate near 5% at most
    assert v["smallest_p_3"] > 0.05                                # 3 against 3 runs: never p < 0.05
    assert all(power[r]["3"] == 0 for r in power)
    assert n80["1.5"] < n80["1.3"] < n80["1.2"]
    assert n80["1.2"] > 30 and n80["1.5"] <= 15
    assert v["power_at_30_observed"] < 0.5                         # 30 seeds could not see a 1.09 ratio
    assert not math.isnan(v["power_at_30_observed"])
