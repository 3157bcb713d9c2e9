"""What each runtime does, read from the model folder it is given, and NeMo's side of the same model.

``open_model(dir, ...)`` gives NeMo's side (``pipeline.Model``): the model's streaming numbers, NeMo's log-mel
and refimpl's arithmetic on the folder's weights (or on ``--weights model.nemo``). ``open_runtime(name, dir,
...)`` gives the runtime's side (``pipeline.Runtime``) and how it can be run: the real package on the folder
when it is installed and can load that folder, else refimpl's emulation.

Why one module over ~350 lines: one opener per runtime (sherpa-onnx, onnx-asr, NeMo, your features) side by
side, so their differences read as a list.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weights_tools import ModelLoadError, find_export, streaming_params
from weights_tools.peers import ONNX_ASR, SHERPA, detect_peer_folder, load_peer, read_vocabulary

from ...model.preprocessing import log_mel
from ...peers import onnx_asr, sherpa_onnx
from ...runtime.engines import RefimplEngine, load_model
from ...runtime.features import featurizer_of
from ..contract import check_same_architecture
from .graphs import onnx_asr_graph, onnx_engine_graph, refimpl_graph, sherpa_graph
from .pipeline import Model, Runtime

RUNTIMES = ("sherpa-onnx", "onnx-asr", "nemo")
PACKAGES = {"sherpa-onnx": "sherpa_onnx", "onnx-asr": "onnx_asr"}


class ConformError(ValueError):
    """A model folder, runtime or option conform cannot work with; the message says what to do."""


@dataclass
class Side:
    """NeMo's side of the comparison, with what it was built from."""

    model: Model
    config: Any  # weights_tools.ModelConfig at the look-ahead served
    engine: RefimplEngine
    head: str
    att_context_size: tuple
    symbols: tuple  # token id -> piece
    tokenizer: Any  # refimpl Tokenizer when the folder has tokenizer.model
    weights_from: str
    folder_kind: str  # "sherpa-onnx" | "onnx-asr" | "nemo"
    peer_info: object | None = None
    notes: list = field(default_factory=list)

    def text(self, tokens) -> str:
        if self.tokenizer is not None:
            return self.tokenizer.decode(tokens)
        return "".join(self.symbols[i] for i in tokens).replace("\u2581", " ").strip()


def folder_kind(path) -> str:
    try:
        return detect_peer_folder(path).runtime
    except ModelLoadError:
        return "nemo"


def open_model(path, *, weights=None, head=None, impl: str = "fast") -> Side:
    """NeMo's side for the model folder ``path`` (sherpa-onnx, onnx-asr or NeMo's own export)."""
    path = Path(path)
    kind = folder_kind(path)
    info, tokenizer = None, None
    if kind == "nemo":
        config, w = load_model(path)
        export = find_export(path)
        folder_heads = ("rnnt",) if export.decoder_joint else ("ctc",)
        symbols: tuple = ()
        if export.tokenizer is not None:
            from ...runtime.tokenizer import Tokenizer

            tokenizer = Tokenizer(Path(export.tokenizer).read_bytes())
            symbols = tuple(tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size))
    else:
        config, w, info = load_peer(path, strict=False)
        folder_heads = (info.folder.head,)
        symbols = tuple(info.vocabulary)
    notes = []
    weights_from = str(path)
    if weights is not None:
        wconfig, ww = load_model(weights)
        check_same_architecture(config, wconfig, str(path), str(weights))
        w, weights_from = ww, str(weights)
        config = dataclasses.replace(
            wconfig, encoder=dataclasses.replace(wconfig.encoder, att_context_size=config.encoder.att_context_size)
        )
    elif info is not None and info.dequantized:
        notes.append(
            f"NeMo's side uses the weights dequantized from {path.name}'s int8 graphs ({len(info.dequantized)} "
            f"tensors): the graph stage then shows only what quantizing activations costs; pass --weights "
            f"model.nemo to compare against the float model"
        )
    head = head or folder_heads[0]
    if head not in folder_heads:
        raise ConformError(f"{path} holds the {folder_heads[0].upper()} head only, not {head.upper()} (--head)")
    if head not in config.heads:
        raise ConformError(f"{weights_from} has no {head.upper()} head")
    att = tuple(config.encoder.att_context_size)
    engine = RefimplEngine(config, w, impl=impl, att_context_size=att)
    sp = streaming_params(engine.config.encoder)
    pre = dataclasses.replace(engine.config.preprocessor, normalize="NA")
    feat = featurizer_of(w) or {}

    def features(x):
        mel, valid = log_mel(x, None, pre, fb=feat.get("fb"), window=feat.get("window"))
        return mel[0].T, int(valid[0])

    model = Model(
        window=sp.window,
        shift=sp.chunk_size,
        subsampling_factor=sp.subsampling_factor,
        drop_extra_pre_encoded=sp.drop_extra_pre_encoded,
        normalization=engine.config.preprocessor.normalize or "NA",
        max_symbols=engine.config.rnnt.max_symbols if engine.config.rnnt is not None else 1,
        blank_id=engine.config.blank_id,
        features=features,
        graph=refimpl_graph(engine, head),
    )
    return Side(model, engine.config, engine, head, att, symbols, tokenizer, weights_from, kind, info, notes)


