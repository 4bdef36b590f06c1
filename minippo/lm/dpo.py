"""Direct Preference Optimization, DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your
Language Model is Secretly a Reward Model").

RLHF maximises E[r(x, y)] − β KL(π ‖ π_ref). That objective has a closed-form optimum (eq. 4),

    π*(y | x) = π_ref(y | x) exp(r(x, y) / β) / Z(x),

so a policy defines the reward it is optimal for: r(x, y) = β log π(y | x)/π_ref(y | x) + β log Z(x)
(eq. 5). Put that reward into the Bradley–Terry likelihood of the preference pairs (the loss the reward
model is trained with): Z(x) cancels in the difference of the two completions of one prompt, and what is
left is a loss on the policy itself (eq. 7)::

    L_DPO(π) = −E_(x, y_w, y_l) log σ( β log π(y_w|x)/π_ref(y_w|x) − β log π(y_l|x)/π_ref(y_l|x) )

No reward model and no sampling while training: DPO is fitted offline, by Adam, to the very pairs the
reward model learned from (:func:`minippo.lm.reward_model.preference_data`: noisy labels, completions
of π_ref), with the β of the RL runs' KL penalty. ``β log π(y|x)/π_ref(y|x)`` is its *implicit reward*;
its held-out accuracy on the pairs can be compared with the reward model's. After training, the policy
is sampled and measured like every other (gold reward, reward-model score, KL(π ‖ π_ref)).

Symbols: ``n`` sequences or pairs, ``P`` prompt tokens, ``T`` completion tokens, ``L = P + T``.
log π(y | x) is a sum over the response's tokens, up to and including its end-of-text token, in nats.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..errors import NonFiniteLossError, check_range
from ..logger import CSVLogger, save_checkpoint, write_json
from .gpt import GPT
from .reward_model import PreferencePairs, preference_data
from .rlhf import Stages, log_before_after  # rlhf.py imports this module only inside a function
from .text_rollout import response_mask


def sequence_log_probs(model: GPT, tokens: Tensor, prompt_len: int, ends: Tensor) -> Tensor:
    """log π(y | x) = Σ_{t ≤ end} log π(y_t | x, y_<t) of each response, in nats, from one forward pass.

    The sum runs over the response tokens up to and including the end-of-text token; the tokens after it
    (sampling went on past the end) are left out, exactly as the RL code's
    :func:`minippo.lm.text_rollout.response_mask` leaves them out of the losses and of the KL.

    Args:
        model: the GPT (π or π_ref); gradients flow unless called under ``torch.no_grad()``.
        tokens: ``[n, L]`` prompts with their completions. prompt_len: P.
        ends: ``[n]`` index into ``tokens`` of each response's last token
            (:func:`minippo.lm.reward_model.response_ends`).

    Returns:
        ``[n]`` log-probabilities, nats.
    """
    logits, _ = model(tokens[:, :-1])  # logits[:, i] predicts token i + 1
    T = tokens.shape[1] - prompt_len
    log_probs = F.log_softmax(logits[:, prompt_len - 1:], dim=-1).gather(2, tokens[:, prompt_len:, None])
    in_response = response_mask(ends - prompt_len, T).T  # [n, T]
    return torch.where(in_response, log_probs.squeeze(-1), 0.0).sum(1)


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor,
             beta: float) -> tuple[Tensor, dict[str, float]]:
    """The DPO loss (Rafailov et al. 2023, eq. 7), averaged over the pairs::

        margin = β [log π(y_w) − log π_ref(y_w)] − β [log π(y_l) − log π_ref(y_l)]
        loss   = mean( −log σ(margin) )

    Its gradient with respect to log π(y_w) of one pair is −β σ(−margin) / n (and the opposite for
    y_l): pairs the implicit reward already orders by a wide margin stop pulling (Rafailov et al. §4,
    "What does the DPO update do?"). With π = π_ref
    every margin is 0 and the loss is log 2.

    Args:
        policy_chosen, policy_rejected: ``[n]`` log π of the preferred (y_w) and the other (y_l)
            completion of each pair (:func:`sequence_log_probs`), nats. ref_chosen, ref_rejected: ``[n]``
            the same under the frozen π_ref. beta: β > 0, the KL coefficient.

    Returns:
        ``(loss, stats)``: the scalar loss (nats per pair) and floats ``accuracy`` (share of pairs with a
        positive margin: the implicit reward β log π/π_ref prefers y_w), ``margin`` (mean), and
        ``chosen_reward`` / ``rejected_reward`` (mean implicit rewards of y_w and y_l).
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    margins = chosen_rewards - rejected_rewards
    loss = -F.logsigmoid(margins).mean()
    stats = {"accuracy": (margins > 0).float().mean().item(), "margin": margins.mean().item(),
             "chosen_reward": chosen_rewards.mean().item(), "rejected_reward": rejected_rewards.mean().item()}
    return loss, stats


