"""Model folders laid out for the peer runtimes: sherpa-onnx's NeMo streaming layouts and onnx-asr's NeMo layout.

``detect_peer_folder(path)`` tells which layout a folder has (which file plays which role, int8 or not) and
reads its metadata; ``load_peer(path)`` returns ``(ModelConfig, weights, PeerInfo)`` like ``load_onnx``, with
every weight under NeMo's own name and in NeMo's layout, and checks the metadata against the constants baked
into the graphs.

Layouts (what each peer's own export recipe writes):

- sherpa-onnx transducer: ``encoder.onnx`` (``model.encoder.export`` with cache support, carrying sherpa's
  metadata: window_size, chunk_shift, subsampling_factor, normalize_type, vocab_size without blank, the cache
  dims, pred_rnn_layers, pred_hidden, ...), ``decoder.onnx`` (``model.decoder.export``: prediction network alone,
  names relative to it: ``prediction.embed.weight``), ``joiner.onnx`` (``model.joint.export``: ``enc.bias``,
  ``pred.bias``, ``joint_net.2.bias``), ``tokens.txt``. The int8 twin has ``*.int8.onnx`` (onnxruntime's
  ``quantize_dynamic``, QUInt8).
- sherpa-onnx CTC: ``model.onnx`` (``model.export`` with ``decoder_type: ctc`` and cache support) with the same
  metadata (no pred_*), ``tokens.txt``; int8: ``model.int8.onnx``.
- onnx-asr: NeMo's plain ``model.export`` (``encoder-model.onnx`` + ``decoder_joint-model.onnx``, or one
  ``model.onnx`` CTC graph), ``vocab.txt`` ("token id" lines ending with ``<blk>``) and an optional
  ``config.json`` (model_type, features_size, subsampling_factor, max_tokens_per_step).

int8 graphs. ``quantize_dynamic`` replaces the MatMul/Conv weights (and the joint's and decoder's MatMuls) by
uint8 tensors with one float scale and one uint8 zero point per tensor; the LSTM, biases, norms and
``pos_bias_u/v`` stay float32. ``load_peer`` dequantizes them: (q - zero_point) * scale, which differs from the
float weights by up to half a quantization step (``PeerInfo.dequantized`` lists every such weight).

Why one module over ~350 lines: each peer layout (sherpa-onnx, onnx-asr) needs its detection, its metadata
checks and its loader together, and both share the int8 dequantisation.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import CTCConfig, ModelConfig, PreprocessorConfig
from .errors import IncompatibleModelError, ModelLoadError, WeightNotFoundError, one_line
from .onnx_encoder import read_encoder
from .onnx_file import read_onnx
from .onnx_graph import Graph
from .onnx_heads import read_ctc_head
from .peer_graphs import _dequantized_sources, _float_view, _joint_net_index, read_sherpa_decoder, read_sherpa_joiner
from .schema import rnnt_shapes
from .sources import materialize
from .tree import unflatten

SHERPA = "sherpa-onnx"
ONNX_ASR = "onnx-asr"
# Metadata keys sherpa-onnx's OnlineTransducerNeMoModel / OnlineNeMoCtcModel read (SHERPA_ONNX_READ_META_DATA).
SHERPA_KEYS = (
    "vocab_size",
    "window_size",
    "chunk_shift",
    "subsampling_factor",
    "cache_last_channel_dim1",
    "cache_last_channel_dim2",
    "cache_last_channel_dim3",
    "cache_last_time_dim1",
    "cache_last_time_dim2",
    "cache_last_time_dim3",
)
SHERPA_RNNT_KEYS = ("pred_rnn_layers", "pred_hidden")


class PeerMetadataError(IncompatibleModelError):
    """A peer folder whose metadata disagrees with what its graphs compute."""


@dataclass(frozen=True)
class PeerFolder:
    """Which peer layout a folder has, and which file plays which role."""

    path: Path
    runtime: str  # "sherpa-onnx" | "onnx-asr"
    head: str  # "rnnt" | "ctc"
    quantized: bool  # sherpa's int8 twin
    files: dict  # role -> Path: encoder, decoder, joiner | model | encoder, decoder_joint; tokens | vocab, config
    metadata: dict  # sherpa: the encoder/model graph's metadata_props; onnx-asr: config.json (or {})


@dataclass(frozen=True)
class SherpaMeta:
    """sherpa-onnx's metadata, parsed as its runtime parses it (``vocab_size`` + 1 = classes with blank)."""

    window_size: int  # mel frames per encoder call (= pre-encode cache + chunk)
    chunk_shift: int  # mel frames the window advances
    subsampling_factor: int  # used by sherpa only for timestamps and endpointing
    vocab_size: int  # without blank, as written; sherpa adds 1
    normalize_type: str  # "" for NeMo's "NA"
    cache_last_channel: tuple  # (n_layers, left context, d_model)
    cache_last_time: tuple  # (n_layers, d_model, conv left context)
    pred_rnn_layers: int | None  # transducer only
    pred_hidden: int | None
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def blank_id(self) -> int:
        return self.vocab_size


