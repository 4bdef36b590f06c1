"""The documentation site builds with warnings as errors, and has the pages it promises (docs/README.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("myst_nb", reason="the docs extra is not installed: pip install -e '.[docs]'")
pytest.importorskip("furo", reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    # The command of docs/README.md, with -q and the output in a temporary folder. The notebooks are not
    # executed (nb_execution_mode = "off"): the site shows their committed outputs.
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-j", "1", "-b", "html", "docs", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_every_tutorial_has_a_page(site):
    notebooks = sorted(ROOT.glob("tutorials/0*.ipynb"))
    assert len(notebooks) >= 7
    for notebook in notebooks:
        page = site / "tutorials" / f"{notebook.stem}.html"
        assert page.is_file(), page
        # Rendered with its stored outputs: the executed notebooks carry their figures.
        assert "cell_output" in page.read_text(encoding="utf-8"), page


def test_the_promised_pages_exist(site):
    for page in ["index", "getting-started", "api", "benchmarks", "tutorials/index", "tutorials/course-guide",
                 "concepts/rollout-and-gae", "concepts/the-training-loop", "concepts/rlhf", "concepts/vpg",
                 "concepts/trpo", "concepts/ppo", "concepts/rloo-grpo", "concepts/best-of-n-dpo"]:
        assert (site / f"{page}.html").is_file(), page
    # The two commands of the README, included from it (highlighted, so the words are in separate spans).
    started = (site / "getting-started.html").read_text(encoding="utf-8")
    assert ">train<" in started and ">pytest<" in started


def test_api_reference_and_concepts_show_the_code(site):
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ["minippo.rollout.compute_gae", "minippo.ppo.clipped_surrogate_loss",
                 "minippo.trpo.conjugate_gradient", "minippo.lm.dpo.dpo_loss", "minippo.lm.gpt.GPT"]:
        assert f'id="{name}"' in api, name
    # The equation's code is included from the source, not copied: the function's own body is on the page.
    ppo = (site / "concepts" / "ppo.html").read_text(encoding="utf-8")
    assert "clamp" in ppo and "L^{\\mathrm{CLIP}}" in ppo


def test_figures_are_copied_into_the_site(site):
    images = list((site / "_images").glob("*.png"))
    assert any(image.name.startswith("CartPole-v1") for image in images)
    benchmarks = (site / "benchmarks.html").read_text(encoding="utf-8")
    assert "_images/CartPole-v1.png" in benchmarks and "_images/rlhf_frontier.png" in benchmarks


def test_course_guide_links_resolve_to_site_pages(site):
    guide = (site / "tutorials" / "course-guide.html").read_text(encoding="utf-8")
    assert 'href="01_policy_gradient.html"' in guide
    assert 'href="exercises/index.html"' in guide