@dataclass
class RuntimeSide:
    runtime: Runtime
    engine: str  # "package" | "emulation"
    why_emulation: str | None  # when engine is emulation
    run_package: object | None  # (samples) -> token ids, when engine is package
    text: object  # (tokens) -> the runtime's own text
    folder_error: str | None = None  # the runtime cannot load this folder at all: what it says
    notes: list = field(default_factory=list)


def package_installed(runtime: str) -> bool:
    return importlib.util.find_spec(PACKAGES[runtime]) is not None


def open_runtime(
    name: str, path, side: Side, *, tail_padding_seconds=None, threads: int = 1, use_package: bool = True
) -> RuntimeSide:
    if name not in RUNTIMES:
        raise ConformError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {name!r}")
    path = Path(path)
    if name == "sherpa-onnx":
        return _sherpa(path, side, tail_padding_seconds, threads, use_package)
    if tail_padding_seconds:
        raise ConformError(f"--tail-padding applies to sherpa-onnx (the silence its examples append), not {name}")
    if name == "onnx-asr":
        return _onnx_asr(path, side, threads, use_package)
    return _nemo(path, side, threads)


def _sherpa(path: Path, side: Side, tail, threads, use_package) -> RuntimeSide:
    tail = sherpa_onnx.EXAMPLE_TAIL_PADDING_SECONDS if tail is None else float(tail)
    m = side.model
    notes: list = []
    if side.folder_kind == SHERPA:
        from ...peers.sherpa_runner import OrtSherpaModel, run_real

        ort_model = OrtSherpaModel(path, threads=threads)
        meta = ort_model.meta
        graph = sherpa_graph(ort_model)
        window, shift = meta.window_size, meta.chunk_shift
        symbols = read_vocabulary(ort_model.folder)
        run_package = None
        why = None
        if not use_package:
            why = "--emulate was given"
        elif not package_installed("sherpa-onnx"):
            why = "the sherpa_onnx package is not installed (pip install 'refimpl[peers]')"
        else:
            run_package = lambda x: run_real(x, path, tail_padding_seconds=tail, threads=threads)["token_ids"]
    elif side.folder_kind == ONNX_ASR:
        raise ConformError(
            f"{path} is an onnx-asr folder (a stateless export): sherpa-onnx streams only exports with cache "
            f"support; give it a sherpa-onnx folder (encoder.onnx with its metadata, decoder.onnx, joiner.onnx, "
            f"tokens.txt) or NeMo's export with cache support"
        )
    else:
        from ...runtime.onnx_engine import OnnxEngine

        engine = OnnxEngine(path, config=side.config, threads=threads)
        if not engine.has_cache_io:
            raise ConformError(
                f"{path} was exported without cache support: sherpa-onnx cannot stream it (its encoder needs "
                f"cache_last_channel, cache_last_time, cache_last_channel_len); re-export with cache support"
            )
        graph = onnx_engine_graph(engine, side.head)
        window, shift = m.window, m.shift
        symbols = side.symbols
        run_package = None
        why = (
            f"{path.name}/ is NeMo's own export, not sherpa-onnx's layout (encoder.onnx with metadata, decoder.onnx, "
            f"joiner.onnx, tokens.txt): emulated with window_size {window} and chunk_shift {shift} as sherpa's "
            f"export script would write them for this look-ahead"
        )
    rt = Runtime(
        name="sherpa-onnx",
        features=lambda x: _sherpa_features(x, side.head),
        normalization="NA",  # sherpa's online path never applies normalize_type
        first_chunk="frames",
        window=window,
        shift=shift,
        length="window",
        last_chunk="strict",
        tail_padding_seconds=tail,
        decoding="sherpa-onnx",
        max_symbols=sherpa_onnx.MAX_SYMBOLS_PER_FRAME,
        graph=graph,
    )
    text = lambda tokens: sherpa_onnx.result_text(tokens, symbols, head=side.head)[0]
    return RuntimeSide(rt, "package" if run_package else "emulation", why, run_package, text, notes=notes)


