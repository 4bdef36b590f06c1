"""RLHF in miniature, end to end: corpus → pretrained GPT → reward model → RL with VPG, TRPO or PPO.

::

    corpus ──► tokenizer ──► pretrain GPT (next-character cross-entropy) ─┬─► π_ref (frozen copy)
                                                                          ├─► π (policy, + value_head)
                                                                          └─► reward model body
    annotator (hidden rule) ──► noisy preference pairs ──► reward model r_φ (Bradley–Terry)
    prompts ──► TextRollout(π, π_ref, r_φ) ──► TextBatch [T, N] ──► minippo.train.run_loop
                                                     (the same GAE and the same algorithm code as Gymnasium)

The first two stages are cached on disk (``<cache_dir>/pretrain-<key>.pt``, ``reward-<key>.pt``), keyed
by a hash of the corpus, of every setting that shapes them, of the seed and of the device type (CPU and
CUDA draw different random numbers), so a second run with the same corpus and model starts at RL. The
key does not cover the code: editing the annotator's rule (``corpus.py``'s :class:`Annotator` or its
lexicon ``POSITIVE`` / ``NEGATIVE``) or the training code does NOT invalidate the cache, and the old
reward model would be loaded silently; delete the cache folder after such an edit.

Example::

    from minippo.lm.rlhf import RLHFConfig, run_rlhf
    result = run_rlhf(RLHFConfig(algo="ppo", beta=0.1, iterations=60), out="runs/rlhf")
    print(result.summary["before"]["gold_reward"], result.summary["after"]["gold_reward"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import grpo, rloo
from ..errors import MinippoError, check_range
from ..logger import load_checkpoint, require_tensorboard, save_checkpoint, write_json
from ..rollout import GroupBaseline
from ..train import ALGORITHMS, RunResult, make_run_dir, open_tensorboard, resolve_device, run_loop
from .corpus import Annotator, CharTokenizer, corpus_hash, document_text, load_corpus, make_prompts
from .gpt import GPT, GPTConfig, PretrainConfig, pretrain, sample
from .reward_model import RewardModel, RewardModelConfig, response_ends, train_reward_model
from .text_rollout import AdaptiveKLController, GPTActorCritic, TextRollout, response_mask

# RLHF hyperparameters per algorithm: fields of its config dataclass (ppo.PPOConfig, vpg.VPGConfig,
# trpo.TRPOConfig). The policy starts from a good model, so every step is small: PPO's learning rate is
# ~6× below its Gymnasium default; minibatch_size counts token positions (16 sequences of 48 tokens).
# VPG and TRPO fit the value head with few steps, since each one runs the whole GPT.
# PPO's learning rate was 1e-4 while the losses averaged over every token, ~70% of them after the end of
# the response; averaged over response tokens only, 1e-4 moved the policy up to an approximate KL of 0.66
# in one iteration (seed 0; gold reward 0.47 after 60 iterations), 5e-5 to at most 0.075, 0.024 on
# average (gold 0.75).
DEFAULTS: dict[str, dict] = {
    "ppo": dict(learning_rate=5e-5, anneal_lr=False, num_epochs=4, minibatch_size=16 * 48, clip_range=0.2,
                value_coef=0.5, entropy_coef=0.0, max_grad_norm=1.0),
    "vpg": dict(policy_lr=3e-4, value_lr=1e-3, value_iterations=10, value_minibatch_size=16 * 48),
    "trpo": dict(max_kl=0.01, damping=0.1, value_lr=1e-3, value_iterations=10, value_minibatch_size=16 * 48),
    "rloo": dict(learning_rate=3e-4, max_grad_norm=1.0),
    "grpo": dict(learning_rate=5e-5, num_epochs=2, minibatch_size=16 * 48, clip_range=0.2, max_grad_norm=1.0),
    # No RL: best-of-n samples n completions from π_ref and keeps the reward model's favourite;
    # DPO fits the preference pairs directly (see the docstring of DPOConfig for how these were chosen).
    "best-of-n": dict(n=16),
    "dpo": dict(learning_rate=1e-5, epochs=2, batch_size=64, max_grad_norm=1.0),
}

# The update classes RL on text can use: the three of minippo.train.ALGORITHMS, and the two that need
# no value function because they compare the k completions of one prompt with each other.
UPDATES: dict[str, tuple[type, type]] = {
    **{name: (cls, config_cls) for name, (cls, config_cls, _) in ALGORITHMS.items()},
    "rloo": (rloo.RLOO, rloo.RLOOConfig),
    "grpo": (grpo.GRPO, grpo.GRPOConfig),
}
# Their advantage estimator: a group baseline (minippo.rollout.group_advantages); the others use GAE.
GROUP_BASELINES: dict[str, str] = {"rloo": "leave_one_out", "grpo": "group_mean_std"}
# The methods that are not RL on the shared loop: minippo/lm/best_of_n.py and minippo/lm/dpo.py.
OFFLINE = ("best-of-n", "dpo")


def _offline_method(algo: str) -> tuple[type, Callable]:
    """(config class, run function) of best-of-n or DPO. Imported here, not at the top: those modules
    use this one's :class:`Stages`."""
    if algo == "best-of-n":
        from .best_of_n import BestOfNConfig, run_best_of_n
        return BestOfNConfig, run_best_of_n
    from .dpo import DPOConfig, run_dpo
    return DPOConfig, run_dpo


