"""``ConformerEncoder`` cache-aware streaming step, in the ONNX export's layouts (batch-first caches).

Inputs and outputs mirror NeMo's export with cache support (``forward_for_export``):
  audio_signal [B, feat_in, T_in] mel, length [B] int64 (valid mel frames incl. the pre-encode frames),
  cache_last_channel [B, n_layers, C, d_model], cache_last_time [B, n_layers, d_model, K-1],
  cache_last_channel_len [B] int64
  -> outputs [B, d_model, T_out], encoded_lengths [B], cache_last_channel_next, cache_last_time_next,
     cache_last_channel_next_len
With every cache None it is NeMo's offline (stateless) forward, the function an export *without* cache support
computes: no pre-encode drop, no left context, no output slicing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .attention import make_masks, rel_positional_encoding
from ..runtime.chunking import streaming_params
from .conformer import conformer_layer
from .subsampling import pre_encode


@dataclass(frozen=True)
class EncoderOutput:
    outputs: np.ndarray  # [B, d_model, T_out]
    encoded_lengths: np.ndarray  # [B] int64
    cache_last_channel_next: np.ndarray | None  # [B, n_layers, C, d_model]
    cache_last_time_next: np.ndarray | None  # [B, n_layers, d_model, K-1]
    cache_last_channel_next_len: np.ndarray | None  # [B] int64


def initial_cache(cfg, batch: int, dtype=np.float32):
    """NeMo's ``get_initial_cache_state`` in the export layout: zeros and length 0.

    The attention cache content is irrelevant while its length is 0 (fully masked); the conv cache is not
    masked and must be zeros: they are the causal conv's left zero padding."""
    return (np.zeros((batch, cfg.n_layers, cfg.cache_last_channel_size, cfg.d_model), dtype),
            np.zeros((batch, cfg.n_layers, cfg.d_model, cfg.cache_last_time_size), dtype),
            np.zeros((batch,), np.int64))


def encoder_step(audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len, params: dict,
                 cfg, *, att_context_size=None, backend: str = "numpy", taps: dict | None = None) -> EncoderOutput:
    """One encoder call. ``params`` = weights["encoder"]; ``cfg`` = EncoderConfig; ``att_context_size``
    defaults to ``cfg.att_context_size``. ``taps`` (a dict) receives intermediates keyed by NeMo module path."""
    att = tuple(att_context_size if att_context_size is not None else cfg.att_context_size)
    streaming = cache_last_channel is not None
    sp = streaming_params(cfg, att)
    length = np.asarray(length, dtype=np.int64)

    x, length = pre_encode(audio_signal.transpose(0, 2, 1), length, params["pre_encode"],
                           subsampling_factor=cfg.subsampling_factor)  # [B, T, d]
    if taps is not None:
        taps["encoder.pre_encode/output"] = x
    if streaming:
        drop = sp.drop_extra_pre_encoded
        x, length = x[:, drop:], np.maximum(length - drop, 0)
    n_frames = x.shape[1]
    cache_size = cache_last_channel.shape[2] if streaming else 0
    if cfg.xscaling:
        x = x * math.sqrt(cfg.d_model)
    pos_emb = rel_positional_encoding(n_frames + cache_size, cfg.d_model, x.dtype)
    pad_mask, att_mask = make_masks(length, cache_last_channel_len if streaming else None, n_frames=n_frames,
                                    cache_size=cache_size, att_context_size=att)
    if taps is not None:
        taps["encoder.pos_enc/output"] = x
        taps["encoder.pos_enc/pos_emb"] = pos_emb

    ccn, ctn = [], []
    for i in range(cfg.n_layers):
        name = f"encoder.layers.{i}"
        if taps is not None:
            taps[f"{name}/input"] = x
        x, cc, tc = conformer_layer(
            x, params["layers"][str(i)],
            cache_last_channel=cache_last_channel[:, i] if streaming else None,
            cache_last_time=cache_last_time[:, i] if streaming else None,
            pos_emb=pos_emb, att_mask=att_mask, pad_mask=pad_mask, n_heads=cfg.n_heads,
            conv_norm_type=cfg.conv_norm_type, backend=backend, taps=taps, name=name)
        if taps is not None:
            taps[f"{name}/output"] = x
        ccn.append(cc)
        ctn.append(tc)

    outputs = x.transpose(0, 2, 1)  # [B, d, T]
    if not streaming:
        return EncoderOutput(outputs, length, None, None, None)
    outputs = outputs[:, :, : sp.valid_out_len]
    return EncoderOutput(
        outputs=outputs,
        encoded_lengths=np.minimum(length, sp.valid_out_len),
        cache_last_channel_next=np.stack(ccn, axis=1),
        cache_last_time_next=np.stack(ctn, axis=1),
        cache_last_channel_next_len=np.minimum(np.asarray(cache_last_channel_len, np.int64) + n_frames, cache_size),
    )
