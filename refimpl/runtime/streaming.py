"""The streaming driver: mel -> chunks -> encoder -> RNNT/CTC greedy, one pure step at a time.

``stream_step(engine, new_frames, n_new, state) -> (StepOutput, new_state)`` is the public unit; ``run_stream``
is the same step in a loop over NeMo's ``pad_and_drop_preencoded`` schedule. Every cache goes in and comes
out of every step. The engine (refimpl or onnxruntime) only does arithmetic; chunking and decoding logic live
here and in ``refimpl.chunking``, shared by both.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .chunking import chunk_schedule, dropped_tail_frames
from ..model.ctc import greedy_ctc
from ..model.rnnt import RNNTState, greedy_rnnt, initial_rnnt_state


@dataclass(frozen=True)
class StreamState:
    """Everything a batch of streams carries from one chunk to the next (export layouts, batch first)."""

    cache_last_channel: np.ndarray  # [B, n_layers, C, d_model] post-norm attention inputs of the last C frames
    cache_last_time: np.ndarray  # [B, n_layers, d_model, K-1] last K-1 inputs of each depthwise conv
    cache_last_channel_len: np.ndarray  # [B] int64 valid rows (right-aligned) of cache_last_channel
    pre_encode_cache: np.ndarray  # [B, feat_in, s+1] last mel frames, re-fed before the next chunk (zeros at start)
    rnnt: RNNTState | None  # LSTM state before consuming last_token, and last_token
    ctc_last_label: np.ndarray | None  # [B] label of the last CTC frame (blank at start)
    mel_frames: np.ndarray  # [B] int64 mel frames consumed so far
    chunks: int = 0  # steps taken
    # An engine's own derived state, e.g. refimpl's fast path keeps the projected keys/values of the cached
    # frames (a function of cache_last_channel, kept to avoid recomputing it). Dict of [B, ...] arrays or None;
    # it goes in and comes out of every step like the caches.
    engine_state: dict | None = None

    def select(self, keep: np.ndarray, other: "StreamState") -> "StreamState":
        """Per stream: self where keep[b], else other. An engine_state that only one side has cannot be split per
        stream, so it is dropped unless every stream keeps self's (the engine then rebuilds it from the caches)."""
        k = np.asarray(keep, bool)
        if k.all():
            return self
        pick = lambda a, b: np.where(k.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)  # noqa: E731
        return StreamState(
            pick(self.cache_last_channel, other.cache_last_channel), pick(self.cache_last_time, other.cache_last_time),
            pick(self.cache_last_channel_len, other.cache_last_channel_len),
            pick(self.pre_encode_cache, other.pre_encode_cache),
            None if self.rnnt is None else self.rnnt.select(k, other.rnnt),
            None if self.ctc_last_label is None else pick(self.ctc_last_label, other.ctc_last_label),
            pick(self.mel_frames, other.mel_frames), self.chunks,
            None if self.engine_state is None or other.engine_state is None else
            {name: pick(v, other.engine_state[name]) for name, v in self.engine_state.items()})


def available_decoders(engine, wanted=("rnnt", "ctc")) -> tuple:
    """The wanted decoders the engine has (an RNNT export has no CTC head for onnxruntime, and so on)."""
    return tuple(d for d in wanted if (d == "rnnt" and engine.has_rnnt) or (d == "ctc" and engine.has_ctc))


def initial_state(engine, batch: int, decoders=("rnnt", "ctc")) -> StreamState:
    """NeMo's initial cache state (zeros, length 0), a zero pre-encode cache (pad_and_drop_preencoded's leading
    zero frames), a zero LSTM state with blank as last token, and blank as the last CTC label."""
    enc, dt = engine.config.encoder, engine.dtype
    p = engine.params
    decoders = available_decoders(engine, decoders)
    rnnt = initial_rnnt_state(engine.config.rnnt, batch, dt) if "rnnt" in decoders else None
    ctc = np.full(batch, engine.config.blank_id, np.int64) if "ctc" in decoders else None
    return StreamState(
        cache_last_channel=np.zeros((batch, enc.n_layers, p.last_channel_cache_size, enc.d_model), dt),
        cache_last_time=np.zeros((batch, enc.n_layers, enc.d_model, p.conv_cache_size), dt),
        cache_last_channel_len=np.zeros(batch, np.int64),
        pre_encode_cache=np.zeros((batch, enc.feat_in, p.pre_encode_cache_size), dt),
        rnnt=rnnt, ctc_last_label=ctc, mel_frames=np.zeros(batch, np.int64))


@dataclass(frozen=True)
class StepOutput:
    audio_signal: np.ndarray  # [B, feat_in, T_in] the encoder input: pre-encode cache ‖ new frames
    length: np.ndarray  # [B] int64
    encoder: dict  # the engine's encoder outputs by export name
    active: np.ndarray  # [B] bool: streams that took part (others kept their state)
    rnnt_tokens: list | None = None  # per stream, tokens emitted in this chunk
    ctc_tokens: list | None = None  # per stream, collapsed tokens new in this chunk
    ctc_frame_labels: list | None = None  # per stream, argmax of every valid frame
    ctc_logprobs: np.ndarray | None = None  # [B, T, V+1]
    taps: dict | None = None


