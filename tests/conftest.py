"""Fixtures shared by several test files: the tiny RLHF pipeline, pretrained once per test session."""

from pathlib import Path

import pytest
import torch
from lm_pipeline import CONFIG

from minippo.lm.rlhf import prepare_stages


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """The cache of the tiny pretrained GPT and reward model: pass it as ``cache_dir`` (or
    ``--cache-dir``) with :data:`lm_pipeline.CONFIG`'s settings and they load instead of training."""
    return tmp_path_factory.mktemp("lm-cache")


@pytest.fixture(scope="session")
def pipeline(cache_dir) -> dict:
    """The :class:`minippo.lm.rlhf.Stages` of :data:`lm_pipeline.CONFIG` (``"stages"``) and their parts
    by name: corpus, tokenizer, annotator, prompts, reference, reward_model and their statistics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    stages = prepare_stages(CONFIG, cache_dir, log=None)
    torch.set_num_threads(threads)
    return dict(stages=stages, corpus=stages.corpus, tokenizer=stages.tokenizer, annotator=stages.annotator,
                prompts=stages.prompts, reference=stages.reference, pretrain_stats=stages.pretrain_stats,
                reward_model=stages.reward_model, reward_stats=stages.reward_stats)
