"""Numba kernels for the hot loops, each the twin of a NumPy function that stays the reference.

One set of jit options everywhere (``nopython=True, cache=True``; no fastmath, no parallel): the kernels compute
the same formulas as the NumPy twins in the same dtype, only the order of floating-point sums may differ.
Big matrix products stay in NumPy (BLAS); the kernels take over where NumPy would materialise large
temporaries or loop in Python: relative-position attention over the cache, the causal depthwise conv with its
time cache, and the LSTM cell.

  kernel                          NumPy twin
  rel_pos_attention_core          attention.rel_pos_attention_core (rel_shift + mask + softmax fused; products in BLAS)
  causal_depthwise_conv1d         convolution.causal_depthwise_conv1d
  lstm_cell                       rnnt.lstm_cell
"""
from __future__ import annotations

import math

import numba
import numpy as np

JIT = dict(nopython=True, cache=True)
INF_VAL = 10000.0


@numba.jit(**JIT)
def _rel_shift_masked_softmax(ac, bd_full, mask, scale, attn):  # pragma: no cover - compiled
    # ac [B, H, T, S] = q_u k^T; bd_full [B, H, T, P] = q_v p^T (P >= S + T - 1); mask [B, T, S] (True = masked)
    # attn [B, H, T, S]: softmax over j of (ac[i, j] + bd_full[i, j + T-1-i]) / sqrt(dk), masked entries -10000
    # before and 0 after (NeMo's rel_shift, forward_attention), in one pass without shifted copies.
    b_n, h_n, t_n, s_n = ac.shape
    for b in range(b_n):
        for h in range(h_n):
            for i in range(t_n):
                r0 = t_n - 1 - i
                top = -np.inf
                for j in range(s_n):
                    sc = -INF_VAL if mask[b, i, j] else (ac[b, h, i, j] + bd_full[b, h, i, j + r0]) / scale
                    attn[b, h, i, j] = sc
                    top = max(top, sc)
                total = 0.0
                for j in range(s_n):
                    e = math.exp(attn[b, h, i, j] - top)
                    attn[b, h, i, j] = e
                    total += e
                for j in range(s_n):
                    attn[b, h, i, j] = 0.0 if mask[b, i, j] else attn[b, h, i, j] / total


def rel_pos_attention_core(q_u, q_v, k, v, p, att_mask):
    """Numba twin of ``attention.rel_pos_attention_core``: -> context [B, H, T, dk].

    The three products stay in BLAS; the kernel fuses rel_shift, the mask and the softmax."""
    ac = q_u @ k.transpose(0, 1, 3, 2)  # [B, H, T, S]
    bd_full = np.ascontiguousarray(q_v @ p.transpose(0, 2, 1))  # [B, H, T, 2S-1]
    attn = np.empty(ac.shape, ac.dtype)
    scale = ac.dtype.type(math.sqrt(q_u.shape[-1]))
    _rel_shift_masked_softmax(np.ascontiguousarray(ac), bd_full, np.ascontiguousarray(att_mask), scale, attn)
    return attn @ v


@numba.jit(**JIT)
def _depthwise_conv(xp, w, bias, out):  # pragma: no cover - compiled
    # xp [B, d, K-1+T] = [cache ‖ x]; w [d, K]; out [B, d, T]
    b_n, c_n, t_n = out.shape
    k_n = w.shape[1]
    for b in range(b_n):
        for c in range(c_n):
            for t in range(t_n):
                acc = 0.0
                for k in range(k_n):
                    acc += w[c, k] * xp[b, c, t + k]
                out[b, c, t] = acc + bias[c]


def causal_depthwise_conv1d(x, cache, params):
    """Numba twin of ``convolution.causal_depthwise_conv1d``: x [B, d, T], cache [B, d, K-1] or None."""
    w = np.ascontiguousarray(params["weight"][:, 0, :])
    k = w.shape[1]
    pad = np.zeros(x.shape[:2] + (k - 1,), x.dtype) if cache is None else cache
    xp = np.ascontiguousarray(np.concatenate([pad, x], axis=2))
    out = np.empty(x.shape, x.dtype)
    _depthwise_conv(xp, w, np.ascontiguousarray(params["bias"]), out)
    return out, (None if cache is None else xp[:, :, xp.shape[2] - (k - 1):])


