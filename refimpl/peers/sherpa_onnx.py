"""sherpa-onnx's online recognizer for NeMo cache-aware models (``OnlineRecognizerTransducerNeMoImpl``,
``OnlineRecognizerCtcImpl`` with a NeMo CTC model), as pure functions, verified against sherpa-onnx 2.0.1.

What sherpa-onnx does with a stream, in the order the functions here run it:

1. ``features``: kaldi-native-fbank over the samples as given (``normalize_samples``: no x32768), then any tail
   padding the application appends, then ``input_finished()`` (which flushes the last frames by reflecting the
   end of the signal). The same settings for the transducer and the CTC model (``kaldi_fbank.NEMO_TRANSDUCER``).
   ``normalize_type`` from the metadata is stored in the config but never applied by the online path: streaming
   features are never normalised, whatever the metadata says.
2. ``window_starts``: a window of ``window_size`` mel frames runs once ``processed + window_size <
   frames_ready`` (strictly less), then ``processed += chunk_shift``. Window k is mel frames
   [k*chunk_shift, k*chunk_shift + window_size): the first window's first ``window_size - chunk_shift`` real
   frames play the pre-encode cache (NeMo feeds zeros there), and no window is ever partial, so audio after
   the last full window is never decoded unless the caller pads the tail.
3. ``run_encoder``: ``length`` is always ``window_size``; caches start at zero (length 0) and are carried;
   ``encoded_lengths`` is dropped and every output frame is decoded.
4. ``greedy_rnnt``: per frame up to 10 symbols (hard-coded ``max_symbols_per_frame``); the decoder output of the
   last emitted token (and the LSTM state after it) is cached across frames and chunks; at the start the
   decoder runs once on blank from zero states. ``greedy_ctc``: argmax per frame, a token is emitted when it is
   neither blank nor the previous frame's label, the previous label carried across chunks.
5. ``result_text``: symbols from tokens.txt with a leading "▁" turned into a space; the transducer drops
   ``<unk>`` and spaces before punctuation (or between CJK characters); then leading spaces and one leading
   punctuation mark are removed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from . import kaldi_fbank

SAMPLE_RATE = 16000
HOP = 160  # samples per mel frame (10 ms)
MAX_SYMBOLS_PER_FRAME = 10  # hard-coded in OnlineTransducerGreedySearchNeMoDecoder
EXAMPLE_TAIL_PADDING_SECONDS = 0.66  # python-api-examples/online-*-decode-files.py append this much silence
EXPORT_TEST_TAIL_PADDING_SECONDS = 2.0  # scripts/nemo/.../test-onnx-transducer.py

# sherpa-onnx 2.0.1: the transducer's PostInit sets 0..8000 Hz, the CTC's PostInit high_freq 0 (= Nyquist):
# the same filterbank, so both heads get identical features.
FEATURES = {"rnnt": kaldi_fbank.NEMO_TRANSDUCER, "ctc": dataclasses.replace(kaldi_fbank.NEMO_TRANSDUCER, high_freq=0.0)}


# --------------------------------------------------------------------------------------------------------------
# 1. features
# --------------------------------------------------------------------------------------------------------------
def tail_padding_samples(seconds: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Samples of silence an application appends, computed as sherpa's examples do: int(seconds * rate)."""
    return int(seconds * sample_rate)


def stream_samples(samples, tail_padding_seconds: float = 0.0) -> np.ndarray:
    """What ``accept_waveform`` receives: the samples as float32, then the tail padding zeros."""
    x = np.asarray(samples, np.float32).reshape(-1)
    return np.concatenate([x, np.zeros(tail_padding_samples(tail_padding_seconds), np.float32)])


def features(
    samples, *, head: str = "rnnt", tail_padding_seconds: float = 0.0, input_finished: bool = True
) -> np.ndarray:
    """samples [N] -> mel [T, 80] float32 exactly as sherpa's stream holds them (``stream.get_frames``)."""
    return kaldi_fbank.fbank(
        stream_samples(samples, tail_padding_seconds), FEATURES[head], input_finished=input_finished
    )


def frames_ready(n_samples: int, *, input_finished: bool = True, head: str = "rnnt") -> int:
    """``stream.NumFramesReady()`` after ``n_samples`` samples (padding included)."""
    return kaldi_fbank.num_frames(n_samples, FEATURES[head], flush=input_finished)


# --------------------------------------------------------------------------------------------------------------
# 2. the window walk
# --------------------------------------------------------------------------------------------------------------
def window_starts(n_frames_ready: int, window_size: int, chunk_shift: int) -> list:
    """First mel frame of every window sherpa decodes: ``while processed + window_size < ready``."""
    starts, processed = [], 0
    while processed + window_size < n_frames_ready:
        starts.append(processed)
        processed += chunk_shift
    return starts


