"""The NeMo-trained demo model (tests/fixtures/demo, made by train_demo.py): refimpl gives NeMo's own streaming
tokens on every clip, look-ahead and head, on both implementations and on the exports; its transcripts are the
words spoken; and the stateless export run chunk by chunk loses words, as the failure refimpl explains does.

References: NeMo's streaming results (goldens/transcripts.json, from CacheAwareStreamingAudioBuffer with
pad_and_drop_preencoded + conformer_stream_step), NeMo's per-chunk encoder outputs and caches
(goldens/stream-*.npz), and the reference texts of the manifest (what espeak-ng was asked to say)."""

from __future__ import annotations

import json

import jiwer
import numpy as np
import pytest
from fixture_data import FIXTURES, collapse_ctc
from fixture_data import layer_first_to_batch_first as batch_first

import refimpl
from refimpl.model.audio import load_audio
from refimpl.runtime.engines import open_refimpl
from refimpl.runtime.features import features
from refimpl.runtime.loop import iter_stream
from refimpl.runtime.onnx_engine import OnnxEngine
from refimpl.tools.conform import conform
from refimpl.tools.stateless import stream_stateless
from refimpl.tools.tolerances import FIXTURE_WORST_REL, compare

DEMO = FIXTURES / "demo"
MODES = [(70, 13), (70, 6), (70, 1), (70, 0)]
MANIFEST = [json.loads(line) for line in (DEMO / "manifest.json").read_text().splitlines() if line.strip()]
CLIPS = {(DEMO / e["audio_filepath"]).stem: e for e in MANIFEST}
NEMO = json.loads((DEMO / "goldens" / "transcripts.json").read_text())
BLANK = NEMO["blank"]
CHUNK_GOLDENS = sorted({p.stem.split("-", 4)[-1] for p in (DEMO / "goldens").glob("stream-*.npz")})
WER_LIMIT = 0.03  # issue 8: every look-ahead at most 3 % on the demo manifest


def att_key(att) -> str:
    return f"att-{att[0]}-{att[1]}"


@pytest.fixture(scope="module", params=["plain", "fast"])
def model(request):
    return refimpl.load(DEMO / "model.nemo", impl=request.param)


@pytest.mark.parametrize("att", MODES, ids=att_key)
def test_tokens_are_nemos_on_every_clip_both_heads(model, att):
    """The plain reference in block order (one masked pass per block: its step order is checked chunk by chunk
    below), the fast path in step order: both are NeMo's tokens."""
    order = "block" if model.engine.impl == "plain" else "step"
    for clip, entry in CLIPS.items():
        nemo = NEMO["clips"][clip][att_key(att)]
        path = DEMO / entry["audio_filepath"]
        r = model.transcribe(path, att_context_size=att, decoder="rnnt", order=order)
        assert r.tokens == nemo["rnnt_tokens"], (clip, "rnnt")
        assert r.text == nemo["rnnt_text"]
        c = model.transcribe(path, att_context_size=att, decoder="ctc", order=order)
        assert c.tokens == collapse_ctc(nemo["ctc_frame_argmax"], BLANK), (clip, "ctc")
        assert c.text == nemo["ctc_text"]


@pytest.mark.parametrize("att", MODES, ids=att_key)
def test_onnx_exports_give_nemos_tokens(att):
    m = refimpl.load(DEMO / att_key(att), engine="onnxruntime")
    for clip, entry in CLIPS.items():
        assert m.transcribe(DEMO / entry["audio_filepath"]).tokens == NEMO["clips"][clip][att_key(att)]["rnnt_tokens"]
    ctc = refimpl.load(DEMO / "ctc-att-70-13", engine="onnxruntime")
    for clip, entry in CLIPS.items():
        frames = NEMO["clips"][clip]["att-70-13"]["ctc_frame_argmax"]
        assert ctc.transcribe(DEMO / entry["audio_filepath"]).tokens == collapse_ctc(frames, BLANK)


@pytest.mark.parametrize("clip", CHUNK_GOLDENS)
@pytest.mark.parametrize("att", MODES, ids=att_key)
def test_every_chunk_is_nemos(att, clip):
    """Per chunk: refimpl's encoder outputs and caches (from its own features of the clip) against NeMo's."""
    g = dict(np.load(DEMO / "goldens" / f"stream-{att_key(att)}-{clip}.npz"))
    engine = open_refimpl(DEMO / "model.nemo", att_context_size=att)
    mel, _ = features(load_audio(DEMO / CLIPS[clip]["audio_filepath"]), engine.config, engine.featurizer)
    worst = 0.0
    n = caches = 0
    for c, step, _ in iter_stream(engine, mel, decoders=("rnnt",)):
        i = c.index
        enc = step.encoder
        t = int(g[f"chunk/{i}/encoded_len"].reshape(-1)[0])
        assert int(enc["encoded_lengths"][0]) == t
        pairs = [(enc["outputs"][..., :t], g[f"chunk/{i}/encoded"][..., :t], "outputs")]
        if f"chunk/{i}/cache_last_channel_next" in g:  # NeMo's goldens keep the caches of the first and last chunks
            pairs += [
                (
                    enc["cache_last_channel_next"],
                    batch_first(g[f"chunk/{i}/cache_last_channel_next"]),
                    "cache_last_channel",
                ),
                (enc["cache_last_time_next"], batch_first(g[f"chunk/{i}/cache_last_time_next"]), "cache_last_time"),
            ]
            caches += 1
        for ours, theirs, name in pairs:
            cmp = compare(name, ours, theirs)
            assert cmp.ok, (i, name, cmp.max_rel)
            worst = max(worst, cmp.max_rel)
        assert int(enc["cache_last_channel_next_len"][0]) == int(g[f"chunk/{i}/cache_last_channel_next_len"][0])
        n += 1
    assert n == int(g["n_chunks"]) and caches >= min(n, 4)
    assert worst <= FIXTURE_WORST_REL


