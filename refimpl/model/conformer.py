"""``ConformerLayer``: FF/2 -> self-attention -> convolution -> FF/2 -> LayerNorm, each with a residual."""
from __future__ import annotations

import numpy as np

from .attention import rel_pos_mha
from .convolution import conformer_convolution
from .nn import layer_norm, linear, swish

FC_FACTOR = 0.5  # half-step feed-forwards (Macaron)


def feed_forward(x: np.ndarray, params: dict) -> np.ndarray:
    """``ConformerFeedForward``: x [B, T, d] -> linear2(swish(linear1(x))) [B, T, d]."""
    return linear(swish(linear(x, params["linear1"])), params["linear2"])


def conformer_layer(x: np.ndarray, params: dict, *, cache_last_channel, cache_last_time, pos_emb, att_mask,
                    pad_mask, n_heads: int, conv_norm_type: str, backend: str = "numpy", taps: dict | None = None,
                    name: str = ""):
    """x [B, T, d] -> (y [B, T, d], cache_last_channel_next [B, C, d], cache_last_time_next [B, d, K-1]).

    Caches are this layer's slices (None offline). ``taps``, when given, receives each sub-block's input
    and output keyed like NeMo's module paths (``<name>.self_attn/output``).
    """
    def tap(key, value):
        if taps is not None:
            taps[f"{name}.{key}"] = value

    residual = x
    h = layer_norm(residual, params["norm_feed_forward1"])
    tap("feed_forward1/input", h)
    h = feed_forward(h, params["feed_forward1"])
    tap("feed_forward1/output", h)
    residual = residual + FC_FACTOR * h

    h = layer_norm(residual, params["norm_self_att"])
    tap("self_attn/input", h)
    h, cache_last_channel_next = rel_pos_mha(h, cache_last_channel, params["self_attn"], pos_emb=pos_emb,
                                             att_mask=att_mask, n_heads=n_heads, backend=backend)
    tap("self_attn/output", h)
    residual = residual + h

    h = layer_norm(residual, params["norm_conv"])
    tap("conv/input", h)
    h, cache_last_time_next = conformer_convolution(h, cache_last_time, pad_mask, params["conv"],
                                                    norm_type=conv_norm_type, backend=backend)
    tap("conv/output", h)
    residual = residual + h

    h = layer_norm(residual, params["norm_feed_forward2"])
    tap("feed_forward2/input", h)
    h = feed_forward(h, params["feed_forward2"])
    tap("feed_forward2/output", h)
    residual = residual + FC_FACTOR * h

    tap("norm_out/input", residual)
    y = layer_norm(residual, params["norm_out"])
    tap("norm_out/output", y)
    return y, cache_last_channel_next, cache_last_time_next
