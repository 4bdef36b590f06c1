"""A reward model learned from pairwise preferences (Bradley–Terry), as in Christiano et al. 2017 and
InstructGPT (Ouyang et al. 2022, §3.5, eq. 1).

Pipeline::

    prompt x ──► two completions y₁, y₂ from the pretrained model
             ──► the hidden annotator prefers y₁ with probability σ((gold(y₁) − gold(y₂)) / τ)
             ──► reward model r(x, y) trained on −log σ(r(x, y_w) − r(x, y_l))

Symbols: ``n`` pairs, ``P`` prompt tokens, ``T`` completion tokens, ``L = P + T``.

What the proxy gets wrong (measured with the default settings on the CPU, held-out accuracy 0.93
against the noiseless gold ordering, 0.91 on the 140 of 1000 held-out pairs whose two texts never occur
in the training pairs): it learns the *sign* of a review far better than the *count* the annotator
sums ("the soup was great." scores 1.14, with a second glowing clause 1.15, gold 1 vs 2), and it has
never seen text far from the pretrained model's, so it rates "the soupffresh." (gold −1) as highly as a
real review (1.14). Attention averages over positions, which makes counting hard for a last-token
readout of a tiny model. RL with a small KL coefficient finds and exploits exactly these gaps
(``minippo.lm.figures``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MinippoError, check_range
from .corpus import Annotator, CharTokenizer, document_text
from .gpt import GPT, sample


def response_ends(tokens: Tensor, prompt_len: int, eot_id: int) -> Tensor:
    """Index (into ``tokens`` ``[B, L]``) of each response's last token: its first end-of-text token
    after the prompt, or the last token if it has none. Returns ``[B]`` int64."""
    completion = tokens[:, prompt_len:]
    is_eot = completion == eot_id
    first = torch.where(is_eot.any(1), is_eot.float().argmax(1), completion.shape[1] - 1)
    return prompt_len + first


class RewardModel(nn.Module):
    """A GPT body with a scalar head on the hidden state of the response's last token:
    r(x, y) = wᵀ h_end + b, normalised as (r − offset) / scale.

    Initialised from the pretrained GPT (its features already know words and sentiment, so far fewer
    comparisons are needed). The buffers ``offset``/``scale`` are set after training so that the
    pretrained policy's completions score mean 0, std 1, as Ziegler et al. 2019 ("Fine-Tuning Language
    Models from Human Preferences") normalise theirs; one KL coefficient β then suits any corpus.
    (InstructGPT, §3.5, only shifts its reward model, so that the labellers' demonstrations score 0 on
    average.)

    Args:
        gpt: the pretrained model; it is deep-copied, not shared.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        self.body = copy.deepcopy(gpt).requires_grad_(True)  # trainable even if ``gpt`` is frozen
        self.score_head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.zeros_(self.score_head.weight)
        nn.init.zeros_(self.score_head.bias)
        device = next(gpt.parameters()).device
        self.register_buffer("offset", torch.zeros((), device=device))
        self.register_buffer("scale", torch.ones((), device=device))

    def raw_score(self, tokens: Tensor, ends: Tensor) -> Tensor:
        """Unnormalised scores ``[B]`` of ``tokens`` ``[B, L]`` read at positions ``ends`` ``[B]``."""
        _, hidden = self.body(tokens)
        last = hidden[torch.arange(len(tokens), device=tokens.device), ends]  # [B, d]
        return self.score_head(last).squeeze(-1)

    def forward(self, tokens: Tensor, ends: Tensor) -> Tensor:
        """Normalised scores ``[B]``."""
        return (self.raw_score(tokens, ends) - self.offset) / self.scale


@dataclass
class PreferencePairs:
    """Comparisons labelled by the annotator. ``chosen``/``rejected``: ``[n, L]`` token ids, each a
    prompt with a completion; ``*_ends``: ``[n]`` response-end indices; ``*_gold``: ``[n]`` gold rewards
    (the annotator's hidden scores, for measuring accuracy, never for training)."""

    chosen: Tensor
    rejected: Tensor
    chosen_ends: Tensor
    rejected_ends: Tensor
    chosen_gold: Tensor
    rejected_gold: Tensor

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, idx) -> PreferencePairs:
        return PreferencePairs(*(t[idx] for t in vars(self).values()))


