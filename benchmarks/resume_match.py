"""How closely a resumed Gymnasium run matches the uninterrupted one (issue 12).

A resumed run restores the policy, the optimiser, the normalisation statistics and every RNG state, but
not the episodes in flight: Gymnasium envs cannot be snapshotted, so they are reset (with a seed derived
from the run's seed and the iteration). From the resumed iteration on, the two runs see different
episodes, and their learning curves part like the curves of two seeds that share a history.

For each seed this trains the uninterrupted run and the same run stopped (as by Ctrl-C) after
``--stop-fraction`` of its iterations and resumed, then prints the final return (mean of the last 10
episodes), the env steps to the reward threshold, the mean absolute difference of the rolling return
after the stop, and whether the rows up to the stop are identical; and, as the noise floor, the same
difference between two uninterrupted seeds. ::

    python benchmarks/resume_match.py                              # PPO, CartPole-v1, seeds 0 1 2
    python benchmarks/resume_match.py --algo vpg --seeds 0 1 --out benchmarks/results/resume_match
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from minippo.plot import reward_threshold
from minippo.rollout import GymRollout
from minippo.train import resume, train


def rolling(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(run_dir / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(r["global_step"]) for r in rows])
    ret = np.array([float(r["rolling_return_mean"]) if r["rolling_return_mean"] else np.nan for r in rows])
    return steps, ret


def steps_to(steps: np.ndarray, ret: np.ndarray, threshold: float | None) -> float:
    if threshold is None:
        return math.nan
    hit = np.nonzero(ret >= threshold)[0]
    return float(steps[hit[0]]) if len(hit) else math.inf


@contextmanager
def stopped_after(iterations: int):
    """Within this block, a Gymnasium rollout raises KeyboardInterrupt once ``iterations`` batches have
    been collected: the training loop stops as after a Ctrl-C, keeping the checkpoint of that iteration."""
    original, calls = GymRollout.collect, [0]

    def collect(self, policy):
        calls[0] += 1
        if calls[0] > iterations:
            raise KeyboardInterrupt
        return original(self, policy)

    GymRollout.collect = collect
    try:
        yield
    finally:
        GymRollout.collect = original


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--total-steps", type=int, help="(default: the algorithm's for the env)")
    parser.add_argument("--stop-fraction", type=float, default=0.1,
                        help="stop after this share of the iterations, then resume (default: 0.1)")
    parser.add_argument("--out", help="folder for results.md (default: print only)")
    args = parser.parse_args(argv)

    threshold = reward_threshold(args.env)
    lines = [f"# Resumed vs uninterrupted: {args.algo} on {args.env}, stopped after "
             f"{args.stop_fraction:.0%} of the iterations and resumed\n",
             "| seed | stopped after iteration | final return, whole | final return, resumed | "
             "steps to threshold, whole | steps to threshold, resumed | mean abs. difference of the rolling "
             "return after the stop | rows up to the stop identical |",
             "|---|---|---|---|---|---|---|---|"]
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            whole, parts = Path(tmp) / f"whole-{seed}", Path(tmp) / f"parts-{seed}"
            result = train(args.env, args.algo, total_steps=args.total_steps, seed=seed, device="cpu",
                           out=whole, show_progress=False)
            stop = max(1, round(result.iterations * args.stop_fraction))
            with stopped_after(stop):  # as if Ctrl-C'd during iteration stop + 1
                train(args.env, args.algo, total_steps=args.total_steps, seed=seed, device="cpu", out=parts,
                      show_progress=False)
            resumed = resume(parts, show_progress=False)
            (s_w, r_w), (s_p, r_p) = rolling(whole), rolling(parts)
            identical_before = np.array_equal(r_w[:stop], r_p[:stop], equal_nan=True)
            diff = float(np.nanmean(np.abs(r_w[stop:] - r_p[stop:])))
            curves[seed] = r_w
            lines.append(f"| {seed} | {stop} of {result.iterations} | {result.final_return:.1f} | "
                         f"{resumed.final_return:.1f} | {steps_to(s_w, r_w, threshold):.0f} | "
                         f"{steps_to(s_p, r_p, threshold):.0f} | {diff:.1f} | "
                         f"{'yes' if identical_before else 'NO'} |")
    if len(curves) >= 2:
        a, b = list(curves.values())[:2]
        n = min(len(a), len(b))
        floor = np.nanmean(np.abs(a[:n] - b[:n]))
        lines.append(f"\nNoise floor: mean abs. difference of the rolling return between uninterrupted seeds "
                     f"{args.seeds[0]} and {args.seeds[1]}, whole run: {floor:.1f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
