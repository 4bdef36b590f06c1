"""The statistics Agarwal et al. (2021) recommend for comparing RL algorithms over a few runs, computed
with their ``rliable`` library — for ``minippo compare`` and the tutorials::

    runs = load_runs(["runs/compare-CartPole-v1"])
    scores = final_return_scores(runs)                 # {"ppo": [3, 1], "vpg": [3, 1], ...}
    iqm = iqm_intervals(scores)                        # {"ppo": (point, low, high), ...}
    poi = improvement_probabilities(scores)            # {("ppo", "vpg"): (P(ppo > vpg), low, high), ...}
    fig = plot_performance_profile(scores)

Reference: R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville, M. G. Bellemare, "Deep Reinforcement
Learning at the Edge of the Statistical Precipice", NeurIPS 2021 (arXiv:2108.13264): the IQM and the
stratified bootstrap (section 4, "Recommendations"), performance profiles (section 4, "Performance
profiles"), the probability of improvement (section 4 and its appendix A.2).

Scores
------
rliable works on a *score matrix* per algorithm, ``[R, M]`` float, R runs (seeds) by M tasks, higher
is better. In minippo one task is one env, so ``M = 1``: all runs of a comparison are on one env, and
scores of different envs are on different scales (CartPole's 500 against Pendulum's −150), which would
need normalising before they could be pooled. Two scores per run:

- **final return**: the run's last ``rolling_return_mean`` (mean return of its last 10 episodes), as in
  the summary table.
- **AUC** (area under the learning curve): the run's ``rolling_return_mean`` interpolated linearly onto
  G = 200 evenly spaced env steps over the range that *every* run being compared covers (from the
  largest first step to the smallest last step, as :func:`minippo.plot.aggregate` does), then averaged.
  That is the area under the curve divided by the width of the range, i.e. normalised by the (shortest)
  budget, so its unit is a return: the mean return during training. It rewards learning fast as well
  as ending high. The same range for all algorithms makes it fair when their budgets differ.

A run in which no episode finished has neither score; it is left out, and the caller says so.

The statistics
--------------
- **IQM** (interquartile mean): the mean of the middle 50% of the R·M scores, after dropping the lowest
  and the highest 25% (``scipy.stats.trim_mean(x, 0.25)``: ⌊0.25·R·M⌋ scores cut at each end, so with
  fewer than 4 runs nothing is cut and the IQM is the mean).
- **95% interval**: the percentile stratified bootstrap: resample the R runs with replacement within
  each task, recompute the statistic, take the 2.5% and 97.5% quantiles of ``reps`` resamples. With
  M = 1 it is the plain percentile bootstrap, which with 2–4 runs covers less than 95%
  (:mod:`minippo.plot`'s doc and tutorial 06, part 3: about 75% with 3 runs).
- **probability of improvement** P(X > Y): the chance that a random run of X scores higher than a random
  run of Y, ties counting ½ (the Mann–Whitney U statistic over R_X·R_Y), averaged over tasks. With the
  same interval, X and Y resampled independently. P(Y > X) = 1 − P(X > Y), so each pair is bootstrapped
  once and the other direction follows (its interval is [1 − high, 1 − low]).
- **performance profile**: for a threshold τ, the fraction of the R·M scores that are *above* τ
  (strictly, as rliable's ``run_score_deviation``), drawn against τ with a 95% stratified-bootstrap band.

rliable's bootstrap draws from NumPy's *global* random generator (``np.random.choice``; the
``random_state`` it accepts is not used there), so each function here seeds it with ``seed`` and puts its
previous state back afterwards: the same scores and seed give the same intervals, and the caller's
random stream is left as it was. (``random_state`` is not passed either: arch deprecates it.)

rliable (with arch and pandas) is the ``stats`` extra, not a core dependency: ``pip install
"minippo[stats]"``. It is imported when a statistic is computed, so importing this module needs nothing
more than minippo's core; :func:`rliable_available` says whether the statistics can be computed.
"""

