"""The fast path's pieces: each Numba kernel against its NumPy twin (random and one-hot inputs), each twin against
the plain reference function it restructures, and the weight layouts against NeMo's."""

import numpy as np
import pytest
from fixture_data import assert_close, nemo_model

from refimpl.fast import encoder as fast
from refimpl.fast import kernels, twins
from refimpl.model.attention import make_masks, rel_pos_attention_core, rel_positional_encoding
from refimpl.model.convolution import conformer_convolution
from refimpl.model.encoder import last_frames
from refimpl.model.nn import layer_norm
from refimpl.model.subsampling import pre_encode
from weights_tools.layouts import conv_layout, encoder_layout, panels, unpanel


def _rng_params(rng, d, k, norm_type, dtype=np.float32):
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    p = {
        "pointwise_conv1": {"weight": f(2 * d, d, 1), "bias": f(2 * d)},
        "depthwise_conv": {"weight": f(d, 1, k), "bias": f(d)},
        "pointwise_conv2": {"weight": f(d, d, 1), "bias": f(d)},
    }
    if norm_type == "layer_norm":
        p["batch_norm"] = {"weight": f(d), "bias": f(d)}
    elif norm_type == "batch_norm":
        p["batch_norm"] = {"weight": f(d), "bias": f(d), "running_mean": f(d), "running_var": np.abs(f(d)) + 0.5}
    return p


# --- layouts ---------------------------------------------------------------------------------------------


def test_panels_round_trip_and_linear_p():
    rng = np.random.default_rng(0)
    w_t = rng.standard_normal((48, 160)).astype(np.float32)  # 160 = 4 x 40: panel width falls back to a divisor
    w_p = panels(w_t, panel=64)
    assert w_p.shape == (4, 48, 40) and w_p.flags.c_contiguous
    assert np.array_equal(unpanel(w_p), w_t)
    x = rng.standard_normal((2, 5, 48)).astype(np.float32)
    bias = rng.standard_normal(160).astype(np.float32)
    assert_close(fast.linear_p(x, {"weight_p": w_p, "bias": bias}), x @ w_t + bias)


@pytest.mark.parametrize("model", ["hybrid", "variant"])
def test_encoder_layout_is_nemo_weights_rearranged(model):
    config, weights = nemo_model(model)
    enc, cfg = weights["encoder"], config.encoder
    lay = encoder_layout(enc, cfg)
    d = cfg.d_model
    for i in range(cfg.n_layers):
        src, got = enc["layers"][str(i)], lay["layers"][str(i)]
        qkv = unpanel(got["self_attn"]["linear_qkv"]["weight_p"])
        for j, name in enumerate(("linear_q", "linear_k", "linear_v")):  # fused columns q | k | v
            assert np.array_equal(qkv[:, j * d : (j + 1) * d], src["self_attn"][name]["weight"].T)
            assert np.array_equal(
                got["self_attn"]["linear_qkv"]["bias"][j * d : (j + 1) * d], src["self_attn"][name]["bias"]
            )
        assert np.array_equal(
            unpanel(got["feed_forward2"]["linear2"]["weight_p"]), src["feed_forward2"]["linear2"]["weight"].T
        )
        assert np.array_equal(
            unpanel(got["conv"]["pointwise_conv1"]["weight_p"]), src["conv"]["pointwise_conv1"]["weight"][:, :, 0].T
        )
        assert np.array_equal(
            got["conv"]["depthwise_conv"]["weight_t"], src["conv"]["depthwise_conv"]["weight"][:, 0].T
        )
    # every layout array is read-only, like weights_tools' own output
    from weights_tools.tree import flatten

    assert all(not a.flags.writeable for a in flatten(lay).values())


@pytest.mark.parametrize("model", ["hybrid", "variant"])
def test_pre_encode_fast_matches_plain(model):
    """Channel-last convs and the reordered ``out`` weight give NeMo's pre_encode, with the time masks of
    partial chunks (lengths < T)."""
    config, weights = nemo_model(model)
    cfg = config.encoder
    lay = encoder_layout(weights["encoder"], cfg)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 41, cfg.feat_in)).astype(np.float32)
    lengths = np.array([41, 23])
    ref, ref_len = pre_encode(x, lengths, weights["encoder"]["pre_encode"], subsampling_factor=cfg.subsampling_factor)
    for backend in ("numba", "numpy"):
        got, got_len = fast.FastEncoder(lay, cfg, backend=backend).pre_encode(x, lengths)
        assert_close(got, ref)
        assert np.array_equal(got_len, ref_len)


# --- kernels against twins --------------------------------------------------------------------------------


