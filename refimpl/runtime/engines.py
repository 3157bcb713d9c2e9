"""Engines behind one interface: refimpl's arithmetic (plain NumPy or the fast twin), and onnxruntime running
NeMo's graphs.

The streaming driver (``refimpl.runtime.streaming``) feeds every engine the same chunks and caches, so any
difference between them is in the model arithmetic. ``Engine`` is the interface (arrays in the export's
layouts); an engine's heads (``"rnnt"``, ``"ctc"``) are the ones ``weights_tools`` named in the config, never
guessed from weight keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

import weights_tools
from weights_tools import ModelConfig, StreamingParams, streaming_params
from weights_tools.layouts import encoder_layout, load_layout
from weights_tools.tree import astype

from ..fast.decoder import FastGreedyRNNT
from ..fast.encoder import BACKENDS, FastEncoder
from ..model.block import BlockOutput, check_block_exact, encoder_block
from ..model.ctc import ctc_logprobs
from ..model.encoder import EncoderOps, PlainEncoder, encoder_step
from ..model.rnnt import joint, lstm_cell, prediction_step
from .features import featurizer_of
from .lookahead import parse_att_context_size, resolve_att_context_size
from .onnx_engine import OnnxEngine
from .streaming import greedy_over_decoder_joint

IMPLS = ("plain", "fast")  # refimpl's implementations: the readable reference, the optimised twin
ENCODER_OUTPUTS = (
    "outputs",
    "logprobs",
    "encoded_lengths",
    "cache_last_channel_next",
    "cache_last_time_next",
    "cache_last_channel_next_len",
)


class Engine(Protocol):
    """What the streaming driver, crosscheck, golden and bench need from an engine."""

    name: str  # "refimpl" or "onnxruntime"
    config: ModelConfig  # at the engine's look-ahead
    streaming: StreamingParams  # of that look-ahead
    dtype: np.dtype
    heads: tuple  # the model's heads this engine runs: "rnnt" and/or "ctc"
    featurizer: dict | None  # the checkpoint's preprocessor.featurizer (fb, window) when the engine has it
    ctc_in_encoder: bool  # the encoder call returns "logprobs" (a CTC single-graph export) instead of "outputs"
    orders: tuple  # evaluation orders it runs: ("step",), or ("step", "block") with encoder_block/check_block

    def encoder(
        self,
        audio_signal,
        length,
        cache_last_channel,
        cache_last_time,
        cache_last_channel_len,
        *,
        taps: dict | None = None,
        engine_state: dict | None = None,
    ) -> dict:
        """-> {"outputs" [B, d, T] (or "logprobs" [B, T, V+1]), "encoded_lengths", "cache_last_channel_next",
        "cache_last_time_next", "cache_last_channel_next_len"} and optionally "engine_state_next" (the engine's
        own derived state, fed back as ``engine_state`` next step). All caches None: one offline call."""

    def ctc(self, outputs: np.ndarray) -> np.ndarray:
        """outputs [B, d, T] -> CTC log-probs [B, T, V+1] (when "ctc" is a head and not in the encoder)."""

    def decoder_joint(self, frames: np.ndarray, tokens: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple:
        """frames [B, d], last tokens [B], LSTM h/c [L, B, H] -> (logits [B, V+1], h', c')."""

    def greedy_rnnt(self, enc: np.ndarray, enc_len: np.ndarray, state) -> tuple:
        """NeMo's greedy transducer search over one call's frames -> (tokens, frames, RNNTState): engines without a
        search of their own use ``model.rnnt.greedy_rnnt`` over ``decoder_joint`` (``greedy_over_decoder_joint``)."""


class EngineWrapper:
    """An engine that forwards every member of ``Engine`` to ``inner``; subclasses override what they observe
    (crosscheck records decoder_joint calls, bench times encoder calls)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.config, self.streaming = inner.name, inner.config, inner.streaming
        self.dtype, self.heads, self.ctc_in_encoder = inner.dtype, inner.heads, inner.ctc_in_encoder
        self.featurizer = inner.featurizer
        self.orders = inner.orders

    def encoder(self, *args, **kwargs) -> dict:
        return self.inner.encoder(*args, **kwargs)

    def ctc(self, outputs):
        return self.inner.ctc(outputs)

    def decoder_joint(self, frames, tokens, h, c):
        return self.inner.decoder_joint(frames, tokens, h, c)

    def greedy_rnnt(self, enc, enc_len, state) -> tuple:
        return self.inner.greedy_rnnt(enc, enc_len, state)

    def check_block(self) -> None:
        self.inner.check_block()

    def encoder_block(self, *args, **kwargs):
        return self.inner.encoder_block(*args, **kwargs)


