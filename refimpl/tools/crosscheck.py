"""Run onnxruntime (on NeMo's export) and refimpl side by side, chunk by chunk, and find where they part ways.

Both engines stream through the same chunk loop (``refimpl.runtime.streaming.iter_stream``), in lockstep; each
carries and feeds back its own caches, so a difference in either the arithmetic or the state handling shows up
at the first chunk it affects. Per chunk, every encoder output and cache output is compared under the tolerance
table; every decoder_joint call onnxruntime made is replayed through refimpl on the same inputs (logits and
LSTM states compared); with ``layers=True`` each layer's intermediate tensors are compared too. The report
(``refimpl.tools.report``) names the first chunk, tensor, layer and frame over tolerance.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from weights_tools import ModelConfig

from ..model.taps import signal_order
from ..runtime.chunking import chunk_schedule
from ..runtime.engines import ENCODER_OUTPUTS, EngineWrapper, RefimplEngine, load_model
from ..runtime.features import features
from ..runtime.lookahead import parse_att_context_size
from ..runtime.loop import iter_stream
from ..runtime.onnx_engine import OnnxEngine
from ..runtime.streaming import DECODERS, Tokens, available_decoders, decode, greedy_over_decoder_joint, initial_state
from .contract import check_same_architecture, stateless_message
from .report import ChunkReport, Report, first_divergence, token_divergence
from .tolerances import compare, tolerance_for

DECODER_OUTPUTS = ("decoder_joint.outputs", "decoder_joint.output_states_1", "decoder_joint.output_states_2")


class DecoderRecorder(EngineWrapper):
    """An engine that keeps every decoder_joint call's inputs and outputs (for replay through another engine)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.calls: list = []

    def decoder_joint(self, frames, tokens, h, c):
        out = self.inner.decoder_joint(frames, tokens, h, c)
        self.calls.append(((frames, tokens, h, c), out))
        return out

    def greedy_rnnt(self, enc, enc_len, state) -> tuple:
        return greedy_over_decoder_joint(self, enc, enc_len, state)  # every call through decoder_joint above

    def take_calls(self) -> list:
        calls, self.calls = self.calls, []
        return calls


def outputs_of(encoder: dict, decoded) -> dict:
    """An encoder call's outputs by export name, with the CTC log-probs when they were decoded."""
    return {**encoder, **({"logprobs": decoded.ctc_logprobs} if decoded.ctc_logprobs is not None else {})}


def compare_outputs(mine: dict, reference: dict) -> dict:
    """Every encoder output of ``reference`` {name: array} against ``mine``: name -> Comparison, in the
    encoder's output order (a missing one compares as a shape mismatch)."""
    return {name: compare(name, mine.get(name), reference[name]) for name in ENCODER_OUTPUTS if name in reference}


def replay_decoder(calls, engine) -> dict:
    """``engine``'s decoder_joint replayed on every recorded call: per output, the worst comparison (the first
    failing one, else the largest max_rel)."""
    worst: dict = {}
    for inputs, expected in calls:
        got = engine.decoder_joint(*inputs)
        for name, key, a, r in zip(DECODER_OUTPUTS, ("decoder_logits", "lstm_state", "lstm_state"), got, expected):
            cmp = compare(name, a, r, tolerance_for(key))
            prev = worst.get(name)
            if prev is None or (prev.ok and (not cmp.ok or cmp.max_rel > prev.max_rel)):
                worst[name] = cmp
    return worst


def _common_decoders(reference, candidate, decoders) -> tuple:
    return tuple(d for d in available_decoders(reference, decoders) if d in available_decoders(candidate))


def crosscheck_engines(
    reference,
    candidate,
    mel,
    *,
    model: str = "",
    decoders=DECODERS,
    layers: bool = False,
    on_chunk=None,
    order: str = "step",
) -> Report:
    """``reference`` (e.g. OnnxEngine) vs ``candidate`` (e.g. RefimplEngine) on one stream of mel [feat_in, F] or
    [1, feat_in, F]. ``order``: how the candidate evaluates the chunks ("step", or "block": runs of chunks in one
    pass, each chunk's outputs compared as if stepped). ``on_chunk(i, n_chunks)`` is called after each chunk."""
    mel = np.asarray(mel, np.float32)
    mel = mel[None] if mel.ndim == 2 else mel
    decoders = _common_decoders(reference, candidate, decoders)
    ref = DecoderRecorder(reference)
    taps_for = (lambda i: True) if layers else None
    n_chunks = len(chunk_schedule([mel.shape[2]], reference.streaming))
    tokens = {reference.name: Tokens.empty(decoders, 1), candidate.name: Tokens.empty(decoders, 1)}
    chunks, first = [], None
    lockstep = zip(
        iter_stream(ref, mel, decoders=decoders, taps_for=taps_for),
        iter_stream(candidate, mel, decoders=decoders, taps_for=taps_for, order=order),
    )
    for (chunk, step_r, _), (_, step_c, _) in lockstep:
        outs = compare_outputs(outputs_of(step_c.encoder, step_c.decoded), outputs_of(step_r.encoder, step_r.decoded))
        outs.update(replay_decoder(ref.take_calls(), candidate))
        taps = {}
        if step_r.taps is not None and step_c.taps is not None:
            taps = {n: compare(n, step_c.taps[n], step_r.taps[n]) for n in signal_order(step_r.taps)}
        report = ChunkReport(chunk.index, outs, taps)
        chunks.append(report)
        tokens[reference.name].add(step_r)
        tokens[candidate.name].add(step_c)
        if first is None and not report.ok:
            first = first_divergence(chunk.index, taps, outs)
        if on_chunk is not None:
            on_chunk(chunk.index, n_chunks)
    toks = {who: {d: t.of(d) for d in decoders} for who, t in tokens.items()}
    first = first or token_divergence(toks[reference.name], toks[candidate.name])
    dropped = int(mel.shape[2] - sum(int(c.n_new[0]) for c in chunk_schedule([mel.shape[2]], reference.streaming)))
    return Report(
        model,
        tuple(candidate.config.encoder.att_context_size),
        chunks,
        toks,
        first,
        dropped,
        reference=reference.name,
        candidate=candidate.name,
    )