@dataclass
class DPOConfig:
    """DPO's hyperparameters, with typical ranges. β is not one of them: it is the KL coefficient of the
    RLHF setting (``RLHFConfig.beta``), passed to :func:`run_dpo`, so that DPO and the RL methods aim at
    the same objective.

    learning_rate   Adam step size (3e-6 – 1e-4).
    epochs          passes over the training pairs (1 – 3).
    batch_size      pairs per Adam step (16 – 128).
    max_grad_norm   the gradient's norm is clipped to this (0.5 – 5).

    The policy drifts from π_ref fast: the defaults stop early. Measured on the default
    :class:`minippo.lm.rlhf.RLHFConfig` (seed 0, CPU; 4000 training pairs, 63 steps per epoch; π_ref
    has gold reward −0.04), gold reward and KL(π ‖ π_ref) in nats of 512 samples after DPO:

    ===========================  ======  ======  ======  ======  ======
    β                             1       0.3     0.1     0.03    0.01
    lr 1e-5, 2 epochs (default)  0.74    0.95    0.89    0.55    0.45
    its KL                       0.4     1.0     1.9     4.3     5.0
    ===========================  ======  ======  ======  ======  ======

    At β = 0.1: 1 epoch, 0.58 (KL 0.3); 3 epochs, 0.36 (KL 6.5); lr 2e-5 for 2 epochs, 0.39 (KL 6.5);
    lr 3e-5 for 1 epoch, 0.36 (KL 6.0). Past about two epochs the implicit reward overfits the noisy
    pairs: its held-out agreement with gold falls (0.87 after the first epoch, 0.83 after the third)
    while the KL grows and the gold reward of the samples drops.
    """

    learning_rate: float = 1e-5
    epochs: int = 2
    batch_size: int = 64
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)
        check_range("epochs", self.epochs, 1, integer=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_inclusive=False)


def pair_log_probs(model: GPT, pairs: PreferencePairs, prompt_len: int, chunk: int = 256
                   ) -> tuple[Tensor, Tensor]:
    """``(log π(y_w), log π(y_l))``, each ``[n]`` nats, of the chosen and rejected completions of
    ``pairs`` (:func:`sequence_log_probs`): one forward pass over both completions of ``chunk`` pairs at a
    time (memory)."""
    chosen, rejected = [], []
    for i in range(0, len(pairs), chunk):
        part = pairs[i:i + chunk]
        both = sequence_log_probs(model, torch.cat([part.chosen, part.rejected]), prompt_len,
                                  torch.cat([part.chosen_ends, part.rejected_ends]))
        chosen.append(both[:len(part)])
        rejected.append(both[len(part):])
    return torch.cat(chosen), torch.cat(rejected)


