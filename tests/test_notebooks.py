"""The notebooks run top to bottom against the installed package (they are committed without outputs)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, timeout: int = 300) -> list:
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
    client.execute()
    return [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    assert run_notebook(path) == []


def test_a_failing_cell_is_reported(tmp_path):
    """The check above can fail: a notebook whose second cell raises is reported with that cell's error."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    )
    nbformat.write(nb, tmp_path / "broken.ipynb")
    assert run_notebook(tmp_path / "broken.ipynb") == [(1, "ValueError", "broken on purpose")]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2