@pytest.mark.parametrize("depthwise", [False, True])
def test_causal_conv2d_stride2_kernel_matches_numpy(depthwise):
    rng = np.random.default_rng(2)
    c = 6
    x = rng.standard_normal((2, 11, 9, c if depthwise else 1)).astype(np.float32)
    params = {
        "weight_t": rng.standard_normal((9, c)).astype(np.float32),
        "bias": rng.standard_normal(c).astype(np.float32),
    }
    lengths = np.array([11, 6])
    for relu in (False, True):
        y_ref, l_ref = twins.causal_conv2d_stride2(x, lengths, params, relu=relu)
        y, ln = kernels.causal_conv2d_stride2(x, lengths, params, relu=relu)
        assert_close(y, y_ref)
        assert np.array_equal(ln, l_ref) and np.array_equal(ln, lengths // 2 + 1)
        assert not y[1, ln[1] :].any()  # rows past the new length are zero


def test_causal_conv2d_stride2_one_hot():
    """A one at input (t0, f0) reaches output (t', f') through tap (ky, kx) = (t0 - 2t' + 2, f0 - 2f' + 2):
    causal padding of 2 before and 1 after, stride 2, in both axes."""
    c = 9
    params = {"weight_t": np.eye(9, c, dtype=np.float32), "bias": np.zeros(c, np.float32)}  # channel = tap index
    for impl in (twins.causal_conv2d_stride2, kernels.causal_conv2d_stride2):
        for t0, f0 in [(0, 0), (3, 4), (6, 7)]:
            x = np.zeros((1, 7, 8, 1), np.float32)
            x[0, t0, f0, 0] = 1
            y, _ = impl(x, np.array([7]), params, relu=False)
            for to in range(y.shape[1]):
                for fo in range(y.shape[2]):
                    ky, kx = t0 - 2 * to + 2, f0 - 2 * fo + 2
                    expect = np.zeros(c, np.float32)
                    if 0 <= ky < 3 and 0 <= kx < 3:
                        expect[ky * 3 + kx] = 1
                    assert np.array_equal(y[0, to, fo], expect), (impl, t0, f0, to, fo)


@pytest.mark.parametrize("norm_type", ["layer_norm", "batch_norm", "folded_batch_norm"])
def test_conv_module_kernel_matches_numpy_and_plain(norm_type):
    rng = np.random.default_rng(3)
    b, t, d, k = 2, 7, 8, 5
    params = _rng_params(rng, d, k, norm_type)
    lay = conv_layout(params, norm_type, np.dtype(np.float32))
    x = rng.standard_normal((b, t, d)).astype(np.float32)
    cache = rng.standard_normal((b, d, k - 1)).astype(np.float32)
    pad_mask = np.zeros((b, t), bool)
    pad_mask[1, 5:] = True
    ref, ref_conv_in = conformer_convolution(x, cache, pad_mask, params, norm_type=norm_type)
    h2 = fast.linear_p(x, lay["pointwise_conv1"])
    for core in (twins.conv_module_core, kernels.conv_module_core):
        h, conv_in = core(h2, pad_mask, cache, lay, norm_type=norm_type)
        assert_close(fast.linear_p(h, lay["pointwise_conv2"]), ref)
        assert_close(last_frames(cache, conv_in, axis=2), last_frames(cache, ref_conv_in, axis=2))


def test_conv_module_kernel_one_hot_cache():
    """A one in cache column j reaches output frame t through tap j - t (identity GLU gate, no norm)."""
    d, t, k = 3, 4, 5
    w_t = (np.arange(k * d, dtype=np.float32).reshape(k, d) + 1) / 10
    lay = {"depthwise_conv": {"weight_t": w_t, "bias": np.zeros(d, np.float32)}}
    h2 = np.concatenate([np.zeros((1, t, d)), np.full((1, t, d), 50.0)], axis=2).astype(np.float32)  # glu -> 0
    for core in (twins.conv_module_core, kernels.conv_module_core):
        for j in range(k - 1):
            cache = np.zeros((1, d, k - 1), np.float32)
            cache[0, 1, j] = 1
            h, conv_in = core(h2, np.zeros((1, t), bool), cache, lay, norm_type="folded_batch_norm")
            nxt = last_frames(cache, conv_in, axis=2)
            pre = [w_t[j - tt, 1] if j - tt >= 0 else 0.0 for tt in range(t)]
            expect = np.array([v / (1 + np.exp(-v)) for v in pre], np.float32)  # swish
            assert_close(h[0, :, 1], expect)
            assert not h[0, :, [0, 2]].any()
            assert not nxt.any()  # the chunk (all zeros after GLU) pushed the one out of the cache


def test_layer_norm_kernels_match_numpy():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 5, 64)) + 300.0).astype(np.float32)  # large mean: cancellation in the variance
    p = {"weight": rng.standard_normal(64).astype(np.float32), "bias": rng.standard_normal(64).astype(np.float32)}
    assert_close(kernels.layer_norm(x, p), layer_norm(x, p), "layer_norm_stats")
    small = (rng.standard_normal((3, 5, 64)) * 0.01).astype(np.float32)  # variance 1e-4: eps (1e-5) matters
    assert_close(kernels.layer_norm(small, p), layer_norm(small, p))
    h = rng.standard_normal(x.shape).astype(np.float32)
    bias = rng.standard_normal(64).astype(np.float32)
    r1, y1 = kernels.residual_layer_norm(x.copy(), h + bias, 0.5, p)
    r2, y2 = twins.residual_layer_norm(x.copy(), h + bias, 0.5, p)
    assert_close(r1, x + 0.5 * (h + bias))
    assert_close(r1, r2)
    assert_close(y1, y2, "layer_norm_stats")


