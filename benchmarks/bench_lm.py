"""Throughput of the RLHF path: tokens/s of the text rollout (sampling with the KV cache, the reference
and reward-model passes, rewards) and of one update of VPG, TRPO and PPO, with their peak memory.

    python benchmarks/bench_lm.py                      # CPU, and CUDA when a GPU is present
    python benchmarks/bench_lm.py --devices cpu --iterations 5 --num-sequences 128

Each (device, algorithm) pair runs in its own process, so its peak resident memory (``ru_maxrss``) and
peak CUDA memory (``torch.cuda.max_memory_allocated``) are its own. Weights are random: throughput does
not depend on what the model has learned. Settings are those of ``minippo.lm.rlhf`` (model, T, N and
each algorithm's RLHF hyperparameters) unless overridden. One CPU thread, as the ``minippo`` command uses.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def measure(algo: str, device: str, iterations: int, num_sequences: int, completion_len: int) -> dict:
    from minippo.lm.corpus import Annotator, CharTokenizer, generate_corpus, make_prompts
    from minippo.lm.gpt import GPT, GPTConfig
    from minippo.lm.reward_model import RewardModel
    from minippo.lm.rlhf import RLHFConfig
    from minippo.lm.text_rollout import AdaptiveKLController, GPTActorCritic, TextRollout
    from minippo.rollout import compute_gae
    from minippo.train import ALGORITHMS

    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = RLHFConfig(algo=algo, num_sequences=num_sequences, completion_len=completion_len)
    corpus = generate_corpus(500)
    tokenizer = CharTokenizer.from_text(corpus)
    prompts = make_prompts(corpus, tokenizer, config.prompt_chars).to(device)
    reference = GPT(GPTConfig(tokenizer.vocab_size, **config.model)).to(device).eval().requires_grad_(False)
    reward_model = RewardModel(reference).eval().requires_grad_(False)
    policy = GPTActorCritic(reference)
    cls = ALGORITHMS[algo][0]
    algorithm = cls(policy, config.algorithm_config(), seed=0)
    source = TextRollout(prompts, reference, reward_model, tokenizer, Annotator(corpus), num_sequences,
                         completion_len, AdaptiveKLController(config.beta), seed=0)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rollout_s = update_s = 0.0
    for i in range(iterations + 1):  # the first iteration warms up and is not timed
        sync()
        t0 = time.perf_counter()
        batch = source.collect(policy)
        sync()
        t1 = time.perf_counter()
        batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                      batch.dones, config.gamma, config.gae_lambda)
        algorithm.update(batch, progress=i / (iterations + 1))
        sync()
        t2 = time.perf_counter()
        if i > 0:
            rollout_s += t1 - t0
            update_s += t2 - t1
    tokens = iterations * num_sequences * completion_len
    return {"device": device, "algo": algo, "rollout_tokens_per_s": tokens / rollout_s,
            "update_tokens_per_s": tokens / update_s,
            "iteration_s": (rollout_s + update_s) / iterations,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", help="default: cpu, plus cuda when available")
    parser.add_argument("--algos", nargs="+", default=["vpg", "trpo", "ppo"])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    parser.add_argument("--num-sequences", type=int, default=64, help="N (default: 64, as minippo rlhf)")
    parser.add_argument("--completion-len", type=int, default=48, help="T (default: 48)")
    parser.add_argument("--one", nargs=2, metavar=("ALGO", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.iterations, args.num_sequences,
                                 args.completion_len)))
        return 0

    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        for algo in args.algos:
            out = subprocess.run([sys.executable, __file__, "--one", algo, device, "--iterations",
                                  str(args.iterations), "--num-sequences", str(args.num_sequences),
                                  "--completion-len", str(args.completion_len)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{device} {algo}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"N={args.num_sequences} sequences × T={args.completion_len} tokens per batch, "
          f"{args.iterations} timed iterations, torch {torch.__version__}, 1 CPU thread")
    print(f"{'device':8s}{'algo':6s}{'rollout tok/s':>15s}{'update tok/s':>14s}{'s/iteration':>13s}"
          f"{'peak RSS MiB':>14s}{'peak CUDA MiB':>15s}")
    for r in rows:
        cuda = f"{r['peak_cuda_mib']:.0f}" if r["peak_cuda_mib"] is not None else "-"
        print(f"{r['device']:8s}{r['algo']:6s}{r['rollout_tokens_per_s']:15.0f}{r['update_tokens_per_s']:14.0f}"
              f"{r['iteration_s']:13.2f}{r['peak_rss_mib']:14.0f}{cuda:>15s}")
    return 0 if len(rows) == len(devices) * len(args.algos) else 1


if __name__ == "__main__":
    sys.exit(main())