@torch.no_grad()
def held_out_stats(policy: GPT, pairs: PreferencePairs, ref_chosen: Tensor, ref_rejected: Tensor,
                   prompt_len: int, beta: float) -> dict[str, float]:
    """The DPO loss and the implicit reward's accuracy on ``pairs`` (held out): ``loss`` (nats per pair),
    ``accuracy`` (agreement with the noisy labels), ``gold_accuracy`` (with the noiseless gold ordering,
    gold ties excluded: what :func:`minippo.lm.reward_model.pairwise_accuracy` reports of the reward
    model) and ``margin``. ``ref_chosen``, ``ref_rejected``: ``[n]`` log π_ref of the pairs."""
    chosen, rejected = pair_log_probs(policy, pairs, prompt_len)
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    margins = beta * (chosen - ref_chosen) - beta * (rejected - ref_rejected)
    differ = pairs.chosen_gold != pairs.rejected_gold
    agrees = (margins > 0) == (pairs.chosen_gold > pairs.rejected_gold)
    return {"loss": loss.item(), "accuracy": stats["accuracy"],
            "gold_accuracy": agrees[differ].float().mean().item() if differ.any() else math.nan,
            "margin": stats["margin"]}


def run_dpo(stages: Stages, config: DPOConfig, beta: float, run_dir: str | Path, seed: int = 0,
            show_progress: bool = True, log: Callable | None = print) -> dict:
    """Fine-tune a copy of π_ref with DPO on the reward model's preference pairs, measure it, and write
    the run folder (which the caller creates).

    The pairs are :func:`minippo.lm.reward_model.preference_data` of the stages' settings (the reward
    model's ``num_pairs`` training pairs and its held-out quarter, drawn with ``stages.config.seed``).
    π_ref stays frozen; its log-probabilities of every pair are computed once. The policy is a trainable
    copy of it, in eval mode (no dropout, so that π = π_ref at the start), trained by Adam on shuffled
    minibatches (order seeded by ``seed``) with the gradient norm clipped.

    ``run_dir`` receives:

    - ``config.json``: ``rlhf`` (the stages' settings), ``algorithm`` (``config``), ``beta``, ``seed``.
    - ``progress.csv``: one row per Adam step: ``step``, ``epoch``, ``time_s``, the minibatch's ``loss``,
      ``accuracy``, ``margin``, ``chosen_reward``, ``rejected_reward`` (:func:`dpo_loss`), ``grad_norm``
      (before clipping), and at the last step of each epoch ``val_loss``, ``val_accuracy``,
      ``val_gold_accuracy`` on the held-out pairs (:func:`held_out_stats`; empty on the other rows).
    - ``checkpoint.pt`` after each epoch: ``policy`` (the GPT's state_dict; no value head), ``optimizer``,
      ``epoch``, ``step``, ``config`` (as in ``config.json``), ``vocab``, ``gpt_config``.
    - ``summary.json`` in the shape of an RL run's (:func:`minippo.lm.rlhf.run_rlhf`): ``algo`` = "dpo",
      ``beta``, ``epochs`` and ``steps`` done, ``status`` ("finished", or "interrupted" after Ctrl-C:
      the policy as it then is is still measured), ``pretrain`` and ``reward_model`` (the stages' statistics),
      ``before`` = ``stages.evaluate(π_ref)``, ``after`` = ``stages.evaluate(π)`` (RM score, gold
      reward, KL(π ‖ π_ref) of 512 samples), ``held_out`` (:func:`held_out_stats` at the end),
      ``samples_before`` / ``samples_after``, ``train_time_s`` and ``total_time_s``.

    Returns:
        the summary.

    Raises:
        MinippoError: β ≤ 0.
        NonFiniteLossError: the loss became NaN or infinite; no step is taken with it, and the checkpoint
            of the last finished epoch (if any) is kept.
    """
    start = time.perf_counter()
    check_range("beta", beta, 0, low_inclusive=False)
    run_dir = Path(run_dir)
    settings, reference = stages.config, stages.reference
    P = stages.prompts.shape[1]
    train, val = preference_data(reference, stages.prompts, stages.tokenizer, stages.annotator,
                                 settings.completion_len, settings.reward, settings.seed)
    with torch.no_grad():  # π_ref is frozen: its log-probabilities of the pairs never change
        ref_train, ref_val = pair_log_probs(reference, train, P), pair_log_probs(reference, val, P)

    policy = copy.deepcopy(reference).requires_grad_(True).eval()  # eval: no dropout, π = π_ref at step 0
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    config_dict = {"rlhf": dataclasses.asdict(settings), "algorithm": dataclasses.asdict(config),
                   "beta": beta, "seed": seed}
    write_json(run_dir / "config.json", {**config_dict, "device_used": str(stages.device),
                                         "torch": torch.__version__})
    before, samples_before = stages.evaluate(reference), stages.show(reference)

    generator = torch.Generator().manual_seed(seed)  # minibatch order
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    logger = CSVLogger(run_dir / "progress.csv")
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="dpo", unit="step", disable=not show_progress,
               dynamic_ncols=True)
    status, step, epochs_done, train_start = "finished", 0, 0, time.perf_counter()
    no_val = {"val_loss": math.nan, "val_accuracy": math.nan, "val_gold_accuracy": math.nan}
    try:
        for epoch in range(1, config.epochs + 1):
            order = torch.randperm(len(train), generator=generator).to(stages.device)
            for i in range(0, len(train), config.batch_size):
                idx = order[i:i + config.batch_size]
                loss, stats = dpo_loss(*pair_log_probs(policy, train[idx], P), ref_train[0][idx],
                                       ref_train[1][idx], beta)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"The DPO loss is {loss.item()} at step {step + 1} (epoch {epoch}); no step was "
                        f"taken with it. Lower the learning rate (now {config.learning_rate:g}) or raise β.")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                step += 1
                row = {"step": step, "epoch": epoch, "time_s": round(time.perf_counter() - train_start, 3),
                       "loss": loss.item(), **stats, "grad_norm": grad_norm.item(), **no_val}
                if i + config.batch_size >= len(train):  # the epoch's last step: measure on held-out pairs
                    held_out = held_out_stats(policy, val, *ref_val, P, beta)
                    row.update(val_loss=held_out["loss"], val_accuracy=held_out["accuracy"],
                               val_gold_accuracy=held_out["gold_accuracy"])
                logger.log(row)
                bar.set_postfix(epoch=epoch, loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}",
                                refresh=False)
                bar.update(1)
            save_checkpoint(run_dir / "checkpoint.pt", {
                "epoch": epoch, "step": step, "policy": policy.state_dict(),
                "optimizer": optimizer.state_dict(), "config": config_dict, "vocab": stages.tokenizer.chars,
                "gpt_config": dataclasses.asdict(reference.config)})
            epochs_done = epoch
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        bar.close()
        logger.close()
    train_time = time.perf_counter() - train_start

    after, samples_after = stages.evaluate(policy), stages.show(policy)
    summary = {"algo": "dpo", "beta": beta, "epochs": epochs_done, "steps": step, "status": status,
               "pretrain": stages.pretrain_stats, "reward_model": stages.reward_stats,
               "before": before, "after": after, "held_out": held_out_stats(policy, val, *ref_val, P, beta),
               "train_time_s": train_time, "total_time_s": time.perf_counter() - start,
               "samples_before": samples_before, "samples_after": samples_after}
    write_json(run_dir / "summary.json", summary)
    if log:
        log_before_after(log, ("π_ref", "after DPO"), before, after, samples_before, samples_after)
        h = summary["held_out"]
        log(f"implicit reward on {len(val)} held-out pairs: accuracy vs labels {h['accuracy']:.3f}, vs gold "
            f"{h['gold_accuracy']:.3f} (reward model: {stages.reward_stats['val_accuracy']:.3f} vs gold)")
        log(f"total time {summary['total_time_s']:.0f} s (DPO {train_time:.0f} s); run folder: {run_dir}")
    return summary
