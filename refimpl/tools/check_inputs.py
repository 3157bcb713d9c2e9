"""Validate a user's arrays for one encoder call before running anything, explain each problem in plain
words, then run onnxruntime on them and translate its error (``Where ... 20 by 70``) into the input that caused
it (``refimpl check-inputs``).

Why one module over ~350 lines: one check per encoder input (audio, lengths, each cache), each with its
plain-words explanation; they are read as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from weights_tools import find_export, plan_onnx, streaming_params
from weights_tools.errors import one_line

from .contract import stateless_message
from .ort_errors import explain_ort_error

ENCODER_INPUTS = ("audio_signal", "length", "cache_last_channel", "cache_last_time", "cache_last_channel_len")


@dataclass(frozen=True)
class Problem:
    input: str
    severity: str  # "error" or "warning"
    message: str


@dataclass
class CheckReport:
    model: str
    problems: list = field(default_factory=list)
    onnxruntime_error: str | None = None
    explanation: str | None = None
    output_shapes: dict | None = None
    stateless: bool = False

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems) and self.onnxruntime_error is None

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "model": self.model,
            "stateless": self.stateless,
            "problems": [p.__dict__ for p in self.problems],
            "onnxruntime_error": self.onnxruntime_error,
            "explanation": self.explanation,
            "output_shapes": self.output_shapes,
        }


def _check_finite(name: str, a: np.ndarray, out: list) -> None:
    """NaN/inf in a float input: onnxruntime runs on them without a word, and they spread to every output and,
    through the caches, to every later chunk."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    finite = np.isfinite(a)
    if not finite.all():
        bad = np.argwhere(~finite)
        out.append(
            Problem(
                name,
                "error",
                f"holds {len(bad)} non-finite value(s) (NaN or inf), the first at index {bad[0].tolist()}: "
                f"onnxruntime runs on them silently and they spread to every output and, through the caches, to "
                f"every later chunk; find where they come from (the features, or a cache fed back from a bad call)",
            )
        )


def _check_audio(x, cfg, p, out):
    f, w = cfg.feat_in, p.window
    if x.ndim != 3:
        return out.append(Problem("audio_signal", "error", f"expected 3 axes [B, {f}, T], found shape {list(x.shape)}"))
    if x.dtype != np.float32:
        out.append(Problem("audio_signal", "error", f"expected float32, found {x.dtype}"))
    _check_finite("audio_signal", x, out)
    if x.shape[1] != f:
        if x.shape[2] == f:
            return out.append(
                Problem(
                    "audio_signal",
                    "error",
                    f"shape {list(x.shape)} looks like [B, T, {f}] (time-major); the export wants "
                    f"[B, {f}, T] with time last: use audio_signal.transpose(0, 2, 1)",
                )
            )
        return out.append(Problem("audio_signal", "error", f"axis 1 must be the {f} mel bins, found {x.shape[1]}"))
    t = x.shape[2]
    pre, chunk, s = p.pre_encode_cache_size, p.chunk_size, p.subsampling_factor
    need = (
        f"{w} mel frames are needed: {pre} pre-encode frames (s+1 = {s}+1) + {chunk} new frames "
        f"(s*(R+1) = {s}*({p.att_context_size[1]}+1))"
    )
    if t == w:
        return
    if t <= pre:
        out.append(
            Problem(
                "audio_signal",
                "error",
                f"{t} mel frames: after subsampling and dropping {p.drop_extra_pre_encoded} frames no "
                f"encoder frame is left (onnxruntime then fails with 'Invalid input shape: {{0}}' in layer "
                f"0's conv, or 'Where ... by {p.last_channel_cache_size}'); {need}",
            )
        )
    elif t == chunk:
        out.append(
            Problem(
                "audio_signal",
                "error",
                f"{t} mel frames = one chunk without its {pre} pre-encode frames: prepend the previous "
                f"chunk's last {pre} mel frames ({pre} zero frames before the first chunk); the export drops "
                f"{p.drop_extra_pre_encoded} subsampled frames every call, so this gives "
                f"{int(p.encoder_frames(t))} encoder frames instead of {p.valid_out_len}; {need}",
            )
        )
    elif t == 1 + s * p.att_context_size[1]:
        out.append(
            Problem(
                "audio_signal",
                "error",
                f"{t} mel frames is NeMo's eager first chunk (chunk_size[0] = 1 + s*R) without pre-encode "
                f"frames; the export always drops {p.drop_extra_pre_encoded} frames, giving "
                f"{int(p.encoder_frames(t))} encoder frames instead of {p.valid_out_len}: feed {pre} zero "
                f"frames + {chunk} frames ({need})",
            )
        )
    elif t > w:
        out.append(
            Problem(
                "audio_signal",
                "error",
                f"{t} mel frames is more than one chunk ({w}): the export slices its output to "
                f"{p.valid_out_len} frames while the cache absorbs all {int(p.encoder_frames(t))}, so speech is "
                f"silently lost; feed one chunk per call ({need})",
            )
        )
    else:
        out.append(
            Problem(
                "audio_signal",
                "warning",
                f"{t} mel frames is shorter than a chunk ({w}): only the last chunk of a stream may be, "
                f"and it gives {int(p.encoder_frames(t))} encoder frames; {need}",
            )
        )