@dataclass
class RLHFConfig:
    """Every setting of an RLHF run, with typical ranges.

    algo            "vpg", "trpo" or "ppo" (the unchanged update classes of ``minippo.train.ALGORITHMS``,
                    with GAE), "rloo" or "grpo" (group baselines, no value function): :data:`UPDATES`;
                    or, without RL, "best-of-n" (n from ``hyperparameters``) and "dpo" (β = ``beta``).
    iterations      collect/update iterations of RL (20 – 300).
    beta            β, the KL coefficient of the per-token penalty (0.01 – 0.5; reward-model scores are
                    normalised to std 1, KL is in nats). GRPO puts the KL in its loss instead, with this
                    β as its ``kl_coef`` (unless ``kl_in_reward``).
    kl_target       None for a fixed β, or the KL(π‖π_ref) in nats per sequence that the adaptive
                    controller of Ziegler et al. 2019 steers β towards (2 – 20).
    seed            seeds pretraining, preference data, the policy's sampling and the update.
    device          "auto" (CUDA if present), "cpu" or "cuda".
    corpus          path of a UTF-8 text file (one document per line); None: the generated reviews.
    num_documents   size of the generated corpus (ignored with ``corpus``).
    prompt_chars    characters of a document that form a prompt (after an end-of-text token).
    completion_len  T, tokens generated per prompt; prompt + completion must fit ``model.block_size``.
    num_sequences   N, sequences per batch (32 – 256); a batch has T·N tokens.
    group_size      k, completions per prompt for RLOO and GRPO (2 – 16; must divide N): a batch holds
                    N / k prompts. The GAE algorithms (vpg, trpo, ppo) draw N prompts and ignore it.
    gamma, gae_lambda  GAE(γ, λ) over the tokens of a response; γ = 1: the score is not discounted.
    no_eos_score    None: a response with no end-of-text token within T tokens is scored by the reward
                    model as it is; a number (e.g. −1): it gets this score instead (the "EOS trick" of
                    Huang et al. 2024). See :class:`minippo.lm.text_rollout.TextRollout`.
    model           :class:`minippo.lm.gpt.GPTConfig` fields except vocab_size.
    pretrain        :class:`minippo.lm.gpt.PretrainConfig`.
    reward          :class:`minippo.lm.reward_model.RewardModelConfig`.
    hyperparameters overrides of the algorithm's config (see :data:`DEFAULTS`).
    """

    algo: str = "ppo"
    iterations: int = 60
    beta: float = 0.1
    kl_target: float | None = None
    seed: int = 0
    device: str = "auto"
    corpus: str | None = None
    num_documents: int = 6000
    prompt_chars: int = 8
    completion_len: int = 48
    num_sequences: int = 64
    group_size: int = 4
    gamma: float = 1.0
    gae_lambda: float = 0.95
    no_eos_score: float | None = None
    model: dict = field(default_factory=lambda: dict(block_size=64, n_layer=2, n_head=4, n_embd=64))
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    hyperparameters: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.algo not in DEFAULTS:
            raise MinippoError(f"Unknown algorithm {self.algo!r} for RLHF; choose one of {sorted(DEFAULTS)}.")
        check_range("iterations", self.iterations, 1)
        check_range("beta", self.beta, 0)
        if self.kl_target is not None:
            check_range("kl_target", self.kl_target, 0, low_inclusive=False)
        check_range("prompt_chars", self.prompt_chars, 1)
        check_range("completion_len", self.completion_len, 1)
        check_range("num_sequences", self.num_sequences, 1)
        if self.algo in GROUP_BASELINES:
            check_range("group_size", self.group_size, 2, self.num_sequences)
            if self.num_sequences % self.group_size:
                raise MinippoError(f"group_size={self.group_size} does not divide num_sequences="
                                   f"{self.num_sequences}; each batch holds num_sequences / group_size "
                                   "prompts. Choose a divisor.")
        kl_in_loss = self.algo == "grpo" and not self.hyperparameters.get("kl_in_reward")
        if kl_in_loss and self.kl_target is not None:
            raise MinippoError("kl_target adapts the β of the KL penalty in the reward; GRPO puts the KL in "
                               "its loss. Drop --kl-target, or pass --hp kl_in_reward=True.")
        check_range("gamma", self.gamma, 0, 1)
        check_range("gae_lambda", self.gae_lambda, 0, 1)
        unknown = set(self.model) - ({f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"})
        if unknown:
            raise MinippoError(f"Unknown model setting(s) {sorted(unknown)}; valid: block_size, n_layer, "
                               "n_head, n_embd, dropout (vocab_size comes from the corpus).")
        if 1 + self.prompt_chars + self.completion_len > self.model.get("block_size", 64):
            raise MinippoError(f"1 + prompt_chars ({self.prompt_chars}) + completion_len "
                               f"({self.completion_len}) must fit the context block_size="
                               f"{self.model.get('block_size', 64)}; shorten them or enlarge the model.")

    def algorithm_config(self):
        """The algorithm's config dataclass: :data:`DEFAULTS` with ``hyperparameters`` on top (for GRPO,
        ``kl_coef`` = β, or 0 with ``kl_in_reward``).

        Raises:
            MinippoError: the algorithm is not in :data:`UPDATES`, a name is not a field of its config,
                or a value is out of range.
        """
        if self.algo not in UPDATES and self.algo not in OFFLINE:
            raise MinippoError(f"The {self.algo} update is not one RL on text can use ({sorted(UPDATES)}).")
        config_cls = UPDATES[self.algo][1] if self.algo in UPDATES else _offline_method(self.algo)[0]
        merged = {**DEFAULTS[self.algo], **self.hyperparameters}
        if self.algo == "grpo":
            if "kl_coef" in self.hyperparameters:
                raise MinippoError("GRPO's kl_coef is β: set it with --beta (or --hp beta=...), not --hp "
                                   "kl_coef.")
            merged["kl_coef"] = 0.0 if merged.get("kl_in_reward") else self.beta
        fields = {f.name for f in dataclasses.fields(config_cls)}
        if set(merged) - fields:
            raise MinippoError(f"Unknown hyperparameter(s) {sorted(set(merged) - fields)} for {self.algo}; "
                               f"valid names: {sorted(fields)}.")
        try:
            return config_cls(**merged)
        except TypeError as e:
            raise MinippoError(f"Bad hyperparameter value: {e}") from None

    def reward_beta(self) -> float:
        """β of the KL penalty in the per-token rewards: ``beta``, except for GRPO with its KL in the loss
        (then 0: the rewards hold the reward-model score alone)."""
        if self.algo == "grpo" and not self.hyperparameters.get("kl_in_reward"):
            return 0.0
        return self.beta


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_cache_path(cache_dir: str | Path, corpus: str, tokenizer: CharTokenizer, config: RLHFConfig,
                        device: torch.device | str) -> Path:
    """``<cache_dir>/pretrain-<key>.pt``, the key a hash of the corpus, its vocabulary, ``config.model``,
    ``config.pretrain``, ``config.seed`` and the device type (``"cpu"`` or ``"cuda"``)."""
    gpt_config = GPTConfig(vocab_size=tokenizer.vocab_size, **config.model)
    key = _key("pretrain", corpus_hash(corpus), tokenizer.chars, dataclasses.asdict(gpt_config),
               dataclasses.asdict(config.pretrain), config.seed, torch.device(device).type)
    return Path(cache_dir) / f"pretrain-{key}.pt"


def reward_cache_path(cache_dir: str | Path, corpus: str, gpt_config: GPTConfig, config: RLHFConfig,
                      device: torch.device | str) -> Path:
    """``<cache_dir>/reward-<key>.pt``, the key a hash of the corpus, the pretrained model's config,
    ``config.pretrain``, ``config.reward``, the prompt and completion lengths, ``config.seed`` and the
    device type (``"cpu"`` or ``"cuda"``: the preference pairs are sampled on the device)."""
    key = _key("reward", corpus_hash(corpus), dataclasses.asdict(gpt_config),
               dataclasses.asdict(config.pretrain), dataclasses.asdict(config.reward), config.prompt_chars,
               config.completion_len, config.seed, torch.device(device).type)
    return Path(cache_dir) / f"reward-{key}.pt"


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def pretrained_gpt(corpus: str, tokenizer: CharTokenizer, config: RLHFConfig, device: torch.device,
                   cache_dir: Path, log: Callable | None = print) -> tuple[GPT, dict]:
    """The pretrained GPT, frozen, loaded from ``cache_dir`` or trained (and then cached).

    The cache file is :func:`pretrain_cache_path`: its key covers the corpus, the settings, the seed and
    the device type, not the code, so after editing ``gpt.py`` delete the cache folder. Editing the
    annotator's rule (``corpus.py``'s :class:`Annotator` or its lexicon) does NOT invalidate the cache
    either: harmless for this stage, which never calls the annotator, but the cached reward model is
    then stale (:func:`trained_reward_model`), so delete the cache folder after that edit too.

    Returns ``(gpt, stats)`` with the pretraining losses of :func:`minippo.lm.gpt.pretrain` and
    ``cached`` (whether it was loaded)."""
    gpt_config = GPTConfig(vocab_size=tokenizer.vocab_size, **config.model)
    path = pretrain_cache_path(cache_dir, corpus, tokenizer, config, device)
    torch.manual_seed(config.seed)
    gpt = GPT(gpt_config).to(device)
    if path.exists():
        state = load_checkpoint(path, map_location=device)
        gpt.load_state_dict(state["model"])
        stats = {**state["stats"], "cached": True}
        if log:
            log(f"pretrained model loaded from {path}")
    else:
        ids = torch.tensor(tokenizer.encode(corpus), dtype=torch.long)
        stats = pretrain(gpt, ids, tokenizer.eot_id, config.pretrain, seed=config.seed, log=log)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, {"model": gpt.state_dict(), "stats": stats, "vocab": tokenizer.chars})
        stats = {**stats, "cached": False}
    return _freeze(gpt), stats


def trained_reward_model(gpt: GPT, prompts: torch.Tensor, tokenizer: CharTokenizer, annotator: Annotator,
                         corpus: str, config: RLHFConfig, cache_dir: Path,
                         log: Callable | None = print) -> tuple[RewardModel, dict]:
    """The reward model, frozen, loaded from ``cache_dir`` or trained on fresh preference pairs
    (:func:`minippo.lm.reward_model.train_reward_model`, on ``prompts``' device).

    The cache file is :func:`reward_cache_path`: its key covers the corpus, the settings, the seed and
    the device type, not the annotator. Editing the annotator's rule (``corpus.py``'s :class:`Annotator`
    or its lexicon ``POSITIVE`` / ``NEGATIVE``) does NOT invalidate the cache, and the reward model
    learned from the old rule is loaded silently: delete the cache folder after such an edit.

    Returns ``(reward_model, stats)`` with the statistics of ``train_reward_model`` and ``cached``."""
    path = reward_cache_path(cache_dir, corpus, gpt.config, config, prompts.device)
    if path.exists():
        reward_model = RewardModel(gpt)
        state = load_checkpoint(path, map_location=prompts.device)
        reward_model.load_state_dict(state["model"])
        stats = {**state["stats"], "cached": True}
        if log:
            log(f"reward model loaded from {path}")
    else:
        reward_model, stats = train_reward_model(gpt, prompts, tokenizer, annotator, config.completion_len,
                                                 config.reward, seed=config.seed, log=log)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, {"model": reward_model.state_dict(), "stats": stats})
        stats = {**stats, "cached": False}
    return _freeze(reward_model), stats


