"""Each layer function on its own, fed the inputs NeMo's modules received (forward-hook records in the goldens),
against the outputs those modules gave: pre_encode, positional encoding, masks, feed-forward, attention with its
cache, convolution with its cache, norm, whole layer; the plain reference and the fast path on both backends."""

import math

import numpy as np
import pytest
from fixture_data import IMPLS, MODELS, encoder_ops, layer_first_to_batch_first, nemo_model, stream_golden

from refimpl.model.attention import make_masks, rel_pos_mha, rel_positional_encoding
from refimpl.model.conformer import conformer_layer, feed_forward
from refimpl.model.convolution import conformer_convolution
from refimpl.model.encoder import last_frames
from refimpl.model.nn import layer_norm
from refimpl.model.subsampling import pre_encode
from refimpl.tools.tolerances import compare
from weights_tools import streaming_params

CLIP = "fox"
TAPPED = [(m, att, chunk) for m, spec in MODELS.items() for att in spec["tapped"] for chunk in (0, 1, 2)]


def _ctx(model, att, chunk):
    g = stream_golden(model, att, CLIP)
    config, weights = nemo_model(model)
    cfg = config.with_att_context_size(att).encoder
    t = lambda name: g[f"taps/{chunk}/{name}"]  # noqa: E731
    if chunk == 0:
        cc = np.zeros((1, cfg.n_layers, cfg.cache_last_channel_size, cfg.d_model), np.float32)
        tc = np.zeros((1, cfg.n_layers, cfg.d_model, cfg.cache_last_time_size), np.float32)
    else:
        cc = layer_first_to_batch_first(g[f"chunk/{chunk - 1}/cache_last_channel_next"])
        tc = layer_first_to_batch_first(g[f"chunk/{chunk - 1}/cache_last_time_next"])
    return g, cfg, weights["encoder"], t, cc, tc


def _no_record(name, value):
    pass


def _pos_emb(cfg, n_frames):
    return rel_positional_encoding(n_frames + cfg.cache_last_channel_size, cfg.d_model)


@pytest.mark.parametrize("model,att,chunk", TAPPED)
def test_pre_encode_and_pos_enc(model, att, chunk):
    g, cfg, w, t, _, _ = _ctx(model, att, chunk)
    y, length = pre_encode(
        t("encoder.pre_encode/input"),
        g[f"chunk/{chunk}/length"],
        w["pre_encode"],
        subsampling_factor=cfg.subsampling_factor,
    )
    assert compare("pre_encode", y, t("encoder.pre_encode/output")).ok
    assert np.array_equal(length, t("encoder.pre_encode/output_length"))
    x = t("encoder.pos_enc/input")
    assert compare("layer", x * math.sqrt(cfg.d_model), t("encoder.pos_enc/output")).ok
    if chunk == 0:  # the table slice is the same every chunk (recorded once). float32 sin/cos of arguments
        # up to ~80 differ from torch's by < 1 ulp of the argument (measured 1.9e-6 on values in [-1, 1])
        pos = _pos_emb(cfg, x.shape[1])
        assert compare("layer", pos, t("encoder.pos_enc/pos_emb")[0]).ok


@pytest.mark.parametrize("model,att,chunk", TAPPED)
def test_masks(model, att, chunk):
    g, cfg, _, t, _, _ = _ctx(model, att, chunk)
    sp = streaming_params(cfg, att)
    n = t("encoder.layers.0/input").shape[1]
    length = np.maximum(t("encoder.pre_encode/output_length") - sp.drop_extra_pre_encoded, 0)
    pad, att_mask = make_masks(
        length,
        g[f"chunk/{chunk}/cache_last_channel_len"],
        n_frames=n,
        cache_size=sp.last_channel_cache_size,
        att_context_size=att,
    )
    assert np.array_equal(pad, t("encoder.layers.0/pad_mask"))
    assert np.array_equal(att_mask, t("encoder.layers.0/att_mask"))


@pytest.mark.parametrize("model,att,chunk", TAPPED)
def test_sub_blocks_and_layers(model, att, chunk):
    """The plain reference's layer functions, one by one."""
    g, cfg, w, t, cc, tc = _ctx(model, att, chunk)
    att_mask, pad_mask = t("encoder.layers.0/att_mask"), t("encoder.layers.0/pad_mask")
    pos = _pos_emb(cfg, att_mask.shape[1])
    for i in range(cfg.n_layers):
        name, lw = f"encoder.layers.{i}", w["layers"][str(i)]
        for ff in ("feed_forward1", "feed_forward2"):
            assert compare("layer", feed_forward(t(f"{name}.{ff}/input"), lw[ff]), t(f"{name}.{ff}/output")).ok
        y = rel_pos_mha(
            t(f"{name}.self_attn/input"), cc[:, i], lw["self_attn"], pos_emb=pos, att_mask=att_mask, n_heads=cfg.n_heads
        )
        assert compare("layer", y, t(f"{name}.self_attn/output")).ok, (name, "self_attn")
        y, _ = conformer_convolution(
            t(f"{name}.conv/input"), tc[:, i], pad_mask, lw["conv"], norm_type=cfg.conv_norm_type
        )
        assert compare("layer", y, t(f"{name}.conv/output")).ok, (name, "conv")
        assert compare(
            "layer", layer_norm(t(f"{name}.norm_out/input"), lw["norm_out"]), t(f"{name}.norm_out/output")
        ).ok


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("model,att,chunk", TAPPED)
def test_layers_of_every_impl(model, att, chunk, impl):
    """conformer_layer (the layer skeleton) on each implementation's sub-blocks, with the caches cut from what it
    returns as the encoder step cuts them: NeMo's layer outputs and next caches."""
    g, cfg, w, t, cc, tc = _ctx(model, att, chunk)
    config, weights = nemo_model(model)
    ops = encoder_ops(config, weights, att, impl)
    att_mask, pad_mask = t("encoder.layers.0/att_mask"), t("encoder.layers.0/pad_mask")
    attention = ops.attention_state(cc, None, t("encoder.layers.0/input"))
    for i in range(cfg.n_layers):
        name = f"encoder.layers.{i}"
        p = ops.layer_params(i)
        for ff in ("feed_forward1", "feed_forward2"):
            assert compare("layer", ops.feed_forward(t(f"{name}.{ff}/input"), p[ff]), t(f"{name}.{ff}/output")).ok
        y, att_in, conv_in = conformer_layer(
            t(f"{name}/input"),
            i,
            ops,
            attention,
            cache_last_time=tc[:, i],
            att_mask=att_mask,
            pad_mask=pad_mask,
            record=_no_record,
        )
        assert compare("layer", y, t(f"{name}/output")).ok, name
        ccn, tcn = last_frames(cc[:, i], att_in, axis=1), last_frames(tc[:, i], conv_in, axis=2)
        nxt = g[f"chunk/{chunk}/cache_last_channel_next"]
        assert compare("cache_last_channel_next", ccn, nxt[i]).ok
        assert compare("cache_last_time_next", tcn, g[f"chunk/{chunk}/cache_last_time_next"][i]).ok
