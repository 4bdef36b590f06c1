"""DPO: its loss against a hand computation, its gradient against the closed form, the sequence
log-probabilities against a token-by-token loop, the shared preference data, and a short run on the tiny
pipeline that learns the held-out preferences and raises the gold reward over π_ref.
"""

import copy
import csv
import dataclasses
import json
import math

import pytest
import torch

from minippo.errors import MinippoError, NonFiniteLossError
from minippo.lm import dpo, reward_model
from minippo.lm.dpo import DPOConfig, dpo_loss, pair_log_probs, run_dpo, sequence_log_probs
from minippo.lm.gpt import sample
from minippo.lm.reward_model import RewardModelConfig, make_preference_pairs, preference_data, response_ends
from minippo.logger import load_checkpoint

torch.set_num_threads(1)


def test_dpo_loss_by_hand():
    # Pair 1: log π/π_ref of y_w = +1, of y_l = −1 → margin β·2 = 1.
    # Pair 2: log π/π_ref of y_w = −2, of y_l = +1 → margin β·(−3) = −1.5.
    loss, stats = dpo_loss(torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0]),
                           torch.tensor([-11.0, -18.0]), torch.tensor([-11.0, -16.0]), beta=0.5)
    # −log σ(1) = log(1 + e^−1) = 0.3132617, −log σ(−1.5) = log(1 + e^1.5) = 1.7014133
    assert loss.item() == pytest.approx((0.3132617 + 1.7014133) / 2, abs=1e-6)
    assert stats == pytest.approx({"accuracy": 0.5, "margin": -0.25, "chosen_reward": 0.5 * (1 - 2) / 2,
                                   "rejected_reward": 0.5 * (-1 + 1) / 2})


def test_dpo_gradient_matches_the_closed_form():
    """∂L/∂log π(y_w) = −β σ(−margin) / n and ∂L/∂log π(y_l) = +β σ(−margin) / n (Rafailov et al. §4)."""
    generator = torch.Generator().manual_seed(0)
    n, beta = 7, 0.3
    chosen, rejected, ref_chosen, ref_rejected = -30 * torch.rand(4, n, generator=generator)  # nats
    chosen.requires_grad_()
    rejected.requires_grad_()
    loss, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    loss.backward()
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
    weight = beta * torch.sigmoid(-margin) / n
    assert torch.allclose(chosen.grad, -weight, atol=1e-7)
    assert torch.allclose(rejected.grad, weight, atol=1e-7)


def test_with_pi_equal_to_pi_ref_the_loss_is_log_2_and_every_pair_pulls_equally(pipeline):
    stages, beta = pipeline["stages"], 0.1
    P = pipeline["prompts"].shape[1]
    train, _ = preference_data(stages.reference, stages.prompts, stages.tokenizer, stages.annotator,
                               stages.config.completion_len, RewardModelConfig(num_pairs=40), seed=1)
    policy = copy.deepcopy(stages.reference).requires_grad_(True)
    chosen, rejected = pair_log_probs(policy, train, P)
    chosen.retain_grad()
    rejected.retain_grad()
    with torch.no_grad():
        ref_chosen, ref_rejected = pair_log_probs(stages.reference, train, P)
    loss, stats = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert stats["accuracy"] == 0.0 and stats["margin"] == 0.0
    loss.backward()
    # σ(0) = 1/2: each pair's gradient is ∓β/(2n), whatever its texts.
    assert torch.allclose(chosen.grad, torch.full((40,), -beta / 2 / 40))
    assert torch.allclose(rejected.grad, torch.full((40,), beta / 2 / 40))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())


def test_sequence_log_probs_equals_a_token_by_token_loop_and_ignores_tokens_after_the_end(pipeline):
    reference, tokenizer = pipeline["reference"], pipeline["tokenizer"]
    prompts, T = pipeline["prompts"][:12], pipeline["stages"].config.completion_len
    P = prompts.shape[1]
    tokens, _ = sample(reference, prompts, T, torch.Generator().manual_seed(2))
    ends = response_ends(tokens, P, tokenizer.eot_id)
    assert (ends < P + T - 1).sum() >= 3, "the test needs responses that end early"
    with torch.no_grad():
        fast = sequence_log_probs(reference, tokens, P, ends)
        for i in range(len(tokens)):
            total = 0.0
            for t in range(P, int(ends[i]) + 1):  # each response token, the end-of-text token included
                logits, _ = reference(tokens[i:i + 1, :t])
                total += torch.log_softmax(logits[0, -1], -1)[tokens[i, t]].item()
            assert fast[i].item() == pytest.approx(total, abs=1e-4)
        # Whatever follows the end-of-text token does not count.
        scrambled = tokens.clone()
        after = torch.arange(tokens.shape[1]) > ends[:, None]
        scrambled[after] = torch.randint(1, tokenizer.vocab_size, (int(after.sum()),),
                                         generator=torch.Generator().manual_seed(4))
        assert not torch.equal(scrambled, tokens)
        assert torch.allclose(sequence_log_probs(reference, scrambled, P, ends), fast, atol=1e-5)


