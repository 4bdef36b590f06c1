"""The ``minippo`` command: ``train``, ``eval``, ``compare``, ``plot``, ``rlhf`` and ``check``
(``minippo --help``).

Bad input is reported as one line on stderr, ``minippo: error: ...``, with exit status 2; a NaN loss
stops training with status 1; Ctrl-C with status 130. The run folder keeps the last good checkpoint.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys

import numpy as np
import torch

from .errors import MinippoError, NonFiniteLossError


def _parse_hp(items: list[str]) -> dict:
    """``["learning_rate=1e-3", "hidden_sizes=(32,32)"]`` → dict, values parsed as Python literals."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MinippoError(f"--hp expects KEY=VALUE, got {item!r} (e.g. --hp learning_rate=1e-3).")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


# Settings the commands take as options of their own: `--hp seed=3` would give them twice.
TRAIN_OPTIONS = {"env_id": "--env", "algo": "--algo", "seed": "--seed", "total_steps": "--total-steps",
                 "num_envs": "--num-envs", "device": "--device", "out": "--out", "overwrite": "--overwrite",
                 "show_progress": "--no-progress", "tensorboard": "--tensorboard",
                 "video_every": "--video-every"}
RLHF_OPTIONS = {"algo": "--algo", "beta": "--beta", "kl_target": "--kl-target", "iterations": "--iterations",
                "seed": "--seed", "device": "--device", "corpus": "--corpus"}


def refuse_options_in_hp(hp: dict, options: dict[str, str]) -> None:
    """Raise :class:`MinippoError` if an ``--hp`` key names a setting that has an option of its own."""
    for key in hp:
        if key in options:
            raise MinippoError(f"--hp {key}=... sets what the option {options[key]} sets; use {options[key]} "
                               "instead.")