def _check_cache(name, a, want, b, cfg, p, out, t_enc):
    axes = "[B, n_layers, cache, d_model]" if name == "cache_last_channel" else "[B, n_layers, d_model, conv_left]"
    if a.dtype != np.float32:
        out.append(Problem(name, "error", f"expected float32, found {a.dtype}"))
    _check_finite(name, a, out)
    if a.ndim != 4:
        return out.append(Problem(name, "error", f"expected 4 axes {axes} = {want}, found {list(a.shape)}"))
    if a.shape[0] == cfg.n_layers and a.shape[1] == b and b != cfg.n_layers:
        return out.append(
            Problem(
                name,
                "error",
                f"shape {list(a.shape)} is PyTorch's layer-first layout [n_layers, B, ...]; the "
                f"export wants batch-first {axes} = {want}: use {name}.transpose(1, 0, 2, 3)",
            )
        )
    if b == cfg.n_layers and a.shape[:2] == (b, b):
        out.append(
            Problem(
                name,
                "warning",
                f"batch size {b} equals n_layers {cfg.n_layers}: a layer-first cache "
                f"would have the same shape; make sure it is batch-first {axes}",
            )
        )
    for axis, (found, expect) in enumerate(zip(a.shape, want)):
        if found == expect:
            continue
        if axis == 2 and name == "cache_last_channel":
            msg = (
                f"its time axis must be exactly {expect} rows (the left context, baked into the attention mask), "
                f"found {found}: don't trim it to cache_last_channel_len, and check the model was exported for "
                f"this att_context_size; onnxruntime fails with 'Where ... {found + t_enc} by "
                f"{expect + t_enc}'"
            )
        elif axis == 3 and name == "cache_last_time":
            msg = (
                f"its last axis must be exactly {expect} (kernel-1 of the causal depthwise conv), found {found}; "
                f"onnxruntime fails with a broadcast '{found + t_enc - expect} by {t_enc}'"
            )
        else:
            msg = f"axis {axis} must be {expect} ({axes} = {want}), found {found}"
        out.append(Problem(name, "error", msg))


def _numeric_arrays(inputs: dict, names, out: list) -> dict:
    """The inputs that are numeric arrays (as NumPy arrays); a Problem for each encoder input that is not one
    (None, text, ragged lists, Python objects), which then takes no part in the other checks."""
    arrays = {}
    for n, v in inputs.items():
        try:
            a = np.asarray(v)
            why = f"has dtype {a.dtype}" if a.dtype.kind not in "biufc" else ""
        except (ValueError, TypeError) as e:  # ragged nested lists, objects numpy cannot make an array of
            why = f"cannot be made an array ({one_line(e)})"
        if not why:
            arrays[n] = a
        elif n in names:
            out.append(
                Problem(
                    n,
                    "error",
                    f"is a {type(v).__name__} that {why}; pass a NumPy array "
                    f"({'float32' if n in ('audio_signal', 'cache_last_channel', 'cache_last_time') else 'int64'})",
                )
            )
    return arrays


