"""Tutorial 04, "PPO and what each of its pieces does", executed once on its small budget: it runs top to
bottom, draws its figures, and the numbers its prose relies on hold."""

import pytest
from gifs import gif_frames
from notebooks import count_figures, execute_notebook

from minippo.plot import load_runs
from minippo.train import evaluate
from minippo.video import frame_duration_ms

NOTEBOOK = "04_ppo_piece_by_piece.ipynb"
VARIABLES = ["EPSILON", "case_table", "lower_bound_gap_min", "kl_max_clipped", "kl_max_unclipped",
             "entropy_min_clipped", "entropy_min_unclipped", "kl_median_by_eps", "clip_fraction_by_eps",
             "entropy_end", "epochs_mean", "kl_max_tkl", "kl_penalty_betas", "MAIN_STEPS", "ABLATION_STEPS",
             "watch", "WATCH_SEED"]


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tutorial04")
    nb, values = execute_notebook(NOTEBOOK, tmp_path, VARIABLES)
    return nb, values, tmp_path / "work"


def test_runs_on_the_small_budget_and_draws_its_figures(executed):
    nb, values, workdir = executed
    # L^CLIP; learning curve, diagnostics, EV; one per ablation (7)
    assert count_figures(nb) == 11
    runs = load_runs([workdir / "runs" / "tutorial-04"])
    assert len(runs) == 15  # the main run and 14 ablation runs
    assert values["MAIN_STEPS"] <= 10_000 and values["ABLATION_STEPS"] <= 10_000
    assert all(run.global_step < values["MAIN_STEPS"] + 256 for run in runs)


def test_case_table_has_no_gradient_exactly_where_the_ratio_is_past_the_clip(executed):
    _, values, _ = executed
    eps = values["EPSILON"]
    rows = values["case_table"]
    assert len(rows) == 6
    for row in rows:
        advantage, ratio, slope = row["advantage"], row["ratio"], row["slope"]
        clipped_away = (advantage > 0 and ratio > 1 + eps) or (advantage < 0 and ratio < 1 - eps)
        if clipped_away:
            assert slope == 0.0, row
        else:  # the unclipped term ρÂ, whose derivative in ρ is Â
            assert slope == pytest.approx(advantage), row
    assert sum(row["slope"] == 0.0 for row in rows) == 2
    assert values["lower_bound_gap_min"] >= 0  # L^CLIP ≤ ρÂ on the whole grid


def test_dropping_the_clip_blows_up_the_kl_and_collapses_the_entropy(executed):
    _, values, _ = executed
    assert values["kl_max_unclipped"] > 10 * values["kl_max_clipped"]
    assert values["entropy_min_unclipped"] < values["entropy_min_clipped"]


def test_the_kl_grows_with_eps_while_the_narrow_band_clips_more(executed):
    _, values, _ = executed
    kl, clip_fraction = values["kl_median_by_eps"], values["clip_fraction_by_eps"]
    assert kl["0.05"] < kl["0.2"] < kl["0.5"]
    assert clip_fraction["0.05"] > clip_fraction["0.5"]


def test_the_entropy_bonus_keeps_the_entropy_higher(executed):
    _, values, _ = executed
    assert values["entropy_end"]["0.05"] > values["entropy_end"]["0"]


def test_target_kl_stops_epochs_early_and_caps_the_kl(executed):
    _, values, _ = executed
    epochs, kl_max = values["epochs_mean"], values["kl_max_tkl"]
    assert epochs["none"] == 20
    assert epochs["0.002"] < epochs["0.01"] <= epochs["none"]
    assert kl_max["0.002"] < kl_max["none"]


def test_the_kl_penalty_adapts_beta(executed):
    # The notebook itself asserts that every β follows the halve/double rule from the logged KL.
    _, values, _ = executed
    betas = values["kl_penalty_betas"]
    assert betas[0] == 1.0
    assert len(set(betas)) > 1


def test_watch_it_records_the_checkpoints_own_episode(executed):
    _, values, workdir = executed
    watch = values["watch"]
    # The trained GIF is the episode `minippo eval` plays from the same reset seed.
    trained_return = evaluate(workdir / "runs" / "tutorial-04" / "main" / "checkpoint.pt", 1,
                              seed=values["WATCH_SEED"])[0]
    assert watch["trained"]["return"] == trained_return
    for name, w in watch.items():
        frames = gif_frames(w["path"])
        assert w["frames"] == w["return"] + 1, name
        assert sum(duration for _, duration in frames) == w["frames"] * frame_duration_ms(50), name
        assert len({frame.tobytes() for frame, _ in frames}) > 1, name
    assert watch["trained"]["return"] > watch["untrained"]["return"]
