"""Pool the per-seed results of several ``bench_gym.py`` runs and compare the libraries' median env steps
to the threshold, with a bootstrap confidence interval of the ratio (a script, not a test).

    python benchmarks/pool_seeds.py benchmarks/results/ppo benchmarks/results/ppo_cartpole_seeds5-14 \\
        benchmarks/results/ppo_cartpole_seeds15-29 --env CartPole-v1 --algo ppo

Seeds differ a lot in how fast they learn (CartPole PPO: 17k to 59k steps), so a handful of seeds cannot
tell two implementations apart; this shows how wide the uncertainty of the median ratio still is.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="--out folders of bench_gym.py runs")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()

    steps: dict[str, dict[int, float]] = {}  # library -> seed -> steps to threshold (inf: not reached)
    for folder in args.folders:
        with open(folder / "per_seed.csv", newline="") as f:
            for row in csv.DictReader(f):
                if row["env"] == args.env and row["algo"] == args.algo and row["status"] == "finished":
                    steps.setdefault(row["library"], {})[int(row["seed"])] = float(row["steps_to_threshold"])
    if len(steps) != 2 or "minippo" not in steps:
        raise SystemExit(f"need minippo and one SB3 library for {args.env}/{args.algo}; found {list(steps)}")
    other = next(lib for lib in steps if lib != "minippo")
    seeds = sorted(set(steps["minippo"]) & set(steps[other]))
    ours = np.array([steps["minippo"][s] for s in seeds])
    theirs = np.array([steps[other][s] for s in seeds])

    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(seeds), size=(args.resamples, len(seeds)))  # resample seeds, both libraries
    ratios = np.median(ours[picks], axis=1) / np.median(theirs[picks], axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    print(f"{args.env} {args.algo}, {len(seeds)} seeds ({seeds[0]}–{seeds[-1]}), env steps to the threshold:")
    for library, x in (("minippo", ours), (other, theirs)):
        print(f"  {library:<22s} median {np.median(x):>7,.0f}   mean {x.mean():>7,.0f}   "
              f"range {x.min():,.0f}–{x.max():,.0f}")
    print(f"  median ratio minippo/{other} = {np.median(ours) / np.median(theirs):.2f}, "
          f"95% bootstrap interval {low:.2f}–{high:.2f} (< 1: minippo needs fewer steps)")
    print(f"  minippo faster on {int((ours < theirs).sum())} seeds, slower on {int((ours > theirs).sum())}, "
          f"tied on {int((ours == theirs).sum())}")


if __name__ == "__main__":
    main()
