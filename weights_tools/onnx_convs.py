"""The convolutions of an ONNX encoder: the dw_striding subsampling (factor, channels, causality) and each
layer's depthwise conv (kernel, causal padding, the norm after it, a BatchNorm folded into it), found from the
named weights the exporter keeps and followed through the graph."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import onnx

from .errors import ModelLoadError, WeightNotFoundError
from .onnx_graph import SHAPE_OPS, Graph, scope_matches
from .schema import pre_encode_conv_indices
from .sources import Source

_CONV_PATH_OPS = SHAPE_OPS | {
    "Mul",
    "Sigmoid",
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
}


_NORM_OPS = {"LayerNormalization": "layer_norm", "BatchNormalization": "batch_norm"}


def _conv_node(g: Graph, weight: str, what: str):
    users = [n for n in g.consumers(weight) if n.op_type == "Conv"]
    if len(users) != 1:
        raise WeightNotFoundError(f"{g.name}: expected exactly one Conv using {weight!r} ({what}), found {len(users)}")
    return users[0]


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _subsampling(g: Graph, p: str) -> dict:
    """dw_striding: conv.0 (1 -> C, stride 2), then per further stride-2 stage a depthwise 3x3 (stride 2) and a
    pointwise 1x1. Factor, channels and causality from the Conv nodes and the Pad in front of conv.0."""
    idx = sorted(
        int(m.group(1)) for n in g.inits if (m := re.fullmatch(re.escape(p) + r"pre_encode\.conv\.(\d+)\.weight", n))
    )
    convs = {i: _conv_node(g, f"{p}pre_encode.conv.{i}.weight", f"pre_encode.conv.{i}") for i in idx}
    w = {i: g.inits[f"{p}pre_encode.conv.{i}.weight"].dims for i in idx}
    factor = math.prod(int(_attr(convs[i], "strides", [1, 1])[0]) for i in idx)
    if 0 not in idx or factor < 2:
        raise ModelLoadError(
            f"{g.name}: no strided pre_encode convolutions found (pre_encode.conv indices {idx}); "
            f"refimpl supports dw_striding subsampling"
        )
    channels = w[0][0]
    expected = pre_encode_conv_indices(factor)
    ok = [i for i, _ in expected] == idx and all(
        (kind == "conv" and w[i][1] == 1 and _attr(convs[i], "group", 1) == 1)
        or (kind == "depthwise" and _attr(convs[i], "group", 1) == channels)
        or (kind == "pointwise" and tuple(w[i][2:]) == (1, 1))
        for i, kind in expected
    )
    if not ok:
        raise ModelLoadError(
            f"{g.name}: the pre_encode convolutions (indices {idx}, weights {list(w.values())}) "
            f"are not NeMo's dw_striding subsampling; refimpl supports dw_striding only"
        )
    return {"factor": factor, "channels": channels, "causal": _causal_pre_encode(g, convs[0])}


def _causal_pre_encode(g: Graph, conv) -> bool:
    """CausalConv2D pads time and freq by (k-1, stride-1) with an explicit Pad; a plain Conv2d pads (k-1)//2
    on both sides through its ``pads`` attribute."""
    k, s = _attr(conv, "kernel_shape")[0], _attr(conv, "strides")[0]
    pad = g.producer(conv.input[0])
    if pad is not None and pad.op_type == "Pad":
        v = g.const(pad.input[1])
        if v is not None and len(v) == 8:
            return (int(v[2]), int(v[6])) == (k - 1, s - 1)
    return False


@dataclass(frozen=True)
class _DWConv:
    node: object
    kernel: int
    context: tuple
    norm: str
    weight: Source
    bias: Source | None


def _depthwise_conv(g: Graph, p: str, i: int) -> _DWConv:
    """The depthwise conv of layer i, found upstream of the named pointwise_conv2 (through swish and the conv
    norm); the norm met on the way tells the conv_norm_type (none left: BatchNorm folded into the conv)."""
    pw2 = _conv_node(g, f"{p}layers.{i}.conv.pointwise_conv2.weight", f"layers.{i}.conv.pointwise_conv2")
    node, passed = g.walk_up(pw2.input[0], through=_CONV_PATH_OPS)
    module = f"layers.{i}.conv.depthwise_conv"
    if node is None or node.op_type != "Conv" or node.input[1] not in g.inits:
        raise WeightNotFoundError(
            f"{g.name}: cannot find encoder.{module}: no Conv with a weight upstream of {pw2.name or 'pointwise_conv2'}"
        )
    if not scope_matches(node.name, module):
        raise WeightNotFoundError(f"{g.name}: the Conv upstream of pointwise_conv2 is {node.name!r}, not {module}")
    norms = [n.op_type for n in passed if "Normalization" in n.op_type]
    if len(norms) > 1 or (norms and norms[0] not in _NORM_OPS):
        raise ModelLoadError(
            f"{g.name}: layer {i} conv module uses {norms}; refimpl supports layer_norm and batch_norm"
        )
    norm = _NORM_OPS[norms[0]] if norms else "folded_batch_norm"
    weight = g.inits[node.input[1]]
    kernel = weight.dims[-1]
    bias = Source(g.inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in g.inits else None
    return _DWConv(node, kernel, _conv_context(g, node, kernel), norm, Source(weight), bias)


def _conv_context(g: Graph, conv, kernel: int) -> tuple:
    """(left, right) context of the depthwise conv. With a cache the graph pads (0, right) and concatenates
    the cache on the left; without, it pads (left, right) (or uses the Conv's own pads)."""
    attr = _attr(conv, "pads", [0, 0])
    src = g.producer(conv.input[0])
    cached = src is not None and src.op_type == "Concat"
    if cached:
        src = next(
            (g.producer(t) for t in src.input if g.producer(t) is not None and g.producer(t).op_type == "Pad"), None
        )
    pads = (0, 0)
    if src is not None and src.op_type == "Pad":
        v = g.const(src.input[1])
        if v is None or len(v) != 6:
            raise ModelLoadError(f"{g.name}: cannot read the pads of {src.name!r} in front of the depthwise conv")
        pads = (int(v[2]), int(v[5]))
    left, right = pads[0] + int(attr[0]), pads[1] + int(attr[1])
    if cached:
        left = kernel - 1 - right
    if left + right + 1 != kernel:
        raise ModelLoadError(
            f"{g.name}: depthwise conv {conv.name!r} pads ({left}, {right}) do not fit kernel {kernel}"
        )
    return (left, right)
