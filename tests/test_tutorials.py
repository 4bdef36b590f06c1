"""The tutorial notebooks run top to bottom: each is executed with nbclient on a small training budget
(``MINIPPO_TUTORIAL_STEPS``, read by the first cells), must finish without an error, draw its figures
and train with the small budget it was given."""

from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from minippo.plot import load_runs

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
STEPS = 3000  # env steps per training run: both notebooks together then execute in well under a minute

# notebook -> (figures it draws, run folders it writes)
NOTEBOOKS = {
    "01_ppo_from_the_ground_up.ipynb": (4, 1),   # GAE λ, L^CLIP, learning curve, PPO diagnostics; PPO
    "02_vpg_trpo_ppo.ipynb": (2, 6),             # learning curves, KL per iteration; 3 algorithms × 2 seeds
}


def kernel_manager(tmp_path: Path) -> KernelManager:
    """A kernel running *this* interpreter (where minippo is installed), whatever kernelspecs the machine
    has or lacks: ipykernel writes a spec whose command is ``sys.executable -m ipykernel_launcher``."""
    kernels = tmp_path / "kernels"
    write_kernel_spec(path=kernels / "python3")
    specs = KernelSpecManager(kernel_dirs=[str(kernels)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_tutorial_notebook_runs_and_draws_its_figures(name, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIPPO_TUTORIAL_STEPS", str(STEPS))  # the kernel inherits the environment
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    workdir = tmp_path / "work"  # the notebook's working directory: its run folders land here
    workdir.mkdir()
    # Raises CellExecutionError, naming the cell, on the first cell that fails.
    NotebookClient(nb, km=kernel_manager(tmp_path), timeout=120, record_timing=False,
                   resources={"metadata": {"path": str(workdir)}}).execute()

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    figures = sum("image/png" in out.get("data", {}) for out in outputs)
    expected_figures, expected_runs = NOTEBOOKS[name]
    assert figures == expected_figures

    runs = load_runs([workdir / "runs"])
    assert len(runs) == expected_runs
    # The budget reached the kernel: no run went past one batch beyond STEPS (TRPO's 2048-step batches).
    assert all(STEPS <= run.global_step < 2 * STEPS for run in runs)
