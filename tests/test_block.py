"""Block evaluation (refimpl.model.block, order "block") against the step, chunk by chunk: every encoder output,
length and cache, every layer tap, and the tokens, on every fixture, look-ahead and clip, both implementations,
several block sizes and batches; and against onnxruntime's own chunk loop through crosscheck."""

import numpy as np
import pytest
from fixture_data import FIXTURES, MODELS, STREAMS, assert_crosscheck_ok, folder, mel_goldens, nemo_model, ort_engine

from refimpl.model.block import BlockNotExact, check_block_exact
from refimpl.model.encoder import PlainEncoder
from refimpl.runtime.engines import RefimplEngine
from refimpl.runtime.loop import OrderError, iter_stream, run_stream
from refimpl.tools.crosscheck import crosscheck_engines
from refimpl.tools.tolerances import compare

ENCODER_NAMES = (
    "outputs",
    "encoded_lengths",
    "cache_last_channel_next",
    "cache_last_time_next",
    "cache_last_channel_next_len",
)


def _engine(model, att, impl):
    config, weights = nemo_model(model)
    name, _, backend = impl.partition("-")
    return RefimplEngine(config, weights, att_context_size=att, impl=name, backend=backend or None)


def _assert_same_steps(a, b, where):
    assert len(a) == len(b), where
    for i, (sa, sb) in enumerate(zip(a, b)):
        assert np.array_equal(sa.audio_signal, sb.audio_signal) and np.array_equal(sa.length, sb.length), (where, i)
        for name in ENCODER_NAMES:
            c = compare(name, sb.encoder[name], sa.encoder[name])
            assert c.ok, (where, i, name, c)


@pytest.mark.parametrize("impl", ["plain", "fast-numba"])
@pytest.mark.parametrize("model,att,clip", STREAMS)
def test_block_equals_step_every_chunk(model, att, clip, impl):
    engine = _engine(model, att, impl)
    mel = mel_goldens()[f"{clip}/mel"]
    step = run_stream(engine, mel, keep_steps=True)
    for block_frames in (engine.streaming.valid_out_len * 2, engine.streaming.valid_out_len * 5, 10_000):
        block = run_stream(engine, mel, keep_steps=True, order="block", block_frames=block_frames)
        _assert_same_steps(step.steps, block.steps, (model, att, clip, impl, block_frames))
        assert block.tokens.by_decoder == step.tokens.by_decoder
        assert block.tokens.frames_by_decoder == step.tokens.frames_by_decoder
        assert block.tokens.ctc_frame_labels == step.tokens.ctc_frame_labels


@pytest.mark.parametrize("model", MODELS)
def test_block_taps_equal_step_taps(model):
    """Every tap of every chunk (pre_encode with the two frames the drop removes, pos_emb, every sub-block)."""
    for att in MODELS[model]["modes"]:
        engine = _engine(model, att, "plain")
        mel = mel_goldens()["fox/mel"]
        every = lambda i: True  # noqa: E731
        step = list(iter_stream(engine, mel, taps_for=every))
        block = list(iter_stream(engine, mel, taps_for=every, order="block"))
        assert len(step) == len(block)
        for (_, a, _), (_, b, _) in zip(step, block):
            assert set(a.taps) == set(b.taps)
            for name, v in a.taps.items():
                assert compare(name, b.taps[name], v).ok, (model, att, name)


def test_block_batch_equals_each_stream_alone():
    """A batch of streams of different lengths: blocks while every stream has full chunks, steps after."""
    engine = _engine("hybrid", (70, 1), "fast-numba")
    mels = [mel_goldens()[f"{c}/mel"] for c in ("north_wind", "fox", "north_wind")]
    lengths = [m.shape[1] for m in mels]
    batch = np.zeros((3, mels[0].shape[0], max(lengths)), np.float32)
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[1]] = m
    together = run_stream(engine, batch, lengths, order="block", block_frames=16)
    for i, m in enumerate(mels):
        alone = run_stream(engine, m)
        assert together.tokens.of("rnnt", i) == alone.tokens.of("rnnt")
        assert together.tokens.of("ctc", i) == alone.tokens.of("ctc")


def test_block_against_onnxruntime_chunk_loop():
    """crosscheck with refimpl in block order: onnxruntime's per-chunk outputs and caches within the table."""
    for att in MODELS["hybrid"]["modes"]:
        engine = _engine("hybrid", att, "fast-numba")
        report = crosscheck_engines(
            ort_engine(folder("hybrid", att)), engine, mel_goldens()["north_wind/mel"], order="block"
        )
        assert_crosscheck_ok(report)


def test_block_order_is_refused_where_it_would_not_be_exact():
    config, weights = nemo_model("hybrid")
    with pytest.raises(BlockNotExact, match=r"left context 69 is not a multiple of the chunk of 14"):
        check_block_exact(PlainEncoder(weights["encoder"], config.encoder, (69, 13)))
    with pytest.raises(OrderError, match="block evaluation is refimpl's"):
        list(iter_stream(ort_engine(folder("hybrid", (70, 13))), mel_goldens()["fox/mel"], order="block"))
    assert (FIXTURES / "hybrid" / "model.nemo").is_file()
