"""The RLHF pipeline on a tiny model: pretraining, the reward model, the text rollout, a short RL run,
and the promise that the very same update classes train Gymnasium and text policies.

One module-scoped fixture pretrains the tiny GPT and its reward model once (about a minute on one core);
the CLI test reuses them through the on-disk cache.
"""

import copy
import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from cli_errors import one_error_line
from lm_pipeline import CLI_HP, CONFIG  # noqa: E402  (the `pipeline` and `cache_dir` fixtures: conftest.py)

from minippo import ppo, trpo, vpg
from minippo.cli import main
from minippo.envs import make_vec_env
from minippo.lm.gpt import PretrainConfig
from minippo.lm.reward_model import RewardModelConfig, response_ends
from minippo.lm.rlhf import (
    DEFAULTS,
    config_from_overrides,
    evaluate_samples,
    run_rlhf,
)
from minippo.lm.text_rollout import AdaptiveKLController, GPTActorCritic, TextBatch, TextRollout
from minippo.logger import load_checkpoint
from minippo.policies import MLPActorCritic
from minippo.rollout import GymRollout, compute_gae
from minippo.train import ALGORITHMS, run_loop

torch.set_num_threads(1)

def make_source(pipeline, num_sequences=32, beta=0.1, seed=0):
    return TextRollout(pipeline["prompts"], pipeline["reference"], pipeline["reward_model"],
                       pipeline["tokenizer"], pipeline["annotator"], num_sequences, CONFIG.completion_len,
                       AdaptiveKLController(beta), seed=seed)


def test_pretraining_loss_falls_far_below_the_unigram_entropy(pipeline):
    stats = pipeline["pretrain_stats"]
    assert stats["val_loss"] < 0.25 * stats["unigram_entropy"], stats
    assert not any(p.requires_grad for p in pipeline["reference"].parameters())  # π_ref is frozen


def test_reward_model_agrees_with_the_annotator_on_held_out_pairs(pipeline):
    stats = pipeline["reward_stats"]
    assert stats["val_accuracy"] >= 0.85, stats
    assert stats["label_accuracy"] < 0.97  # the labels it learned from were noisy


def test_text_batch_log_probs_equal_one_forward_pass_of_evaluate(pipeline):
    policy = GPTActorCritic(pipeline["reference"])
    source = make_source(pipeline, num_sequences=8, beta=0.2)
    batch = source.collect(policy)
    T, N = CONFIG.completion_len, 8
    assert isinstance(batch, TextBatch) and batch.num_steps == T * N
    assert batch.actions.shape == batch.log_probs.shape == batch.rewards.shape == (T, N)
    assert batch.obs.shape == (N, CONFIG.prompt_chars + 1 + T)
    batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                  batch.dones, 1.0, 0.95)
    with torch.no_grad():
        dist, values = policy.evaluate(batch.all())
    assert torch.allclose(dist.log_prob(batch.actions), batch.log_probs, atol=1e-4)
    assert torch.allclose(values, batch.values, atol=1e-5)
    # Episode structure: one episode per response, done and no bootstrap at its last token, which is its
    # first end-of-text token (or token T − 1); the tokens after it are not transitions.
    ends = response_ends(batch.obs, batch.obs.shape[1] - T, pipeline["tokenizer"].eot_id)
    ends -= batch.obs.shape[1] - T
    assert (ends < T - 1).any(), "the test needs some responses that end early"
    for i in range(N):
        e = int(ends[i])
        assert batch.dones[:, i].tolist() == [0.0] * e + [1.0] + [0.0] * (T - 1 - e)
        assert batch.valid[:, i].tolist() == [True] * (e + 1) + [False] * (T - 1 - e)
        assert batch.next_values[e, i] == 0
        assert torch.equal(batch.next_values[:e, i], batch.values[1:e + 1, i])
        assert batch.episode_lengths[i] == e + 1
    # The policy is π_ref here, so the KL penalty is ~0 and each return is the reward-model score.
    assert abs(batch.info["kl_ref"]) < 1e-3 and batch.info["kl_ref_exact"] < 1e-4
    assert batch.info["rm_score"] == pytest.approx(sum(batch.episode_returns) / N, abs=1e-3)
    assert set(batch.info) >= {"rm_score", "gold_reward", "kl_ref", "beta", "token_entropy"}


