"""The fast path on the full-size 114M model (models-full/, git-ignored, built by make_fixtures.py --full-size):
every chunk of 61 s of audio within the tolerance table against onnxruntime, in the two extreme look-aheads and
both backends; the .nemo route (every look-ahead from one checkpoint). Slow; run with ``pytest -m slow``."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixture_data import AUDIO

FULL = Path(__file__).parent.parent / "models-full"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (FULL / "att-70-13").is_dir(), reason="models-full/ is not built"),
]


def _crosscheck(folder, backend, seconds=61.0, weights=None):
    from refimpl.runtime.engines import open_refimpl
    from refimpl.runtime.features import features
    from refimpl.runtime.onnx_engine import OnnxEngine
    from refimpl.tools.bench import bench_audio
    from refimpl.tools.crosscheck import crosscheck_engines

    ort = OnnxEngine(FULL / folder)
    att = ort.config.encoder.att_context_size
    ref = open_refimpl(weights or FULL / folder, impl="fast", att_context_size=att, backend=backend)
    mel, _ = features(bench_audio(seconds, AUDIO / "north_wind.wav"), ort.config)
    return crosscheck_engines(ort, ref, mel)


@pytest.mark.parametrize("folder,backend", [("att-70-13", "numba"), ("att-70-0", "numba"), ("att-70-13", "numpy")])
def test_fast_path_every_chunk_within_tolerance(folder, backend):
    report = _crosscheck(folder, backend)
    assert report.first_divergence is None, report.first_divergence
    assert report.ok and report.tokens_ok
    worst = max(r for _, r in report.worst().values())
    assert worst < 5e-6, report.worst()  # the table allows 1e-5


def test_fast_path_from_nemo_serves_another_lookahead():
    report = _crosscheck("att-70-6", "numba", seconds=20.0, weights=FULL / "model.nemo")
    assert report.ok, report.first_divergence
