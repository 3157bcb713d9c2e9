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
from weights_tools import ModelConfig, StreamingParams, find_export, plan_onnx, streaming_params
from weights_tools.layouts import encoder_layout, load_layout
from weights_tools.tree import astype

from ..fast.encoder import BACKENDS, FastEncoder
from ..model.ctc import ctc_logprobs
from ..model.encoder import EncoderOps, PlainEncoder, encoder_step
from ..model.rnnt import joint, lstm_cell, prediction_step
from .features import featurizer_of

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


class EngineWrapper:
    """An engine that forwards every member of ``Engine`` to ``inner``; subclasses override what they observe
    (crosscheck records decoder_joint calls, bench times encoder calls)."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.config, self.streaming = inner.name, inner.config, inner.streaming
        self.dtype, self.heads, self.ctc_in_encoder = inner.dtype, inner.heads, inner.ctc_in_encoder
        self.featurizer = inner.featurizer

    def encoder(self, *args, **kwargs) -> dict:
        return self.inner.encoder(*args, **kwargs)

    def ctc(self, outputs):
        return self.inner.ctc(outputs)

    def decoder_joint(self, frames, tokens, h, c):
        return self.inner.decoder_joint(frames, tokens, h, c)


class LookAheadError(ValueError):
    """A look-ahead the model (or the ONNX file) does not serve."""


def parse_att_context_size(text):
    """'70,13', [70, 13] or (70, 13) -> (70, 13); None -> None."""
    if text is None or isinstance(text, tuple):
        return text
    if isinstance(text, (list, np.ndarray)):
        return tuple(int(a) for a in text)
    try:
        left, right = (int(a) for a in str(text).replace("[", "").replace("]", "").split(","))
    except ValueError:
        raise ValueError(f"att_context_size must be 'LEFT,RIGHT' (e.g. 70,13), got {text!r}") from None
    return left, right


def resolve_att_context_size(encoder_cfg, requested, *, fixed_by_file: bool, what: str):
    """The look-ahead to run: the requested one if the model serves it, else a clear error."""
    served = tuple(encoder_cfg.att_context_size)
    if requested is None:
        return served
    req = tuple(int(a) for a in requested)
    if fixed_by_file:
        if req != served:
            raise LookAheadError(
                f"{what} was exported for att_context_size {list(served)}, not {list(req)}: one ONNX encoder "
                f"serves exactly one look-ahead (its mask and output slice are baked in). Use the file exported for "
                f"{list(req)}, or run refimpl with weights from the .nemo (--weights), which serves every trained "
                f"look-ahead."
            )
        return req
    known = encoder_cfg.att_context_sizes
    if known is None:
        if req != served:
            raise LookAheadError(
                f"the trained look-aheads of {what} are unknown (an ONNX export records only the one it was exported "
                f"for, {list(served)}); to run {list(req)}, load the weights from the model's .nemo, which lists them"
            )
        return req
    if req not in [tuple(a) for a in known]:
        raise LookAheadError(
            f"att_context_size {list(req)} is not one of the model's look-aheads {[list(a) for a in known]}"
        )
    return req


class RefimplEngine:
    """refimpl's arithmetic on (config, weights). ``impl`` "plain" (the readable NumPy reference,
    ``refimpl.model``) or "fast" (``refimpl.fast``: projected keys/values of cached frames kept, BLAS-friendly
    layouts, kernels of ``backend`` "numba" (default) or their NumPy twins "numpy"); ``dtype`` float32 (as the
    export) or float64 (the same code in double precision). For impl "fast", ``layout`` (from ``weights_tools.layouts``)
    replaces ``weights["encoder"]``."""

    name = "refimpl"

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

    def ctc(self, outputs) -> np.ndarray:
        return ctc_logprobs(outputs, self.weights["ctc_decoder"])

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


class OnnxEngine:
    """onnxruntime on NeMo's export: ``encoder-*.onnx`` + ``decoder_joint-*.onnx``, or a CTC single graph."""

    name = "onnxruntime"
    label = "onnxruntime"

    def __init__(self, model_dir, *, config=None, att_context_size=None, threads: int = 1, taps: bool = False):
        import onnxruntime as ort  # heavy (0.35 s, ~20 MB): imported when an onnxruntime engine is made

        files = find_export(model_dir)
        encoder_file = files.encoder or files.ctc
        if config is None:
            config = plan_onnx(model_dir).config  # reads the graphs' structure, not their weights
        att = resolve_att_context_size(config.encoder, att_context_size, fixed_by_file=True, what=str(encoder_file))
        self.config = config.with_att_context_size(att)
        self.streaming = streaming_params(self.config.encoder)
        self.dtype = np.dtype(np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self.files = files
        self.tap_tensors = {}
        model: str | bytes = str(encoder_file)
        if taps:  # expose intermediate tensors as extra outputs (found by graph structure)
            from .onnx_taps import find_taps, with_tap_outputs  # imports onnx (0.9 s): only for taps

            self.tap_tensors = find_taps(encoder_file)
            model = with_tap_outputs(encoder_file, self.tap_tensors)
        self.encoder_session = ort.InferenceSession(model, so, providers=providers)
        self.decoder_session = (
            ort.InferenceSession(str(files.decoder_joint), so, providers=providers) if files.decoder_joint else None
        )
        extra = set(self.tap_tensors.values())
        self.encoder_outputs = [o.name for o in self.encoder_session.get_outputs() if o.name not in extra]
        self.ctc_in_encoder = self.encoder_outputs[0] == "logprobs"
        self.heads = self.config.heads
        self.featurizer = None  # no ONNX graph holds the preprocessor
        self.has_cache_io = len(self.encoder_session.get_inputs()) == 5

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
        feeds = {"audio_signal": np.asarray(audio_signal, np.float32), "length": np.asarray(length, np.int64)}
        if cache_last_channel is not None:
            feeds.update(
                cache_last_channel=np.asarray(cache_last_channel, np.float32),
                cache_last_time=np.asarray(cache_last_time, np.float32),
                cache_last_channel_len=np.asarray(cache_last_channel_len, np.int64),
            )
        names = self.encoder_outputs + list(self.tap_tensors.values())
        values = dict(zip(names, self.encoder_session.run(names, feeds)))
        if taps is not None:
            from .onnx_taps import onnx_tap_value  # (see above)

            for tap, tensor in self.tap_tensors.items():
                taps[tap] = onnx_tap_value(tap, values[tensor])
        return {k: values[k] for k in self.encoder_outputs}

    def ctc(self, outputs) -> np.ndarray:
        raise RuntimeError("the onnxruntime engine computes CTC log-probs inside the CTC export's encoder graph")

    def decoder_joint(self, frames, tokens, h, c):
        b = frames.shape[0]
        logits, _, h, c = self.decoder_session.run(
            None,
            {
                "encoder_outputs": np.asarray(frames, np.float32)[:, :, None],
                "targets": np.asarray(tokens, np.int32)[:, None],
                "target_length": np.ones(b, np.int32),
                "input_states_1": np.asarray(h, np.float32),
                "input_states_2": np.asarray(c, np.float32),
            },
        )
        return logits[:, 0, 0], h, c
