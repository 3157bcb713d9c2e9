"""README's table of bad inputs (between <!-- bad-inputs:start --> and <!-- bad-inputs:end -->): every row names a
test that exists, and every test of tests/test_bad_inputs.py has a row."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TESTS = ROOT / "tests"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"
COLUMNS = ["input", "command", "what refimpl does", "test"]
REF = re.compile(r"`(?:tests/)?(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`")


def table_rows(readme: str) -> list:
    """The table's rows as lists of cells (a ``\\|`` inside a cell is a literal bar), the header first."""
    assert readme.count(START) == 1 and readme.count(END) == 1, "README needs each bad-inputs marker once"
    section = readme[readme.index(START) + len(START) : readme.index(END)]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not all(set(c) <= set("-: ") for c in cells):  # the |---| line
            rows.append(cells)
    return rows


def functions_of(path: Path) -> dict:
    """name -> source of every module-level ``test_*`` function of ``path``, its decorators included."""
    source = path.read_text()
    tree = ast.parse(source)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            parts = [ast.get_source_segment(source, d) or "" for d in node.decorator_list]
            found[node.name] = "\n".join(parts + [ast.get_source_segment(source, node) or ""])
    return found


ROWS = table_rows((ROOT / "README.md").read_text())


def test_the_table_has_its_columns_and_rows():
    assert ROWS[0] == COLUMNS
    assert len(ROWS) > 1
    for row in ROWS[1:]:
        assert len(row) == len(COLUMNS), row
        assert all(row), f"an empty cell: {row}"


@pytest.mark.parametrize("row", ROWS[1:], ids=[r[-1] for r in ROWS[1:]])
def test_every_row_names_a_test_that_exists(row):
    refs = REF.findall(row[-1])
    assert refs, f"the test cell {row[-1]!r} names no test (`test_file.py::test_name[id]`)"
    for file, name, case in refs:
        path = TESTS / file
        assert path.is_file(), f"{file} does not exist"
        functions = functions_of(path)
        assert name in functions, f"{file} has no test {name}"
        if case:
            assert f'"{case}"' in functions[name] or f"'{case}'" in functions[name], f"{file}::{name} has no [{case}]"


def test_every_bad_input_test_has_a_row():
    named = {(file, name) for row in ROWS[1:] for file, name, _ in REF.findall(row[-1])}
    missing = [name for name in functions_of(TESTS / "test_bad_inputs.py") if ("test_bad_inputs.py", name) not in named]
    assert not missing, f"tests/test_bad_inputs.py tests without a row in README's bad-inputs table: {missing}"


def test_the_checks_catch_what_they_should():
    """The parser on a made-up table: a bar escaped in a cell, a missing test."""
    text = "\n".join(
        [
            START,
            "| input | command | what refimpl does | test |",
            "|---|---|---|---|",
            "| a | `x \\| y` | b | `test_bad_inputs.py::test_nope` |",
            END,
        ]
    )
    rows = table_rows(text)
    assert rows[1][1] == "`x | y`"
    ((file, name, case),) = REF.findall(rows[1][-1])
    assert name not in functions_of(TESTS / file) and case == ""
