"""What may be reused, and only for what made it: the pretrained model and reward model (cached on disk)
must come out the same whichever way they were reached (logger or not, cache cold or warm), their cache
keys must name the device, the figure runs get one folder per config, and the reward model's accuracy is
also reported on held-out pairs whose texts training never saw.

Tiny settings (a 1-layer GPT pretrained for 200 steps on 300 reviews): a few seconds in all.
"""

import dataclasses
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from minippo.errors import MinippoError
from minippo.lm import figures
from minippo.lm.corpus import Annotator, CharTokenizer, load_corpus, make_prompts
from minippo.lm.gpt import GPT, GPTConfig, PretrainConfig, pretrain
from minippo.lm.reward_model import (
    RewardModelConfig,
    make_preference_pairs,
    pairwise_accuracy,
    train_reward_model,
    unseen_pairs,
)
from minippo.lm.rlhf import (
    RLHFConfig,
    pretrain_cache_path,
    pretrained_gpt,
    reward_cache_path,
    trained_reward_model,
)
from minippo.logger import write_json

torch.set_num_threads(1)

CPU = torch.device("cpu")
# dropout > 0: its masks come from torch's global RNG, the state that differs between cold and warm caches.
CONFIG = RLHFConfig(algo="ppo", iterations=1, seed=0, device="cpu", num_documents=300, prompt_chars=8,
                    completion_len=16, num_sequences=8,
                    model=dict(block_size=32, n_layer=1, n_head=2, n_embd=32, dropout=0.1),
                    pretrain=PretrainConfig(steps=200, batch_size=32, eval_every=50),
                    reward=RewardModelConfig(num_pairs=40, epochs=1, batch_size=16))


@pytest.fixture(scope="module")
def data():
    corpus = load_corpus(None, CONFIG.num_documents, CONFIG.seed)
    tokenizer = CharTokenizer.from_text(corpus)
    return SimpleNamespace(corpus=corpus, tokenizer=tokenizer, annotator=Annotator(corpus),
                           prompts=make_prompts(corpus, tokenizer, CONFIG.prompt_chars))


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    differ = [name for name in a if not torch.equal(a[name], b[name])]
    assert not differ, differ


def test_pretrained_weights_do_not_depend_on_the_logger(data):
    def pretrained_state(log):
        torch.manual_seed(CONFIG.seed)
        gpt = GPT(GPTConfig(vocab_size=data.tokenizer.vocab_size, **CONFIG.model))
        ids = torch.tensor(data.tokenizer.encode(data.corpus), dtype=torch.long)
        stats = pretrain(gpt, ids, data.tokenizer.eot_id, CONFIG.pretrain, seed=CONFIG.seed, log=log)
        return gpt.state_dict(), stats

    lines = []
    silent, silent_stats = pretrained_state(None)
    logged, logged_stats = pretrained_state(lines.append)
    assert len(lines) == CONFIG.pretrain.steps // CONFIG.pretrain.eval_every  # the estimates did run
    assert_same_weights(silent, logged)
    # The final estimates draw their own, re-seeded windows: reproducible too.
    assert silent_stats["val_loss"] == logged_stats["val_loss"]


def test_reward_model_is_the_same_after_a_cold_and_a_warm_pretraining_cache(data, tmp_path):
    def both_stages(cache_dir):
        gpt, pretrain_stats = pretrained_gpt(data.corpus, data.tokenizer, CONFIG, CPU, cache_dir, log=None)
        reward_model, reward_stats = trained_reward_model(gpt, data.prompts, data.tokenizer, data.annotator,
                                                          data.corpus, CONFIG, cache_dir, log=None)
        return pretrain_stats["cached"], reward_stats["cached"], reward_model.state_dict()

    cold_dir, warm_dir = tmp_path / "cold", tmp_path / "warm"
    pretrain_cached, reward_cached, cold = both_stages(cold_dir)  # pretraining has just run
    assert not pretrain_cached and not reward_cached
    pretrain_file = pretrain_cache_path(cold_dir, data.corpus, data.tokenizer, CONFIG, CPU)
    gpt_config = GPTConfig(vocab_size=data.tokenizer.vocab_size, **CONFIG.model)
    assert pretrain_file.exists()
    assert reward_cache_path(cold_dir, data.corpus, gpt_config, CONFIG, CPU).exists()

    warm_dir.mkdir()
    shutil.copy(pretrain_file, warm_dir)  # the pretrained model only: the reward model is trained again
    pretrain_cached, reward_cached, warm = both_stages(warm_dir)
    assert pretrain_cached and not reward_cached
    assert_same_weights(cold, warm)


