"""``minippo compare``: train every (algorithm, seed) pair on one env (or on each of several envs), each
run in its own process (or as a Ray task), then draw the learning curves and tabulate the results — the
project's benchmark in one command::

    minippo compare                  # every algorithm × seeds 0 1 2 on CartPole-v1, default budgets
    minippo compare --algos ppo --seeds 0 1 --total-steps 20000 --out runs/quick
    minippo compare --env CartPole-v1 Acrobot-v1    # the grid: one folder, figure and table per env
    minippo compare --ray            # each run a Ray task, on a Ray started here (--ray ADDRESS: a cluster)

What lands in ``out`` (default ``runs/compare-<env>``)::

    <algo>-s<seed>/      one run folder per pair: config.json, progress.csv, checkpoint.pt, done.json
    returns.png, .svg    episodic return vs env steps: mean over seeds and a band (see minippo.plot): by
                         default the min–max range over ≤ 4 seeds, a 95% t-interval of the mean from 5
    summary.csv, .md     per algorithm: final return (mean, sample std), env steps to the reward threshold,
                         wall time, steps/s; summary.md ends with notes on what its ± and the band are
    stats.csv            Agarwal et al. (2021)'s statistics (minippo.stats, needs the ``stats`` extra): the
                         IQM of the final return and of the AUC with 95% stratified-bootstrap intervals, and
                         the probability of improvement of each algorithm over each other; summary.md gets
                         them as a section, with how to read them
    performance_profile.png  fraction of runs whose final return is above τ, against τ, with 95% bands

With several envs (:func:`compare_grid`), ``out`` (default ``runs/compare-<env1>+<env2>...``) holds one
such folder per env, ``out/<env>/``; the runs of all envs share one process pool (or one Ray).

Without rliable (``pip install "minippo[stats]"``) the comparison writes everything else, and summary.md
says in one line how to get the statistics.

*Finished* means the run folder holds ``done.json``, written by the worker once :func:`minippo.train`
returns normally; it names the env, algorithm, seed and budget. Running the same comparison again
reuses such folders (so an interrupted comparison picks up where it stopped) unless ``redo=True``; an
unfinished run with a checkpoint of the same env, algorithm and seed is resumed from it
(:func:`minippo.train.resume`); a folder with nothing to lose (no checkpoint, at most one row: a run
killed in its first iteration) is trained from scratch. Any other folder at that path (a corrupt or
foreign checkpoint.pt, config.json, progress.csv or done.json) stops the comparison before anything is
trained, with one error naming the file: it may hold a run someone wants, so it is neither replaced nor
resumed unless ``redo=True`` (:func:`run_folder_state`). A run that raises while training is reported
with its error while the others go on; the figure and the table then use the runs that finished.

With ``ray`` (the ``ray`` extra), each run is a Ray task (:func:`run_on_ray`): it gets the files of its
run folder, trains in a temporary folder on whichever machine Ray picks, and sends the folder's files
back, which the launching machine writes into ``out``; no shared filesystem is assumed. So everything
above holds as with the process pool. A run interrupted with Ctrl-C sends nothing back: its folder stays
as it was before the comparison.
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import tempfile
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .envs import check_env_id
from .errors import MinippoError, check_range
from .logger import (
    load_checkpoint,
    progress_rows,
    read_json,
    read_run_config,
    require_tensorboard,
    write_json,
)
from .plot import Run, band_label, load_run, plot_runs, reward_threshold
from .stats import (
    INSTALL_HINT,
    compute_stats,
    format_stats,
    plot_performance_profile,
    rliable_available,
    stats_notes,
    write_stats_csv,
)
from .train import ALGORITHMS, RUN_FILES, make_configs, resume, train

DONE_FILE = "done.json"
ERROR_FILE = "error.txt"
RAY_INSTALL_HINT = 'pip install "minippo[ray]"'


@dataclass(frozen=True)
class RunSpec:
    """One (algorithm, seed) run of a comparison; ``total_steps`` is its env-step budget."""

    env_id: str
    algo: str
    seed: int
    total_steps: int
    run_dir: Path

    IDENTITY = ("env_id", "algo", "seed", "total_steps")  # the fields done.json must match

    @property
    def name(self) -> str:
        return f"{self.algo}-s{self.seed}"

    def identity(self) -> dict:
        """What ``done.json`` must match for the folder to count as this run, finished."""
        return {key: getattr(self, key) for key in self.IDENTITY}


def read_done(path: Path) -> dict | None:
    """The ``done.json`` at ``path`` (None if there is none).

    Raises:
        MinippoError: it is unreadable, not JSON, or not a JSON object naming env_id, algo, seed and
            total_steps.
    """
    if not path.exists():
        return None
    done = read_json(path)
    if not isinstance(done, dict) or any(key not in done for key in RunSpec.IDENTITY):
        raise MinippoError(f"{path} is not a minippo done.json: it must be a JSON object naming "
                           f"{', '.join(RunSpec.IDENTITY)}.")
    return done


def run_folder_state(spec: RunSpec) -> str:
    """What ``spec.run_dir`` holds, and so what the comparison does with it, decided before any training:

    - ``"new"``: nothing to lose: no run files, or no checkpoint.pt and at most one progress.csv row (a
      run killed in its first iteration), with a config.json (if any) of this run. Trained from scratch.
    - ``"resume"``: a checkpoint of this run (same env, algorithm and seed), with progress.csv rows up to
      its iteration, and no done.json of this budget. Resumed from the checkpoint.
    - ``"finished"``: a done.json of this very run (same env, algorithm, seed and budget), with a readable
      config.json and progress.csv (and checkpoint.pt, if any) of it. Kept as it is.

    Raises:
        MinippoError: anything else: a corrupt or foreign checkpoint.pt, config.json, progress.csv or
            done.json, or progress rows without a checkpoint. Such a folder may hold a run someone wants,
            so the comparison neither replaces nor resumes it: the message names the file and what is
            wrong, and says to use ``--redo`` (train the run again from scratch, replacing its files) or
            to move the folder away.
    """
    folder = spec.run_dir  # only files count: a folder named config.json is no run (training reports it)
    if not any((folder / name).is_file() for name in (*RUN_FILES, DONE_FILE)):
        return "new"
    checkpoint_path = folder / "checkpoint.pt"
    this_run = f"{spec.algo} on {spec.env_id}, seed {spec.seed}"
    describe = lambda d: f"{d.get('algo')} on {d.get('env_id')}, seed {d.get('seed')}"  # noqa: E731
    try:
        done = read_done(folder / DONE_FILE)
        if (folder / "config.json").is_file():
            config = read_run_config(folder / "config.json")
            if describe(config["train"]) != this_run:
                raise MinippoError(f"{folder / 'config.json'} is another run's "
                                   f"({describe(config['train'])}), not {spec.name}'s ({this_run}).")
        if checkpoint_path.is_file():
            state = load_checkpoint(checkpoint_path)
            saved = state.get("config")
            train = saved.get("train") if isinstance(saved, dict) else None
            if not isinstance(train, dict) or describe(train) != this_run:
                raise MinippoError(f"{checkpoint_path} is not a checkpoint of {spec.name} ({this_run}).")
            if not isinstance(state.get("iteration"), int):
                raise MinippoError(f"{checkpoint_path} names no iteration.")
            progress_rows(folder / "progress.csv", state["iteration"])
        if done is not None and all(done.get(k) == v for k, v in spec.identity().items()):
            load_run(folder)  # what the figure and the table will read
            return "finished"
        if checkpoint_path.is_file():
            return "resume"
        csv_path = folder / "progress.csv"
        if csv_path.is_file() and csv_path.read_bytes().count(b"\n") > 2:  # the header and one row
            raise MinippoError(f"{csv_path} holds rows of several iterations but {folder} has no "
                               "checkpoint.pt to resume from.")
        return "new"
    except MinippoError as e:
        raise MinippoError(f"{e} The comparison leaves {folder} as it is: use --redo to train {spec.name} "
                           "again from scratch (replacing its files), or move the folder away.") from None


def train_one(spec: RunSpec, redo: bool = False, tensorboard: bool = False) -> dict:
    """Train one run in this (worker) process and mark it finished with ``done.json``; return what
    done.json holds: the run's identity, ``global_step``, ``time_s`` and ``final_return``.

    Without ``redo``, the folder is what :func:`run_folder_state` says: an unfinished run of this spec is
    resumed from its checkpoint, a folder with nothing to lose is trained from scratch, and one that is
    unreadable raises. With ``redo``, whatever is there is replaced. ``tensorboard``: also write the
    run's scalars to ``<run_dir>/tb`` (a resumed run with a ``tb`` folder writes there anyway).

    Uses one torch thread and the CPU: K small-MLP runs side by side on K cores beat sharing one GPU.
    If training raises, the traceback is saved to ``<run_dir>/error.txt`` before the exception goes on.

    Raises:
        Whatever :func:`minippo.train` raises, and MinippoError if the run was interrupted.
    """
    torch.set_num_threads(1)
    (spec.run_dir / DONE_FILE).unlink(missing_ok=True)  # a redo that fails must not look finished
    (spec.run_dir / ERROR_FILE).unlink(missing_ok=True)
    try:
        if not redo and run_folder_state(spec) == "resume":
            result = resume(spec.run_dir, total_steps=spec.total_steps, device="cpu", show_progress=False)
        else:
            result = train(spec.env_id, spec.algo, total_steps=spec.total_steps, seed=spec.seed,
                           device="cpu", out=spec.run_dir, overwrite=True, show_progress=False,
                           tensorboard=tensorboard)
    except Exception:
        # The parent process only sees the exception's message; keep the whole traceback for debugging.
        if spec.run_dir.is_dir():
            (spec.run_dir / ERROR_FILE).write_text(traceback.format_exc())
        raise
    if result.status != "finished":
        raise MinippoError(f"run {result.status} after {result.global_step} env steps")
    record = {**spec.identity(), "global_step": result.global_step, "time_s": round(result.time_s, 3),
              "final_return": result.final_return}
    write_json(spec.run_dir / DONE_FILE, record)
    return record


def plan_runs(env_id: str, algos: list[str], seeds: list[int], total_steps: int | None, out: Path
              ) -> list[RunSpec]:
    """Check the inputs and list the runs, seed-major (so the first results cover every algorithm).

    ``total_steps=None`` takes each algorithm's default budget for ``env_id``.

    Raises:
        MinippoError: unknown env or algorithm, no algorithms or seeds, a seed out of [0, 2**32 − 1], a
            bad budget.
    """
    check_env_id(env_id)
    unknown = [a for a in algos if a not in ALGORITHMS]
    if unknown or not algos:
        raise MinippoError(f"Unknown algorithm(s) {unknown}; choose from {sorted(ALGORITHMS)}."
                           if unknown else "No algorithms to compare.")
    if not seeds:
        raise MinippoError("No seeds given.")
    specs = []
    for seed in dict.fromkeys(seeds):  # dict.fromkeys drops duplicates and keeps the order
        for algo in dict.fromkeys(algos):  # make_configs checks the seed and the budget
            budget = make_configs(algo, env_id, total_steps=total_steps, seed=seed)[0].total_steps
            specs.append(RunSpec(env_id, algo, seed, budget, out / f"{algo}-s{seed}"))
    return specs


def steps_to_threshold(run: Run, threshold: float) -> float:
    """The first env step at which ``run``'s rolling mean return is ≥ ``threshold`` (inf if never)."""
    reached = run.steps[run.returns >= threshold]
    return float(reached[0]) if len(reached) else math.inf


