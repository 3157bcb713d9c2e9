"""Running sherpa-onnx's pipeline on a model folder: ``transcribe`` (refimpl's emulation, ``refimpl.peers.sherpa_onnx``,
on onnxruntime with the graphs called by position as sherpa calls them) and ``run_real`` (the real sherpa_onnx
package, fed as its examples feed it), so the two can be compared on the same files."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sherpa_onnx import (
    SAMPLE_RATE,
    Schedule,
    encoder_inputs,
    frames_ready,
    greedy_ctc,
    greedy_rnnt,
    result_text,
    run_encoder,
    schedule,
    tail_padding_samples,
)


class OrtSherpaModel:
    """A sherpa-onnx model folder on onnxruntime, called by position as sherpa does (inputs and outputs by
    index, never by name). ``encoder``/``decoder``/``joiner`` have the signatures the functions above take."""

    def __init__(self, model_dir, *, threads: int = 1):
        import onnxruntime as ort

        from weights_tools.peers import SHERPA, detect_peer_folder, read_sherpa_metadata, read_vocabulary

        self.folder = detect_peer_folder(model_dir)
        if self.folder.runtime != SHERPA:
            raise ValueError(f"{model_dir} is an {self.folder.runtime} folder, not a sherpa-onnx one")
        self.meta = read_sherpa_metadata(self.folder)
        self.head = self.folder.head
        self.symbols = read_vocabulary(self.folder)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        sess = lambda role: ort.InferenceSession(
            str(self.folder.files[role]),
            so,  # noqa: E731
            providers=["CPUExecutionProvider"],
        )
        self._enc = sess("encoder" if self.head == "rnnt" else "model")
        self._dec = sess("decoder") if self.head == "rnnt" else None
        self._joi = sess("joiner") if self.head == "rnnt" else None

    def encoder(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len):
        names = [i.name for i in self._enc.get_inputs()]
        feeds = dict(zip(names, (audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len)))
        return self._enc.run(None, feeds)

    def decoder(self, token: int, states):
        names = [i.name for i in self._dec.get_inputs()]
        out = self._dec.run(None, dict(zip(names, (np.array([[token]], np.int32), np.ones(1, np.int32), *states))))
        return out[0], list(out[2:])

    def joiner(self, encoder_frame, decoder_out):
        names = [i.name for i in self._joi.get_inputs()]
        return self._joi.run(None, dict(zip(names, (encoder_frame, decoder_out))))[0]


@dataclass(frozen=True)
class SherpaResult:
    tokens: list  # token ids as decoded (the transducer's <unk> included)
    timestamps: list  # encoder frame of each token
    text: str
    symbols: list  # what sherpa's result.tokens shows (transducer: <unk> dropped)
    calls: list  # EncoderCall per encoder run
    schedule: Schedule


def transcribe(
    samples, model, *, tail_padding_seconds: float = 0.0, input_finished: bool = True, encoder=None
) -> SherpaResult:
    """Run sherpa-onnx's pipeline: ``model`` an OrtSherpaModel (or a folder path). ``encoder`` replaces the
    model's encoder callable (same signature), e.g. to feed the same windows to another engine."""
    if not isinstance(model, OrtSherpaModel):
        model = OrtSherpaModel(model)
    meta = model.meta
    calls = encoder_inputs(
        samples, meta, head=model.head, tail_padding_seconds=tail_padding_seconds, input_finished=input_finished
    )
    outs = run_encoder(encoder or model.encoder, calls, meta)
    if model.head == "rnnt":
        st = greedy_rnnt(outs, model.decoder, model.joiner, meta)
        tokens, stamps = st.tokens, st.timestamps
    else:
        tokens, stamps = greedy_ctc(outs, blank_id=meta.blank_id)
    text, syms = result_text(tokens, model.symbols, head=model.head)
    n = int(np.asarray(samples).size)
    return SherpaResult(
        tokens,
        stamps,
        text,
        syms,
        calls,
        schedule(
            n,
            meta.window_size,
            meta.chunk_shift,
            tail_padding_seconds=tail_padding_seconds,
            input_finished=input_finished,
        ),
    )


def run_real(
    samples, model_dir, *, tail_padding_seconds: float = 0.0, input_finished: bool = True, threads: int = 1
) -> dict:
    """The real sherpa_onnx package on the same folder, fed as its examples do (for comparisons):
    {"text", "symbols", "token_ids" (symbols mapped back through tokens.txt), "frames" (``stream.get_frames``
    of every ready frame), "decode_calls" (``decode_stream`` calls while ``is_ready``)}."""
    import sherpa_onnx

    from weights_tools.peers import detect_peer_folder, read_vocabulary

    folder = detect_peer_folder(model_dir)
    f = {k: str(v) for k, v in folder.files.items()}
    if folder.head == "rnnt":
        rec = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=f["tokens"], encoder=f["encoder"], decoder=f["decoder"], joiner=f["joiner"], num_threads=threads
        )
    else:
        rec = sherpa_onnx.OnlineRecognizer.from_nemo_ctc(tokens=f["tokens"], model=f["model"], num_threads=threads)
    s = rec.create_stream()
    x = np.asarray(samples, np.float32).reshape(-1)
    s.accept_waveform(SAMPLE_RATE, x)
    if tail_padding_seconds:
        s.accept_waveform(SAMPLE_RATE, np.zeros(tail_padding_samples(tail_padding_seconds), np.float32))
    if input_finished:
        s.input_finished()
    n_ready = frames_ready(x.size + tail_padding_samples(tail_padding_seconds), input_finished=input_finished)
    frames = np.array(s.get_frames(0, n_ready), np.float32).reshape(n_ready, -1) if n_ready else None
    calls = 0
    while rec.is_ready(s):
        rec.decode_stream(s)
        calls += 1
    r = rec.get_result_all(s)
    symbols = read_vocabulary(folder)
    index = {(" " + v[1:]) if v.startswith("\u2581") else v: i for i, v in enumerate(symbols)}
    return {
        "text": r.text,
        "symbols": list(r.tokens),
        "token_ids": [index[t] for t in r.tokens],
        "frames": frames,
        "decode_calls": calls,
    }
