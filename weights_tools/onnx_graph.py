"""An index over one ONNX graph: who produces and who consumes each tensor, and the value of small constant
sub-graphs (shape constants, pads, mask sizes), folded with NumPy. Used to follow the graph from known anchors;
never to count or order initializers."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from .onnx_file import OnnxFile

_SMALL = 64  # initializers with at most this many elements may be folded as constants
# ops that only move or relabel data: followed when walking from an anchor to the node that holds a weight
SHAPE_OPS = frozenset({"Transpose", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast", "Flatten"})


class Graph:
    """Producers, consumers and foldable constants of one ONNX graph (names as they appear in the file)."""

    def __init__(self, onnx_file: OnnxFile):
        self.file = onnx_file
        self.name = onnx_file.path.name
        g = onnx_file.graph
        self.nodes = list(g.node)
        self.inputs = {v.name: v for v in g.input}
        self.outputs = {v.name: v for v in g.output}
        self.output_names = [v.name for v in g.output]
        self.inits = onnx_file.initializers
        self._producer = {}
        self._consumers = defaultdict(list)
        for node in self.nodes:
            for out in node.output:
                if out:
                    self._producer[out] = node
            for inp in node.input:
                if inp:
                    self._consumers[inp].append(node)
        self._folded: dict = {}

    def producer(self, tensor: str):
        return self._producer.get(tensor)

    def consumers(self, tensor: str) -> list:
        return self._consumers.get(tensor, [])

    def input_dims(self, name: str) -> list:
        """Static dims as ints, symbolic ones as their names (None if unnamed)."""
        return value_dims(self.inputs[name])

    def const(self, tensor: str):
        """The value of ``tensor`` if it depends on constants only (small initializers, Constant nodes and
        shape arithmetic on them), else None."""
        if tensor not in self._folded:
            self._folded[tensor] = None  # guards against cycles
            self._folded[tensor] = self._fold(tensor)
        return self._folded[tensor]

    def const_int(self, tensor: str):
        """A scalar (or one-element) integer constant as a Python int, else None."""
        v = self.const(tensor)
        if v is None or v.size != 1 or v.dtype.kind not in "iu":
            return None
        return int(v.reshape(-1)[0])

    def const_tensor_dims(self, tensor: str):
        """Dims of a constant tensor (initializer or Constant node) without materialising it, else None."""
        if tensor in self.inits:
            return self.inits[tensor].dims
        node = self.producer(tensor)
        if node is not None and node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    return tuple(int(d) for d in a.t.dims)
        return None

    def walk_up(self, tensor: str, through=SHAPE_OPS, max_hops: int = 12):
        """The first node producing ``tensor`` whose op is not in ``through`` (following input 0), with the ops
        passed on the way."""
        passed = []
        for _ in range(max_hops):
            node = self.producer(tensor)
            if node is None or node.op_type not in through:
                return node, passed
            passed.append(node)
            tensor = node.input[0]
        return None, passed

    # --- folding ----------------------------------------------------------------------------------------
    def _fold(self, tensor: str):
        if tensor in self.inits:
            ref = self.inits[tensor]
            return ref.read() if ref.size <= _SMALL else None
        node = self.producer(tensor)
        if node is None:
            return None
        if node.op_type == "Constant":
            return _constant_node_value(node)
        fn = _FOLD.get(node.op_type)
        if fn is None:
            return None
        args = [self.const(i) if i else None for i in node.input]
        if not args or any(a is None for i, a in zip(node.input, args) if i):
            return None  # depends on a graph input (or on an op this folder does not know)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        try:
            return np.asarray(fn(args, attrs))
        except (ValueError, IndexError, TypeError, KeyError):
            return None  # not a shape computation this folder understands


def value_dims(value_info) -> list:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None))
    return dims


def value_dtype(value_info) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).name


def _constant_node_value(node):
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_int", "value_ints"):
            return np.asarray(onnx.helper.get_attribute_value(a), np.int64)
        if a.name in ("value_float", "value_floats"):
            return np.asarray(onnx.helper.get_attribute_value(a), np.float32)
    return None


def _slice(args, attrs):
    data, starts, ends = args[0], args[1], args[2]
    axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a)] = slice(int(s), int(e), int(st))
    return data[tuple(index)]


def _reshape(args, attrs):
    data, shape = args
    shape = [int(data.shape[i]) if (s == 0 and not attrs.get("allowzero", 0)) else int(s) for i, s in enumerate(shape)]
    return data.reshape(shape)


def _int_div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        return (np.trunc(a / b)).astype(np.result_type(a, b))
    return a / b


def _unsqueeze(args, attrs):
    axes = args[1] if len(args) > 1 and args[1] is not None else attrs["axes"]
    out = args[0]
    for a in sorted(int(x) % (out.ndim + len(axes)) for x in axes):
        out = np.expand_dims(out, a)
    return out


def _squeeze(args, attrs):
    axes = args[1] if len(args) > 1 and args[1] is not None else attrs.get("axes")
    return np.squeeze(args[0], axis=None if axes is None else tuple(int(a) for a in axes))


_FOLD = {
    "Identity": lambda a, k: a[0],
    "Cast": lambda a, k: a[0].astype(onnx.helper.tensor_dtype_to_np_dtype(k["to"])),
    "Concat": lambda a, k: np.concatenate([np.atleast_1d(x) for x in a], axis=k["axis"]),
    "Reshape": _reshape,
    "Slice": _slice,
    "Transpose": lambda a, k: np.transpose(a[0], k.get("perm")),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "ConstantOfShape": lambda a, k: np.full(
        [int(s) for s in a[0]], numpy_helper.to_array(k["value"]).reshape(-1)[0] if "value" in k else np.float32(0)
    ),
    "Neg": lambda a, k: -a[0],
    "Add": lambda a, k: a[0] + a[1],
    "Sub": lambda a, k: a[0] - a[1],
    "Mul": lambda a, k: a[0] * a[1],
    "Div": lambda a, k: _int_div(a[0], a[1]),
    "Gather": lambda a, k: np.take(a[0], a[1], axis=k.get("axis", 0)),
    "Range": lambda a, k: np.arange(a[0], a[1], a[2]),
}


def scope_matches(node_name: str, module: str) -> bool:
    """True if the exporter's node name (``/layers.0/self_attn/linear_q/MatMul``) lies in ``module``
    (``layers.0.self_attn.linear_q``); unnamed nodes pass. Numeric parts join their parent, as torch names
    scopes (``layers.0``, ``joint_net.2``)."""
    if not node_name:
        return True
    want = re.sub(r"\.(\d+)(?=\.|$)", r"#\1", module).split(".")
    want = [w.replace("#", ".") for w in want]
    have = node_name.split("/")
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))