@torch.no_grad()
def make_preference_pairs(gpt: GPT, prompts: Tensor, tokenizer: CharTokenizer, annotator: Annotator,
                          num_pairs: int, completion_len: int, temperature: float = 1.0,
                          generator: torch.Generator | None = None, chunk: int = 512) -> PreferencePairs:
    """Sample two completions per prompt from ``gpt`` and let the annotator choose, Bradley–Terry style:

        P(y₁ ≻ y₂) = σ((gold(y₁) − gold(y₂)) / temperature)

    so close pairs are often labelled "wrongly", as real human labels are noisy (ties are coin flips).

    Args:
        prompts: ``[M, P]`` distinct prompts (:func:`minippo.lm.corpus.make_prompts`); each pair uses one
            drawn uniformly. temperature: τ > 0 of the labeller, in gold-reward units (1: a one-word
            difference is preferred 73 % of the time). generator: on the model's device.

    Returns:
        :class:`PreferencePairs` on the model's device.
    """
    check_range("num_pairs", num_pairs, 1)
    check_range("temperature", temperature, 0, low_inclusive=False)
    device = prompts.device
    P = prompts.shape[1]
    parts = []
    for start in range(0, num_pairs, chunk):
        n = min(chunk, num_pairs - start)
        which = torch.randint(len(prompts), (n,), generator=generator, device=device)
        both, _ = sample(gpt, prompts[which].repeat(2, 1), completion_len, generator)
        gold = torch.tensor([annotator.gold_reward(document_text(tokenizer, row)) for row in both],
                            device=device)
        ends = response_ends(both, P, tokenizer.eot_id)
        first_wins = torch.rand(n, generator=generator, device=device) < torch.sigmoid(
            (gold[:n] - gold[n:]) / temperature)
        winner = lambda x: torch.where(first_wins.view(-1, *[1] * (x.dim() - 1)), x[:n], x[n:])  # noqa: B023
        loser = lambda x: torch.where(first_wins.view(-1, *[1] * (x.dim() - 1)), x[n:], x[:n])  # noqa: B023
        parts.append(PreferencePairs(winner(both), loser(both), winner(ends), loser(ends),
                                     winner(gold), loser(gold)))
    return PreferencePairs(*(torch.cat(ts) for ts in zip(*(vars(p).values() for p in parts))))


def bradley_terry_loss(chosen_scores: Tensor, rejected_scores: Tensor) -> Tensor:
    """−log σ(r(x, y_w) − r(x, y_l)), averaged over pairs: the negative log-likelihood of the labels under
    the Bradley–Terry model P(y_w ≻ y_l) = σ(r_w − r_l) (Bradley & Terry 1952; InstructGPT eq. 1)."""
    return -F.logsigmoid(chosen_scores - rejected_scores).mean()


@torch.no_grad()
def pairwise_accuracy(model: RewardModel, pairs: PreferencePairs) -> float:
    """Fraction of pairs the reward model orders as the *noiseless* gold reward does, ties in gold
    excluded: how well the proxy has recovered the annotator's rule (not its noisy labels)."""
    differ = pairs.chosen_gold != pairs.rejected_gold
    if not differ.any():
        return float("nan")
    chosen = model.raw_score(pairs.chosen, pairs.chosen_ends)
    rejected = model.raw_score(pairs.rejected, pairs.rejected_ends)
    gold_says_chosen = pairs.chosen_gold > pairs.rejected_gold
    agrees = (chosen > rejected) == gold_says_chosen
    return float(agrees[differ].float().mean())


def unseen_pairs(pairs: PreferencePairs, seen: PreferencePairs, tokenizer: CharTokenizer) -> Tensor:
    """Which of ``pairs`` have two documents (:func:`minippo.lm.corpus.document_text`: prompt + response,
    what the annotator reads and the reward model scores) that both occur nowhere in ``seen``.

    Returns:
        ``[len(pairs)]`` bool, on the pairs' device.
    """
    def documents(tokens: Tensor) -> list[str]:
        return [document_text(tokenizer, row) for row in tokens.cpu()]

    known = set(documents(seen.chosen)) | set(documents(seen.rejected))
    new = [c not in known and r not in known
           for c, r in zip(documents(pairs.chosen), documents(pairs.rejected))]
    return torch.tensor(new, dtype=torch.bool, device=pairs.chosen.device)


@dataclass
class RewardModelConfig:
    """Preference data and reward-model training.

    num_pairs      labelled comparisons for training (1000 – 10000); another num_pairs // 4 are held out.
    temperature    τ of the annotator's Bradley–Terry labels (0.25 – 2; smaller is less noisy; at 0.5 a
                   one-word difference is labelled the other way 12 % of the time).
    epochs         passes over the training pairs (1 – 5).
    batch_size     pairs per Adam step (32 – 128).
    learning_rate  Adam step size (1e-4 – 1e-3).
    """

    num_pairs: int = 4000
    temperature: float = 0.5
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 1e-3

    def __post_init__(self):
        check_range("num_pairs", self.num_pairs, 10)
        check_range("temperature", self.temperature, 0, low_inclusive=False)
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)