@dataclass(frozen=True)
class EncoderCall:
    """One encoder call as sherpa makes it."""

    index: int
    start: int  # first mel frame of the window
    stop: int  # one past the last
    audio_signal: np.ndarray  # [1, feat_in, window_size] float32
    length: np.ndarray  # [1] int64, always window_size


def encoder_calls(mel: np.ndarray, window_size: int, chunk_shift: int) -> list:
    """mel [T, 80] (sherpa's features) -> every EncoderCall sherpa runs on them."""
    calls = []
    for k, s in enumerate(window_starts(mel.shape[0], window_size, chunk_shift)):
        sig = np.ascontiguousarray(mel[s : s + window_size].T[None], np.float32)
        calls.append(EncoderCall(k, s, s + window_size, sig, np.array([window_size], np.int64)))
    return calls


def encoder_inputs(
    samples, meta, *, head: str = "rnnt", tail_padding_seconds: float = 0.0, input_finished: bool = True
) -> list:
    """samples -> the EncoderCalls sherpa makes. ``meta``: ``weights_tools.peers.SherpaMeta`` (or anything with
    window_size and chunk_shift), e.g. ``weights_tools.peers.read_sherpa_metadata(detect_peer_folder(dir))``."""
    mel = features(samples, head=head, tail_padding_seconds=tail_padding_seconds, input_finished=input_finished)
    return encoder_calls(mel, meta.window_size, meta.chunk_shift)


@dataclass(frozen=True)
class Schedule:
    """How much of the audio sherpa's window walk reaches."""

    audio_samples: int
    padding_samples: int
    frames_ready: int  # mel frames after input_finished (padding included)
    windows: int
    frames_fed: int  # mel frames [0, frames_fed) reach the encoder
    unheard_samples: int  # real audio after the last fed frame's hop: never decoded

    @property
    def unheard_seconds(self) -> float:
        return self.unheard_samples / SAMPLE_RATE


def schedule(
    n_samples: int,
    window_size: int,
    chunk_shift: int,
    *,
    tail_padding_seconds: float = 0.0,
    input_finished: bool = True,
) -> Schedule:
    """The windows sherpa runs on ``n_samples`` of audio plus the tail padding, and the audio they never reach
    (each fed frame accounts for its 10 ms hop [160 m, 160 m + 160) of audio)."""
    pad = tail_padding_samples(tail_padding_seconds)
    ready = frames_ready(n_samples + pad, input_finished=input_finished)
    starts = window_starts(ready, window_size, chunk_shift)
    fed = starts[-1] + window_size if starts else 0
    return Schedule(n_samples, pad, ready, len(starts), fed, max(0, n_samples - HOP * fed))


# --------------------------------------------------------------------------------------------------------------
# 3. the encoder
# --------------------------------------------------------------------------------------------------------------
def initial_caches(meta) -> dict:
    """Zero caches with the metadata's dims (batch 1), cache_last_channel_len 0."""
    return {
        "cache_last_channel": np.zeros((1,) + tuple(meta.cache_last_channel), np.float32),
        "cache_last_time": np.zeros((1,) + tuple(meta.cache_last_time), np.float32),
        "cache_last_channel_len": np.zeros(1, np.int64),
    }


def run_encoder(encoder, calls: list, meta) -> list:
    """Run every call with the caches carried. ``encoder(audio_signal, length, cache_last_channel,
    cache_last_time, cache_last_channel_len) -> tuple/list of the graph's 5 outputs`` in graph order (first: outputs
    [1, d, T] or CTC logprobs [1, T, V+1]; second, encoded_lengths, is ignored as sherpa ignores it).
    Returns the first output of every call."""
    caches = initial_caches(meta)
    out = []
    for c in calls:
        first, _, clc, clt, clcl = encoder(
            c.audio_signal,
            c.length,
            caches["cache_last_channel"],
            caches["cache_last_time"],
            caches["cache_last_channel_len"],
        )
        caches = {"cache_last_channel": clc, "cache_last_time": clt, "cache_last_channel_len": clcl}
        out.append(first)
    return out


# --------------------------------------------------------------------------------------------------------------
# 4. decoding
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RnntDecoderState:
    """What a sherpa stream carries between chunks: the decoder output for the last emitted token (or blank)
    and the LSTM states after consuming it."""

    decoder_out: np.ndarray | None  # [1, pred_hidden, 1]; None before the first chunk
    states: list  # [h, c], each [pred_rnn_layers, 1, pred_hidden]
    tokens: list = field(default_factory=list)
    timestamps: list = field(default_factory=list)  # encoder frame index of each token
    frame_offset: int = 0