class RefimplEngine:
    """refimpl's arithmetic on (config, weights). ``impl`` "plain" (the readable NumPy reference,
    ``refimpl.model``) or "fast" (``refimpl.fast``: projected keys/values of cached frames kept, BLAS-friendly
    layouts, kernels of ``backend`` "numba" (default) or their NumPy twins "numpy"); ``dtype`` float32 (as the
    export) or float64 (the same code in double precision). For impl "fast", ``layout`` (from ``weights_tools.layouts``)
    replaces ``weights["encoder"]``."""

    name = "refimpl"
    orders = ("step", "block")

    def __init__(
        self,
        config: ModelConfig,
        weights: dict,
        *,
        att_context_size=None,
        impl: str = "plain",
        backend: str | None = None,
        dtype=np.float32,
        layout: dict | None = None,
    ):
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        if impl == "plain" and backend is not None:
            raise ValueError(f"backend {backend!r} applies to impl 'fast': the plain reference is NumPy only")
        backend = backend or BACKENDS[0]
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        att = resolve_att_context_size(config.encoder, att_context_size, fixed_by_file=False, what=config.source)
        self.config = config.with_att_context_size(att)
        self.impl, self.backend, self.dtype = impl, backend if impl == "fast" else None, np.dtype(dtype)
        self.streaming = streaming_params(self.config.encoder)
        self.heads = self.config.heads
        self.ctc_in_encoder = False
        self.featurizer = featurizer_of(weights)
        self.weights = astype({k: v for k, v in weights.items() if not (k == "encoder" and impl == "fast")}, self.dtype)
        enc = self.config.encoder
        self.ops: EncoderOps
        if impl == "plain":
            self.ops = PlainEncoder(self.weights["encoder"], enc, att)
            self._cell = lstm_cell
        else:
            layout = layout if layout is not None else encoder_layout(weights["encoder"], enc, self.dtype)
            fast = FastEncoder(layout, enc, att, backend=backend, dtype=self.dtype)
            self.ops, self._cell = fast, fast.k.lstm_cell
        self._greedy = None
        if impl == "fast" and self.config.rnnt is not None:
            self._greedy = FastGreedyRNNT(
                self.weights["decoder"]["prediction"], self.weights["joint"], self.config.rnnt, cell=self._cell
            )

    @property
    def label(self) -> str:
        """e.g. "refimpl (plain)", "refimpl (fast, numba)"."""
        return f"refimpl ({self.impl}{f', {self.backend}' if self.backend else ''})"

    def encoder(
        self,
        audio_signal,
        length,
        cache_last_channel,
        cache_last_time,
        cache_last_channel_len,
        *,
        taps=None,
        engine_state=None,
    ) -> dict:
        cast = lambda a: None if a is None else np.asarray(a, self.dtype)  # noqa: E731
        out, state = encoder_step(
            cast(audio_signal),
            length,
            cast(cache_last_channel),
            cast(cache_last_time),
            cache_last_channel_len,
            self.ops,
            engine_state=engine_state,
            taps=taps,
        )
        res = {
            "outputs": out.outputs,
            "encoded_lengths": out.encoded_lengths,
            "cache_last_channel_next": out.cache_last_channel_next,
            "cache_last_time_next": out.cache_last_time_next,
            "cache_last_channel_next_len": out.cache_last_channel_next_len,
        }
        if state is not None:
            res["engine_state_next"] = state
        return res

    def check_block(self) -> None:
        """BlockNotExact when this look-ahead's blocks would not equal its steps (see ``model.block``)."""
        check_block_exact(self.ops)

    def encoder_block(
        self,
        audio_signal,
        n_chunks,
        cache_last_channel,
        cache_last_time,
        cache_last_channel_len,
        *,
        engine_state=None,
        taps: bool = False,
        caches: str = "all",
    ) -> BlockOutput:
        """N full chunks in one pass (``refimpl.model.block``): a BlockOutput whose ``chunk(n)`` is what
        ``encoder`` would return for chunk n."""
        cast = lambda a: np.asarray(a, self.dtype)  # noqa: E731
        return encoder_block(
            cast(audio_signal),
            n_chunks,
            cast(cache_last_channel),
            cast(cache_last_time),
            cache_last_channel_len,
            self.ops,
            engine_state=engine_state,
            taps=taps,
            caches=caches,
        )

    def ctc(self, outputs) -> np.ndarray:
        if self.config.ctc is None:
            raise ValueError(f"{self.config.source} has no CTC head")
        return ctc_logprobs(outputs, self.weights[self.config.ctc.module])

    def greedy_rnnt(self, enc, enc_len, state) -> tuple:
        if self._greedy is not None:  # the fast path's search: no LSTM step on blank frames
            return self._greedy.greedy(np.asarray(enc, self.dtype), enc_len, state)
        return greedy_over_decoder_joint(self, enc, enc_len, state)

    def decoder_joint(self, frames, tokens, h, c):
        g, h, c = prediction_step(
            tokens,
            np.asarray(h, self.dtype),
            np.asarray(c, self.dtype),
            self.weights["decoder"]["prediction"],
            cell=self._cell,
        )
        return joint(np.asarray(frames, self.dtype), g, self.weights["joint"]), h, c


