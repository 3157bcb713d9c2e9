"""The I/O contract of NeMo's ONNX graphs (every input and output: dtype, shape, layout, meaning) and the
streaming numbers that follow from a config."""

from __future__ import annotations

from .config import ModelConfig
from .onnx_export import find_export
from .onnx_file import read_onnx
from .onnx_graph import value_dims, value_dtype
from .streaming import streaming_params

# (role, name) -> (layout, meaning); role "encoder" also covers the encoder part of the CTC graph
_ENCODER = {
    "audio_signal": (
        "[B, feat_in, T] log-mel, time last",
        "log-mel features; per streaming call T = pre-encode cache (s+1) + chunk (s*(R+1)) frames",
    ),
    "length": ("[B]", "valid mel frames in audio_signal, including the pre-encode frames"),
    "cache_last_channel": (
        "[B, n_layers, cache, d_model] batch-first (NeMo's internal layout is layer-first "
        "[n_layers, B, cache, d_model])",
        "attention cache: post-norm attention inputs of the last `cache` frames, right-aligned; "
        "zeros at the start; its time axis must be exactly the left context",
    ),
    "cache_last_time": (
        "[B, n_layers, d_model, conv_left] batch-first (NeMo's internal layout is layer-first)",
        "depthwise-conv cache: the last conv_left inputs of each causal conv; zeros at the start",
    ),
    "cache_last_channel_len": ("[B]", "valid rows (at the end) of cache_last_channel, 0 at the start"),
    "outputs": ("[B, d_model, T_out] channels first, time last", "encoder output, at most R+1 frames per call"),
    "logprobs": ("[B, T_out, vocab+1] time first", "CTC log-probabilities (log_softmax), blank = vocab"),
    "encoded_lengths": ("[B]", "valid frames of the output"),
    "cache_last_channel_next": ("as cache_last_channel", "attention cache for the next call"),
    "cache_last_time_next": ("as cache_last_time", "conv cache for the next call"),
    "cache_last_channel_next_len": ("[B]", "valid rows of cache_last_channel_next (min(len + T, cache))"),
}
_DECODER_JOINT = {
    "encoder_outputs": (
        "[B, d_model, T] channels first (as the encoder's outputs)",
        "encoder frames to join (greedy search passes T = 1)",
    ),
    "targets": ("[B, U]", "last emitted token per stream (blank = vocab at the start)"),
    "target_length": ("[B]", "ones; passed through, unused by the LSTM"),
    "input_states_1": ("[pred_rnn_layers, B, pred_hidden] layer-first", "LSTM h"),
    "input_states_2": ("[pred_rnn_layers, B, pred_hidden] layer-first", "LSTM c"),
    "outputs": ("[B, T, U, vocab+1]", "joint logits (no log_softmax), blank = vocab"),
    "prednet_lengths": ("[B]", "target_length passed through"),
    "output_states_1": ("[pred_rnn_layers, B, pred_hidden] layer-first", "LSTM h after consuming targets"),
    "output_states_2": ("[pred_rnn_layers, B, pred_hidden] layer-first", "LSTM c after consuming targets"),
}


def io_contract(model_dir_or_file) -> list[dict]:
    """One dict per input and output of every graph of the export: graph, role, kind (input/output), name,
    dtype, shape (ints, or the exporter's symbolic dim names), layout, meaning."""
    export = find_export(model_dir_or_file)
    rows = []
    for role, path in export.graphs:
        g = read_onnx(path).graph
        table = _DECODER_JOINT if role == "decoder_joint" else _ENCODER
        for kind, values in (("input", g.input), ("output", g.output)):
            for v in values:
                layout, meaning = table.get(v.name, ("?", "not a name NeMo's exporter uses"))
                rows.append(
                    {
                        "graph": path.name,
                        "role": role,
                        "kind": kind,
                        "name": v.name,
                        "dtype": value_dtype(v),
                        "shape": value_dims(v),
                        "layout": layout,
                        "meaning": meaning,
                    }
                )
    return rows


def streaming_numbers(config: ModelConfig) -> dict:
    """What one cache-aware streaming call of this encoder consumes and produces (``streaming_params`` of its
    look-ahead, labelled with the formulas); s = subsampling factor, (L, R) = att_context_size."""
    p = streaming_params(config.encoder)
    hop_ms = 1000 * config.preprocessor.n_window_stride / config.preprocessor.sample_rate
    return {
        "att_context_size": list(p.att_context_size),
        "encoder_frames_per_call (valid_out_len = R+1)": p.valid_out_len,
        "new_mel_frames_per_call (chunk_size = s*(R+1))": p.chunk_size,
        "pre_encode_cache_mel_frames (s+1)": p.pre_encode_cache_size,
        "mel_frames_per_call (audio_signal T)": p.window,
        "drop_extra_pre_encoded": p.drop_extra_pre_encoded,
        "cache_last_channel_frames (left context)": p.last_channel_cache_size,
        "cache_last_time_frames (conv left context)": p.conv_cache_size,
        "chunk_ms": p.chunk_size * hop_ms,
        "lookahead_ms": p.att_context_size[1] * p.subsampling_factor * hop_ms,
        "left_context_ms": p.att_context_size[0] * p.subsampling_factor * hop_ms,
    }
