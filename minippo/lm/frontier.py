"""Which fine-tuning method buys the most gold reward per nat of KL? The frontier figure of issue 13,
made by one command::

    python -m minippo.lm.frontier     # writes figures/rlhf_frontier.png, .md (tables) and .json (points)

Every method starts from the same pretrained model π_ref and the same reward model (per seed), and is
swept over its KL knob: β for PPO, RLOO, GRPO and DPO, the number of samples n for best-of-n. For each
finished run the figure places its gold reward (the annotator the reward model only approximates) and
its reward-model score, both minus π_ref's, against d = √KL(π ‖ π_ref), the KL in nats per response of
512 samples (best-of-n: its analytic KL, log n − (n − 1)/n).

Through each method's points it fits the functional forms of Gao, Schulman and Hilton 2022 ("Scaling
Laws for Reward Model Overoptimization", eq. 1 and 2)::

    best-of-n:  R(d) = d (α − β d)            RL (and DPO):  R(d) = d (α − β log d)

by least squares (scipy's ``curve_fit``). Gao et al. fit the gold reward-model score of policies tuned on
proxy reward models of many sizes; here there is one small proxy and a rule-based gold annotator, so
the fits describe these points and nothing more. DPO is not RL; its points get the RL form, as
Rafailov et al. 2024 ("Scaling Laws for Reward Model Overoptimization in Direct Alignment Algorithms")
do for direct alignment.

Runs go to ``--runs`` (default ``runs/frontier``), one folder per config (:func:`minippo.lm.figures.
ensure_run`): a finished run is reused and a stopped one resumed, so the command can be run again after
an interruption. The pretrained and reward models of each seed are shared through ``<runs>/cache``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.optimize import curve_fit

from ..errors import MinippoError
from ..logger import write_json
from ..plot import algorithm_color
from .figures import ensure_run
from .rlhf import RLHFConfig

# Each method's KL knob and the values swept by default.
KNOBS: dict[str, tuple[str, list[float]]] = {
    "best-of-n": ("n", [1, 2, 4, 8, 16, 32, 64]),
    "ppo": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
    "rloo": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
    "grpo": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
    "dpo": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
    "vpg": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
    "trpo": ("beta", [1.0, 0.3, 0.1, 0.03, 0.01]),
}
DEFAULT_METHODS = ["best-of-n", "ppo", "rloo", "grpo", "dpo"]
BUDGETS = (2.0, 5.0, 10.0)  # KL budgets of the table, nats per response


def best_of_n_form(d, alpha, beta):
    """Gao et al. 2022 eq. 1: gold reward gain of best-of-n at d = √KL."""
    return d * (alpha - beta * d)


def rl_form(d, alpha, beta):
    """Gao et al. 2022 eq. 2: gold reward gain of RL at d = √KL (R(0) = 0 by continuity)."""
    return d * (alpha - beta * np.log(np.maximum(d, 1e-12)))


def method_config(method: str, knob_value: float, seed: int, common: dict) -> RLHFConfig:
    """The :class:`RLHFConfig` of one point: ``method`` at its knob value (β, or n for best-of-n)."""
    if method == "best-of-n":
        return RLHFConfig(algo=method, seed=seed, hyperparameters={"n": int(knob_value)}, **common)
    return RLHFConfig(algo=method, beta=knob_value, seed=seed, **common)


def collect_points(methods: list[str], seeds: list[int], runs_dir: Path, common: dict) -> list[dict]:
    """Run (or reuse) every (method, knob value, seed) and return one row per run: method, knob, seed,
    kl (nats per response), gold and rm (gains over π_ref of the same seed)."""
    points = []
    for method in methods:
        knob, values = KNOBS[method]
        for value in values:
            for seed in seeds:
                _, summary = ensure_run(runs_dir, method_config(method, value, seed, common),
                                        runs_dir / "cache")
                before, after = summary["before"], summary["after"]
                points.append({"method": method, "knob": knob, "value": value, "seed": seed,
                               "kl": max(after["kl_ref"], 0.0),
                               "gold": after["gold_reward"] - before["gold_reward"],
                               "rm": after["rm_score"] - before["rm_score"],
                               "gold_before": before["gold_reward"]})
    return points


def fit(method: str, points: list[dict], key: str = "gold") -> tuple[float, float] | None:
    """(α, β) of Gao et al.'s form for ``method`` fitted to its points' ``key`` gain against √KL;
    None if there are fewer than 3 points with KL > 0 or the fit does not converge."""
    pts = [p for p in points if p["method"] == method and p["kl"] > 1e-6]
    if len(pts) < 3:
        return None
    d = np.sqrt([p["kl"] for p in pts])
    y = np.array([p[key] for p in pts])
    form = best_of_n_form if method == "best-of-n" else rl_form
    try:
        (alpha, beta), _ = curve_fit(form, d, y, p0=(1.0, 0.1), maxfev=10_000)
    except RuntimeError:
        return None
    return float(alpha), float(beta)


def knob_means(method: str, points: list[dict]) -> list[dict]:
    """Per knob value: the mean over seeds of KL, gold and rm gains, and the std of the gold gain."""
    rows = []
    for value in sorted({p["value"] for p in points if p["method"] == method}):
        pts = [p for p in points if p["method"] == method and p["value"] == value]
        gold = np.array([p["gold"] for p in pts])
        spread = float(gold.std(ddof=1)) if len(gold) > 1 else 0.0
        rows.append({"value": value, "kl": float(np.mean([p["kl"] for p in pts])), "gold": float(gold.mean()),
                     "gold_std": spread, "rm": float(np.mean([p["rm"] for p in pts])), "seeds": len(pts)})
    return rows


def best_within(method: str, points: list[dict], budget: float) -> dict | None:
    """The knob value whose mean KL is within ``budget`` nats and whose mean gold gain is the highest."""
    rows = [r for r in knob_means(method, points) if r["kl"] <= budget]
    return max(rows, key=lambda r: r["gold"]) if rows else None


def frontier_figure(points: list[dict], methods: list[str], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    for method in methods:
        color = algorithm_color(method)
        pts = [p for p in points if p["method"] == method]
        d = np.sqrt([p["kl"] for p in pts])
        for ax, key in zip(axes, ("gold", "rm")):
            ax.scatter(d, [p[key] for p in pts], s=12, color=color, alpha=0.35, lw=0)
            means = knob_means(method, points)
            ax.plot(np.sqrt([r["kl"] for r in means]), [r[key] for r in means], "o", ms=5, color=color,
                    label=method if key == "gold" else None)
            params = fit(method, points, key)
            if params is not None:
                grid = np.linspace(1e-3, max(d.max(), 1e-3) * 1.05, 200)
                form = best_of_n_form if method == "best-of-n" else rl_form
                ax.plot(grid, form(grid, *params), color=color, lw=1.5,
                        ls="--" if method == "best-of-n" else "-")
    titles = ("gold reward gain over π_ref (the annotator)", "reward-model score gain over π_ref (the proxy)")
    for ax, title in zip(axes, titles):
        ax.set_xlabel("√KL(π ‖ π_ref)  (√nats per response)")
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="large dots: mean over seeds", title_fontsize=8)
    fig.suptitle("Gold reward per nat of KL: each method swept over its KL knob (β; n for best-of-n); "
                 "lines: Gao et al. 2022's fitted forms", fontsize=10.5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def frontier_table(points: list[dict], methods: list[str], seeds: list[int], command: str) -> str:
    gold_ref = np.mean([p["gold_before"] for p in points])
    lines = ["# The gold-vs-KL frontier", "", f"Made by `{command}` ({time.strftime('%Y-%m-%d')}); "
             f"seeds {' '.join(map(str, seeds))}. Gains are over π_ref of the same seed (gold reward of "
             f"π_ref: {gold_ref:.3f}, mean over seeds).", "",
             "## Best gold-reward gain within a KL budget", "",
             "Among each method's knob values whose mean KL (over seeds) is within the budget: the one "
             "with the highest mean gold gain (± std over seeds), and its knob value.", "",
             "| method | " + " | ".join(f"KL ≤ {b:g} nats" for b in BUDGETS) + " |",
             "|---|" + "---|" * len(BUDGETS)]
    for method in methods:
        knob = KNOBS[method][0]
        cells = []
        for budget in BUDGETS:
            best = best_within(method, points, budget)
            cells.append("—" if best is None else
                         f"{best['gold']:+.2f} ± {best['gold_std']:.2f} ({knob} = {best['value']:g}, "
                         f"KL {best['kl']:.1f})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "## What it shows", ""] + findings(points, methods) + ["", "## Where this toy differs from "
              "Gao et al. 2022", "", *CAVEATS]
    lines += ["", "## Every knob value (means over seeds)", "",
              "| method | knob | KL (nats) | gold gain | RM-score gain | fitted gold α, β |",
              "|---|---|---|---|---|---|"]
    for method in methods:
        params = fit(method, points)
        fitted = "—" if params is None else f"{params[0]:.3f}, {params[1]:.3f}"
        for r in knob_means(method, points):
            lines.append(f"| {method} | {KNOBS[method][0]} = {r['value']:g} | {r['kl']:.2f} | "
                         f"{r['gold']:+.3f} ± {r['gold_std']:.3f} | {r['rm']:+.3f} | {fitted} |")
    return "\n".join(lines) + "\n"


CAVEATS = [
    "- One small proxy reward model (the GPT's body with a scalar head, 4000 noisy pairs) instead of a "
    "family of reward models of growing size; the gold reward is a rule-based annotator, not a larger "
    "\"gold\" reward model.",
    "- Every RL run has the same budget (60 iterations) and its KL is set by β; Gao et al. follow one "
    "run's KL as it trains. DPO's KL is that of its samples after training, measured like the RL "
    "methods'.",
    "- Best-of-n's KL is the analytic log n − (n − 1)/n, an upper bound on the true KL (Beirami et al. "
    "2024): its points may lie further left than drawn, which only strengthens its lead.",
    "- GRPO's β weighs a per-token k3 estimate in the loss, the others' β the per-response KL in the "
    "reward: equal β values are not equal constraints, so compare methods by their KL, not their β.",
    "- Three seeds: the ± columns are sample standard deviations over seeds; differences of less than "
    "about two of them are not established.",
]


def findings(points: list[dict], methods: list[str]) -> list[str]:
    """Plain sentences computed from the points: the ranking within each KL budget, and each method whose
    gold gain falls past its best knob value, with what its reward-model gain does meanwhile (still
    rising: over-optimisation of the proxy)."""
    out = []
    for budget in BUDGETS:
        ranked = sorted(((best_within(m, points, budget), m) for m in methods
                         if best_within(m, points, budget) is not None), key=lambda t: -t[0]["gold"])
        out.append(f"- Within {budget:g} nats, the highest gold gains: " + ", ".join(
            f"{m} {r['gold']:+.2f}" for r, m in ranked) + ".")
    for method in methods:
        rows = sorted(knob_means(method, points), key=lambda r: r["kl"])
        best = max(rows, key=lambda r: r["gold"])
        last = rows[-1]
        if last is not best and last["gold"] < best["gold"] - 0.1:
            verdict = ("over-optimisation of the proxy" if last["rm"] >= best["rm"] else
                       "it falls too, so this is drift away from what either reward likes rather than "
                       "over-optimisation of the proxy")
            out.append(f"- {method}: past its best gold gain ({best['gold']:+.2f} at KL {best['kl']:.1f}), "
                       f"more KL lowers it to {last['gold']:+.2f} at KL {last['kl']:.1f}, while the reward-"
                       f"model gain goes from {best['rm']:+.2f} to {last['rm']:+.2f}: {verdict}.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make the gold-vs-KL frontier figure and table (see the "
                                     "module docstring of minippo.lm.frontier).")
    parser.add_argument("--methods", nargs="+", choices=list(KNOBS), default=DEFAULT_METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=60, help="RL iterations per run (default: 60)")
    parser.add_argument("--runs", default="runs/frontier", help="folder for the runs")
    parser.add_argument("--out", default="figures", help="folder for rlhf_frontier.png and .md")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    plt.switch_backend("Agg")  # files only; set here, not at import, so a notebook's backend is left alone
    torch.set_num_threads(1)
    out, runs_dir = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(iterations=args.iterations, device=args.device)
    try:
        points = collect_points(args.methods, args.seeds, runs_dir, common)
    except MinippoError as e:
        print(f"minippo.lm.frontier: error: {e}", file=sys.stderr)
        return 2
    frontier_figure(points, args.methods, out / "rlhf_frontier.png")
    command = "python -m minippo.lm.frontier" + ("" if argv is None else " " + " ".join(argv))
    (out / "rlhf_frontier.md").write_text(frontier_table(points, args.methods, args.seeds, command))
    write_json(out / "rlhf_frontier.json", {"command": command, "points": points})
    print(f"wrote {out / 'rlhf_frontier.png'}, .md (the tables) and .json (every point)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