# How every method is measured: 512 completions, the prompts cycled in order, sampled with one seed; and the
# completions shown: one for each of the first six prompts, another seed. Best-of-n uses the same ones.
EVAL_SAMPLES, EVAL_SEED, SHOW_PROMPTS, SHOW_SEED = 512, 1234, 6, 99


@torch.no_grad()
def evaluate_samples(model: GPT, reference: GPT, reward_model: RewardModel, prompts: torch.Tensor,
                     tokenizer: CharTokenizer, annotator: Annotator, completion_len: int,
                     num_samples: int = EVAL_SAMPLES, seed: int = EVAL_SEED) -> dict[str, float]:
    """Mean reward-model score, gold reward and KL(π‖π_ref) (mean Σ_{t ≤ end} log π/π_ref over each
    response, nats per response; tokens after the end-of-text token are not counted) of ``num_samples``
    completions of ``model``, the prompts cycled in order. Same seed, same prompts. The scores are the
    reward model's on every response, whether or not it ended within T tokens."""
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    which = torch.arange(num_samples, device=prompts.device) % len(prompts)
    tokens, log_probs = sample(model, prompts[which], completion_len, generator)
    P = prompts.shape[1]
    ref_logits, _ = reference(tokens[:, :-1])
    ref_log_probs = torch.log_softmax(ref_logits[:, P - 1:], -1).gather(2, tokens[:, P:, None]).squeeze(-1)
    ends = response_ends(tokens, P, tokenizer.eot_id)
    scores = reward_model(tokens, ends)
    gold = [annotator.gold_reward(document_text(tokenizer, row)) for row in tokens]
    in_response = response_mask(ends - P, completion_len).T  # [n, T]
    return {"rm_score": float(scores.mean()), "gold_reward": sum(gold) / len(gold),
            "kl_ref": float(torch.where(in_response, log_probs - ref_log_probs, 0.0).sum(1).mean()),
            "response_length": float((ends - P + 1).float().mean())}


