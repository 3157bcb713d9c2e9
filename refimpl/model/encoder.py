"""``ConformerEncoder`` cache-aware streaming step, in the ONNX export's layouts (batch-first caches).

Inputs and outputs mirror NeMo's export with cache support (``forward_for_export``):
  audio_signal [B, feat_in, T_in] mel, length [B] int64 (valid mel frames incl. the pre-encode frames),
  cache_last_channel [B, n_layers, C, d_model], cache_last_time [B, n_layers, d_model, K-1],
  cache_last_channel_len [B] int64
  -> outputs [B, d_model, T_out], encoded_lengths [B], cache_last_channel_next, cache_last_time_next,
     cache_last_channel_next_len
With every cache None it is NeMo's offline (stateless) forward, the function an export *without* cache support
computes: no pre-encode drop, no left context, no output slicing.

``encoder_step`` is the step's skeleton, written once for every implementation: pre_encode, the drop of the
extra pre-encoded frames, xscaling, the masks, the layers (``conformer.conformer_layer``), the output slice,
the cache update and the cache length. What it computes each piece with is an ``EncoderOps``: ``PlainEncoder``
below (this package's NumPy layer functions on NeMo's layouts: the readable truth) or ``refimpl.fast``'s twin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from weights_tools import EncoderConfig, streaming_params

from . import taps as tap_names
from .attention import make_masks, rel_pos_mha, rel_positional_encoding
from .conformer import conformer_layer, feed_forward
from .convolution import conformer_convolution
from .nn import layer_norm
from .subsampling import pre_encode


@dataclass(frozen=True)
class EncoderOutput:
    outputs: np.ndarray  # [B, d_model, T_out]
    encoded_lengths: np.ndarray  # [B] int64
    cache_last_channel_next: np.ndarray | None  # [B, n_layers, C, d_model]
    cache_last_time_next: np.ndarray | None  # [B, n_layers, d_model, K-1]
    cache_last_channel_next_len: np.ndarray | None  # [B] int64


class EncoderOps(Protocol):
    """The arithmetic behind ``encoder_step``: one implementation's weights and sub-block functions."""

    cfg: EncoderConfig
    att_context_size: tuple

    def layer_params(self, i: int) -> dict: ...

    def pre_encode(self, x: np.ndarray, length: np.ndarray) -> tuple:
        """x [B, T, feat_in], length [B] -> (every subsampled frame [B, T', d], length')."""

    def attention_state(self, cache_last_channel, engine_state, x: np.ndarray):
        """What self_attn needs this step, x [B, T, d] being the first layer's input (an object with
        ``pos_emb`` [2(C+T)-1, d])."""

    def norm(self, x: np.ndarray, params: dict) -> np.ndarray: ...

    def add_norm(self, residual: np.ndarray, h: np.ndarray, factor: float, params: dict) -> tuple:
        """(residual + factor * h, its LayerNorm); never changes the arrays it is given."""

    def feed_forward(self, x: np.ndarray, params: dict) -> np.ndarray: ...

    def self_attn(self, x: np.ndarray, i: int, attention, att_mask: np.ndarray) -> np.ndarray: ...

    def conv(self, x: np.ndarray, cache: np.ndarray, pad_mask: np.ndarray, params: dict) -> tuple:
        """(y [B, T, d], depthwise input [B, d, T])."""

    def engine_state_next(self, attention) -> dict | None: ...


def initial_cache(cfg: EncoderConfig, batch: int, dtype=np.float32):
    """NeMo's ``get_initial_cache_state`` in the export layout: zeros and length 0.

    The attention cache content is irrelevant while its length is 0 (fully masked); the conv cache is not
    masked and must be zeros: they are the causal conv's left zero padding."""
    return (
        np.zeros((batch, cfg.n_layers, cfg.cache_last_channel_size, cfg.d_model), dtype),
        np.zeros((batch, cfg.n_layers, cfg.d_model, cfg.cache_last_time_size), dtype),
        np.zeros((batch,), np.int64),
    )


