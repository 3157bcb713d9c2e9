"""refimpl.tools.stateless: the stateless export fed chunk by chunk, the failure reproduced on purpose."""

import numpy as np
import pytest
from fixture_data import FIXTURES, mel_goldens

from refimpl.model.rnnt import initial_rnnt_state
from refimpl.runtime.onnx_engine import OnnxEngine
from refimpl.runtime.streaming import greedy_over_decoder_joint
from refimpl.tools.stateless import stream_stateless

NOCACHE = FIXTURES / "hybrid" / "nocache"


def test_one_call_is_the_offline_forward():
    """Chunks longer than the clip: one call, the export's own offline result."""
    engine = OnnxEngine(NOCACHE)
    mel = mel_goldens()["fox/mel"]
    r = stream_stateless(engine, mel, mel.shape[1] + 1)
    out = engine.encoder(mel[None], np.array([mel.shape[1]]), None, None, None)
    tokens, _, _ = greedy_over_decoder_joint(
        engine, out["outputs"], out["encoded_lengths"], initial_rnnt_state(engine.config.rnnt, 1)
    )
    assert r.chunks == 1 and r.tokens == tokens[0]


def test_chunks_start_from_empty_context():
    """Each chunk alone: the first chunk's tokens are those of the first chunk run offline by itself, and the
    whole differs from one call (the context lost at every border changes the encoder output)."""
    engine = OnnxEngine(NOCACHE)
    mel = mel_goldens()["north_wind/mel"]
    chunked = stream_stateless(engine, mel, 112)
    whole = stream_stateless(engine, mel, mel.shape[1])
    assert chunked.chunks == -(-mel.shape[1] // 112) and chunked.tokens != whole.tokens
    first = stream_stateless(engine, mel[:, :112], 112)
    assert chunked.tokens[: len(first.tokens)] == first.tokens


def test_ctc_and_a_missing_head():
    engine = OnnxEngine(FIXTURES / "hybrid" / "nocache-ctc")
    r = stream_stateless(engine, mel_goldens()["fox/mel"], 56, decoder="ctc")
    assert r.chunks > 1 and all(0 <= t < engine.config.blank_id for t in r.tokens)
    with pytest.raises(ValueError, match="no RNNT head"):
        stream_stateless(engine, mel_goldens()["fox/mel"], 56, decoder="rnnt")
