"""The fast path (refimpl.fast.encoder) against onnxruntime and against the plain path, chunk by chunk, on every fixture
export and look-ahead, and its engine_state contract: interchangeable with the other engines at any chunk."""

import numpy as np
import pytest
from fixture_data import (
    MODELS,
    STREAMS,
    assert_close,
    assert_crosscheck_ok,
    att_dir,
    folder,
    mel_goldens,
    nemo_model,
    onnx_model,
    ort_engine,
    stream_golden,
)

from refimpl.fast.encoder import project_cached_kv
from refimpl.model.encoder import PlainEncoder, encoder_step
from refimpl.runtime.chunking import chunk_schedule
from refimpl.runtime.engines import RefimplEngine, open_refimpl
from refimpl.runtime.streaming import initial_state, stream_step
from refimpl.tools.crosscheck import crosscheck_engines
from refimpl.tools.tolerances import FIXTURE_WORST_REL, compare


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("model,att,clip", STREAMS)
def test_fast_crosscheck_every_export_and_lookahead(model, att, clip, backend):
    """Fast engine (weights from the .nemo) vs the export for this look-ahead: every output, cache and layer tap."""
    config, weights = nemo_model(model)
    cand = RefimplEngine(config, weights, att_context_size=att, impl="fast", backend=backend)
    report = crosscheck_engines(
        ort_engine(folder(model, att), taps=True), cand, mel_goldens()[f"{clip}/mel"], layers=True
    )
    assert_crosscheck_ok(report, stream_golden(model, att, clip))
    assert max(r for _, r in report.worst().values()) < FIXTURE_WORST_REL


@pytest.mark.parametrize("model", MODELS)
def test_fast_from_export_folder(model):
    """Weights read tensor by tensor from the ONNX files straight into the fast layout."""
    att = MODELS[model]["modes"][0]
    cand = open_refimpl(folder(model, att), impl="fast")
    assert_crosscheck_ok(
        crosscheck_engines(ort_engine(folder(model, att)), cand, mel_goldens()["fox/mel"]),
        stream_golden(model, att, "fox"),
    )


def test_fast_float64():
    config, weights = onnx_model(f"hybrid/{att_dir((70, 0))}")
    cand = RefimplEngine(config, weights, impl="fast", backend="numba", dtype=np.float64)
    assert_crosscheck_ok(crosscheck_engines(ort_engine(folder("hybrid", (70, 0))), cand, mel_goldens()["fox/mel"]))


def _run(engines, mel, att_params, batch_lengths=None):
    """Stream mel [B, F, T] chunk by chunk, engine engines[i % len] at chunk i; -> list of step outputs."""
    lengths = batch_lengths if batch_lengths is not None else [mel.shape[2]] * mel.shape[0]
    state = initial_state(engines[0], mel.shape[0], ("rnnt",))
    steps = []
    for c in chunk_schedule(lengths, att_params):
        frames = np.zeros((mel.shape[0], mel.shape[1], c.width), np.float32)
        for b in range(mel.shape[0]):
            frames[b, :, : c.n_new[b]] = mel[b, :, c.start : c.start + c.n_new[b]]
        step, state = stream_step(engines[c.index % len(engines)], frames, c.n_new, state)
        steps.append(step)
    return steps, state


@pytest.mark.parametrize("att", [(70, 13), (70, 0)])
def test_engines_take_over_from_each_other_at_any_chunk(att):
    """fast -> plain -> onnxruntime -> fast ...: each engine continues from the caches the previous one produced
    (the fast engine rebuilds its projected keys/values from cache_last_channel when engine_state is None)."""
    config, weights = nemo_model("hybrid")
    fast = RefimplEngine(config, weights, att_context_size=att, impl="fast")
    plain = RefimplEngine(config, weights, att_context_size=att)
    ort = ort_engine(folder("hybrid", att))
    mel = mel_goldens()["north_wind/mel"][None]
    mixed, _ = _run([fast, plain, ort], mel, ort.streaming)
    ref, _ = _run([ort], mel, ort.streaming)
    assert len(mixed) == len(ref) > 3
    for a, r in zip(mixed, ref):
        for name in ("outputs", "cache_last_channel_next", "cache_last_time_next", "cache_last_channel_next_len"):
            assert compare(name, a.encoder[name], r.encoder[name]).ok, name
    assert [s.rnnt_tokens for s in mixed] == [s.rnnt_tokens for s in ref]


