"""The I/O contract of NeMo's ONNX graphs (every input and output: dtype, shape, layout, meaning) and the
streaming numbers that follow from a config."""
from __future__ import annotations

from .config import ModelConfig
from .onnx_file import read_onnx
from .onnx_graph import value_dims, value_dtype
from .onnx_load import find_export

# (role, name) -> (layout, meaning); role "encoder" also covers the encoder part of the CTC graph
_ENCODER = {
    "audio_signal": ("[B, feat_in, T] log-mel, time last",
                     "log-mel features; per streaming call T = pre-encode cache (s+1) + chunk (s*(R+1)) frames"),
    "length": ("[B]", "valid mel frames in audio_signal, including the pre-encode frames"),
    "cache_last_channel": ("[B, n_layers, cache, d_model] batch-first (NeMo's internal layout is layer-first "
                           "[n_layers, B, cache, d_model])",
                           "attention cache: post-norm attention inputs of the last `cache` frames, right-aligned; "
                           "zeros at the start; its time axis must be exactly the left context"),
    "cache_last_time": ("[B, n_layers, d_model, conv_left] batch-first (NeMo's internal layout is layer-first)",
                        "depthwise-conv cache: the last conv_left inputs of each causal conv; zeros at the start"),
    "cache_last_channel_len": ("[B]", "valid rows (at the end) of cache_last_channel, 0 at the start"),
    "outputs": ("[B, d_model, T_out] channels first, time last", "encoder output, at most R+1 frames per call"),
    "logprobs": ("[B, T_out, vocab+1] time first", "CTC log-probabilities (log_softmax), blank = vocab"),
    "encoded_lengths": ("[B]", "valid frames of the output"),
    "cache_last_channel_next": ("as cache_last_channel", "attention cache for the next call"),
    "cache_last_time_next": ("as cache_last_time", "conv cache for the next call"),
    "cache_last_channel_next_len": ("[B]", "valid rows of cache_last_channel_next (min(len + T, cache))"),
}
_DECODER_JOINT = {
    "encoder_outputs": ("[B, d_model, T] channels first (as the encoder's outputs)",
                        "encoder frames to join (greedy search passes T = 1)"),
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
                rows.append({"graph": path.name, "role": role, "kind": kind, "name": v.name,
                             "dtype": value_dtype(v), "shape": value_dims(v), "layout": layout, "meaning": meaning})
    return rows


def streaming_numbers(config: ModelConfig) -> dict:
    """What one cache-aware streaming call of this encoder consumes and produces (NeMo's setup_streaming_params
    for chunked_limited, pad_and_drop_preencoded schedule); s = subsampling factor, (L, R) = att_context_size."""
    enc, pre = config.encoder, config.preprocessor
    s, (left, right) = enc.subsampling_factor, enc.att_context_size
    chunk = s * (right + 1)
    pre_cache = s + 1
    hop_ms = 1000 * pre.n_window_stride / pre.sample_rate
    return {
        "att_context_size": [left, right],
        "encoder_frames_per_call (valid_out_len = R+1)": right + 1,
        "new_mel_frames_per_call (chunk_size = s*(R+1))": chunk,
        "pre_encode_cache_mel_frames (s+1)": pre_cache,
        "mel_frames_per_call (audio_signal T)": pre_cache + chunk,
        "drop_extra_pre_encoded": 1 + (pre_cache - 1) // s,
        "cache_last_channel_frames (left context)": left,
        "cache_last_time_frames (conv left context)": enc.conv_context_size[0],
        "chunk_ms": chunk * hop_ms,
        "lookahead_ms": right * s * hop_ms,
        "left_context_ms": left * s * hop_ms,
    }
