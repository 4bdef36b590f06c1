"""Best-of-n sampling: alignment with no training at all (Stiennon et al. 2020, "Learning to summarize
from human feedback"; Nakano et al. 2021, WebGPT; Gao, Schulman and Hilton 2022, "Scaling Laws for
Reward Model Overoptimization", §2).

For each prompt x, draw n completions from the reference policy π_ref, score them with the reward model
r, and keep the best::

    y_1, …, y_n ~ π_ref(· | x)             n independent samples
    y*  = y_j  with  j = argmax_j r(x, y_j)   ties: the first one drawn

The kept completion follows a new policy, π_bon: the baseline every fine-tuning method should beat at
equal KL. It trains nothing and costs n samples and n reward-model scores per prompt at inference; n
alone bounds how far it moves from π_ref, with no sample needed to say how far:

    KL(π_bon ‖ π_ref) ≤ log n − (n − 1)/n   nats     (:func:`best_of_n_kl`: the usual formula, a bound)

Symbols: ``B`` prompts, ``n`` candidates per prompt, ``P`` prompt tokens, ``T`` completion tokens,
``L = P + T``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import check_range
from ..logger import write_json
from .corpus import document_text
from .gpt import GPT, sample
from .reward_model import RewardModel, response_ends

# rlhf.py imports this module only inside a function, so importing it here is not circular. Its evaluation
# settings make best-of-n with n = 1 draw the very completions Stages.evaluate and Stages.show draw.
from .rlhf import EVAL_SAMPLES, EVAL_SEED, SHOW_PROMPTS, SHOW_SEED, Stages, log_before_after


def best_of_n_kl(n: int) -> float:
    """KL(π_bon ‖ π_ref) = log n − (n − 1)/n, in nats per completion, of best-of-n sampling.

    The formula used by Stiennon et al. 2020 (appendix) and Gao et al. 2022 (§2). Beirami et al. 2024
    ("Theoretical guarantees on the best-of-n alignment policy", arXiv:2401.01879, §3) show that it is an
    *upper bound*: exact only in the limit where no two completions get the same reward and each has a
    vanishing probability (a continuous reward distribution). With a few likely outcomes it overstates the
    KL: for two equally likely completions of different reward the true value stays below log 2 for
    every n, while the formula grows like log n. The bound holds per prompt, so also for the mean over
    prompts that ``kl_ref`` reports elsewhere. n = 1 gives 0; n = 16, 1.84; n = 64, 3.17.

    Raises:
        MinippoError: ``n`` is not an int ≥ 1.
    """
    check_range("n", n, 1, integer=True)
    return math.log(n) - (n - 1) / n


@dataclass
class BestOfNConfig:
    """Best-of-n's settings, with typical ranges.

    n            completions drawn from π_ref per prompt, of which the reward model's favourite is kept
                 (1 – 256; 1 is π_ref itself). The KL from π_ref is log n − (n − 1)/n nats: 1.84 at 16.
    chunk_size   completions sampled and scored at once (512 – 8192), for memory. It changes which
                 completions are drawn (the random numbers are grouped by chunk), not their distribution;
                 two runs draw the same completions when their chunks are the same, or both hold all
                 512·n of an evaluation.
    """

    n: int = 16
    chunk_size: int = 4096

    def __post_init__(self):
        check_range("n", self.n, 1, integer=True)
        check_range("chunk_size", self.chunk_size, 1, integer=True)


@torch.no_grad()
def best_of_n(reference: GPT, reward_model: RewardModel | Callable, prompts: Tensor, n: int,
              completion_len: int, eot_id: int, generator: torch.Generator | None = None,
              chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Best-of-n completions of ``prompts``: n samples each from ``reference`` (π_ref), the one with the
    highest reward-model score kept; ties go to the first one drawn (``torch.argmax``'s rule).

    Candidates are drawn in chunks of about ``chunk_size`` completions (at least one prompt's n): prompt
    ``i``'s candidates are rows ``i·n … i·n + n − 1`` of ``sample(reference, prompts.repeat_interleave(n),
    ...)``, so with n = 1 and ``chunk_size ≥ B`` the result is exactly ``sample(reference, prompts,
    completion_len, generator)``'s tokens.

    Args:
        reference: π_ref, the model sampled from. reward_model: r(tokens ``[B', L]``, ends ``[B']``) →
            scores ``[B']`` (a :class:`minippo.lm.reward_model.RewardModel`), read at each response's
            end (:func:`minippo.lm.reward_model.response_ends`). prompts: ``[B, P]`` token ids on the
            models' device. n: ≥ 1. completion_len: T. eot_id: the end-of-text token.
            generator: on the models' device (None: torch's global RNG).

    Returns:
        ``(tokens [B, L], scores [B])``: each prompt with its kept completion, and that completion's
        reward-model score (the highest of its n).

    Raises:
        MinippoError: ``n`` or ``chunk_size`` is not an int ≥ 1.
    """
    check_range("n", n, 1, integer=True)
    check_range("chunk_size", chunk_size, 1, integer=True)
    P = prompts.shape[1]
    prompts_per_chunk = max(1, chunk_size // n)
    kept_tokens, kept_scores = [], []
    for start in range(0, len(prompts), prompts_per_chunk):
        chunk = prompts[start:start + prompts_per_chunk]
        tokens, _ = sample(reference, chunk.repeat_interleave(n, dim=0), completion_len, generator)
        scores = reward_model(tokens, response_ends(tokens, P, eot_id)).view(len(chunk), n)  # [b, n]
        best = scores.argmax(dim=1)  # the first of equal maxima
        rows = torch.arange(len(chunk), device=prompts.device) * n + best
        kept_tokens.append(tokens[rows])
        kept_scores.append(scores.gather(1, best[:, None]).squeeze(1))
    return torch.cat(kept_tokens), torch.cat(kept_scores)


def evaluate_best_of_n(stages: Stages, config: BestOfNConfig, num_samples: int = EVAL_SAMPLES,
                       seed: int = EVAL_SEED) -> dict[str, float]:
    """What :meth:`minippo.lm.rlhf.Stages.evaluate` measures of a policy, measured of best-of-n on π_ref:
    the same ``num_samples`` prompts (the stages' prompts cycled in order) and the same seed.

    Returns the means over the kept completions of ``rm_score`` (reward-model score, std units),
    ``gold_reward`` (the annotator's, words) and ``response_length`` (tokens up to and including the
    end-of-text token), and ``kl_ref``: the analytic KL(π_bon ‖ π_ref) = log n − (n − 1)/n in nats per
    response (:func:`best_of_n_kl`, an upper bound), not an estimate from samples. With n = 1 the
    completions, and so the scores, gold rewards and lengths, are those of ``stages.evaluate(π_ref)``.

    Raises:
        MinippoError: ``num_samples`` < 1.
    """
    check_range("num_samples", num_samples, 1, integer=True)
    prompts = stages.prompts
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    which = torch.arange(num_samples, device=prompts.device) % len(prompts)
    tokens, scores = best_of_n(stages.reference, stages.reward_model, prompts[which], config.n,
                               stages.config.completion_len, stages.tokenizer.eot_id, generator,
                               config.chunk_size)
    ends = response_ends(tokens, prompts.shape[1], stages.tokenizer.eot_id)
    gold = [stages.annotator.gold_reward(document_text(stages.tokenizer, row)) for row in tokens]
    return {"rm_score": float(scores.mean()), "gold_reward": sum(gold) / len(gold),
            "kl_ref": best_of_n_kl(config.n),
            "response_length": float((ends - prompts.shape[1] + 1).float().mean())}


def show_best_of_n(stages: Stages, config: BestOfNConfig) -> list[tuple[str, float]]:
    """Best-of-n's completion of each of the first six prompts, as :meth:`minippo.lm.rlhf.Stages.show`
    shows a policy's (the same prompts and seed): ``[(document, gold reward), ...]``."""
    prompts = stages.prompts[:min(SHOW_PROMPTS, len(stages.prompts))]
    generator = torch.Generator(device=prompts.device).manual_seed(SHOW_SEED)
    tokens, _ = best_of_n(stages.reference, stages.reward_model, prompts, config.n,
                          stages.config.completion_len, stages.tokenizer.eot_id, generator, config.chunk_size)
    documents = [document_text(stages.tokenizer, row) for row in tokens]
    return [(doc, stages.annotator.gold_reward(doc)) for doc in documents]


def run_best_of_n(stages: Stages, config: BestOfNConfig, run_dir: str | Path,
                  log: Callable | None = print) -> dict:
    """Measure π_ref and best-of-n of it on the same 512 prompts and write the run folder.

    ``run_dir`` (which the caller creates) receives ``config.json`` (``rlhf``: the stages' settings,
    ``algorithm``: ``config``) and ``summary.json`` in the shape of an RL run's (:func:`minippo.lm.rlhf.
    run_rlhf`): ``algo`` = "best-of-n", ``n``, ``status`` = "finished", ``pretrain`` and ``reward_model``
    (the stages' statistics), ``before`` = ``stages.evaluate(π_ref)``, ``after`` =
    :func:`evaluate_best_of_n` (its ``kl_ref`` the analytic value), ``samples_before`` /
    ``samples_after`` (``[(document, gold), ...]`` of the first six prompts) and ``total_time_s``. No
    ``progress.csv`` or ``checkpoint.pt``: nothing is trained.

    Returns:
        the summary.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    write_json(run_dir / "config.json", {"rlhf": dataclasses.asdict(stages.config),
                                         "algorithm": dataclasses.asdict(config),
                                         "device_used": str(stages.device), "torch": torch.__version__})
    before, samples_before = stages.evaluate(stages.reference), stages.show(stages.reference)
    after, samples_after = evaluate_best_of_n(stages, config), show_best_of_n(stages, config)
    summary = {"algo": "best-of-n", "n": config.n, "status": "finished", "pretrain": stages.pretrain_stats,
               "reward_model": stages.reward_stats, "before": before, "after": after,
               "total_time_s": time.perf_counter() - start,
               "samples_before": samples_before, "samples_after": samples_after}
    write_json(run_dir / "summary.json", summary)
    if log:
        log_before_after(log, ("π_ref", f"best of {config.n}"), before, after, samples_before, samples_after)
        log(f"(best-of-n's KL is the analytic bound log n − (n − 1)/n); total time "
            f"{summary['total_time_s']:.0f} s; run folder: {run_dir}")
    return summary
