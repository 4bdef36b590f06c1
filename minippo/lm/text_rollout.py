"""Text as a rollout source: the GPT policy with a value head, the text batch, and the collector that
turns prompts into a ``[T, N]`` batch the unchanged VPG / TRPO / PPO updates train on.

Symbols (as in ``minippo.rollout``):

    T   generated tokens per sequence (the "time" axis)
    N   sequences per batch
    P   prompt tokens (the end-of-text token, then the first characters of a document)
    n   sequences in a minibatch

A *step* t is one generated token: the observation s_t is the prompt plus the tokens before it, the
action a_t the token chosen. The episode is the *response*: it ends at the first end-of-text token,
which is its last action (or at token T if there is none). Sampling runs on to T tokens for every
sequence of the batch at once, but the tokens after the end are not transitions: the reward model never
reads them, so they get ``valid = False`` and are left out of every loss, statistic and KL, as in TRL
and Huang et al. 2024 ("The N+ Implementation Details of RLHF with PPO", §"EOS trick" and masking).

The per-token reward is the KL-penalised objective of InstructGPT (Ouyang et al. 2022, §3.5 eq. 2;
first in Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", eq. 2)::

    r_t = −β (log π(a_t|s_t) − log π_ref(a_t|s_t))        for every response token, t ≤ end
        + r_φ(x, y)                                       added at the response's last token, t = end

so the return of a sequence is r_φ(x, y) − β Σ_{t ≤ end} log(π/π_ref): the reward-model score minus β
times a one-sample estimate of KL(π ‖ π_ref) over the response.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Categorical

from ..errors import MinippoError, check_range
from ..rollout import Batch, Minibatch, shuffled_chunks
from .corpus import Annotator, CharTokenizer, document_text
from .gpt import GPT, sample
from .reward_model import RewardModel, response_ends


class GPTActorCritic(nn.Module):
    """The policy: a GPT (π) plus ``value_head``, a small MLP giving V(s_t) from the hidden state at each
    position.

    The value head reads the hidden states *detached*: the value loss trains only the head and never
    moves the language model, so PPO's joint loss and VPG/TRPO's separate value fits behave alike, and a
    poor early value estimate cannot damage the pretrained text distribution. Parameter names follow
    the convention VPG and TRPO split on: ``value_head.*`` is the value function, ``gpt.*`` the policy.

    Dropout is switched off in the copy: the policy-gradient algorithms need π_θ(a|s) to be exactly the
    distribution the tokens were sampled from.

    Args:
        gpt: the pretrained model; deep-copied, so the caller's copy stays the frozen reference.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = copy.deepcopy(gpt).requires_grad_(True)  # trainable even if ``gpt`` is the frozen π_ref
        for module in self.gpt.modules():  # the ratio π_θ/π_old must compare the sampling distribution
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        d = gpt.config.n_embd
        self.value_head = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1))
        nn.init.zeros_(self.value_head[2].weight)  # V ≡ 0 at first: returns are centred near 0
        nn.init.zeros_(self.value_head[2].bias)
        self.value_head.to(next(gpt.parameters()).device)

    def forward_completion(self, tokens: Tensor, completion_len: int) -> tuple[Tensor, Tensor]:
        """Logits ``[n, T, V]`` for each generated token and values ``[n, T]`` of the states it was chosen
        in, for whole sequences ``tokens`` ``[n, P + T]``, in one forward pass."""
        logits, hidden = self.gpt(tokens[:, :-1])  # position i predicts token i + 1
        first = tokens.shape[1] - completion_len - 1  # the position that predicts the first generated token
        values = self.value_head(hidden[:, first:].detach()).squeeze(-1)
        return logits[:, first:], values

    def evaluate(self, mb: Minibatch) -> tuple[Categorical, Tensor]:
        """``(π(·|s_t), V(s_t))`` for a minibatch of whole sequences, with gradient.

        ``mb.obs`` is ``[n, P + T]`` token ids and ``mb.actions`` ``[T, n]``; the distribution's batch
        shape and the values are ``[T, n]``, like the actions."""
        logits, values = self.forward_completion(mb.obs, mb.actions.shape[0])
        return Categorical(logits=logits.transpose(0, 1), validate_args=False), values.transpose(0, 1)

    def values(self, mb: Minibatch) -> Tensor:
        """V(s_t) ``[T, n]`` for a minibatch of whole sequences (value fitting in VPG/TRPO)."""
        return self.evaluate(mb)[1]