def summarize(runs: list[Run], threshold: float | None) -> list[dict]:
    """One row per algorithm (sorted by name) over its runs (seeds):

    ==================  ===================================================================================
    key                 value
    ==================  ===================================================================================
    algo, seeds         the algorithm and how many runs went into the row
    final_return_mean   mean over runs of the final ``rolling_return_mean`` (mean of the last 10 episodes)
    final_return_std    their sample standard deviation (ddof=1; 0 for one run): the seeds' spread, not a
                        confidence interval
    steps_to_threshold  median over runs of the first env step where the rolling mean return reaches
                        ``threshold``, counting a run that never does as ∞; so ∞ (shown as "not
                        reached") unless more than half the runs reach it. NaN without a threshold.
    seeds_reached       how many runs reached the threshold
    wall_time_s         mean over runs of the wall-clock seconds of the run (last ``time_s``)
    steps_per_s         mean over runs of env steps per second (last ``steps_per_s``)
    ==================  ===================================================================================
    """
    rows = []
    for algo in sorted({run.algo for run in runs}):
        group = [run for run in runs if run.algo == algo]
        finals = np.array([run.final_return for run in group])
        reached = [steps_to_threshold(run, threshold) for run in group] if threshold is not None else []
        rows.append({
            "algo": algo, "seeds": len(group),
            "final_return_mean": float(finals.mean()),
            "final_return_std": float(finals.std(ddof=1)) if len(group) > 1 else 0.0,
            "steps_to_threshold": float(np.median(reached)) if reached else math.nan,
            "seeds_reached": sum(math.isfinite(s) for s in reached),
            "wall_time_s": float(np.mean([run.time_s for run in group])),
            "steps_per_s": float(np.mean([run.steps_per_s for run in group])),
        })
    return rows