def stream_step(engine, new_frames: np.ndarray, n_new, state: StreamState, *, taps: dict | None = None):
    """One chunk for a batch of streams: new_frames [B, feat_in, W] (zero-padded past n_new[b]), n_new [B].

    Streams with n_new == 0 take no part: their state comes back unchanged. A stream with n_new < W is
    zero-padded and told its true length, as NeMo's export expects: its outputs are exact, but its caches absorb
    the padding frames (cache_last_channel_next_len grows by the padded width), so give a stream fewer than
    W frames only at its end. Returns (StepOutput, new state).
    """
    n_new = np.asarray(n_new, np.int64)
    active = n_new > 0
    pre = state.pre_encode_cache.shape[2]
    audio_signal = np.concatenate([state.pre_encode_cache, np.asarray(new_frames, state.pre_encode_cache.dtype)], 2)
    length = np.where(active, pre + n_new, 0)
    enc = engine.encoder(audio_signal, length, state.cache_last_channel, state.cache_last_time,
                         state.cache_last_channel_len, taps=taps, engine_state=state.engine_state)
    enc_len = np.where(active, enc["encoded_lengths"], 0)
    out = {"audio_signal": audio_signal, "length": length, "encoder": enc, "active": active, "taps": taps}

    rnnt = state.rnnt
    if rnnt is not None:
        out["rnnt_tokens"], rnnt = greedy_rnnt(enc["outputs"], enc_len, rnnt, engine.decoder_joint,
                                               blank_id=engine.config.blank_id,
                                               max_symbols=engine.config.rnnt.max_symbols)
    ctc_last = state.ctc_last_label
    if ctc_last is not None:
        logprobs = enc["logprobs"] if "logprobs" in enc else engine.ctc(enc["outputs"])
        out["ctc_tokens"], out["ctc_frame_labels"], ctc_last = greedy_ctc(logprobs, enc_len, ctc_last,
                                                                          blank_id=engine.config.blank_id)
        out["ctc_logprobs"] = logprobs

    # The next pre-encode cache: the last s+1 frames of [old cache ‖ this stream's new frames].
    idx = n_new[:, None] + np.arange(pre)[None, :]  # [B, pre] positions in audio_signal
    pre_next = np.take_along_axis(audio_signal, np.minimum(idx, audio_signal.shape[2] - 1)[:, None, :], axis=2)
    new_state = StreamState(
        cache_last_channel=enc["cache_last_channel_next"], cache_last_time=enc["cache_last_time_next"],
        cache_last_channel_len=enc["cache_last_channel_next_len"], pre_encode_cache=pre_next,
        rnnt=rnnt, ctc_last_label=ctc_last, mel_frames=state.mel_frames + n_new, chunks=state.chunks + 1,
        engine_state=enc.get("engine_state_next"))
    return StepOutput(**out), new_state.select(active, state)


@dataclass
class StreamResult:
    rnnt_tokens: list | None  # per stream
    ctc_tokens: list | None
    ctc_frame_labels: list | None
    steps: list = field(default_factory=list)  # StepOutput per chunk (when keep_steps)
    n_chunks: int = 0
    dropped_tail_frames: np.ndarray | None = None  # [B] mel frames too few for one more chunk (as NeMo)
    final_state: StreamState | None = None


def run_stream(engine, mel: np.ndarray, mel_lengths=None, *, decoders=("rnnt", "ctc"), keep_steps: bool = False,
               taps_for=None, on_step=None) -> StreamResult:
    """Stream a whole (batch of) mel spectrogram(s) [B, feat_in, F] chunk by chunk.

    mel_lengths [B] defaults to F for every stream (NeMo's streaming buffer uses every column it is given).
    ``taps_for(chunk_index) -> bool`` asks the engine for intermediates on those chunks; ``on_step(i, step,
    state)`` is called after each step (progress bars, cross-checks).
    """
    mel = np.asarray(mel)
    if mel.ndim == 2:
        mel = mel[None]
    b = mel.shape[0]
    lengths = np.full(b, mel.shape[2], np.int64) if mel_lengths is None else np.asarray(mel_lengths, np.int64)
    decoders = available_decoders(engine, decoders)
    state = initial_state(engine, b, decoders)
    res = StreamResult(rnnt_tokens=[[] for _ in range(b)] if "rnnt" in decoders else None,
                       ctc_tokens=[[] for _ in range(b)] if "ctc" in decoders else None,
                       ctc_frame_labels=[[] for _ in range(b)] if "ctc" in decoders else None)
    for chunk in chunk_schedule(lengths, engine.params):
        frames = np.zeros((b, mel.shape[1], chunk.width), mel.dtype)
        for i in range(b):
            frames[i, :, : chunk.n_new[i]] = mel[i, :, chunk.start: chunk.start + chunk.n_new[i]]
        taps = {} if taps_for is not None and taps_for(chunk.index) else None
        step, state = stream_step(engine, frames, chunk.n_new, state, taps=taps)
        for i in range(b):
            if res.rnnt_tokens is not None:
                res.rnnt_tokens[i] += step.rnnt_tokens[i]
            if res.ctc_tokens is not None:
                res.ctc_tokens[i] += step.ctc_tokens[i]
                res.ctc_frame_labels[i] += [int(x) for x in step.ctc_frame_labels[i]]
        if keep_steps:
            res.steps.append(step)
        if on_step is not None:
            on_step(chunk.index, step, state)
        res.n_chunks += 1
    res.dropped_tail_frames = dropped_tail_frames(lengths, engine.params)
    res.final_state = state
    return res