def last_frames(cache: np.ndarray, new: np.ndarray, axis: int) -> np.ndarray:
    """The next cache: the last cache.shape[axis] frames of [cache ‖ new] along ``axis`` (NeMo appends on the
    right and keeps the newest frames)."""
    n = cache.shape[axis]
    both = np.concatenate([cache, new.astype(cache.dtype, copy=False)], axis=axis)
    return both[(slice(None),) * axis + (slice(both.shape[axis] - n, None),)]


def _recorder(taps: dict | None):
    """record(name, value): a copy into ``taps`` (so no later step can change what was recorded), or nothing."""
    if taps is None:
        return lambda name, value: None
    return lambda name, value: taps.__setitem__(name, np.array(value))


@dataclass(frozen=True)
class EncoderPass:
    """What the layers computed over every frame of one encoder call (after the pre-encode drop)."""

    x: np.ndarray  # [B, T, d] the last layer's output
    length: np.ndarray  # [B] valid frames
    att_in: list  # per layer [B, T', d]: the post-norm attention inputs (cache_last_channel is cut from them)
    conv_in: list  # per layer [B, d, T']: the depthwise-conv inputs (cache_last_time is cut from them)
    conv_caches: np.ndarray  # [B, n_layers, d, K-1] the conv caches the call started from
    attention: object  # the implementation's attention state (engine_state_next is read from it)
    kept_from: dict  # "att_in" / "conv_in": the frame index where the kept frames T' begin (0: all kept)


def encoder_pass(
    audio_signal,
    length,
    cache_last_channel,
    cache_last_time,
    cache_last_channel_len,
    ops: EncoderOps,
    *,
    engine_state: dict | None = None,
    record=None,
    keep: str = "tails",
    pre_encoded: tuple | None = None,
) -> EncoderPass:
    """pre_encode, the drop of the extra pre-encoded frames (streaming only), xscaling, the chunked_limited masks
    over [cache ‖ frames] and every layer, for an input of any length: one chunk (the step) or many (a block:
    ``refimpl.model.block``). ``record(name, value)`` receives the taps. ``keep``: "tails" keeps of each layer's
    attention and conv inputs only what the caches after the last frame are cut from (C and K-1 frames); "all"
    keeps every frame (the caches after every chunk of a block). ``pre_encoded``: (x [B, T', d], length) the
    pre-encode's output for this input, computed by the caller (a block computes it piece by piece)."""
    cfg, record = ops.cfg, record or _recorder(None)
    streaming = cache_last_channel is not None
    sp = streaming_params(cfg, ops.att_context_size)
    if pre_encoded is None:
        pre_encoded = ops.pre_encode(audio_signal.transpose(0, 2, 1), np.asarray(length, dtype=np.int64))
    x, length = pre_encoded  # [B, T', d]
    record(tap_names.PRE_ENCODE, x)
    drop = sp.drop_extra_pre_encoded if streaming else 0
    x, length = x[:, drop:], np.maximum(length - drop, 0)
    b, t, d = x.shape
    c = cache_last_channel.shape[2] if streaming else 0
    if cfg.xscaling:
        x = x * x.dtype.type(math.sqrt(cfg.d_model))
    pad_mask, att_mask = make_masks(
        length,
        cache_last_channel_len if streaming else None,
        n_frames=t,
        cache_size=c,
        att_context_size=ops.att_context_size,
    )
    record(tap_names.POS_ENC, x)
    attention = ops.attention_state(cache_last_channel, engine_state, x)
    record(tap_names.POS_EMB, attention.pos_emb)
    conv_caches = cache_last_time if streaming else np.zeros((b, cfg.n_layers, d, cfg.cache_last_time_size), x.dtype)
    att_ins, conv_ins = [], []
    tail_att, tail_conv = (c, cfg.cache_last_time_size) if keep == "tails" else (t, t)
    kept = {"att_in": max(0, t - tail_att), "conv_in": max(0, t - tail_conv)}
    for i in range(cfg.n_layers):
        record(f"{tap_names.layer(i)}/input", x)
        x, att_in, conv_in = conformer_layer(
            x, i, ops, attention, cache_last_time=conv_caches[:, i], att_mask=att_mask, pad_mask=pad_mask, record=record
        )
        record(f"{tap_names.layer(i)}/output", x)
        att_ins.append(att_in[:, kept["att_in"] :])
        conv_ins.append(conv_in[:, :, kept["conv_in"] :])
    return EncoderPass(x, length, att_ins, conv_ins, conv_caches, attention, kept)


