"""Intermediate tensors of NeMo's ONNX encoder, found by graph structure and exposed as extra graph outputs.

Each tap is located from a parameter the exporter keeps under its PyTorch name (biases, LayerNorm and Conv
weights), never from node names:
  encoder.pre_encode/output          the Add that consumes ``pre_encode.out.bias``          [B, T, d] (before the drop)
  encoder.layers.i.feed_forward1/output  Add consuming ``layers.i.feed_forward1.linear2.bias``  [B, T, d]
  encoder.layers.i.self_attn/output  Add consuming ``layers.i.self_attn.linear_out.bias``  [B, T, d]
  encoder.layers.i.conv/output       Conv with weight ``layers.i.conv.pointwise_conv2.weight`` [B, d, T] -> [B, T, d]
  encoder.layers.i.feed_forward2/output  Add consuming ``layers.i.feed_forward2.linear2.bias``  [B, T, d]
  encoder.layers.i/output            LayerNormalization with scale ``layers.i.norm_out.weight`` [B, T, d]
The names are refimpl's tap names (NeMo module paths), so both engines' taps compare key by key.
"""
from __future__ import annotations

import onnx

TRANSPOSED = ".conv/output"  # taps whose ONNX tensor is [B, d, T] (refimpl's are [B, T, d])


def _consumer_output(g, init: str, op: str, what: str) -> str:
    hits = [n for n in g.consumers(init) if n.op_type == op]
    if len(hits) != 1:
        raise ValueError(f"{g.name}: expected one {op} consuming {init} for {what}, found {len(hits)}")
    return hits[0].output[0]


def find_taps(encoder_path) -> dict:
    """{refimpl tap name: ONNX tensor name} for every tap of the encoder graph at ``encoder_path``."""
    from weights_tools.onnx_encoder import graph_prefix
    from weights_tools.onnx_file import read_onnx
    from weights_tools.onnx_graph import Graph

    g = Graph(read_onnx(encoder_path))
    p = graph_prefix(g)
    taps = {"encoder.pre_encode/output": _consumer_output(g, f"{p}pre_encode.out.bias", "Add", "pre_encode")}
    i = 0
    while f"{p}layers.{i}.norm_out.weight" in g.inits:
        lp, name = f"{p}layers.{i}", f"encoder.layers.{i}"
        taps[f"{name}.feed_forward1/output"] = _consumer_output(g, f"{lp}.feed_forward1.linear2.bias", "Add", name)
        taps[f"{name}.self_attn/output"] = _consumer_output(g, f"{lp}.self_attn.linear_out.bias", "Add", name)
        taps[f"{name}.conv/output"] = _consumer_output(g, f"{lp}.conv.pointwise_conv2.weight", "Conv", name)
        taps[f"{name}.feed_forward2/output"] = _consumer_output(g, f"{lp}.feed_forward2.linear2.bias", "Add", name)
        taps[f"{name}/output"] = _consumer_output(g, f"{lp}.norm_out.weight", "LayerNormalization", name)
        i += 1
    return taps


def with_tap_outputs(encoder_path, taps: dict) -> bytes:
    """The encoder model with every tap tensor added as a graph output (serialized, for an InferenceSession)."""
    model = onnx.load(str(encoder_path))
    have = {o.name for o in model.graph.output}
    for tensor in taps.values():
        if tensor not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()


def layer_of(tap: str):
    """Layer index of a tap name, or None (pre_encode)."""
    parts = tap.split("/")[0].split(".")
    return int(parts[2]) if len(parts) > 2 and parts[1] == "layers" else None


def tap_order(taps) -> list:
    """Signal-path order: pre_encode, then per layer ff1, self_attn, conv, ff2, output."""
    sub = {"feed_forward1": 0, "self_attn": 1, "conv": 2, "feed_forward2": 3}

    def key(name):
        layer = layer_of(name)
        if layer is None:
            return (-1, 0)
        base = name.split("/")[0].split(".")
        return (layer, sub.get(base[3], 4) if len(base) > 3 else 4)
    return sorted(taps, key=key)
