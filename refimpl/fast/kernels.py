"""Numba kernels of the fast path, each the twin of a NumPy function that stays the reference.

One set of jit options everywhere (``nopython=True, cache=True``; no fastmath, no parallel). Big matrix
products stay in NumPy (BLAS); the kernels take over where NumPy would materialise large temporaries or loop
in Python. Activations are channel-last and weights in ``weights_tools.layouts``' layouts; the innermost loop
runs over contiguous channels so LLVM vectorises it without reordering any sum.

What they compute in which precision: every product and sum runs in the input dtype (the output arrays' element
type: ``y[c] += w * x`` on float32 arrays accumulates in float32), except the mean and variance of a LayerNorm
row, which are accumulated in float64 (Numba's ``0.0`` literal) and then rounded: d-long sums in float64 are
slightly more accurate than float32 ones, and the tests hold both within the tolerance table.

  kernel                          NumPy twin
  conv_module_core                fast.twins.conv_module_core       (GLU, pad mask, causal depthwise conv, norm, swish)
  layer_norm                      model.nn.layer_norm               (rows of a channel-last activation)
  residual_layer_norm             fast.twins.residual_layer_norm    (residual += alpha * h; LayerNorm of it)
  causal_conv2d_stride2           fast.twins.causal_conv2d_stride2  (pre_encode's 3x3 stride-2 causal convs)
  lstm_cell                       model.rnnt.lstm_cell              (gate products in BLAS, the cell update fused)
Attention over the cache stays in NumPy on both backends (fast.encoder.cached_rel_pos_attention): BLAS for the
three products and NumPy's SIMD exp beat a Numba loop nest, which may not reorder the dk-long sums (no
fastmath) and calls a scalar exp per score.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from weights_tools.config import CONV_NORM_TYPES, conv_norm_error

from ..model.nn import LAYER_NORM_EPS
from .numba_cache import ensure_numba_cache

# cache=True needs a writable cache folder; a read-only install gets a private one (and one notice), not an error.
# Numba reads numba.config.CACHE_DIR when each function below is decorated, so this runs first.
ensure_numba_cache()
JIT = dict(nopython=True, cache=True)


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
    """Numba twin of ``model.rnnt.lstm_cell``: gate matmuls by BLAS, the cell update in one fused loop."""
    gates = np.ascontiguousarray(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
    h_out = np.empty(c.shape, c.dtype)
    c_out = np.empty(c.shape, c.dtype)
    _lstm_pointwise(gates, np.ascontiguousarray(c), h_out, c_out)
    return h_out, c_out


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
def _conv_module_core(h2, keep, cache, w_t, bias, norm_mode, n_w, n_b, n_mean, eps, out, g_out):  # pragma: no cover
    # h2 [B, T, 2d] pointwise_conv1 output; keep [B, T] (False = padded frame); cache [B, d, K-1]; w_t [K, d]
    # norm_mode 0 LayerNorm(n_w, n_b), 1 BatchNorm (x - n_mean) * n_w + n_b (n_w = scale), 2 none (folded)
    # out [B, T, d] = swish(norm(depthwise([cache ‖ g]))); g_out [B, d, T] = g = mask(glu(h2)), channel-first
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
        for t in range(t_n):
            for c in range(d):
                g_out[b, c, t] = xp[k_n - 1 + t, c]
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


CONV_NORM_MODES = dict(zip(CONV_NORM_TYPES, range(3)))  # layer_norm 0, batch_norm 1, folded_batch_norm 2


def conv_module_core(h2, pad_mask, cache, params, *, norm_type, eps=LAYER_NORM_EPS):
    """Numba twin of ``fast.twins.conv_module_core``: -> (out [B, T, d], g [B, d, T])."""
    b, t, d2 = h2.shape
    dw = params["depthwise_conv"]
    bn = params.get("batch_norm", {})
    dummy = np.zeros(0, h2.dtype)
    if norm_type not in CONV_NORM_MODES:
        raise conv_norm_error(norm_type)
    mode = CONV_NORM_MODES[norm_type]
    n_w = bn.get("weight", bn.get("scale", dummy))
    out = np.empty((b, t, d2 // 2), h2.dtype)
    g = np.empty((b, d2 // 2, t), h2.dtype)
    _conv_module_core(
        np.ascontiguousarray(h2),
        np.ascontiguousarray(~pad_mask),
        np.ascontiguousarray(cache),
        dw["weight_t"],
        dw["bias"],
        mode,
        n_w,
        bn.get("bias", dummy),
        bn.get("running_mean", dummy),
        eps,
        out,
        g,
    )
    return out, g


@numba.jit(**JIT)
def _layer_norm(x, w, b, eps, y):  # pragma: no cover - compiled
    # x, y [N, d]: y = (x - mean) / sqrt(var + eps) * w + b per row
    for r in range(x.shape[0]):
        _layer_norm_row(x[r], w, b, eps, y[r])


def layer_norm(x, params, eps=LAYER_NORM_EPS):
    """Numba twin of ``nn.layer_norm`` (over the last axis)."""
    d = x.shape[-1]
    x2 = np.ascontiguousarray(x).reshape(-1, d)
    y = np.empty_like(x2)
    _layer_norm(x2, params["weight"], params["bias"], eps, y)
    return y.reshape(x.shape)


@numba.jit(**JIT)
def _residual_layer_norm(residual, h, alpha, w, b, eps, y):  # pragma: no cover - compiled
    # residual [N, d] updated in place: residual += alpha * h; y [N, d] = LayerNorm(residual)
    n, d = residual.shape
    for r in range(n):
        x = residual[r]
        for c in range(d):
            x[c] = x[c] + alpha * h[r, c]
    _layer_norm(residual, w, b, eps, y)


def residual_layer_norm(residual, h, alpha, params, eps=LAYER_NORM_EPS):
    """Numba twin of ``fast.twins.residual_layer_norm``: residual [..., d] C-contiguous (updated in place and
    returned), h [..., d] -> (residual, LayerNorm(residual))."""
    d = residual.shape[-1]
    r2 = residual.reshape(-1, d)
    y = np.empty_like(r2)
    _residual_layer_norm(
        r2, np.ascontiguousarray(h).reshape(-1, d), residual.dtype.type(alpha), params["weight"], params["bias"], eps, y
    )
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
    """Numba twin of ``fast.twins.causal_conv2d_stride2``: x [B, T, F, 1|C] -> (y [B, T//2+1, F//2+1, C], lengths')."""
    b, t, f, _ = x.shape
    lengths = np.asarray(lengths, np.int64)
    out_lengths = lengths // 2 + 1
    out = np.empty((b, t // 2 + 1, f // 2 + 1, params["weight_t"].shape[1]), x.dtype)
    _causal_conv2d_stride2(np.ascontiguousarray(x), lengths, params["weight_t"], params["bias"], out_lengths, relu, out)
    return out, out_lengths
