"""RLHF in miniature: the same rollout/GAE core and the same VPG, TRPO and PPO updates that train MLP
policies on Gymnasium tasks, here fine-tune a tiny character-level GPT against a learned reward model.

Where each idea lives:

    corpus.py        generated review corpus, character tokenizer, the hidden annotator (gold reward)
    gpt.py           the tiny GPT (nanoGPT style), next-character pretraining, sampling
    reward_model.py  preference pairs with Bradley–Terry labels, the reward model and its training
    text_rollout.py  GPT policy with a value head, TextBatch [T, N], KL-penalised rewards, the collector
    rlhf.py          the end-to-end pipeline with cached stages (``minippo rlhf``)
    figures.py       reward/KL curves of the three algorithms and the over-optimisation sweep
"""

from .corpus import Annotator, CharTokenizer, generate_corpus, load_corpus, make_prompts
from .gpt import GPT, GPTConfig, PretrainConfig, pretrain, sample
from .reward_model import RewardModel, RewardModelConfig, bradley_terry_loss, train_reward_model
from .rlhf import RLHFConfig, run_rlhf
from .text_rollout import AdaptiveKLController, GPTActorCritic, TextBatch, TextRollout, kl_penalised_rewards

__all__ = ["AdaptiveKLController", "Annotator", "CharTokenizer", "GPT", "GPTActorCritic", "GPTConfig",
           "PretrainConfig", "RLHFConfig", "RewardModel", "RewardModelConfig", "TextBatch", "TextRollout",
           "bradley_terry_loss", "generate_corpus", "kl_penalised_rewards", "load_corpus", "make_prompts",
           "pretrain", "run_rlhf", "sample", "train_reward_model"]