def number(text: str) -> int | float:
    """``--total-steps`` value: ``100000`` or ``1e5``. A float that is not whole is refused later, by
    :class:`minippo.train.TrainConfig`, with a message naming the option."""
    try:
        return int(text)
    except ValueError:
        return float(text)  # a ValueError here makes argparse say "invalid number value"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minippo", description="Policy-gradient RL, small and readable: "
                                     "VPG, TRPO and PPO on Gymnasium tasks.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    from .train import ALGORITHMS  # noqa: PLC0415 (keeps `minippo --help` quick)

    t = sub.add_parser("train", help="train a policy on a Gymnasium task",
                       description="Train a policy. Defaults are tuned per env (see the DEFAULTS table in "
                       "each algorithm module); any hyperparameter can be set with --hp KEY=VALUE.")
    # --algo, --env and --seed default to None so that cmd_train can tell them given from defaulted.
    t.add_argument("--algo", choices=sorted(ALGORITHMS), help="(default: ppo)")
    t.add_argument("--env", help="Gymnasium env id (default: CartPole-v1)")
    t.add_argument("--total-steps", type=number, help="env-step budget, e.g. 100000 or 1e5 (default: "
                   "per env); with --resume, a new budget, e.g. larger to train longer")
    t.add_argument("--seed", type=int, help="(default: 0)")
    t.add_argument("--num-envs", type=int, help="parallel envs (default: per env)")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    t.add_argument("--out", help="run folder (default: runs/<env>-<algo>-s<seed>-<time>); a folder that "
                   "already holds a run is refused unless --overwrite")
    t.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint "
                   "with its own settings (the envs are reset: episodes in flight are not restored)")
    t.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter, e.g. --hp learning_rate=1e-3 (repeatable)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--video-every", type=int, metavar="N", help="every N iterations, and after the last, "
                   "record one deterministic episode of the checkpoint just written to "
                   "RUN_DIR/videos/iter-XXXXX.gif (needs pip install \"minippo[video]\" for classic control)")
    t.add_argument("--tensorboard", action="store_true", help="also write the progress.csv columns to "
                   "RUN_DIR/tb as TensorBoard scalars (off unless asked: it needs the tensorboard extra, pip "
                   "install \"minippo[tensorboard]\"); a resumed run goes on writing them if it did")

    e = sub.add_parser("eval", help="evaluate a saved policy")
    e.add_argument("checkpoint", help="checkpoint.pt, or the run folder holding it")
    e.add_argument("--episodes", type=int, help="(default: 10; 1 with --video)")
    e.add_argument("--stochastic", action="store_true", help="sample actions instead of the mode")
    e.add_argument("--env", help="evaluate on this env id instead of the one trained on")
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--video", metavar="FILE.gif|FILE.mp4", help="evaluate by recording the episodes in one "
                   "rendering env and write them to FILE (.gif with Pillow; .mp4 needs pip install "
                   "imageio-ffmpeg; rendering classic control needs pip install \"minippo[video]\")")

    c = sub.add_parser("compare", help="train algorithms × seeds in parallel, then plot and tabulate",
                       description="Train every (algorithm, seed) pair on one env, one process per run, then "
                       "write returns.png/.svg, summary.csv/.md and, with the stats extra, the statistics of "
                       "Agarwal et al. 2021 (stats.csv, performance_profile.png: IQM, probability of "
                       "improvement) to --out. With several envs, every (env, algorithm, seed) run shares "
                       "the processes and each env gets those files in --out/<env>. Finished runs are kept: "
                       "run the same command again to resume (unfinished runs go on from their "
                       "checkpoints). Exit status 1 if any run failed.")
    c.add_argument("--env", nargs="+", default=["CartPole-v1"], metavar="ENV",
                   help="Gymnasium env id(s) (default: CartPole-v1)")
    c.add_argument("--algos", nargs="+", choices=list(ALGORITHMS), help="(default: all)")
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default: 0 1 2)")
    c.add_argument("--total-steps", type=number,
                   help="env-step budget per run (default: per algorithm and env)")
    c.add_argument("--jobs", type=int, help="runs at a time (default: number of CPUs)")
    c.add_argument("--out", help="comparison folder (default: runs/compare-<env>; with several envs "
                   "runs/compare-<env1>+<env2>..., holding a folder per env)")
    c.add_argument("--redo", action="store_true", help="train finished runs again")
    c.add_argument("--tensorboard", action="store_true", help="each run also writes its progress.csv "
                   "columns to RUN_DIR/tb (tensorboard --logdir OUT shows them all; needs pip install "
                   "\"minippo[tensorboard]\")")
    c.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                   help="run each run as a Ray task: on a Ray started here with --jobs CPUs, or with "
                   "ADDRESS (e.g. auto, ray://HEAD:10001) on that running Ray cluster, whose machines need "
                   "minippo installed; each run's files come back to --out (needs pip install "
                   "\"minippo[ray]\")")

    p = sub.add_parser("plot", help="plot learning curves of run folders",
                       description="Episodic return vs env steps, mean over seeds with a shaded band, one "
                       "line per (env, algorithm) found in the run folders.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or folders to search for them")
    p.add_argument("--out", default="returns.png", help="image file; format from the suffix (default: "
                   "returns.png)")
    p.add_argument("--band", choices=["auto", "range", "t95", "std"], default="auto",
                   help="shaded band per curve: auto (default) = min–max range over ≤ 4 seeds, 95%% "
                   "t-interval of the mean for ≥ 5; range; t95; or std (± 1 std over seeds). One seed: no "
                   "band. The legend names the band drawn")
    p.add_argument("--font-scale", type=float, default=1.0,
                   help="multiply every font size, e.g. 1.6 for slides (default: 1)")
    p.add_argument("--stats", action="store_true",
                   help="also print each env's IQM of the final return and AUC with bootstrap CIs, the "
                   "probabilities of improvement, and save its performance profile beside --out "
                   "(Agarwal et al. 2021, as compare writes them; needs pip install \"minippo[stats]\")")

    r = sub.add_parser("rlhf", help="RLHF in miniature: pretrain a tiny GPT, learn a reward model, fine-tune "
                       "it with VPG, TRPO, PPO, RLOO, GRPO, best-of-n or DPO",
                       description="Corpus → pretrained character GPT → reward model from noisy preference "
                       "pairs → RL with the same VPG/TRPO/PPO code as `train` (or RLOO, GRPO, best-of-n, "
                       "DPO). Pretraining and the reward model are cached (see --cache-dir), so a second run "
                       "starts at RL. Defaults: the RLHFConfig and DEFAULTS table in minippo/lm/rlhf.py.")
    r.add_argument("--algo", choices=["ppo", "trpo", "vpg", "rloo", "grpo", "best-of-n", "dpo"],
                   help="RL on the shared loop (ppo, trpo, vpg; rloo and grpo with k completions per "
                   "prompt), or best-of-n (--hp n=16) and dpo (offline, on the reward model's preference "
                   "pairs) (default: ppo)")
    r.add_argument("--beta", type=float, help="KL coefficient β (default: 0.1)")
    r.add_argument("--kl-target", type=float, help="adapt β towards this KL(π‖π_ref), nats per sequence "
                   "(Ziegler et al. 2019; default: fixed β)")
    r.add_argument("--iterations", type=int, help="RL iterations (default: 60)")
    r.add_argument("--seed", type=int, help="(default: 0)")
    r.add_argument("--device", help="auto | cpu | cuda (default: auto)")
    r.add_argument("--out", help="run folder (default: runs/rlhf-<algo>-s<seed>-<time>); a folder that "
                   "already holds a run is refused unless --overwrite")
    r.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the RL stage of the run in RUN_DIR from its "
                   "checkpoint with its own settings; the cached pretrained and reward models are reused "
                   "(only --iterations, --cache-dir, --tensorboard and --no-progress may be given)")
    r.add_argument("--corpus", help="UTF-8 text file, one document per line (default: generated reviews)")
    r.add_argument("--cache-dir", help="where the pretrained and reward models are kept (default: "
                   "<out>/../cache)")
    r.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override an RLHFConfig field or an algorithm hyperparameter, e.g. --hp "
                   "num_sequences=128 --hp learning_rate=3e-4 (repeatable)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--tensorboard", action="store_true", help="also write the progress.csv columns to "
                   "RUN_DIR/tb as TensorBoard scalars, and the completions before and after RL as text (RL "
                   "methods only; off unless asked: it needs pip install \"minippo[tensorboard]\")")

    from .check import DEFAULT_TIMEOUT, EXERCISES  # noqa: PLC0415

    k = sub.add_parser("check", help="grade a student's function (or a folder of them) against independent "
                       "references",
                       description="Run the exercise's cases on the function FILE defines and print each as "
                       "PASS or FAIL with a hint; a folder DIR gets a table, one row per .py file. Exit "
                       "status 0 if every case passes, 1 if any fails, 2 if FILE cannot be graded (no such "
                       "file or function, a syntax error, an exception, a wrong return type, the time "
                       "limit). Exercises and their functions: minippo/check.py.")
    k.add_argument("exercise", choices=list(EXERCISES), metavar="EXERCISE",
                   help=f"one of: {', '.join(EXERCISES)}")
    k.add_argument("path", nargs="?", metavar="FILE|DIR", help="the student's .py file, or a folder of them")
    k.add_argument("--solution", action="store_true", help="grade minippo's own function, the model solution")
    k.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"seconds per submission before it is stopped (default: {DEFAULT_TIMEOUT:g})")
    return parser


