"""Make the learning-curve figures in ``figures/``: VPG vs TRPO vs PPO on each env, 3 seeds each.

    python -m minippo.figures                      # CartPole-v1, Acrobot-v1, Pendulum-v1
    python -m minippo.figures --envs CartPole-v1   # just one
    python -m minippo.figures --envs LunarLander-v3 HalfCheetah-v5   # needs the box2d / mujoco extras

Each env is one :func:`minippo.compare.compare` run (runs kept in ``runs/figures/<env>``, so an
interrupted call resumes); its figure and summary table are copied to ``figures/<env>.png`` / ``.svg`` /
``.md``, and ``figures/README.md`` records the command and the git commit of the code that made them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .compare import compare
from .errors import MinippoError

DEFAULT_ENVS = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def make_figures(envs=DEFAULT_ENVS, seeds=(0, 1, 2), jobs: int | None = None, out: str | Path = "figures",
                 runs: str | Path = "runs/figures") -> list[Path]:
    """Compare every algorithm on each env in ``envs`` and copy the figures and tables into ``out``.

    Returns the figure paths written. Raises :class:`MinippoError` for an unknown env id or missing extra.
    """
    out, runs = Path(out), Path(runs)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for env_id in envs:
        start = time.perf_counter()
        result = compare(env_id, seeds=seeds, jobs=jobs, out=runs / env_id)
        for name, suffix in (("returns.png", ".png"), ("returns.svg", ".svg"), ("summary.md", ".md")):
            source = result.out / name
            if source.exists():
                shutil.copyfile(source, out / f"{env_id}{suffix}")
        written.append(out / f"{env_id}.png")
        _record(out, env_id, seeds, time.perf_counter() - start, failed=len(result.failed))
    return written


def _record(out: Path, env_id: str, seeds, seconds: float, failed: int) -> None:
    """Add or replace this env's line in figures/README.md (command, commit, date, wall time)."""
    readme = out / "README.md"
    header = ("# Figures\n\nEach learning-curve figure is made by the command on its line, by the commit "
              "named there (runs in `runs/figures/<env>`). Line: mean over seeds; band: min–max range "
              "over the seeds (from 5 seeds on: 95% t-interval of the mean).\n\n"
              "| figure | command | commit | date | wall time |\n"
              "|---|---|---|---|---|\n")
    lines = readme.read_text().splitlines(keepends=True) if readme.exists() else [header]
    lines = [line for line in lines if not line.startswith(f"| [{env_id}.png]")]
    command = f"`python -m minippo.figures --envs {env_id} --seeds {' '.join(map(str, seeds))}`"
    note = f" ({failed} runs failed)" if failed else ""
    lines.append(f"| [{env_id}.png]({env_id}.png), [table]({env_id}.md) | {command} | {_git_commit()} | "
                 f"{time.strftime('%Y-%m-%d')} | {seconds / 60:.1f} min on {os.cpu_count()} cores{note} |\n")
    readme.write_text("".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minippo.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, help="runs at a time (default: number of CPUs)")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    try:
        for path in make_figures(args.envs, args.seeds, args.jobs, args.out):
            print(f"wrote {path}")
    except MinippoError as e:
        print(f"minippo.figures: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