@torch.no_grad()
def show_completions(model: GPT, prompts: torch.Tensor, tokenizer: CharTokenizer, annotator: Annotator,
                     completion_len: int, seed: int = SHOW_SEED) -> list[tuple[str, float]]:
    """One completion per prompt (the same sampling seed every call): ``[(document, gold), ...]``."""
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    tokens, _ = sample(model, prompts, completion_len, generator)
    return [(doc, annotator.gold_reward(doc)) for doc in (document_text(tokenizer, row) for row in tokens)]


def log_before_after(log: Callable, names: tuple[str, str], before: dict, after: dict,
                     samples_before: list[tuple[str, float]], samples_after: list[tuple[str, float]]) -> None:
    """Print, with ``log``, the shown completions side by side (gold reward in brackets) and the table of
    RM score, gold reward and KL(π‖π_ref) before and after, as every RLHF method reports them."""
    log(f"\ncompletions of {names[0]} → {names[1]} (gold reward in brackets):")
    for (b, gb), (a, ga) in zip(samples_before, samples_after):
        log(f"  [{gb:+.0f}] {b!r}\n  [{ga:+.0f}] {a!r}\n")
    width = max(12, *(len(name) + 2 for name in names))
    log(f"{'':{width}s}{'RM score':>10s}{'gold':>8s}{'KL(π‖π_ref)':>14s}   (means of {EVAL_SAMPLES} samples)")
    for name, s in zip(names, (before, after)):
        log(f"{name:{width}s}{s['rm_score']:10.3f}{s['gold_reward']:8.3f}{s['kl_ref']:14.2f}")


