"""Intermediate tensors of NeMo's ONNX encoder, found by graph structure and exposed as extra graph outputs, so
the onnxruntime engine can answer ``taps`` like refimpl does.

Each tap is located from a parameter the exporter keeps under its PyTorch name (biases, LayerNorm and Conv
weights), never from node names:
  encoder.pre_encode/output          the Add that consumes ``pre_encode.out.bias``          [B, T, d] (before the drop)
  encoder.layers.i.feed_forward1/output  Add consuming ``layers.i.feed_forward1.linear2.bias``  [B, T, d]
  encoder.layers.i.self_attn/output  Add consuming ``layers.i.self_attn.linear_out.bias``  [B, T, d]
  encoder.layers.i.conv/output       Conv with weight ``layers.i.conv.pointwise_conv2.weight`` [B, d, T] -> [B, T, d]
  encoder.layers.i.feed_forward2/output  Add consuming ``layers.i.feed_forward2.linear2.bias``  [B, T, d]
  encoder.layers.i/output            LayerNormalization with scale ``layers.i.norm_out.weight`` [B, T, d]
The names are those of ``refimpl.model.taps``, so both engines' taps compare key by key.
"""

from __future__ import annotations

import numpy as np
import onnx

from weights_tools.onnx_encoder import graph_prefix
from weights_tools.onnx_file import read_onnx
from weights_tools.onnx_graph import Graph

from ..model import taps as tap_names

# per-layer tap -> (parameter it is found from, relative to the layer, op consuming it)
_ANCHORS = {
    "feed_forward1/output": ("feed_forward1.linear2.bias", "Add"),
    "self_attn/output": ("self_attn.linear_out.bias", "Add"),
    "conv/output": ("conv.pointwise_conv2.weight", "Conv"),
    "feed_forward2/output": ("feed_forward2.linear2.bias", "Add"),
    "output": ("norm_out.weight", "LayerNormalization"),
}
_CHANNELS_FIRST = ("conv/output",)  # taps whose ONNX tensor is [B, d, T]


def _consumer_output(g, init: str, op: str, what: str) -> str:
    hits = [n for n in g.consumers(init) if n.op_type == op]
    if len(hits) != 1:
        raise ValueError(f"{g.name}: expected one {op} consuming {init} for {what}, found {len(hits)}")
    return hits[0].output[0]


def _tap_name(i: int, where: str) -> str:
    return f"{tap_names.layer(i)}/output" if where == "output" else f"{tap_names.layer(i)}.{where}"


def find_taps(encoder_path) -> dict:
    """{tap name: ONNX tensor name} for every tap of the encoder graph at ``encoder_path``."""
    g = Graph(read_onnx(encoder_path))
    p = graph_prefix(g)
    taps = {tap_names.PRE_ENCODE: _consumer_output(g, f"{p}pre_encode.out.bias", "Add", "pre_encode")}
    i = 0
    while f"{p}layers.{i}.norm_out.weight" in g.inits:
        for where in tap_names.ONNX_LAYER_TAPS:
            param, op = _ANCHORS[where]
            taps[_tap_name(i, where)] = _consumer_output(g, f"{p}layers.{i}.{param}", op, tap_names.layer(i))
        i += 1
    return taps


def onnx_tap_value(tap: str, value: np.ndarray) -> np.ndarray:
    """An exposed tensor in refimpl's tap layout ([B, T, d])."""
    return value.transpose(0, 2, 1) if tap.endswith(_CHANNELS_FIRST) else value


def with_tap_outputs(encoder_path, taps: dict) -> bytes:
    """The encoder model with every tap tensor added as a graph output (serialized, for an InferenceSession)."""
    model = onnx.load(str(encoder_path))
    have = {o.name for o in model.graph.output}
    for tensor in taps.values():
        if tensor not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    return model.SerializeToString()
