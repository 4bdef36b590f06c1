"""Learning curves from run folders: read them back, put every run on one step grid, and draw the mean
over seeds with a shaded band — for ``minippo plot``, ``minippo compare`` and the tutorials::

    runs = load_runs(["runs/compare-CartPole-v1"])   # every folder below with config.json + progress.csv
    fig = plot_runs(runs)                             # one line per algorithm, one panel per env
    fig.savefig("returns.png")

Steps are always *env steps*, summed over the N parallel envs (the ``global_step`` column).

How the curves are aggregated
-----------------------------
A run's curve is ``(global_step, rolling_return_mean)``: after each iteration, the mean return of the
last 10 finished episodes. Iterations before the first finished episode have an empty cell and are
skipped. Runs log at different steps (each algorithm has its own batch size), so before averaging,
:func:`aggregate` interpolates every run linearly (``np.interp``) onto one grid of evenly spaced steps
over the range *all* runs cover: from the largest first step to the smallest last step. A run that
stopped early therefore shortens the curve of its whole group rather than biasing its end.

At each grid step, with ``y_1 … y_n`` the n runs' interpolated returns, the line is their mean ȳ and
the band is one of

- ``"range"``: [min y_i, max y_i], the spread of the seeds. Labelled "min–max range over n seeds".
- ``"t95"``: the 95% Student-t confidence interval of the mean, ȳ ± t_{0.975, n−1} · s / √n, with s
  the sample standard deviation (ddof=1). Exact 95% coverage when the returns at that step are
  normally distributed over seeds; less when they are strongly skewed or bimodal. Labelled
  "95% t-interval of the mean (n seeds)".
- ``"auto"`` (default): ``"range"`` for n ≤ 4 runs, ``"t95"`` for n ≥ 5, decided per curve.
- ``"std"``: ȳ ± s. Labelled "± 1 std over n seeds"; a spread, not an interval for the mean.

Why ``"auto"`` switches at 5: with the usual 2–4 seeds no interval for the mean is both true and
useful. The percentile bootstrap (this module's former default, 1000 resamples) is exactly [min, max]
at n = 2 and 3, and covers the true mean only 50% (n = 2) and about 75% (n = 3) of the time, so its
"95% CI" label was false. The t-interval keeps its 95% only as far as the returns are normal, which
2–4 seeds cannot show and which often fails (some seeds solve the task, others do not), and it is very
wide there (t_{0.975, n−1} = 12.7, 4.30, 3.18 for n = 2, 3, 4). So for n ≤ 4 the band is the plain
range, which claims nothing beyond what the seeds did (for a symmetric distribution it covers the true
mean with probability 1 − 2 · 0.5^n: 50%, 75%, 87.5%); from n = 5 on it is the t-interval.

With one run there is no band (``low = high = mean``): nothing is shaded and the legend names no band.
The legend says, for every curve, which band is drawn and over how many seeds (:func:`band_label`).

Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so saving them uses matplotlib's
Agg (PNG) and SVG backends and never opens a window; in Jupyter the returned figure displays inline.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
from matplotlib import rc_context, rcParams
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter
from scipy import stats

from .errors import MinippoError
from .logger import read_run_config

# The bands aggregate() can draw, and what each is; see the module doc.
BANDS = {"auto": "min–max range for ≤ 4 seeds, 95% t-interval of the mean for ≥ 5",
         "range": "min–max range over the seeds",
         "t95": "95% Student-t confidence interval of the mean",
         "std": "± 1 sample std over the seeds"}
# One fixed colour per algorithm in every figure of the project (plots, the RLHF figures, the
# tutorials), so that a reader who has learnt "PPO is green" never has to read a legend twice.
ALGORITHM_COLORS = {"vpg": "#1f77b4", "trpo": "#ff7f0e", "ppo": "#2ca02c", "rloo": "#d62728",
                    "grpo": "#9467bd", "dpo": "#8c564b", "best-of-n": "#17becf"}


def algorithm_color(algo: str) -> str:
    """The colour of ``algo`` (case-insensitive) in every figure; grey for an algorithm not listed in
    :data:`ALGORITHM_COLORS`."""
    return ALGORITHM_COLORS.get(algo.lower(), "0.4")


AUTO_T95_MIN_RUNS = 5  # "auto" draws "t95" from this many runs on, "range" below it


def resolve_band(band: str, n: int) -> str | None:
    """The band drawn for ``n`` runs when ``band`` is asked for: ``"auto"`` becomes ``"range"`` (n ≤ 4) or
    ``"t95"`` (n ≥ 5); None for n = 1, where there is no band.

    Raises:
        MinippoError: an unknown ``band``.
    """
    if band not in BANDS:
        hint = (" (the percentile bootstrap band was removed: at 2 or 3 seeds it is [min, max] and covers "
                "the mean only 50–75% of the time; use 'range' or 't95')" if band == "ci95" else "")
        raise MinippoError(f"Unknown band {band!r}; choose one of {sorted(BANDS)}{hint}.")
    if n <= 1:
        return None
    if band == "auto":
        return "t95" if n >= AUTO_T95_MIN_RUNS else "range"
    return band


def band_label(band: str, n: int) -> str | None:
    """What the band of a curve over ``n`` runs is, for a legend: e.g. "min–max range over 3 seeds",
    "95% t-interval of the mean (5 seeds)", "± 1 std over 3 seeds"; None for one run (no band).

    Raises:
        MinippoError: an unknown ``band``.
    """
    drawn = resolve_band(band, n)
    return {None: None, "range": f"min–max range over {n} seeds",
            "t95": f"95% t-interval of the mean ({n} seeds)", "std": f"± 1 std over {n} seeds"}[drawn]


@dataclass
class Run:
    """One run folder, read back.

    ===============  =========  ==================================================================
    field            shape      meaning
    ===============  =========  ==================================================================
    path             —          the run folder
    env_id, algo     —          from config.json (``train.env_id``, ``train.algo``)
    seed             —          from config.json (``train.seed``)
    total_steps      —          the env-step budget asked for (``train.total_steps``)
    steps            [K] int    env steps of the K iterations whose ``rolling_return_mean`` is known
    returns          [K] float  ``rolling_return_mean`` there (mean return of the last 10 episodes)
    final_return     —          ``rolling_return_mean`` of the last row (NaN if no episode finished)
    global_step      —          env steps done, from the last row
    time_s           —          wall-clock seconds at the last row
    steps_per_s      —          env steps per second at the last row
    ===============  =========  ==================================================================
    """

    path: Path
    env_id: str
    algo: str
    seed: int
    total_steps: int
    steps: np.ndarray = field(repr=False)
    returns: np.ndarray = field(repr=False)
    final_return: float = math.nan
    global_step: int = 0
    time_s: float = math.nan
    steps_per_s: float = math.nan


def _number(cell: str | None) -> float:
    """A progress.csv cell as a float; the empty cell (logged NaN) is NaN. Raises ValueError otherwise."""
    return float(cell) if cell not in (None, "") else math.nan


def load_run(path: str | Path) -> Run:
    """Read one run folder (``config.json`` + ``progress.csv``, as written by :func:`minippo.train`).

    Raises:
        MinippoError: a file is missing, unreadable or corrupt (not UTF-8, not JSON or CSV), config.json
            is not a Gymnasium run's (:func:`minippo.logger.read_run_config`), or progress.csv has no
            complete rows, lacks the needed columns or holds a cell that is not a number. The message names
            the file and what is wrong.
    """
    path = Path(path)
    train = read_run_config(path / "config.json")["train"]
    csv_path = path / "progress.csv"
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise MinippoError(f"{path} has no progress.csv; did the run start?") from None
    except UnicodeDecodeError:
        raise MinippoError(f"{csv_path} is corrupt: it is not UTF-8 text.") from None
    except (OSError, csv.Error) as e:
        raise MinippoError(f"Cannot read {csv_path}: {getattr(e, 'strerror', None) or e}.") from None
    needed = ("global_step", "rolling_return_mean", "time_s", "steps_per_s")
    if not rows or any(column not in rows[0] for column in needed):
        raise MinippoError(f"{csv_path} has no rows or lacks the columns {list(needed)}.")
    # A row cut short by a crash has None cells; keep only complete rows.
    rows = [r for r in rows if all(r.get(column) is not None for column in needed)]
    if not rows:
        raise MinippoError(f"{csv_path} has no complete row.")
    table = {column: [] for column in needed}  # column -> [K] floats
    for i, row in enumerate(rows, start=1):
        for column in needed:
            try:
                table[column].append(_number(row[column]))
            except ValueError:
                raise MinippoError(f"{csv_path} is corrupt: row {i} has {column}={row[column]!r}, not a "
                                   "number.") from None
    step_column, return_column = np.array(table["global_step"]), np.array(table["rolling_return_mean"])
    if not np.isfinite(step_column).all():
        raise MinippoError(f"{csv_path} is corrupt: its global_step column has empty or non-finite cells.")
    known = ~np.isnan(return_column)
    return Run(path=path, env_id=train["env_id"], algo=train["algo"], seed=train["seed"],
               total_steps=train["total_steps"], steps=step_column[known].astype(np.int64),
               returns=return_column[known], final_return=return_column[-1],
               global_step=int(step_column[-1]), time_s=table["time_s"][-1],
               steps_per_s=table["steps_per_s"][-1])


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders among ``paths``: each path that holds ``config.json`` and ``progress.csv`` is one;
    any other folder is searched recursively for such folders. Sorted, without duplicates.

    Raises:
        MinippoError: a path does not exist, or no run folder was found at all.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise MinippoError(f"{p} does not exist.")
        if (p / "config.json").is_file() and (p / "progress.csv").is_file():
            found.append(p)
        else:
            found += [csv_path.parent for csv_path in p.rglob("progress.csv")
                      if (csv_path.parent / "config.json").is_file()]
    if not found:
        raise MinippoError(f"No run folders (config.json + progress.csv) in {', '.join(map(str, paths))}.")
    return sorted(set(found))


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """:func:`load_run` on every run folder :func:`find_run_dirs` finds in ``paths``.

    Raises:
        MinippoError: as :func:`find_run_dirs` and :func:`load_run`.
    """
    return [load_run(p) for p in find_run_dirs(list(paths))]


def aggregate(runs: list[Run], grid: int | np.ndarray = 200, band: str = "auto"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve of ``runs`` and its band, on a common grid of env steps (see the module doc).

    Args:
        runs: n ≥ 1 runs, each with at least one known return.
        grid: G, the number of evenly spaced steps from the largest first step to the smallest last step
            of the runs; or the steps themselves, ``[G]``, which must lie in that range.
        band: ``"auto"`` (range for n ≤ 4, t95 for n ≥ 5), ``"range"`` (min–max over runs), ``"t95"``
            (95% Student-t interval of the mean) or ``"std"`` (± 1 sample std); :func:`band_label`
            names the one drawn.

    Returns:
        ``(steps, mean, low, high)``, each ``[G]`` float: env steps, the mean return over runs, and the
        lower and upper edge of the band (both equal to ``mean`` for one run: no band).

    Raises:
        MinippoError: no runs, a run with no finished episode, runs whose step ranges do not overlap, a
            grid outside the overlap, or an unknown ``band``.
    """
    drawn = resolve_band(band, len(runs))  # checks band before anything else
    if not runs:
        raise MinippoError("No runs to aggregate.")
    for run in runs:
        if len(run.steps) == 0:
            raise MinippoError(f"{run.path}: no episode finished, so there is no return curve.")
    start = max(run.steps[0] for run in runs)
    stop = min(run.steps[-1] for run in runs)
    if start > stop:
        raise MinippoError(f"The runs share no range of steps (the latest first step, {start}, comes after "
                           f"the earliest last step, {stop}); plot them separately.")
    steps = np.linspace(start, stop, grid) if np.isscalar(grid) else np.asarray(grid, dtype=float)
    if steps.min() < start or steps.max() > stop:
        raise MinippoError(f"The grid must lie within the steps all runs cover, [{start}, {stop}].")
    values = np.stack([np.interp(steps, run.steps, run.returns) for run in runs])  # [n, G]
    n, mean = len(runs), values.mean(axis=0)
    if drawn is None:  # one run
        return steps, mean, mean.copy(), mean.copy()
    if drawn == "range":
        return steps, mean, values.min(axis=0), values.max(axis=0)
    half_width = values.std(axis=0, ddof=1)  # [G], the sample std s
    if drawn == "t95":
        half_width = half_width * stats.t.ppf(0.975, n - 1) / math.sqrt(n)
    return steps, mean, mean - half_width, mean + half_width