@dataclass
class RLHFResult:
    """What :func:`run_rlhf` reports. ``summary`` is also written to ``run_dir/summary.json``."""

    run_dir: Path
    run: RunResult
    summary: dict


@dataclass
class Stages:
    """What every fine-tuning method starts from: the data and the two cached models of one config.

    ``prompts`` ``[M, P]`` token ids on ``device``; ``reference`` the frozen pretrained GPT, π_ref;
    ``reward_model`` the frozen Bradley–Terry reward model; ``pretrain_stats`` and ``reward_stats`` what
    their training reported (``cached``: loaded from the cache)."""

    config: RLHFConfig
    device: torch.device
    corpus: str
    tokenizer: CharTokenizer
    annotator: Annotator
    prompts: torch.Tensor
    reference: GPT
    reward_model: RewardModel
    pretrain_stats: dict
    reward_stats: dict

    def evaluate(self, model: GPT) -> dict[str, float]:
        """:func:`evaluate_samples` of ``model``: RM score, gold reward and KL(π‖π_ref) of 512 samples."""
        return evaluate_samples(model, self.reference, self.reward_model, self.prompts, self.tokenizer,
                                self.annotator, self.config.completion_len)

    def show(self, model: GPT) -> list[tuple[str, float]]:
        """:func:`show_completions` of ``model`` on the first six prompts (the same ones every call)."""
        return show_completions(model, self.prompts[:min(SHOW_PROMPTS, len(self.prompts))], self.tokenizer,
                                self.annotator, self.config.completion_len)


def prepare_stages(config: RLHFConfig, cache_dir: str | Path, log: Callable | None = print) -> Stages:
    """Corpus, tokenizer, annotator and prompts, then the pretrained GPT and the reward model, each
    loaded from ``cache_dir`` or trained and cached (:func:`pretrained_gpt`, :func:`trained_reward_model`).

    Raises:
        MinippoError: a bad corpus, or CUDA asked for without a GPU.
    """
    say = log or (lambda *_: None)
    device = resolve_device(config.device)
    cache_dir = Path(cache_dir)
    corpus = load_corpus(config.corpus, config.num_documents, config.seed)
    tokenizer = CharTokenizer.from_text(corpus)
    annotator = Annotator(corpus)
    prompts = make_prompts(corpus, tokenizer, config.prompt_chars).to(device)
    say(f"corpus: {len(corpus)} characters, {corpus.count(chr(10))} documents, vocabulary "
        f"{tokenizer.vocab_size}, {len(prompts)} distinct prompts; device {device}")

    reference, pt = pretrained_gpt(corpus, tokenizer, config, device, cache_dir, log)
    say(f"pretrained: train loss {pt['train_loss']:.3f}, val loss {pt['val_loss']:.3f} nats/char "
        f"(unigram entropy {pt['unigram_entropy']:.3f})")
    reward_model, rs = trained_reward_model(reference, prompts, tokenizer, annotator, corpus, config,
                                            cache_dir, log)
    say(f"reward model: held-out accuracy vs gold {rs['val_accuracy']:.3f} "
        f"({rs['val_accuracy_unseen']:.3f} on the {rs['val_unseen_pairs']} pairs whose "
        f"texts training never saw; the noisy labels agree with gold {rs['label_accuracy']:.3f}), "
        f"{rs['num_pairs']} pairs")
    return Stages(config, device, corpus, tokenizer, annotator, prompts, reference, reward_model, pt, rs)


