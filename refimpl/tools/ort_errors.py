"""onnxruntime's error messages for one encoder call, translated into the input that caused them (``Where ... 20 by
70`` -> "cache_last_channel has 20 rows where the export needs exactly 70")."""

from __future__ import annotations

import re

import numpy as np

from weights_tools import streaming_params

_WHERE = re.compile(r"Where node.*?(\d+) by (\d+)", re.S)


_ADD = re.compile(r"Name:'([^']*Add[^']*)'.*?(\d+) by (\d+)", re.S)


_DIMS = re.compile(
    r"invalid dimensions for input: (\w+) for the following indices\s+index: (\d+) Got: (\d+) "
    r"Expected: (\d+)",
    re.S,
)


_DTYPE = re.compile(r"Unexpected input data type\. Actual: \(tensor\((\w+)\)\) , expected: \(tensor\((\w+)\)\)")


def explain_ort_error(message: str, inputs: dict, config) -> str:
    """Which input caused an onnxruntime error, in plain words (or a note that the message is not known)."""
    cfg, p = config.encoder, streaming_params(config.encoder)
    x = np.asarray(inputs.get("audio_signal", np.zeros((1, cfg.feat_in, 0))))
    t_enc = int(p.encoder_frames(x.shape[-1])) if x.ndim == 3 else None
    if m := _WHERE.search(message):
        a, b = int(m.group(1)), int(m.group(2))
        tt = t_enc if t_enc is not None else b - p.last_channel_cache_size
        return (
            f"the attention mask is {b} = {b - tt} + {tt} keys wide ({b - tt} cache rows are baked into the "
            f"graph, plus this chunk's {tt} encoder frames) but the keys are {a} = {a - tt} + {tt}: "
            f"cache_last_channel has {a - tt} rows where the export needs exactly {p.last_channel_cache_size}"
            + (
                f"; and this chunk of {x.shape[-1]} mel frames gives no encoder frame at all (needs {p.window})"
                if tt == 0
                else ""
            )
            + ". Typical causes: trimming the cache to cache_last_channel_len, a wrongly sized initial cache, "
            "or a cache from a model exported for another att_context_size"
        )
    if "Invalid input shape: {0}" in message:
        return (
            f"a tensor with 0 frames reached layer 0's convolution: the chunk of {x.shape[-1]} mel frames gives "
            f"no encoder frame after subsampling and the drop of {p.drop_extra_pre_encoded} pre-encoded frames; "
            f"a chunk needs {p.window} = {p.pre_encode_cache_size} pre-encode + {p.chunk_size} new frames"
        )
    if m := _DIMS.search(message):
        name, idx, got, exp = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        if name == "audio_signal" and idx == 1:
            return (
                f"audio_signal axis 1 is {got}, the graph expects the {exp} mel bins there: the features are "
                f"time-major [B, T, {exp}]; transpose to [B, {exp}, T]"
            )
        if name.startswith("cache") and idx == 1:
            return (
                f"{name} axis 1 is {got}, the graph expects n_layers = {exp} there: the cache is in PyTorch's "
                f"layer-first layout [n_layers, B, ...]; the export wants batch-first: transpose(1, 0, 2, 3)"
            )
        return f"{name} axis {idx} is {got}, the graph expects {exp}"
    if m := _DTYPE.search(message):
        wrong = [n for n, v in inputs.items() if np.asarray(v).dtype.name == m.group(1)]
        return (
            f"an input is {m.group(1)} where the graph expects {m.group(2)}: "
            f"{', '.join(wrong) or 'see the input list'}; length and cache_last_channel_len are int64 "
            f"(decoder_joint's targets and target_length are int32)"
        )
    if m := _ADD.search(message):
        a, b = int(m.group(2)), int(m.group(3))
        k = a - b + p.conv_cache_size
        return (
            f"in {m.group(1)} the convolution output has {a} frames but the residual {b}: cache_last_time's last "
            f"axis is {k} where the export needs exactly {p.conv_cache_size} (kernel-1)"
        )
    return "not a message refimpl knows; check the problems listed above"
