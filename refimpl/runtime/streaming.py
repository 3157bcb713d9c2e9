"""The streaming step: one chunk -> encoder -> RNNT/CTC greedy, pure: state in, state out.

``stream_step(engine, new_frames, n_new, state) -> (StepOutput, new_state)`` is the unit; the chunk loop over
NeMo's ``pad_and_drop_preencoded`` schedule is ``refimpl.runtime.loop``. Every cache goes in and comes out of
every step. The engine (refimpl or onnxruntime) only does arithmetic; chunking and decoding live here and in
the loop, shared by every engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..model.ctc import greedy_ctc
from ..model.rnnt import RNNTState, greedy_rnnt, initial_rnnt_state

DECODERS = ("rnnt", "ctc")


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

    def select(self, keep: np.ndarray, other: StreamState) -> StreamState:
        """Per stream: self where keep[b], else other. An engine_state that only one side has cannot be split per
        stream, so it is dropped unless every stream keeps self's (the engine then rebuilds it from the caches)."""
        k = np.asarray(keep, bool)
        if k.all():
            return self

        def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(k.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

        return StreamState(
            pick(self.cache_last_channel, other.cache_last_channel),
            pick(self.cache_last_time, other.cache_last_time),
            pick(self.cache_last_channel_len, other.cache_last_channel_len),
            pick(self.pre_encode_cache, other.pre_encode_cache),
            None if self.rnnt is None or other.rnnt is None else self.rnnt.select(k, other.rnnt),
            None
            if self.ctc_last_label is None or other.ctc_last_label is None
            else pick(self.ctc_last_label, other.ctc_last_label),
            pick(self.mel_frames, other.mel_frames),
            self.chunks,
            None
            if self.engine_state is None or other.engine_state is None
            else {name: pick(v, other.engine_state[name]) for name, v in self.engine_state.items()},
        )

    def with_caches(self, cache_last_channel, cache_last_time, cache_last_channel_len) -> StreamState:
        """The same state with other encoder caches (e.g. teacher-forced from a golden file); the engine's derived
        state is dropped, so the engine rebuilds it from these caches."""
        return replace(
            self,
            cache_last_channel=np.asarray(cache_last_channel, self.cache_last_channel.dtype),
            cache_last_time=np.asarray(cache_last_time, self.cache_last_time.dtype),
            cache_last_channel_len=np.asarray(cache_last_channel_len, np.int64),
            engine_state=None,
        )


def _stack_dict(dicts: list, axis_of) -> dict | None:
    if any(d is None for d in dicts) or len({tuple(sorted(d)) for d in dicts}) != 1:
        return None  # not every stream has it: the engine rebuilds it
    return {k: np.concatenate([d[k] for d in dicts], axis=axis_of(k)) for k in dicts[0]}


def stack_states(states: list) -> StreamState:
    """Streams' states (each a batch) side by side as one batch, to step them together."""
    cat = lambda get, axis=0: np.concatenate([get(s) for s in states], axis=axis)  # noqa: E731
    rnnt = None
    if all(s.rnnt is not None for s in states):
        rs = [s.rnnt for s in states]
        pred = _stack_dict([r.pred_out for r in rs], lambda k: 0 if k == "joint_pred" else 1)
        rnnt = RNNTState(
            np.concatenate([r.h for r in rs], 1),
            np.concatenate([r.c for r in rs], 1),
            np.concatenate([r.last_token for r in rs]),
            pred,
        )
    ctc = cat(lambda s: s.ctc_last_label) if all(s.ctc_last_label is not None for s in states) else None
    return StreamState(
        cat(lambda s: s.cache_last_channel),
        cat(lambda s: s.cache_last_time),
        cat(lambda s: s.cache_last_channel_len),
        cat(lambda s: s.pre_encode_cache),
        rnnt,
        ctc,
        cat(lambda s: s.mel_frames),
        max(s.chunks for s in states),
        _stack_dict([s.engine_state for s in states], lambda k: 0),
    )


def take_state(state: StreamState, i: int) -> StreamState:
    """Stream i of a batch state, as a batch of one."""
    one = lambda a, axis=0: np.take(a, [i], axis=axis)  # noqa: E731
    rnnt = None
    if state.rnnt is not None:
        r = state.rnnt
        pred = None if r.pred_out is None else {k: one(v, 0 if k == "joint_pred" else 1) for k, v in r.pred_out.items()}
        rnnt = RNNTState(one(r.h, 1), one(r.c, 1), one(r.last_token), pred)
    return StreamState(
        one(state.cache_last_channel),
        one(state.cache_last_time),
        one(state.cache_last_channel_len),
        one(state.pre_encode_cache),
        rnnt,
        None if state.ctc_last_label is None else one(state.ctc_last_label),
        one(state.mel_frames),
        state.chunks,
        None if state.engine_state is None else {k: one(v) for k, v in state.engine_state.items()},
    )


def available_decoders(engine, wanted=DECODERS) -> tuple:
    """The wanted decoders the engine has (an RNNT export has no CTC head for onnxruntime, and so on)."""
    return tuple(d for d in wanted if d in engine.heads)


def initial_state(engine, batch: int, decoders=DECODERS) -> StreamState:
    """NeMo's initial cache state (zeros, length 0), a zero pre-encode cache (pad_and_drop_preencoded's leading
    zero frames), a zero LSTM state with blank as last token, and blank as the last CTC label."""
    enc, dt, p = engine.config.encoder, engine.dtype, engine.streaming
    decoders = available_decoders(engine, decoders)
    return StreamState(
        cache_last_channel=np.zeros((batch, enc.n_layers, p.last_channel_cache_size, enc.d_model), dt),
        cache_last_time=np.zeros((batch, enc.n_layers, enc.d_model, p.conv_cache_size), dt),
        cache_last_channel_len=np.zeros(batch, np.int64),
        pre_encode_cache=np.zeros((batch, enc.feat_in, p.pre_encode_cache_size), dt),
        rnnt=initial_rnnt_state(engine.config.rnnt, batch, dt) if "rnnt" in decoders else None,
        ctc_last_label=np.full(batch, engine.config.blank_id, np.int64) if "ctc" in decoders else None,
        mel_frames=np.zeros(batch, np.int64),
    )


@dataclass(frozen=True)
class Decoded:
    """One encoder call's frames decoded, for a batch of streams."""

    rnnt_tokens: list | None  # per stream, tokens emitted
    rnnt: RNNTState | None  # the prediction state after them
    ctc_tokens: list | None  # per stream, collapsed tokens new in these frames
    ctc_frame_labels: list | None  # per stream, argmax of every valid frame
    ctc_logprobs: np.ndarray | None  # [B, T, V+1]
    ctc_last_label: np.ndarray | None  # [B]
    rnnt_frames: list | None = None  # per stream, the frame (in this call) of every RNNT token
    ctc_frames: list | None = None  # per stream, the frame of every CTC token


def greedy_over_decoder_joint(engine, enc, enc_len, state) -> tuple:
    """NeMo's greedy search driven through an engine's ``decoder_joint`` (the search itself is
    ``refimpl.model.rnnt.greedy_rnnt``)."""
    return greedy_rnnt(
        enc,
        enc_len,
        state,
        engine.decoder_joint,
        blank_id=engine.config.blank_id,
        max_symbols=engine.config.rnnt.max_symbols,
    )


def decode(engine, enc: dict, enc_len, rnnt: RNNTState | None, ctc_last_label) -> Decoded:
    """Greedy RNNT (when ``rnnt`` is a state; the engine's ``greedy_rnnt``) and CTC (when ``ctc_last_label`` is
    given) over the first enc_len[b] frames of one encoder call's outputs, carrying each decoder's state."""
    tokens = frames = labels = logprobs = ctc_tokens = ctc_frames = None
    if rnnt is not None:
        tokens, frames, rnnt = engine.greedy_rnnt(enc["outputs"], enc_len, rnnt)
    if ctc_last_label is not None:
        logprobs = enc["logprobs"] if "logprobs" in enc else engine.ctc(enc["outputs"])
        ctc_tokens, ctc_frames, labels, ctc_last_label = greedy_ctc(
            logprobs, enc_len, ctc_last_label, blank_id=engine.config.blank_id
        )
    return Decoded(tokens, rnnt, ctc_tokens, labels, logprobs, ctc_last_label, frames, ctc_frames)


@dataclass(frozen=True)
class StepOutput:
    audio_signal: np.ndarray  # [B, feat_in, T_in] the encoder input: pre-encode cache ‖ new frames
    length: np.ndarray  # [B] int64
    encoder: dict  # the engine's encoder outputs by export name
    active: np.ndarray  # [B] bool: streams that took part (others kept their state)
    decoded: Decoded
    taps: dict | None = None

    @property
    def rnnt_tokens(self) -> list | None:
        return self.decoded.rnnt_tokens

    @property
    def ctc_tokens(self) -> list | None:
        return self.decoded.ctc_tokens

    @property
    def ctc_frame_labels(self) -> list | None:
        return self.decoded.ctc_frame_labels

    @property
    def ctc_logprobs(self) -> np.ndarray | None:
        return self.decoded.ctc_logprobs


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
    enc = engine.encoder(
        audio_signal,
        length,
        state.cache_last_channel,
        state.cache_last_time,
        state.cache_last_channel_len,
        taps=taps,
        engine_state=state.engine_state,
    )
    decoded = decode(engine, enc, np.where(active, enc["encoded_lengths"], 0), state.rnnt, state.ctc_last_label)
    # The next pre-encode cache: the last s+1 frames of [old cache ‖ this stream's new frames].
    idx = n_new[:, None] + np.arange(pre)[None, :]  # [B, pre] positions in audio_signal
    pre_next = np.take_along_axis(audio_signal, np.minimum(idx, audio_signal.shape[2] - 1)[:, None, :], axis=2)
    new_state = StreamState(
        cache_last_channel=enc["cache_last_channel_next"],
        cache_last_time=enc["cache_last_time_next"],
        cache_last_channel_len=enc["cache_last_channel_next_len"],
        pre_encode_cache=pre_next,
        rnnt=decoded.rnnt,
        ctc_last_label=decoded.ctc_last_label,
        mel_frames=state.mel_frames + n_new,
        chunks=state.chunks + 1,
        engine_state=enc.get("engine_state_next"),
    )
    return StepOutput(audio_signal, length, enc, active, decoded, taps), new_state.select(active, state)


@dataclass
class Tokens:
    """Tokens accumulated over a stream's steps, per decoder and stream, with the encoder frame of each."""

    by_decoder: dict  # decoder -> per stream, the token ids so far
    ctc_frame_labels: list | None  # per stream, the argmax of every CTC frame so far (when CTC decodes)
    frames_by_decoder: dict = field(default_factory=dict)  # decoder -> per stream, encoder frame of every token
    encoder_frames: list = field(default_factory=list)  # per stream, encoder frames decoded so far

    @classmethod
    def empty(cls, decoders, batch: int) -> Tokens:
        labels: list | None = [[] for _ in range(batch)] if "ctc" in decoders else None
        return cls(
            {d: [[] for _ in range(batch)] for d in decoders},
            labels,
            {d: [[] for _ in range(batch)] for d in decoders},
            [0] * batch,
        )

    def add(self, step: StepOutput) -> None:
        d = step.decoded
        new = {"rnnt": (d.rnnt_tokens, d.rnnt_frames), "ctc": (d.ctc_tokens, d.ctc_frames)}
        for decoder, per_stream in self.by_decoder.items():
            toks, frames = new[decoder]
            for i, t in enumerate(toks or []):
                per_stream[i] += t
                self.frames_by_decoder[decoder][i] += [self.encoder_frames[i] + f for f in (frames or [])[i]]
        if self.ctc_frame_labels is not None and d.ctc_frame_labels is not None:
            for i, labels in enumerate(d.ctc_frame_labels):
                self.ctc_frame_labels[i] += [int(x) for x in labels]
        lengths = np.where(step.active, step.encoder["encoded_lengths"], 0)
        for i in range(len(self.encoder_frames)):
            self.encoder_frames[i] += int(lengths[i])

    def of(self, decoder: str, stream: int = 0) -> list:
        return self.by_decoder[decoder][stream]

    def frames_of(self, decoder: str, stream: int = 0) -> list:
        """The encoder frame index (from the stream's start) of every token of ``decoder``."""
        return self.frames_by_decoder[decoder][stream]

    @property
    def rnnt(self) -> list | None:
        return self.by_decoder.get("rnnt")

    @property
    def ctc(self) -> list | None:
        return self.by_decoder.get("ctc")