def cmd_train(args) -> int:
    from .train import resume, train

    if args.resume:
        given = [flag for flag, value in (("--algo", args.algo), ("--env", args.env), ("--seed", args.seed),
                                          ("--num-envs", args.num_envs), ("--out", args.out),
                                          ("--overwrite", args.overwrite), ("--hp", args.hp),
                                          ("--video-every", args.video_every)) if value]
        if given:
            raise MinippoError(f"--resume continues the run with its own settings; drop {', '.join(given)} "
                               "(only --total-steps, --device, --tensorboard and --no-progress may be "
                               "given).")
        result = resume(args.resume, total_steps=args.total_steps,
                        device=None if args.device == "auto" else args.device,
                        show_progress=not args.no_progress, tensorboard=args.tensorboard or None)
        saved = json.loads((result.run_dir / "config.json").read_text())["train"]
        args.algo, args.env = saved["algo"], saved["env_id"]
    else:
        args.algo, args.env = args.algo or "ppo", args.env or "CartPole-v1"
        hp = _parse_hp(args.hp)
        refuse_options_in_hp(hp, TRAIN_OPTIONS)
        result = train(args.env, args.algo, total_steps=args.total_steps,
                       seed=args.seed if args.seed is not None else 0, num_envs=args.num_envs,
                       device=args.device, out=args.out, overwrite=args.overwrite,
                       show_progress=not args.no_progress, tensorboard=args.tensorboard,
                       video_every=args.video_every, **hp)
    returns = result.episode_returns
    print(f"\n{args.algo} on {args.env}: {result.status} after {result.iterations} iterations, "
          f"{result.global_step} env steps in {result.time_s:.1f} s "
          f"({result.global_step / max(result.time_s, 1e-9):.0f} steps/s)")
    if returns:
        print(f"episodes: {len(returns)}; mean return of the last 10: {result.final_return:.1f} "
              f"(best single episode {max(returns):.1f})")
    print(f"run folder: {result.run_dir} (config.json, progress.csv, checkpoint.pt"
          + (", tb/: tensorboard --logdir " + str(result.run_dir) if (result.run_dir / "tb").is_dir() else "")
          + ")")
    print(f"evaluate with: minippo eval {result.run_dir / 'checkpoint.pt'}")
    return 130 if result.status == "interrupted" else 0


