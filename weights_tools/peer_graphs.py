"""The graphs of sherpa-onnx's NeMo folders that NeMo's own export does not have: ``decoder.onnx`` (the prediction
network alone) and ``joiner.onnx`` (the joint alone), and the int8 twins of every graph, read back as NeMo's
weights: onnxruntime's ``quantize_dynamic`` stores a MatMul/Conv weight as uint8 with one float scale and one
uint8 zero point per tensor; ``_float_view`` presents such a graph as its float twin (dequantized weights:
(q - zero_point) * scale) so the float readers of ``weights_tools.onnx_encoder`` and ``onnx_heads`` apply."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import RNNTConfig
from .errors import ModelLoadError, WeightNotFoundError
from .onnx_encoder import linear_source
from .onnx_graph import Graph, scope_matches
from .sources import Source

_LSTM = "decoder.prediction.dec_rnn.lstm"


def read_sherpa_decoder(g: Graph, dequantized: list | None = None) -> tuple[RNNTConfig, dict]:
    """``model.decoder.export``: Embedding + LSTM stack, names relative to the decoder module. In the int8 twin
    the embedding is a uint8 table (Gather + DequantizeLinear) and each LSTM a DynamicQuantizeLSTM with int8
    W [1, in, 4H] and R [1, H, 4H] (transposed against the ONNX LSTM's [1, 4H, in])."""
    embed = next((n for n in g.inits if re.fullmatch(r"(decoder\.)?prediction\.embed\.weight(_quantized)?", n)), None)
    if embed is None:
        raise ModelLoadError(
            f"{g.name}: not sherpa-onnx's NeMo decoder.onnx: no prediction.embed.weight (found {list(g.inits)[:6]})"
        )
    lstms = [n for n in g.nodes if n.op_type in ("LSTM", "DynamicQuantizeLSTM")]
    chain = _lstm_chain(g, lstms)
    sources = {"decoder.prediction.embed.weight": Source(_maybe_dequant(g, embed))}
    for layer, node in enumerate(chain):
        if node.op_type == "DynamicQuantizeLSTM":
            w = _dequant(g, node.input[1], node.input[8], node.input[9], transpose=True)
            r = _dequant(g, node.input[2], node.input[10], node.input[11], transpose=True)
        else:
            w, r = g.inits[node.input[1]], g.inits[node.input[2]]
        b = g.inits[node.input[3]]
        sources[f"{_LSTM}.weight_ih_l{layer}"] = Source(w, "lstm_w")
        sources[f"{_LSTM}.weight_hh_l{layer}"] = Source(r, "lstm_w")
        sources[f"{_LSTM}.bias_ih_l{layer}"] = Source(b, "lstm_b_ih")
        sources[f"{_LSTM}.bias_hh_l{layer}"] = Source(b, "lstm_b_hh")
    rows, hidden = g.inits[embed].dims
    cfg = RNNTConfig(vocab_size=rows - 1, pred_hidden=hidden, pred_rnn_layers=len(chain), joint_hidden=1)
    return cfg, _dequantized_sources(g, sources, dequantized)


def _maybe_dequant(g: Graph, name: str):
    if not name.endswith("_quantized"):
        return g.inits[name]
    base = name[: -len("_quantized")]
    return _dequant(g, name, base + "_scale", base + "_zero_point")


def _dequant(g: Graph, q: str, scale: str, zero_point: str, transpose: bool = False):
    for t in (q, scale, zero_point):
        if t not in g.inits:
            raise WeightNotFoundError(f"{g.name}: expected the quantized initializer {t!r}")
    dims = g.inits[q].dims
    if transpose:
        dims = dims[:-2] + (dims[-1], dims[-2])
    base = q[: -len("_quantized")] if q.endswith("_quantized") else q
    return _Dequant(
        g.inits[q], g.inits[scale], g.inits[zero_point], base, tuple(dims), g.file.path, transpose=transpose
    )


def _lstm_chain(g: Graph, lstms: list) -> list:
    """The LSTM nodes in layer order: layer 0 is not fed by an LSTM, layer k+1 by layer k."""
    if not lstms:
        raise WeightNotFoundError(f"{g.name}: no LSTM node: cannot recover {_LSTM}.*")
    fed_by = {id(n): g.walk_up(n.input[0])[0] for n in lstms}
    first = [n for n in lstms if fed_by[id(n)] is None or fed_by[id(n)] not in lstms]
    if len(first) != 1:
        raise WeightNotFoundError(f"{g.name}: expected one LSTM fed by the embedding, found {len(first)}")
    chain = first
    while True:
        nxt = [n for n in lstms if fed_by[id(n)] is chain[-1]]
        if not nxt:
            break
        chain.append(nxt[0])
    if len(chain) != len(lstms) or not all(scope_matches(n.name, "dec_rnn.lstm") for n in chain):
        raise WeightNotFoundError(f"{g.name}: {len(lstms)} LSTM nodes do not form NeMo's dec_rnn.lstm stack")
    return chain


def read_sherpa_joiner(g: Graph, dequantized: list | None = None) -> tuple[dict, int, int]:
    """``model.joint.export``: enc / pred Linears and joint_net; returns (sources, d_model in, vocab without
    blank)."""
    view = _float_view(g)
    idx = [int(m.group(1)) for n in view.inits if (m := re.fullmatch(r"joint_net\.(\d+)\.bias", n))]
    if "enc.bias" not in view.inits or len(idx) != 1:
        raise ModelLoadError(
            f"{g.name}: not sherpa-onnx's NeMo joiner.onnx: expected enc.bias, pred.bias and one "
            f"joint_net.<N>.bias, found {list(view.inits)[:8]}"
        )
    out = idx[0]
    sources = {
        "joint.enc.weight": linear_source(view, "enc.bias", "enc", "joint.enc.weight"),
        "joint.pred.weight": linear_source(view, "pred.bias", "pred", "joint.pred.weight"),
        f"joint.joint_net.{out}.weight": linear_source(
            view, f"joint_net.{out}.bias", f"joint_net.{out}", f"joint.joint_net.{out}.weight"
        ),
        "joint.enc.bias": Source(view.inits["enc.bias"]),
        "joint.pred.bias": Source(view.inits["pred.bias"]),
        f"joint.joint_net.{out}.bias": Source(view.inits[f"joint_net.{out}.bias"]),
    }
    d_in = sources["joint.enc.weight"].shape[1]
    vocab = sources[f"joint.joint_net.{out}.bias"].shape[0] - 1
    return _dequantized_sources(view, sources, dequantized), d_in, vocab


def _joint_net_index(sources: dict) -> int:
    return next(int(m.group(1)) for n in sources if (m := re.fullmatch(r"joint\.joint_net\.(\d+)\.weight", n)))


@dataclass(frozen=True)
class _Dequant:
    """A uint8 initializer read back as float32: (q - zero_point) * scale."""

    q: object  # TensorRef
    scale: object
    zero_point: object
    name: str
    dims: tuple
    path: Path
    transpose: bool = False  # DynamicQuantizeLSTM stores W and R with the last two axes swapped
    dtype: np.dtype = np.dtype(np.float32)
    data_type: int = 1

    @property
    def size(self) -> int:
        return int(np.prod(self.dims))

    def read(self) -> np.ndarray:
        q = self.q.read().astype(np.int32)
        zp = self.zero_point.read().astype(np.int32)
        a = (q - zp).astype(np.float32) * self.scale.read().astype(np.float32)
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)) if self.transpose else a.reshape(self.dims)


