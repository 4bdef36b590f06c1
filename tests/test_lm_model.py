"""Facts about the LM pieces that need no training: tokenizer, causal mask, KV cache, the KL-penalised
rewards, the text batch's minibatches and the adaptive KL coefficient."""

import pytest
import torch

from minippo.errors import MinippoError
from minippo.lm.corpus import (
    EOT,
    Annotator,
    CharTokenizer,
    document_text,
    generate_corpus,
    load_corpus,
    make_prompts,
)
from minippo.lm.gpt import GPT, GPTConfig, sample, split_corpus, unigram_entropy
from minippo.lm.reward_model import bradley_terry_loss, response_ends
from minippo.lm.text_rollout import AdaptiveKLController, GPTActorCritic, TextBatch, kl_penalised_rewards
from minippo.rollout import compute_gae

torch.set_num_threads(1)


def test_corpus_is_deterministic_and_one_review_per_line():
    a, b = generate_corpus(50, seed=3), generate_corpus(50, seed=3)
    assert a == b != generate_corpus(50, seed=4)
    lines = a.split(EOT)[:-1]
    assert len(lines) == 50 and all(line.startswith("the ") and line.endswith(".") for line in lines)


def test_tokenizer_round_trip_and_eot_is_id_0():
    text = generate_corpus(20)
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.eot_id == 0 and tok.chars[0] == EOT
    assert CharTokenizer(tok.chars).encode("the soup") == tok.encode("the soup")


def test_unknown_character_raises_a_clear_error():
    tok = CharTokenizer.from_text("the soup was great.\n")
    with pytest.raises(MinippoError, match=r"'é' \(U\+00E9\).*corpus"):
        tok.encode("the soupé")


def test_load_corpus_errors(tmp_path):
    with pytest.raises(MinippoError, match="does not exist"):
        load_corpus(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\nna\xefve\n".encode("latin-1"))
    with pytest.raises(MinippoError, match="not UTF-8"):
        load_corpus(bad)
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    with pytest.raises(MinippoError, match="at least 2"):
        load_corpus(short)
    good = tmp_path / "good.txt"
    good.write_text("first line\r\n\nsecond line\n", encoding="utf-8")
    assert load_corpus(good) == "first line\nsecond line\n"


def test_annotator_counts_sentiment_and_unknown_words():
    annotator = Annotator(generate_corpus(200))
    assert annotator.gold_reward("the soup was great and the staff were kind.") == 2
    assert annotator.gold_reward("the soup was cold, but the view was lovely.") == 0
    assert annotator.gold_reward("the soup was greet.") == -1  # misspelt: unknown word
    tok = CharTokenizer.from_text(generate_corpus(200))
    row = [0] + tok.encode("the soup was great.") + [0] + tok.encode("the soup was awful")
    assert document_text(tok, row) == "the soup was great."


def test_prompts_start_with_eot():
    text = generate_corpus(100)
    tok = CharTokenizer.from_text(text)
    prompts = make_prompts(text, tok, 8)
    assert prompts.shape[1] == 9 and (prompts[:, 0] == 0).all()
    assert len({tok.decode(p) for p in prompts}) == len(prompts)
    with pytest.raises(MinippoError, match="prompt_chars"):
        make_prompts(text, tok, 500)


def test_unigram_entropy_and_split():
    ids = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 0])
    assert unigram_entropy(torch.tensor([1, 2, 1, 2]), 3) == pytest.approx(0.693147, abs=1e-5)  # ln 2
    train, val = split_corpus(ids, 0, 0.34)
    assert torch.equal(torch.cat([train, val]), ids) and train[-1] == 0  # cut at a document boundary


def tiny_gpt(vocab_size=11, block_size=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=16)).eval()


def test_causal_mask_later_tokens_never_change_earlier_logits():
    model = tiny_gpt()
    tokens = torch.randint(11, (3, 16))
    changed = tokens.clone()
    changed[:, 9:] = torch.randint(11, (3, 7))
    with torch.no_grad():
        a, _ = model(tokens)
        b, _ = model(changed)
    assert torch.allclose(a[:, :9], b[:, :9], atol=1e-6)
    assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_kv_cache_sampling_matches_one_full_forward_pass():
    model = tiny_gpt()
    prompts = torch.randint(11, (5, 4))
    tokens, log_probs = sample(model, prompts, 12, torch.Generator().manual_seed(0))
    assert tokens.shape == (5, 16) and torch.equal(tokens[:, :4], prompts)
    with torch.no_grad():
        logits, _ = model(tokens[:, :-1])
    recomputed = torch.log_softmax(logits[:, 3:], -1).gather(2, tokens[:, 4:, None]).squeeze(-1)
    assert torch.allclose(log_probs, recomputed, atol=1e-5)