def encoder_step(
    audio_signal,
    length,
    cache_last_channel,
    cache_last_time,
    cache_last_channel_len,
    ops: EncoderOps,
    *,
    engine_state: dict | None = None,
    taps: dict | None = None,
) -> tuple:
    """One encoder call -> (EncoderOutput, engine_state_next or None).

    ``engine_state`` is an implementation's own derived state from the previous step (None: derive it from the
    caches). ``taps`` (a dict), when given, receives every intermediate named in ``refimpl.model.taps``;
    asking for them changes no arithmetic."""
    p = encoder_pass(
        audio_signal,
        length,
        cache_last_channel,
        cache_last_time,
        cache_last_channel_len,
        ops,
        engine_state=engine_state,
        record=_recorder(taps),
    )
    outputs = p.x.transpose(0, 2, 1)  # [B, d, T]
    if cache_last_channel is None:
        return EncoderOutput(np.ascontiguousarray(outputs), p.length, None, None, None), None
    sp = streaming_params(ops.cfg, ops.att_context_size)
    c, t = cache_last_channel.shape[2], p.x.shape[1]
    out = EncoderOutput(
        outputs=np.ascontiguousarray(outputs[:, :, : sp.valid_out_len]),
        encoded_lengths=np.minimum(p.length, sp.valid_out_len),
        cache_last_channel_next=np.stack(
            [last_frames(cache_last_channel[:, i], a, axis=1) for i, a in enumerate(p.att_in)], axis=1
        ),
        cache_last_time_next=np.stack(
            [last_frames(p.conv_caches[:, i], g, axis=2) for i, g in enumerate(p.conv_in)], axis=1
        ),
        cache_last_channel_next_len=np.minimum(np.asarray(cache_last_channel_len, np.int64) + t, c),
    )
    return out, ops.engine_state_next(attention=p.attention)


@dataclass(frozen=True)
class PlainAttention:
    cache: np.ndarray | None  # [B, n_layers, C, d] cache_last_channel (None offline)
    pos_emb: np.ndarray  # [2(C+T)-1, d]


class PlainEncoder:
    """``EncoderOps`` of the readable reference: this package's layer functions on NeMo's layouts and names.
    ``params`` = weights["encoder"]."""

    def __init__(self, params: dict, cfg: EncoderConfig, att_context_size=None):
        self.params, self.cfg = params, cfg
        self.att_context_size = tuple(att_context_size if att_context_size is not None else cfg.att_context_size)

    def layer_params(self, i: int) -> dict:
        return self.params["layers"][str(i)]

    def pre_encode(self, x, length):
        return pre_encode(x, length, self.params["pre_encode"], subsampling_factor=self.cfg.subsampling_factor)

    def attention_state(self, cache_last_channel, engine_state, x):
        c = 0 if cache_last_channel is None else cache_last_channel.shape[2]
        return PlainAttention(cache_last_channel, rel_positional_encoding(x.shape[1] + c, self.cfg.d_model, x.dtype))

    def norm(self, x, params):
        return layer_norm(x, params)

    def add_norm(self, residual, h, factor, params):
        residual = residual + factor * h
        return residual, layer_norm(residual, params)

    def feed_forward(self, x, params):
        return feed_forward(x, params)

    def self_attn(self, x, i, attention, att_mask):
        cache = None if attention.cache is None else attention.cache[:, i]
        return rel_pos_mha(
            x,
            cache,
            self.layer_params(i)["self_attn"],
            pos_emb=attention.pos_emb,
            att_mask=att_mask,
            n_heads=self.cfg.n_heads,
        )

    def conv(self, x, cache, pad_mask, params):
        return conformer_convolution(x, cache, pad_mask, params, norm_type=self.cfg.conv_norm_type)

    def engine_state_next(self, attention):
        return None