def test_residual_layer_norm_updates_in_place():
    x = np.ones((2, 4), np.float32)
    p = {"weight": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)}
    for impl in (kernels.residual_layer_norm, twins.residual_layer_norm):
        r = x.copy()
        out, _ = impl(r, np.arange(8, dtype=np.float32).reshape(2, 4), 1.0, p)
        assert out is r and r[1, 3] == 8.0


# --- attention over the cache -----------------------------------------------------------------------------


@pytest.mark.parametrize("t,cache,cache_len", [(4, 7, [0, 3]), (1, 70, [70, 5]), (3, 0, None)])
def test_cached_attention_matches_plain_core(t, cache, cache_len):
    """Keys/values of the cache given pre-projected, the chunk's written after them, positions from a longer
    precomputed table: the same context as rel_pos_attention_core on [cache ‖ chunk]."""
    rng = np.random.default_rng(5)
    b, h, dk, n_layers, layer = 2, 3, 4, 2, 1
    d, s = h * dk, cache + t
    f = lambda *sh: rng.standard_normal(sh).astype(np.float32)  # noqa: E731
    params = {"linear_qkv": {"bias": f(3 * d)}, "pos_bias_u": f(h, dk), "pos_bias_v": f(h, dk)}
    qkv = f(b, t, 3 * d)
    k_all, v_all = f(b, n_layers, h, dk, s), f(b, n_layers, h, s, dk)
    k_cache, v_cache = k_all[:, layer, ..., :cache].copy(), v_all[:, layer, :, :cache].copy()
    longer = s + 5  # precomputed for a longer chunk: this one's positions are a slice of it
    pos_t = f(n_layers, h, dk, 2 * longer - 1)
    _, mask = make_masks(
        np.array([t, max(t - 1, 0)]),
        None if cache_len is None else np.array(cache_len),
        n_frames=t,
        cache_size=cache,
        att_context_size=(max(cache, 1), 1),
    )
    got = fast.cached_rel_pos_attention(qkv, params, k_all, v_all, layer, pos_t, longer - s, mask)

    q, k_new, v_new = ((qkv + params["linear_qkv"]["bias"]).reshape(b, t, 3, h, dk)[:, :, i] for i in range(3))
    assert np.array_equal(k_all[:, layer, ..., cache:], k_new.transpose(0, 2, 3, 1))
    assert np.array_equal(v_all[:, layer, :, cache:], v_new.transpose(0, 2, 1, 3))
    k = np.concatenate([k_cache.swapaxes(-1, -2), k_new.transpose(0, 2, 1, 3)], axis=2)
    v = np.concatenate([v_cache, v_new.transpose(0, 2, 1, 3)], axis=2)
    p = pos_t[layer, :, :, longer - s : longer + s - 1].swapaxes(-1, -2)
    ref = rel_pos_attention_core(
        (q + params["pos_bias_u"]).transpose(0, 2, 1, 3),
        (q + params["pos_bias_v"]).transpose(0, 2, 1, 3),
        k,
        v,
        p,
        mask,
    )
    assert_close(got, ref.transpose(0, 2, 1, 3).reshape(b, t, d))


def test_positional_table_slices_are_shorter_tables():
    """Row r of the table for length L is relative position L-1-r, so a shorter length's table is a slice."""
    long_, short = 20, 13
    a, b = rel_positional_encoding(long_, 16), rel_positional_encoding(short, 16)
    assert np.array_equal(a[long_ - short : long_ + short - 1], b)
