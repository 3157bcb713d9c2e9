"""weights_tools: the ONNX path and the .nemo path give the same weights (bit for bit) and the same config.

Both loaders are ours, so the .nemo reader is also checked against values read straight from the ONNX files'
named initializers with onnx's own reader, and the BatchNorm fold is checked against float64 maths.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import weights_tools as wt
from weights_tools.torch_pickle import _rebuild_tensor_v2

FIXTURES = Path(__file__).parent / "fixtures"
RNNT_PARTS = {"encoder", "decoder", "joint"}
CTC_PARTS = {"encoder", "ctc_decoder"}
# folder -> (model, look-ahead the folder was exported for, submodules its graphs hold, has cache I/O)
FOLDERS = {
    "hybrid/att-70-13": ("hybrid", (70, 13), RNNT_PARTS, True),
    "hybrid/att-70-6": ("hybrid", (70, 6), RNNT_PARTS, True),
    "hybrid/att-70-1": ("hybrid", (70, 1), RNNT_PARTS, True),
    "hybrid/att-70-0": ("hybrid", (70, 0), RNNT_PARTS, True),
    "hybrid/ctc-att-70-13": ("hybrid", (70, 13), CTC_PARTS, True),
    "hybrid/nocache": ("hybrid", (70, 13), RNNT_PARTS, False),
    "hybrid/nocache-ctc": ("hybrid", (70, 13), CTC_PARTS, False),
    "variant/att-24-3": ("variant", (24, 3), RNNT_PARTS, True),
    "variant/att-24-0": ("variant", (24, 0), RNNT_PARTS, True),
}
ENCODER_FIELDS = (
    "feat_in",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "conv_kernel_size",
    "conv_context_size",
    "subsampling",
    "subsampling_factor",
    "subsampling_conv_channels",
    "causal_downsampling",
    "xscaling",
    "use_bias",
    "untie_biases",
    "self_attention_model",
    "att_context_style",
)


@functools.cache
def nemo(model: str):
    return wt.load_nemo(FIXTURES / model / "model.nemo")


@functools.cache
def nemo_folded(model: str):
    config, weights = nemo(model)
    config, weights = wt.fold_batch_norm(config, weights)
    return config, wt.flatten(weights)


@functools.cache
def onnx_flat(folder: str):
    """(config, flattened weights) of an export folder (fixture_data.onnx_model gives the nested tree)."""
    config, weights = wt.load_onnx(FIXTURES / folder)
    return config, wt.flatten(weights)


def ulps(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place (same-sign values)."""
    return int(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32)).max())


def folded_names(config) -> set:
    if config.encoder.conv_norm_type != "folded_batch_norm":
        return set()
    return {
        f"encoder.layers.{i}.conv.depthwise_conv.{leaf}"
        for i in range(config.encoder.n_layers)
        for leaf in ("weight", "bias")
    }


@pytest.mark.parametrize("folder", FOLDERS)
def test_onnx_weights_equal_nemo_bit_for_bit(folder):
    model, _, parts, _ = FOLDERS[folder]
    config, weights = onnx_flat(folder)
    _, ref = nemo_folded(model)
    expected = {n for n in ref if n.split(".")[0] in parts}
    assert set(weights) == expected  # complete, and nothing else (no batch_norm when folded, no preprocessor)
    folded = folded_names(config)
    for name, arr in weights.items():
        assert arr.dtype == np.float32 and arr.shape == ref[name].shape, name
        if name in folded:
            continue  # test_fold_batch_norm_matches_the_exporter
        assert np.array_equal(arr, ref[name]), name


@pytest.mark.parametrize("folder", FOLDERS)
def test_onnx_config_agrees_with_nemo(folder):
    model, att, parts, cached = FOLDERS[folder]
    config, _ = onnx_flat(folder)
    ref, _ = nemo_folded(model)
    enc = config.encoder
    for f in ENCODER_FIELDS:
        assert getattr(enc, f) == getattr(ref.encoder, f), f
    assert enc.conv_norm_type == ref.encoder.conv_norm_type
    assert enc.att_context_size == att and att in ref.encoder.att_context_sizes
    assert enc.att_context_sizes is None  # never guessed from a graph
    assert enc.has_cache_io is cached
    if "decoder" in parts:
        assert config.rnnt == ref.rnnt and config.ctc is None
    else:
        assert config.ctc == ref.ctc and config.rnnt is None
    assert config.vocab_size == ref.vocab_size and config.blank_id == ref.blank_id
    assert config.tokenizer_model == ref.tokenizer_model  # the folder's symlinked tokenizer.model
    assert config.preprocessor == wt.PreprocessorConfig()  # graphs hold no preprocessor: documented defaults


def test_the_fixture_preprocessor_is_the_documented_default():
    ref, _ = nemo("hybrid")
    assert dataclasses.replace(ref.preprocessor, source="") == dataclasses.replace(wt.PreprocessorConfig(), source="")