def _sherpa_features(x, head):
    mel = sherpa_onnx.features(x, head=head)
    return mel, mel.shape[0]


def _onnx_asr(path: Path, side: Side, threads, use_package) -> RuntimeSide:
    m = side.model
    if side.folder_kind != ONNX_ASR:
        return _onnx_asr_cannot_load(path, side, use_package)
    model = onnx_asr.OrtOnnxAsrModel(path, threads=threads)
    from ...model.preprocessing import mel_filterbank

    fb = mel_filterbank()

    def features(x):
        f, flen = onnx_asr.features(x, fb, normalize=False)
        return f[0].T, int(flen[0])

    rt = Runtime(
        name="onnx-asr",
        features=features,
        normalization="per_feature",  # nemo80 always normalises
        first_chunk="zeros",
        window=None,
        shift=None,
        length="offline",
        last_chunk="all",
        tail_padding_seconds=0.0,
        decoding="onnx-asr",
        max_symbols=int(model.folder.config["max_tokens_per_step"]),
        graph=onnx_asr_graph(model, m.subsampling_factor),
        ctc_subsampling_factor=int(model.folder.config["subsampling_factor"]),
    )
    why, run_package = None, None
    if not use_package:
        why = "--emulate was given"
    elif not package_installed("onnx-asr"):
        why = "the onnx_asr package is not installed (pip install 'refimpl[peers]')"
    else:
        run_package = lambda x: onnx_asr.run_real(x, path)["token_ids"]
    text = lambda tokens: onnx_asr.result_text(tokens, model.folder.vocab)
    return RuntimeSide(rt, "package" if run_package else "emulation", why, run_package, text)


def _onnx_asr_cannot_load(path: Path, side: Side, use_package) -> RuntimeSide:
    """onnx-asr on a folder it cannot run: say what it says, and why."""
    reasons = []
    if side.folder_kind == SHERPA:
        reasons.append(
            f"{path} is a sherpa-onnx folder: onnx-asr reads encoder-model.onnx + decoder_joint-model.onnx "
            f"(or model.onnx) with vocab.txt"
        )
    else:
        export = find_export(path)
        enc = export.encoder or export.ctc
        import onnx

        from weights_tools.onnx_lookahead import CACHE_INPUTS

        names = [i.name for i in onnx.load(str(enc), load_external_data=False).graph.input] if enc else []
        if any(n in names for n in CACHE_INPUTS):
            reasons.append(
                f"onnxruntime: Required inputs ({[n for n in CACHE_INPUTS if n in names]}) are missing from input "
                f"feed (['audio_signal', 'length']): onnx-asr feeds only audio_signal and length, so it cannot run "
                f"an export with cache support (it has no streaming path)"
            )
        vocab = path / "vocab.txt"
        if vocab.is_file() and not _is_onnx_asr_vocab(vocab):
            reasons.append(
                f"{vocab} is NeMo's tokenizer vocab.txt (no ids), which onnx-asr would read as its own 'token id' "
                f"file (ValueError: not enough values to unpack)"
            )
    text = lambda tokens: ""
    rt = Runtime(
        "onnx-asr", None, "per_feature", "zeros", None, None, "offline", "all", 0.0, "onnx-asr", 10, side.model.graph
    )
    return RuntimeSide(rt, "emulation", None, None, text, folder_error="; ".join(reasons) or f"{path}: not loadable")