from __future__ import annotations

import csv
import importlib.util
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .errors import MinippoError
from .plot import Run, algorithm_color

INSTALL_HINT = 'pip install "minippo[stats]"'
REPS = 1000  # bootstrap resamples: ~1 s for a 3-algorithm comparison; enough for a stable 2.5% quantile
AUC_GRID = 200  # G, env steps at which each curve is read for the AUC
METRICS = {"final_return": "final return", "auc": "AUC (mean return during training)"}


def rliable_available() -> bool:
    """Whether ``rliable`` can be imported (the ``stats`` extra is installed)."""
    return importlib.util.find_spec("rliable") is not None


def _rliable():
    """rliable's ``library`` and ``metrics`` modules.

    Raises:
        MinippoError: rliable is not installed; the message says how to install it.
    """
    try:
        from rliable import library, metrics
    except ImportError as e:
        raise MinippoError(f"The RL statistics need rliable ({e}); install them with {INSTALL_HINT}."
                           ) from None
    return library, metrics


@contextmanager
def seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator (which rliable's bootstrap draws from) and restore it on exit."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _check_scores(scores: dict[str, np.ndarray]) -> None:
    """Raises MinippoError unless every value is a finite ``[R, M]`` matrix, R ≥ 1, with one common M."""
    if not scores:
        raise MinippoError("No scores: no algorithm has a run with a score.")
    tasks = {np.shape(s)[1] if np.ndim(s) == 2 else None for s in scores.values()}
    for algo, s in scores.items():
        if np.ndim(s) != 2 or np.shape(s)[0] < 1 or not np.isfinite(s).all():
            raise MinippoError(f"Scores of {algo!r} must be a finite [runs, tasks] matrix with ≥ 1 run; "
                               f"got shape {np.shape(s)}.")
    if len(tasks) != 1:
        raise MinippoError(f"Every algorithm needs the same number of tasks (columns); got {sorted(tasks)}.")


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean of a ``[R, M]`` score matrix: the mean of its middle 50% of entries
    (rliable's ``metrics.aggregate_iqm``; Agarwal et al. 2021, section 4)."""
    _, metrics = _rliable()
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float)))


def iqm_intervals(scores: dict[str, np.ndarray], reps: int = REPS, seed: int = 0
                  ) -> dict[str, tuple[float, float, float]]:
    """The IQM of each algorithm's scores with its 95% stratified-bootstrap interval.

    Args:
        scores: algorithm -> ``[R, M]`` scores (higher is better).
        reps: bootstrap resamples. seed: seeds the bootstrap (module doc).

    Returns:
        algorithm -> ``(iqm, low, high)``, in the unit of the scores.

    Raises:
        MinippoError: rliable missing, or scores that are not finite ``[R, M]`` matrices of one M.
    """
    library, metrics = _rliable()
    _check_scores(scores)
    with seeded_numpy(seed):
        point, interval = library.get_interval_estimates(
            {algo: np.asarray(s, dtype=float) for algo, s in sorted(scores.items())},
            lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps)
    return {algo: (float(point[algo][0]), float(interval[algo][0, 0]), float(interval[algo][1, 0]))
            for algo in point}