def preference_data(gpt: GPT, prompts: Tensor, tokenizer: CharTokenizer, annotator: Annotator,
                    completion_len: int, config: RewardModelConfig, seed: int = 0
                    ) -> tuple[PreferencePairs, PreferencePairs]:
    """The labelled comparisons of one RLHF setting, split into training and held-out pairs: the very
    data :func:`train_reward_model` learns from, and DPO too (:mod:`minippo.lm.dpo`).

    ``config.num_pairs * 5 // 4`` pairs are drawn by :func:`make_preference_pairs` from ``gpt`` at the
    annotator's ``config.temperature``, with a generator on ``prompts``' device seeded with ``seed``
    (torch's global RNG is not used: the same seed gives the same pairs whatever ran before). The first
    ``config.num_pairs`` train, the remaining quarter of that is held out.

    Returns:
        ``(train, val)``: :class:`PreferencePairs` of ``num_pairs`` and ``num_pairs // 4`` pairs,
        each ``[n, P + completion_len]`` tokens, on ``prompts``' device.
    """
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    pairs = make_preference_pairs(gpt, prompts, tokenizer, annotator, config.num_pairs * 5 // 4,
                                  completion_len, config.temperature, generator)
    return pairs[:config.num_pairs], pairs[config.num_pairs:]


def train_reward_model(gpt: GPT, prompts: Tensor, tokenizer: CharTokenizer, annotator: Annotator,
                       completion_len: int, config: RewardModelConfig, seed: int = 0,
                       log=print) -> tuple[RewardModel, dict[str, float]]:
    """Label fresh comparisons (:func:`preference_data`), train a :class:`RewardModel` on them, and
    measure it.

    ``config.num_pairs`` pairs train it and another 25 % of that are held out. ``seed`` seeds the pairs
    (a generator on ``prompts``' device), the minibatch order, and torch's global RNG
    (``torch.manual_seed``, for the dropout masks), so the result does not depend on what ran before.

    Returns ``(reward_model, stats)`` with ``stats`` (accuracies are agreement with the noiseless gold
    ordering, ties in gold excluded):

    - ``train_accuracy`` / ``val_accuracy``: on the training / all held-out pairs. The held-out pairs
      share prompts, and often whole texts, with the training pairs (a small model repeats itself), so
      ``val_accuracy`` partly measures memorisation.
    - ``val_accuracy_unseen``: on the held-out pairs whose two documents (prompt + response, as the
      annotator reads them) both never occur in the training pairs: the honest generalisation figure.
      NaN if there is no such pair (or all of them are ties); ``val_unseen_pairs`` counts them (ties
      included).
    - ``label_accuracy``: how often the noisy held-out labels themselves agree with gold (the ceiling
      a label-copying model would hit).
    - ``val_loss`` (Bradley–Terry on the held-out pairs, nats), ``num_pairs`` (training pairs), ``time_s``.

    Raises:
        MinippoError: the loss becomes NaN.
    """
    start = time.perf_counter()
    device = prompts.device
    torch.manual_seed(seed)  # dropout masks: the same model whatever consumed the global RNG before
    train, val = preference_data(gpt, prompts, tokenizer, annotator, completion_len, config, seed)
    model = RewardModel(gpt)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    cpu_generator = torch.Generator().manual_seed(seed)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    step = 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train), generator=cpu_generator).to(device)
        for i in range(0, len(train), config.batch_size):
            mb = train[order[i:i + config.batch_size]]
            for group in optimizer.param_groups:  # linear decay to 0
                group["lr"] = config.learning_rate * (1 - step / steps)
            loss = bradley_terry_loss(model.raw_score(mb.chosen, mb.chosen_ends),
                                      model.raw_score(mb.rejected, mb.rejected_ends))
            if not torch.isfinite(loss):
                raise MinippoError(f"Reward-model loss became {loss.item()}; lower its learning rate.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
        model.eval()
        if log is not None:
            log(f"reward model epoch {epoch}/{config.epochs}: held-out accuracy vs gold "
                f"{pairwise_accuracy(model, val):.3f}")
        model.train()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    with torch.no_grad():
        scores = torch.cat([model.raw_score(train.chosen, train.chosen_ends),
                            model.raw_score(train.rejected, train.rejected_ends)])
        model.offset.fill_(scores.mean())
        model.scale.fill_(scores.std().clamp_min(1e-6))
        val_loss = bradley_terry_loss(model.raw_score(val.chosen, val.chosen_ends),
                                      model.raw_score(val.rejected, val.rejected_ends)).item()
    differ = val.chosen_gold != val.rejected_gold
    unseen = unseen_pairs(val, train, tokenizer)
    stats = {"train_accuracy": pairwise_accuracy(model, train), "val_accuracy": pairwise_accuracy(model, val),
             "val_accuracy_unseen": pairwise_accuracy(model, val[unseen]),
             "val_unseen_pairs": int(unseen.sum()),
             "label_accuracy": float((val.chosen_gold > val.rejected_gold)[differ].float().mean()),
             "val_loss": val_loss, "num_pairs": len(train), "time_s": time.perf_counter() - start}
    return model, stats