def test_fold_batch_norm_matches_the_exporter():
    """torch's fold runs the same float32 ops in the same order, but torch's CPU sqrt (MKL VML) is not
    correctly rounded (1 ulp low for ~0.65% of inputs), so a channel's scale can differ by 1 ulp."""
    config, weights = onnx_flat("variant/att-24-3")
    _, ref = nemo_folded("variant")
    names = folded_names(config)
    assert len(names) == 2 * config.encoder.n_layers
    worst = max(ulps(weights[n], ref[n]) for n in names)
    differing = sum(int((weights[n] != ref[n]).sum()) for n in names)
    total = sum(weights[n].size for n in names)
    assert worst <= 1 and differing <= 0.05 * total, (worst, differing, total)


def test_fold_batch_norm_is_the_batch_norm_maths():
    config, weights = nemo("variant")
    folded_cfg, folded = wt.fold_batch_norm(config, weights)
    assert folded_cfg.encoder.conv_norm_type == "folded_batch_norm"
    flat, out = wt.flatten(weights), wt.flatten(folded)
    assert not any(".batch_norm." in n for n in out)
    p = "encoder.layers.1.conv"
    g, b, m, v = (
        flat[f"{p}.batch_norm.{k}"].astype(np.float64) for k in ("weight", "bias", "running_mean", "running_var")
    )
    s = g / np.sqrt(v + 1e-5)
    w64 = flat[f"{p}.depthwise_conv.weight"] * s[:, None, None]
    b64 = (flat[f"{p}.depthwise_conv.bias"] - m) * s + b
    np.testing.assert_allclose(out[f"{p}.depthwise_conv.weight"], w64, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[f"{p}.depthwise_conv.bias"], b64, rtol=1e-6, atol=1e-6)
    # a model without BatchNorm is returned as it is
    hcfg, hw = nemo("hybrid")
    assert wt.fold_batch_norm(hcfg, hw) == (hcfg, hw)


def test_nemo_config():
    config, weights = nemo("variant")
    enc = config.encoder
    assert (enc.d_model, enc.n_heads, enc.n_layers, enc.d_ff) == (48, 3, 2, 96)
    assert (enc.conv_kernel_size, enc.conv_context_size, enc.conv_norm_type) == (5, (4, 0), "batch_norm")
    assert (enc.subsampling, enc.subsampling_factor, enc.subsampling_conv_channels) == ("dw_striding", 4, 16)
    assert enc.att_context_size == (24, 3) and enc.att_context_sizes == ((24, 3), (24, 0))
    assert (config.rnnt.pred_hidden, config.rnnt.pred_rnn_layers, config.rnnt.joint_hidden) == (32, 2, 40)
    assert config.vocab_size == config.ctc.vocab_size == 64 and config.blank_id == 64
    assert config.tokenizer_model == (FIXTURES / "variant" / "tokenizer.model").read_bytes()
    flat = wt.flatten(weights)
    assert "encoder.layers.0.conv.batch_norm.running_var" in flat
    assert not any(n.endswith("num_batches_tracked") for n in flat)
    assert flat["preprocessor.featurizer.fb"].shape == (1, 80, 257)
    assert flat["preprocessor.featurizer.window"].shape == (400,)
    assert all(a.dtype == np.float32 and not a.flags.writeable for a in flat.values())


def test_nemo_weights_equal_onnx_named_initializers_read_by_onnx():
    """Independent of both our readers: onnx.load + numpy_helper on the initializers that keep torch names."""
    flat = wt.flatten(nemo("hybrid")[1])
    enc = onnx.load(str(FIXTURES / "hybrid" / "att-70-13" / "encoder-model.onnx"))
    dj = onnx.load(str(FIXTURES / "hybrid" / "att-70-13" / "decoder_joint-model.onnx"))
    checked = 0
    for model, prefix in ((enc, "encoder."), (dj, "")):
        for init in model.graph.initializer:
            if not init.name.startswith("onnx::"):
                np.testing.assert_array_equal(flat[prefix + init.name], numpy_helper.to_array(init))
                checked += 1
    assert checked > 60


