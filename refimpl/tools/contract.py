"""The streaming I/O contract of one look-ahead: exact shapes of every encoder/decoder_joint input and output
for the first, later and last chunks, with the arithmetic that produces them (``refimpl inspect``)."""

from __future__ import annotations

from weights_tools import IncompatibleModelError, NoCacheSupportError, streaming_params, subsampled_length


def stateless_message(path) -> str:
    return (
        f"{path} was exported WITHOUT cache support: its encoder takes only audio_signal and length (no "
        f"cache_last_channel, cache_last_time, cache_last_channel_len). It cannot stream: fed chunk by chunk, "
        f"every call starts from empty context - no left context from earlier chunks, the subsampling and "
        f"convolutions restart from zero padding - so words at chunk borders are cut or decoded twice and "
        f"transcripts fill with repeated tokens ('sh sh sh'). Use it on whole utterances only, or "
        f"{NoCacheSupportError.HOW_TO_FIX}."
    )


ARCHITECTURE = (
    "feat_in",
    "d_model",
    "n_layers",
    "n_heads",
    "d_ff",
    "conv_kernel_size",
    "subsampling_factor",
    "subsampling_conv_channels",
)


def check_same_architecture(a, b, name_a: str, name_b: str) -> None:
    """Refuse weights from a different model (sizes differ), naming every difference."""
    diffs = [
        f"{f}: {getattr(a.encoder, f)} vs {getattr(b.encoder, f)}"
        for f in ARCHITECTURE
        if getattr(a.encoder, f) != getattr(b.encoder, f)
    ]
    for head in ("rnnt", "ctc"):
        ha, hb = getattr(a, head), getattr(b, head)
        if ha is not None and hb is None:
            diffs.append(f"{head}: {name_a} has a {head.upper()} head, {name_b} has none")
        elif ha is not None and hb is not None and ha != hb:
            diffs.append(f"{head}: {ha} vs {hb}")
    if diffs:
        raise IncompatibleModelError(f"{name_b} is not the model of {name_a}: " + "; ".join(diffs))