def _is_onnx_asr_vocab(path: Path) -> bool:
    lines = path.read_text(encoding="utf-8").splitlines()
    return bool(lines) and all(len(line.split(" ")) == 2 and line.split(" ")[1].isdigit() for line in lines)


def _nemo(path: Path, side: Side, threads) -> RuntimeSide:
    """The control: NeMo's export (or a sherpa-onnx folder's graphs, which are NeMo's export too) driven exactly
    as NeMo streams."""
    m = side.model
    if side.folder_kind == ONNX_ASR:
        raise ConformError(
            f"{path} holds a stateless export (onnx-asr's layout): NeMo streams only an export with cache support; "
            f"give the folder of NeMo's export with cache support"
        )
    if side.folder_kind == SHERPA:
        from ...peers.sherpa_runner import OrtSherpaModel

        graph = sherpa_graph(OrtSherpaModel(path, threads=threads))
    else:
        from ...runtime.onnx_engine import OnnxEngine

        engine = OnnxEngine(path, config=side.config, threads=threads)
        if not engine.has_cache_io:
            raise ConformError(
                f"{path} was exported without cache support: NeMo cannot stream it; re-export with cache support"
            )
        graph = onnx_engine_graph(engine, side.head)
    rt = Runtime(
        name="nemo",
        features=None,
        normalization=m.normalization,
        first_chunk="zeros",
        window=m.window,
        shift=m.shift,
        length="valid",
        last_chunk="partial",
        tail_padding_seconds=0.0,
        decoding="nemo",
        max_symbols=m.max_symbols,
        graph=graph,
    )
    return RuntimeSide(
        rt, "emulation", "NeMo's streaming is refimpl's own loop, run here on onnxruntime", None, side.text
    )


def load_user_features(path, feat_in: int) -> tuple:
    """A user's front-end output from an .npz (or .npy): ``[T, F]`` or ``[F, T]`` (a leading batch of 1 allowed).
    The layout is read from a ``layout`` entry ("TF" or "FT") when the file names it, else from which axis has
    ``feat_in`` entries; a [F, F] array without ``layout`` is refused. Returns (mel [T, F] float32, T)."""
    p = Path(path)
    if not p.is_file():
        raise ConformError(f"--features {p}: no such file (expected an .npz holding a [T, {feat_in}] array)")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same message
        raise ConformError(f"--features {p}: not a NumPy .npz/.npy file ({type(e).__name__}: {e})") from None
    layout = None
    if isinstance(data, np.ndarray):
        arr = data
    else:
        arrays = {k: data[k] for k in data.files}
        if "layout" in arrays:
            layout = str(arrays.pop("layout"))
        names = [k for k in arrays if k in ("features", "feats", "mel", "fbank")] or list(arrays)
        if len(names) != 1:
            raise ConformError(
                f"--features {p}: holds {sorted(arrays)}; name the features 'features' (one [T, {feat_in}] array)"
            )
        arr = arrays[names[0]]
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise ConformError(
            f"--features {p}: expected a 2-D float array [T, {feat_in}] or [{feat_in}, T], found "
            f"{arr.dtype} {list(arr.shape)}"
        )
    if layout is not None:
        if layout not in ("TF", "FT"):
            raise ConformError(f"--features {p}: layout must be 'TF' ([T, {feat_in}]) or 'FT', found {layout!r}")
        tf = layout == "TF"
    elif arr.shape[1] == feat_in and arr.shape[0] != feat_in:
        tf = True
    elif arr.shape[0] == feat_in and arr.shape[1] != feat_in:
        tf = False
    elif arr.shape == (feat_in, feat_in):
        raise ConformError(
            f"--features {p}: a [{feat_in}, {feat_in}] array could be either layout; add "
            f"layout='TF' or 'FT' to the .npz"
        )
    else:
        raise ConformError(
            f"--features {p}: expected [T, {feat_in}] or [{feat_in}, T] (the model has {feat_in} "
            f"mel bins), found {list(arr.shape)}"
        )
    mel = np.ascontiguousarray(arr if tf else arr.T, np.float32)
    if not np.isfinite(mel).all():
        raise ConformError(f"--features {p}: holds {int((~np.isfinite(mel)).sum())} NaN or infinite values")
    return mel, mel.shape[0]