@dataclass
class TextBatch(Batch):
    """A :class:`minippo.rollout.Batch` of ``N`` generated sequences of ``T`` tokens.

    The ``[T, N]`` fields mean what they mean for Gymnasium, one column per sequence: ``dones`` is 1 at
    the response's last token (its end-of-text token, or token T − 1 if it has none) and
    ``next_values`` 0 there, since the episode ends; ``valid`` is False after that token (padding, not
    transitions). One field differs: ``obs`` holds each sequence once, as ``[N, P + T]`` token ids
    (prompt and completion), not one prefix per step; the policy recovers every prefix from it in a
    single causal forward pass.

    Minibatches are made of whole sequences, so that one forward pass evaluates all their tokens; their
    ``mask`` is ``valid``, so that every mean an algorithm takes is over response tokens only.
    """

    def all(self) -> Minibatch:
        """Every sequence: obs ``[N, P + T]``, the other fields and ``mask`` ``[T, N]``."""
        if self.advantages is None or self.returns is None:
            raise RuntimeError("Batch.advantages/returns are not set: call compute_gae first.")
        return Minibatch(self.obs, self.actions, self.log_probs, self.values, self.advantages, self.returns,
                         self.valid, self.ref_log_probs)

    def minibatches(self, minibatch_size: int, generator: torch.Generator | None = None
                    ) -> Iterator[Minibatch]:
        """Shuffle the sequences and yield ``max(1, N // n)`` minibatches of ``n = max(1, minibatch_size
        // T)`` whole sequences, the remainder joining the last one (``minibatch_size`` counts token
        positions, as it counts transitions for Gymnasium): obs ``[n, P + T]``, the other fields and
        ``mask`` ``[T, n]``. One pass is one epoch."""
        data = self.all()
        T, N = self.actions.shape
        per_minibatch = max(1, minibatch_size // T)
        if per_minibatch >= N:
            yield data
            return
        for idx in shuffled_chunks(N, per_minibatch, generator, self.actions.device):
            yield Minibatch(data.obs[idx], *(None if x is None else x[:, idx] for x in (
                data.actions, data.log_probs, data.values, data.advantages, data.returns, data.mask,
                data.ref_log_probs)))


def response_mask(ends: Tensor, num_steps: int) -> Tensor:
    """``[T, N]`` bool, True at the steps of each response: ``t ≤ ends[i]`` for ``ends`` ``[N]``, the
    step index (0 … T−1) of each response's last token. The steps after it are padding."""
    steps = torch.arange(num_steps, device=ends.device).unsqueeze(1)  # [T, 1]
    return steps <= ends.unsqueeze(0)


def kl_penalised_rewards(log_probs: Tensor, ref_log_probs: Tensor, scores: Tensor, ends: Tensor,
                         beta: float) -> Tensor:
    """Per-token rewards of InstructGPT's objective (eq. 2), ``[T, N]``:

        r_t = −β (log π(a_t|s_t) − log π_ref(a_t|s_t)),  plus scores[i] at t = ends[i]   for t ≤ ends[i]
        r_t = 0                                                                         for t > ends[i]

    Args:
        log_probs, ref_log_probs: ``[T, N]`` log-probabilities of the sampled tokens under the policy
            and the frozen reference. scores: ``[N]`` reward-model scores. ends: ``[N]`` step index
            (0 … T−1) of each response's last token. beta: β ≥ 0, the KL coefficient.

    Summed over t, a sequence's rewards are ``scores − β Σ_{t ≤ end} (log π − log π_ref)``: the tokens
    after the end of the response carry no reward and no penalty.
    """
    rewards = torch.where(response_mask(ends, log_probs.shape[0]), -beta * (log_probs - ref_log_probs), 0.0)
    rewards[ends, torch.arange(rewards.shape[1], device=rewards.device)] += scores
    return rewards


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (§2.2): after each batch,

        e = clip(KL / KL_target − 1, −0.2, 0.2),   β ← β (1 + K_β e)

    so β grows while the policy is farther than ``target`` nats from the reference and shrinks while it
    is closer. KL is the batch's mean Σ_{t ≤ end} log(π/π_ref) over each response.

    Args:
        beta: initial β. target: KL_target in nats per sequence, or ``None`` for a fixed β.
        horizon_gain: K_β (Ziegler et al. use 0.1).
    """

    def __init__(self, beta: float, target: float | None = None, horizon_gain: float = 0.1):
        check_range("beta", beta, 0)
        if target is not None:
            check_range("kl_target", target, 0, low_inclusive=False)
        self.beta, self.target, self.horizon_gain = beta, target, horizon_gain

    def update(self, kl: float) -> None:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.beta *= 1.0 + self.horizon_gain * error


class TextRollout:
    """The text rollout source: prompts → completions sampled from the policy → a :class:`TextBatch`.

    Every call draws ``N`` prompts at random, samples ``T`` tokens after each from the current policy at
    temperature 1 (so the log-probabilities are on-policy), scores each response (the completion up to
    and including its first end-of-text token) with the reward model, and builds the KL-penalised
    rewards against the frozen reference. The episode ends at the end-of-text token: the tokens after
    it are marked ``valid = False`` and take no part in the update or in any KL.

    A response with no end-of-text token within T tokens is scored as it is, by default, and its episode
    ends at token T (the reward model reads it like any other response). With ``no_eos_score`` set, it
    gets that fixed score instead, the "EOS trick" of Huang et al. 2024 (they use −1 on a normalised
    reward model): the policy then learns to finish its responses.

    ``batch.info`` (logged per iteration) holds: ``rm_score`` (mean reward-model score, after any
    no-EOS replacement), ``gold_reward`` (mean annotator score, never used for training), ``kl_ref``
    (mean Σ_{t ≤ end} log π/π_ref, nats per response), ``kl_ref_exact`` (mean Σ_{t ≤ end}
    KL(π(·|s_t) ‖ π_ref(·|s_t)), the same divergence without the sampling noise of the per-token terms),
    ``beta`` (β used for this batch), ``token_entropy`` (nats per response token), ``response_length``
    (tokens, the end-of-text token included), ``eos_fraction`` (share of responses that ended with an
    end-of-text token within T).

    Args:
        prompts: ``[M, P]`` token ids on the device (:func:`minippo.lm.corpus.make_prompts`).
        reference: the frozen pretrained GPT, π_ref. reward_model: the trained :class:`RewardModel`.
        tokenizer, annotator: to decode responses and compute the gold reward for logging.
        num_sequences: N. completion_len: T. kl: the β controller.
        seed: seeds prompt choice and sampling.
        no_eos_score: None, or the score (reward-model units) given to responses without an end-of-text
            token.
        group_size: k, completions sampled per prompt: the batch holds N / k prompts, each repeated in
            k consecutive columns, as the group baselines of RLOO and GRPO need
            (:class:`minippo.rollout.GroupBaseline`). 1 (the default): N prompts drawn independently.

    Raises:
        MinippoError: prompts plus completions do not fit the model's context, N or T < 1, or k does
            not divide N.
    """

    def __init__(self, prompts: Tensor, reference: GPT, reward_model: RewardModel, tokenizer: CharTokenizer,
                 annotator: Annotator, num_sequences: int, completion_len: int, kl: AdaptiveKLController,
                 seed: int = 0, no_eos_score: float | None = None, group_size: int = 1):
        check_range("num_sequences", num_sequences, 1)
        check_range("completion_len", completion_len, 1)
        check_range("group_size", group_size, 1, num_sequences)
        if num_sequences % group_size:
            raise MinippoError(f"group_size={group_size} does not divide num_sequences={num_sequences}: each "
                               "batch holds num_sequences / group_size prompts. Choose a divisor.")
        if prompts.shape[1] + completion_len > reference.config.block_size:
            raise MinippoError(f"Prompts of {prompts.shape[1]} tokens plus completions of {completion_len} "
                               f"do not fit the model's context of {reference.config.block_size} tokens.")
        self.prompts, self.reference, self.reward_model = prompts, reference, reward_model
        self.tokenizer, self.annotator, self.kl = tokenizer, annotator, kl
        self.num_sequences, self.completion_len = num_sequences, completion_len
        self.no_eos_score, self.group_size = no_eos_score, group_size
        self.generator = torch.Generator(device=prompts.device).manual_seed(seed)

    @torch.no_grad()
    def generate(self, policy: GPTActorCritic, prompts: Tensor) -> tuple[Tensor, Tensor]:
        """Sample completions: ``(tokens [n, P + T], log_probs [T, n])``."""
        was_training = policy.training
        policy.eval()  # no dropout while acting
        tokens, log_probs = sample(policy.gpt, prompts, self.completion_len, self.generator)
        policy.train(was_training)
        return tokens, log_probs.T

    def documents(self, tokens: Tensor) -> list[str]:
        """What the annotator reads in each sequence of ``tokens`` ``[n, P + T]``: prompt and response."""
        return [document_text(self.tokenizer, row) for row in tokens]

    @torch.no_grad()
    def collect(self, policy: GPTActorCritic) -> TextBatch:
        """One batch of ``N`` sequences of ``T`` generated tokens, ``N / k`` prompts each sampled ``k``
        times (see the class docstring); then the
        adaptive β, if any, is updated with this batch's KL."""
        k = self.group_size  # N / k prompts, each in k consecutive columns
        which = torch.randint(len(self.prompts), (self.num_sequences // k,), generator=self.generator,
                              device=self.prompts.device).repeat_interleave(k)
        tokens, _ = self.generate(policy, self.prompts[which])
        batch = self.batch_from_tokens(policy, tokens)
        self.kl.update(batch.info["kl_ref"])
        return batch

    @torch.no_grad()
    def batch_from_tokens(self, policy: GPTActorCritic, tokens: Tensor) -> TextBatch:
        """The :class:`TextBatch` of sequences ``tokens`` ``[N, P + T]`` (prompts with completions of
        ``T = completion_len`` tokens), with the current β.

        The log-probabilities log π_old are those of one full forward pass of ``policy`` (the same
        computation the update repeats, so the probability ratio starts at exactly 1); they equal the
        sampling ones up to rounding. Everything after each response's end depends on nothing but the
        tokens up to it: changing the tokens after the end changes no reward, value, KL or loss."""
        T, N = self.completion_len, tokens.shape[0]
        P = tokens.shape[1] - T
        actions = tokens[:, P:].T  # [T, N]

        logits, values = policy.forward_completion(tokens, T)
        values = values.T  # [T, N]
        log_probs_all = F.log_softmax(logits, dim=-1).transpose(0, 1)  # [T, N, V]
        log_probs = log_probs_all.gather(2, actions.unsqueeze(-1)).squeeze(-1)  # [T, N]
        ref_logits, _ = self.reference(tokens[:, :-1])
        ref_log_probs_all = F.log_softmax(ref_logits[:, P - 1:], dim=-1).transpose(0, 1)
        ref_log_probs = ref_log_probs_all.gather(2, actions.unsqueeze(-1)).squeeze(-1)

        ends = response_ends(tokens, P, self.tokenizer.eot_id)  # [N], index into tokens
        has_eos = tokens[torch.arange(N, device=tokens.device), ends] == self.tokenizer.eot_id
        scores = self.reward_model(tokens, ends)
        if self.no_eos_score is not None:
            scores = torch.where(has_eos, scores, torch.full_like(scores, self.no_eos_score))
        beta = self.kl.beta
        rewards = kl_penalised_rewards(log_probs, ref_log_probs, scores, ends - P, beta)

        # The response's last token is terminal: done there, and nothing to bootstrap from.
        valid = response_mask(ends - P, T)  # [T, N]
        last = torch.zeros_like(valid)
        last[ends - P, torch.arange(N, device=tokens.device)] = True
        dones = last.float()
        next_values = torch.where(valid & ~last, torch.cat([values[1:], torch.zeros_like(values[:1])]), 0.0)

        documents = self.documents(tokens)
        gold = [self.annotator.gold_reward(d) for d in documents]
        kl_per_token = torch.where(valid, log_probs - ref_log_probs, 0.0)  # [T, N]
        kl_sequence = kl_per_token.sum(0)  # [N]
        kl_exact = (log_probs_all.exp() * (log_probs_all - ref_log_probs_all)).sum(-1)  # [T, N]
        entropy = -(log_probs_all.exp() * log_probs_all).sum(-1)  # [T, N]
        lengths = ends - P + 1
        info = {"rm_score": float(scores.mean()), "gold_reward": sum(gold) / N,
                "kl_ref": float(kl_sequence.mean()),
                "kl_ref_exact": float(torch.where(valid, kl_exact, 0.0).sum() / N),
                "beta": beta, "token_entropy": float(entropy[valid].mean()),
                "response_length": float(lengths.float().mean()),
                "eos_fraction": float(has_eos.float().mean())}
        return TextBatch(obs=tokens, actions=actions, log_probs=log_probs, values=values, rewards=rewards,
                         dones=dones, next_values=next_values, valid=valid, ref_log_probs=ref_log_probs,
                         episode_returns=rewards.sum(0).tolist(), episode_lengths=lengths.tolist(),
                         info=info)
