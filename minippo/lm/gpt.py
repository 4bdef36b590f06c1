"""A tiny character-level GPT, nanoGPT style (Karpathy's nanoGPT ``model.py``; the Transformer of
Vaswani et al. 2017, "Attention Is All You Need", decoder only, pre-LayerNorm as in GPT-2), its
pretraining with next-character cross-entropy, and sampling.

Shapes: ``B`` sequences of ``L`` tokens (``L ≤ block_size``), model width ``d``, vocabulary ``V``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import MinippoError, check_range


@dataclass
class GPTConfig:
    """The model's size. ``vocab_size`` comes from the tokenizer.

    block_size   context length in tokens (characters), e.g. 64.
    n_layer      Transformer blocks (2 – 4).
    n_head       attention heads; must divide n_embd.
    n_embd       model width d (64 – 128).
    dropout      dropout probability during pretraining (0 – 0.2); RL and scoring run in eval mode.
    """

    vocab_size: int
    block_size: int = 64
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 96
    dropout: float = 0.0

    def __post_init__(self):
        check_range("vocab_size", self.vocab_size, 2)
        check_range("block_size", self.block_size, 2)
        check_range("n_layer", self.n_layer, 1)
        check_range("n_head", self.n_head, 1)
        check_range("dropout", self.dropout, 0, 1, high_inclusive=False)
        if self.n_embd % self.n_head:
            raise MinippoError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}.")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position i attends to positions ≤ i only (the causal mask makes
    every position's output independent of later tokens, which next-token prediction needs).

    Written out as a masked softmax rather than with ``F.scaled_dot_product_attention``: TRPO's
    Fisher-vector product differentiates twice, and PyTorch's fused CPU attention kernel has no second
    derivative.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        L = config.block_size
        self.register_buffer("causal", torch.ones(L, L, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x: Tensor, cache: list[Tensor] | None = None) -> Tensor:  # x: [B, L, d]
        B, L, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (t.view(B, L, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # key/value cache for sampling: keys and values of earlier positions
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        # softmax(q kᵀ / √d_head + causal mask) v (Vaswani et al. 2017, eq. 1); the L queries are the
        # last L of the k.shape[2] positions.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, heads, L, L_k]
        start = k.shape[2] - L
        scores = scores.masked_fill(~self.causal[start:start + L, :k.shape[2]], float("-inf"))
        y = self.dropout(scores.softmax(dim=-1)) @ v
        return self.proj(y.transpose(1, 2).reshape(B, L, d))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(config.n_embd), CausalSelfAttention(config)
        self.ln_2, self.mlp = nn.LayerNorm(config.n_embd), MLP(config)

    def forward(self, x: Tensor, cache: list[Tensor] | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, a final LayerNorm and a linear head to
    next-token logits.

    ``forward(tokens)`` with ``tokens`` ``[B, L]`` int64 returns ``(logits [B, L, V], hidden [B, L, d])``:
    ``logits[:, i]`` predicts token ``i + 1``; ``hidden`` (after the final LayerNorm) is what the value
    head and the reward model's score head read. ``forward(tokens, cache)`` with ``cache`` from
    :meth:`new_cache` continues a sequence whose earlier tokens were already fed (used by :func:`sample`:
    first the whole prompt, then one token at a time).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/√(2·n_layer)
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def new_cache(self) -> list[list[Tensor]]:
        """An empty key/value cache, one ``[keys, values]`` slot per block."""
        return [[] for _ in self.blocks]

    def forward(self, tokens: Tensor, cache: list[list[Tensor]] | None = None) -> tuple[Tensor, Tensor]:
        start = cache[0][0].shape[2] if cache and cache[0] else 0  # tokens already in the cache
        end = start + tokens.shape[1]
        if end > self.config.block_size:
            raise MinippoError(f"A sequence of {end} tokens is longer than the model's context "
                               f"(block_size={self.config.block_size}); use shorter prompts/completions.")
        positions = torch.arange(start, end, device=tokens.device)
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(positions))
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        hidden = self.ln_f(x)
        return self.lm_head(hidden), hidden


@torch.no_grad()
def sample(model: GPT, prompts: Tensor, num_tokens: int, generator: torch.Generator | None = None,
           temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Sample ``num_tokens`` tokens after each prompt, one at a time, from softmax(logits / temperature).

    The prompt is run through the model once; after that each new token is fed alone, attending to the
    cached keys and values of the positions before it (about 10× faster than re-running the prefix).

    Args:
        prompts: ``[B, P]`` token ids on the model's device. generator: a torch.Generator on that device.

    Returns:
        ``(tokens [B, P + num_tokens], log_probs [B, num_tokens])``: the prompts with their completions,
        and log p(token | prefix) of each sampled token under the sampling distribution.
    """
    cache = model.new_cache()
    logits, _ = model(prompts, cache)
    new_tokens, log_probs = [], []
    for _ in range(num_tokens):
        step_log_probs = F.log_softmax(logits[:, -1] / temperature, dim=-1)  # [B, V]
        next_token = torch.multinomial(step_log_probs.exp(), 1, generator=generator)  # [B, 1]
        new_tokens.append(next_token)
        log_probs.append(step_log_probs.gather(1, next_token))
        if len(new_tokens) < num_tokens:
            logits, _ = model(next_token, cache)
    return torch.cat([prompts, *new_tokens], dim=1), torch.cat(log_probs, dim=1)