def check_encoder_inputs(inputs: dict, config, *, first_chunk: bool | None = None) -> list:
    """Problems with one encoder call's inputs (export layouts), for ``config``'s look-ahead."""
    cfg, p = config.encoder, streaming_params(config.encoder)
    out: list = []
    names = ENCODER_INPUTS if cfg.has_cache_io else ENCODER_INPUTS[:2]
    inputs = _numeric_arrays(inputs, names, out)
    for n in names:
        if n not in inputs and not any(pr.input == n for pr in out):
            out.append(Problem(n, "error", f"missing: one encoder call takes {', '.join(names)}"))
    for n in inputs:
        if n not in names:
            hint = (
                " (saved without names? use np.savez(path, audio_signal=..., length=..., ...))"
                if n.startswith("arr_")
                else ""
            )
            out.append(
                Problem(n, "warning", f"not an input of this encoder (it takes {', '.join(names)}); ignored{hint}")
            )
    x = inputs.get("audio_signal")
    if x is not None:
        _check_audio(np.asarray(x), cfg, p, out)
    b = np.asarray(x).shape[0] if x is not None and np.asarray(x).ndim == 3 else None
    t = np.asarray(x).shape[2] if b is not None and np.asarray(x).shape[1] == cfg.feat_in else None
    t_enc = int(p.encoder_frames(t)) if t is not None else p.valid_out_len
    for n in ("length", "cache_last_channel_len"):
        if n in inputs and n in names:
            _check_lengths(n, np.asarray(inputs[n]), b, t, p, out, inputs, first_chunk)
    if cfg.has_cache_io and b is not None:
        for n, want in (
            ("cache_last_channel", [b, cfg.n_layers, p.last_channel_cache_size, cfg.d_model]),
            ("cache_last_time", [b, cfg.n_layers, cfg.d_model, p.conv_cache_size]),
        ):
            if n in inputs:
                _check_cache(n, np.asarray(inputs[n]), want, b, cfg, p, out, t_enc)
    return out


def _check_lengths(n, v, b, t, p, out, inputs, first_chunk):
    if v.dtype != np.int64:
        out.append(
            Problem(
                n,
                "error",
                f"expected int64, found {v.dtype} (onnxruntime: 'Unexpected input data type. "
                f"Actual: (tensor({v.dtype})), expected: (tensor(int64))'): use .astype(np.int64)",
            )
        )
    if v.ndim != 1 or (b is not None and v.shape[0] != b):
        return out.append(Problem(n, "error", f"expected shape [B] = [{b}], found {list(v.shape)}"))
    if v.dtype.kind not in "iu":
        return None  # its values cannot be counts: the dtype problem above says what to pass
    if (v < 0).any():
        return out.append(
            Problem(
                n,
                "error",
                f"values {v.tolist()} are negative: {n} counts "
                + ("valid mel frames of audio_signal" if n == "length" else "valid rows of cache_last_channel")
                + " (0 or more)",
            )
        )
    if n == "length" and t is not None:
        if (v > t).any():
            out.append(
                Problem(
                    n,
                    "error",
                    f"length {v.tolist()} is more than the {t} frames of audio_signal: "
                    f"it must count the valid frames of the array, pre-encode frames included",
                )
            )
        elif (v < t).any():
            out.append(
                Problem(
                    n,
                    "warning",
                    f"length {v.tolist()} is less than the {t} frames of audio_signal: right "
                    f"only for a zero-padded last chunk of a stream",
                )
            )
    if n == "cache_last_channel_len":
        c = p.last_channel_cache_size
        if (v < 0).any() or (v > c).any():
            out.append(Problem(n, "error", f"values {v.tolist()} must be in 0..{c} (rows of cache_last_channel)"))
        if first_chunk and (v != 0).any():
            out.append(Problem(n, "error", f"must be 0 at the first chunk (the cache is empty), found {v.tolist()}"))
        cache = inputs.get("cache_last_channel")
        if (
            cache is not None
            and np.asarray(cache).ndim == 4
            and np.asarray(cache).shape[0] == len(v)
            and np.asarray(cache).dtype.kind == "f"
            and np.asarray(cache).size > 0
        ):
            filled = np.abs(np.asarray(cache)).reshape(len(v), -1).max(axis=1) > 0
            if ((v == 0) & filled).any():
                out.append(
                    Problem(
                        n,
                        "warning",
                        f"is 0 for stream(s) {np.flatnonzero((v == 0) & filled).tolist()} "
                        f"whose cache_last_channel holds data: feed back "
                        f"cache_last_channel_next_len, or every cached frame stays masked",
                    )
                )