def test_engine_state_rolls_with_the_cache():
    """Row r of engine_state['linear_k'/'linear_v'] is the projection of row r of cache_last_channel, at every
    chunk (so the state is a pure function of the caches it travels with)."""
    config, weights = nemo_model("hybrid")
    fast = RefimplEngine(config, weights, att_context_size=(70, 6), impl="fast")
    mel = mel_goldens()["north_wind/mel"][None]
    state = initial_state(fast, 1, ())
    for c in chunk_schedule([mel.shape[2]], fast.streaming):
        _, state = stream_step(fast, mel[:, :, c.start : c.start + c.width], c.n_new, state)
        k_t, v = project_cached_kv(state.cache_last_channel, fast.ops.layout, fast.config.encoder)
        n = int(state.cache_last_channel_len[0])
        c_ = state.cache_last_channel.shape[2]
        assert_close(state.engine_state["linear_k"][..., c_ - n :], k_t[..., c_ - n :], "engine_state")
        assert_close(state.engine_state["linear_v"][..., c_ - n :, :], v[..., c_ - n :, :], "engine_state")


def test_batch_with_different_lengths_matches_each_stream_alone():
    """Streams of a batch end at different chunks (inactive streams keep their state, engine_state included)."""
    config, weights = nemo_model("hybrid")
    fast = RefimplEngine(config, weights, att_context_size=(70, 1), impl="fast")
    g = mel_goldens()
    clips = [g["north_wind/mel"], g["hello/mel"]]
    width = max(c.shape[1] for c in clips)
    mel = np.zeros((2, clips[0].shape[0], width), np.float32)
    for b, c in enumerate(clips):
        mel[b, :, : c.shape[1]] = c
    batch, _ = _run([fast], mel, fast.streaming, batch_lengths=[c.shape[1] for c in clips])
    for b, c in enumerate(clips):
        alone, _ = _run([fast], c[None], fast.streaming)
        assert sum((s.rnnt_tokens[b] for s in batch), []) == sum((s.rnnt_tokens[0] for s in alone), [])
        for i, s in enumerate(alone):
            assert compare("outputs", batch[i].encoder["outputs"][b : b + 1], s.encoder["outputs"]).ok


def test_offline_call_matches_plain():
    """With every cache None the fast step is NeMo's offline forward, as the plain encoder_step."""
    config, weights = nemo_model("hybrid")
    fast = RefimplEngine(config, weights, impl="fast")
    mel = mel_goldens()["fox/mel"][None]
    got = fast.encoder(mel, [mel.shape[2]], None, None, None)
    ref, _ = encoder_step(
        mel, np.array([mel.shape[2]]), None, None, None, PlainEncoder(weights["encoder"], fast.config.encoder)
    )
    assert got["outputs"].shape == ref.outputs.shape
    assert compare("outputs", got["outputs"], ref.outputs).ok
    assert "engine_state_next" not in got


def test_fast_greedy_batch_is_each_stream_alone():
    """FastGreedyRNNT steps B > 1 streams in lockstep: tokens, their frames and the state (pred_out included) are
    each stream's alone, whatever the lengths (0 included) and whether pred_out is given or computed."""
    from refimpl.model.rnnt import RNNTState

    config, weights = nemo_model("hybrid")
    fast = RefimplEngine(config, weights, att_context_size=(70, 13), impl="fast")
    greedy = fast._greedy
    rng = np.random.default_rng(3)
    d, layers, hidden = config.encoder.d_model, config.rnnt.pred_rnn_layers, config.rnnt.pred_hidden
    enc = rng.standard_normal((3, d, 14)).astype(np.float32) * 3
    enc_len = np.array([14, 9, 0])
    h = rng.standard_normal((layers, 3, hidden)).astype(np.float32) * 0.1
    c = rng.standard_normal((layers, 3, hidden)).astype(np.float32) * 0.1
    state = RNNTState(h, c, np.array([config.blank_id, 3, 7]))
    for pred_given in (False, True):
        if pred_given:  # the state after one call, pred_out included, as the next chunk gets it
            _, _, state = greedy.greedy(enc, enc_len, state)
        tokens, frames, out = greedy.greedy(enc, enc_len, state)
        for b in range(3):
            sb = RNNTState(
                state.h[:, b : b + 1],
                state.c[:, b : b + 1],
                state.last_token[b : b + 1],
                None
                if state.pred_out is None
                else {
                    k: v[..., b : b + 1, :] if k != "joint_pred" else v[b : b + 1] for k, v in state.pred_out.items()
                },
            )
            tb, fb, ob = greedy.greedy(enc[b : b + 1], enc_len[b : b + 1], sb)
            assert tokens[b] == tb[0] and frames[b] == fb[0]
            assert out.last_token[b] == ob.last_token[0]
            assert_close(out.h[:, b : b + 1], ob.h, "lstm_state")
            assert_close(out.pred_out["joint_pred"][b : b + 1], ob.pred_out["joint_pred"], "decoder_logits")
        assert sum(map(len, tokens)) > 0  # the search emitted something to compare
