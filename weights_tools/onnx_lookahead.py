"""The look-ahead an ONNX encoder was exported for, read from the constants baked into its graph: the output
time Slice and the encoded_lengths Clip (valid_out_len = R + 1), the chunked_limited mask (chunk size and left
chunks) and the cache Slice/Clip (the cache size). Several independent pieces of evidence must agree."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import IncompatibleModelError
from .onnx_graph import SHAPE_OPS, Graph

CACHE_INPUTS = ("cache_last_channel", "cache_last_time", "cache_last_channel_len")  # NeMo's export with cache support


@dataclass(frozen=True)
class Lookahead:
    """What the graph says about the look-ahead it was exported for, and where each number came from."""

    att_context_size: tuple
    evidence: dict  # e.g. {"output slice (valid_out_len)": 14, "chunked mask chunk size": 14, ...}


def read_lookahead(g: Graph) -> Lookahead:
    """(left, right) attention context this graph was exported for, from four independent baked-in constants:
    the output Slice length and the encoded_lengths Clip (valid_out_len = R + 1), the chunked_limited mask
    (chunk size R + 1, left_chunks = left // (R + 1)), the cache_last_channel_next Slice and the
    cache_last_channel_next_len Clip (the cache size = left). Without cache I/O only the mask is there; the left
    context is then left_chunks * chunk size (NeMo requires left % (R + 1) == 0 for chunked_limited)."""
    ev = {}
    mask = _chunked_mask(g)
    if mask is not None:
        ev["chunked mask chunk size (R+1)"], ev["chunked mask left_chunks"] = mask
    out_len = _output_slice_len(g)
    if out_len is not None:
        ev["output time Slice (valid_out_len = R+1)"] = out_len
    clip = _clip_max(g, "encoded_lengths")
    if clip is not None:
        ev["encoded_lengths Clip max (valid_out_len)"] = clip
    cache_clip = _clip_max(g, "cache_last_channel_next_len")
    if cache_clip is not None:
        ev["cache_last_channel_next_len Clip max (cache size)"] = cache_clip
    cache_slice = _cache_slice(g)
    if cache_slice is not None:
        ev["cache_last_channel_next Slice (cache size)"] = cache_slice
    cached = all(n in g.inputs for n in CACHE_INPUTS)
    return Lookahead(_decide(g, ev, cached), ev)


def _decide(g: Graph, ev: dict, cached: bool) -> tuple:
    lens = {v for k, v in ev.items() if "valid_out_len" in k}
    caches = {v for k, v in ev.items() if "cache size" in k}
    cs, left_chunks = ev.get("chunked mask chunk size (R+1)"), ev.get("chunked mask left_chunks")

    def fail(why):
        raise IncompatibleModelError(
            f"{g.name}: cannot tell the look-ahead this encoder was exported for: {why}. Constants found: {ev}"
        )

    if cs is None:
        fail(
            "no chunked_limited attention mask in the graph (refimpl supports att_context_style "
            "chunked_limited, which NeMo's cache-aware streaming models use)"
        )
    if not cached:
        return (left_chunks * cs, cs - 1)
    if len(lens) != 1:
        fail(f"the output length constants disagree or are missing ({sorted(lens)})")
    if len(caches) != 1:
        fail(f"the cache size constants disagree or are missing ({sorted(caches)})")
    valid, left = lens.pop(), caches.pop()
    if valid != cs:
        fail(
            f"the output keeps {valid} frames (R = {valid - 1}) but the attention mask uses chunks of {cs} "
            f"(R = {cs - 1})"
        )
    if left // cs != left_chunks:
        fail(f"cache size {left} with chunks of {cs} gives {left // cs} left chunks, the mask says {left_chunks}")
    return (left, valid - 1)


def _chunked_mask(g: Graph):
    """(chunk size, left_chunks) of NeMo's chunked_limited mask: idx = Range(T) // cs; diff = idx[:, None] -
    idx[None, :]; visible = (diff <= left_chunks) & (diff >= 0). Found from the LessOrEqual back to the Range."""
    found = set()
    for node in g.nodes:
        if node.op_type != "LessOrEqual" or g.const_int(node.input[1]) is None:
            continue
        sub, _ = g.walk_up(node.input[0], through={"Cast"})
        if sub is None or sub.op_type != "Sub":
            continue
        a, _ = g.walk_up(sub.input[0], through={"Cast", "Unsqueeze"})
        b, _ = g.walk_up(sub.input[1], through={"Cast", "Unsqueeze"})
        if a is None or a is not b:
            continue
        if a.op_type == "Div":
            cs = g.const_int(a.input[1])
            rng, _ = g.walk_up(a.input[0], through={"Cast"})
        else:
            cs, rng = 1, a  # a division by 1 may have been folded away
        if cs is not None and rng is not None and rng.op_type == "Range":
            found.add((cs, g.const_int(node.input[1])))
    if len(found) > 1:
        raise IncompatibleModelError(f"{g.name}: several chunked attention masks with different sizes: {sorted(found)}")
    return found.pop() if found else None


def _output_slice_len(g: Graph):
    """valid_out_len: the constant end of the time Slice on the first output (through the CTC head if any)."""
    node = g.producer(g.output_names[0])
    for _ in range(6):
        if node is None or node.op_type not in SHAPE_OPS | {"LogSoftmax", "Softmax", "Conv"}:
            break
        node = g.producer(node.input[0])
    if node is None or node.op_type != "Slice" or len(node.input) < 3:
        return None
    starts, ends = g.const(node.input[1]), g.const(node.input[2])
    steps = g.const(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if starts is None or ends is None or starts.size != 1 or int(starts[0]) != 0:
        return None
    if (steps is not None and int(steps.reshape(-1)[0]) != 1) or not 0 < int(ends[0]) < 2**31:
        return None
    return int(ends[0])


def _clip_max(g: Graph, output: str):
    node = g.producer(output) if output in g.outputs else None
    if node is None or node.op_type != "Clip" or len(node.input) < 3 or not node.input[2]:
        return None
    return g.const_int(node.input[2])


def _cache_slice(g: Graph):
    if "cache_last_channel_next" not in g.outputs:
        return None
    node, _ = g.walk_up("cache_last_channel_next", through={"Transpose", "Identity"})
    if node is None or node.op_type != "Slice":
        return None
    starts = g.const(node.input[1])
    if starts is None or starts.size != 1 or int(starts[0]) >= 0:
        return None
    return -int(starts[0])
