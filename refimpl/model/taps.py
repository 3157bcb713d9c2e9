"""The one table of tap names: the intermediate tensors of an encoder step a caller can ask for.

Names are NeMo's module paths plus what was recorded (``encoder.layers.3.self_attn/output``), so a refimpl
tap, a NeMo forward-hook record in the goldens and an ONNX tensor exposed by ``refimpl.tools.taps`` of the same
place share one name. Every tap is [B, T, d_model] (time before channels) unless said otherwise. The encoder
step records them (``refimpl.model.encoder.encoder_step(..., taps={})``); the layer functions never see them.
"""

from __future__ import annotations

PRE_ENCODE = "encoder.pre_encode/output"  # [B, T', d] every subsampled frame, before the pre-encode drop
POS_ENC = "encoder.pos_enc/output"  # [B, T, d] after the drop and xscaling: the first layer's input
POS_EMB = "encoder.pos_enc/pos_emb"  # [2(C+T)-1, d] relative positions C+T-1 .. -(C+T-1)

# The sub-blocks of a ConformerLayer in signal order; each is recorded as "<layer>.<block>/input" and "/output".
SUB_BLOCKS = ("feed_forward1", "self_attn", "conv", "feed_forward2", "norm_out")
# The places NeMo's ONNX encoder graph lets refimpl.tools.taps expose (per layer), besides PRE_ENCODE.
ONNX_LAYER_TAPS = ("feed_forward1/output", "self_attn/output", "conv/output", "feed_forward2/output", "output")


def layer(i: int) -> str:
    """``encoder.layers.<i>``: the prefix of every tap of layer i (``/input``, ``/output``, ``.<block>/...``)."""
    return f"encoder.layers.{i}"


def sub_block(i: int, block: str, where: str) -> str:
    """``encoder.layers.<i>.<block>/<where>``, block one of SUB_BLOCKS, where "input" or "output"."""
    return f"{layer(i)}.{block}/{where}"


def layer_of(name: str) -> int | None:
    """Layer index of a tap name, or None (pre_encode, pos_enc)."""
    parts = name.split("/")[0].split(".")
    return int(parts[2]) if len(parts) > 2 and parts[1] == "layers" else None


def signal_order(names) -> list:
    """Tap names sorted along the signal path: pre_encode, pos_enc, then per layer its input, the sub-blocks in
    order (input before output), the layer output."""
    where = {"input": 0, "output": 1}

    def key(name):
        module, what = name.split("/", 1)
        i = layer_of(name)
        if i is None:
            return (-1, 0 if "pre_encode" in module else 1, 0, where.get(what, 2))
        parts = module.split(".")
        if len(parts) == 3:  # the layer's own input / output
            return (i, 0 if what == "input" else len(SUB_BLOCKS) + 1, 0, 0)
        return (i, 1 + SUB_BLOCKS.index(parts[3]), where.get(what, 2), 0)

    return sorted(names, key=key)