def chunk_contract(config, att_context_size=None) -> dict:
    """Every shape of one look-ahead, as numbers plus the formulas behind them."""
    enc = config.encoder
    p = streaming_params(enc, att_context_size)
    s, (left, right) = p.subsampling_factor, p.att_context_size
    hop_ms = 1000 * config.preprocessor.n_window_stride / config.preprocessor.sample_rate
    t_sub = int(subsampled_length(p.window, s))
    cache = [enc.n_layers, p.last_channel_cache_size, enc.d_model]
    conv = [enc.n_layers, enc.d_model, p.conv_cache_size]
    fill = [min((k + 1) * p.valid_out_len, left) for k in range(min(6, -(-left // p.valid_out_len) + 1))]
    c = {
        "att_context_size": [left, right],
        "arithmetic": {
            "subsampling_factor": s,
            "new_mel_frames_per_chunk": {"value": p.chunk_size, "formula": f"s*(R+1) = {s}*({right}+1)"},
            "pre_encode_cache_frames": {"value": p.pre_encode_cache_size, "formula": f"s+1 = {s}+1"},
            "mel_frames_per_call": {"value": p.window, "formula": f"{p.pre_encode_cache_size} + {p.chunk_size}"},
            "subsampled_frames": {
                "value": t_sub,
                "formula": f"n -> floor(n/2)+1, {int.bit_length(s) - 1} times, from {p.window}",
            },
            "drop_extra_pre_encoded": {"value": p.drop_extra_pre_encoded, "formula": "1 + (s+1-1)//s"},
            "encoder_frames_per_call": {
                "value": p.valid_out_len,
                "formula": f"{t_sub} - {p.drop_extra_pre_encoded} = R+1 = {right}+1",
            },
            "chunk_ms": p.chunk_size * hop_ms,
            "lookahead_ms": right * s * hop_ms,
            "left_context_ms": left * s * hop_ms,
            "attention_mask": {
                "chunk": p.att_chunk_size,
                "left_chunks": p.att_left_chunks,
                "formula": f"chunks of R+1 = {right + 1} frames seeing {left}//{right + 1} chunks back",
            },
        },
        "encoder": {
            "audio_signal": {
                "dtype": "float32",
                "first": ["B", enc.feat_in, p.window],
                "later": ["B", enc.feat_in, p.window],
                "note": f"first: {p.pre_encode_cache_size} zero frames + mel[0:{p.chunk_size}]; chunk k: "
                f"mel[k*{p.chunk_size}-{p.pre_encode_cache_size} : (k+1)*{p.chunk_size}]; "
                f"[B, feat_in, T]: time last",
            },
            "length": {
                "dtype": "int64",
                "first": p.window,
                "later": p.window,
                "note": "valid frames incl. the pre-encode frames",
            },
            "cache_last_channel": {
                "dtype": "float32",
                "first": ["B"] + cache,
                "later": ["B"] + cache,
                "note": "first: zeros; then the previous cache_last_channel_next; batch-first "
                "(NeMo's PyTorch layout is layer-first: transpose(0, 1)); the time axis "
                f"must be exactly {left}",
            },
            "cache_last_time": {
                "dtype": "float32",
                "first": ["B"] + conv,
                "later": ["B"] + conv,
                "note": "first: zeros (they are the causal conv's left padding); then the previous "
                f"cache_last_time_next; last axis exactly {p.conv_cache_size}",
            },
            "cache_last_channel_len": {
                "dtype": "int64",
                "first": 0,
                "later": fill,
                "note": f"the previous cache_last_channel_next_len: min(len + {p.valid_out_len}, {left})",
            },
            "outputs": {
                "dtype": "float32",
                "first": ["B", enc.d_model, p.valid_out_len],
                "later": ["B", enc.d_model, p.valid_out_len],
                "note": "[B, d_model, T]: time last",
            },
            "encoded_lengths": {"dtype": "int64", "first": p.valid_out_len, "later": p.valid_out_len},
            "cache_last_channel_next": {"dtype": "float32", "first": ["B"] + cache, "later": ["B"] + cache},
            "cache_last_time_next": {"dtype": "float32", "first": ["B"] + conv, "later": ["B"] + conv},
            "cache_last_channel_next_len": {"dtype": "int64", "first": fill[0], "later": fill[1:] + ["..."]},
        },
        "last_chunk": (
            f"n < {p.chunk_size} new frames: audio_signal [B, {enc.feat_in}, {p.pre_encode_cache_size}+n], "
            f"length {p.pre_encode_cache_size}+n, floor-halved {int.bit_length(s) - 1} times minus "
            f"{p.drop_extra_pre_encoded} encoder frames; a remainder n < {s} is not run (NeMo's streaming "
            f"buffer stops there); in a batch, zero-pad to the others and pass the true length"
        ),
    }
    if config.rnnt is not None:
        r = config.rnnt
        st = [r.pred_rnn_layers, "B", r.pred_hidden]
        c["decoder_joint"] = {
            "encoder_outputs": {"dtype": "float32", "shape": ["B", enc.d_model, 1], "note": "one encoder frame"},
            "targets": {
                "dtype": "int32",
                "shape": ["B", 1],
                "note": f"last emitted token; blank {r.blank_id} before the first",
            },
            "target_length": {"dtype": "int32", "shape": ["B"], "note": "ones"},
            "input_states_1": {"dtype": "float32", "shape": st, "note": "LSTM h, zeros at the start, layer-first"},
            "input_states_2": {"dtype": "float32", "shape": st, "note": "LSTM c"},
            "outputs": {"dtype": "float32", "shape": ["B", 1, 1, r.vocab_size + 1], "note": "logits, no log_softmax"},
            "output_states_1": {
                "dtype": "float32",
                "shape": st,
                "note": "keep only when a token was emitted (blank: keep the old state)",
            },
            "output_states_2": {"dtype": "float32", "shape": st, "note": ""},
        }
    return c


def _fmt(v) -> str:
    return "[" + ", ".join(str(x) for x in v) + "]" if isinstance(v, list) else str(v)


def format_contract(c: dict, header: str = "") -> str:
    a = c["arithmetic"]
    lines = [header] if header else []
    lines.append(
        f"look-ahead att_context_size {c['att_context_size']}: chunk {a['chunk_ms']:.0f} ms, look-ahead "
        f"{a['lookahead_ms']:.0f} ms, left context {a['left_context_ms']:.0f} ms"
    )
    lines.append("arithmetic:")
    for k, v in a.items():
        if isinstance(v, dict) and "value" in v:
            lines.append(f"  {k:<26} = {v['value']:<5} ({v['formula']})")
    m = a["attention_mask"]
    lines.append(f"  {'attention mask':<26} : {m['formula']} (chunk {m['chunk']}, left_chunks {m['left_chunks']})")
    lines.append("encoder call:                      first chunk           later chunks")
    for name, v in c["encoder"].items():
        arrow = "-> " if name in ("outputs", "encoded_lengths") or "_next" in name else "   "
        lines.append(f"  {arrow}{name:<28} {v['dtype']:<8} {_fmt(v['first']):<20}  {_fmt(v['later'])}")
        if v.get("note"):
            lines.append(f"       {v['note']}")
    lines.append(f"last chunk: {c['last_chunk']}")
    if "decoder_joint" in c:
        lines.append("decoder_joint call (one per greedy step):")
        for name, v in c["decoder_joint"].items():
            lines.append(f"  {name:<20} {v['dtype']:<8} {_fmt(v['shape']):<18} {v['note']}")
    return "\n".join(lines)