@dataclass(frozen=True)
class MetadataCheck:
    """One metadata value against the value the graphs compute."""

    key: str
    metadata: object
    graph: object
    what: str  # where the graph's value comes from

    @property
    def ok(self) -> bool:
        return self.metadata == self.graph

    def message(self, folder) -> str:
        return f"{folder}: metadata {self.key}={self.metadata!r} but the graphs say {self.graph!r} ({self.what})"


@dataclass(frozen=True)
class PeerInfo:
    folder: PeerFolder
    sherpa: SherpaMeta | None  # parsed sherpa metadata
    checks: tuple  # MetadataCheck for every key that can be checked
    dequantized: dict = field(default_factory=dict)  # NeMo name -> quantization step (scale), int8 folders
    vocabulary: tuple = ()  # tokens.txt / vocab.txt symbols in id order, blank last

    @property
    def mismatches(self) -> list:
        return [c for c in self.checks if not c.ok]


# --------------------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------------------
def detect_peer_folder(path) -> PeerFolder:
    """The peer layout of ``path`` (a folder), or ModelLoadError saying what was found."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a folder (expected a sherpa-onnx or onnx-asr model folder)")
    names = {p.name for p in path.iterdir()}
    for suffix, quantized in (("", False), (".int8", True)):
        enc, dec, joi, mod = (f"{r}{suffix}.onnx" for r in ("encoder", "decoder", "joiner", "model"))
        if {enc, dec, joi, "tokens.txt"} <= names:
            files = {"encoder": path / enc, "decoder": path / dec, "joiner": path / joi, "tokens": path / "tokens.txt"}
            return PeerFolder(path, SHERPA, "rnnt", quantized, files, _metadata(files["encoder"]))
        if {mod, "tokens.txt"} <= names:
            files = {"model": path / mod, "tokens": path / "tokens.txt"}
            meta = _metadata(files["model"])
            if "window_size" in meta:
                return PeerFolder(path, SHERPA, "ctc", quantized, files, meta)
    if "vocab.txt" in names:
        config = json.loads((path / "config.json").read_text()) if "config.json" in names else {}
        extra = {"vocab": path / "vocab.txt"} | ({"config": path / "config.json"} if "config.json" in names else {})
        if {"encoder-model.onnx", "decoder_joint-model.onnx"} <= names:
            files = {"encoder": path / "encoder-model.onnx", "decoder_joint": path / "decoder_joint-model.onnx"}
            return PeerFolder(path, ONNX_ASR, "rnnt", False, files | extra, config)
        if "model.onnx" in names:
            return PeerFolder(path, ONNX_ASR, "ctc", False, {"model": path / "model.onnx"} | extra, config)
    raise ModelLoadError(
        f"{path}: not a peer model folder. Expected sherpa-onnx's encoder.onnx + decoder.onnx + joiner.onnx + "
        f"tokens.txt (or *.int8.onnx), or model.onnx with sherpa metadata + tokens.txt, or onnx-asr's "
        f"encoder-model.onnx + decoder_joint-model.onnx (or model.onnx) + vocab.txt; found {sorted(names)}"
    )


def _metadata(path: Path) -> dict:
    return {p.key: p.value for p in read_onnx(path).model.metadata_props}


def read_sherpa_metadata(folder: PeerFolder) -> SherpaMeta:
    """Parse the metadata as sherpa-onnx does; a missing key is the error sherpa would stop with."""
    m = folder.metadata
    keys = SHERPA_KEYS + (SHERPA_RNNT_KEYS if folder.head == "rnnt" else ())
    missing = [k for k in keys if k not in m]
    if missing:
        where = folder.files.get("encoder") or folder.files.get("model")
        raise ModelLoadError(
            f"{where}: sherpa-onnx metadata {missing} missing (found {sorted(m)}); sherpa-onnx "
            f"refuses such a model ('{missing[0]}' does not exist in the metadata)"
        )
    try:
        ints = {k: int(m[k]) for k in keys}
    except ValueError as e:
        raise ModelLoadError(f"{folder.path}: sherpa-onnx metadata is not an integer: {one_line(e)}") from None
    normalize = m.get("normalize_type", "")
    return SherpaMeta(
        window_size=ints["window_size"],
        chunk_shift=ints["chunk_shift"],
        subsampling_factor=ints["subsampling_factor"],
        vocab_size=ints["vocab_size"],
        normalize_type="" if normalize == "NA" else normalize,
        cache_last_channel=tuple(ints[f"cache_last_channel_dim{i}"] for i in (1, 2, 3)),
        cache_last_time=tuple(ints[f"cache_last_time_dim{i}"] for i in (1, 2, 3)),
        pred_rnn_layers=ints.get("pred_rnn_layers"),
        pred_hidden=ints.get("pred_hidden"),
        raw=dict(m),
    )


def read_vocabulary(folder: PeerFolder) -> tuple:
    """tokens.txt / vocab.txt as the symbols in id order ("symbol id" per line; ids must be 0..n-1)."""
    f = folder.files.get("tokens") or folder.files.get("vocab")
    pairs = []
    for i, line in enumerate(f.read_text(encoding="utf-8").splitlines()):
        parts = line.rstrip("\n").split(" ")
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ModelLoadError(
                f"{f}:{i + 1}: expected 'symbol id', found {line!r} (NeMo's own vocab.txt, a "
                f"WordPiece rendering without ids, is not this file)"
            )
        pairs.append((int(parts[1]), parts[0]))
    ids = [p[0] for p in pairs]
    if ids != list(range(len(ids))):
        raise ModelLoadError(f"{f}: ids are not 0..{len(ids) - 1} in order")
    return tuple(p[1] for p in pairs)


# --------------------------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------------------------
def load_peer(path, *, strict: bool = True) -> tuple[ModelConfig, dict, PeerInfo]:
    """(config, weights keyed by NeMo names in NeMo's layouts, PeerInfo) for a peer folder.

    ``strict``: raise ``PeerMetadataError`` when sherpa metadata disagrees with the graphs (naming the key, both
    values and where the graph's value comes from); otherwise the disagreements are in ``info.mismatches``.
    """
    folder = detect_peer_folder(path)
    vocab = read_vocabulary(folder)
    if folder.runtime == ONNX_ASR:
        from .onnx_load import load_onnx

        config, weights = load_onnx(folder.files.get("model") or folder.files["encoder"])
        checks = _onnx_asr_checks(folder, config, vocab)
        info = PeerInfo(folder, None, tuple(checks), {}, vocab)
    else:
        config, weights, dequantized = _load_sherpa(folder)
        meta = read_sherpa_metadata(folder)
        checks = _sherpa_checks(folder, meta, config, vocab)
        info = PeerInfo(folder, meta, tuple(checks), dict(dequantized), vocab)
    if strict and info.mismatches:
        raise PeerMetadataError("; ".join(c.message(folder.path) for c in info.mismatches))
    return config, weights, info


def _load_sherpa(folder: PeerFolder):
    dequantized = []
    if folder.head == "ctc":
        g = _float_view(Graph(read_onnx(folder.files["model"])))
        enc_cfg, sources, _ = read_encoder(g)
        sources = _dequantized_sources(g, sources, dequantized)
        head = read_ctc_head(g)
        if head is None:
            raise ModelLoadError(f"{g.name}: no CTC head (*.decoder_layers.0.weight) found")
        vocab, ctc_sources, module = head
        sources.update(_dequantized_sources(g, ctc_sources, dequantized))
        rnnt, ctc = None, CTCConfig(vocab_size=vocab, module=module)
    else:
        g = _float_view(Graph(read_onnx(folder.files["encoder"])))
        enc_cfg, sources, _ = read_encoder(g)
        sources = _dequantized_sources(g, sources, dequantized)
        rnnt, dec_sources = read_sherpa_decoder(Graph(read_onnx(folder.files["decoder"])), dequantized)
        joint_sources, d_in, vocab = read_sherpa_joiner(Graph(read_onnx(folder.files["joiner"])), dequantized)
        if d_in != enc_cfg.d_model:
            raise IncompatibleModelError(
                f"{folder.files['joiner']} takes encoder outputs of {d_in}, the encoder's "
                f"d_model is {enc_cfg.d_model}: the files come from different models"
            )
        if vocab != rnnt.vocab_size:
            raise IncompatibleModelError(
                f"{folder.files['joiner']} emits {vocab + 1} classes, the decoder's "
                f"embedding has {rnnt.vocab_size + 1} rows: different models"
            )
        rnnt = dataclasses.replace(rnnt, joint_hidden=joint_sources["joint.enc.bias"].shape[0])
        sources.update(dec_sources)
        sources.update(joint_sources)
        want = rnnt_shapes(rnnt, d_in, _joint_net_index(joint_sources))
        if set(want) != set(dec_sources) | set(joint_sources):
            raise WeightNotFoundError(
                f"{folder.path}: decoder/joiner weights "
                f"{sorted(set(want) ^ (set(dec_sources) | set(joint_sources)))} differ from "
                f"the architecture's"
            )
        ctc = None
    config = ModelConfig(
        preprocessor=PreprocessorConfig(), encoder=enc_cfg, rnnt=rnnt, ctc=ctc, source=f"{SHERPA}:{folder.path}"
    )
    return config, unflatten(materialize(sources)), dequantized


# --- sherpa's decoder.onnx and joiner.onnx ----------------------------------------------------------------------


# --- int8 (onnxruntime quantize_dynamic) ------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# metadata against the graphs
# --------------------------------------------------------------------------------------------------------------
def _sherpa_checks(folder: PeerFolder, meta: SherpaMeta, config: ModelConfig, vocab: tuple) -> list:
    enc = config.encoder
    s, right = enc.subsampling_factor, enc.att_context_size[1]
    chunk, pre = s * (right + 1), s + 1  # NeMo's chunk_size[1] and pre_encode_cache_size[1] (causal dw_striding)
    checks = [
        MetadataCheck(
            "subsampling_factor",
            meta.subsampling_factor,
            enc.subsampling_factor,
            "the strides of the pre_encode convolutions",
        ),
        MetadataCheck(
            "window_size",
            meta.window_size,
            pre + chunk,
            f"pre_encode_cache_size {pre} + chunk_size {chunk} for the look-ahead "
            f"{list(enc.att_context_size)} baked into the encoder",
        ),
        MetadataCheck(
            "chunk_shift",
            meta.chunk_shift,
            chunk,
            f"chunk_size for the look-ahead {list(enc.att_context_size)} baked into the encoder",
        ),
        MetadataCheck("vocab_size", meta.vocab_size, config.vocab_size, "the output classes of the head minus blank"),
        MetadataCheck(
            "cache_last_channel_dim1/2/3",
            meta.cache_last_channel,
            (enc.n_layers, enc.att_context_size[0], enc.d_model),
            "n_layers, left context, d_model",
        ),
        MetadataCheck(
            "cache_last_time_dim1/2/3",
            meta.cache_last_time,
            (enc.n_layers, enc.d_model, enc.conv_context_size[0]),
            "n_layers, d_model, conv left context",
        ),
        MetadataCheck("tokens.txt lines", len(vocab), config.vocab_size + 1, "vocabulary + blank"),
    ]
    if folder.head == "rnnt":
        checks += [
            MetadataCheck(
                "pred_rnn_layers", meta.pred_rnn_layers, config.rnnt.pred_rnn_layers, "LSTM layers in decoder.onnx"
            ),
            MetadataCheck(
                "pred_hidden", meta.pred_hidden, config.rnnt.pred_hidden, "prediction network width in decoder.onnx"
            ),
        ]
    return checks


def _onnx_asr_checks(folder: PeerFolder, config: ModelConfig, vocab: tuple) -> list:
    checks = [
        MetadataCheck("vocab.txt lines", len(vocab), config.vocab_size + 1, "vocabulary + blank"),
        MetadataCheck(
            "vocab.txt last symbol",
            vocab[-1] if vocab else None,
            "<blk>",
            "onnx-asr finds the blank as the symbol <blk>",
        ),
    ]
    c = folder.metadata
    if "subsampling_factor" in c:
        checks.append(
            MetadataCheck(
                "subsampling_factor",
                c["subsampling_factor"],
                config.encoder.subsampling_factor,
                "the strides of the pre_encode convolutions",
            )
        )
    if "features_size" in c:
        checks.append(
            MetadataCheck("features_size", c["features_size"], config.encoder.feat_in, "audio_signal's feature axis")
        )
    return checks