def reward_threshold(env_id: str) -> float | None:
    """Gymnasium's ``reward_threshold`` for ``env_id`` (the return at which the task counts as solved),
    or None where the env has none or is not registered."""
    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def plot_runs(runs: list[Run], ax=None, band: str = "auto", grid: int = 200, title: str | None = None,
              font_scale: float = 1.0) -> Figure:
    """Draw episodic return against env steps: one line per algorithm (the mean over its runs, i.e.
    seeds, with a shaded band, see :func:`aggregate`), one panel per env, and the env's reward threshold
    as a dashed line where Gymnasium defines one.

    The legend says what each band is and over how many seeds: in its title when every curve of the panel
    has the same band (e.g. "shaded: min–max range over 3 seeds"), otherwise in each curve's label. A curve
    of one seed has no band, and its label says so.

    Args:
        runs: from :func:`load_runs`; grouped by ``(env_id, algo)``. A run in which no episode finished
            has no curve and is left out (and not counted in the legend's number of seeds).
        ax: a matplotlib Axes to draw into (then all runs must be on one env); None makes a new figure.
        band: ``"auto"``, ``"range"``, ``"t95"`` or ``"std"`` (:func:`aggregate`). grid: grid points per
            curve. title: the panel title (default: "<env id>: episodic return during training"); with
            several envs, the figure title. font_scale: multiplies every font size (e.g. 1.6 for slides);
            the format (PNG, SVG, PDF, ...) is chosen when saving, by the file's suffix.

    Returns:
        The figure (``ax.figure`` when ``ax`` is given). Save it with ``fig.savefig("returns.png")``.

    Raises:
        MinippoError: no runs, runs of several envs with one ``ax``, or as :func:`aggregate`.
    """
    if font_scale <= 0:
        raise MinippoError(f"font_scale={font_scale} must be > 0, e.g. 1.6 for slides.")
    with rc_context({"font.size": rcParams["font.size"] * font_scale}):  # fonts are fixed when drawn
        return _draw_runs(runs, ax, band, grid, title)


