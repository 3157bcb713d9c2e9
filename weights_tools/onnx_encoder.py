"""The ConformerEncoder inside an ONNX graph (``encoder-*.onnx``, or the encoder part of a CTC single-graph
export): its configuration, read from the graph's structure and baked-in constants, and where each weight is.

Every anonymous weight (``onnx::MatMul_<n>``, a folded ``onnx::Conv_<n>``) is found by following the graph from
an anchor: the named bias its MatMul feeds, ``pos_bias_v`` for ``linear_pos``, the named ``pointwise_conv2`` for
the depthwise conv. Node names (``/layers.3/self_attn/linear_q/MatMul``) are used as a cross-check when present.
"""

from __future__ import annotations

import math
import re

from .config import EncoderConfig
from .errors import ModelLoadError, WeightNotFoundError
from .onnx_convs import _depthwise_conv, _subsampling
from .onnx_graph import SHAPE_OPS, Graph, scope_matches
from .onnx_lookahead import CACHE_INPUTS, Lookahead, read_lookahead
from .schema import encoder_shapes
from .sources import Source

LAYER_LINEARS = (
    "feed_forward1.linear1",
    "feed_forward1.linear2",
    "self_attn.linear_q",
    "self_attn.linear_k",
    "self_attn.linear_v",
    "self_attn.linear_out",
    "self_attn.linear_pos",
    "feed_forward2.linear1",
    "feed_forward2.linear2",
)


def read_encoder(g: Graph) -> tuple[EncoderConfig, dict, Lookahead]:
    """(config with att_context_sizes=None, NeMo name -> Source, look-ahead evidence)."""
    p = graph_prefix(g)
    n_layers = _n_layers(g, p)
    linears = {"pre_encode.out": _linear(g, p, "pre_encode.out")}
    for i in range(n_layers):
        for lin in LAYER_LINEARS:
            linears[f"layers.{i}.{lin}"] = _linear(g, p, f"layers.{i}.{lin}")
    convs = [_depthwise_conv(g, p, i) for i in range(n_layers)]
    sub = _subsampling(g, p)
    d_model = g.inits[p + "pre_encode.out.bias"].dims[0]
    n_heads, d_k = _heads(g, p, linears["layers.0.self_attn.linear_q"])
    look = read_lookahead(g)
    conv0 = convs[0]
    cfg = EncoderConfig(
        feat_in=_feat_in(g),
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_ff=linears["layers.0.feed_forward1.linear1"].shape[0],
        conv_kernel_size=conv0.kernel,
        conv_context_size=conv0.context,
        conv_norm_type=conv0.norm,
        subsampling="dw_striding",
        subsampling_factor=sub["factor"],
        subsampling_conv_channels=sub["channels"],
        causal_downsampling=sub["causal"],
        att_context_size=look.att_context_size,
        att_context_sizes=None,
        xscaling=_xscaling(g, p, d_model),
        pos_emb_max_len=_pe_rows(g, linears["layers.0.self_attn.linear_pos"]),
        use_bias=(p + "layers.0.self_attn.linear_q.bias") in g.inits,
        has_cache_io=all(n in g.inputs for n in CACHE_INPUTS),
    )
    if d_k * n_heads != d_model:
        raise ModelLoadError(f"{g.name}: attention splits d_model {d_model} into {n_heads} heads of {d_k}")
    _check_io_dims(g, cfg)
    sources = _sources(g, p, cfg, linears, convs)
    return cfg, sources, look


def graph_prefix(g: Graph) -> str:
    """'' when the graph is the encoder itself (``layers.0...``), 'encoder.' in a whole-model export."""
    for p in ("", "encoder."):
        if p + "pre_encode.out.bias" in g.inits:
            return p
    names = list(g.inits)[:8]
    raise ModelLoadError(
        f"{g.name}: no FastConformer encoder found: expected an initializer named 'pre_encode.out.bias' "
        f"(encoder-*.onnx) or 'encoder.pre_encode.out.bias' (CTC export), found {names}"
        f"{' ...' if len(g.inits) > 8 else ''}. "
        f"Export the encoder with NeMo's model.export()"
    )


# --- anchors ------------------------------------------------------------------------------------------------