def run_rlhf(config: RLHFConfig, out: str | Path | None = None, cache_dir: str | Path | None = None,
             show_progress: bool = True, log: Callable | None = print, overwrite: bool = False,
             tensorboard: bool = False) -> RLHFResult:
    """Run corpus → pretraining → reward model → RL and write a run folder.

    ``out`` (default ``runs/rlhf-<algo>-s<seed>-<time>``) receives ``config.json``, ``progress.csv``
    (one row per iteration: rm_score, gold_reward, kl_ref, beta, token_entropy, and the algorithm's
    statistics), ``checkpoint.pt`` (the policy, the optimiser, β and every RNG state, after each
    iteration) and ``summary.json`` (pretraining losses, reward-model accuracy, and score / gold / KL of
    512 samples before and after RL). ``cache_dir`` (default ``<out>/../cache``) keeps the pretrained
    model and the reward model between runs. An ``out`` that already holds a run is refused unless
    ``overwrite``; continue one with :func:`resume_rlhf`. ``tensorboard=True`` (RL methods only) also
    writes the progress.csv rows to ``out/tb/`` as scalars, and the completions before and after RL as
    text (tags ``samples/before``, ``samples/after``).

    Raises:
        MinippoError: bad settings or corpus, an algorithm not registered, CUDA asked for without a GPU,
            an existing run in ``out``, or a NaN loss (:class:`minippo.errors.NonFiniteLossError`).
    """
    config.algorithm_config()  # bad hyperparameters are refused before anything is trained
    resolve_device(config.device)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(out) if out is not None else Path("runs") / f"rlhf-{config.algo}-s{config.seed}-{stamp}"
    cache_dir = Path(cache_dir) if cache_dir is not None else run_dir.parent / "cache"
    make_run_dir(run_dir, overwrite)
    if config.algo in OFFLINE:
        return _run_offline(config, run_dir, cache_dir, show_progress, log)
    return _run_text(config, run_dir, cache_dir, show_progress, log, tensorboard=tensorboard)


def _run_offline(config: RLHFConfig, run_dir: Path, cache_dir: Path, show_progress: bool,
                 log: Callable | None) -> RLHFResult:
    """Best-of-n or DPO on the cached stages (:func:`minippo.lm.best_of_n.run_best_of_n`,
    :func:`minippo.lm.dpo.run_dpo`); their summary.json has the shape of an RL run's."""
    method_config = config.algorithm_config()
    stages = prepare_stages(config, cache_dir, log)
    run = _offline_method(config.algo)[1]
    if config.algo == "dpo":
        summary = run(stages, method_config, config.beta, run_dir, seed=config.seed,
                      show_progress=show_progress, log=log)
    else:
        summary = run(stages, method_config, run_dir, log=log)
    steps = summary.get("steps", 0)
    result = RunResult(run_dir, steps, steps, summary.get("train_time_s", summary["total_time_s"]),
                       status=summary["status"])
    return RLHFResult(run_dir, result, summary)


