"""Audio as it arrives: the streaming front end equals log_mel bit for bit whatever the split, and live streams
(any split of the audio into blocks, step or block order, several streams batched) give NeMo's tokens."""

import numpy as np
import pytest
import soundfile as sf
from fixture_data import AUDIO, MODELS, stream_golden
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import refimpl
from refimpl.model.preprocessing import log_mel
from refimpl.runtime.frontend import FeatureStream
from weights_tools import PreprocessorConfig

CLIPS = ("hello", "fox", "north_wind")
WAVES = {c: sf.read(AUDIO / f"{c}.wav", dtype="float32")[0] for c in CLIPS}
NEMO = {m: str(AUDIO.parent / m / "model.nemo") for m in MODELS}


@pytest.fixture(scope="module")
def models():
    return {(m, impl): refimpl.load(NEMO[m], impl=impl) for m in MODELS for impl in ("fast", "plain")}


def _golden_tokens(model, att, clip, decoder, blank):
    g = stream_golden(model, att, clip)
    if decoder == "rnnt":
        return g["rnnt/tokens"].tolist()
    out, prev = [], None  # NeMo's CTC frame labels, collapsed
    for k in g["ctc/frame_argmax"].tolist():
        if k != blank and k != prev:
            out.append(k)
        prev = k
    return out


def _splits(n: int, cuts) -> list:
    return sorted({int(c) % (n + 1) for c in cuts})


@settings(max_examples=40, deadline=None)
@given(clip=st.sampled_from(CLIPS), cuts=st.lists(st.integers(0, 10**6), max_size=12))
def test_feature_stream_is_log_mel_for_any_split(clip, cuts):
    x = WAVES[clip]
    ref, _ = log_mel(x)
    fs = FeatureStream(PreprocessorConfig())
    got = np.concatenate([fs.accept(b) for b in np.split(x, _splits(len(x), cuts))] + [fs.finish()], axis=1)
    assert got.dtype == ref.dtype and np.array_equal(got, ref[0])


@pytest.mark.parametrize("n", [1, 2, 159, 160, 161, 255, 256, 257, 399, 400, 401, 511, 512, 513, 8000, 8159])
def test_feature_stream_lengths_around_the_edges(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    ref, _ = log_mel(x)
    fs = FeatureStream(PreprocessorConfig())
    first = fs.accept(x[: n // 3])
    assert first.shape[1] == max(0, (n // 3 - 256) // 160 + 1)  # frames are handed out once final
    got = np.concatenate([first, fs.accept(x[n // 3 :]), fs.finish()], axis=1)
    assert np.array_equal(got, ref[0]) and got.shape[1] == 1 + n // 160


def test_feature_stream_refuses_what_it_cannot_stream():
    with pytest.raises(ValueError, match="need the whole utterance"):
        FeatureStream(PreprocessorConfig(normalize="per_feature"))
    fs = FeatureStream(PreprocessorConfig())
    fs.finish()
    with pytest.raises(ValueError, match="finished"):
        fs.accept(np.zeros(10, np.float32))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stream=st.sampled_from([(m, c) for m in sorted(MODELS) for c in MODELS[m]["clips"]]),
    order=st.sampled_from(["step", "block"]),
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
)
def test_any_split_gives_the_file_tokens(models, stream, order, cuts):
    model, clip = stream
    m = models[(model, "fast")]
    att = MODELS[model]["modes"][0]
    x = WAVES[clip]
    s = m.stream(order=order)
    for b in np.split(x, _splits(len(x), cuts)):
        s.accept_waveform(b)
    s.input_finished()
    assert s.tokens == _golden_tokens(model, att, clip, m.engine.heads[0], m.config.blank_id)


@pytest.mark.parametrize("impl", ["fast", "plain"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_transcribe_files_every_lookahead(models, model, impl):
    m = models[(model, impl)]
    for att in MODELS[model]["modes"]:
        for decoder in m.engine.heads:
            clips = MODELS[model]["clips"]
            results = m.transcribe([str(AUDIO / f"{c}.wav") for c in clips], att_context_size=att, decoder=decoder)
            for r, clip in zip(results, clips):
                g = stream_golden(model, att, clip)
                assert r.tokens == _golden_tokens(model, att, clip, decoder, m.config.blank_id), (att, decoder, clip)
                assert r.text == str(g[f"{decoder}/text"])
                assert r.att_context_size == att and r.chunks == int(g["n_chunks"])
                assert r.timestamps == sorted(r.timestamps) and all(0 <= t < r.audio_seconds for t in r.timestamps)


def test_partial_results_grow_and_the_last_chunk_runs_at_the_end(models):
    m = models[("hybrid", "fast")]
    x = WAVES["north_wind"]
    s = m.stream()
    seen = []
    for i in range(0, len(x), 4000):
        s.accept_waveform(x[i : i + 4000])
        seen.append(len(s.tokens))
    assert seen == sorted(seen) and seen[-1] > 0
    before = len(s.tokens)
    s.input_finished()
    g = stream_golden("hybrid", (70, 13), "north_wind")
    assert s.tokens == g["rnnt/tokens"].tolist() and len(s.tokens) >= before
    with pytest.raises(ValueError, match="takes no more audio"):
        s.accept_waveform(x[:10])


def test_streams_batched_together_equal_each_alone(models):
    m = models[("hybrid", "fast")]
    streams = [m.stream(att_context_size=(70, 1)) for _ in CLIPS]
    for s, c in zip(streams, CLIPS):
        s.accept_waveform(WAVES[c], run=False)
        s.input_finished(run=False)
    assert m.decode_streams(streams) > 0
    for s, c in zip(streams, CLIPS):
        assert s.tokens == stream_golden("hybrid", (70, 1), c)["rnnt/tokens"].tolist()