@numba.jit(**JIT)
def _lstm_pointwise(gates, c, h_out, c_out):  # pragma: no cover - compiled
    # gates [B, 4H] in torch order i, f, g, o; c [B, H]
    b_n, hid = c.shape
    for b in range(b_n):
        for j in range(hid):
            i = 1.0 / (1.0 + math.exp(-gates[b, j]))
            f = 1.0 / (1.0 + math.exp(-gates[b, hid + j]))
            g = math.tanh(gates[b, 2 * hid + j])
            o = 1.0 / (1.0 + math.exp(-gates[b, 3 * hid + j]))
            cn = f * c[b, j] + i * g
            c_out[b, j] = cn
            h_out[b, j] = o * math.tanh(cn)


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Numba twin of ``rnnt.lstm_cell``: gate matmuls by BLAS, the cell update in one fused loop."""
    gates = np.ascontiguousarray(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    h_out = np.empty(c.shape, c.dtype)
    c_out = np.empty(c.shape, c.dtype)
    _lstm_pointwise(gates, np.ascontiguousarray(c), h_out, c_out)
    return h_out, c_out


# --- Fast-path kernels (refimpl.fast). Channel-last activations, weights in weights_tools.layouts' layouts; the
# innermost loop runs over contiguous channels / keys so LLVM vectorises it without reordering any sum.
#
#  kernel                          NumPy twin
#  conv_module_core                fast.conv_module_core        (GLU, pad mask, causal depthwise conv + cache, norm, swish)
#  layer_norm                      nn.layer_norm                (rows of a channel-last activation)
#  residual_layer_norm             fast.residual_layer_norm     (residual += alpha * (h + bias); LayerNorm of it)
#  causal_conv2d_stride2           fast.causal_conv2d_stride2   (pre_encode's 3x3 stride-2 causal convs, channel-last)
# Attention over the cache stays in NumPy on both backends (fast.cached_rel_pos_attention): BLAS for the three
# products and NumPy's SIMD exp beat a Numba loop nest, which may not reorder the dk-long sums (no fastmath) and
# calls a scalar exp per score.


@numba.jit(**JIT)
def _layer_norm_row(x, w, b, eps, out):  # pragma: no cover - compiled
    # one row: out = (x - mean) / sqrt(var + eps) * w + b, statistics accumulated in float64; out may be x
    d = x.shape[0]
    s = 0.0
    for c in range(d):
        s += x[c]
    mean = s / d
    s = 0.0
    for c in range(d):
        s += (x[c] - mean) ** 2
    inv = 1.0 / math.sqrt(s / d + eps)
    for c in range(d):
        out[c] = (x[c] - mean) * inv * w[c] + b[c]


@numba.jit(**JIT)
def _conv_module_core(h2, keep, cache, w_t, bias, norm_mode, n_w, n_b, n_mean, eps, out, cache_next):  # pragma: no cover
    # h2 [B, T, 2d] pointwise_conv1 output; keep [B, T] (False = padded frame); cache [B, d, K-1]; w_t [K, d]
    # norm_mode 0 LayerNorm(n_w, n_b), 1 BatchNorm (x - n_mean) * n_w + n_b (n_w = scale), 2 none (folded)
    # out [B, T, d] = swish(norm(depthwise([cache ‖ mask(glu(h2))]))); cache_next [B, d, K-1]
    b_n, t_n, d2 = h2.shape
    d = d2 // 2
    k_n = w_t.shape[0]
    xp = np.empty((k_n - 1 + t_n, d), dtype=h2.dtype)  # [cache ‖ chunk], channel-last
    for b in range(b_n):
        for k in range(k_n - 1):
            for c in range(d):
                xp[k, c] = cache[b, c, k]
        for t in range(t_n):
            row = xp[k_n - 1 + t]
            if keep[b, t]:
                for c in range(d):
                    row[c] = h2[b, t, c] * (1.0 / (1.0 + math.exp(-h2[b, t, d + c])))
            else:
                for c in range(d):
                    row[c] = 0.0
        for k in range(k_n - 1):
            for c in range(d):
                cache_next[b, c, k] = xp[t_n + k, c]
        for t in range(t_n):
            y = out[b, t]
            for c in range(d):
                y[c] = 0.0
            for k in range(k_n):
                wk = w_t[k]
                xk = xp[t + k]
                for c in range(d):
                    y[c] += wk[c] * xk[c]
            for c in range(d):
                y[c] += bias[c]
            if norm_mode == 0:
                _layer_norm_row(y, n_w, n_b, eps, y)
            elif norm_mode == 1:
                for c in range(d):
                    y[c] = (y[c] - n_mean[c]) * n_w[c] + n_b[c]
            for c in range(d):
                y[c] = y[c] * (1.0 / (1.0 + math.exp(-y[c])))


CONV_NORM_MODES = {"layer_norm": 0, "batch_norm": 1, "folded_batch_norm": 2}


def conv_module_core(h2, pad_mask, cache, params, *, norm_type, eps=1e-5):
    """Numba twin of ``fast.conv_module_core``: -> (out [B, T, d], cache_next [B, d, K-1])."""
    b, t, d2 = h2.shape
    dw = params["depthwise_conv"]
    bn = params.get("batch_norm", {})
    dummy = np.zeros(0, h2.dtype)
    mode = CONV_NORM_MODES[norm_type]
    n_w = bn.get("weight", bn.get("scale", dummy))
    out = np.empty((b, t, d2 // 2), h2.dtype)
    cache_next = np.empty(cache.shape, h2.dtype)
    _conv_module_core(np.ascontiguousarray(h2), np.ascontiguousarray(~pad_mask), np.ascontiguousarray(cache),
                      dw["weight_t"], dw["bias"], mode, n_w, bn.get("bias", dummy), bn.get("running_mean", dummy),
                      eps, out, cache_next)
    return out, cache_next


@numba.jit(**JIT)
def _layer_norm(x, w, b, eps, y):  # pragma: no cover - compiled
    # x, y [N, d]: y = (x - mean) / sqrt(var + eps) * w + b per row
    for r in range(x.shape[0]):
        _layer_norm_row(x[r], w, b, eps, y[r])


def layer_norm(x, params, eps=1e-5):
    """Numba twin of ``nn.layer_norm`` (over the last axis)."""
    d = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, d)
    y = np.empty_like(x2)
    _layer_norm(x2, params["weight"], params["bias"], eps, y)
    return y.reshape(x.shape)


@numba.jit(**JIT)
def _residual_layer_norm(residual, h, bias, alpha, w, b, eps, y):  # pragma: no cover - compiled
    # residual [N, d] updated in place: residual += alpha * (h + bias); y [N, d] = LayerNorm(residual)
    n, d = residual.shape
    for r in range(n):
        x = residual[r]
        for c in range(d):
            x[c] = x[c] + alpha * (h[r, c] + bias[c])
    _layer_norm(residual, w, b, eps, y)


def residual_layer_norm(residual, h, bias, alpha, params, eps=1e-5):
    """Numba twin of ``fast.residual_layer_norm``: residual [..., d] (updated in place and returned), h [..., d]
    -> (residual, LayerNorm(residual))."""
    d = residual.shape[-1]
    r2 = residual.reshape(-1, d)
    y = np.empty_like(r2)
    _residual_layer_norm(r2, np.ascontiguousarray(h).reshape(-1, d), bias, residual.dtype.type(alpha),
                         params["weight"], params["bias"], eps, y)
    return residual, y.reshape(residual.shape)


@numba.jit(**JIT)
def _causal_conv2d_stride2(x, lengths, w_t, bias, out_lengths, relu, out):  # pragma: no cover - compiled
    # x [B, T, F, Cx] channel-last (Cx = 1: one input channel feeding every output channel; Cx = C: depthwise);
    # time steps t >= lengths[b] read as zero (MaskedConvSequential); zero padding 2 before / 1 after in T and F.
    # w_t [9, C] taps ky*3+kx; out [B, T', F', C]; rows t' >= out_lengths[b] are zeroed; relu applied if set.
    b_n, t_n, f_n, cx = x.shape
    _, to_n, fo_n, c_n = out.shape
    for b in range(b_n):
        t_valid = min(t_n, lengths[b])
        for to in range(to_n):
            for fo in range(fo_n):
                y = out[b, to, fo]
                for c in range(c_n):
                    y[c] = 0.0
                if to >= out_lengths[b]:
                    continue
                for ky in range(3):
                    ti = 2 * to + ky - 2
                    if ti < 0 or ti >= t_valid:
                        continue
                    for kx in range(3):
                        fi = 2 * fo + kx - 2
                        if fi < 0 or fi >= f_n:
                            continue
                        wk = w_t[ky * 3 + kx]
                        xr = x[b, ti, fi]
                        if cx == 1:
                            v = xr[0]
                            for c in range(c_n):
                                y[c] += wk[c] * v
                        else:
                            for c in range(c_n):
                                y[c] += wk[c] * xr[c]
                for c in range(c_n):
                    y[c] += bias[c]
                    if relu and y[c] < 0.0:
                        y[c] = 0.0


def causal_conv2d_stride2(x, lengths, params, *, relu: bool):
    """Numba twin of ``fast.causal_conv2d_stride2``: x [B, T, F, 1|C] -> (y [B, T//2+1, F//2+1, C], lengths')."""
    b, t, f, _ = x.shape
    lengths = np.asarray(lengths, np.int64)
    out_lengths = lengths // 2 + 1
    out = np.empty((b, t // 2 + 1, f // 2 + 1, params["weight_t"].shape[1]), x.dtype)
    _causal_conv2d_stride2(np.ascontiguousarray(x), lengths, params["weight_t"], params["bias"], out_lengths, relu, out)
    return out, out_lengths
