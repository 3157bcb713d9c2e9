"""README.md: it opens with the two commands, CI runs exactly its test command, and its Python examples run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_opens_with_install_run_and_test_commands():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(first) == 2
    assert "pip install" in first[0] and "refimpl crosscheck tests/fixtures/audio/" in first[0]
    assert "pytest" in first[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert first[1] in ci.splitlines(), "CI must run exactly README's test command"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_python_example_runs(i, tmp_path):
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    inputs = {
        "audio_signal": np.zeros((1, 80, 9), np.float32),
        "length": np.array([9]),
        "cache_last_channel": np.zeros((1, 2, 20, 64), np.float32),
        "cache_last_time": np.zeros((1, 2, 64, 8), np.float32),
        "cache_last_channel_len": np.array([0]),
    }
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-c", BLOCKS[i]], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
