"""minippo's VPG, TRPO and PPO on MuJoCo Hopper-v5 and HalfCheetah-v5 (1M env steps, 3 seeds), beside
published results at the same budget: a figure and a table.

    pip install -e ".[mujoco]"
    python -m minippo.figures --envs Hopper-v5 HalfCheetah-v5 --seeds 0 1 2   # the 18 runs (~1 h on 2 cores)
    python benchmarks/mujoco_vs_published.py          # figures/mujoco_vs_published.{png,md} (~1 min)

It reads the runs of ``minippo.figures`` (``runs/figures/<env>/<algo>-s<seed>``), evaluates each final
checkpoint deterministically (10 episodes, as the published tables do), and sets both beside the numbers
in :data:`PUBLISHED` and the Spinning Up curves in ``benchmarks/published/spinningup_curves.csv``. The
published numbers are for the -v3 envs (mujoco-py, MuJoCo 2.x); the v5 envs run on the ``mujoco``
bindings, and Hopper-v5 no longer pays the healthy reward on the step that ends an episode (at most 1 per
episode). Read the table as "the same order of magnitude, or not", not as a head-to-head.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from minippo.plot import algorithm_color, load_runs, plot_runs
from minippo.train import evaluate

ENVS = ("Hopper-v5", "HalfCheetah-v5")
ALGOS = ("vpg", "trpo", "ppo")
HERE = Path(__file__).resolve().parent
SPINNINGUP_CSV = HERE / "published" / "spinningup_curves.csv"


@dataclass(frozen=True)
class Source:
    """A published benchmark: its short name, where it is, and what its number measures."""

    name: str
    marker: str
    cite: str
    measures: str


SOURCES = {
    "sb3-contrib": Source(
        "sb3-contrib", "s",
        "Stable-Baselines3-contrib docs, TRPO page, 'Results' (docs/modules/trpo.md; learning curves in "
        "its PR #40): https://sb3-contrib.readthedocs.io/en/master/modules/trpo.html",
        "TRPO with rl-zoo3's settings (the ones minippo's TRPO uses), -v3 envs, MuJoCo 2.1.0, 1M steps, "
        "mean ± std over 3 seeds of the final evaluation"),
    "rl-zoo3": Source(
        "rl-zoo3", "D",
        "RL Baselines3 Zoo, benchmark.md (commit 22e3ff2): "
        "https://github.com/DLR-RM/rl-baselines3-zoo/blob/master/benchmark.md",
        "One trained agent per entry (the file says it is not a quantitative benchmark), -v3 envs, 1M "
        "steps, deterministic policy over 150k evaluation steps, mean ± std over episodes; PPO with "
        "rl-zoo3's Optuna-tuned settings (ReLU 256x256 networks, 512-step batches), which minippo does "
        "not use; TRPO with the settings minippo uses"),
    "spinningup": Source(
        "Spinning Up", "o",
        "OpenAI Spinning Up, 'Benchmarks for Spinning Up Implementations' (docs/spinningup/bench.rst): "
        "https://spinningup.openai.com/en/latest/spinningup/bench.html",
        "VPG and PPO: the PyTorch plots; TRPO: the TensorFlow plot (Spinning Up has no PyTorch TRPO). "
        "-v3 envs, 10 seeds, average return of the episodes in each 4000-step batch (stochastic policy) "
        "smoothed over 11 epochs, mean ± std over seeds, read off the SVG plots at 1M steps by "
        "benchmarks/published/extract_spinningup.py"),
}

# (env, algo, source) -> (mean, std); Spinning Up's come from SPINNINGUP_CSV at 1M steps.
PUBLISHED = {
    ("Hopper-v5", "trpo", "sb3-contrib"): (3372.0, 215.0),
    ("HalfCheetah-v5", "trpo", "sb3-contrib"): (1803.0, 46.0),
    ("Hopper-v5", "trpo", "rl-zoo3"): (3618.386, 356.768),
    ("HalfCheetah-v5", "trpo", "rl-zoo3"): (1785.476, 68.672),
    ("Hopper-v5", "ppo", "rl-zoo3"): (2410.435, 10.026),
    ("HalfCheetah-v5", "ppo", "rl-zoo3"): (5819.099, 663.530),
}


def read_spinningup(path: Path = SPINNINGUP_CSV) -> dict[tuple[str, str], np.ndarray]:
    """``(env, algo) -> [K, 4]`` rows of (env step, mean, mean − std, mean + std) from the CSV."""
    curves: dict[tuple[str, str], list] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            curves.setdefault((row["env"], row["algo"]), []).append(
                [float(row["step"]), float(row["mean"]), float(row["low"]), float(row["high"])])
    return {key: np.array(rows) for key, rows in curves.items()}


def at(curve: np.ndarray, step: float) -> tuple[float, float]:
    """The curve's (mean, std) at ``step``, linearly interpolated."""
    mean = float(np.interp(step, curve[:, 0], curve[:, 1]))
    high = float(np.interp(step, curve[:, 0], curve[:, 3]))
    return mean, high - mean