def cmd_eval(args) -> int:
    from .train import evaluate

    episodes = args.episodes if args.episodes is not None else (1 if args.video else 10)
    if args.video:
        from .video import record_video

        path, returns, frames = record_video(args.checkpoint, args.video, episodes, seed=args.seed,
                                             deterministic=not args.stochastic, env_id=args.env)
        print(f"wrote {path}: {len(returns)} episodes, {frames} frames")
    else:
        returns = evaluate(args.checkpoint, episodes, deterministic=not args.stochastic, seed=args.seed,
                           env_id=args.env)
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"return over {len(returns)} episodes ({mode} actions): "
          f"{np.mean(returns):.1f} ± {np.std(returns):.1f}  (min {np.min(returns):.1f}, "
          f"max {np.max(returns):.1f})")
    return 0


def cmd_compare(args) -> int:
    from .compare import cmd_compare

    return cmd_compare(args)


def cmd_plot(args) -> int:
    from .plot import cmd_plot

    return cmd_plot(args)


def cmd_check(args) -> int:
    from .check import cmd_check

    return cmd_check(args)


def cmd_rlhf(args) -> int:
    from .lm.rlhf import cmd_rlhf

    hp = _parse_hp(args.hp)
    refuse_options_in_hp(hp, RLHF_OPTIONS)
    return cmd_rlhf(args, hp)


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "compare": cmd_compare, "plot": cmd_plot, "rlhf": cmd_rlhf,
            "check": cmd_check}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    torch.set_num_threads(1)  # small networks: one thread is faster, and leaves cores for parallel runs
    try:
        return COMMANDS[args.command](args)
    except NonFiniteLossError as e:
        print(f"minippo: error: {e}", file=sys.stderr)
        return 1
    except MinippoError as e:
        print(f"minippo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minippo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