def test_cache_keys_name_the_device_type(data, tmp_path):
    gpt_config = GPTConfig(vocab_size=data.tokenizer.vocab_size, **CONFIG.model)

    def paths(device, config=CONFIG):  # building the paths needs no GPU, even for "cuda"
        return (pretrain_cache_path(tmp_path, data.corpus, data.tokenizer, config, device),
                reward_cache_path(tmp_path, data.corpus, gpt_config, config, device))

    cpu, cuda = paths("cpu"), paths("cuda")
    assert cpu == paths(CPU) and cuda == paths("cuda:0") == paths(torch.device("cuda", 1))
    assert cpu[0] != cuda[0] and cpu[1] != cuda[1]
    assert [p.name.split("-")[0] for p in cpu] == ["pretrain", "reward"]
    assert set(cpu).isdisjoint(paths("cpu", dataclasses.replace(CONFIG, seed=1)))


def test_figure_runs_get_one_folder_per_config_and_never_reuse_another(tmp_path, monkeypatch):
    runs = []

    def fake_run_rlhf(config, out, cache_dir, show_progress, overwrite=False):  # what run_rlhf leaves
        runs.append(out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", {"rlhf": dataclasses.asdict(config), "algorithm": {}})
        (out / "progress.csv").write_text("iteration,rm_score\n1,0.5\n")
        write_json(out / "summary.json", {"status": "finished", "iterations": config.iterations})
        return SimpleNamespace(run=SimpleNamespace(status="finished"))

    monkeypatch.setattr(figures, "run_rlhf", fake_run_rlhf)
    cache = tmp_path / "cache"
    base = RLHFConfig(algo="ppo", beta=0.1, iterations=60, seed=0, device="cpu")
    longer, reseeded = dataclasses.replace(base, iterations=120), dataclasses.replace(base, seed=1)
    folders = [figures.run_folder(tmp_path, c) for c in (base, longer, reseeded)]
    assert len(set(folders)) == 3 and all(f.name.startswith("ppo-beta0.1-") for f in folders)

    rows, summary = figures.ensure_run(tmp_path, base, cache)
    assert rows == [{"iteration": 1.0, "rm_score": 0.5}] and summary["iterations"] == 60
    assert figures.ensure_run(tmp_path, longer, cache)[1]["iterations"] == 120
    assert runs == folders[:2]
    # The same config, built again: its finished run is reused.
    assert figures.ensure_run(tmp_path, RLHFConfig(algo="ppo", beta=0.1, iterations=60, device="cpu"),
                              cache)[1]["iterations"] == 60
    assert len(runs) == 2

    # An interrupted run of the same config with no checkpoint is run again, in its own folder.
    write_json(folders[0] / "summary.json", {"status": "interrupted", "iterations": 3})
    assert figures.ensure_run(tmp_path, base, cache)[1]["iterations"] == 60
    assert runs == [folders[0], folders[1], folders[0]]

    # A folder holding another config is never overwritten.
    write_json(folders[0] / "config.json", {"rlhf": dataclasses.asdict(reseeded)})
    with pytest.raises(MinippoError, match="another run"):
        figures.ensure_run(tmp_path, base, cache)
    assert len(runs) == 3


def test_val_accuracy_unseen_counts_the_pairs_whose_texts_training_never_saw(data, tmp_path):
    gpt, _ = pretrained_gpt(data.corpus, data.tokenizer, CONFIG, CPU, tmp_path, log=None)
    config = RewardModelConfig(num_pairs=200, epochs=1, batch_size=32)
    completion_len = 4  # short completions repeat, so some held-out texts are in training and some not
    model, stats = train_reward_model(gpt, data.prompts, data.tokenizer, data.annotator, completion_len,
                                      config, seed=0, log=None)

    # The same pairs again (the same seed), split as train_reward_model splits them.
    pairs = make_preference_pairs(gpt, data.prompts, data.tokenizer, data.annotator,
                                  config.num_pairs * 5 // 4, completion_len, config.temperature,
                                  torch.Generator().manual_seed(0))
    train, val = pairs[:config.num_pairs], pairs[config.num_pairs:]

    def text(row):  # the characters after the leading end-of-text token, up to the next one
        return data.tokenizer.decode(row)[1:].split("\n")[0]

    train_texts = [text(row) for row in train.chosen] + [text(row) for row in train.rejected]
    unseen = [text(c) not in train_texts and text(r) not in train_texts
              for c, r in zip(val.chosen, val.rejected)]
    assert 0 < sum(unseen) < len(val)  # both kinds occur
    assert stats["val_unseen_pairs"] == sum(unseen)
    assert unseen_pairs(val, train, data.tokenizer).tolist() == unseen
    assert 0 <= stats["val_accuracy_unseen"] <= 1
    assert stats["val_accuracy_unseen"] == pairwise_accuracy(model, val[torch.tensor(unseen)])
    # No unseen pair: NaN, not an error.
    assert not unseen_pairs(val, val, data.tokenizer).any()
    assert math.isnan(pairwise_accuracy(model, val[torch.zeros(len(val), dtype=torch.bool)]))
