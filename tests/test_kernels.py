"""Each Numba kernel against its NumPy twin, on random inputs and on one-hot inputs that expose off-by-one
padding and cache shifts (the twins themselves are checked against NeMo/onnxruntime elsewhere)."""

import numpy as np
import pytest
from fixture_data import assert_close

from refimpl.fast import kernels
from refimpl.model.attention import rel_pos_attention_core, rel_shift
from refimpl.model.convolution import causal_depthwise_conv1d
from refimpl.model.encoder import last_frames
from refimpl.model.rnnt import lstm_cell
from refimpl.tools.tolerances import compare


def test_rel_shift_closed_form():
    rng = np.random.default_rng(0)
    b, h, t, s = 2, 3, 5, 12
    x = rng.standard_normal((b, h, t, 2 * s - 1))
    y = rel_shift(x)[..., :s]
    for i in range(t):
        for j in range(s):
            assert np.array_equal(y[:, :, i, j], x[:, :, i, j + t - 1 - i])


def test_attention_core_one_hot_relative_positions():
    """With zero content scores and p[r] = r * e_0, query i's score for key j is (j + T-1-i) * q_v[0] / sqrt(dk):
    a one-off error in the relative shift changes which key wins."""
    b, h, t, dk, cache = 1, 1, 3, 4, 5
    s = cache + t
    q_u = np.zeros((b, h, t, dk), np.float32)
    q_v = np.zeros((b, h, t, dk), np.float32)
    q_v[..., 0] = 2.0
    k = np.zeros((b, h, s, dk), np.float32)
    v = np.zeros((b, h, s, dk), np.float32)
    v[0, 0, :, 0] = np.arange(s)  # the context's first channel = expected key index
    p = np.zeros((h, 2 * s - 1, dk), np.float32)
    p[0, :, 0] = -50.0
    for i in range(t):  # make exactly key j*(i) = i + 2 the best for query i via its relative row
        p[0, (i + 2) + t - 1 - i, 0] = 50.0
    mask = np.zeros((b, t, s), bool)
    ref = rel_pos_attention_core(q_u, q_v, k, v, p, mask)
    assert_close(ref[0, 0, :, 0], (np.arange(t) + 2).astype(np.float32))


def test_attention_core_fully_masked_rows_give_zero_context():
    rng = np.random.default_rng(2)
    q_u, q_v = (rng.standard_normal((1, 2, 3, 4)).astype(np.float32) for _ in range(2))
    k, v = (rng.standard_normal((1, 2, 8, 4)).astype(np.float32) for _ in range(2))
    p = rng.standard_normal((2, 15, 4)).astype(np.float32)
    mask = np.ones((1, 3, 8), bool)
    assert not rel_pos_attention_core(q_u, q_v, k, v, p, mask).any()


def test_depthwise_conv_one_hot_cache_and_input():
    """A one in cache column j reaches output t through tap j - t; a one in input frame t0 through tap
    K-1 + t0 - t; the next cache is the last K-1 columns of [cache ‖ x]."""
    d, t, k = 2, 4, 5
    w = np.arange(d * k, dtype=np.float32).reshape(d, 1, k) + 1
    params = {"weight": w, "bias": np.zeros(d, np.float32)}
    for impl in (causal_depthwise_conv1d,):
        for j in range(k - 1):
            cache = np.zeros((1, d, k - 1), np.float32)
            cache[0, 1, j] = 1
            x = np.zeros((1, d, t), np.float32)
            y, nxt = impl(x, cache, params), last_frames(cache, x, axis=2)
            expect = [w[1, 0, j - tt] if j - tt >= 0 else 0 for tt in range(t)]
            assert np.array_equal(y[0, 1], np.array(expect, np.float32)), (impl, j)
            assert not y[0, 0].any()
            assert np.array_equal(nxt, np.concatenate([cache, np.zeros((1, d, t), np.float32)], 2)[:, :, -(k - 1) :])
        for t0 in range(t):
            x = np.zeros((1, d, t), np.float32)
            x[0, 0, t0] = 1
            cache = np.zeros((1, d, k - 1), np.float32)
            y, nxt = impl(x, cache, params), last_frames(cache, x, axis=2)
            expect = [w[0, 0, k - 1 + t0 - tt] if 0 <= k - 1 + t0 - tt < k else 0 for tt in range(t)]
            assert np.array_equal(y[0, 0], np.array(expect, np.float32)), (impl, t0)
            assert np.array_equal(
                nxt[0, 0],
                x[0, 0, t - (k - 1) :] if t >= k - 1 else np.concatenate([np.zeros(k - 1 - t, np.float32), x[0, 0]]),
            )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_kernel_matches_numpy(dtype):
    rng = np.random.default_rng(4)
    b, n_in, hid = 3, 6, 5
    x, h, c = (rng.standard_normal((b, n)).astype(dtype) for n in (n_in, hid, hid))
    w_ih = rng.standard_normal((4 * hid, n_in)).astype(dtype)
    w_hh = rng.standard_normal((4 * hid, hid)).astype(dtype)
    b_ih, b_hh = (rng.standard_normal(4 * hid).astype(dtype) for _ in range(2))
    for got, ref in zip(kernels.lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh), lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh)):
        assert_close(got, ref)


def test_lstm_gate_order_one_hot():
    """Gate order i, f, g, o: with only the f-gate bias large, c' = c (forget everything else) and h' = 0.5*tanh(c)."""
    hid = 2
    zeros = np.zeros((1, hid), np.float32)
    b_ih = np.zeros(4 * hid, np.float32)
    b_ih[hid : 2 * hid] = 30.0  # f -> 1; i = 0.5, g = tanh(0) = 0, o = 0.5
    c = np.array([[0.3, -0.7]], np.float32)
    w = np.zeros((4 * hid, hid), np.float32)
    for impl in (lstm_cell, kernels.lstm_cell):
        h2, c2 = impl(zeros, zeros, c, w, w, b_ih, np.zeros_like(b_ih))
        assert compare("lstm_state", c2, c).ok and compare("lstm_state", h2, 0.5 * np.tanh(c)).ok