def collect(runs_root: Path, episodes: int) -> dict:
    """Per (env, algo): the runs, their final training returns and their deterministic evaluations."""
    results = {}
    for env_id in ENVS:
        runs = load_runs([runs_root / env_id])
        for algo in ALGOS:
            mine = sorted((r for r in runs if r.algo == algo), key=lambda r: r.seed)
            if not mine:
                raise SystemExit(f"No {algo} runs in {runs_root / env_id}: run the command in this "
                                 "file's doc first.")
            evals = [float(np.mean(evaluate(r.path / "checkpoint.pt", episodes))) for r in mine]
            results[env_id, algo] = dict(runs=mine, final=[r.final_return for r in mine], evals=evals,
                                         steps=[r.global_step for r in mine])
    return results


def fmt(mean: float, std: float | None = None, approx: bool = False) -> str:
    text = f"{'≈' if approx else ''}{mean:,.0f}"
    return text if std is None else f"{text} ± {std:,.0f}"


def write_table(results: dict, spinningup: dict, out: Path, command: str) -> Path:
    lines = [
        "# VPG, TRPO and PPO on MuJoCo, 1M env steps: minippo beside published results", "",
        f"Made by `{command}` from the runs of `python -m minippo.figures --envs Hopper-v5 HalfCheetah-v5 "
        "--seeds 0 1 2`. Figure: `figures/mujoco_vs_published.png`.", "",
        "minippo: 3 seeds (0, 1, 2) per cell, mean ± std over seeds. *training* = mean return of the last "
        "10 training episodes (stochastic policy), the curve's last point; *deterministic* = 10 episodes "
        "of the final policy's mean action (`minippo eval`), as the SB3 tables measure.", "",
        "| env | algorithm | minippo, training | minippo, deterministic | Spinning Up (≈, training) "
        "| sb3-contrib | rl-zoo3 (1 agent) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (env_id, algo), r in results.items():
        spin = spinningup.get((env_id, algo))
        cells = [fmt(np.mean(r["final"]), np.std(r["final"], ddof=1)),
                 fmt(np.mean(r["evals"]), np.std(r["evals"], ddof=1)),
                 fmt(*at(spin, 1e6), approx=True) if spin is not None else "—"]
        for source in ("sb3-contrib", "rl-zoo3"):
            value = PUBLISHED.get((env_id, algo, source))
            cells.append(fmt(*value) if value else "—")
        lines.append(f"| {env_id} | {algo.upper()} | " + " | ".join(cells) + " |")
    lines += ["", "Per seed (training / deterministic):", ""]
    for (env_id, algo), r in results.items():
        per_seed = ", ".join(f"s{run.seed}: {f:,.0f} / {e:,.0f}"
                             for run, f, e in zip(r["runs"], r["final"], r["evals"], strict=True))
        lines.append(f"- {env_id} {algo.upper()}: {per_seed}")
    lines += ["", "## Settings", "",
              "minippo's per-env `DEFAULTS` (`minippo/ppo.py`, `trpo.py`, `vpg.py`), taken from the "
              "published settings and not tuned further:", "",
              "- **PPO**: the PPO paper's MuJoCo settings (Schulman et al. 2017, Table 3), which are also "
              "SB3's defaults and rl-zoo3's `mujoco-defaults`: 1 env × 2048 steps per batch, Adam 3e-4 "
              "(constant), 10 epochs, minibatch 64, γ = 0.99, λ = 0.95, ε = 0.2, observations and rewards "
              "normalised, tanh 64×64 networks. rl-zoo3's tuned entries for these envs need ReLU 256×256 "
              "networks without orthogonal initialisation, which minippo's MLP does not offer.",
              "- **TRPO**: rl-zoo3's sb3-contrib settings (`hyperparams/trpo.yml`): 2 envs × 1024 steps, "
              "γ = 0.99, λ = 0.95, 25 CG iterations, damping 0.1, KL_max 0.01 (0.04 on HalfCheetah), the "
              "critic fitted with Adam 1e-3 for 320 minibatch steps of 128 per batch (sb3-contrib: 20 "
              "epochs of minibatches of 128), observations and rewards normalised, tanh 64×64.",
              "- **VPG**: Spinning Up's benchmark settings: 4000 steps per batch (8 envs × 500), one policy "
              "step with Adam 3e-4, the critic fitted with Adam 1e-3 for 80 steps, γ = 0.99, λ = 0.97, no "
              "normalisation; minippo's networks are 64×64 (Spinning Up's benchmark used 64×32).", "",
              "## Sources", ""]
    for source in SOURCES.values():
        lines.append(f"- **{source.name}**: {source.cite}. {source.measures}.")
    lines += ["", "## How to read it", "",
              "- The published numbers are for the -v3 envs (mujoco-py, MuJoCo 2.x); minippo runs -v5 on "
              "the `mujoco` bindings. Hopper-v5 pays its healthy reward only while healthy (v3 also paid "
              "it on the step that ends the episode: at most 1 per episode). Nothing else in the reward "
              "changed, but the simulators differ, so expect the same order of magnitude, not equal "
              "numbers.",
              "- Three seeds give a rough mean: the std across seeds is itself very uncertain (see "
              "tutorial 06). rl-zoo3's entries are one agent each.",
              "- Spinning Up's numbers are training returns of the stochastic policy, like minippo's "
              "*training* column; the SB3 tables evaluate the deterministic policy, like the "
              "*deterministic* column.", ""]
    path = out / "mujoco_vs_published.md"
    path.write_text("\n".join(lines))
    return path


def draw(results: dict, spinningup: dict, out: Path) -> Path:
    fig = Figure(figsize=(14, 7), layout="constrained")
    axes = fig.subplots(1, len(ENVS))
    for ax, env_id in zip(axes, ENVS, strict=True):
        runs = [run for algo in ALGOS for run in results[env_id, algo]["runs"]]
        plot_runs(runs, ax=ax, title=f"{env_id}: minippo (solid) and published results")
        for algo in ALGOS:
            color = algorithm_color(algo)
            curve = spinningup.get((env_id, algo))
            if curve is not None:
                shown = curve[curve[:, 0] <= 1.05e6]
                ax.plot(shown[:, 0], shown[:, 1], color=color, linestyle=":", linewidth=1.5,
                        label=f"{algo} Spinning Up (mean of 10 seeds)")
            evals = results[env_id, algo]["evals"]
            ax.errorbar([1.015e6], [np.mean(evals)], yerr=[np.std(evals, ddof=1)], color=color, marker="*",
                        markersize=9, capsize=3, linestyle="none",
                        label=f"{algo} minippo at 1M (deterministic, 3 seeds)")
            for offset, key in ((1.04e6, "sb3-contrib"), (1.065e6, "rl-zoo3")):
                value = PUBLISHED.get((env_id, algo, key))
                if value:
                    ax.errorbar([offset], [value[0]], yerr=[value[1]], color=color,
                                marker=SOURCES[key].marker, markersize=7, capsize=3, linestyle="none",
                                label=f"{algo} {SOURCES[key].name} at 1M (deterministic)")
        ax.set_xlim(0, 1.09e6)
        ax.get_legend().remove()
    # One legend for both panels (the same entries; only the reward threshold's value differs).
    handles, labels = axes[0].get_legend_handles_labels()
    labels = ["Gymnasium's reward threshold" if label.startswith("reward threshold") else label
              for label in labels]
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize="small",
               title="minippo: line = mean over 3 seeds, shaded = min–max range; published: ± std")
    path = out / "mujoco_vs_published.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/figures", help="minippo.figures' run folders")
    parser.add_argument("--episodes", type=int, default=10, help="deterministic evaluation episodes per run")
    parser.add_argument("--out", default="figures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spinningup = read_spinningup()
    results = collect(Path(args.runs), args.episodes)
    command = "python benchmarks/mujoco_vs_published.py" + ("" if argv is None else " " + " ".join(argv))
    print(write_table(results, spinningup, out, command))
    print(draw(results, spinningup, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