def _draw_runs(runs: list[Run], ax, band: str, grid: int, title: str | None) -> Figure:
    if not runs:
        raise MinippoError("No runs to plot.")
    resolve_band(band, 2)  # an unknown band fails here, even if every curve has one seed
    env_ids = sorted({run.env_id for run in runs})
    algos = sorted({run.algo for run in runs})
    if ax is not None and len(env_ids) > 1:
        raise MinippoError(f"The runs are on {len(env_ids)} envs ({', '.join(env_ids)}); pass ax=None to get "
                           "one panel per env.")
    if ax is None:
        fig = Figure(figsize=(7 * len(env_ids), 4.5), layout="constrained")
        axes = fig.subplots(1, len(env_ids), squeeze=False)[0]
        if title and len(env_ids) > 1:
            fig.suptitle(title)
    else:
        fig, axes = ax.figure, [ax]
    for ax_, env_id in zip(axes, env_ids, strict=True):
        groups = {algo: [run for run in runs if run.env_id == env_id and run.algo == algo and len(run.steps)]
                  for algo in algos}
        groups = {algo: group for algo, group in groups.items() if group}
        labels = {algo: band_label(band, len(group)) for algo, group in groups.items()}
        shared = len(set(labels.values())) == 1  # every curve of the panel has the same band (or none)
        for algo, group in groups.items():
            steps, mean, low, high = aggregate(group, grid, band)
            color = algorithm_color(algo)  # the same colour for an algorithm in every figure
            if labels[algo] is None:  # one seed: nothing to shade
                label = f"{algo} (1 seed)" if shared else f"{algo} (1 seed, no band)"
            else:
                ax_.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
                label = f"{algo} ({len(group)} seeds)" if shared else f"{algo} (shaded: {labels[algo]})"
            ax_.plot(steps, mean, color=color, label=label)
        threshold = reward_threshold(env_id)
        if threshold is not None:
            ax_.axhline(threshold, color="0.3", linestyle="--", linewidth=1,
                        label=f"reward threshold ({threshold:g})")
        ax_.set_title(title if title and len(env_ids) == 1 else f"{env_id}: episodic return during training")
        ax_.set_xlabel("env steps")
        ax_.set_ylabel("episodic return (mean of last 10 episodes)")
        ax_.xaxis.set_major_formatter(EngFormatter(sep=""))  # 20k, 1.5M
        ax_.grid(alpha=0.3)
        if not shared:
            legend_title = "line: mean over seeds"
        elif labels[next(iter(groups))] is None:
            legend_title = "line: one seed per curve, no band"
        else:
            legend_title = f"line: mean over seeds\nshaded: {labels[next(iter(groups))]}"
        ax_.legend(title=legend_title, loc="best", fontsize="small", title_fontsize="small")
    return fig


