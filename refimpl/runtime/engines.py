"""Two engines behind one interface: refimpl's NumPy/Numba arithmetic, and onnxruntime running NeMo's graphs.

The streaming driver (``refimpl.streaming``) feeds both the same chunks and caches, so any difference between
them is in the model arithmetic. Interface (arrays in the export's layouts):
  encoder(audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len, *, taps=None,
          engine_state=None) -> dict with
      "outputs" [B, d, T] (or "logprobs" [B, T, V+1] for a CTC single-graph export), "encoded_lengths",
      "cache_last_channel_next", "cache_last_time_next", "cache_last_channel_next_len", and optionally
      "engine_state_next" (the engine's own derived state, fed back as engine_state next step)
  ctc(outputs) -> logprobs [B, T, V+1]                     (when the engine has a CTC head)
  decoder_joint(frames [B, d], tokens [B], h, c) -> (logits [B, V+1], h', c')   (when it has an RNNT head)
"""
from __future__ import annotations

import numpy as np

from .chunking import streaming_params
from ..model.ctc import ctc_logprobs
from ..model.encoder import encoder_step
from ..model.rnnt import joint, prediction_step

BACKENDS = ("numpy", "numba")


class LookAheadError(ValueError):
    """A look-ahead the model (or the ONNX file) does not serve."""


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
                f"look-ahead.")
        return req
    known = encoder_cfg.att_context_sizes
    if known is None:
        if req != served:
            raise LookAheadError(
                f"the trained look-aheads of {what} are unknown (an ONNX export records only the one it was exported "
                f"for, {list(served)}); to run {list(req)}, load the weights from the model's .nemo, which lists them")
        return req
    if req not in [tuple(a) for a in known]:
        raise LookAheadError(f"att_context_size {list(req)} is not one of the model's look-aheads "
                             f"{[list(a) for a in known]}")
    return req


class RefimplEngine:
    """refimpl's arithmetic. ``backend`` "numpy" (the readable reference) or "numba" (kernels); ``dtype``
    float32 (matches the export) or float64 (the same code in double precision)."""

    name = "refimpl"

    def __init__(self, config, weights, *, att_context_size=None, backend: str = "numpy", dtype=np.float32):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        att = resolve_att_context_size(config.encoder, att_context_size, fixed_by_file=False, what=config.source)
        self.config = config.with_att_context_size(att)
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.weights = _cast(weights, self.dtype)
        self.params = streaming_params(self.config.encoder)
        self.has_ctc = config.ctc is not None and "ctc_decoder" in weights
        self.has_rnnt = config.rnnt is not None and "decoder" in weights and "joint" in weights
        self.ctc_in_encoder = False

    def encoder(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len,
                taps: dict | None = None, engine_state=None) -> dict:
        cast = lambda a: None if a is None else np.asarray(a, self.dtype)  # noqa: E731
        out = encoder_step(cast(audio_signal), length, cast(cache_last_channel), cast(cache_last_time),
                           cache_last_channel_len, self.weights["encoder"], self.config.encoder,
                           backend=self.backend, taps=taps)
        return {"outputs": out.outputs, "encoded_lengths": out.encoded_lengths,
                "cache_last_channel_next": out.cache_last_channel_next,
                "cache_last_time_next": out.cache_last_time_next,
                "cache_last_channel_next_len": out.cache_last_channel_next_len}

    def ctc(self, outputs) -> np.ndarray:
        return ctc_logprobs(outputs, self.weights["ctc_decoder"])

    def decoder_joint(self, frames, tokens, h, c):
        g, h, c = prediction_step(tokens, np.asarray(h, self.dtype), np.asarray(c, self.dtype),
                                  self.weights["decoder"]["prediction"], backend=self.backend)
        return joint(np.asarray(frames, self.dtype), g, self.weights["joint"]), h, c


def _cast(tree: dict, dtype) -> dict:
    return {k: _cast(v, dtype) if isinstance(v, dict) else
            (np.ascontiguousarray(v, dtype) if np.asarray(v).dtype.kind == "f" else v) for k, v in tree.items()}


class OnnxEngine:
    """onnxruntime on NeMo's export: ``encoder-*.onnx`` + ``decoder_joint-*.onnx``, or a CTC single graph."""

    name = "onnxruntime"

    def __init__(self, model_dir, *, config=None, att_context_size=None, threads: int = 1, taps: bool = False):
        import onnxruntime as ort
        from weights_tools import find_export, plan_onnx

        files = find_export(model_dir)
        encoder_file = files.encoder or files.ctc
        if config is None:
            config = plan_onnx(model_dir).config  # reads the graphs' structure, not their weights
        att = resolve_att_context_size(config.encoder, att_context_size, fixed_by_file=True, what=str(encoder_file))
        self.config = config.with_att_context_size(att)
        self.params = streaming_params(self.config.encoder)
        self.dtype = np.dtype(np.float32)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self.files = files
        self.tap_tensors = {}
        model = str(encoder_file)
        if taps:  # expose intermediate tensors as extra outputs (found by graph structure)
            from ..tools.taps import find_taps, with_tap_outputs
            self.tap_tensors = find_taps(encoder_file)
            model = with_tap_outputs(encoder_file, self.tap_tensors)
        self.encoder_session = ort.InferenceSession(model, so, providers=providers)
        self.decoder_session = (ort.InferenceSession(str(files.decoder_joint), so, providers=providers)
                                if files.decoder_joint else None)
        extra = set(self.tap_tensors.values())
        self.encoder_outputs = [o.name for o in self.encoder_session.get_outputs() if o.name not in extra]
        self.ctc_in_encoder = self.encoder_outputs[0] == "logprobs"
        self.has_ctc = self.ctc_in_encoder
        self.has_rnnt = self.decoder_session is not None
        self.has_cache_io = len(self.encoder_session.get_inputs()) == 5

    def encoder(self, audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len,
                taps: dict | None = None, engine_state=None) -> dict:
        feeds = {"audio_signal": np.asarray(audio_signal, np.float32), "length": np.asarray(length, np.int64)}
        if cache_last_channel is not None:
            feeds.update(cache_last_channel=np.asarray(cache_last_channel, np.float32),
                         cache_last_time=np.asarray(cache_last_time, np.float32),
                         cache_last_channel_len=np.asarray(cache_last_channel_len, np.int64))
        names = self.encoder_outputs + list(self.tap_tensors.values())
        values = dict(zip(names, self.encoder_session.run(names, feeds)))
        if taps is not None:
            from ..tools.taps import TRANSPOSED
            for tap, tensor in self.tap_tensors.items():
                v = values[tensor]
                taps[tap] = v.transpose(0, 2, 1) if tap.endswith(TRANSPOSED) else v
        return {k: values[k] for k in self.encoder_outputs}

    def ctc(self, outputs) -> np.ndarray:
        raise RuntimeError("the onnxruntime engine computes CTC log-probs inside the CTC export's encoder graph")

    def decoder_joint(self, frames, tokens, h, c):
        b = frames.shape[0]
        logits, _, h, c = self.decoder_session.run(None, {
            "encoder_outputs": np.asarray(frames, np.float32)[:, :, None],
            "targets": np.asarray(tokens, np.int32)[:, None],
            "target_length": np.ones(b, np.int32),
            "input_states_1": np.asarray(h, np.float32),
            "input_states_2": np.asarray(c, np.float32),
        })
        return logits[:, 0, 0], h, c
