"""onnx-asr's NeMo FastConformer models (``NemoConformerRnnt``, ``NemoConformerCtc``) as pure functions, verified
against onnx-asr 0.12.0.

onnx-asr runs a whole utterance in one encoder call: it has no streaming path and feeds only ``audio_signal`` and
``length``, so an export with cache support fails in onnxruntime ("Required inputs (['cache_last_channel',
'cache_last_time', 'cache_last_channel_len']) are missing from input feed (['audio_signal', 'length'])").
On a stateless export, what it does in the order the functions here run it:

1. ``read_folder``: ``vocab.txt`` ("token id" lines; '▁' read as a space; the blank is the id of ``<blk>``),
   an optional ``config.json`` (features_size 80, subsampling_factor 8, max_tokens_per_step 10 by default), and
   ``encoder-model.onnx`` + ``decoder_joint-model.onnx`` or ``model.onnx``. NeMo's own tokenizer ``vocab.txt``
   (a WordPiece rendering without ids) has the same name and cannot be read this way.
2. ``nemo80``: its NumPy preprocessor (the default on CPU): NeMo's log-mel (pre-emphasis over the signal,
   zero-padded centred 512-point frames, symmetric hann 400, Slaney mel, ln(x + 2^-24), valid length N // 160)
   but computed in float64 up to the magnitude, with its own shipped filterbank, and **always per_feature
   normalised** (each mel row minus its mean over the valid frames, over its unbiased std + 1e-5, invalid frames
   0), whatever the model's ``normalize`` says. Streaming FastConformers are trained with ``normalize: NA``.
3. ``encode``: one call; RNNT keeps the graph's ``encoded_lengths``; CTC ignores them and decodes
   ``(features_len - 1) // subsampling_factor + 1`` frames, which for the causal (streaming) subsampling is
   fewer than the graph's f(f(f(n))) (f(n) = n // 2 + 1).
4. ``greedy_rnnt``: the LSTM state starts at zero per utterance; on each frame the decoder_joint runs on the
   last emitted token (blank at the start); a non-blank token is emitted and the state advanced; the frame
   ends on blank or after ``max_tokens_per_step`` emissions. ``greedy_ctc``: argmax per frame over the first
   length frames, emitted when non-blank and different from the previous frame's label (blank before frame 0).
5. ``result_text``: tokens joined, a space dropped at the start and wherever the next character is not a word
   character (before punctuation and at the end).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
N_FFT, WIN, HOP = 512, 400, 160
PREEMPH = 0.97
LOG_GUARD = 2.0**-24
STD_GUARD = 1e-5
DEFAULTS = {"features_size": 80, "subsampling_factor": 8, "max_tokens_per_step": 10}


# --------------------------------------------------------------------------------------------------------------
# 1. the folder
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxAsrFolder:
    path: Path
    head: str  # "rnnt" | "ctc"
    files: dict  # encoder, decoder_joint | model; vocab; config
    vocab: dict  # id -> token with '▁' as ' '
    blank_id: int
    config: dict  # config.json over onnx-asr's defaults


def read_folder(path) -> OnnxAsrFolder:
    """A model folder as onnx-asr reads it for ``load_model("nemo-conformer-rnnt" | "nemo-conformer-ctc", path)``."""
    from weights_tools.peers import ONNX_ASR, detect_peer_folder

    folder = detect_peer_folder(path)
    if folder.runtime != ONNX_ASR:
        raise ValueError(f"{path} is a {folder.runtime} folder, not an onnx-asr one")
    vocab = {}
    for n, line in enumerate(folder.files["vocab"].read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(" ")
        if len(parts) != 2:
            # onnx-asr unpacks `token, id = line.split(" ")`: anything else is a ValueError there
            raise ValueError(
                f"{folder.files['vocab']}:{n}: onnx-asr expects 'token id', found {line!r} "
                f"(NeMo's own vocab.txt is not this file)"
            )
        vocab[int(parts[1])] = parts[0].replace("\u2581", " ")
    blank = next((i for i, t in vocab.items() if t == "<blk>"), None)
    if blank is None:
        raise ValueError(f"{folder.files['vocab']}: no <blk> token")
    config = dict(DEFAULTS) | (json.loads(folder.files["config"].read_text()) if "config" in folder.files else {})
    return OnnxAsrFolder(folder.path, folder.head, folder.files, vocab, blank, config)


# --------------------------------------------------------------------------------------------------------------
# 2. the nemo80 preprocessor
# --------------------------------------------------------------------------------------------------------------
def nemo80(
    waveforms: np.ndarray, lengths: np.ndarray, fb: np.ndarray, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded batch [B, N] float32, lengths [B] -> (features [B, M, 1 + N//160] float32, lengths N//160).
    ``normalize=False`` stops before the per_feature normalisation onnx-asr always applies (to look at it apart).

    ``fb`` [M, 257]: the mel filterbank (``refimpl.model.preprocessing.mel_filterbank()`` is NeMo's; onnx-asr
    ships its own, which differs from NeMo's by at most 1.1e-8 in 499 of 20560 weights)."""
    x = np.asarray(waveforms, np.float32)
    lengths = np.asarray(lengths, np.int64)
    y = np.empty_like(x)  # pre-emphasis over the whole signal, float32, then samples >= length zeroed
    y[:, 0] = x[:, 0]
    y[:, 1:] = x[:, 1:] - np.float32(PREEMPH) * x[:, :-1]
    y[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 0
    padded = np.pad(y, ((0, 0), (N_FFT // 2, N_FFT // 2)))
    starts = np.arange(0, padded.shape[1] - N_FFT + 1, HOP)
    frames = padded[:, starts[:, None] + np.arange(N_FFT)[None, :]]  # [B, T, 512] float32
    pad = (N_FFT - WIN) // 2
    window = np.zeros(N_FFT)
    window[pad : pad + WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN) / (WIN - 1))  # symmetric, float64
    mag = np.abs(np.fft.rfft(frames * window, N_FFT)).astype(np.float32)  # float64 spectrum, |.| to float32
    power = mag**2  # [B, T, 257]
    mel = np.log(power @ np.asarray(fb, np.float32).T + np.float32(LOG_GUARD))  # [B, T, M]
    if normalize:
        mel = per_feature(mel, lengths // HOP)
    return mel.transpose(0, 2, 1), lengths // HOP


def per_feature(mel: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[B, T, M] -> [B, T, M]: per mel bin, minus the mean over frames t < valid[b], over the unbiased std
    + 1e-5, in float32; frames t >= valid[b] become 0."""
    mask = (np.arange(mel.shape[1])[None, :] < valid[:, None])[:, :, None]  # [B, T, 1]
    n = valid[:, None, None]
    mean = np.divide(np.where(mask, mel, 0).sum(axis=1, keepdims=True), n, dtype=np.float32)
    var = np.divide(np.where(mask, (mel - mean) ** 2, 0).sum(axis=1, keepdims=True), n - 1, dtype=np.float32)
    return np.where(mask, (mel - mean) / (np.sqrt(var) + STD_GUARD), 0).astype(np.float32)


def features(samples, fb=None, *, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One utterance [N] -> (features [1, 80, T], length [1]) as onnx-asr feeds its encoder."""
    if fb is None:
        from ..model.preprocessing import mel_filterbank

        fb = mel_filterbank()
    x = np.asarray(samples, np.float32).reshape(1, -1)
    return nemo80(x, np.array([x.shape[1]], np.int64), fb, normalize=normalize)


# --------------------------------------------------------------------------------------------------------------
# 3-5. encoder, decoding, text
# --------------------------------------------------------------------------------------------------------------
def ctc_lengths(features_len, subsampling_factor: int) -> np.ndarray:
    """The frames onnx-asr's CTC decodes: (n - 1) // s + 1 (the graph's encoded_lengths are not used)."""
    return (np.asarray(features_len, np.int64) - 1) // subsampling_factor + 1


def greedy_rnnt(
    encoder_out: np.ndarray, length: int, decoder_joint, state, *, blank_id: int, max_tokens_per_step: int = 10
) -> tuple[list, list]:
    """encoder_out [T, d]; ``decoder_joint(frame [d], last_token, state) -> (logits [V+1], new_state)``;
    ``state`` the zero LSTM state. Returns (tokens, frame index of each)."""
    tokens, stamps = [], []
    t = emitted = 0
    while t < length:
        logits, new_state = decoder_joint(encoder_out[t], tokens[-1] if tokens else blank_id, state)
        y = int(np.argmax(logits))
        if y != blank_id:
            state = new_state
            tokens.append(y)
            stamps.append(t)
            emitted += 1
        if y == blank_id or emitted == max_tokens_per_step:
            t += 1
            emitted = 0
    return tokens, stamps


def greedy_ctc(logprobs: np.ndarray, length: int, *, blank_id: int) -> tuple[list, list]:
    """logprobs [T, V+1] -> (tokens, frame indices) over the first ``length`` frames."""
    labels = np.argmax(logprobs, axis=-1)
    tokens, stamps, prev = [], [], blank_id
    for t, y in enumerate(labels.tolist()):
        if t < length and y != blank_id and y != prev:
            tokens.append(y)
            stamps.append(t)
        prev = y
    return tokens, stamps


def result_text(tokens, vocab: dict) -> str:
    """Tokens joined; a whitespace character is dropped when it is the first character or when the character
    after it is not a word character (end of text included); otherwise it becomes one space."""
    s = "".join(vocab[i] for i in tokens)
    out = []
    for i, c in enumerate(s):
        if c.isspace():
            nxt = s[i + 1] if i + 1 < len(s) else ""
            if i == 0 or not (nxt.isalnum() or nxt == "_"):
                continue
            out.append(" ")
        else:
            out.append(c)
    return "".join(out)


class OrtOnnxAsrModel:
    """An onnx-asr NeMo folder on onnxruntime, called by input/output name as onnx-asr does."""

    def __init__(self, path, *, threads: int = 1):
        import onnxruntime as ort

        self.folder = read_folder(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        sess = lambda role: ort.InferenceSession(
            str(self.folder.files[role]),
            so,  # noqa: E731
            providers=["CPUExecutionProvider"],
        )
        self.head = self.folder.head
        self._enc = sess("encoder" if self.head == "rnnt" else "model")
        self._dj = sess("decoder_joint") if self.head == "rnnt" else None

    def encode(self, feats, lens):
        """RNNT: (encoder_out [B, T, d], encoded_lengths); CTC: (logprobs [B, T, V+1], ctc_lengths)."""
        if self.head == "ctc":
            (lp,) = self._enc.run(["logprobs"], {"audio_signal": feats, "length": lens})
            return lp, ctc_lengths(lens, self.folder.config["subsampling_factor"])
        out, out_len = self._enc.run(["outputs", "encoded_lengths"], {"audio_signal": feats, "length": lens})
        return out.transpose(0, 2, 1), out_len

    def initial_state(self):
        shapes = {i.name: i.shape for i in self._dj.get_inputs()}
        return tuple(
            np.zeros((shapes[n][0], 1, shapes[n][2]), np.float32) for n in ("input_states_1", "input_states_2")
        )

    def decoder_joint(self, frame, token: int, state):
        out, s1, s2 = self._dj.run(
            ["outputs", "output_states_1", "output_states_2"],
            {
                "encoder_outputs": np.asarray(frame, np.float32)[None, :, None],
                "targets": np.array([[token]], np.int32),
                "target_length": np.array([1], np.int32),
                "input_states_1": state[0],
                "input_states_2": state[1],
            },
        )
        return np.squeeze(out), (s1, s2)


@dataclass(frozen=True)
class OnnxAsrResult:
    tokens: list
    timestamps: list
    text: str
    features: np.ndarray  # [1, 80, T] what the encoder got
    features_len: np.ndarray


def transcribe(samples, model, *, fb=None, feats=None) -> OnnxAsrResult:
    """onnx-asr's recognize() on one utterance. ``feats``: (features, length) to feed instead of nemo80's
    (e.g. NeMo's own features, to separate the preprocessor from the rest)."""
    if not isinstance(model, OrtOnnxAsrModel):
        model = OrtOnnxAsrModel(model)
    f, flen = features(samples, fb) if feats is None else feats
    enc, enc_len = model.encode(f, flen)
    if model.head == "ctc":
        tokens, stamps = greedy_ctc(enc[0], int(enc_len[0]), blank_id=model.folder.blank_id)
    else:
        tokens, stamps = greedy_rnnt(
            enc[0],
            int(enc_len[0]),
            model.decoder_joint,
            model.initial_state(),
            blank_id=model.folder.blank_id,
            max_tokens_per_step=model.folder.config["max_tokens_per_step"],
        )
    return OnnxAsrResult(tokens, stamps, result_text(tokens, model.folder.vocab), f, flen)


def run_real(samples, path, *, model_type=None) -> dict:
    """The real onnx_asr package on the same folder: {"text", "token_ids", "features", "features_len"}."""
    import onnx_asr

    folder = read_folder(path)
    model_type = model_type or f"nemo-conformer-{folder.head}"
    m = onnx_asr.load_model(model_type, str(path))
    x = np.asarray(samples, np.float32).reshape(-1)
    r = m.with_timestamps().recognize(x, sample_rate=SAMPLE_RATE)
    feats, flen = m.asr._preprocessor(x[None], np.array([x.size], np.int64))
    index = {}
    for i, t in folder.vocab.items():
        index.setdefault(t, i)
    return {"text": r.text, "token_ids": [index[t] for t in r.tokens], "features": feats, "features_len": flen}