def test_context_overflow_is_a_clear_error():
    with pytest.raises(MinippoError, match="block_size=16"):
        tiny_gpt()(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(MinippoError, match="multiple of n_head"):
        GPTConfig(vocab_size=5, n_head=3, n_embd=16)


def test_kl_penalised_rewards_sum_to_the_sequence_formula():
    T, N, beta = 6, 4, 0.3
    log_probs, ref_log_probs = -torch.rand(T, N) * 3, -torch.rand(T, N) * 3
    scores = torch.randn(N)
    ends = torch.tensor([5, 2, 0, 5])
    rewards = kl_penalised_rewards(log_probs, ref_log_probs, scores, ends, beta)
    # InstructGPT eq. 2, per response, summed by hand over the steps t ≤ end only.
    for i in range(N):
        kl_response = sum(float(log_probs[t, i] - ref_log_probs[t, i]) for t in range(int(ends[i]) + 1))
        assert rewards[:, i].sum().item() == pytest.approx(scores[i].item() - beta * kl_response, abs=1e-5)
        assert rewards[int(ends[i]) + 1:, i].eq(0).all()  # after the end: no reward, no penalty
    # The score sits at each response's last token, nowhere else.
    penalty = -beta * (log_probs - ref_log_probs)
    assert torch.allclose((rewards - penalty)[ends, torch.arange(N)], scores)


def test_response_ends():
    tokens = torch.tensor([[0, 5, 5, 0, 5], [0, 5, 5, 5, 5], [0, 5, 0, 0, 5]])
    assert response_ends(tokens, 2, 0).tolist() == [3, 4, 2]


def test_bradley_terry_loss():
    assert bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(0.6931, abs=1e-4)
    assert bradley_terry_loss(torch.tensor([5.0]), torch.tensor([-5.0])).item() < 1e-4


def test_adaptive_kl_moves_beta_towards_the_target():
    kl = AdaptiveKLController(0.1, target=5.0)
    kl.update(50.0)  # far above: error clipped to +0.2
    assert kl.beta == pytest.approx(0.1 * 1.02)
    kl.update(4.5)
    assert kl.beta == pytest.approx(0.1 * 1.02 * (1 + 0.1 * (4.5 / 5 - 1)))
    fixed = AdaptiveKLController(0.1)
    fixed.update(100.0)
    assert fixed.beta == 0.1


def make_text_batch(policy, P=3, T=5, N=6):
    tokens = torch.randint(1, 11, (N, P + T))
    with torch.no_grad():
        logits, values = policy.forward_completion(tokens, T)
    actions = tokens[:, P:].T
    log_probs = torch.log_softmax(logits, -1).gather(2, tokens[:, P:, None]).squeeze(-1).T
    rewards = torch.randn(T, N)
    dones = torch.zeros(T, N)
    dones[-1] = 1
    values = values.T
    next_values = torch.cat([values[1:], torch.zeros(1, N)])
    batch = TextBatch(obs=tokens, actions=actions, log_probs=log_probs, values=values, rewards=rewards,
                      dones=dones, next_values=next_values, valid=torch.ones(T, N, dtype=torch.bool))
    batch.advantages, batch.returns = compute_gae(rewards, values, next_values, dones, 1.0, 0.95)
    return batch


def test_text_batch_minibatches_are_whole_sequences_and_evaluate_matches_their_shape():
    policy = GPTActorCritic(tiny_gpt())
    batch = make_text_batch(policy)
    assert batch.num_steps == 30
    seen = []
    for mb in batch.minibatches(minibatch_size=10, generator=torch.Generator().manual_seed(0)):
        assert mb.obs.shape == (2, 8) and mb.actions.shape == (5, 2)  # 10 tokens // T=5 → 2 sequences
        dist, values = policy.evaluate(mb)
        assert dist.batch_shape == mb.actions.shape == values.shape == mb.advantages.shape
        # The minibatch is sliced consistently: its log-probs are those of its own sequences.
        assert torch.allclose(dist.log_prob(mb.actions), mb.log_probs, atol=1e-5)
        seen += [tuple(row.tolist()) for row in mb.obs]
    assert sorted(seen) == sorted(tuple(row.tolist()) for row in batch.obs)
    assert next(batch.minibatches(1)).actions.shape == (5, 1)  # fewer tokens than T: one sequence


def test_policy_parameters_split_by_name_and_value_head_does_not_touch_the_lm():
    policy = GPTActorCritic(tiny_gpt().requires_grad_(False))
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert any(n.startswith("value_head") for n in names) and any(n.startswith("gpt.") for n in names)
    batch = make_text_batch(policy)
    _, values = policy.evaluate(batch.all())
    ((values - batch.returns) ** 2).mean().backward()
    assert all(p.grad is None for p in policy.gpt.parameters())  # values read detached hidden states


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sampling_and_evaluate_on_cuda():
    model = tiny_gpt().cuda()
    policy = GPTActorCritic(model)
    prompts = torch.randint(11, (4, 3), device="cuda")
    tokens, log_probs = sample(model, prompts, 6, torch.Generator(device="cuda").manual_seed(0))
    assert tokens.device.type == "cuda" and log_probs.device.type == "cuda"
    logits, values = policy.forward_completion(tokens, 6)
    assert logits.shape == (4, 6, 11) and values.device.type == "cuda"
