"""The exercise notebooks of ``tutorials/exercises/``: each stub is graded as not done yet; each notebook
runs top to bottom once its stub is replaced by minippo's own function; the bug hunt, on its small
budget, shows the evidence its solutions rely on."""

import re

import nbformat
import pytest
from notebooks import TUTORIALS, count_figures, execute_notebook

from minippo.check import EXERCISES, grade

EXERCISE_NOTEBOOKS = {"01_reward_to_go.ipynb": "reward_to_go", "02_gae.ipynb": "gae",
                      "03_conjugate_gradient.ipynb": "conjugate_gradient",
                      "04_clipped_surrogate.ipynb": "clipped_surrogate",
                      "05a_bradley_terry.ipynb": "bradley_terry",
                      "05b_kl_penalised_rewards.ipynb": "kl_penalised_rewards"}
STUB = re.compile(r"%%writefile (my_\w+\.py)\n")


def _stub_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in notebook.cells if c.cell_type == "code" and STUB.match(c.source)]
    assert len(cells) == 1
    return cells[0]


def test_every_exercise_has_a_notebook():
    assert sorted(EXERCISE_NOTEBOOKS.values()) == sorted(EXERCISES)
    notebooks = {p.name for p in (TUTORIALS / "exercises").glob("*.ipynb")}
    assert notebooks == {*EXERCISE_NOTEBOOKS, "bug_hunt.ipynb"}


@pytest.mark.parametrize("name,exercise", EXERCISE_NOTEBOOKS.items())
def test_the_stub_defines_the_function_and_is_graded_as_not_done(name, exercise, tmp_path):
    # The stub as a student first sees it: the right name and parameters, raising NotImplementedError.
    cell = _stub_cell(nbformat.read(TUTORIALS / "exercises" / name, as_version=4))
    file_name = STUB.match(cell.source).group(1)
    assert file_name == f"my_{exercise}.py"
    (tmp_path / file_name).write_text(STUB.sub("", cell.source, count=1))
    report = grade(exercise, tmp_path / file_name, verbose=False)
    assert "raised NotImplementedError" in report.error, report.error


@pytest.mark.parametrize("name,exercise", EXERCISE_NOTEBOOKS.items())
def test_the_notebook_runs_with_the_model_solution(name, exercise, tmp_path):
    notebook = nbformat.read(TUTORIALS / "exercises" / name, as_version=4)
    cell = _stub_cell(notebook)
    function = EXERCISES[exercise].function
    cell.source = (f"%%writefile my_{exercise}.py\nfrom minippo.check import EXERCISES\n\n"
                   f"{function} = EXERCISES[{exercise!r}].solution\n")
    path = tmp_path / name  # absolute: execute_notebook's TUTORIALS / path is then this path
    nbformat.write(notebook, path)
    variables = ["report.ok"] + (["episode_returns"] if exercise == "gae" else [])
    _, values = execute_notebook(str(path), tmp_path, variables)
    assert values["report.ok"] is True
    if exercise == "gae":  # the stretch goal: PPO learns CartPole with the student's GAE
        returns = values["episode_returns"]
        assert sum(returns[-10:]) / 10 > 2 * sum(returns[:10]) / 10


@pytest.fixture(scope="module")
def bug_hunt(tmp_path_factory):
    return execute_notebook("exercises/bug_hunt.ipynb", tmp_path_factory.mktemp("bug_hunt"),
                            ["summary", "start_values", "episode_ends"])


def test_the_bug_is_silent_in_the_return_but_not_in_the_value_loss(bug_hunt):
    nb, v = bug_hunt
    minippo, colleague = v["summary"]["minippo"], v["summary"]["colleague"]
    assert minippo["rolling_return_mean"] > 150 and colleague["rolling_return_mean"] > 150  # D1
    assert colleague["value_loss"] > 2.0 and colleague["value_loss"] > 10 * minippo["value_loss"]  # D2
    assert count_figures(nb) == 2  # the diagnostics, and the targets along one episode


def test_the_critic_without_truncation_bootstrap_is_biased(bug_hunt):
    _, v = bug_hunt
    assert v["start_values"]["minippo"] == pytest.approx(50.0, abs=2.0)   # 1 / (1 − γ), γ = 0.98
    assert v["start_values"]["colleague"] < v["start_values"]["minippo"] - 3.0
    # The episodes of the figure ran into the 200-step limit; only the colleague's targets fall to r = 1.
    (length_ok, last_ok), (length_bug, last_bug) = (v["episode_ends"][k] for k in ("minippo", "colleague"))
    assert length_ok == length_bug == 200
    assert last_ok > 40.0 and last_bug == pytest.approx(1.0, abs=0.01)
