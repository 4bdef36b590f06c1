"""The frontier figure's pieces (issue 13): Gao et al.'s forms recovered by the fit from points made with
known parameters, the budget table's choice, and the command end to end on stubbed runs."""

import json
import math

import numpy as np
import pytest

from minippo.lm import frontier
from minippo.lm.best_of_n import best_of_n_kl


@pytest.mark.parametrize("method, form", [("ppo", frontier.rl_form), ("best-of-n", frontier.best_of_n_form)])
def test_the_fit_recovers_known_parameters(method, form):
    d = np.linspace(0.3, 4.0, 12)
    points = [{"method": method, "kl": float(x ** 2), "gold": float(form(x, 0.9, 0.35))} for x in d]
    alpha, beta = frontier.fit(method, points)
    assert alpha == pytest.approx(0.9, abs=1e-4) and beta == pytest.approx(0.35, abs=1e-4)
    assert frontier.fit(method, points[:2]) is None  # too few points to fit two parameters


def test_best_within_takes_the_highest_mean_gold_inside_the_budget_only():
    points = [{"method": "rloo", "value": b, "seed": s, "kl": kl, "gold": g + 0.01 * s, "rm": 1.0}
              for b, kl, g in ((1.0, 0.9, 0.5), (0.1, 2.5, 0.9), (0.01, 8.0, 1.2)) for s in (0, 1, 2)]
    assert frontier.best_within("rloo", points, 2.0)["value"] == 1.0
    best = frontier.best_within("rloo", points, 5.0)
    assert best["value"] == 0.1 and best["gold"] == pytest.approx(0.91) and best["seeds"] == 3
    assert frontier.best_within("rloo", points, 10.0)["value"] == 0.01
    assert frontier.best_within("rloo", points, 0.5) is None


def test_the_command_writes_the_figure_table_and_points(tmp_path, monkeypatch):
    def fake_ensure_run(runs_dir, config, cache_dir):  # gold rises, then falls, with KL
        n = config.hyperparameters.get("n")
        kl = best_of_n_kl(n) if n else 0.1 / config.beta + 0.01 * config.seed
        gold = -0.1 + math.sqrt(kl) * (1.0 - 0.3 * math.sqrt(kl))
        return [], {"before": {"gold_reward": -0.1, "rm_score": 0.0, "kl_ref": 0.0},
                    "after": {"gold_reward": gold, "rm_score": 0.5 * math.sqrt(kl), "kl_ref": kl}}

    monkeypatch.setattr(frontier, "ensure_run", fake_ensure_run)
    argv = ["--methods", "best-of-n", "ppo", "dpo", "--seeds", "0", "1", "--out", str(tmp_path)]
    assert frontier.main(argv) == 0
    assert (tmp_path / "rlhf_frontier.png").stat().st_size > 10_000
    points = json.loads((tmp_path / "rlhf_frontier.json").read_text())["points"]
    assert len(points) == 2 * (7 + 5 + 5)
    assert {p["kl"] for p in points if p["method"] == "best-of-n"} == {best_of_n_kl(n) for n in
                                                                       frontier.KNOBS["best-of-n"][1]}
    table = (tmp_path / "rlhf_frontier.md").read_text()
    for method in ("best-of-n", "ppo", "dpo"):
        assert f"| {method} |" in table
    assert "python -m minippo.lm.frontier --methods best-of-n ppo dpo" in table
    # Each budget's ranking is stated; the stub's gold falls past KL ≈ 2.8 while its proxy keeps rising.
    assert table.count("the highest gold gains: best-of-n") == 3
    assert "- ppo: past its best gold gain" in table and "over-optimisation of the proxy" in table