def test_short_ppo_run_raises_gold_reward_at_bounded_kl(pipeline, tmp_path):
    p = pipeline
    torch.manual_seed(0)
    policy = GPTActorCritic(p["reference"])
    cls, config_cls, _ = ALGORITHMS["ppo"]
    algorithm = cls(policy, config_cls(**{**DEFAULTS["ppo"], "minibatch_size": 8 * CONFIG.completion_len}),
                    seed=0)
    result = run_loop(make_source(p), policy, algorithm, num_iterations=15, gamma=1.0, gae_lambda=0.95,
                      run_dir=tmp_path, checkpoint_extra=lambda: {}, show_progress=False)
    assert result.iterations == 15 and (tmp_path / "progress.csv").exists()
    evaluate = lambda model: evaluate_samples(model, p["reference"], p["reward_model"], p["prompts"],  # noqa: E731
                                              p["tokenizer"], p["annotator"], CONFIG.completion_len, 256)
    before, after = evaluate(p["reference"]), evaluate(policy.gpt)
    assert after["rm_score"] > before["rm_score"] + 0.3, (before, after)
    assert after["gold_reward"] > before["gold_reward"] + 0.3, (before, after)
    assert 0 < after["kl_ref"] < 15.0, after


def gym_batch(policy, envs):
    batch = GymRollout(envs, num_steps=16, seed=0).collect(policy)
    batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                  batch.dones, 0.99, 0.95)
    return batch


@pytest.mark.parametrize("algo", ["vpg", "trpo", "ppo"])
def test_the_same_algorithm_classes_train_gymnasium_and_text(pipeline, algo):
    module = {"vpg": vpg, "trpo": trpo, "ppo": ppo}[algo]
    cls, config_cls, _ = ALGORITHMS[algo]
    assert cls is getattr(module, algo.upper()) and config_cls is getattr(module, f"{algo.upper()}Config")

    envs = make_vec_env("CartPole-v1", 2)
    torch.manual_seed(0)
    mlp = MLPActorCritic(4, envs.single_action_space)
    text_policy = GPTActorCritic(pipeline["reference"])
    hp = {**DEFAULTS[algo], **({"num_epochs": 1} if algo == "ppo" else {"value_iterations": 2})}
    for policy, batch in ((mlp, gym_batch(mlp, envs)), (text_policy, None)):
        if batch is None:
            batch = make_source(pipeline, num_sequences=8).collect(policy)
            batch.advantages, batch.returns = compute_gae(batch.rewards, batch.values, batch.next_values,
                                                          batch.dones, 1.0, 0.95)
        before = copy.deepcopy(policy.state_dict())
        stats = cls(policy, config_cls(**hp), seed=0).update(batch, progress=0.0)
        assert all(math.isfinite(v) for v in stats.values()), stats
        changed = [k for k, v in policy.state_dict().items() if not torch.equal(v, before[k])]
        assert any(not k.startswith(("critic", "value_head")) for k in changed), (algo, changed)
    envs.close()