def improvement_probabilities(scores: dict[str, np.ndarray], reps: int = REPS, seed: int = 0
                              ) -> dict[tuple[str, str], tuple[float, float, float]]:
    """P(X > Y) for every ordered pair of different algorithms, with 95% bootstrap intervals
    (rliable's ``metrics.probability_of_improvement``; Agarwal et al. 2021, section 4).

    Each unordered pair is bootstrapped once (X before Y in sorted order); the reverse pair is
    ``(1 − p, 1 − high, 1 − low)``, since P(Y > X) = 1 − P(X > Y) in every resample.

    Returns:
        ``(X, Y)`` -> ``(P(X > Y), low, high)``, probabilities in [0, 1]; empty for one algorithm.

    Raises:
        MinippoError: as :func:`iqm_intervals`.
    """
    library, metrics = _rliable()
    _check_scores(scores)
    algos = sorted(scores)
    pairs = {(x, y): (np.asarray(scores[x], dtype=float), np.asarray(scores[y], dtype=float))
             for i, x in enumerate(algos) for y in algos[i + 1:]}
    if not pairs:
        return {}
    with seeded_numpy(seed):
        point, interval = library.get_interval_estimates(
            pairs, metrics.probability_of_improvement, reps=reps)
    result = {}
    for (x, y), p in point.items():
        low, high = (float(v) for v in np.ravel(interval[(x, y)]))
        result[(x, y)] = (float(p), low, high)
        result[(y, x)] = (1 - float(p), 1 - high, 1 - low)
    return result


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """The performance profile at each threshold: the fraction of the ``[R, M]`` scores above τ.

    Args:
        scores: ``[R, M]``. taus: ``[T]`` thresholds.

    Returns:
        ``[T]`` fractions in [0, 1] (rliable's ``run_score_deviation``, vectorised over τ).
    """
    return (np.reshape(scores, (-1, 1)) > np.reshape(taus, (1, -1))).mean(axis=0)