def cmd_plot(args) -> int:
    """``minippo plot RUN_DIR... --out FILE [--stats]``: the figure of :func:`plot_runs`; the format follows
    the suffix of FILE (png, svg, pdf, ...). With ``--stats``, also Agarwal et al. (2021)'s statistics of
    each env's runs, as ``minippo compare`` writes them (:mod:`minippo.stats`): the tables and how to read
    them on stdout, and the performance profile beside FILE as ``<FILE stem>_profile[_<env>]<suffix>``.

    Raises:
        MinippoError: as :func:`load_runs` and :func:`plot_runs`; an unknown image format; ``--stats``
            without rliable (checked before anything is written).
    """
    runs = load_runs(args.runs)
    out = Path(args.out)
    if getattr(args, "stats", False):
        from .stats import INSTALL_HINT, rliable_available

        if not rliable_available():
            raise MinippoError(f"--stats needs rliable, which is not installed: {INSTALL_HINT}")
    fig = plot_runs(runs, band=args.band, font_scale=args.font_scale)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=150)
    except ValueError as e:  # an unknown format
        raise MinippoError(f"Cannot save {out}: {e}") from None
    groups = sorted({(run.env_id, run.algo) for run in runs})
    print(f"{len(runs)} runs, {len(groups)} curves ({', '.join(f'{e} {a}' for e, a in groups)}) → {out}")
    if getattr(args, "stats", False):
        print_stats(runs, out)
    return 0


def print_stats(runs: list[Run], out: Path) -> list[Path]:
    """Print :mod:`minippo.stats` for the runs of each env (returns are on different scales per env) and
    save each env's performance profile beside ``out``. Returns the profile paths."""
    from .stats import compute_stats, format_stats, plot_performance_profile, stats_notes

    env_ids = sorted({run.env_id for run in runs})
    paths = []
    for env_id in env_ids:
        print(f"\n## {env_id}: statistics (Agarwal et al. 2021, computed with rliable)\n")
        try:
            stats = compute_stats([run for run in runs if run.env_id == env_id])
        except MinippoError as e:
            print(f"Not computed: {e}")
            continue
        print(f"{format_stats(stats)}\n\n### How to read them\n\n{stats_notes(stats)}")
        name = f"{out.stem}_profile" + ("" if len(env_ids) == 1 else f"_{env_id}") + out.suffix
        profile = plot_performance_profile(stats["scores"]["final_return"],
                                           title=f"{env_id}: performance profile of the final return")
        profile.savefig(out.with_name(name), dpi=150)
        paths.append(out.with_name(name))
        print(f"performance profile → {out.with_name(name)}")
    return paths