def linear_source(g: Graph, bias: str | None, module: str, what: str) -> Source:
    """The weight of a Linear, from the MatMul (or Gemm) feeding the Add that consumes its named bias, or
    (no bias) from the MatMul named after the module."""
    if bias is not None and bias in g.inits:
        users = [n for n in g.consumers(bias) if n.op_type in ("Add", "Gemm")]
        if len(users) != 1:
            raise WeightNotFoundError(
                f"{g.name}: cannot recover {what}: expected exactly one Add/Gemm consuming {bias!r}, found {len(users)}"
            )
        add = users[0]
        if add.op_type == "Gemm":
            trans_b = next((a.i for a in add.attribute if a.name == "transB"), 0)
            return _checked(g, add, add.input[1], module, what, "copy" if trans_b else "transpose")
        other = [t for t in add.input if t != bias]
        mm = g.producer(other[0]) if len(other) == 1 else None
        if mm is None or mm.op_type != "MatMul":
            raise WeightNotFoundError(
                f"{g.name}: cannot recover {what}: the Add consuming {bias!r} is not fed by "
                f"a MatMul (found {mm.op_type if mm is not None else 'a graph input'})"
            )
        return _checked(g, mm, mm.input[1], module, what, "transpose")
    hits = [
        n
        for n in g.nodes
        if n.op_type == "MatMul" and n.name and scope_matches(n.name, module) and n.input[1] in g.inits
    ]
    if len(hits) != 1:
        raise WeightNotFoundError(
            f"{g.name}: cannot recover {what}: it has no bias to anchor on, and "
            f"{len(hits)} MatMul nodes with a weight lie in scope {module!r} (expected 1)"
        )
    return _checked(g, hits[0], hits[0].input[1], module, what, "transpose")


def _checked(g: Graph, node, weight: str, module: str, what: str, transform: str) -> Source:
    if weight not in g.inits:
        raise WeightNotFoundError(
            f"{g.name}: cannot recover {what}: {node.op_type} {node.name!r} takes "
            f"{weight!r}, which is not an initializer"
        )
    if not scope_matches(node.name, module):
        raise WeightNotFoundError(
            f"{g.name}: cannot recover {what}: the graph leads to {node.op_type} "
            f"{node.name!r}, whose name says it belongs to another module than {module!r}"
        )
    if len(g.inits[weight].dims) != 2:
        raise WeightNotFoundError(
            f"{g.name}: {what} should be 2-D, but {weight!r} has dims {list(g.inits[weight].dims)}"
        )
    return Source(g.inits[weight], transform)


def _linear(g: Graph, p: str, module: str) -> Source:
    what = f"encoder.{module}.weight"
    if module.endswith("linear_pos"):
        return _linear_pos(g, p, module, what)
    return linear_source(g, f"{p}{module}.bias", module, what)


def _linear_pos(g: Graph, p: str, module: str, what: str) -> Source:
    """linear_pos has no bias. Anchor: q + pos_bias_v is multiplied (matrix_bd) with the reshaped
    linear_pos(pos_emb); follow Add -> MatMul and back up the other operand to its MatMul."""
    anchor = module.replace("linear_pos", "pos_bias_v")
    adds = [n for n in g.consumers(p + anchor) if n.op_type == "Add"]
    for add in adds:
        tensor = add.output[0]
        for _ in range(4):
            users = g.consumers(tensor)
            if len(users) != 1 or users[0].op_type not in SHAPE_OPS:
                break
            tensor = users[0].output[0]
        for mm in g.consumers(tensor):
            if mm.op_type != "MatMul":
                continue
            other = mm.input[1] if mm.input[0] == tensor else mm.input[0]
            src, _ = g.walk_up(other)
            if src is not None and src.op_type == "MatMul" and src.input[1] in g.inits:
                return _checked(g, src, src.input[1], module, what, "transpose")
    return linear_source(g, None, module, what)  # fall back on the node name


# --- structure ----------------------------------------------------------------------------------------------
def _n_layers(g: Graph, p: str) -> int:
    idx = sorted({int(m.group(1)) for n in g.inits if (m := re.match(re.escape(p) + r"layers\.(\d+)\.", n))})
    if not idx or idx != list(range(len(idx))):
        raise ModelLoadError(f"{g.name}: encoder layers should be numbered 0..n-1, found indices {idx}")
    return len(idx)


def _feat_in(g: Graph) -> int:
    if "audio_signal" not in g.inputs:
        raise ModelLoadError(f"{g.name}: no 'audio_signal' input (found {list(g.inputs)}): not a NeMo encoder export")
    dims = g.input_dims("audio_signal")
    if len(dims) != 3 or not isinstance(dims[1], int):
        raise ModelLoadError(f"{g.name}: audio_signal should be [B, feat_in, T] with a static feat_in, found {dims}")
    return dims[1]


def _heads(g: Graph, p: str, q: Source) -> tuple[int, int]:
    """n_heads and d_k from the Reshape that splits linear_q's output into [B, T, H, d_k] (its shape is a Concat
    whose last two parts are constants), cross-checked with pos_bias_u's shape."""
    mm = next(n for n in g.nodes if n.op_type in ("MatMul", "Gemm") and n.input[1] == q.ref.name)
    out = mm.output[0]
    bias_add = [n for n in g.consumers(out) if n.op_type == "Add"]
    if len(bias_add) == 1:
        out = bias_add[0].output[0]
    shapes = []
    for r in g.consumers(out):
        if r.op_type != "Reshape":
            continue
        full = g.const(r.input[1])
        if full is not None:
            shapes.append(tuple(int(x) for x in full[-2:]))
            continue
        cat = g.producer(r.input[1])
        if cat is not None and cat.op_type == "Concat" and len(cat.input) == 4:
            tail = [g.const_int(t) for t in cat.input[2:]]
            if None not in tail:
                shapes.append(tuple(tail))
    u = g.inits[p + "layers.0.self_attn.pos_bias_u"].dims
    if len(shapes) != 1:
        raise ModelLoadError(
            f"{g.name}: cannot read the number of heads: expected one Reshape of linear_q's "
            f"output with constant [.., H, d_k], found {shapes}"
        )
    if shapes[0] != tuple(u):
        raise ModelLoadError(
            f"{g.name}: attention Reshape gives (n_heads, d_k) = {shapes[0]}, but pos_bias_u has shape {list(u)}"
        )
    return shapes[0]


