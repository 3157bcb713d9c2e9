"""pre_encode: NeMo's causal ``dw_striding`` ConvSubsampling (``ConvSubsampling`` + ``MaskedConvSequential``).

Layers for subsampling factor s = 2^n (state-dict names ``encoder.pre_encode.conv.<i>``):
  conv.0  CausalConv2D 1 -> C, 3x3, stride 2      conv.1 ReLU
  then n-1 times:  depthwise CausalConv2D C -> C (groups C), 3x3, stride 2;  pointwise 1x1 Conv2d C -> C;  ReLU
  out     Linear(C * F', d_model) on [B, T', C, F'] flattened to [B, T', C*F']
CausalConv2D pads time and frequency with k-1 = 2 zeros before and stride-1 = 1 after. Before every layer, time
steps at or beyond the current length are zeroed (NeMo >= 2.5 ``MaskedConvSequential``); a stride-2 layer maps
the length n -> (n + 3 - 3) // 2 + 1.
"""

from __future__ import annotations

import numpy as np

from weights_tools.schema import pre_encode_conv_indices

from .nn import linear, relu

KERNEL = 3
STRIDE = 2
PAD_BEFORE, PAD_AFTER = KERNEL - 1, STRIDE - 1


def _patches(x: np.ndarray) -> np.ndarray:
    """x [B, C, T, F] -> causal 3x3 stride-2 patches [B, C, T', F', 9] (zero padding 2 before, 1 after)."""
    xp = np.pad(x, ((0, 0), (0, 0), (PAD_BEFORE, PAD_AFTER), (PAD_BEFORE, PAD_AFTER)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (KERNEL, KERNEL), axis=(2, 3))  # [B,C,T+..,F+..,3,3]
    win = win[:, :, ::STRIDE, ::STRIDE]
    b, c, t, f = win.shape[:4]
    return win.reshape(b, c, t, f, KERNEL * KERNEL)


def causal_conv2d(x: np.ndarray, params: dict) -> np.ndarray:
    """Full causal conv, x [B, 1, T, F] -> [B, C, T', F'] (conv.0: one input channel)."""
    w = params["weight"]  # [C, 1, 3, 3]
    p = _patches(x)[:, 0]  # [B, T', F', 9]
    y = p @ w.reshape(w.shape[0], -1).T  # [B, T', F', C]
    return y.transpose(0, 3, 1, 2) + params["bias"][:, None, None]


def causal_depthwise_conv2d(x: np.ndarray, params: dict) -> np.ndarray:
    """Depthwise causal conv, x [B, C, T, F] -> [B, C, T', F'] (groups = C)."""
    w = params["weight"]  # [C, 1, 3, 3]
    p = _patches(x)  # [B, C, T', F', 9]
    y = np.einsum("bctfk,ck->bctf", p, w.reshape(w.shape[0], -1))
    return y + params["bias"][:, None, None]


def pointwise_conv2d(x: np.ndarray, params: dict) -> np.ndarray:
    """1x1 conv, x [B, C, T, F] -> [B, C_out, T, F]."""
    w = params["weight"][:, :, 0, 0]  # [C_out, C]
    y = np.einsum("bctf,oc->botf", x, w)
    return y + params["bias"][:, None, None]


def _time_mask(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero time steps t >= length: x [B, C, T, F]."""
    keep = np.arange(x.shape[2])[None, :] < lengths[:, None]  # [B, T]
    return x * keep[:, None, :, None].astype(x.dtype)


def pre_encode(x: np.ndarray, lengths: np.ndarray, params: dict, *, subsampling_factor: int):
    """x [B, T, feat_in], lengths [B] -> (y [B, T', d_model], lengths' [B]); T' = floor(T/2)+1 per stage."""
    h = x[:, None]  # [B, 1, T, F]
    lengths = np.asarray(lengths, dtype=np.int64)
    for i, kind in pre_encode_conv_indices(subsampling_factor):
        h = _time_mask(h, lengths)
        p = params["conv"][str(i)]
        if kind == "conv":
            h = causal_conv2d(h, p)
        elif kind == "depthwise":
            h = causal_depthwise_conv2d(h, p)
        else:
            h = pointwise_conv2d(h, p)
        if kind != "pointwise":  # stride-2 layers update the valid length
            lengths = (lengths + PAD_BEFORE + PAD_AFTER - KERNEL) // STRIDE + 1
        if kind != "depthwise":  # conv.0 and each pointwise conv are followed by a ReLU
            h = relu(_time_mask(h, lengths))
    h = _time_mask(h, lengths)
    b, c, t, f = h.shape
    h = h.transpose(0, 2, 1, 3).reshape(b, t, c * f)  # [B, T', C*F'], flatten index c*F' + f
    return linear(h, params["out"]), lengths
