"""README.md: it opens with the two commands, CI runs exactly its test command, and its Python examples run."""

import json
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


FIRST = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
DEMO = ROOT / "tests" / "fixtures" / "demo"


def test_readme_opens_with_install_run_and_test_commands():
    assert len(FIRST) == 2
    steps = FIRST[0].split(" && ")
    assert "pip install" in steps[1]
    assert steps[2].startswith(".venv/bin/refimpl transcribe tests/fixtures/demo/audio/")
    assert steps[3].startswith(".venv/bin/refimpl crosscheck tests/fixtures/demo/audio/")
    assert "pytest" in FIRST[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert FIRST[1] in ci.splitlines(), "CI must run exactly README's test command"


def test_readme_first_command_prints_the_spoken_digits_and_a_clean_crosscheck():
    """The transcribe and crosscheck of README's first line, run as written (after the install): the text is the
    clip's reference from the demo manifest, the crosscheck passes, and README shows what they print."""
    manifest = [json.loads(line) for line in (DEMO / "manifest.json").read_text().splitlines() if line.strip()]
    refs = {e["audio_filepath"]: e["text"] for e in manifest}
    bin_dir = Path(sys.executable).parent
    outs = []
    for step in FIRST[0].split(" && ")[2:]:
        argv = step.split()
        assert argv[0] == ".venv/bin/refimpl"
        r = subprocess.run([str(bin_dir / "refimpl"), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(r.stdout)
    clip = str(Path(FIRST[0].split(" && ")[2].split()[2]).relative_to("tests/fixtures/demo"))
    assert outs[0].strip() == refs[clip]
    assert "first divergence: none" in outs[1] and outs[1].rstrip().endswith("result: OK"), outs[1]
    assert outs[0].strip() in README  # the printed digits are in README's text


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
