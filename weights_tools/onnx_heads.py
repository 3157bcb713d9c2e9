"""The decoding heads inside ONNX graphs: NeMo's ``decoder_joint-*.onnx`` (RNNTDecoder LSTM + RNNTJoint) and
the CTC head (``ConvASRDecoder``) of a single-graph CTC export."""

from __future__ import annotations

import re

from .config import CTC_MODULES, RNNTConfig
from .errors import ModelLoadError, WeightNotFoundError
from .onnx_encoder import linear_source, scope_matches
from .onnx_graph import Graph
from .schema import ctc_shapes, rnnt_shapes
from .sources import Source

_EMBED = "decoder.prediction.embed.weight"
_LSTM = "decoder.prediction.dec_rnn.lstm"


def read_decoder_joint(g: Graph) -> tuple[RNNTConfig, dict, int]:
    """(config, NeMo name -> Source, d_model the joint expects from the encoder)."""
    if _EMBED not in g.inits or "joint.enc.bias" not in g.inits:
        raise ModelLoadError(
            f"{g.name}: not a NeMo decoder_joint export: expected initializers {_EMBED!r} and "
            f"'joint.enc.bias', found {list(g.inits)[:8]}"
        )
    out_idx = _joint_net_index(g)
    lstms = _lstm_chain(g)
    embed = g.inits[_EMBED].dims
    enc = linear_source(g, "joint.enc.bias", "joint.enc", "joint.enc.weight")
    pred = linear_source(g, "joint.pred.bias", "joint.pred", "joint.pred.weight")
    out = linear_source(
        g, f"joint.joint_net.{out_idx}.bias", f"joint_net.{out_idx}", f"joint.joint_net.{out_idx}.weight"
    )
    cfg = RNNTConfig(
        vocab_size=g.inits[f"joint.joint_net.{out_idx}.bias"].dims[0] - 1,
        pred_hidden=embed[1],
        pred_rnn_layers=len(lstms),
        joint_hidden=g.inits["joint.enc.bias"].dims[0],
    )
    if embed[0] != cfg.vocab_size + 1:
        raise ModelLoadError(
            f"{g.name}: the embedding has {embed[0]} rows but the joint emits "
            f"{cfg.vocab_size + 1} classes (vocab + blank)"
        )
    sources = {
        _EMBED: Source(g.inits[_EMBED]),
        "joint.enc.weight": enc,
        "joint.pred.weight": pred,
        f"joint.joint_net.{out_idx}.weight": out,
    }
    for name in ("joint.enc.bias", "joint.pred.bias", f"joint.joint_net.{out_idx}.bias"):
        sources[name] = Source(g.inits[name])
    for layer, node in enumerate(lstms):
        sources.update(_lstm_sources(g, node, layer))
    want = rnnt_shapes(cfg, enc.shape[1], out_idx)
    if set(want) != set(sources):
        raise WeightNotFoundError(
            f"{g.name}: decoder_joint weights found {sorted(set(sources) ^ set(want))} differ from the architecture's"
        )
    return cfg, sources, enc.shape[1]


def _joint_net_index(g: Graph) -> int:
    idx = [int(m.group(1)) for n in g.inits if (m := re.fullmatch(r"joint\.joint_net\.(\d+)\.bias", n))]
    if len(idx) != 1:
        raise ModelLoadError(f"{g.name}: expected one joint.joint_net.<N>.bias (the output Linear), found {idx}")
    return idx[0]


def _lstm_chain(g: Graph) -> list:
    """The LSTM nodes in layer order: layer 0 reads the embedding, layer k+1 reads layer k's output."""
    lstms = [n for n in g.nodes if n.op_type == "LSTM"]
    if not lstms:
        raise WeightNotFoundError(f"{g.name}: no LSTM node: cannot recover {_LSTM}.*")
    prev = {}  # output name of an LSTM -> output name of the LSTM feeding it (None: fed by the embedding)
    for n in lstms:
        src, _ = g.walk_up(n.input[0])
        prev[n.output[0]] = src.output[0] if src is not None and src.op_type == "LSTM" else None
    firsts = [n for n in lstms if prev[n.output[0]] is None]
    if len(firsts) != 1:
        raise WeightNotFoundError(f"{g.name}: expected one LSTM fed by the embedding, found {len(firsts)}")
    after = {prev[n.output[0]]: n for n in lstms if prev[n.output[0]] is not None}
    chain = firsts
    while chain[-1].output[0] in after:
        chain.append(after[chain[-1].output[0]])
    if len(chain) != len(lstms):
        raise WeightNotFoundError(f"{g.name}: {len(lstms)} LSTM nodes do not form one stack")
    for n in chain:
        if not scope_matches(n.name, "dec_rnn.lstm"):
            raise WeightNotFoundError(f"{g.name}: LSTM node {n.name!r} is not in decoder.prediction.dec_rnn.lstm")
    return chain


def _lstm_sources(g: Graph, node, layer: int) -> dict:
    """ONNX LSTM inputs W [1, 4H, X], R [1, 4H, H], B [1, 8H] -> PyTorch weight_ih/weight_hh/bias_ih/bias_hh."""
    if len(node.input) < 4 or any(t not in g.inits for t in node.input[1:4]):
        raise WeightNotFoundError(
            f"{g.name}: LSTM {node.name!r} (layer {layer}) does not take W, R and B as initializers"
        )
    w, r, b = (g.inits[t] for t in node.input[1:4])
    return {
        f"{_LSTM}.weight_ih_l{layer}": Source(w, "lstm_w"),
        f"{_LSTM}.weight_hh_l{layer}": Source(r, "lstm_w"),
        f"{_LSTM}.bias_ih_l{layer}": Source(b, "lstm_b_ih"),
        f"{_LSTM}.bias_hh_l{layer}": Source(b, "lstm_b_hh"),
    }


def read_ctc_head(g: Graph) -> tuple[int, dict, str] | None:
    """(vocab size, NeMo name -> Source, prefix) of the CTC head in a single-graph export, or None if absent.
    The head is a 1x1 Conv whose weight is named ``<prefix>.decoder_layers.0.weight`` (``ctc_decoder`` in hybrid
    models, ``decoder`` in CTC-only ones)."""
    names = [n for n in g.inits if n.endswith("decoder_layers.0.weight")]
    if not names:
        return None
    if len(names) != 1:
        raise ModelLoadError(f"{g.name}: several CTC heads: {names}")
    prefix = names[0][: -len(".decoder_layers.0.weight")]
    if prefix not in CTC_MODULES:
        raise ModelLoadError(
            f"{g.name}: the CTC head's weight is {names[0]!r}; NeMo's exports name it "
            f"{' or '.join(m + '.decoder_layers.0.weight' for m in CTC_MODULES)} (hybrid, CTC-only model)"
        )
    w = g.inits[names[0]]
    vocab = w.dims[0] - 1
    sources = {names[0]: Source(w)}
    bias = f"{prefix}.decoder_layers.0.bias"
    if bias in g.inits:
        sources[bias] = Source(g.inits[bias])
    want = ctc_shapes(vocab, w.dims[1], prefix)
    if set(want) != set(sources):
        raise WeightNotFoundError(f"{g.name}: CTC head weights {sorted(sources)} differ from {sorted(want)}")
    return vocab, sources, prefix