def test_lstm_gates_and_matmul_weights_are_reordered_and_transposed():
    """The anonymous decoder_joint tensors, read with onnx's own reader and converted by hand."""
    flat = wt.flatten(nemo("variant")[1])
    dj = onnx.load(str(FIXTURES / "variant" / "att-24-3" / "decoder_joint-model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in dj.graph.initializer}
    lstm = [n for n in dj.graph.node if n.op_type == "LSTM"]
    assert len(lstm) == 2
    h = 32
    iofc_to_ifgo = np.concatenate([np.arange(g * h, (g + 1) * h) for g in (0, 2, 3, 1)])  # ONNX i,o,f,c
    for layer, node in enumerate(lstm):  # node order = layer order in this export
        w, r, b = (inits[t][0] for t in node.input[1:4])
        p = "decoder.prediction.dec_rnn.lstm"
        np.testing.assert_array_equal(flat[f"{p}.weight_ih_l{layer}"], w[iofc_to_ifgo])
        np.testing.assert_array_equal(flat[f"{p}.weight_hh_l{layer}"], r[iofc_to_ifgo])
        np.testing.assert_array_equal(flat[f"{p}.bias_ih_l{layer}"], b[: 4 * h][iofc_to_ifgo])
        np.testing.assert_array_equal(flat[f"{p}.bias_hh_l{layer}"], b[4 * h :][iofc_to_ifgo])
    enc_mm = next(n for n in dj.graph.node if n.name == "/joint/enc/MatMul")
    np.testing.assert_array_equal(flat["joint.enc.weight"], inits[enc_mm.input[1]].T)


def test_gzipped_nemo(tmp_path):
    gz = tmp_path / "model.nemo"
    with open(FIXTURES / "hybrid" / "model.nemo", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    config, weights = wt.load_nemo(gz)
    ref_config, ref = nemo("hybrid")
    assert config.encoder == ref_config.encoder
    flat, ref_flat = wt.flatten(weights), wt.flatten(ref)
    assert set(flat) == set(ref_flat) and all(np.array_equal(flat[n], ref_flat[n]) for n in flat)


def test_rebuild_tensor_handles_offsets_and_strides():
    storage = np.arange(24, dtype=np.float32)
    t = _rebuild_tensor_v2(storage, 3, (2, 3), (1, 4))  # a transposed view starting at element 3
    np.testing.assert_array_equal(t, [[3, 7, 11], [4, 8, 12]])
    assert t.flags.c_contiguous and not np.shares_memory(t, storage)
    whole = _rebuild_tensor_v2(storage, 0, (4, 6), (6, 1))
    np.testing.assert_array_equal(whole, storage.reshape(4, 6))
    np.testing.assert_array_equal(_rebuild_tensor_v2(storage, 5, (), ()), np.float32(5))


def test_a_single_onnx_file_finds_its_partner_and_tokenizer():
    config, weights = wt.load_onnx(FIXTURES / "hybrid" / "att-70-6" / "encoder-model.onnx")
    assert config.encoder.att_context_size == (70, 6) and config.rnnt is not None
    assert config.tokenizer_model is not None
    assert set(wt.flatten(weights)) == set(onnx_flat("hybrid/att-70-6")[1])
    ctc_config, _ = wt.load_onnx(FIXTURES / "hybrid" / "ctc-att-70-13" / "model.onnx")
    assert ctc_config.ctc.vocab_size == 128 and ctc_config.rnnt is None


def test_nemo_argument_supplies_lookaheads_and_preprocessor():
    config, _ = wt.load_onnx(FIXTURES / "hybrid" / "att-70-1", nemo=FIXTURES / "hybrid" / "model.nemo")
    ref, _ = nemo("hybrid")
    assert config.encoder.att_context_size == (70, 1)
    assert config.encoder.att_context_sizes == ref.encoder.att_context_sizes
    assert config.preprocessor == ref.preprocessor
    nocache, _ = wt.load_onnx(FIXTURES / "hybrid" / "nocache", nemo=FIXTURES / "hybrid" / "model.nemo")
    assert nocache.encoder.att_context_size == (70, 13) and not nocache.encoder.has_cache_io


def test_explicit_att_context_sizes_are_validated():
    config, _ = wt.load_onnx(FIXTURES / "variant" / "att-24-0", att_context_sizes=[[24, 3], [24, 0]])
    assert config.encoder.att_context_sizes == ((24, 3), (24, 0))
    with pytest.raises(wt.ConfigError, match=r"\[24, 0\] is not among"):
        wt.load_onnx(FIXTURES / "variant" / "att-24-0", att_context_sizes=[[24, 3]])


def test_a_folder_with_both_rnnt_and_ctc_exports(tmp_path):
    for f in ("att-70-13/encoder-model.onnx", "att-70-13/decoder_joint-model.onnx", "ctc-att-70-13/model.onnx"):
        shutil.copy(FIXTURES / "hybrid" / f, tmp_path)
    config, weights = wt.load_onnx(tmp_path)
    assert config.rnnt is not None and config.ctc is not None
    _, ref = nemo_folded("hybrid")
    flat = wt.flatten(weights)
    assert set(flat) == {n for n in ref if not n.startswith("preprocessor.")}
    assert all(np.array_equal(flat[n], ref[n]) for n in flat)


def test_plan_reads_no_weights_and_records_the_lookahead_evidence():
    plan = wt.plan_onnx(FIXTURES / "hybrid" / "att-70-6")
    ev = plan.lookahead.evidence
    assert ev["chunked mask chunk size (R+1)"] == 7 and ev["chunked mask left_chunks"] == 10
    assert ev["output time Slice (valid_out_len = R+1)"] == 7 == ev["encoded_lengths Clip max (valid_out_len)"]
    assert (
        ev["cache_last_channel_next_len Clip max (cache size)"]
        == 70
        == ev["cache_last_channel_next Slice (cache size)"]
    )
    assert wt.plan_onnx(FIXTURES / "hybrid" / "nocache").lookahead.evidence == {
        "chunked mask chunk size (R+1)": 14,
        "chunked mask left_chunks": 5,
    }
