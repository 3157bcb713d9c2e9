"""The streaming driver: whole-clip runs equal step-by-step calls, a batch equals each stream alone, the tail
NeMo's schedule does not run is reported, and look-ahead mistakes are refused with a clear message."""

import numpy as np
import pytest
from fixture_data import folder, mel_goldens, nemo_model, onnx_model

from refimpl.runtime.chunking import chunk_schedule, dropped_tail_frames
from refimpl.runtime.engines import RefimplEngine
from refimpl.runtime.lookahead import LookAheadError
from refimpl.runtime.loop import run_stream
from refimpl.runtime.onnx_engine import OnnxEngine
from refimpl.runtime.streaming import initial_state, stream_step
from refimpl.tools.tolerances import compare
from weights_tools import streaming_params

CLIPS = ("hello", "fox", "north_wind")


def _engine(att=(70, 6)):
    config, weights = nemo_model("hybrid")
    return RefimplEngine(config, weights, att_context_size=att)


def test_run_stream_equals_step_by_step_calls():
    engine = _engine()
    mel = mel_goldens()["fox/mel"][None]
    res = run_stream(engine, mel, keep_steps=True)
    state = initial_state(engine, 1)
    p = engine.streaming
    tokens = []
    for i, chunk in enumerate(chunk_schedule([mel.shape[2]], p)):
        step, state = stream_step(engine, mel[:, :, chunk.start : chunk.start + chunk.width], chunk.n_new, state)
        for name, value in step.encoder.items():
            assert np.array_equal(value, res.steps[i].encoder[name]), (i, name)
        tokens += step.rnnt_tokens[0]
    assert tokens == res.rnnt_tokens[0]
    for name in ("cache_last_channel", "cache_last_time", "cache_last_channel_len", "pre_encode_cache"):
        assert np.array_equal(getattr(state, name), getattr(res.final_state, name))


@pytest.mark.parametrize("engine_kind", ["refimpl", "onnxruntime"])
@pytest.mark.parametrize("att", [(70, 13), (70, 0)])
def test_batch_of_streams_equals_each_stream_alone(att, engine_kind):
    """Streams of different lengths (partial last chunks, one stream ending early) batched together."""
    engine = _engine(att) if engine_kind == "refimpl" else OnnxEngine(folder("hybrid", att))
    mels = [mel_goldens()[f"{c}/mel"] for c in CLIPS]
    lengths = [m.shape[1] for m in mels]
    batch = np.zeros((len(mels), mels[0].shape[0], max(lengths)), np.float32)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    together = run_stream(engine, batch, lengths, keep_steps=True)
    for i, m in enumerate(mels):
        alone = run_stream(engine, m, keep_steps=True)
        assert together.rnnt_tokens[i] == alone.rnnt_tokens[0]
        if "ctc" in engine.heads:  # (an RNNT export has no CTC head for onnxruntime)
            assert together.ctc_frame_labels[i] == alone.ctc_frame_labels[0]
        assert together.dropped_tail_frames[i] == alone.dropped_tail_frames[0]
        for k, step in enumerate(alone.steps):  # valid encoder frames agree chunk by chunk
            n = int(step.encoder["encoded_lengths"][0])
            mine = together.steps[k].encoder["outputs"][i : i + 1, :, :n]
            assert compare("outputs", mine, step.encoder["outputs"][:, :, :n]).ok
        # (the caches after a stream's zero-padded partial last chunk hold the padding frames, as the export's do:
        # cache_last_channel_next_len grows by the padded width; partial chunks only happen at end of stream)


def test_dropped_tail_is_reported_not_silent():
    """NeMo's buffer does not run a last remainder shorter than the subsampling factor; the driver says how
    many frames that was."""
    engine = _engine((70, 0))
    p = engine.streaming
    for clip in CLIPS:
        f = mel_goldens()[f"{clip}/mel"].shape[1]
        res = run_stream(engine, mel_goldens()[f"{clip}/mel"])
        expected = (f - p.chunk_size) % p.chunk_size if (f - p.chunk_size) % p.chunk_size < p.min_new_frames else 0
        assert res.dropped_tail_frames[0] == expected == dropped_tail_frames([f], p)[0]
    assert dropped_tail_frames([9 + 8 * 3 + 5], p)[0] == (9 + 8 * 3 + 5) % 8  # 38 frames: 4 chunks, 6 left


def test_inactive_streams_keep_their_state():
    engine = _engine()
    mel = mel_goldens()["fox/mel"]
    state = initial_state(engine, 2)
    frames = np.stack([mel[:, :56], mel[:, :56]])
    _, s1 = stream_step(engine, frames, [56, 0], state)
    assert s1.cache_last_channel_len.tolist() == [7, 0]
    assert np.array_equal(s1.cache_last_channel[1], state.cache_last_channel[1])
    assert np.array_equal(s1.rnnt.h[:, 1], state.rnnt.h[:, 1]) and s1.mel_frames.tolist() == [56, 0]


def test_streaming_params_come_from_the_config():
    """Chunk arithmetic is derived (s, R, L), never hard-coded: the reference doc's table for x8 / left 70, and
    the x4 variant."""
    config, _ = nemo_model("hybrid")
    table = {13: (112, 121, 14, 5), 6: (56, 65, 7, 10), 1: (16, 25, 2, 35), 0: (8, 17, 1, 70)}
    for r, (chunk, window, out, left_chunks) in table.items():
        p = streaming_params(config.encoder, (70, r))
        assert (p.chunk_size, p.window, p.valid_out_len, p.att_left_chunks) == (chunk, window, out, left_chunks)
        assert (p.pre_encode_cache_size, p.drop_extra_pre_encoded, p.last_channel_cache_size) == (9, 2, 70)
    vconfig, _ = nemo_model("variant")
    p = streaming_params(vconfig.encoder, (24, 3))
    assert (
        p.chunk_size,
        p.window,
        p.valid_out_len,
        p.pre_encode_cache_size,
        p.drop_extra_pre_encoded,
        p.conv_cache_size,
    ) == (16, 21, 4, 5, 2, 4)


def test_lookahead_mismatch_errors_name_what_the_file_serves():
    with pytest.raises(LookAheadError, match=r"exported for att_context_size \[70, 13\], not \[70, 0\]"):
        OnnxEngine(folder("hybrid", (70, 13)), att_context_size=(70, 0))
    config, weights = onnx_model("hybrid/att-70-13")
    with pytest.raises(LookAheadError, match=r"only the one it was exported for, \[70, 13\]"):
        RefimplEngine(config, weights, att_context_size=(70, 0))
    config, weights = nemo_model("hybrid")
    with pytest.raises(LookAheadError, match=r"\[70, 2\] is not one of the model's look-aheads \[\[70, 13\]"):
        RefimplEngine(config, weights, att_context_size=(70, 2))
    # one set of weights serves every trained look-ahead
    for att in ((70, 13), (70, 0)):
        assert RefimplEngine(config, weights, att_context_size=att).config.encoder.att_context_size == att