def _xscaling(g: Graph, p: str, d_model: int) -> bool:
    """x * sqrt(d_model) in front of layer 0 (RelPositionalEncoding with xscale)."""
    ln = next(
        (n for n in g.consumers(p + "layers.0.norm_feed_forward1.weight") if n.op_type == "LayerNormalization"), None
    )
    mul = g.producer(ln.input[0]) if ln is not None else None
    if mul is None or mul.op_type != "Mul":
        return False
    scale = [g.const(t) for t in mul.input if g.const(t) is not None]
    if len(scale) != 1 or scale[0].size != 1:
        return False
    if not math.isclose(float(scale[0].reshape(-1)[0]), math.sqrt(d_model), rel_tol=1e-6):
        raise ModelLoadError(
            f"{g.name}: x is scaled by {float(scale[0].reshape(-1)[0])} before layer 0, "
            f"expected sqrt(d_model) = {math.sqrt(d_model)}"
        )
    return True


def _pe_rows(g: Graph, linear_pos: Source) -> int:
    """The positional table is a (1, 2N-1, d_model) constant sliced per call; N = the table's max length
    (NeMo may have extended it past pos_emb_max_len before export). Default 5000 if the table is not found."""
    mm = next((n for n in g.nodes if n.op_type == "MatMul" and n.input[1] == linear_pos.ref.name), None)
    tensor = mm.input[0] if mm is not None else None
    for _ in range(6):
        if tensor is None:
            break
        dims = g.const_tensor_dims(tensor)
        if dims is not None:
            return (dims[1] + 1) // 2 if len(dims) == 3 else 5000
        node = g.producer(tensor)
        tensor = node.input[0] if node is not None and node.op_type in SHAPE_OPS | {"Slice"} else None
    return 5000


def pe_table_name(g: Graph) -> str | None:
    """Name of the positional table tensor if it is an initializer (it is a Constant node in NeMo's export)."""
    for name, ref in g.inits.items():
        if (
            len(ref.dims) == 3
            and ref.dims[0] == 1
            and ref.dims[1] % 2 == 1
            and any(n.op_type == "Slice" for n in g.consumers(name))
        ):
            return name
    return None


# --- look-ahead -----------------------------------------------------------------------------------------------


def _check_io_dims(g: Graph, cfg: EncoderConfig) -> None:
    want = {
        "cache_last_channel": {1: cfg.n_layers, 3: cfg.d_model},
        "cache_last_time": {1: cfg.n_layers, 2: cfg.d_model},
    }
    for name, dims in want.items():
        if name not in g.inputs:
            continue
        have = g.input_dims(name)
        for axis, value in dims.items():
            if len(have) != 4 or (isinstance(have[axis], int) and have[axis] != value):
                raise ModelLoadError(
                    f"{g.name}: input {name} has shape {have}, expected [B, {cfg.n_layers}, ...] "
                    f"with {value} at axis {axis} (n_layers {cfg.n_layers}, d_model {cfg.d_model})"
                )
    if "outputs" in g.outputs:
        d = g.outputs["outputs"].type.tensor_type.shape.dim
        if len(d) == 3 and d[1].HasField("dim_value") and d[1].dim_value != cfg.d_model:
            raise ModelLoadError(f"{g.name}: output 'outputs' has {d[1].dim_value} channels, d_model is {cfg.d_model}")


# --- weights ------------------------------------------------------------------------------------------------
def _sources(g: Graph, p: str, cfg: EncoderConfig, linears: dict, convs: list) -> dict:
    """NeMo name -> Source for every encoder parameter of the schema."""
    out = {}
    for name in encoder_shapes(cfg):
        rel = name[len("encoder.") :]
        module, leaf = rel.rsplit(".", 1)
        if module in linears and leaf == "weight":
            out[name] = linears[module]
        elif module.endswith("conv.depthwise_conv") and cfg.conv_norm_type == "folded_batch_norm":
            conv = convs[int(rel.split(".")[1])]
            out[name] = conv.weight if leaf == "weight" else conv.bias
        elif p + rel in g.inits:
            out[name] = Source(g.inits[p + rel])
        else:
            raise WeightNotFoundError(f"{g.name}: {name} not found: expected an initializer named {p + rel!r}")
        if out[name] is None:
            raise WeightNotFoundError(f"{g.name}: {name} not found: the folded depthwise conv has no bias input")
    return out
