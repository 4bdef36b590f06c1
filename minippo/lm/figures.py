"""The RLHF figures, made by one command::

    python -m minippo.lm.figures      # writes figures/rlhf_algorithms.png and rlhf_overoptimisation.png

1. ``rlhf_algorithms.png``: reward-model score, gold reward and KL(π‖π_ref) per iteration for VPG, TRPO
   and PPO on the same budget (same pretrained model, reward model, β, N, T and iterations).
2. ``rlhf_overoptimisation.png``: a sweep over β with PPO. Smaller β lets the policy move farther from
   π_ref; the reward-model score keeps rising with KL while the gold reward (the annotator the reward
   model only approximates) stops following it: over-optimisation of a proxy reward (Gao et al. 2022,
   "Scaling Laws for Reward Model Overoptimization").

Runs go to ``--runs`` (default ``runs/lm-figures``), one folder per config, named
``<algo>-beta<β>-<hash of the whole RLHFConfig>`` (:func:`run_folder`): changing ``--iterations``,
``--seed`` or ``--device`` makes new runs. A finished run (its ``summary.json`` exists and its
``config.json`` holds the same config) is reused, so an interrupted command resumes; a folder holding
another config is never overwritten. The pretrained and reward models are shared through
``<runs>/cache``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..errors import MinippoError
from ..plot import algorithm_color
from .rlhf import OFFLINE, RLHFConfig, resume_rlhf, run_rlhf


def run_folder(runs_dir: Path, config: RLHFConfig) -> Path:
    """``<runs_dir>/<algo>-beta<β>-<hash>``, the hash (12 hex digits of SHA-256) taken over every field of
    ``config``, so two configs that differ in anything (iterations, seed, device, ...) never share one."""
    settings = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
    return Path(runs_dir) / f"{config.algo}-beta{config.beta:g}-{digest}"


def ensure_run(runs_dir: Path, config: RLHFConfig, cache_dir: Path) -> tuple[list[dict], dict]:
    """Run ``config`` into :func:`run_folder` unless it finished there before; return (progress rows,
    summary).

    The folder is reused only if its ``config.json`` holds exactly ``config`` and its ``summary.json``
    says the run finished; a run of ``config`` that did not finish (interrupted, or no ``summary.json``)
    goes on from its checkpoint (:func:`resume_rlhf`), or starts again if it has none.

    Raises:
        MinippoError: the folder is not empty and its ``config.json`` is missing or holds another config
            (it is never overwritten), or the run stops early (Ctrl-C).
    """
    run_dir = run_folder(runs_dir, config)
    wanted = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # as config.json stores it
    saved_path = run_dir / "config.json"
    saved = json.loads(saved_path.read_text()).get("rlhf") if saved_path.exists() else None
    if saved != wanted and run_dir.exists() and any(run_dir.iterdir()):
        raise MinippoError(f"{run_dir} holds files of another run (its config.json is missing or differs "
                           "from the config asked for); move the folder away or pass another --runs.")
    summary_path = run_dir / "summary.json"
    finished = summary_path.exists() and json.loads(summary_path.read_text())["status"] == "finished"
    if saved != wanted or not finished:
        print(f"--- {run_dir.name}")
        resumable = config.algo not in OFFLINE and (run_dir / "checkpoint.pt").is_file()
        if saved == wanted and resumable:  # an RL run stopped part way: go on from there
            result = resume_rlhf(run_dir, cache_dir=cache_dir, show_progress=False)
        else:
            result = run_rlhf(config, out=run_dir, cache_dir=cache_dir, show_progress=False, overwrite=True)
        if result.run.status != "finished":
            raise MinippoError(f"the run in {run_dir} stopped early ({result.run.status}); run the command "
                               "again to go on from its checkpoint.")
    rows = []
    if (run_dir / "progress.csv").is_file():  # best-of-n trains nothing and writes none
        with open(run_dir / "progress.csv") as f:
            rows = [{k: float(v) if v else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]
    return rows, json.loads((run_dir / "summary.json").read_text())


def smooth(x: np.ndarray, window: int = 5) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def algorithms_figure(runs: dict[str, list[dict]], path: Path, beta: float) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for algo, rows in runs.items():
        it = np.array([r["iteration"] for r in rows])
        for ax, key in zip(axes, ("rm_score", "gold_reward", "kl_ref")):
            y = np.array([r[key] for r in rows])
            ax.plot(it, smooth(y), color=algorithm_color(algo), label=algo.upper())
            ax.plot(it, y, color=algorithm_color(algo), alpha=0.2, lw=0.8)
    titles = ("reward-model score (std units)", "gold reward (annotator, words)",
              "KL(π ‖ π_ref), nats per response")
    for ax, title in zip(axes, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"RLHF on generated reviews: the same update code as on Gymnasium (β = {beta}; "
                 "lines: 5-iteration mean)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overoptimisation_figure(sweep: dict[float, tuple[list[dict], dict]], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    betas = sorted(sweep, reverse=True)
    cmap = plt.get_cmap("viridis")
    for i, beta in enumerate(betas):
        rows, _ = sweep[beta]
        kl = smooth(np.array([r["kl_ref"] for r in rows]))
        for ax, key in zip(axes, ("rm_score", "gold_reward")):
            ax.plot(kl, smooth(np.array([r[key] for r in rows])), color=cmap(i / max(1, len(betas) - 1)),
                    alpha=0.8, label=f"β = {beta:g}")
    final = sorted((sweep[b][1]["after"] for b in betas), key=lambda f: f["kl_ref"])
    before = sweep[betas[0]][1]["before"]
    titles = ("reward-model score (the proxy being optimised)", "gold reward (the annotator)")
    for ax, key, title in zip(axes, ("rm_score", "gold_reward"), titles):
        ax.plot([0] + [f["kl_ref"] for f in final], [before[key]] + [f[key] for f in final], "k--o", ms=4,
                label="after RL (512 samples)")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("KL(π ‖ π_ref), nats per response (tokens up to the end of text)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Over-optimisation: PPO with smaller β moves farther from π_ref; the proxy keeps "
                 "rising, the gold reward does not", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make the RLHF figures (see the module docstring).")
    parser.add_argument("--out", default="figures", help="folder for the PNGs (default: figures)")
    parser.add_argument("--runs", default="runs/lm-figures", help="folder for the runs")
    parser.add_argument("--iterations", type=int, default=60, help="RL iterations per run (default: 60)")
    parser.add_argument("--beta", type=float, default=0.1, help="β of the algorithm comparison")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.3, 0.1, 0.03, 0.01, 0.0],
                        help="β values of the over-optimisation sweep (PPO)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only; set here, not at import, so a notebook's backend is left alone
    torch.set_num_threads(1)
    out, runs_dir = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    cache = runs_dir / "cache"
    common = dict(iterations=args.iterations, seed=args.seed, device=args.device)

    try:
        algos = {algo: ensure_run(runs_dir, RLHFConfig(algo=algo, beta=args.beta, **common), cache)[0]
                 for algo in ("vpg", "trpo", "ppo")}
        algorithms_figure(algos, out / "rlhf_algorithms.png", args.beta)
        sweep = {beta: ensure_run(runs_dir, RLHFConfig(algo="ppo", beta=beta, **common), cache)
                 for beta in args.betas}
    except MinippoError as e:
        print(f"minippo.lm.figures: error: {e}", file=sys.stderr)
        return 2
    overoptimisation_figure(sweep, out / "rlhf_overoptimisation.png")
    print(f"wrote {out / 'rlhf_algorithms.png'} and {out / 'rlhf_overoptimisation.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
