"""The tiny RLHF setting shared by the language-model tests (fixtures ``pipeline`` and ``cache_dir`` in
conftest.py): small enough to pretrain and fit its reward model in about a minute on one core."""

from minippo.lm.gpt import PretrainConfig
from minippo.lm.reward_model import RewardModelConfig
from minippo.lm.rlhf import RLHFConfig

CONFIG = RLHFConfig(algo="ppo", iterations=2, beta=0.1, seed=0, device="cpu", num_documents=2000,
                    prompt_chars=8, completion_len=48, num_sequences=32,
                    model=dict(block_size=64, n_layer=2, n_head=2, n_embd=48),
                    pretrain=PretrainConfig(steps=1000, batch_size=32, eval_every=1000),
                    reward=RewardModelConfig(num_pairs=4000, epochs=5))
# The same settings as command-line overrides (they must give the same cache keys).
CLI_HP = ["num_documents=2000", "completion_len=48", "num_sequences=16", "model.block_size=64",
          "model.n_layer=2", "model.n_head=2", "model.n_embd=48", "pretrain.steps=1000",
          "pretrain.eval_every=1000", "reward.num_pairs=4000", "reward.epochs=5"]
