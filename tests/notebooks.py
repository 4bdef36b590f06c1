"""Executing a tutorial notebook in a test: :func:`execute_notebook` runs ``tutorials/<name>`` top to bottom
with nbclient, in a kernel pinned to this interpreter, on the notebook's *small* budget
(``MINIPPO_TUTORIAL_SMALL=1``, which every notebook reads in its first code cell), and returns the
values of the notebook variables a test names, so that the test can check the numbers the notebook's
prose relies on.

Usage in a test::

    nb, values = execute_notebook("04_ppo_piece_by_piece.ipynb", tmp_path, ["kl_clipped", "kl_unclipped"])
    assert values["kl_unclipped"] > values["kl_clipped"]
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"

# Printed by the cell appended after the notebook: one JSON line with the requested variables.
_MARKER = "MINIPPO-TEST-VALUES:"


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel running *this* interpreter (where minippo is installed), whatever kernelspecs the machine
    has or lacks: ipykernel writes a spec whose command is ``sys.executable -m ipykernel_launcher``."""
    kernels = tmp_path / "kernels"
    write_kernel_spec(path=kernels / "python3")
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


def execute_notebook(name: str, tmp_path: Path, variables: list[str] = (), *, small: bool = True,
                     timeout: int = 300, env: dict[str, str] | None = None
                     ) -> tuple[nbformat.NotebookNode, dict]:
    """Run ``tutorials/<name>`` in a fresh kernel whose working directory is ``tmp_path / "work"``.

    Args:
        variables: names of notebook variables to read back after the last cell (each must be
            JSON-serialisable after ``float()``/``list()``/``dict()`` as it is: numbers, lists and dicts of
            numbers and strings).
        small: set ``MINIPPO_TUTORIAL_SMALL=1`` (the notebook's small budget).
        timeout: seconds allowed per cell.
        env: further environment variables for the kernel.

    Returns:
        ``(notebook with its new outputs, {variable: value})``.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell failed (the message names it).
        AssertionError: an output is an error.
    """
    import os

    workdir = tmp_path / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    if variables:
        names = ", ".join(f"{v!r}: {v}" for v in variables)
        nb.cells.append(nbformat.v4.new_code_cell(
            f"import json as _json\nprint({_MARKER!r} + _json.dumps({{{names}}}, default=float))"))
    saved = dict(os.environ)
    os.environ.update({"MINIPPO_TUTORIAL_SMALL": "1" if small else "0", **(env or {})})
    try:  # the kernel inherits this process's environment
        NotebookClient(nb, km=kernel_manager(tmp_path), timeout=timeout, record_timing=False,
                       resources={"metadata": {"path": str(workdir)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    values = {}
    if variables:
        text = "".join(out.get("text", "") for out in nb.cells[-1].outputs)
        values = json.loads(text.split(_MARKER, 1)[1])
    return nb, values


def count_figures(nb: nbformat.NotebookNode) -> int:
    """The number of PNG figures among the notebook's outputs."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
               for out in cell.outputs)