@dataclass
class PretrainConfig:
    """Next-character pretraining.

    steps          AdamW steps (300 – 5000).
    batch_size     windows of block_size characters per step (16 – 128).
    learning_rate  peak AdamW step size (1e-3 typical for tiny models), cosine-decayed to 10 %.
    weight_decay   AdamW decay on matrices (0.1).
    val_fraction   documents held out for the validation loss (0.1).
    eval_every     steps between validation estimates.
    """

    steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.1
    val_fraction: float = 0.1
    eval_every: int = 250

    def __post_init__(self):
        check_range("steps", self.steps, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("learning_rate", self.learning_rate, 0, 1, low_inclusive=False)
        check_range("val_fraction", self.val_fraction, 0, 1, low_inclusive=False, high_inclusive=False)
        check_range("eval_every", self.eval_every, 1)


def split_corpus(ids: Tensor, eot_id: int, val_fraction: float) -> tuple[Tensor, Tensor]:
    """Split a 1-D token stream into train/validation parts at a document boundary (the last
    ``val_fraction`` of the documents are held out), so no document is in both."""
    ends = (ids == eot_id).nonzero().flatten()
    cut = int(ends[max(0, int(len(ends) * (1 - val_fraction)) - 1)]) + 1 if len(ends) > 1 else len(ids)
    return ids[:cut], ids[cut:]


def random_windows(ids: Tensor, batch_size: int, block_size: int, generator: torch.Generator
                   ) -> tuple[Tensor, Tensor]:
    """``batch_size`` random windows of ``block_size + 1`` tokens: inputs ``[B, L]`` and next-token
    targets ``[B, L]`` (the same window shifted by one)."""
    starts = torch.randint(len(ids) - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([ids[s:s + block_size + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def unigram_entropy(ids: Tensor, vocab_size: int) -> float:
    """H = −Σ p(c) log p(c) of the character frequencies, in nats: the loss of a model that ignores
    context, the bar pretraining must clear."""
    p = torch.bincount(ids, minlength=vocab_size).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def pretrain(model: GPT, ids: Tensor, eot_id: int, config: PretrainConfig, seed: int = 0,
             log=print) -> dict[str, float]:
    """Train ``model`` to predict the next character: minimise cross-entropy(logits[:, i], tokens[i+1])
    over random windows of the corpus, with AdamW and a cosine learning-rate schedule.

    Args:
        model: a :class:`GPT` on its device. ids: the corpus as a 1-D int64 tensor (any device).
        eot_id: the end-of-text id (documents are split at it for validation).
        log: called with one progress line per ``eval_every`` steps (``None``: silent).
        seed: seeds the training windows (a CPU generator). The loss estimates draw their windows from a
            separate generator, re-seeded with ``seed + 1`` each time, so they are reproducible and the
            trained weights do not depend on ``log`` (dropout masks come from torch's global RNG, which
            the caller seeds).

    Returns:
        ``{"train_loss", "val_loss", "unigram_entropy", "time_s"}``, losses in nats per character
        (averaged over the same 20 batches of each split every time).

    Raises:
        MinippoError: the corpus is too short for one window, or the loss becomes NaN.
    """
    device = next(model.parameters()).device
    L = model.config.block_size
    train_ids, val_ids = split_corpus(ids.cpu(), eot_id, config.val_fraction)
    if len(train_ids) <= L + 1 or len(val_ids) <= L + 1:
        raise MinippoError(f"The corpus ({len(ids)} characters) is too short to pretrain with a context of "
                           f"{L}: each split needs more than {L + 1} characters. Use a longer corpus.")
    generator = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=config.learning_rate, betas=(0.9, 0.99))

    def loss_on(split: Tensor, windows: torch.Generator) -> Tensor:
        x, y = random_windows(split, config.batch_size, L, windows)
        logits, _ = model(x.to(device))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1))

    @torch.no_grad()
    def estimate(split: Tensor) -> float:
        # Its own generator: drawing from the training one would make the weights depend on ``log``.
        windows = torch.Generator().manual_seed(seed + 1)
        was_training = model.training
        model.eval()
        loss = sum(loss_on(split, windows).item() for _ in range(20)) / 20
        model.train(was_training)
        return loss

    start = time.perf_counter()
    model.train()
    for step in range(1, config.steps + 1):
        lr = config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_on(train_ids, generator)
        if not torch.isfinite(loss):
            raise MinippoError(f"Pretraining loss became {loss.item()} at step {step}; lower the "
                               "learning rate.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if log is not None and (step % config.eval_every == 0 or step == config.steps):
            log(f"pretrain step {step:5d}/{config.steps}: train loss {loss.item():.3f} nats/char, "
                f"val loss {estimate(val_ids):.3f}")
    model.eval()
    return {"train_loss": estimate(train_ids), "val_loss": estimate(val_ids),
            "unigram_entropy": unigram_entropy(train_ids, model.config.vocab_size),
            "time_s": time.perf_counter() - start}
