"""onnxruntime running NeMo's own ONNX export behind the ``Engine`` interface (``refimpl.runtime.engines``)."""

from __future__ import annotations

import numpy as np

from weights_tools import find_export, plan_onnx, streaming_params, subsampled_length

from .lookahead import resolve_att_context_size
from .streaming import greedy_over_decoder_joint


class OnnxEngine:
    """onnxruntime on NeMo's export: ``encoder-*.onnx`` + ``decoder_joint-*.onnx``, or a CTC single graph."""

    name = "onnxruntime"
    orders = ("step",)  # an ONNX encoder graph is one step
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
        out = {k: values[k] for k in self.encoder_outputs}
        if "encoded_lengths" not in out:
            # A CTC export without cache support returns only "logprobs": its valid lengths are the subsampled
            # input lengths (no pre-encode drop without caches), exactly what the stateless RNNT export returns.
            out["encoded_lengths"] = subsampled_length(feeds["length"], self.config.encoder.subsampling_factor)
        return out

    def ctc(self, outputs) -> np.ndarray:
        raise RuntimeError("the onnxruntime engine computes CTC log-probs inside the CTC export's encoder graph")

    def greedy_rnnt(self, enc, enc_len, state) -> tuple:
        return greedy_over_decoder_joint(self, enc, enc_len, state)

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