def crosscheck_offline(reference, candidate, mel, *, model: str = "", decoders=DECODERS) -> Report:
    """For an encoder exported without cache support: one whole-utterance call on each engine (the function
    such a graph computes), compared like one chunk; greedy decoding over every frame."""
    mel = np.asarray(mel, np.float32)
    mel = mel[None] if mel.ndim == 2 else mel
    length = np.array([mel.shape[2]], np.int64)
    decoders = _common_decoders(reference, candidate, decoders)
    ref = DecoderRecorder(reference)
    tokens, outputs = {}, {}
    for engine in (ref, candidate):
        enc = engine.encoder(mel, length, None, None, None)
        start = initial_state(engine, 1, decoders)
        d = decode(engine, enc, enc["encoded_lengths"], start.rnnt, start.ctc_last_label)
        outputs[engine.name] = outputs_of(enc, d)
        tokens[engine.name] = {k: v[0] for k, v in (("rnnt", d.rnnt_tokens), ("ctc", d.ctc_tokens)) if v is not None}
    outs = compare_outputs(outputs[candidate.name], outputs[reference.name])
    outs.update(replay_decoder(ref.take_calls(), candidate))
    chunk = ChunkReport(0, outs)
    first = None if chunk.ok else first_divergence(0, {}, outs)
    return Report(
        model,
        tuple(candidate.config.encoder.att_context_size),
        [chunk],
        tokens,
        first,
        mode="offline",
        reference=reference.name,
        candidate=candidate.name,
    )


def _with_lookahead_of(config: ModelConfig, other: ModelConfig) -> ModelConfig:
    """Weights from another export of the same model know only their own look-ahead: the graph under test
    proves the model serves its look-ahead too."""
    both = tuple(dict.fromkeys([config.encoder.att_context_size, other.encoder.att_context_size]))
    return dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, att_context_sizes=both))


def crosscheck(
    audio,
    model,
    *,
    att_context_size=None,
    weights=None,
    layers: bool = False,
    dtype=np.float32,
    impl: str = "plain",
    backend: str | None = None,
    threads: int = 1,
    decoders=DECODERS,
    on_chunk=None,
    notices: list | None = None,
    order: str = "step",
) -> Report:
    """onnxruntime on ``model`` (NeMo's export) vs refimpl (weights from ``weights`` if given — a .nemo or
    another export of the same model — else from ``model``) on ``audio`` (a path or a 1-D array). ``impl``:
    refimpl's plain NumPy reference (default) or its fast path; ``order``: refimpl's evaluation order."""
    ref = OnnxEngine(model, att_context_size=parse_att_context_size(att_context_size), threads=threads, taps=layers)
    config, w = load_model(weights if weights is not None else model)
    if weights is not None:
        check_same_architecture(ref.config, config, str(model), str(weights))
        if config.encoder.att_context_sizes is None:
            config = _with_lookahead_of(config, ref.config)
    cand = RefimplEngine(
        config,
        w,
        att_context_size=ref.config.encoder.att_context_size if ref.has_cache_io else None,
        impl=impl,
        backend=backend,
        dtype=dtype,
    )
    mel, _ = features(audio, cand.config, cand.featurizer, notices=notices)
    if not ref.has_cache_io:
        if notices is not None:
            notices.append(
                stateless_message(ref.files.encoder or ref.files.ctc)
                + " Comparing one whole-utterance call instead (what this graph computes)."
            )
        return crosscheck_offline(ref, cand, mel, model=str(model), decoders=decoders)
    return crosscheck_engines(
        ref, cand, mel, model=str(model), decoders=decoders, layers=layers, on_chunk=on_chunk, order=order
    )