def resume_rlhf(run_dir: str | Path, *, iterations: int | None = None, cache_dir: str | Path | None = None,
                show_progress: bool = True, log: Callable | None = print, tensorboard: bool | None = None
                ) -> RLHFResult:
    """Continue the RLHF run in ``run_dir`` from its checkpoint until its ``iterations`` are done.

    The pretrained model and the reward model come from the cache the run used (``cache_dir`` in its
    ``config.json``, or the given one; if it was deleted they are trained again, with the same seed).
    Restored from the checkpoint: the policy and its value head, the optimiser state, β (which the
    adaptive controller changes), and every RNG state (torch's, the update's minibatch shuffling, the
    rollout's prompt choice and sampling). Nothing is in flight between iterations, so on the same
    machine a resumed run writes the very rows the uninterrupted run would have (times aside).

    Args:
        iterations: a new total number of RL iterations, e.g. more to train longer (default: the run's).
        tensorboard: go on writing to ``run_dir/tb`` (default: if the run did, i.e. if that folder exists).

    Raises:
        MinippoError: no readable checkpoint, a checkpoint that is not an RLHF run's, or a bad value.
    """
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    saved = state.get("config", {})
    if not isinstance(saved, dict) or not isinstance(saved.get("rlhf"), dict):
        raise MinippoError(f"{run_dir / 'checkpoint.pt'} is not an RLHF run's checkpoint (a Gymnasium run? "
                           "continue those with minippo train --resume).")
    config = config_from_dict(saved["rlhf"])
    if config.algo in OFFLINE:
        raise MinippoError(f"{run_dir} is a {config.algo} run; only the RL methods can be resumed. Run it "
                           "again with --overwrite (DPO takes a minute or two).")
    if iterations is not None:
        config = dataclasses.replace(config, iterations=iterations)
    if cache_dir is None:
        try:
            cache_dir = json.loads((run_dir / "config.json").read_text())["cache_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            cache_dir = run_dir.parent / "cache"
    if tensorboard is None:
        tensorboard = (run_dir / "tb").is_dir()
    return _run_text(config, run_dir, Path(cache_dir), show_progress, log, resume_from=state,
                     tensorboard=tensorboard)


def config_from_dict(saved: dict) -> RLHFConfig:
    """The :class:`RLHFConfig` that ``dataclasses.asdict`` turned into ``saved`` (as stored in
    ``config.json`` and checkpoints). Raises :class:`MinippoError` if ``saved`` is not one."""
    try:
        return RLHFConfig(**{**saved, "pretrain": PretrainConfig(**saved["pretrain"]),
                             "reward": RewardModelConfig(**saved["reward"])})
    except (TypeError, KeyError) as e:
        raise MinippoError(f"The saved RLHF config is not one this version of minippo reads ({e}).") from None


def _run_text(config: RLHFConfig, run_dir: Path, cache_dir: Path, show_progress: bool,
              log: Callable | None, resume_from: dict | None = None, tensorboard: bool = False
              ) -> RLHFResult:
    """Prepare the stages, then run RL with :func:`minippo.train.run_loop` (from the start, or from the
    checkpoint ``resume_from``) and write ``summary.json``; with ``tensorboard``, mirror progress.csv and
    the completions before and after RL into ``run_dir/tb`` (:func:`minippo.train.open_tensorboard`)."""
    start = time.perf_counter()
    algorithm_config = config.algorithm_config()
    stages = prepare_stages(config, cache_dir, log)
    reference = stages.reference

    torch.manual_seed(config.seed)
    policy = GPTActorCritic(reference)
    algorithm = UPDATES[config.algo][0](policy, algorithm_config, seed=config.seed)
    kl = AdaptiveKLController(config.reward_beta(), config.kl_target)
    # RLOO and GRPO: k completions per prompt and a group baseline; the others: GAE (the loop's default).
    grouped = config.algo in GROUP_BASELINES
    source = TextRollout(stages.prompts, reference, stages.reward_model, stages.tokenizer, stages.annotator,
                         config.num_sequences, config.completion_len, kl, seed=config.seed,
                         no_eos_score=config.no_eos_score, group_size=config.group_size if grouped else 1)
    estimator = GroupBaseline(config.group_size, GROUP_BASELINES[config.algo]) if grouped else None
    if resume_from is not None:
        kl.beta = float(resume_from["beta"])
        source.generator.set_state(resume_from["source_rng"])
    before_samples, before = stages.show(reference), stages.evaluate(reference)

    config_dict = {"rlhf": dataclasses.asdict(config), "algorithm": dataclasses.asdict(algorithm_config)}
    write_json(run_dir / "config.json", {**config_dict, "device_used": str(stages.device),
                                         "torch": torch.__version__, "cache_dir": str(cache_dir.resolve())})

    def checkpoint_extra() -> dict:
        return {"config": config_dict, "vocab": stages.tokenizer.chars, "beta": kl.beta,
                "source_rng": source.generator.get_state(),
                "gpt_config": dataclasses.asdict(reference.config)}

    writer = open_tensorboard(run_dir, resume_from) if tensorboard else None
    try:
        if writer is not None and resume_from is None:  # a resumed run logged them already, at step 0
            writer.add_text("samples/before", samples_markdown(before_samples), 0)
        run = run_loop(source, policy, algorithm, num_iterations=config.iterations, gamma=config.gamma,
                       gae_lambda=config.gae_lambda, run_dir=run_dir, checkpoint_extra=checkpoint_extra,
                       show_progress=show_progress, desc=f"rlhf {config.algo}", resume_from=resume_from,
                       advantage_estimator=estimator, tensorboard=writer)
        policy.eval()
        after, after_samples = stages.evaluate(policy.gpt), stages.show(policy.gpt)
        if writer is not None:
            writer.add_text("samples/after", samples_markdown(after_samples), run.global_step)
    finally:
        if writer is not None:
            writer.close()

    summary = {"algo": config.algo, "beta_initial": config.beta, "beta_final": kl.beta,
               "iterations": run.iterations, "status": run.status, "pretrain": stages.pretrain_stats,
               "reward_model": stages.reward_stats, "before": before, "after": after,
               "rl_time_s": run.time_s, "total_time_s": time.perf_counter() - start,
               "samples_before": before_samples, "samples_after": after_samples}
    write_json(run_dir / "summary.json", summary)
    if log:
        log_before_after(log, ("before RL", "after RL"), before, after, before_samples, after_samples)
        log(f"total time {summary['total_time_s']:.0f} s (RL {run.time_s:.0f} s); run folder: {run_dir}")
    return RLHFResult(run_dir, run, summary)


def samples_markdown(samples: list[tuple[str, float]]) -> str:
    """``[(document, gold), ...]`` (:meth:`Stages.show`) as the Markdown that TensorBoard's text tab shows:
    one line per completion, its gold reward first, the text verbatim in a code span."""
    return "\n\n".join(f"[{gold:+.0f}] `{doc.replace('`', chr(39))}`" for doc, gold in samples)


def config_from_overrides(algo: str = "ppo", **overrides) -> RLHFConfig:
    """An :class:`RLHFConfig` from flat ``KEY=VALUE`` overrides, as the command line passes them.

    Keys are fields of :class:`RLHFConfig` (``num_sequences``), dotted fields of its parts
    (``model.n_embd``, ``pretrain.steps``, ``reward.num_pairs``), or else hyperparameters of the
    algorithm (``learning_rate``), checked when the algorithm's config is built. ``None`` values are
    ignored.

    Raises:
        MinippoError: an unknown dotted name or a bad value.
    """
    top = {f.name for f in dataclasses.fields(RLHFConfig)} - {"model", "pretrain", "reward", "algo"}
    parts = {"pretrain": PretrainConfig, "reward": RewardModelConfig}
    model_fields = {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
    kwargs, nested, hyperparameters = {}, {"model": {}, "pretrain": {}, "reward": {}}, {}
    for key, value in overrides.items():
        if value is None:
            continue
        section, dot, name = key.partition(".")
        if dot:
            valid = (model_fields if section == "model" else
                     {f.name for f in dataclasses.fields(parts[section])} if section in parts else set())
            if name not in valid:
                raise MinippoError(f"Unknown setting {key!r}; valid dotted names: model.<one of "
                                   f"{sorted(model_fields)}>, pretrain.<field of PretrainConfig>, "
                                   "reward.<field of RewardModelConfig>.")
            nested[section][name] = value
        elif key in top:
            kwargs[key] = value
        else:
            hyperparameters[key] = value
    defaults = RLHFConfig()
    try:
        return RLHFConfig(algo=algo, model={**defaults.model, **nested["model"]},
                          pretrain=PretrainConfig(**{**dataclasses.asdict(defaults.pretrain),
                                                     **nested["pretrain"]}),
                          reward=RewardModelConfig(**{**dataclasses.asdict(defaults.reward),
                                                      **nested["reward"]}),
                          hyperparameters={**kwargs.pop("hyperparameters", {}), **hyperparameters}, **kwargs)
    except TypeError as e:
        raise MinippoError(f"Bad setting: {e}") from None


def cmd_rlhf(args, hp: dict) -> int:
    """``minippo rlhf``: parse the flags into an :class:`RLHFConfig` and run it, or (``--resume``)
    continue a run with its own settings."""
    if args.resume:
        given = [flag for flag, value in (("--algo", args.algo), ("--beta", args.beta),
                                          ("--kl-target", args.kl_target), ("--seed", args.seed),
                                          ("--device", args.device), ("--out", args.out),
                                          ("--corpus", args.corpus), ("--overwrite", args.overwrite),
                                          ("--hp", hp)) if value not in (None, False, {})]
        if given:
            raise MinippoError(f"--resume continues the run with its own settings; drop {', '.join(given)} "
                               "(only --iterations, --cache-dir, --tensorboard and --no-progress may be "
                               "given).")
        if args.tensorboard:
            require_tensorboard()
        result = resume_rlhf(args.resume, iterations=args.iterations, cache_dir=args.cache_dir,
                             show_progress=not args.no_progress, tensorboard=args.tensorboard or None)
    else:
        config = config_from_overrides(args.algo or "ppo", beta=args.beta, kl_target=args.kl_target,
                                       iterations=args.iterations,
                                       seed=args.seed if args.seed is not None else 0,
                                       device=args.device or "auto", corpus=args.corpus, **hp)
        if args.tensorboard and config.algo in OFFLINE:
            raise MinippoError(f"--tensorboard logs the iterations of RL (ppo, trpo, vpg, rloo, grpo); "
                               f"{config.algo} has none. Drop --tensorboard.")
        if args.tensorboard:  # before anything is trained or written
            require_tensorboard()
        result = run_rlhf(config, out=args.out, cache_dir=args.cache_dir, show_progress=not args.no_progress,
                          overwrite=args.overwrite, tensorboard=args.tensorboard)
    return 130 if result.run.status == "interrupted" else 0
