"""Every parameter name NeMo's state_dict holds for this architecture, with its shape, derived from the config.

Both loaders check what they return against this table: a missing, surplus or mis-shaped weight is an error.
"""

from __future__ import annotations

from .config import EncoderConfig, PreprocessorConfig, RNNTConfig
from .errors import ModelLoadError, WeightNotFoundError


def subsampled_freq(enc: EncoderConfig) -> int:
    """Frequency bins left after dw_striding: each stride-2, kernel-3 conv maps n -> (n + pads - 3)//2 + 1, with
    pads 2+1 when causal (CausalConv2D) and 1+1 otherwise."""
    n, pads = enc.feat_in, (3 if enc.causal_downsampling else 2)
    for _ in range(enc.subsampling_factor.bit_length() - 1):
        n = (n + pads - 3) // 2 + 1
    return n


def pre_encode_conv_indices(subsampling_factor: int) -> list[tuple[int, str]]:
    """(index in ``pre_encode.conv``, kind) for dw_striding: conv.0 is a full conv, then (depthwise, pointwise)
    per further stride-2 stage; the indices in between are ReLUs."""
    out = [(0, "conv")]
    for i in range(subsampling_factor.bit_length() - 2):
        out += [(2 + 3 * i, "depthwise"), (3 + 3 * i, "pointwise")]
    return out


def preprocessor_shapes(pre: PreprocessorConfig) -> dict:
    return {
        "preprocessor.featurizer.window": (pre.n_window_size,),
        "preprocessor.featurizer.fb": (1, pre.features, pre.n_fft // 2 + 1),
    }


def encoder_shapes(enc: EncoderConfig) -> dict:
    d, c = enc.d_model, enc.subsampling_conv_channels
    s = {}
    for i, kind in pre_encode_conv_indices(enc.subsampling_factor):
        shape = {"conv": (c, 1, 3, 3), "depthwise": (c, 1, 3, 3), "pointwise": (c, c, 1, 1)}[kind]
        s[f"encoder.pre_encode.conv.{i}.weight"] = shape
        s[f"encoder.pre_encode.conv.{i}.bias"] = (c,)
    s["encoder.pre_encode.out.weight"] = (d, c * subsampled_freq(enc))
    s["encoder.pre_encode.out.bias"] = (d,)
    for i in range(enc.n_layers):
        s.update(_layer_shapes(enc, f"encoder.layers.{i}"))
    return s


def _layer_shapes(enc: EncoderConfig, p: str) -> dict:
    d, ff, k = enc.d_model, enc.d_ff, enc.conv_kernel_size
    s = {}

    def linear(name, n_out, n_in, bias=enc.use_bias):
        s[f"{p}.{name}.weight"] = (n_out, n_in)
        if bias:
            s[f"{p}.{name}.bias"] = (n_out,)

    def norm(name):
        s[f"{p}.{name}.weight"] = (d,)
        s[f"{p}.{name}.bias"] = (d,)

    for ffn in ("feed_forward1", "feed_forward2"):
        norm(f"norm_{ffn}")
        linear(f"{ffn}.linear1", ff, d)
        linear(f"{ffn}.linear2", d, ff)
    norm("norm_self_att")
    s[f"{p}.self_attn.pos_bias_u"] = (enc.n_heads, enc.d_k)
    s[f"{p}.self_attn.pos_bias_v"] = (enc.n_heads, enc.d_k)
    for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
        linear(f"self_attn.{lin}", d, d)
    linear("self_attn.linear_pos", d, d, bias=False)
    norm("norm_conv")
    s[f"{p}.conv.pointwise_conv1.weight"] = (2 * d, d, 1)
    s[f"{p}.conv.depthwise_conv.weight"] = (d, 1, k)
    s[f"{p}.conv.pointwise_conv2.weight"] = (d, d, 1)
    if enc.use_bias:
        s[f"{p}.conv.pointwise_conv1.bias"] = (2 * d,)
        s[f"{p}.conv.depthwise_conv.bias"] = (d,)
        s[f"{p}.conv.pointwise_conv2.bias"] = (d,)
    if enc.conv_norm_type == "folded_batch_norm":
        s[f"{p}.conv.depthwise_conv.bias"] = (d,)  # folding always produces a bias
    else:
        norm("conv.batch_norm")
    if enc.conv_norm_type == "batch_norm":
        s[f"{p}.conv.batch_norm.running_mean"] = (d,)
        s[f"{p}.conv.batch_norm.running_var"] = (d,)
    norm("norm_out")
    return s


def rnnt_shapes(rnnt: RNNTConfig, d_model: int, joint_net_index: int = 2) -> dict:
    """``joint_net_index``: position of the output Linear in ``joint.joint_net`` (2 when the joint has dropout,
    1 without)."""
    v1, h, j = rnnt.vocab_size + 1, rnnt.pred_hidden, rnnt.joint_hidden
    s = {"decoder.prediction.embed.weight": (v1, h)}
    for layer in range(rnnt.pred_rnn_layers):
        p = "decoder.prediction.dec_rnn.lstm"
        s[f"{p}.weight_ih_l{layer}"] = (4 * h, h)
        s[f"{p}.weight_hh_l{layer}"] = (4 * h, h)
        s[f"{p}.bias_ih_l{layer}"] = (4 * h,)
        s[f"{p}.bias_hh_l{layer}"] = (4 * h,)
    s.update(
        {
            "joint.pred.weight": (j, h),
            "joint.pred.bias": (j,),
            "joint.enc.weight": (j, d_model),
            "joint.enc.bias": (j,),
            f"joint.joint_net.{joint_net_index}.weight": (v1, j),
            f"joint.joint_net.{joint_net_index}.bias": (v1,),
        }
    )
    return s


def ctc_shapes(vocab_size: int, d_model: int, prefix: str = "ctc_decoder") -> dict:
    """``prefix``: ``ctc_decoder`` in hybrid models, ``decoder`` in CTC-only models."""
    return {
        f"{prefix}.decoder_layers.0.weight": (vocab_size + 1, d_model, 1),
        f"{prefix}.decoder_layers.0.bias": (vocab_size + 1,),
    }


def check_against(shapes: dict, found: dict, where: str) -> None:
    """Raise WeightNotFoundError / ModelLoadError unless ``found`` (name -> array or shape) matches ``shapes``."""
    missing = [n for n in shapes if n not in found]
    if missing:
        raise WeightNotFoundError(
            f"{where}: {len(missing)} weight(s) the architecture needs are missing: {_preview(missing)}"
        )
    surplus = [n for n in found if n not in shapes]
    if surplus:
        raise ModelLoadError(
            f"{where}: {len(surplus)} tensor(s) that this architecture does not have: {_preview(surplus)} "
            f"(expected exactly the parameters of a cache-aware FastConformer hybrid model)"
        )
    for n, want in shapes.items():
        got = tuple(getattr(found[n], "shape", found[n]))
        if got != tuple(want):
            raise ModelLoadError(f"{where}: {n} has shape {list(got)}, expected {list(want)} from the config")


def _preview(names: list, n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")