def test_preference_data_gives_the_same_pairs_for_the_same_seed(pipeline, monkeypatch):
    stages = pipeline["stages"]
    config = RewardModelConfig(num_pairs=40, epochs=1, batch_size=16)
    args = (stages.reference, stages.prompts, stages.tokenizer, stages.annotator,
            stages.config.completion_len, config)
    (train, val), (train_again, val_again) = preference_data(*args, seed=3), preference_data(*args, seed=3)
    assert len(train) == 40 and len(val) == 10
    for name, value in vars(train).items():
        assert torch.equal(value, getattr(train_again, name)) and torch.equal(getattr(val, name),
                                                                              getattr(val_again, name))
    assert not torch.equal(preference_data(*args, seed=4)[0].chosen, train.chosen)
    # They are make_preference_pairs' pairs of a generator seeded with ``seed``, split 4 : 1.
    pairs = make_preference_pairs(*args[:4], 50, stages.config.completion_len, config.temperature,
                                  torch.Generator().manual_seed(3))
    assert torch.equal(pairs.chosen, torch.cat([train.chosen, val.chosen]))

    # The reward model is trained on exactly these pairs.
    made = []

    def spy(*a, **k):
        made.append(preference_data(*a, **k))
        return made[-1]

    monkeypatch.setattr(reward_model, "preference_data", spy)
    _, stats = reward_model.train_reward_model(*args, seed=3, log=None)
    assert len(made) == 1 and torch.equal(made[0][0].chosen, train.chosen) and stats["num_pairs"] == 40


def small_stages(stages, num_pairs: int):
    """The pipeline's stages with fewer preference pairs: the first 1024 are the reward model's first
    1024 training pairs (make_preference_pairs draws them in chunks of 512), the rest held out."""
    reward = dataclasses.replace(stages.config.reward, num_pairs=num_pairs)
    return dataclasses.replace(stages, config=dataclasses.replace(stages.config, reward=reward))


def test_short_dpo_run_learns_held_out_preferences_and_raises_gold_reward(pipeline, tmp_path):
    stages = small_stages(pipeline["stages"], 1000)
    config = DPOConfig(learning_rate=3e-5, epochs=1, batch_size=32)
    lines = []
    summary = run_dpo(stages, config, beta=0.1, run_dir=tmp_path, seed=0, show_progress=False,
                      log=lines.append)
    before, after, held_out = summary["before"], summary["after"], summary["held_out"]
    # On this seed: held-out accuracy 0.69 (labels) and 0.82 (gold), where π_ref's implicit reward (all
    # margins 0) has 0 and 0.05; gold reward −0.21 → 0.70, RM score 0.04 → 0.68, at a KL of 0.8 nats.
    assert held_out["accuracy"] > 0.6 and held_out["gold_accuracy"] > 0.75, held_out
    assert after["gold_reward"] > before["gold_reward"] + 0.4, (before, after)
    assert after["rm_score"] > before["rm_score"] + 0.3, (before, after)
    assert 0 < after["kl_ref"] < 5, after

    assert summary["algo"] == "dpo" and summary["status"] == "finished" and summary["steps"] == 1000 // 32 + 1
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["before"] == stages.evaluate(stages.reference)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, summary["steps"] + 1))
    assert [r["val_accuracy"] != "" for r in rows] == [False] * (len(rows) - 1) + [True]
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(held_out["accuracy"])
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["beta"] == 0.1
    assert checkpoint["policy"].keys() == stages.reference.state_dict().keys()
    assert not any(p.requires_grad for p in stages.reference.parameters())  # π_ref stayed frozen
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"]["learning_rate"] == 3e-5
    assert any("implicit reward" in line for line in lines)


def test_a_nan_loss_stops_dpo_with_a_clear_error(pipeline, tmp_path, monkeypatch):
    stages = small_stages(pipeline["stages"], 40)

    def nan_loss(*args):
        loss, stats = dpo_loss(*args)
        return loss * math.nan, stats

    monkeypatch.setattr(dpo, "dpo_loss", nan_loss)
    with pytest.raises(NonFiniteLossError, match="DPO loss is nan at step 1 .*learning rate"):
        run_dpo(stages, DPOConfig(batch_size=16), beta=0.1, run_dir=tmp_path, show_progress=False, log=None)
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(learning_rate=0.0), "learning_rate=0.0"), (dict(epochs=0), "epochs=0"),
    (dict(epochs=1.5), "epochs=1.5 is not an int"), (dict(batch_size=0), "batch_size=0"),
    (dict(max_grad_norm=-1.0), "max_grad_norm=-1.0"),
])
def test_bad_dpo_settings_are_refused(kwargs, message):
    with pytest.raises(MinippoError, match=message):
        DPOConfig(**kwargs)


def test_beta_must_be_positive(pipeline, tmp_path):
    with pytest.raises(MinippoError, match="beta=0"):
        run_dpo(pipeline["stages"], DPOConfig(), beta=0, run_dir=tmp_path, log=None)