def performance_profiles(scores: dict[str, np.ndarray], taus: np.ndarray, reps: int = REPS, seed: int = 0
                         ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each algorithm's performance profile (score distribution) with a 95% stratified-bootstrap band
    (Agarwal et al. 2021, section 4, "Performance profiles"; rliable's ``create_performance_profile``
    with ``use_score_distribution=True``).

    Returns:
        algorithm -> ``(profile, low, high)``, each ``[T]``.

    Raises:
        MinippoError: as :func:`iqm_intervals`.
    """
    library, _ = _rliable()
    _check_scores(scores)
    taus = np.asarray(taus, dtype=float)
    with seeded_numpy(seed):
        point, interval = library.get_interval_estimates(
            {algo: np.asarray(s, dtype=float) for algo, s in sorted(scores.items())},
            lambda x: score_distribution(x, taus), reps=reps)
    return {algo: (point[algo], interval[algo][0], interval[algo][1]) for algo in point}


def scorable(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """``(kept, left_out)``: the runs with at least one finished episode (so a final return and a curve),
    and those without."""
    kept = [run for run in runs if len(run.steps) and math.isfinite(run.final_return)]
    return kept, [run for run in runs if run not in kept]


def final_return_scores(runs: list[Run]) -> dict[str, np.ndarray]:
    """algorithm -> ``[R, 1]`` final returns of its runs (one env: one task), runs in the given order.

    Raises:
        MinippoError: runs of several envs, or a run without a final return (see :func:`scorable`).
    """
    _check_one_env(runs)
    return {algo: np.array([[run.final_return] for run in runs if run.algo == algo], dtype=float)
            for algo in sorted({run.algo for run in runs})}


def auc_range(runs: list[Run]) -> tuple[float, float]:
    """The env steps ``(start, stop)`` every run covers: the largest first step, the smallest last step.

    Raises:
        MinippoError: a run with no curve, or runs that share no range of steps.
    """
    for run in runs:
        if len(run.steps) == 0:
            raise MinippoError(f"{run.path}: no episode finished, so there is no return curve.")
    start, stop = max(float(run.steps[0]) for run in runs), min(float(run.steps[-1]) for run in runs)
    if start > stop:
        raise MinippoError(f"The runs share no range of steps (the latest first step, {start:g}, comes after "
                           f"the earliest last step, {stop:g}), so their AUCs cannot be compared.")
    return start, stop


def auc_scores(runs: list[Run], grid: int = AUC_GRID) -> dict[str, np.ndarray]:
    """algorithm -> ``[R, 1]`` AUCs: each run's mean return at ``grid`` evenly spaced env steps over
    :func:`auc_range` of *all* ``runs`` (module doc), in the unit of a return.

    Raises:
        MinippoError: as :func:`auc_range`, or runs of several envs.
    """
    _check_one_env(runs)
    steps = np.linspace(*auc_range(runs), grid)
    return {algo: np.array([[np.interp(steps, run.steps, run.returns).mean()] for run in runs
                            if run.algo == algo]) for algo in sorted({run.algo for run in runs})}


def _check_one_env(runs: list[Run]) -> None:
    envs = sorted({run.env_id for run in runs})
    if len(envs) > 1:
        raise MinippoError(f"The runs are on {len(envs)} envs ({', '.join(envs)}); their returns are on "
                           "different scales, so compute the statistics one env at a time.")


def compute_stats(runs: list[Run], reps: int = REPS, seed: int = 0) -> dict:
    """Every statistic of the module for the runs of one env, on both scores.

    Returns:
        A dict with the keys ``runs`` (``{algo: R}``, runs per algorithm), ``left_out`` (the runs without a
        score), ``auc_range`` (``(start, stop)``), ``reps``, ``seed``, ``scores`` (``{metric: {algo:
        [R, 1] array}}``), ``iqm`` (``{metric: iqm_intervals}``) and ``poi`` (``{metric:
        improvement_probabilities}``), with ``metric`` in ``METRICS`` ("final_return", "auc").

    Raises:
        MinippoError: rliable missing, no run with a score, runs of several envs or no common range.
    """
    kept, left_out = scorable(runs)
    if not kept:
        raise MinippoError("No run finished an episode, so there is nothing to compute statistics on.")
    scores = {"final_return": final_return_scores(kept), "auc": auc_scores(kept)}
    return {"runs": {algo: len(s) for algo, s in scores["final_return"].items()}, "left_out": left_out,
            "auc_range": auc_range(kept), "reps": reps, "seed": seed, "scores": scores,
            "iqm": {m: iqm_intervals(s, reps, seed) for m, s in scores.items()},
            "poi": {m: improvement_probabilities(s, reps, seed) for m, s in scores.items()}}


def _interval(value: tuple[float, float, float], digits: int) -> str:
    point, low, high = value
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_stats(result: dict) -> str:
    """The statistics of :func:`compute_stats` as Markdown: an IQM table, then one P(row > column) table
    per score."""
    algos = sorted(result["runs"])
    start, stop = result["auc_range"]
    lines = ["| algorithm | runs | IQM final return [95% CI] | IQM AUC [95% CI] |", "|---|---:|---:|---:|"]
    for algo in algos:
        final, auc = result["iqm"]["final_return"][algo], result["iqm"]["auc"][algo]
        lines.append(f"| {algo} | {result['runs'][algo]} | {_interval(final, 1)} | {_interval(auc, 1)} |")
    lines.append(f"\nAUC = mean return over env steps {start:,.0f}–{stop:,.0f} (the range every run covers). "
                 f"Intervals: percentile stratified bootstrap, {result['reps']} resamples, seed "
                 f"{result['seed']}.")
    if len(algos) > 1:
        for metric, name in METRICS.items():
            lines += [f"\nProbability of improvement on {name}: P(row > column) [95% CI]\n",
                      "| | " + " | ".join(algos) + " |", "|---|" + "---:|" * len(algos)]
            for x in algos:
                cells = ["—" if x == y else _interval(result["poi"][metric][(x, y)], 2) for y in algos]
                lines.append(f"| {x} | " + " | ".join(cells) + " |")
    if result["left_out"]:
        lines.append("\nLeft out (no episode finished, so no score): "
                     + ", ".join(str(run.path) for run in result["left_out"]) + ".")
    return "\n".join(lines)


def stats_notes(result: dict) -> str:
    """How to read the statistics, for ``summary.md``: a few plain sentences, with a warning when an
    algorithm has fewer than 5 runs."""
    fewest = min(result["runs"].values())
    notes = ("- IQM (interquartile mean): the mean of the middle half of the runs, dropping the best and the "
             "worst quarter, so one lucky or broken seed cannot drag it (with fewer than 4 runs nothing is "
             "dropped: it is the mean). [low, high]: a 95% bootstrap confidence interval for it. Intervals "
             "that do not overlap are a sign of a real difference; overlapping ones leave it open.\n"
             "- AUC: the mean return during training, so it rewards learning fast as well as ending high; "
             "final return only looks at the end.\n"
             "- P(row > column): the probability that a random run of the row's algorithm scores higher than "
             "a random run of the column's (ties count ½). 0.5 means no difference; an interval that "
             "contains 0.5 means the runs cannot tell the two apart. [1.00, 1.00] only says that every "
             "run of the row beat every run of the column: with few runs that is not certainty.\n"
             "- performance_profile.png: for each final return τ on the x-axis, the fraction of runs that "
             "ended above τ, with a 95% bootstrap band. A curve that lies above another everywhere "
             "dominates it: more of its runs reach every level.\n")
    if fewest < 5:
        runs = f"{fewest} run{'s' if fewest > 1 else ''}"
        notes += (f"- With {runs} per algorithm these intervals are wide and still too optimistic: below 5 "
                  "runs the bootstrap covers the true value well under 95% of the time (about 75% with 3 "
                  "runs, tutorial 06 part 3; with 1 run the interval is the run itself). Read them as the "
                  "spread of these seeds, and add seeds before claiming a difference.\n")
    return notes


def write_stats_csv(result: dict, path: Path) -> None:
    """``stats.csv``, one row per number: ``metric`` (final_return, auc), ``statistic`` (iqm,
    probability_of_improvement), ``algo``, ``versus`` (the other algorithm of P(algo > versus), empty for
    the IQM), ``estimate``, ``ci_low``, ``ci_high``, ``runs``, ``reps``, ``seed``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "statistic", "algo", "versus", "estimate", "ci_low", "ci_high", "runs",
                         "reps", "seed"])
        for metric in METRICS:
            for algo, value in result["iqm"][metric].items():
                writer.writerow([metric, "iqm", algo, "", *value, result["runs"][algo], result["reps"],
                                 result["seed"]])
            for (x, y), value in sorted(result["poi"][metric].items()):
                writer.writerow([metric, "probability_of_improvement", x, y, *value, result["runs"][x],
                                 result["reps"], result["seed"]])