def load_model(path, *, att_context_sizes=None) -> tuple:
    """(config, weights) from a .nemo file, or from a folder / .onnx file of NeMo's export."""
    p = Path(path)
    if p.suffix == ".nemo":
        return weights_tools.load_nemo(p)
    return weights_tools.load_onnx(p, att_context_sizes=att_context_sizes)


def open_refimpl(path, *, impl: str = "plain", **kwargs) -> RefimplEngine:
    """A RefimplEngine on the model at ``path`` (export folder, .onnx or .nemo). The fast path reads the encoder
    straight into its layout, tensor by tensor (never two copies of the encoder in memory)."""
    if impl == "fast":
        config, rest, layout = load_layout(path, dtype=kwargs.get("dtype", np.float32))
        return RefimplEngine(config, rest, impl=impl, layout=layout, **kwargs)
    config, weights = load_model(path)
    return RefimplEngine(config, weights, impl=impl, **kwargs)


ENGINES = ("refimpl", "onnxruntime")


def open_engine(
    model,
    *,
    engine: str = "refimpl",
    weights=None,
    att_context_size=None,
    impl: str = "plain",
    backend: str | None = None,
    dtype=np.float32,
    threads: int = 1,
):
    """An engine for ``model`` (a path). ``weights`` (a path to a .nemo or another export of the same model)
    makes refimpl take its weights from there instead of from ``model``."""
    att = parse_att_context_size(att_context_size)
    if engine == "onnxruntime":
        if Path(model).suffix == ".nemo":
            raise ValueError(f"the onnxruntime engine needs NeMo's ONNX export, not a .nemo ({model})")
        return OnnxEngine(model, att_context_size=att, threads=threads)
    if engine != "refimpl":
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return open_refimpl(
        weights if weights is not None else model, impl=impl, att_context_size=att, backend=backend, dtype=dtype
    )