def _wer(hyps: dict) -> float:
    refs = [CLIPS[c]["text"] for c in CLIPS]
    return jiwer.wer(refs, [hyps[c] for c in CLIPS])


@pytest.mark.parametrize("att", MODES, ids=att_key)
def test_wer_on_the_demo_manifest(att):
    m = refimpl.load(DEMO / "model.nemo")
    for decoder in ("rnnt", "ctc"):
        hyps = {
            c: m.transcribe(DEMO / e["audio_filepath"], att_context_size=att, decoder=decoder).text
            for c, e in CLIPS.items()
        }
        nemo = {c: NEMO["clips"][c][att_key(att)][f"{decoder}_text"] for c in CLIPS}
        assert _wer(hyps) == _wer(nemo) <= WER_LIMIT, decoder  # refimpl's WER is NeMo's, and it is low


# Measured on the 11 demo clips (train_demo's protocol: chunks of 8 (R+1) mel frames, each one call of the
# stateless export, the LSTM state carried): WER 0.535 at [70,13], 0.873 at [70,6], 1.0 at [70,1] and [70,0],
# against 0.028 streamed with caches at every look-ahead (TRAINING.md: 0.446 and 1.0 on the 200 held-out clips).
# The bounds keep a margin of about a quarter of the gap at [70,13] and 10 points at [70,0].
STATELESS_WER_AT_LEAST = {(70, 13): 0.40, (70, 0): 0.90}


@pytest.mark.parametrize("att", sorted(STATELESS_WER_AT_LEAST), ids=att_key)
def test_stateless_export_chunk_by_chunk_loses_words(att):
    """The failure refimpl exists to explain, as a checked fact: the same weights exported without cache support
    and fed chunk by chunk (every call from empty context) lose words; the cache-aware export does not."""
    engine = OnnxEngine(DEMO / "nocache")
    tokenizer = refimpl.load(DEMO / "nocache", engine="onnxruntime").tokenizer
    chunk = 8 * (att[1] + 1)
    hyps = {}
    for c, e in CLIPS.items():
        mel, _ = features(load_audio(DEMO / e["audio_filepath"]), engine.config)
        hyps[c] = tokenizer.decode(stream_stateless(engine, mel[0], chunk).tokens)
    stateless = _wer(hyps)
    streaming = _wer({c: NEMO["clips"][c][att_key(att)]["rnnt_text"] for c in CLIPS})
    assert stateless >= STATELESS_WER_AT_LEAST[att] > streaming, (stateless, streaming)


def test_conform_names_the_digits_sherpa_onnx_loses_without_tail_padding():
    """sherpa-onnx (emulated on the cache-aware export; the emulation is checked against the real package in
    test_peers.py) fed the clip without tail padding never runs its last partial window: "seven oh" is lost, the
    last_chunk stage alone costs those 2 words and fixing it alone restores NeMo's transcript. With the 0.66 s its
    examples append, the last chunk is heard and no last_chunk deviation is reported."""
    clip = DEMO / CLIPS["heldout_v4"]["audio_filepath"]
    r = conform(clip, DEMO / "att-70-13", "sherpa-onnx", tail_padding_seconds=0.0)
    assert r.nemo["text"] == CLIPS["heldout_v4"]["text"] == "one oh two six three seven oh"
    assert r.runtime_result["text"] == "one oh two six three"
    stages = {d.stage: d for d in r.deviations}
    assert list(stages) == ["features", "first_chunk", "last_chunk"]
    assert stages["last_chunk"].effect["words_changed"] == 2 and stages["last_chunk"].if_fixed["words_changed"] == 0
    assert stages["features"].effect["words_changed"] == stages["first_chunk"].effect["words_changed"] == 0
    padded = conform(clip, DEMO / "att-70-13", "sherpa-onnx")
    assert padded.runtime_result["tokens"] == padded.nemo["tokens"]
    assert [d.stage for d in padded.deviations] == ["features", "first_chunk"]


@pytest.mark.parametrize("clip", ["heldout_v4", "long_v0"])
def test_conform_nemo_control_is_clean_on_the_demo(clip):
    r = conform(DEMO / CLIPS[clip]["audio_filepath"], DEMO / "att-70-13", "nemo")
    assert r.ok and r.deviations == [] and r.nemo["text"] == NEMO["clips"][clip]["att-70-13"]["rnnt_text"]