def format_summary(rows: list[dict], threshold: float | None) -> str:
    """The rows of :func:`summarize` as a Markdown table (a row of one seed shows no ±)."""
    goal = f"{threshold:g}" if threshold is not None else "threshold"
    lines = [f"| algorithm | seeds | final return (mean ± std) | env steps to {goal} (median) "
             f"| seeds reaching {goal} | wall time (s) | env steps/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        steps = r["steps_to_threshold"]
        steps_text = ("no threshold" if threshold is None else "not reached" if math.isinf(steps)
                      else f"{steps:,.0f}")
        final = ("n/a" if math.isnan(r["final_return_mean"]) else f"{r['final_return_mean']:.1f}"
                 if r["seeds"] == 1 else f"{r['final_return_mean']:.1f} ± {r['final_return_std']:.1f}")
        lines.append(f"| {r['algo']} | {r['seeds']} | {final} | {steps_text} | {r['seeds_reached']}/"
                     f"{r['seeds']} | {r['wall_time_s']:.1f} | {r['steps_per_s']:,.0f} |")
    return "\n".join(lines)


def summary_notes(runs: list[Run], band: str) -> str:
    """The notes under the table in ``summary.md``: what its ± is, and which band ``returns.png`` draws
    for each algorithm (grouped as :func:`minippo.plot.plot_runs` does, so they match its legend).

    Args:
        runs: the runs of one env that the figure and the table were made from.
        band: the figure's band (:func:`minippo.plot.aggregate`).
    """
    curves: dict[str | None, list[str]] = {}  # band label (None: one seed, no band) -> algorithms
    for algo in sorted({run.algo for run in runs}):
        n = sum(1 for run in runs if run.algo == algo and len(run.steps))
        if n:  # a run with no finished episode has no curve
            curves.setdefault(band_label(band, n), []).append(algo)
    shaded = "; ".join(f"{label if label else 'no band (1 seed)'} ({', '.join(algos)})"
                       for label, algos in curves.items())
    return ("- final return: each run's last `rolling_return_mean` (mean return of its last 10 episodes); "
            "mean ± sample standard deviation (ddof=1) over the seeds, i.e. how much the seeds disagree, "
            "not a confidence interval. One seed: no ±.\n"
            f"- returns.png: line = mean over seeds; shaded band = {shaded or 'none (no curves)'}.\n")


def write_summary_csv(rows: list[dict], path: Path) -> None:
    """``summary.csv``: the keys of :func:`summarize` as columns; NaN and ∞ (not reached) as empty cells."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v
                             for k, v in row.items()})


@dataclass
class CompareResult:
    """What :func:`compare` did. ``failed`` maps a run's name (``<algo>-s<seed>``) to its error;
    ``runs`` are the finished runs, read back; ``files`` the figure and tables written; ``stats`` what
    :func:`minippo.stats.compute_stats` returned (None without rliable, runs, or a common step range)."""

    out: Path
    runs: list[Run]
    failed: dict[str, str]
    summary: list[dict]
    threshold: float | None
    files: list[Path] = field(default_factory=list)
    stats: dict | None = None


def compare(env_id: str = "CartPole-v1", algos: Sequence[str] | None = None,
            seeds: Sequence[int] = (0, 1, 2), *, total_steps: int | None = None, jobs: int | None = None,
            out: str | Path | None = None, redo: bool = False, band: str = "auto",
            show_progress: bool = True, stats_reps: int = 1000, stats_seed: int = 0,
            tensorboard: bool = False, ray: bool | str = False) -> CompareResult:
    """Train each algorithm in ``algos`` with each seed in ``seeds`` on ``env_id``, ``jobs`` runs at a
    time in separate processes, then write the figure and summary tables to ``out`` (module doc).

    Args:
        algos: names in ``minippo.train.ALGORITHMS`` (default: all of them).
        total_steps: env-step budget per run (default: each algorithm's default for ``env_id``).
        jobs: processes at a time (default: ``os.cpu_count()``); each uses one torch thread. With
            ``ray=True``, the CPUs of the Ray started here; with a Ray address, unused (the cluster's CPUs
            decide, one per run).
        out: the comparison folder (default ``runs/compare-<env_id>``).
        redo: train every run again even if its folder is finished.
        band: the figure's band, ``"auto"`` (default), ``"range"``, ``"t95"`` or ``"std"``
            (:func:`minippo.plot.aggregate`); summary.md names the one drawn.
        show_progress: a tqdm bar over the runs and a line per finished or failed run.
        stats_reps, stats_seed: bootstrap resamples and seed of the statistics (:mod:`minippo.stats`).
        tensorboard: each run also writes its scalars to ``<run>/tb`` (``tensorboard --logdir out``).
        ray: False (default): a local process pool. True: each run is a task of a Ray started here;
            a string: the address of a running Ray cluster (e.g. ``"ray://head:10001"``, ``"auto"``) to
            send the tasks to (:func:`run_on_ray`).

    Returns:
        A :class:`CompareResult`. Failed runs do not raise: they are in ``result.failed``.

    Raises:
        MinippoError: bad input (see :func:`plan_runs`), ``jobs`` < 1, ``ray`` without Ray installed or
            a Ray cluster that cannot be reached.
    """
    out = Path(out) if out is not None else Path("runs") / f"compare-{env_id}"
    return compare_folders({env_id: out}, algos, seeds, total_steps=total_steps, jobs=jobs, redo=redo,
                           band=band, show_progress=show_progress, stats_reps=stats_reps,
                           stats_seed=stats_seed, tensorboard=tensorboard, ray=ray)[env_id]


def compare_grid(env_ids: Sequence[str], algos: Sequence[str] | None = None,
                 seeds: Sequence[int] = (0, 1, 2), *, out: str | Path | None = None, **kwargs
                 ) -> dict[str, CompareResult]:
    """:func:`compare` on each env of ``env_ids`` at once: every (env, algorithm, seed) run shares one
    process pool (or one Ray), then each env gets what :func:`compare` writes, in ``out/<env_id>``.

    Args:
        out: the grid's folder (default ``runs/compare-<env1>+<env2>...``, the env ids in order).
        kwargs: the keyword arguments of :func:`compare`.

    Returns:
        The :class:`CompareResult` of each env, by env id.

    Raises:
        MinippoError: no env ids, and what :func:`compare` raises.
    """
    env_ids = list(dict.fromkeys(env_ids))
    if not env_ids:
        raise MinippoError("No environments to compare on.")
    out = Path(out) if out is not None else Path("runs") / f"compare-{'+'.join(env_ids)}"
    return compare_folders({env_id: out / env_id for env_id in env_ids}, algos, seeds, **kwargs)


def compare_folders(folders: dict[str, Path], algos: Sequence[str] | None = None,
                    seeds: Sequence[int] = (0, 1, 2), *, total_steps: int | None = None,
                    jobs: int | None = None, redo: bool = False, band: str = "auto",
                    show_progress: bool = True, stats_reps: int = 1000, stats_seed: int = 0,
                    tensorboard: bool = False, ray: bool | str = False) -> dict[str, CompareResult]:
    """What :func:`compare` and :func:`compare_grid` do: ``folders`` maps each env id to its comparison
    folder. Every input and every run folder is checked before anything is trained."""
    if tensorboard:
        require_tensorboard()  # one line now, not one failed run per worker
    if ray:
        import_ray()  # likewise
    jobs = jobs if jobs is not None else os.cpu_count() or 1
    check_range("jobs", jobs, 1)
    algos = list(algos) if algos is not None else list(ALGORITHMS)
    specs = {env_id: plan_runs(env_id, algos, list(seeds), total_steps, out)
             for env_id, out in folders.items()}
    # Every run folder is read before anything is trained, so that an unreadable one stops the comparison
    # with nothing written (run_folder_state says why and what to do).
    states = {spec: "new" if redo else run_folder_state(spec) for env_specs in specs.values()
              for spec in env_specs}
    pending = [s for s in states if states[s] != "finished"]
    say = tqdm.write if show_progress else lambda _: None
    for env_id, env_specs in specs.items():
        to_train = sum(states[s] != "finished" for s in env_specs)
        say(f"{env_id}: {len(env_specs)} runs = {len(algos)} × {len({s.seed for s in env_specs})} "
            f"(algorithms × seeds) in {folders[env_id]}; {len(env_specs) - to_train} already finished (redo "
            f"to train them again), {to_train} to train.")
    if pending:
        where = (f"on the Ray cluster at {ray}" if isinstance(ray, str)
                 else f"on a local Ray with {jobs} CPUs" if ray else f"{min(jobs, len(pending))} at a time")
        say(f"Training {len(pending)} run(s) {where}.")

    failed: dict[RunSpec, str] = {}
    label = (lambda spec: spec.name) if len(folders) == 1 else (lambda spec: f"{spec.env_id} {spec.name}")
    bar = tqdm(total=len(states), initial=len(states) - len(pending), unit="run", desc="runs finished",
               disable=not show_progress, dynamic_ncols=True)

    def report(spec: RunSpec, record: dict | None, error: str | None) -> None:
        if error is None:
            say(f"{label(spec)}: finished, {record['global_step']:,} env steps in {record['time_s']:.0f} s, "
                f"final return {record['final_return']:.1f}")
        else:
            failed[spec] = error
            say(f"{label(spec)}: FAILED: {error}")
        bar.update(1)

    if pending and ray:
        run_on_ray(pending, jobs, redo, tensorboard, ray if isinstance(ray, str) else None, report)
    elif pending:
        run_in_pool(pending, jobs, redo, tensorboard, report)
    bar.close()
    return {env_id: write_comparison(env_id, folders[env_id], env_specs, failed, band, stats_reps,
                                     stats_seed) for env_id, env_specs in specs.items()}


Report = Callable[[RunSpec, dict | None, str | None], None]  # (run, its done.json record, its error)


def run_in_pool(pending: list[RunSpec], jobs: int, redo: bool, tensorboard: bool, report: Report) -> None:
    """Train the ``pending`` runs with :func:`train_one`, ``jobs`` processes at a time, and ``report`` each
    one as it finishes or fails."""
    waiting, running = list(pending), {}
    # 'spawn' starts each worker fresh: no forked torch/OpenMP state, and it works the same on every OS.
    with ProcessPoolExecutor(min(jobs, len(pending)), mp_context=multiprocessing.get_context("spawn")
                             ) as executor:
        while waiting or running:
            # Submit only as many runs as there are workers: the executor hands submitted runs to its
            # workers ahead of time, and Ctrl-C could then no longer cancel them.
            while waiting and len(running) < jobs:
                spec = waiting.pop(0)
                running[executor.submit(train_one, spec, redo, tensorboard)] = spec
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                spec, error = running.pop(future), future.exception()
                if error is None:
                    report(spec, future.result(), None)
                else:
                    message = f"{type(error).__name__}: {error}"
                    if (spec.run_dir / ERROR_FILE).is_file():
                        message += f" (traceback in {spec.run_dir / ERROR_FILE})"
                    report(spec, None, message)
    # Ctrl-C reaches the workers too (same process group): each train() stops after its current
    # iteration, keeping its checkpoint but writing no done.json, and leaving the `with` waits for that.


def import_ray():
    """The ``ray`` module.

    Raises:
        MinippoError: Ray is not installed (the message says how to get it).
    """
    try:
        import ray
    except ImportError:
        raise MinippoError(f"--ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def run_on_ray(pending: list[RunSpec], jobs: int, redo: bool, tensorboard: bool, address: str | None,
               report: Report) -> None:
    """Train the ``pending`` runs as Ray tasks (:func:`train_shipped`, one CPU each) and ``report`` each
    one as it comes back, after writing the files it sent into its run folder (:func:`write_folder`).

    With no ``address``, starts Ray here with ``jobs`` CPUs (so ``jobs`` runs at a time) and stops it at the
    end; with one, connects to that cluster, whose free CPUs decide how many run at a time. Every machine
    of the cluster needs minippo installed, with the same versions of it, torch and gymnasium as here (the
    runs are then the same as with the process pool). Ctrl-C cancels the runs still in flight.

    Raises:
        MinippoError: Ray is not installed, or the cluster at ``address`` cannot be reached.
    """
    ray = import_ray()
    started = not ray.is_initialized()  # a caller who started Ray keeps it
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else jobs, include_dashboard=False,
                     log_to_driver=False)
        except ConnectionError as e:
            raise MinippoError(f"Cannot reach the Ray cluster at {address}: {e}") from None
    running = {}
    try:
        # max_retries=0: a run whose worker dies is reported as failed, like one whose process dies.
        task = ray.remote(num_cpus=1, max_retries=0)(train_shipped)
        running = {task.remote(spec, read_folder(spec.run_dir), redo, tensorboard): spec for spec in pending}
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            spec = running.pop(ref)
            try:
                sent = ray.get(ref)
                write_folder(spec.run_dir, sent["files"])
            except (ray.exceptions.RayError, OSError) as e:  # the task could not run, or its files be written
                report(spec, None, f"{type(e).__name__}: {e}")
                continue
            error = sent["error"]
            if error is not None and sent["files"].get(ERROR_FILE) is not None:
                error += f" (traceback in {spec.run_dir / ERROR_FILE})"
            report(spec, sent["record"], error)
    finally:
        for ref in running:  # Ctrl-C (or an error here): nothing would read these runs' files
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def read_folder(folder: Path) -> dict[str, bytes | None]:
    """Everything under ``folder``, by path relative to it (with ``/``): a file's bytes, or None for a
    folder (so that an empty one, or one where a file should be, travels too). Empty if there is none."""
    if not folder.is_dir():
        return {}
    return {path.relative_to(folder).as_posix(): None if path.is_dir() else path.read_bytes()
            for path in sorted(folder.rglob("*"))}


def write_folder(folder: Path, files: dict[str, bytes | None]) -> None:
    """Make ``folder`` hold exactly ``files`` (as :func:`read_folder` returns them).

    Written so that a kill at any moment leaves a folder that the next comparison reads right: done.json
    is deleted first and written last (no half-copied run looks finished), each file is written to a
    ``.tmp`` and renamed over the old one, and progress.csv is written before checkpoint.pt (rows beyond
    the checkpoint are dropped on resume; a checkpoint beyond the rows could not be resumed).

    Raises:
        OSError: a file cannot be written or deleted.
    """
    (folder / DONE_FILE).unlink(missing_ok=True)
    if folder.is_dir():
        for path in sorted(folder.rglob("*"), reverse=True):  # what the run deleted; children first
            relative = path.relative_to(folder).as_posix()
            if relative in files and (files[relative] is None) == path.is_dir():
                continue
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            else:
                path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    for relative in sorted(files, key=lambda name: (name == DONE_FILE, name == "checkpoint.pt", name)):
        path = folder / relative
        if files[relative] is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(files[relative])
            os.replace(tmp, path)


def train_shipped(spec: RunSpec, files: dict[str, bytes | None], redo: bool, tensorboard: bool) -> dict:
    """The Ray task: :func:`train_one` on a copy of ``spec``'s run folder made from ``files`` in a
    temporary folder of this machine, then return the folder's files: ``{"files": read_folder(...),
    "record": what done.json holds, or None, "error": "<ExceptionType>: <message>", or None}``.

    Raises nothing: a run that fails sends back its files (error.txt included) and its error. Paths in the
    error name the run folder on the launching machine, not the temporary one."""
    with tempfile.TemporaryDirectory(prefix="minippo-ray-") as tmp:
        here = replace(spec, run_dir=Path(tmp) / spec.name)
        write_folder(here.run_dir, files)
        record = error = None
        try:
            record = train_one(here, redo, tensorboard)
        except Exception as e:
            error = f"{type(e).__name__}: {e}".replace(str(here.run_dir), str(spec.run_dir))
        return {"files": read_folder(here.run_dir), "record": record, "error": error}


def write_comparison(env_id: str, out: Path, specs: list[RunSpec], failed: dict[RunSpec, str], band: str,
                     stats_reps: int, stats_seed: int) -> CompareResult:
    """Read back the runs of ``env_id`` that did not fail, and write its figure, tables and statistics to
    ``out`` (module doc); a run that cannot be read back counts as failed."""
    errors = {spec.name: failed[spec] for spec in specs if spec in failed}
    runs = []
    for spec in specs:
        if spec.name not in errors:
            try:
                runs.append(load_run(spec.run_dir))
            except MinippoError as e:
                errors[spec.name] = str(e)
    threshold = reward_threshold(env_id)
    result = CompareResult(out, runs, errors, summarize(runs, threshold), threshold)
    if runs:
        fig = plot_runs(runs, band=band)
        result.files = [out / "returns.png", out / "returns.svg", out / "summary.csv", out / "summary.md"]
        fig.savefig(result.files[0], dpi=150)
        fig.savefig(result.files[1])
        write_summary_csv(result.summary, result.files[2])
        summary_md = (f"# {env_id}: {', '.join(r['algo'] for r in result.summary)}\n\n"
                      f"{format_summary(result.summary, threshold)}\n\n{summary_notes(runs, band)}")
        result.files[3].write_text(summary_md)  # written before the statistics, which may take a second
        section = write_stats(result, stats_reps, stats_seed)
        with open(result.files[3], "a") as f:
            f.write("\n" + section)
    return result


def write_stats(result: CompareResult, reps: int, seed: int) -> str:
    """Compute :mod:`minippo.stats` on ``result.runs``, write ``stats.csv`` and ``performance_profile.png``
    to ``result.out`` (adding them to ``result.files`` and the statistics to ``result.stats``), and return
    the ``summary.md`` section: the tables and how to read them. Without rliable, or when no statistic can
    be computed (no run finished an episode, or the runs share no range of steps), writes no file and
    returns one line saying why."""
    if not rliable_available():
        return f"## Statistics\n\nNot computed: rliable is not installed; get them with `{INSTALL_HINT}`.\n"
    try:
        stats = compute_stats(result.runs, reps, seed)
    except MinippoError as e:
        return f"## Statistics\n\nNot computed: {e}\n"
    result.stats = stats
    write_stats_csv(stats, result.out / "stats.csv")
    fig = plot_performance_profile(stats["scores"]["final_return"], reps=reps, seed=seed,
                                   title=f"{result.runs[0].env_id}: performance profile of the final return")
    fig.savefig(result.out / "performance_profile.png", dpi=150)
    result.files += [result.out / "stats.csv", result.out / "performance_profile.png"]
    return ("## Statistics (Agarwal et al. 2021, computed with rliable)\n\n"
            f"{format_stats(stats)}\n\n### How to read them\n\n{stats_notes(stats)}")


def cmd_compare(args) -> int:
    """``minippo compare``: exit status 0 if every run finished, 1 if any failed. ``args.env`` is a list:
    one env gives :func:`compare`, several :func:`compare_grid`."""
    options = dict(total_steps=args.total_steps, jobs=args.jobs, out=args.out, redo=args.redo,
                   tensorboard=args.tensorboard, ray=args.ray)
    if len(set(args.env)) == 1:
        results = {args.env[0]: compare(args.env[0], args.algos, args.seeds, **options)}
    else:
        results = compare_grid(args.env, args.algos, args.seeds, **options)
    failed = {}
    for env_id, result in results.items():
        if result.summary:
            heading = f"{env_id}\n" if len(results) > 1 else ""
            print(f"\n{heading}{format_summary(result.summary, result.threshold)}\n")
            print("written: " + ", ".join(str(p) for p in result.files))
        if result.summary and result.stats is None:
            print("statistics (IQM, probability of improvement) not computed; see "
                  f"{result.out / 'summary.md'}"
                  + ("" if rliable_available() else f". Get them with {INSTALL_HINT}"))
        prefix = f"{env_id} " if len(results) > 1 else ""
        failed.update({f"{prefix}{name}": error for name, error in result.failed.items()})
    for name, error in failed.items():
        print(f"failed: {name}: {error}")
    if failed:
        finished = sum(len(result.runs) for result in results.values())
        print(f"{len(failed)} run(s) failed; the figures and tables use the {finished} that finished. "
              "Fix the cause and run the same command again: finished runs are kept.")
    return 1 if failed else 0
