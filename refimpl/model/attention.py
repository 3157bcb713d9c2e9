"""Relative positional encoding, the chunked_limited masks and ``RelPositionMultiHeadAttention`` with a cache.

The attention cache (``cache_last_channel``) holds the *post-norm attention inputs* of the last frames, not
projected keys/values: keys and values are projected from [cache ‖ chunk] every step, queries from the chunk.
The next cache (the last C rows of [cache ‖ attention input]) is formed by the encoder step, not here.
"""

from __future__ import annotations

import math

import numpy as np

from .nn import linear, softmax

INF_VAL = 10000.0  # NeMo's mask fill value: scores[mask] = -INF_VAL before the softmax
POS_ENC_BASE = 10000.0  # base of the sinusoid table (PositionalEncoding: div = exp(2i * -ln(base) / d_model))


def rel_positional_encoding(length: int, d_model: int, dtype=np.float32) -> np.ndarray:
    """pos_emb [2*length-1, d_model] for relative positions length-1 down to -(length-1).

    Even columns sin(p * div[i]), odd columns cos(p * div[i]), div[i] = exp(2i * -ln(10000)/d_model),
    computed in float32 as NeMo's ``PositionalEncoding.create_pe`` does (then cast to dtype).
    """
    pos = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]  # [2L-1, 1]
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * np.float32(-(math.log(POS_ENC_BASE) / d_model)))
    pe = np.zeros((pos.shape[0], d_model), np.float32)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe.astype(dtype, copy=False)


def make_masks(
    length: np.ndarray, cache_last_channel_len, *, n_frames: int, cache_size: int, att_context_size
) -> tuple:
    """NeMo's ``_create_masks`` for chunked_limited attention over [cache ‖ chunk].

    length [B]: valid frames of the chunk (after the pre-encode drop); cache_last_channel_len [B] or None
    (offline, no cache). Returns (pad_mask [B, T], att_mask [B, T, cache_size + T]), True = masked.
    Key j (0..cache_size+T-1) is valid iff cache_size - cache_len <= j < cache_size + length; query i sees
    key j iff both are valid and 0 <= chunk(i) - chunk(j) <= left_chunks, chunk(j) = j // (right + 1).
    """
    total = cache_size + n_frames
    j = np.arange(total)
    valid = j[None, :] < (np.asarray(length) + cache_size)[:, None]  # [B, total]
    if cache_last_channel_len is not None:
        valid &= j[None, :] >= (cache_size - np.asarray(cache_last_channel_len))[:, None]
    left, right = att_context_size
    chunk = j // (right + 1)
    diff = chunk[:, None] - chunk[None, :]
    visible = (diff >= 0) & (diff <= left // (right + 1))  # [total, total]
    att_ok = visible[None] & valid[:, :, None] & valid[:, None, :]  # [B, total, total]
    return ~valid[:, cache_size:], ~att_ok[:, cache_size:]


def rel_shift(x: np.ndarray) -> np.ndarray:
    """Transformer-XL relative shift: x [B, H, T, P] -> [B, H, T, P] with out[..., i, j] = x[..., i, j + T-1-i]
    (entries past the end come from the next row, as NeMo's pad-and-reshape trick does; callers keep the
    first cache+T columns, which are all in range)."""
    b, h, t, p = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 0)))  # [B, H, T, P+1]
    x = x.reshape(b, h, p + 1, t)[:, :, 1:]  # drop the first row
    return x.reshape(b, h, t, p)


def rel_pos_attention_core(q_u, q_v, k, v, p, att_mask):
    """Scores, rel_shift, mask, softmax and context for one chunk.

    q_u, q_v [B, H, T, dk] (queries + pos_bias_u / pos_bias_v), k, v [B, H, S, dk] (S = C + T keys),
    p [H, 2S-1, dk] projected positions, att_mask [B, T, S] True = masked -> context [B, H, T, dk].
    """
    s = k.shape[2]
    matrix_ac = q_u @ k.transpose(0, 1, 3, 2)  # [B, H, T, S]
    matrix_bd = rel_shift(q_v @ p.transpose(0, 2, 1))[..., :s]  # [B, H, T, S]
    scores = (matrix_ac + matrix_bd) / math.sqrt(q_u.shape[-1])
    mask = att_mask[:, None]  # [B, 1, T, S]
    attn = softmax(np.where(mask, -INF_VAL, scores), axis=-1)
    attn = np.where(mask, 0.0, attn).astype(q_u.dtype, copy=False)
    return attn @ v


def rel_pos_mha(
    x: np.ndarray, cache: np.ndarray | None, params: dict, *, pos_emb: np.ndarray, att_mask: np.ndarray, n_heads: int
) -> np.ndarray:
    """``RelPositionMultiHeadAttention`` over [cache ‖ chunk]: x [B, T, d] (post-norm), cache [B, C, d] or None
    (offline) -> out [B, T, d]. pos_emb [2(C+T)-1, d]; att_mask [B, T, C+T] True = masked."""
    b, t, d = x.shape
    dk = d // n_heads
    kv = x if cache is None else np.concatenate([cache, x], axis=1)  # [B, C+T, d]
    q = linear(x, params["linear_q"]).reshape(b, t, n_heads, dk)
    k = linear(kv, params["linear_k"]).reshape(b, -1, n_heads, dk).transpose(0, 2, 1, 3)  # [B, H, C+T, dk]
    v = linear(kv, params["linear_v"]).reshape(b, -1, n_heads, dk).transpose(0, 2, 1, 3)
    p = linear(pos_emb, params["linear_pos"]).reshape(-1, n_heads, dk).transpose(1, 0, 2)  # [H, 2L-1, dk]
    q_u = (q + params["pos_bias_u"]).transpose(0, 2, 1, 3)  # [B, H, T, dk]
    q_v = (q + params["pos_bias_v"]).transpose(0, 2, 1, 3)
    ctx = rel_pos_attention_core(q_u, q_v, k, v, p, att_mask).transpose(0, 2, 1, 3).reshape(b, t, d)  # [B, T, d]
    return linear(ctx, params["linear_out"])