def initial_rnnt_state(meta) -> RnntDecoderState:
    shape = (meta.pred_rnn_layers, 1, meta.pred_hidden)
    return RnntDecoderState(None, [np.zeros(shape, np.float32), np.zeros(shape, np.float32)])


def greedy_rnnt_chunk(
    encoder_out: np.ndarray,
    state: RnntDecoderState,
    decoder,
    joiner,
    *,
    blank_id: int,
    max_symbols: int = MAX_SYMBOLS_PER_FRAME,
    blank_penalty: float = 0.0,
) -> RnntDecoderState:
    """sherpa's DecodeOne on one chunk. encoder_out [1, d, T]; ``decoder(token, states) -> (decoder_out [1, H,
    1], states)``; ``joiner(encoder_frame [1, d, 1], decoder_out) -> logits [V+1]``."""
    dec_out, states = state.decoder_out, state.states
    tokens, stamps = list(state.tokens), list(state.timestamps)
    if dec_out is None:
        dec_out, states = decoder(tokens[-1] if tokens else blank_id, states)
    for t in range(encoder_out.shape[2]):
        frame = encoder_out[:, :, t : t + 1]
        for _ in range(max_symbols):
            logits = np.array(joiner(frame, dec_out), np.float32).reshape(-1)
            if blank_penalty > 0:
                logits[blank_id] -= blank_penalty
            y = int(np.argmax(logits))
            if y == blank_id:
                break
            tokens.append(y)
            stamps.append(t + state.frame_offset)
            dec_out, states = decoder(y, states)
    return RnntDecoderState(dec_out, states, tokens, stamps, state.frame_offset + encoder_out.shape[2])


def greedy_rnnt(encoder_outs: list, decoder, joiner, meta, **kw) -> RnntDecoderState:
    """All chunks (``run_encoder``'s outputs) through ``greedy_rnnt_chunk``."""
    state = initial_rnnt_state(meta)
    for e in encoder_outs:
        state = greedy_rnnt_chunk(e, state, decoder, joiner, blank_id=meta.blank_id, **kw)
    return state


def greedy_ctc(logprobs: list, *, blank_id: int) -> tuple[list, list]:
    """sherpa's OnlineCtcGreedySearchDecoder over chunks of log-probs [1, T, V+1] -> (tokens, timestamps)."""
    tokens, stamps, prev, offset = [], [], -1, 0
    for lp in logprobs:
        labels = np.argmax(lp[0], axis=-1)
        for t, y in enumerate(labels.tolist()):
            if y != blank_id and y != prev:
                tokens.append(y)
                stamps.append(t + offset)
            prev = y
        offset += lp.shape[1]
    return tokens, stamps


def _is_cjk(c: str) -> bool:
    cp = ord(c)
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x1100, 0x11FF),
            (0x2E80, 0xA4CF),
            (0xA840, 0xD7AF),
            (0xF900, 0xFAFF),
            (0xFE30, 0xFE4F),
            (0xFF65, 0xFFDC),
            (0x20000, 0x2FFFF),
        )
    )


def _is_punct(c: str) -> bool:
    cp = ord(c)
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x21, 0x2F),
            (0x3A, 0x40),
            (0x5B, 0x60),
            (0x7B, 0x7E),
            (0x3000, 0x303F),
            (0xFF01, 0xFF0F),
            (0xFF1A, 0xFF20),
            (0xFF3B, 0xFF40),
            (0xFF5B, 0xFF65),
        )
    )


def result_text(tokens, symbols, *, head: str = "rnnt") -> tuple[str, list]:
    """(text, visible token symbols) as sherpa-onnx 2.0.1 builds them. Each symbol: a leading '▁' becomes a space.
    Transducer (Convert): '<unk>' is skipped, and a space is removed where it stands between two CJK characters
    or before a punctuation mark. Both heads (OnlineRecognizer::GetResult): leading spaces are removed, then one
    leading punctuation mark. Trailing spaces stay."""
    syms = []
    for i in tokens:
        s = symbols[i]
        if s.startswith("\u2581"):
            s = " " + s[1:]
        if head == "rnnt" and s == "<unk>":
            continue
        syms.append(s)
    text = "".join(syms)
    if head == "rnnt" and len(text) >= 2:
        kept = [text[0]]
        for i in range(1, len(text)):
            if (
                text[i] == " "
                and i + 1 < len(text)
                and ((_is_cjk(text[i - 1]) and _is_cjk(text[i + 1])) or _is_punct(text[i + 1]))
            ):
                continue
            kept.append(text[i])
        text = "".join(kept)
    text = text.lstrip(" ")
    if text and _is_punct(text[0]):
        text = text[1:]
    return text, syms


# --------------------------------------------------------------------------------------------------------------
# the whole recognizer on onnxruntime
# --------------------------------------------------------------------------------------------------------------
