"""The full-size 114M model (models-full/, git-ignored, built by make_fixtures.py --full-size): every look-ahead
detected, ONNX weights bit-identical to the .nemo. Slow; run with ``pytest -m slow``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import weights_tools as wt

FULL = Path(__file__).parent.parent / "models-full"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (FULL / "model.nemo").is_file(), reason="models-full/ is not built"),
]
FOLDERS = {
    "att-70-13": (70, 13),
    "att-70-6": (70, 6),
    "att-70-1": (70, 1),
    "att-70-0": (70, 0),
    "ctc-att-70-13": (70, 13),
}


@pytest.fixture(scope="module")
def nemo_weights():
    config, weights = wt.load_nemo(FULL / "model.nemo")
    return config, wt.flatten(weights)


@pytest.mark.parametrize("folder", FOLDERS)
def test_lookahead_and_config(folder, nemo_weights):
    ref, _ = nemo_weights
    plan = wt.plan_onnx(FULL / folder, nemo=FULL / "model.nemo")
    enc = plan.config.encoder
    assert enc.att_context_size == FOLDERS[folder] and enc.has_cache_io
    assert (enc.d_model, enc.n_layers, enc.n_heads, enc.d_ff) == (512, 17, 8, 2048)
    assert enc.att_context_sizes == ref.encoder.att_context_sizes


@pytest.mark.parametrize("folder", ["att-70-13", "ctc-att-70-13"])
def test_weights_bit_identical(folder, nemo_weights):
    _, ref = nemo_weights
    _, weights = wt.load_onnx(FULL / folder)
    flat = wt.flatten(weights)
    parts = {"encoder", "ctc_decoder"} if folder.startswith("ctc") else {"encoder", "decoder", "joint"}
    assert set(flat) == {n for n in ref if n.split(".")[0] in parts}
    assert all(np.array_equal(flat[n], ref[n]) for n in flat)
