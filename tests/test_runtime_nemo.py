"""refimpl against NeMo's own PyTorch cache-aware streaming (the committed goldens), every model, look-ahead and
clip: chunk schedule, every chunk's encoder output, lengths and caches, and the final RNNT/CTC greedy results."""

import numpy as np
import pytest
from fixture_data import (
    IMPLS,
    MODELS,
    STREAMS,
    encoder_ops,
    golden_chunk_input,
    layer_first_to_batch_first,
    mel_goldens,
    nemo_model,
    onnx_model,
    stream_golden,
)

from refimpl.model.encoder import encoder_step, initial_cache
from refimpl.runtime.chunking import chunk_schedule
from refimpl.runtime.engines import RefimplEngine
from refimpl.runtime.loop import run_stream
from refimpl.runtime.tokenizer import Tokenizer
from refimpl.tools.tolerances import compare
from weights_tools import streaming_params


@pytest.mark.parametrize("model,att,clip", STREAMS)
def test_chunk_schedule_is_nemos(model, att, clip):
    """The driver's schedule reproduces NeMo's CacheAwareStreamingAudioBuffer(pad_and_drop_preencoded=True)."""
    g = stream_golden(model, att, clip)
    config, _ = nemo_model(model)
    p = streaming_params(config.encoder, att)
    mel = mel_goldens()[f"{clip}/mel"]
    chunks = chunk_schedule([mel.shape[1]], p)
    assert len(chunks) == int(g["n_chunks"])
    for c in chunks:
        zeros, start, stop = g[f"chunk/{c.index}/bounds"]
        # NeMo's chunk: (pre-encode frames: zeros, then real frames) + new frames [c.start, c.start + n_new)
        assert stop == c.start + c.n_new[0]
        assert zeros + (c.start - start) == p.pre_encode_cache_size
        assert g[f"chunk/{c.index}/length"][0] == p.pre_encode_cache_size + c.n_new[0]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model,att,clip", STREAMS)
def test_encoder_matches_nemo_every_chunk(model, att, clip, impl):
    """encoder_step on NeMo's own chunk inputs, with the caches carried by refimpl, vs NeMo's per-chunk outputs."""
    g = stream_golden(model, att, clip)
    config, weights = nemo_model(model)
    cfg = config.with_att_context_size(att).encoder
    ops = encoder_ops(config, weights, att, impl)
    cc, tc, cl = initial_cache(cfg, 1)
    state = None
    for i in range(int(g["n_chunks"])):
        out, state = encoder_step(
            golden_chunk_input(model, att, clip, i), g[f"chunk/{i}/length"], cc, tc, cl, ops, engine_state=state
        )
        assert compare("outputs", out.outputs, g[f"chunk/{i}/encoded"]).ok, i
        assert np.array_equal(out.encoded_lengths, g[f"chunk/{i}/encoded_len"])
        assert np.array_equal(out.cache_last_channel_next_len, g[f"chunk/{i}/cache_last_channel_next_len"])
        if f"chunk/{i}/cache_last_channel_next" in g:
            assert compare(
                "cache_last_channel_next",
                out.cache_last_channel_next,
                layer_first_to_batch_first(g[f"chunk/{i}/cache_last_channel_next"]),
            ).ok, i
            assert compare(
                "cache_last_time_next",
                out.cache_last_time_next,
                layer_first_to_batch_first(g[f"chunk/{i}/cache_last_time_next"]),
            ).ok, i
        cc, tc, cl = out.cache_last_channel_next, out.cache_last_time_next, out.cache_last_channel_next_len


@pytest.mark.parametrize("model,att,clip", STREAMS)
def test_greedy_results_match_nemo(model, att, clip):
    """The whole driver (from NeMo's mel): RNNT tokens and text, CTC per-frame labels and text, as NeMo's
    conformer_stream_step gave them, from one encoder run feeding both heads."""
    g = stream_golden(model, att, clip)
    config, weights = nemo_model(model)
    engine = RefimplEngine(config, weights, att_context_size=att)
    assert engine.heads == MODELS[model]["heads"]  # named by weights_tools from the model, never guessed
    res = run_stream(engine, mel_goldens()[f"{clip}/mel"])
    tok = Tokenizer(config.tokenizer_model)
    if "rnnt" in engine.heads:
        assert res.rnnt_tokens[0] == g["rnnt/tokens"].tolist()
        assert tok.decode(res.rnnt_tokens[0]) == str(g["rnnt/text"])
    if "ctc" in engine.heads:
        assert res.ctc_frame_labels[0] == g["ctc/frame_argmax"].tolist()
        assert tok.decode(res.ctc_tokens[0]) == str(g["ctc/text"])


@pytest.mark.parametrize("model", MODELS)
def test_onnx_weights_give_nemo_results(model):
    """Weights pulled out of each look-ahead's ONNX export (not the .nemo) reproduce NeMo's streaming too."""
    for att in MODELS[model]["modes"]:
        config, weights = onnx_model(f"{model}/att-{att[0]}-{att[1]}")
        engine = RefimplEngine(config, weights)
        for clip in MODELS[model]["clips"]:
            g = stream_golden(model, att, clip)
            res = run_stream(engine, mel_goldens()[f"{clip}/mel"])  # the export's head: RNNT, or CTC (ctc model)
            if "rnnt" in engine.heads:
                assert res.rnnt_tokens[0] == g["rnnt/tokens"].tolist(), (att, clip)
            else:
                assert res.ctc_frame_labels[0] == g["ctc/frame_argmax"].tolist(), (att, clip)


def test_float64_mode_matches_nemo():
    """float64 runs the same code in double: within the same tolerance of NeMo's float32 (which it then
    measures: NeMo's own rounding)."""
    model, att, clip = "hybrid", (70, 6), "fox"
    g = stream_golden(model, att, clip)
    config, weights = nemo_model(model)
    engine = RefimplEngine(config, weights, att_context_size=att, dtype=np.float64)
    res = run_stream(engine, mel_goldens()[f"{clip}/mel"], keep_steps=True)
    for i, step in enumerate(res.steps):
        assert step.encoder["outputs"].dtype == np.float64
        assert compare("outputs", step.encoder["outputs"], g[f"chunk/{i}/encoded"]).ok
    assert res.rnnt_tokens[0] == g["rnnt/tokens"].tolist()