def plot_performance_profile(scores: dict[str, np.ndarray], taus: np.ndarray | None = None,
                             reps: int = REPS, seed: int = 0, xlabel: str = "final return",
                             title: str | None = None) -> Figure:
    """Draw each algorithm's performance profile (:func:`performance_profiles`): the fraction of runs
    scoring above τ against τ, with its 95% bootstrap band, one colour per algorithm as in every figure.

    Args:
        scores: algorithm -> ``[R, M]`` scores. taus: ``[T]`` thresholds (default: 101 evenly spaced from
            5% of the scores' range below the lowest to 5% above the highest score of all algorithms).
            xlabel: what the scores are, with units.

    Returns:
        A figure made without pyplot; save it with ``fig.savefig("performance_profile.png")``.

    Raises:
        MinippoError: as :func:`iqm_intervals`.
    """
    _check_scores(scores)
    if taus is None:
        every = np.concatenate([np.ravel(s) for s in scores.values()])
        margin = 0.05 * (every.max() - every.min()) or 1.0  # so the profiles start at 1 and end at 0
        taus = np.linspace(every.min() - margin, every.max() + margin, 101)
    profiles = performance_profiles(scores, taus, reps, seed)
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for algo, (profile, low, high) in profiles.items():
        color = algorithm_color(algo)
        ax.fill_between(taus, low, high, color=color, alpha=0.2, linewidth=0, step="post")
        ax.step(taus, profile, where="post", color=color, label=f"{algo} ({len(scores[algo])} runs)")
    ax.set_xlabel(f"τ ({xlabel})")
    ax.set_ylabel(f"fraction of runs with {xlabel} > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "Performance profile")
    ax.grid(alpha=0.3)
    ax.legend(title="shaded: 95% bootstrap band", fontsize="small", title_fontsize="small")
    return fig
