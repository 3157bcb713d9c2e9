"""NumPy twins of the fast path's Numba kernels (``refimpl.fast.kernels``): the same signatures and formulas in
array arithmetic, run by ``backend="numpy"`` and used as the kernels' test references."""

from __future__ import annotations

import numpy as np

from weights_tools.config import conv_norm_error

from ..model.nn import LAYER_NORM_EPS, layer_norm, sigmoid, swish


def conv_module_core(h2, pad_mask, cache, params, *, norm_type, eps=LAYER_NORM_EPS):
    """``ConformerConvolution`` between its two pointwise convs, channel-last: h2 [B, T, 2d] (pointwise_conv1
    output), pad_mask [B, T], cache [B, d, K-1] -> (swish(norm(depthwise([cache ‖ g]))) [B, T, d],
    g = mask(glu(h2)) [B, T, d]: the depthwise input, which cache_last_time is cut from)."""
    d = h2.shape[-1] // 2
    g = h2[..., :d] * sigmoid(h2[..., d:])
    g = np.where(pad_mask[:, :, None], 0.0, g).astype(h2.dtype, copy=False)
    xp = np.concatenate([cache.transpose(0, 2, 1), g], axis=1)  # [B, K-1+T, d]
    w_t = params["depthwise_conv"]["weight_t"]  # [K, d]
    win = np.lib.stride_tricks.sliding_window_view(xp, w_t.shape[0], axis=1)  # [B, T, d, K]
    y = np.einsum("btck,kc->btc", win, w_t) + params["depthwise_conv"]["bias"]
    bn = params.get("batch_norm")
    if norm_type == "layer_norm":
        y = layer_norm(y, bn, eps)
    elif norm_type == "batch_norm":
        y = (y - bn["running_mean"]) * bn["scale"] + bn["bias"]
    elif norm_type != "folded_batch_norm":
        raise conv_norm_error(norm_type)
    return swish(y), np.ascontiguousarray(g.transpose(0, 2, 1))


def residual_layer_norm(residual, h, alpha, params, eps=LAYER_NORM_EPS):
    """residual += alpha * h (in place), then LayerNorm: -> (residual, LayerNorm(residual))."""
    residual += alpha * h
    return residual, layer_norm(residual, params, eps)


def causal_conv2d_stride2(x, lengths, params, *, relu: bool):
    """pre_encode's causal 3x3 stride-2 conv, channel-last: x [B, T, F, 1|C] (1: one input channel feeding all C,
    as conv.0; C: depthwise), time steps >= lengths read as zero -> (y [B, T//2+1, F//2+1, C], lengths')."""
    lengths = np.asarray(lengths, np.int64)
    keep = np.arange(x.shape[1])[None, :] < lengths[:, None]
    xp = np.pad(x * keep[:, :, None, None], ((0, 0), (2, 1), (2, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))[:, ::2, ::2]  # [B, T', F', Cx, 3, 3]
    b, t, f, cx = win.shape[:4]
    y = np.einsum("btfck,kc->btfc", win.reshape(b, t, f, cx, 9), params["weight_t"]) + params["bias"]
    out_lengths = lengths // 2 + 1
    y = y * (np.arange(t)[None, :] < out_lengths[:, None])[:, :, None, None]
    return (np.maximum(y, 0) if relu else y).astype(x.dtype, copy=False), out_lengths