def test_cli_second_run_starts_at_rl_from_the_cache(pipeline, cache_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rlhf", "--algo", "ppo", "--iterations", "2", "--device", "cpu", "--out", str(out),
            "--cache-dir", str(cache_dir), "--no-progress"] + [a for hp in CLI_HP for a in ("--hp", hp)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pretrained model loaded" in printed and "reward model loaded" in printed
    assert "before RL" in printed and "after RL" in printed
    for name in ("config.json", "progress.csv", "checkpoint.pt", "summary.json"):
        assert (out / name).exists(), name
    header = (out / "progress.csv").read_text().splitlines()[0].split(",")
    assert {"rm_score", "gold_reward", "kl_ref", "beta", "approx_kl", "clip_fraction"} <= set(header)


@pytest.mark.parametrize("args, message", [
    (["--beta", "-1"], "beta=-1"),
    (["--corpus", "/nonexistent/corpus.txt"], "does not exist"),
    (["--hp", "model.n_layers=3"], "Unknown setting 'model.n_layers'"),
    (["--hp", "completion_len=100"], "must fit the context"),
    (["--hp", "learning_rat=1e-3"], "Unknown hyperparameter"),
    (["--hp", "seed=1"], "use --seed instead"),
])
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path, capsys):
    assert main(["rlhf", "--out", str(tmp_path / "r"), "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("minippo: error:") and message in err


def test_config_from_overrides_routes_keys():
    config = config_from_overrides("trpo", beta=None, num_sequences=16, **{"model.n_embd": 32},
                                   max_kl=0.02)
    assert config.num_sequences == 16 and config.model["n_embd"] == 32 and config.beta == 0.1
    assert config.algorithm_config().max_kl == 0.02
    assert dataclasses.asdict(config)["pretrain"]["steps"] == PretrainConfig().steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_rlhf_runs_on_cuda(tmp_path):
    config = dataclasses.replace(CONFIG, device="cuda", pretrain=PretrainConfig(steps=50, eval_every=50),
                                 reward=RewardModelConfig(num_pairs=64, epochs=1))
    result = run_rlhf(config, out=tmp_path / "run", cache_dir=tmp_path / "cache", show_progress=False,
                      log=None)
    assert result.run.iterations == 2 and math.isfinite(result.summary["after"]["kl_ref"])


def _moved_policy(pipeline, seed=0):
    """A copy of π_ref with perturbed weights, so that KL(π ‖ π_ref) and the ratios are not trivial."""
    policy = GPTActorCritic(pipeline["reference"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return policy


def _scramble_after_the_end(tokens, prompt_len, eot_id, vocab_size, seed=0):
    """The same sequences with every token after each response's end replaced by a random one."""
    ends = response_ends(tokens, prompt_len, eot_id)
    g = torch.Generator().manual_seed(seed)
    scrambled = tokens.clone()
    after = torch.arange(tokens.shape[1]).unsqueeze(0) > ends.unsqueeze(1)
    scrambled[after] = torch.randint(0, vocab_size, (int(after.sum()),), generator=g)
    return scrambled, after


def test_kl_rewards_and_losses_ignore_the_tokens_after_the_end_of_text(pipeline):
    policy = _moved_policy(pipeline)
    source = make_source(pipeline, num_sequences=16, beta=0.2)
    # Sequences from π_ref (whose reviews end well before T), evaluated under the moved policy.
    tokens, _ = source.generate(GPTActorCritic(pipeline["reference"]),
                                pipeline["prompts"][torch.arange(16) % len(pipeline["prompts"])])
    P = tokens.shape[1] - CONFIG.completion_len
    scrambled, after = _scramble_after_the_end(tokens, P, pipeline["tokenizer"].eot_id,
                                               pipeline["tokenizer"].vocab_size)
    assert after.sum() > 50 and not torch.equal(scrambled, tokens)
    batches = [source.batch_from_tokens(policy, t) for t in (tokens, scrambled)]
    for b in batches:
        b.advantages, b.returns = compute_gae(b.rewards, b.values, b.next_values, b.dones, 1.0, 0.95)
    a, b = batches
    assert torch.equal(a.valid, b.valid)
    for key in ("kl_ref", "kl_ref_exact", "rm_score", "token_entropy", "response_length"):
        assert a.info[key] == pytest.approx(b.info[key], rel=1e-5, abs=1e-6), key
    assert abs(a.info["kl_ref"]) > 0.1  # the check means something: the policy is not π_ref
    for field in ("rewards", "values", "log_probs", "advantages", "returns"):
        assert torch.allclose(getattr(a, field)[a.valid], getattr(b, field)[b.valid], atol=1e-5), field
    assert a.episode_returns == pytest.approx(b.episode_returns, abs=1e-5)
    # The three updates' losses and statistics, on the whole batch.
    for algo in ("ppo", "vpg", "trpo"):
        cls, config_cls, _ = ALGORITHMS[algo]
        stats = []
        for batch in batches:
            p = copy.deepcopy(policy)
            stats.append(cls(p, config_cls(**DEFAULTS[algo]), seed=0).update(batch, progress=0.0))
        for key, value in stats[0].items():
            assert value == pytest.approx(stats[1][key], rel=1e-4, abs=1e-6), (algo, key)


def test_a_response_return_is_its_score_minus_beta_times_its_kl_over_the_response(pipeline):
    policy = _moved_policy(pipeline, seed=1)
    beta = 0.3
    source = make_source(pipeline, num_sequences=8, beta=beta)
    batch = source.collect(policy)
    T = CONFIG.completion_len
    P = batch.obs.shape[1] - T
    ends = response_ends(batch.obs, P, pipeline["tokenizer"].eot_id)
    with torch.no_grad():
        scores = pipeline["reward_model"](batch.obs, ends)
        logits, _ = policy.gpt(batch.obs[:, :-1])
        ref_logits, _ = pipeline["reference"](batch.obs[:, :-1])
    returns = compute_gae(batch.rewards, batch.values, batch.next_values, batch.dones, 1.0, 1.0)[1]
    for i in range(8):
        # KL(π ‖ π_ref) of this response, one token at a time up to and including its end.
        kl = 0.0
        for pos in range(P, int(ends[i]) + 1):
            token = batch.obs[i, pos]
            kl += float(torch.log_softmax(logits[i, pos - 1], -1)[token]
                        - torch.log_softmax(ref_logits[i, pos - 1], -1)[token])
        expected = float(scores[i]) - beta * kl
        assert batch.episode_returns[i] == pytest.approx(expected, abs=1e-4)
        assert returns[0, i].item() == pytest.approx(expected, abs=1e-4)  # GAE(γ=1, λ=1) return at t = 0


def test_no_eos_score_replaces_the_score_of_unfinished_responses_only(pipeline):
    policy = _moved_policy(pipeline, seed=2)
    tokens, _ = make_source(pipeline).generate(GPTActorCritic(pipeline["reference"]), pipeline["prompts"][:8])
    P = tokens.shape[1] - CONFIG.completion_len
    eot = pipeline["tokenizer"].eot_id
    tokens[0, P:] = (eot + 1) % pipeline["tokenizer"].vocab_size  # response 0 never ends
    tokens[1, P + 3] = eot  # response 1 ends at step 3
    plain = make_source(pipeline).batch_from_tokens(policy, tokens)
    trick = TextRollout(pipeline["prompts"], pipeline["reference"], pipeline["reward_model"],
                        pipeline["tokenizer"], pipeline["annotator"], 8, CONFIG.completion_len,
                        AdaptiveKLController(0.1), no_eos_score=-1.0).batch_from_tokens(policy, tokens)
    assert plain.valid[:, 0].all() and plain.dones[-1, 0] == 1  # the unfinished one ends at token T
    with torch.no_grad():
        scores = pipeline["reward_model"](tokens, response_ends(tokens, P, eot))
    unfinished = ~(tokens[:, P:] == eot).any(1)  # [8]
    assert unfinished[0] and not unfinished[1]
    # Only the unfinished responses' last rewards change: their score is replaced by −1.
    expected = plain.rewards.clone()
    expected[-1, unfinished] += -1.0 - scores[unfinished]
    assert torch.allclose(trick.rewards, expected, atol=1e-5)
    assert trick.info["eos_fraction"] == pytest.approx(1 - unfinished.float().mean().item())


# --- Resume and overwrite (issue 12) -----------------------------------------------------------------

def _rows_without_times(run_dir: Path) -> list[dict]:
    with open(run_dir / "progress.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("time_s", "steps_per_s")}
                for row in csv.DictReader(f)]


def test_rlhf_resume_writes_the_rows_of_the_uninterrupted_run(pipeline, cache_dir, tmp_path, capsys):
    """Nothing is in flight between two RLHF iterations, so a run stopped after iteration 2 and resumed
    writes exactly the rows (and weights) of a run never stopped: β, the optimiser, every RNG restored."""
    hp = [a for item in CLI_HP for a in ("--hp", item)] + ["--kl-target", "0.5", "--beta", "0.2"]
    common = ["rlhf", "--algo", "ppo", "--device", "cpu", "--cache-dir", str(cache_dir), "--no-progress"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main([*common, "--iterations", "4", "--out", str(whole), *hp]) == 0
    assert main([*common, "--iterations", "2", "--out", str(parts), *hp]) == 0
    capsys.readouterr()
    assert main(["rlhf", "--resume", str(parts), "--iterations", "4", "--no-progress"]) == 0
    assert "reward model loaded" in capsys.readouterr().out  # the cached stages were reused

    rows = _rows_without_times(whole)
    assert len(rows) == 4 and len({row["beta"] for row in rows}) == 4  # β adapted every iteration
    assert _rows_without_times(parts) == rows
    a, b = load_checkpoint(whole), load_checkpoint(parts)
    assert a["beta"] == b["beta"] and all(torch.equal(a["policy"][k], b["policy"][k]) for k in a["policy"])
    assert json.loads((parts / "summary.json").read_text())["iterations"] == 4


def test_rlhf_out_on_an_existing_run_is_refused_and_resume_refuses_new_settings(pipeline, cache_dir,
                                                                               tmp_path, capsys):
    out = tmp_path / "run"
    args = ["rlhf", "--iterations", "1", "--device", "cpu", "--out", str(out), "--cache-dir", str(cache_dir),
            "--no-progress"] + [a for hp in CLI_HP for a in ("--hp", hp)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["rlhf", "--resume", str(out), "--beta", "0.3", "--no-progress"]) == 2
    assert "drop --beta" in one_error_line(capsys)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 2
    assert "minippo rlhf --resume" in one_error_line(capsys)
    assert main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("algo, extra", [("best-of-n", ["--hp", "n=4"]), ("dpo", ["--hp", "epochs=1"])])
def test_cli_runs_best_of_n_and_dpo_on_the_cached_stages(algo, extra, pipeline, cache_dir, tmp_path, capsys):
    out = tmp_path / algo
    args = ["rlhf", "--algo", algo, "--device", "cpu", "--out", str(out), "--cache-dir", str(cache_dir),
            "--no-progress", *extra] + [a for hp in CLI_HP for a in ("--hp", hp)]
    assert main(args) == 0
    assert "reward model loaded" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == algo and summary["status"] == "finished"
    before, after = summary["before"], summary["after"]
    assert after["rm_score"] > before["rm_score"] + 0.2, after  # seed 0: best of 4 +1.00, DPO +0.64
    assert after["gold_reward"] > before["gold_reward"] + 0.3, after  # +1.06, DPO +0.85
    if algo == "best-of-n":  # its KL is the analytic log n − (n − 1)/n
        assert summary["after"]["kl_ref"] == pytest.approx(math.log(4) - 3 / 4)
    else:
        assert main(["rlhf", "--resume", str(out), "--no-progress"]) == 2
        assert "only the RL methods can be resumed" in one_error_line(capsys)
