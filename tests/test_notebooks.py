"""The notebooks run top to bottom against the installed package (they are committed without outputs), each within
its time limit, with matplotlib on a non-interactive backend."""

import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
TIME_LIMIT = 120  # seconds per notebook, kernel start included; each is written to run in ~60 s on 2 cores
CELL_TIMEOUT = 90  # seconds per cell: a cell stuck this long fails the notebook instead of hanging the suite
BACKEND = "Agg"  # the kernel draws to memory only (a notebook's `%matplotlib inline` is non-interactive too)


def run_notebook(path: Path, timeout: int = CELL_TIMEOUT) -> list:
    """Execute every cell (errors recorded, not raised) -> [(cell number, error name, message)] of failed cells."""
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    before = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = BACKEND  # the kernel inherits it (ipykernel sets inline only when it is unset)
    try:
        client.execute()
    finally:
        if before is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = before
    return [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    start = time.perf_counter()
    assert run_notebook(path) == []
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_LIMIT, f"{path.name} took {elapsed:.0f} s (limit {TIME_LIMIT} s): make it lighter"


def test_a_failing_cell_is_reported(tmp_path):
    """The check above can fail: a notebook whose second cell raises is reported with that cell's error."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    )
    nbformat.write(nb, tmp_path / "broken.ipynb")
    assert run_notebook(tmp_path / "broken.ipynb") == [(1, "ValueError", "broken on purpose")]


def test_the_kernel_draws_without_a_display(tmp_path):
    """matplotlib in the notebooks' kernel is on a non-interactive backend."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import matplotlib\nassert matplotlib.get_backend().lower() == 'agg'")]
    )
    nbformat.write(nb, tmp_path / "backend.ipynb")
    assert run_notebook(tmp_path / "backend.ipynb") == []


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 6, names
    assert [n[:3] for n in names] == [f"{i:02d}_" for i in range(1, len(names) + 1)], names  # read in this order
