"""``ConformerLayer``: FF/2 -> self-attention -> convolution -> FF/2 -> LayerNorm, each with a residual.

``conformer_layer`` is the layer's skeleton, written once: the order of the sub-blocks, the residual adds and
which norm feeds which block. The arithmetic of each sub-block comes from an ``EncoderOps`` (see
``refimpl.model.encoder``): the plain NumPy functions of this package, or refimpl.fast's twins.
"""

from __future__ import annotations

import numpy as np

from . import taps as tap_names
from .nn import linear, swish

FC_FACTOR = 0.5  # half-step feed-forwards (Macaron)


def feed_forward(x: np.ndarray, params: dict) -> np.ndarray:
    """``ConformerFeedForward``: x [B, T, d] -> linear2(swish(linear1(x))) [B, T, d]."""
    return linear(swish(linear(x, params["linear1"])), params["linear2"])


def conformer_layer(x: np.ndarray, i: int, ops, attention, *, cache_last_time, att_mask, pad_mask, record):
    """Layer i: x [B, T, d] -> (y [B, T, d], attention input [B, T, d], depthwise-conv input [B, d, T]).

    The attention and depthwise-conv inputs are what the layer's caches are cut from (the encoder step does
    that). ``attention`` is the step's attention state from ``ops.attention_state``; ``cache_last_time``
    [B, d, K-1] this layer's conv cache; ``record(name, value)`` receives each sub-block's input and output.
    """
    p = ops.layer_params(i)
    block = lambda b, where, v: record(tap_names.sub_block(i, b, where), v)  # noqa: E731

    residual = x
    h = ops.norm(residual, p["norm_feed_forward1"])
    block("feed_forward1", "input", h)
    h = ops.feed_forward(h, p["feed_forward1"])
    block("feed_forward1", "output", h)
    residual, h = ops.add_norm(residual, h, FC_FACTOR, p["norm_self_att"])
    att_in = h
    block("self_attn", "input", h)
    h = ops.self_attn(h, i, attention, att_mask)
    block("self_attn", "output", h)
    residual, h = ops.add_norm(residual, h, 1.0, p["norm_conv"])
    block("conv", "input", h)
    h, conv_in = ops.conv(h, cache_last_time, pad_mask, p["conv"])
    block("conv", "output", h)
    residual, h = ops.add_norm(residual, h, 1.0, p["norm_feed_forward2"])
    block("feed_forward2", "input", h)
    h = ops.feed_forward(h, p["feed_forward2"])
    block("feed_forward2", "output", h)
    residual, y = ops.add_norm(residual, h, FC_FACTOR, p["norm_out"])
    block("norm_out", "input", residual)
    block("norm_out", "output", y)
    return y, att_in, conv_in
