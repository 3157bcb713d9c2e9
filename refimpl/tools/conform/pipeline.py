"""One streaming pipeline whose every stage can be NeMo's or a runtime's, so the two can be told apart stage by
stage.

A run is audio -> ``features`` -> ``normalization`` -> chunk schedule (``first_chunk``, ``chunking``,
``last_chunk``) -> encoder calls on a ``graph`` with the caches carried -> ``decoding``. A ``Plan`` says, for each
of the seven stages, whether NeMo's way or the runtime's way runs; a ``Runtime`` says what the runtime's way is.
With every stage NeMo's, the run is NeMo's cache-aware streaming (``CacheAwareStreamingAudioBuffer`` with
``pad_and_drop_preencoded``, greedy search) on NeMo's arithmetic; with every stage the runtime's, it is the
runtime's emulation (``refimpl.peers``), which the tests check against the real packages.

The chunk schedule, for a window of ``W`` mel frames that advances ``S`` frames (``P = W - S`` of them the
pre-encode cache), calls k = 0, 1, ... take new frames [o + kS, o + kS + S) after the P frames before them:

- ``first_chunk``: NeMo o = 0 (the first call's P pre-encode frames are zeros); sherpa-onnx o = P (its first
  window is mel frames [0, W): the first P real frames play the pre-encode cache and are never decoded).
- ``chunking``: NeMo W, S from the model's look-ahead and ``length`` = P + new frames; a runtime's W, S (sherpa:
  its metadata) and its ``length`` rule (sherpa: always W); or one offline call over the whole utterance
  (onnx-asr).
- ``last_chunk``: NeMo runs a last partial chunk of at least ``subsampling_factor`` new frames (the first chunk
  of at least one); sherpa-onnx runs a window only while its end is strictly before the frames ready, after the
  application's tail padding has been appended to the audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...model.ctc import greedy_ctc as nemo_greedy_ctc
from ...model.preprocessing import normalize_batch
from ...model.rnnt import RNNTState
from ...model.rnnt import greedy_rnnt as nemo_greedy_rnnt
from ...peers import onnx_asr, sherpa_onnx

STAGES = ("features", "normalization", "first_chunk", "chunking", "last_chunk", "decoding", "graph")
NEMO, RUNTIME = "nemo", "runtime"
HOP = 160  # samples per mel frame, both front ends
SAMPLE_RATE = 16000


# --------------------------------------------------------------------------------------------------------------
# what a runtime does in each stage
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Graph:
    """The arithmetic of one model as one implementation computes it, behind one interface.

    ``encoder(audio_signal [1, F, W], length [1], caches | None) -> (first [1, d, T] outputs or [1, T, V+1]
    CTC log-probs, encoded_lengths [1], caches_next | None)``; ``caches`` is a dict of the three export caches
    (None for a stateless graph, which runs offline only). ``decoder_joint(frames [B, d], tokens [B], h, c) ->
    (logits [B, V+1], h, c)``: the prediction network after consuming ``tokens`` from (h, c), then the joint
    (RNNT only)."""

    label: str
    head: str  # "rnnt" | "ctc"
    stateless: bool
    encoder: Callable
    decoder_joint: Callable | None
    initial_caches: Callable  # () -> caches dict (zeros, length 0)
    pred_state_shape: tuple | None  # (layers, 1, hidden) of h and c


@dataclass(frozen=True)
class Runtime:
    """What one runtime does in each stage (its way; NeMo's way is fixed by the model)."""

    name: str  # "sherpa-onnx" | "onnx-asr" | "nemo"
    features: Callable | None  # samples [N] float32 -> (mel [T, F] float32, valid frames); None: NeMo's
    normalization: str  # what the runtime applies to its features: "NA" | "per_feature"
    first_chunk: str  # "zeros" (NeMo) | "frames" (the first window's pre-encode cache is real frames)
    window: int | None  # mel frames per call, None for offline
    shift: int | None
    length: str  # "valid" (pre-encode + new frames, NeMo) | "window" (always W) | "offline"
    last_chunk: str  # "partial" (NeMo) | "strict" (sherpa: window end < frames ready) | "all" (offline)
    tail_padding_seconds: float  # silence the application appends (sherpa's examples: 0.66 s)
    decoding: str  # "nemo" | "sherpa-onnx" | "onnx-asr"
    max_symbols: int  # tokens per frame at most
    graph: Graph
    ctc_subsampling_factor: int | None = None  # onnx-asr's CTC decodes (n - 1) // this + 1 frames


@dataclass(frozen=True)
class Model:
    """NeMo's side: the model's own numbers and its exact arithmetic."""

    window: int  # StreamingParams.window
    shift: int  # chunk_size
    subsampling_factor: int
    drop_extra_pre_encoded: int  # subsampled frames the graph drops after pre_encode
    normalization: str  # the model's preprocessor normalize ("NA" for streaming FastConformers)
    max_symbols: int
    blank_id: int
    features: Callable  # samples -> (mel [T, F], valid) NeMo's log-mel, unnormalised
    graph: Graph  # refimpl's arithmetic (NeMo's, to float rounding)


Plan = dict  # stage -> NEMO | RUNTIME


def plan(**runtime_stages) -> Plan:
    """All stages NeMo's except those given: ``plan(features=RUNTIME)``; ``plan(all=RUNTIME)`` is the runtime."""
    base = runtime_stages.pop("all", NEMO)
    p = dict.fromkeys(STAGES, base)
    for stage, who in runtime_stages.items():
        if stage not in p:
            raise ValueError(f"unknown stage {stage!r}: stages are {', '.join(STAGES)}")
        p[stage] = who
    return p


# --------------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One encoder call: the window fed and what came out."""

    index: int
    start: int  # first mel frame of the window (negative: zeros before the audio)
    new_start: int  # first frame the call decodes (after the pre-encode frames)
    n_new: int  # new frames (real ones; the rest of the window is zero padding)
    length: int  # the ``length`` input
    audio_signal: np.ndarray  # [1, F, W]
    first: np.ndarray  # [1, d, T] outputs | [1, T, V+1] log-probs
    encoded_length: int
    decoded_frames: int  # output frames the decoding read


@dataclass
class Run:
    plan: Plan
    tokens: list
    token_frames: list  # encoder frame (counted over the whole run) of every token
    calls: list
    mel: np.ndarray  # [T, F] the features after normalisation
    valid_frames: int
    audio_samples: int
    padding_samples: int
    decoded_until: int  # mel frames [0, decoded_until) were new frames of some call
    notes: list = field(default_factory=list)

    @property
    def unheard_seconds(self) -> float:
        """Audio after the last decoded frame's 10 ms hop: never decoded."""
        return max(0, self.audio_samples - HOP * self.decoded_until) / SAMPLE_RATE


class Incompatible(ValueError):
    """This combination of stages cannot run (e.g. a stateless graph inside a streaming schedule)."""


def per_feature(mel: np.ndarray, valid: int) -> np.ndarray:
    """[T, F]: onnx-asr's (and NeMo's) per_feature normalisation over the first ``valid`` frames."""
    return onnx_asr.per_feature(mel[None], np.array([valid]))[0]


def run(audio: np.ndarray, p: Plan, model: Model, rt: Runtime, *, user_features=None) -> Run:
    """Run the pipeline of plan ``p`` on ``audio`` [N] float32 at 16 kHz. ``user_features`` ((mel [T, F],
    valid)) replaces the runtime's features (the ``--features`` a user brings)."""
    pad = int(rt.tail_padding_seconds * SAMPLE_RATE) if p["last_chunk"] == RUNTIME else 0
    x = np.concatenate([audio, np.zeros(pad, np.float32)]) if pad else audio

    if p["features"] == RUNTIME and user_features is not None:
        mel, valid = user_features
    elif p["features"] == RUNTIME and rt.features is not None:
        mel, valid = rt.features(x)
    else:
        mel, valid = model.features(x)
    if p["normalization"] == RUNTIME:  # the runtime's own arithmetic (onnx-asr's per_feature)
        if rt.normalization == "per_feature":
            mel = per_feature(mel, valid)
        elif rt.normalization != "NA":
            raise Incompatible(f"normalization {rt.normalization!r} is not one refimpl emulates (NA, per_feature)")
    else:  # NeMo's normalize_batch with the model's setting
        mel = normalize_batch(mel.T[None], np.array([valid]), model.normalization)[0].T
    mel = np.ascontiguousarray(mel, np.float32)

    graph = rt.graph if p["graph"] == RUNTIME else model.graph
    offline = p["chunking"] == RUNTIME and rt.length == "offline"
    if graph.stateless and not offline:
        raise Incompatible(f"{graph.label} was exported without cache support: it cannot run a streaming schedule")
    windows = [_offline_window(mel, valid)] if offline else _windows(mel, valid, p, model, rt)
    return _decode(windows, graph, p, model, rt, mel, valid, len(audio), pad, offline=offline)


def _offline_window(mel, valid):
    sig = np.ascontiguousarray(mel.T[None])
    return 0, 0, valid, mel.shape[0], sig


def _windows(mel: np.ndarray, valid: int, p: Plan, model: Model, rt: Runtime) -> list:
    """(start, new_start, n_new, length, audio_signal) of every call the plan's schedule makes."""
    runtime_grid = p["chunking"] == RUNTIME and rt.window is not None
    w, s = (rt.window, rt.shift) if runtime_grid else (model.window, model.shift)
    assert w is not None and s is not None
    pre = w - s
    offset = pre if p["first_chunk"] == RUNTIME and rt.first_chunk == "frames" else 0
    full_length = p["chunking"] == RUNTIME and rt.length == "window"
    strict = p["last_chunk"] == RUNTIME and rt.last_chunk == "strict"
    padded = np.concatenate([np.zeros((pre, mel.shape[1]), np.float32), mel[:valid]], 0)  # frame f at f + pre
    out = []
    k = 0
    while True:
        new_start = offset + k * s
        n_new = int(np.clip(valid - new_start, 0, s))
        if strict:
            if not new_start + s < valid:
                break
        elif n_new < (1 if k == 0 else model.subsampling_factor):
            break
        win = padded[new_start : new_start + pre + n_new]  # frames [new_start - pre, new_start + n_new)
        if win.shape[0] < w:
            win = np.concatenate([win, np.zeros((w - win.shape[0], mel.shape[1]), np.float32)], 0)
        length = w if full_length else pre + n_new
        out.append((new_start - pre, new_start, n_new, length, np.ascontiguousarray(win.T[None])))
        k += 1
    return out


def _decode(windows, graph: Graph, p: Plan, model: Model, rt: Runtime, mel, valid, n_audio, pad, *, offline) -> Run:
    decoding = rt.decoding if p["decoding"] == RUNTIME else NEMO
    max_symbols = rt.max_symbols if p["decoding"] == RUNTIME else model.max_symbols
    blank = model.blank_id
    caches = None if offline else graph.initial_caches()
    tokens: list = []
    frames: list = []
    calls = []
    frame0 = 0
    rnnt = ctc_last = sherpa_state = None
    if graph.head == "rnnt":
        assert graph.pred_state_shape is not None
        h = np.zeros(graph.pred_state_shape, np.float32)
        rnnt = RNNTState(h, h.copy(), np.array([blank], np.int64))
    else:
        ctc_last = np.array([blank], np.int64)
    decoded_until = 0
    for i, (start, new_start, n_new, length, sig) in enumerate(windows):
        first, enc_len, caches = graph.encoder(sig, np.array([length], np.int64), caches)
        enc_len = int(np.asarray(enc_len).reshape(-1)[0])
        n_out = first.shape[2] if graph.head == "rnnt" else first.shape[1]
        if decoding == "sherpa-onnx":
            n_dec = n_out  # sherpa ignores encoded_lengths
        elif decoding == "onnx-asr" and graph.head == "ctc":
            n_dec = int(onnx_asr.ctc_lengths(length, rt.ctc_subsampling_factor or model.subsampling_factor))
        else:
            n_dec = enc_len
        n_dec = min(n_dec, n_out)
        if graph.head == "rnnt":
            assert rnnt is not None and graph.decoder_joint is not None
            if decoding == "sherpa-onnx":
                sherpa_state = _sherpa_rnnt(first[:, :, :n_dec], sherpa_state, graph, blank, max_symbols)
                new_tokens, new_frames = sherpa_state.tokens[len(tokens) :], sherpa_state.timestamps[len(tokens) :]
                new_frames = [f - (sherpa_state.frame_offset - n_dec) for f in new_frames]
            else:  # NeMo's and onnx-asr's searches are the same rule (onnx-asr's: max_tokens_per_step)
                tk, fr, rnnt = nemo_greedy_rnnt(
                    first, np.array([n_dec]), rnnt, graph.decoder_joint, blank_id=blank, max_symbols=max_symbols
                )
                new_tokens, new_frames = tk[0], fr[0]
        else:
            assert ctc_last is not None
            tk, fr, _, ctc_last = nemo_greedy_ctc(first, np.array([n_dec]), ctc_last, blank_id=blank)
            new_tokens, new_frames = tk[0], fr[0]
        tokens += new_tokens
        frames += [frame0 + f for f in new_frames]
        frame0 += n_dec
        if n_dec:
            decoded_until = max(decoded_until, new_start + n_new)
        calls.append(Call(i, start, new_start, n_new, length, sig, first, enc_len, n_dec))
    return Run(dict(p), tokens, frames, calls, mel, valid, n_audio, pad, decoded_until)


def _sherpa_rnnt(enc, state, graph: Graph, blank: int, max_symbols: int):
    """sherpa-onnx's DecodeOne (``refimpl.peers.sherpa_onnx.greedy_rnnt_chunk``) over ``graph``'s decoder_joint:
    its "decoder output" is (token consumed, LSTM state after it), the joiner the decoder_joint on that token
    from the state before it."""
    dj = graph.decoder_joint
    assert dj is not None

    def decoder(token, states):
        h, c = states
        zero = np.zeros((1, enc.shape[1]), np.float32)
        _, h2, c2 = dj(zero, np.array([token]), h, c)
        return (token, h, c), [h2, c2]

    def joiner(frame, dec_out):
        token, h, c = dec_out
        logits, _, _ = dj(frame[:, :, 0], np.array([token]), h, c)
        return logits[0]

    if state is None:
        assert graph.pred_state_shape is not None
        z = np.zeros(graph.pred_state_shape, np.float32)
        state = sherpa_onnx.RnntDecoderState(None, [z, z.copy()])
    return sherpa_onnx.greedy_rnnt_chunk(enc, state, decoder, joiner, blank_id=blank, max_symbols=max_symbols)


def with_stage(p: Plan, stage: str, who: str) -> Plan:
    q = dict(p)
    q[stage] = who
    return q


__all__ = [
    "STAGES",
    "NEMO",
    "RUNTIME",
    "Graph",
    "Runtime",
    "Model",
    "Plan",
    "plan",
    "Call",
    "Run",
    "Incompatible",
    "run",
    "with_stage",
]
