"""Sphinx configuration for minippo's documentation site.

Build (from the repository root): ``sphinx-build -W -b html docs docs/_build/html``.
"""

import os
import re
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

project = "minippo"
author = "minippo contributors"
copyright = "2026, minippo contributors"

extensions = [
    "myst_nb",  # MyST Markdown pages and notebooks (brings myst_parser with it)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' Google-style Args:/Returns:/Raises: sections
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

# --- the tutorials -------------------------------------------------------------------------------
# MyST-NB renders only documents inside the source directory, and the notebooks live in tutorials/ at the
# repository root, where the test suite executes them. They are copied into docs/tutorials/ (ignored by
# git) at the start of every build rather than symlinked: a copy works on every OS and from an sdist, keeps
# the repository free of links, and copy2 keeps the notebook's mtime, so an unchanged notebook is not
# rebuilt. A copy that no longer has a source (a renamed notebook) is removed, so it cannot go stale.
TUTORIALS = ROOT / "tutorials"
COPIES = DOCS / "tutorials"


def _copy_notebooks() -> None:
    wanted = {}
    for pattern in ("0*.ipynb", "exercises/*.ipynb"):
        for source in sorted(TUTORIALS.glob(pattern)):
            wanted[COPIES / source.relative_to(TUTORIALS)] = source
    for copy in list(COPIES.rglob("*.ipynb")) if COPIES.exists() else []:
        if copy not in wanted:
            copy.unlink()
    for copy, source in wanted.items():
        copy.parent.mkdir(parents=True, exist_ok=True)
        if not copy.exists() or copy.stat().st_mtime != source.stat().st_mtime \
                or copy.stat().st_size != source.stat().st_size:
            shutil.copy2(source, copy)


_copy_notebooks()

# The notebooks are committed executed, and tests/ executes them; the site shows the stored outputs.
nb_execution_mode = "off"

exclude_patterns = ["_build", "README.md", "Thumbs.db", ".DS_Store"]

# Tutorial 04 opens with "# PPO ..." and follows it with "### The experiments": a heading-level jump in the
# notebook itself (a file of tutorials/, not of the site). It renders fine; only this check is silenced.
suppress_warnings = ["myst.header"]

# --- MyST ----------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
# Anchors for headings down to ###, so that `[...](#a-course-in-six-weeks)` links resolve.
myst_heading_anchors = 3

# --- autodoc -------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# --- HTML ----------------------------------------------------------------------------------------
html_theme = "furo"
html_title = "minippo"

# --- docstrings that are not valid reStructuredText ----------------------------------------------
# These docstrings lay out plain-text tables and aligned "name  meaning" lists that read well in the
# source and in help() but are not RST (docutils reports unexpected indentation, a table cell past its
# column, or `|` read as a substitution). Rather than silence docutils for every page, exactly these
# objects are shown verbatim, as a preformatted block; any other malformed docstring still fails `-W`.
# Remove a name once its docstring is fixed at the source (the build fails if a name here is not found).
VERBATIM_DOCSTRINGS = {
    "minippo.grpo.GRPOConfig",
    "minippo.lm.reward_model.RewardModelConfig",
    "minippo.lm.rlhf.RLHFConfig",
    "minippo.lm.text_rollout.TextRollout",
    "minippo.policies",
    "minippo.policies.MLPActorCritic.distribution",
    "minippo.ppo.PPO.statistics",
    "minippo.ppo.PPOConfig",
    "minippo.rollout.Batch",
    "minippo.rollout.Minibatch",
    "minippo.trpo.TRPO.update",
    "minippo.trpo.TRPOConfig",
    "minippo.vpg.VPGConfig",
}
_seen_verbatim = set()


def _verbatim_docstring(app, what, name, obj, options, lines):
    if name in VERBATIM_DOCSTRINGS and lines:
        _seen_verbatim.add(name)
        lines[:] = ["::", ""] + [f"    {line}" if line else "" for line in lines] + [""]


def _check_verbatim_list(app, exception):
    if exception is None and not app.config.autodoc_mock_imports:
        from sphinx.util import logging
        for name in sorted(VERBATIM_DOCSTRINGS - _seen_verbatim):
            logging.getLogger(__name__).warning(
                "VERBATIM_DOCSTRINGS names %s, which autodoc did not document; remove it", name)


# --- links inside included files -----------------------------------------------------------------
# Pages include parts of the repository's own READMEs (tutorials/README.md, figures/README.md, ...) rather
# than copying their prose. Their relative links are written for GitHub, relative to the README, while
# MyST resolves them relative to the including page. Each is rewritten to what it means on this site: a
# notebook to its rendered copy, a folder or a figure table to the page that shows it, any other file to
# the file itself (a download, or an image copied into the build).
LINK = re.compile(r"(\]\()([^)\s]+)(\))")
PAGES = {  # repository path -> the page of this site that shows it
    "figures": "benchmarks.md",
    "tutorials/exercises": "tutorials/exercises/index.md",
    **{f"figures/{table.name}": "benchmarks.md" for table in (ROOT / "figures").glob("*.md")},
}


def _rewrite_included_links(app, relative_path, parent_docname, content):
    included = (Path(app.srcdir) / relative_path).resolve()
    here = (Path(app.srcdir) / app.env.docname).parent

    def rewrite(match):
        target = match.group(2)
        if target.startswith("#") or ":" in target:
            return match.group(0)
        path, _, fragment = target.partition("#")
        resolved = (included.parent / path).resolve()
        key = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else None
        if key in PAGES:
            resolved = DOCS / PAGES[key]
        elif resolved.is_relative_to(TUTORIALS) and resolved.suffix == ".ipynb":
            resolved = COPIES / resolved.relative_to(TUTORIALS)
        new = os.path.relpath(resolved, here) + (f"#{fragment}" if fragment else "")
        return f"{match.group(1)}{new}{match.group(3)}"

    content[0] = LINK.sub(rewrite, content[0])


def setup(app):
    app.connect("include-read", _rewrite_included_links)
    app.connect("autodoc-process-docstring", _verbatim_docstring)
    app.connect("build-finished", _check_verbatim_list)
