"""``load_onnx``: a folder (or file) of NeMo ONNX exports -> (ModelConfig, weights in NeMo's names and layouts).

Layouts NeMo's ``model.export`` writes:
- RNNT (hybrid models' default head): ``encoder-<name>.onnx`` + ``decoder_joint-<name>.onnx``
- CTC head: one ``<name>.onnx`` (encoder + CTC head) whose first output is ``logprobs``
plus, next to them, the ``tokenizer.model`` of the model (optional).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import sentencepiece as spm

from .config import CTCConfig, ModelConfig, PreprocessorConfig
from .errors import IncompatibleModelError, ModelLoadError, NoCacheSupportError, WeightNotFoundError, clean_errors
from .nemo_load import read_nemo_config
from .onnx_encoder import pe_table_name, read_encoder
from .onnx_export import Export, _name, find_export
from .onnx_file import read_onnx
from .onnx_graph import Graph
from .onnx_heads import read_ctc_head, read_decoder_joint
from .onnx_lookahead import CACHE_INPUTS, Lookahead
from .sources import materialize
from .tree import unflatten


@dataclass(frozen=True)
class Plan:
    """A loaded-but-not-read model: the config, where every weight is, and the look-ahead evidence."""

    config: ModelConfig
    sources: dict  # NeMo name -> Source
    lookahead: Lookahead
    export: Export


@clean_errors("NeMo's ONNX export")
def load_onnx(model_dir, *, att_context_sizes=None, nemo=None, require_cache: bool = False) -> tuple[ModelConfig, dict]:
    """(config, nested dict of read-only float32 arrays keyed by NeMo's state_dict names, NeMo's layouts).

    ``model_dir``: a folder with NeMo's export, or one .onnx file (an encoder-*.onnx finds its
    decoder_joint-*.onnx next to it). ``att_context_sizes``: the model's full look-ahead list, if known (the
    graph only knows its own). ``nemo``: the model's .nemo, for the look-ahead list, the preprocessor settings
    and a cross-check of every size. ``require_cache``: raise NoCacheSupportError for an encoder exported
    without cache inputs (it cannot stream); otherwise such a config has ``has_cache_io=False``.

    What graphs cannot provide, compared with ``load_nemo``: ``preprocessor.featurizer.{fb,window}`` (no graph
    holds the preprocessor: use refimpl's own filterbank or the .nemo), the CTC head of an RNNT-only export and
    the RNNT head of a CTC export, and ``conv.batch_norm.*`` of a BatchNorm model (the exporter folded it into
    ``conv.depthwise_conv``; ``fold_batch_norm`` gives a .nemo the same form)."""
    plan = plan_onnx(model_dir, att_context_sizes=att_context_sizes, nemo=nemo, require_cache=require_cache)
    return plan.config, unflatten(materialize(plan.sources))


@clean_errors("NeMo's ONNX export")
def plan_onnx(model_dir, *, att_context_sizes=None, nemo=None, require_cache: bool = False) -> Plan:
    """Everything ``load_onnx`` does except reading the weights (fast: the tensors are not read)."""
    export = find_export(model_dir)
    enc_graph = Graph(read_onnx(export.encoder or export.ctc))
    enc_cfg, sources, look = read_encoder(enc_graph)
    if require_cache and not enc_cfg.has_cache_io:
        raise NoCacheSupportError(
            f"{enc_graph.file.path} was exported without cache support: its inputs are {list(enc_graph.inputs)}, "
            f"a streaming encoder also takes {', '.join(CACHE_INPUTS)}. It cannot stream (every call would start "
            f"from empty context). To fix, {NoCacheSupportError.HOW_TO_FIX}"
        )
    graphs, claimed = [enc_graph], list(sources.values())  # every graph read, every initializer matched
    rnnt = ctc = None
    if export.decoder_joint is not None:
        dj = Graph(read_onnx(export.decoder_joint))
        rnnt, dj_sources, d_in = read_decoder_joint(dj)
        if d_in != enc_cfg.d_model:
            raise IncompatibleModelError(
                f"{export.decoder_joint.name} does not fit {enc_graph.name}: its joint.enc takes encoder outputs "
                f"of size {d_in}, but the encoder's d_model is {enc_cfg.d_model}. The two files come from "
                f"different models: export both from the same .nemo"
            )
        sources.update(dj_sources)
        graphs.append(dj)
    if export.ctc is not None:
        if export.encoder is None:
            ctc_graph = enc_graph
        else:
            ctc_graph, ctc_enc_sources = _second_encoder(export, enc_cfg, sources)
            graphs.append(ctc_graph)
            claimed += ctc_enc_sources.values()
        head = read_ctc_head(ctc_graph)
        if head is None:
            raise ModelLoadError(
                f"{export.ctc}: its first output is 'logprobs' but no CTC head (*.decoder_layers.0.weight) was found"
            )
        vocab, ctc_sources, module = head
        sources.update(ctc_sources)
        ctc = CTCConfig(vocab_size=vocab, module=module)
    claimed += sources.values()
    for g in graphs:
        _check_leftovers(g, claimed)
    _check_claimed_once(sources)
    if rnnt is not None and ctc is not None and rnnt.vocab_size != ctc.vocab_size:
        raise IncompatibleModelError(
            f"{_name(export.decoder_joint)} (RNNT) has a vocabulary of {rnnt.vocab_size} but {_name(export.ctc)} (CTC) "
            f"has {ctc.vocab_size}: they come from different models; export both from the same .nemo"
        )
    if rnnt is None and ctc is None:
        raise ModelLoadError(
            f"{export.encoder}: an encoder without a decoding head: expected a "
            f"decoder_joint-*.onnx next to it (RNNT) or a CTC export"
        )
    tok = export.tokenizer.read_bytes() if export.tokenizer is not None else None
    where = export.encoder_graph
    source = f"onnx:{where.parent if export.encoder else where}"
    if not enc_cfg.has_cache_io:
        source += (
            " (exported without cache I/O: the left context is read as left_chunks x chunk size of the "
            "chunked attention mask)"
        )
    enc_cfg = dataclasses.replace(enc_cfg, att_context_sizes=_normalize(att_context_sizes))
    config = ModelConfig(
        preprocessor=PreprocessorConfig(), encoder=enc_cfg, rnnt=rnnt, ctc=ctc, source=source, tokenizer_model=tok
    )
    if nemo is not None:
        config = merge_nemo(config, nemo, str(where))
    if config.tokenizer_model is not None:
        check_tokenizer(
            config.tokenizer_model,
            config.vocab_size,
            str(export.tokenizer) if export.tokenizer is not None else f"{nemo} tokenizer",
        )
    return Plan(config, sources, look, export)


# --- files ----------------------------------------------------------------------------------------------------


def _second_encoder(export: Export, enc_cfg, sources: dict) -> tuple[Graph, dict]:
    """A folder with both an encoder-*.onnx and a CTC export: the CTC graph's encoder must be the same one."""
    g = Graph(read_onnx(export.ctc))
    cfg, ctc_sources, _ = read_encoder(g)
    if cfg != enc_cfg:
        diff = {
            f.name: (getattr(enc_cfg, f.name), getattr(cfg, f.name))
            for f in dataclasses.fields(cfg)
            if getattr(enc_cfg, f.name) != getattr(cfg, f.name)
        }
        raise IncompatibleModelError(
            f"{_name(export.ctc)} and {_name(export.encoder)} hold different encoders (field: (encoder, ctc)): {diff}"
        )
    for name, src in ctc_sources.items():
        if not np.array_equal(src.read(), sources[name].read()):
            raise IncompatibleModelError(
                f"{_name(export.ctc)} and {_name(export.encoder)} hold different values for "
                f"{name}: export both from the same .nemo"
            )
    return g, ctc_sources


def _check_claimed_once(sources: dict) -> None:
    """No tensor may be read as two NeMo weights (except the two halves of an LSTM bias)."""
    seen: dict = {}
    for name, s in sources.items():
        key = (s.ref.path, s.ref.name, s.transform)
        if key in seen:
            raise WeightNotFoundError(
                f"{s.ref.path.name}: initializer {s.ref.name!r} matches both {seen[key]} and "
                f"{name}; the graph does not have the structure of NeMo's export"
            )
        seen[key] = name


def _check_leftovers(g: Graph, claimed: list) -> None:
    """Every initializer of ``g`` that looks like a parameter (floating point, more than one element) must have
    been claimed by a NeMo name (``claimed``: Sources of any graph); the positional table is not a parameter."""
    used = {s.ref.name for s in claimed if s.ref.path == g.file.path}
    pe = pe_table_name(g)
    left = [
        f"{n} {list(r.dims)}"
        for n, r in g.inits.items()
        if n not in used and n != pe and r.size > 1 and r.dtype.kind == "f"
    ]
    if left:
        raise ModelLoadError(
            f"{g.name}: {len(left)} initializer(s) that look like parameters were not matched to "
            f"any NeMo weight: {left[:8]}. The graph does not have the structure of NeMo's "
            f"export (was it optimized or edited?)"
        )


# --- tokenizer and .nemo ----------------------------------------------------------------------------------------
def check_tokenizer(data: bytes, vocab_size: int, where: str) -> None:
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(data)
    except Exception:  # sentencepiece raises RuntimeError/OSError depending on version
        raise ModelLoadError(f"{where}: not a SentencePiece model ({len(data)} bytes)") from None
    if sp.GetPieceSize() != vocab_size:
        raise IncompatibleModelError(
            f"{where}: the tokenizer has {sp.GetPieceSize()} pieces, but the model's "
            f"vocabulary is {vocab_size} (+ blank): it belongs to another model"
        )


def _normalize(att_context_sizes):
    if att_context_sizes is None:
        return None
    sizes = [att_context_sizes] if isinstance(att_context_sizes[0], int) else att_context_sizes
    return tuple(tuple(int(x) for x in a) for a in sizes)


_ENCODER_FIELDS = (
    "feat_in",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "conv_kernel_size",
    "conv_context_size",
    "subsampling",
    "subsampling_factor",
    "subsampling_conv_channels",
    "causal_downsampling",
    "xscaling",
    "use_bias",
    "self_attention_model",
    "att_context_style",
)


def merge_nemo(config: ModelConfig, nemo, where: str) -> ModelConfig:
    """Cross-check the graph's config with the .nemo's, then take from the .nemo what graphs do not hold: the
    look-ahead list, the preprocessor, max_symbols, the tokenizer if none was found next to the graphs."""
    n = read_nemo_config(nemo)
    e, ne = config.encoder, n.encoder
    diff = {f: (getattr(e, f), getattr(ne, f)) for f in _ENCODER_FIELDS if getattr(e, f) != getattr(ne, f)}
    norms = {e.conv_norm_type, ne.conv_norm_type}
    if e.conv_norm_type != ne.conv_norm_type and norms != {"batch_norm", "folded_batch_norm"}:
        diff["conv_norm_type"] = (e.conv_norm_type, ne.conv_norm_type)
    for head in ("rnnt", "ctc"):
        a, b = getattr(config, head), getattr(n, head)
        if a is not None and b is None:
            diff[head] = ("present", "absent")
        elif a is not None:
            for f in dataclasses.fields(a):
                if f.name != "max_symbols" and getattr(a, f.name) != getattr(b, f.name):
                    diff[f"{head}.{f.name}"] = (getattr(a, f.name), getattr(b, f.name))
    if diff:
        raise IncompatibleModelError(f"{where} does not match {nemo} (field: (graph, .nemo)): {diff}")
    att = _nemo_lookahead(e, ne, where, nemo)
    enc = dataclasses.replace(e, att_context_size=att, att_context_sizes=ne.att_context_sizes)
    rnnt = (
        dataclasses.replace(config.rnnt, max_symbols=n.rnnt.max_symbols)
        if config.rnnt is not None and n.rnnt is not None
        else config.rnnt
    )
    tok = config.tokenizer_model
    if tok is not None and n.tokenizer_model is not None and tok != n.tokenizer_model:
        raise IncompatibleModelError(f"the tokenizer.model next to {where} differs from the one inside {nemo}")
    return dataclasses.replace(
        config,
        encoder=enc,
        rnnt=rnnt,
        preprocessor=n.preprocessor,
        tokenizer_model=tok if tok is not None else n.tokenizer_model,
        source=f"{config.source} + nemo:{nemo}",
    )


def _nemo_lookahead(e, ne, where: str, nemo) -> tuple:
    if e.att_context_size in ne.att_context_sizes:
        return e.att_context_size
    same_r = [a for a in ne.att_context_sizes if a[1] == e.att_context_size[1]]
    if not e.has_cache_io and len(same_r) == 1:
        return same_r[0]  # without cache I/O the graph only bounds the left context
    raise IncompatibleModelError(
        f"{where} was exported for look-ahead {list(e.att_context_size)}, which is not "
        f"among the look-aheads {[list(a) for a in ne.att_context_sizes]} of {nemo}"
    )