def check_inputs(model, inputs: dict, *, first_chunk: bool | None = None) -> CheckReport:
    """Static checks, then one onnxruntime run on the arrays exactly as given."""
    import onnxruntime as ort  # heavy (0.35 s, ~20 MB): imported when a check runs

    config = plan_onnx(model).config
    report = CheckReport(
        str(model),
        check_encoder_inputs(inputs, config, first_chunk=first_chunk),
        stateless=not config.encoder.has_cache_io,
    )
    export = find_export(model)
    so = ort.SessionOptions()
    so.log_severity_level = 4
    session = ort.InferenceSession(str(export.encoder or export.ctc), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs() if i.name in inputs}
    try:
        outs = session.run(None, feeds)
        report.output_shapes = {o.name: list(v.shape) for o, v in zip(session.get_outputs(), outs)}
    except Exception as e:  # onnxruntime raises its own exception types; the message is what we translate
        report.onnxruntime_error = str(e)
        report.explanation = explain_ort_error(str(e), inputs, config)
    return report


NPZ_HOW_TO = (
    "np.savez('inputs.npz', audio_signal=..., length=..., cache_last_channel=..., cache_last_time=..., "
    "cache_last_channel_len=...)"
)


class InputsFileError(ValueError):
    """An inputs file check-inputs cannot read: the message says what it expects and how to make one."""


def load_inputs(path) -> dict:
    """The arrays of an .npz of encoder inputs by name; InputsFileError (a ValueError) for anything else."""
    p = Path(path)
    try:
        is_file = p.is_file()
    except OSError as e:  # a name too long for the file system, ...
        raise InputsFileError(f"inputs file {str(p)!r} cannot be opened: {e.strerror or e}") from None
    if not is_file:
        raise FileNotFoundError(
            f"{p}: no such file (expected an .npz with the encoder inputs by name: {', '.join(ENCODER_INPUTS)})"
        )
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise InputsFileError(
            f"{p} is a single .npy array; check-inputs needs an .npz holding every input of one encoder call by "
            f"name ({', '.join(ENCODER_INPUTS)}): make one with {NPZ_HOW_TO}"
        )
    if magic[:4] != b"PK\x03\x04":
        raise InputsFileError(
            f"{p} is not an .npz (zip) file (it starts with {magic!r}); check-inputs needs the encoder inputs by "
            f"name in an .npz: make one with {NPZ_HOW_TO}"
        )
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # zipfile.BadZipFile, zlib.error, ValueError (pickled objects), EOFError ...
        raise InputsFileError(
            f"{p} is not a readable .npz of arrays ({type(e).__name__}: {one_line(e)}); it may be truncated or hold "
            f"Python objects: save plain arrays with {NPZ_HOW_TO}"
        ) from None


def format_check(report: CheckReport, config) -> str:
    p = streaming_params(config.encoder)
    lines = [f"check-inputs {report.model}: encoder exported for att_context_size {list(p.att_context_size)}"]
    if report.stateless:
        lines.append(stateless_message(report.model))
    for pr in report.problems:
        lines.append(f"  {pr.severity.upper():<7} {pr.input}: {pr.message}")
    if not report.problems:
        lines.append("  inputs look right for one call")
    if report.onnxruntime_error:
        first = report.onnxruntime_error.strip().splitlines()[0]
        lines.append(f"onnxruntime failed: {first}")
        lines.append(f"  which means: {report.explanation}")
    else:
        lines.append(f"onnxruntime ran: {report.output_shapes}")
    lines.append("result: " + ("OK" if report.ok else "PROBLEMS FOUND"))
    return "\n".join(lines)
