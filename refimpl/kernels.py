"""Numba kernels for the hot loops, each the twin of a NumPy function that stays the reference.

One set of jit options everywhere (``nopython=True, cache=True``; no fastmath, no parallel): the kernels compute
the same formulas as the NumPy twins in the same dtype, only the order of floating-point sums may differ.
Big matrix products stay in NumPy (BLAS); the kernels take over where NumPy would materialise large
temporaries or loop in Python: relative-position attention over the cache, the causal depthwise conv with its
time cache, and the LSTM cell.

  kernel                          NumPy twin
  rel_pos_attention_core          attention.rel_pos_attention_core (scores + rel_shift + mask + softmax + context)
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
def _rel_pos_attention(q_u, q_v, k, v, p, mask, out):  # pragma: no cover - compiled
    # q_u, q_v [B, H, T, dk]; k, v [B, H, S, dk]; p [H, P, dk] with P >= S + T - 1; mask [B, T, S] (True = masked)
    # out [B, H, T, dk]. Score (i, j) uses relative position row j + T - 1 - i of p (NeMo's rel_shift).
    b_n, h_n, t_n, dk = q_u.shape
    s_n = k.shape[2]
    scale = math.sqrt(dk)
    scores = np.empty(s_n, dtype=q_u.dtype)
    for b in range(b_n):
        for h in range(h_n):
            for i in range(t_n):
                top = -np.inf
                for j in range(s_n):
                    if mask[b, i, j]:
                        sc = -INF_VAL
                    else:
                        ac = 0.0
                        bd = 0.0
                        r = j + t_n - 1 - i
                        for d in range(dk):
                            ac += q_u[b, h, i, d] * k[b, h, j, d]
                            bd += q_v[b, h, i, d] * p[h, r, d]
                        sc = (ac + bd) / scale
                    scores[j] = sc
                    if sc > top:
                        top = sc
                total = 0.0
                for j in range(s_n):
                    e = math.exp(scores[j] - top)
                    scores[j] = e
                    total += e
                for d in range(dk):
                    out[b, h, i, d] = 0.0
                for j in range(s_n):
                    if mask[b, i, j]:
                        continue
                    a = scores[j] / total
                    for d in range(dk):
                        out[b, h, i, d] += a * v[b, h, j, d]


def rel_pos_attention_core(q_u, q_v, k, v, p, att_mask):
    """Numba twin of ``attention.rel_pos_attention_core``: -> context [B, H, T, dk]."""
    out = np.empty(q_u.shape, q_u.dtype)
    _rel_pos_attention(np.ascontiguousarray(q_u), np.ascontiguousarray(q_v), np.ascontiguousarray(k),
                       np.ascontiguousarray(v), np.ascontiguousarray(p), np.ascontiguousarray(att_mask), out)
    return out


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
