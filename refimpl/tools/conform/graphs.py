"""The ``Graph`` of each implementation conform compares: refimpl's arithmetic (NeMo's), onnxruntime on NeMo's
own export, on a sherpa-onnx folder (graphs called by position, as sherpa calls them) and on an onnx-asr
folder (by name, as onnx-asr calls them)."""

from __future__ import annotations

import numpy as np

from weights_tools import subsampled_length

from ...model.encoder import initial_cache
from .pipeline import Graph

CACHE_NAMES = ("cache_last_channel", "cache_last_time", "cache_last_channel_len")
NEXT_NAMES = ("cache_last_channel_next", "cache_last_time_next", "cache_last_channel_next_len")  # the export's


def _caches(values) -> dict:
    return dict(zip(CACHE_NAMES, values))


def _pred_shape(config) -> tuple | None:
    r = config.rnnt
    return None if r is None else (r.pred_rnn_layers, 1, r.pred_hidden)


def refimpl_graph(engine, head: str, *, stateless: bool = False) -> Graph:
    """A RefimplEngine (NeMo's arithmetic). ``stateless``: NeMo's offline forward (no caches)."""
    cfg = engine.config

    def encoder(audio_signal, length, caches):
        if caches is None:
            out = engine.encoder(audio_signal, length, None, None, None)
        else:
            out = engine.encoder(
                audio_signal,
                length,
                caches["cache_last_channel"],
                caches["cache_last_time"],
                caches["cache_last_channel_len"],
            )
        first = out["outputs"] if head == "rnnt" else engine.ctc(out["outputs"])
        nxt = None if caches is None else _caches(out[n] for n in NEXT_NAMES)
        return np.asarray(first, np.float32), out["encoded_lengths"], nxt

    return Graph(
        label=engine.label,
        head=head,
        stateless=stateless,
        encoder=encoder,
        decoder_joint=engine.decoder_joint if head == "rnnt" else None,
        initial_caches=lambda: _caches(initial_cache(cfg.encoder, 1)),
        pred_state_shape=_pred_shape(cfg),
    )


def onnx_engine_graph(engine, head: str) -> Graph:
    """onnxruntime on NeMo's export (``refimpl.runtime.onnx_engine.OnnxEngine``)."""
    cfg = engine.config

    def encoder(audio_signal, length, caches):
        c = caches or {}
        out = engine.encoder(
            audio_signal,
            length,
            c.get("cache_last_channel"),
            c.get("cache_last_time"),
            c.get("cache_last_channel_len"),
        )
        first = out["logprobs"] if "logprobs" in out else out["outputs"]
        if head == "ctc" and "logprobs" not in out:
            raise ValueError(f"{engine.files.encoder}: this export has no CTC log-probs output")
        nxt = None if caches is None else _caches(out[n] for n in NEXT_NAMES)
        return first, out["encoded_lengths"], nxt

    return Graph(
        label="onnxruntime on NeMo's export",
        head=head,
        stateless=not engine.has_cache_io,
        encoder=encoder,
        decoder_joint=engine.decoder_joint if head == "rnnt" else None,
        initial_caches=lambda: _caches(initial_cache(cfg.encoder, 1)),
        pred_state_shape=_pred_shape(cfg),
    )


def sherpa_graph(model) -> Graph:
    """A sherpa-onnx folder (``refimpl.peers.sherpa_runner.OrtSherpaModel``): encoder by position; the separate
    decoder and joiner composed into a decoder_joint."""
    from ...peers.sherpa_onnx import initial_caches

    meta = model.meta

    def encoder(audio_signal, length, caches):
        first, enc_len, *nxt = model.encoder(
            audio_signal,
            length,
            caches["cache_last_channel"],
            caches["cache_last_time"],
            caches["cache_last_channel_len"],
        )
        return first, enc_len, _caches(nxt)

    def decoder_joint(frames, tokens, h, c):
        dec_out, (h2, c2) = model.decoder(int(tokens[0]), [h, c])
        logits = np.asarray(model.joiner(np.asarray(frames, np.float32)[:, :, None], dec_out), np.float32)
        return logits.reshape(1, -1), h2, c2

    return Graph(
        label=f"onnxruntime on {model.folder.path.name}/ (sherpa-onnx layout)",
        head=model.head,
        stateless=False,
        encoder=encoder,
        decoder_joint=decoder_joint if model.head == "rnnt" else None,
        initial_caches=lambda: initial_caches(meta),
        pred_state_shape=None if meta.pred_hidden is None else (meta.pred_rnn_layers, 1, meta.pred_hidden),
    )


def onnx_asr_graph(model, subsampling_factor: int) -> Graph:
    """An onnx-asr folder (``refimpl.peers.onnx_asr.OrtOnnxAsrModel``): a stateless graph, offline only. Its CTC
    graph returns no lengths: they are the model's subsampled input lengths (``subsampling_factor``: the model's
    own, not the folder's config.json)."""

    def encoder(audio_signal, length, caches):
        if caches is not None:
            raise ValueError("an onnx-asr folder holds a stateless export")
        if model.head == "ctc":
            (lp,) = model._enc.run(["logprobs"], {"audio_signal": audio_signal, "length": length})
            return lp, subsampled_length(length, subsampling_factor), None
        out, out_len = model._enc.run(["outputs", "encoded_lengths"], {"audio_signal": audio_signal, "length": length})
        return out, out_len, None

    def decoder_joint(frames, tokens, h, c):
        logits, (h2, c2) = model.decoder_joint(np.asarray(frames, np.float32)[0], int(tokens[0]), (h, c))
        return np.asarray(logits, np.float32).reshape(1, -1), h2, c2

    shape = None
    if model.head == "rnnt":
        h0, _ = model.initial_state()
        shape = h0.shape
    return Graph(
        label=f"onnxruntime on {model.folder.path.name}/ (onnx-asr layout)",
        head=model.head,
        stateless=True,
        encoder=encoder,
        decoder_joint=decoder_joint if model.head == "rnnt" else None,
        initial_caches=lambda: None,
        pred_state_shape=shape,
    )