class _FloatOnnx:
    """An OnnxFile look-alike whose graph has the float ops back (for reading an int8 graph with the float
    readers): MatMulInteger / ConvInteger paths collapse to MatMul / Conv on a dequantized weight."""

    def __init__(self, f, nodes, inits):
        import onnx

        self.path = f.path
        self.model = onnx.ModelProto()
        self.model.CopyFrom(f.model)
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)
        self.initializers = inits

    @property
    def graph(self):
        return self.model.graph


def _float_view(g: Graph) -> Graph:
    """The graph with quantize_dynamic's patterns undone; unchanged if it has none.

    quantize_dynamic writes, for a MatMul X @ W: DynamicQuantizeLinear(X) -> (Xq, xs, xz); MatMulInteger(Xq,
    W_quantized, xz, W_zero_point) -> Cast -> Mul(xs * W_scale); and for a Conv: ConvInteger the same way. Here
    each such chain becomes MatMul(X, W) / Conv(X, W, bias) again, with W a dequantizing reference, so that the
    anchors the float readers follow (bias Add <- MatMul, pointwise_conv2 <- ... <- depthwise Conv) are there."""
    import onnx

    integer_ops = [n for n in g.nodes if n.op_type in ("MatMulInteger", "ConvInteger")]
    if not integer_ops:
        return g
    inits = dict(g.inits)
    drop, replace = set(), {}
    for n in integer_ops:
        x_q, w_q = n.input[0], n.input[1]
        dql = g.producer(x_q)
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or w_q not in g.inits:
            raise ModelLoadError(f"{g.name}: {n.op_type} {n.name!r} is not onnxruntime's dynamic quantization pattern")
        base = w_q[: -len("_quantized")] if w_q.endswith("_quantized") else w_q
        scale, zp = g.inits.get(base + "_scale"), g.inits.get(base + "_zero_point")
        if scale is None or zp is None:
            raise ModelLoadError(f"{g.name}: no {base}_scale / {base}_zero_point for {w_q}")
        inits[base] = _Dequant(g.inits[w_q], scale, zp, base, g.inits[w_q].dims, g.file.path)
        # follow the output through Cast and the scale Mul to the tensor the float op produced
        out, chain = n.output[0], [n]
        while True:
            users = g.consumers(out)
            if len(users) != 1 or users[0].op_type not in ("Cast", "Mul"):
                break
            chain.append(users[0])
            out = users[0].output[0]
            if users[0].op_type == "Mul":
                break
        op = "MatMul" if n.op_type == "MatMulInteger" else "Conv"
        attrs = [] if op == "MatMul" else list(n.attribute)
        bias = []
        if op == "Conv":  # ConvInteger has no bias: quantize_dynamic adds it after the Mul
            users = g.consumers(out)
            if len(users) == 1 and users[0].op_type == "Add":
                other = [t for t in users[0].input if t != out]
                b = other[0] if len(other) == 1 else None
                reshape = g.producer(b) if b is not None else None
                if reshape is not None and reshape.op_type == "Reshape" and reshape.input[0] in g.inits:
                    b = reshape.input[0]  # the 1-D bias, reshaped to [1, C, 1] for the Add
                if b in g.inits:
                    bias = [b]
                    chain.append(users[0])
                    out = users[0].output[0]
        name = n.name[: -len("_quant")] if n.name.endswith("_quant") else n.name
        new = onnx.helper.make_node(op, [dql.input[0], base] + bias, [out], name=name)
        new.attribute.extend(attrs)
        replace[id(n)] = new
        drop.update(id(c) for c in chain[1:])
    nodes = []
    for n in g.nodes:
        if id(n) in replace:
            nodes.append(replace[id(n)])
        elif id(n) not in drop and n.op_type != "DynamicQuantizeLinear":
            nodes.append(n)
    return Graph(_FloatOnnx(g.file, nodes, inits))


def _dequantized_sources(g: Graph, sources: dict, dequantized: list | None) -> dict:
    """Record (NeMo name, quantization step) of every source read back from uint8/int8."""
    if dequantized is not None:
        dequantized.extend(
            (name, float(np.max(s.ref.scale.read()))) for name, s in sources.items() if isinstance(s.ref, _Dequant)
        )
    return sources
