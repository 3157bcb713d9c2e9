"""``refimpl`` command line: a thin layer over ``refimpl.api`` (and the other modules' Python APIs).

What every command keeps:

- Exit codes: 0 success; 1 a check failed (crosscheck, golden verify, check-inputs, conform found deviations);
  2 bad input: one line on stderr says what was expected, what was found and the fix (argparse's usage errors
  are 2 too); 3 internal error: one line ``refimpl <command>: internal error: <Type>: <message>``, and ``--debug``
  (before or after the command) prints the traceback above it; 130 interrupted (Ctrl-C), no traceback.
- ``--json`` prints the command's JSON document on stdout instead of the text report; notes, progress bars and
  ``wrote FILE`` lines go to stderr. ``--report FILE`` (crosscheck, conform, golden verify) also writes the JSON
  report to FILE, atomically, its path checked before any work.
- ``--threads N``: 1 .. the CPUs this process may use, checked when parsed.
- Audio (transcribe, crosscheck, conform): a file at another rate or with several channels is refused (with the
  sox command that fixes it) unless ``--resample`` (soxr VHQ) or ``--channel N|mean`` say what to do.
- ``-q/--quiet``: no progress bar (there is none when stderr is not a terminal either).

Why one module over ~350 lines: one parser and one thin handler per command (the work is in ``api`` and
``tools``); keeping the whole command line in one file keeps its conventions (exit codes, --json) uniform.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from weights_tools import io_contract, plan_onnx, read_nemo_config
from weights_tools.cli import run_command
from weights_tools.outputs import OutputError, atomic_write, output_path

from . import __version__, api, cli_args
from .fast.encoder import BACKENDS
from .model.audio import AudioError, check_audio_file, load_audio
from .runtime.engines import IMPLS
from .runtime.lookahead import parse_att_context_size, resolve_att_context_size
from .runtime.loop import ORDERS
from .runtime.tokenizer import Tokenizer
from .tools import conform as conform_mod
from .tools import golden, subtitles
from .tools.bench import add_bench_parser
from .tools.check_inputs import check_inputs, format_check, load_inputs
from .tools.contract import chunk_contract, format_contract, stateless_message
from .tools.crosscheck import crosscheck
from .tools.report import format_report

EXIT_CODES = """exit codes:
  0    success
  1    a check failed (crosscheck, golden verify, check-inputs, conform found deviations)
  2    bad input: one line on stderr says what was expected, what was found and the fix
  3    internal error: one line naming it (--debug prints the traceback)
  130  interrupted (Ctrl-C)"""
# Exceptions that mean the input is wrong (the message says how): exit 2. ModelLoadError, ConfigError, AudioError,
# LookAheadError, GoldenFormatError, OutputError, ConformError and ManifestError are all ValueErrors.
BAD_INPUT = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
FORMATS = ("txt", "json", "srt", "vtt")


def version() -> str:
    """The installed distribution's version, else the package's own (a source tree on PYTHONPATH)."""
    try:
        return metadata.version("refimpl")
    except metadata.PackageNotFoundError:
        return __version__


# --- arguments ----------------------------------------------------------------------------------------------


def _add_model_args(p, *, engine=True, lookahead=True, impl_default="plain", lookaheads=False):
    p.add_argument("--model", required=True, help="folder of NeMo's ONNX export (or one .onnx file, or a .nemo)")
    if lookaheads:
        p.add_argument(
            "--att-context-size",
            metavar="L,R|all",
            type=cli_args.att_context_size,
            action="append",
            help="look-ahead to run, e.g. 70,13 (default: the one the encoder file was exported for); with "
            "--manifest repeat it, or say all (every look-ahead the model serves: a .nemo's whole list, an export "
            "the one it was exported for), to score each",
        )
    elif lookahead:
        p.add_argument(
            "--att-context-size",
            metavar="L,R",
            help="look-ahead to run, e.g. 70,13 (default: the one the encoder file was exported for)",
        )
    if engine:
        p.add_argument("--engine", choices=["refimpl", "onnxruntime"], default="refimpl")
        p.add_argument(
            "--weights",
            metavar="PATH",
            help="refimpl takes its weights from here (a .nemo, or another export of the same model)",
        )
        p.add_argument("--float64", action="store_true", help="run refimpl in double precision")
        _add_threads_arg(p, help="onnxruntime intra-op and BLAS threads")
        _add_impl_args(p, default=impl_default)


def _add_threads_arg(p, help="onnxruntime intra-op and BLAS threads"):
    p.add_argument(
        "--threads",
        type=cli_args.threads,
        default=1,
        metavar="N",
        help=f"{help} (1 .. the CPUs this process may use; default 1)",
    )


def _add_order_arg(p, default=None):
    p.add_argument(
        "--order",
        choices=ORDERS,
        default=default,
        help="how refimpl evaluates the chunks: one encoder call per chunk (step), or runs of full chunks in one "
        "masked pass with the same per-chunk results (block; the default where refimpl streams a whole file)",
    )


def _add_impl_args(p, default):
    p.add_argument(
        "--impl",
        choices=IMPLS,
        default=default,
        help=f"refimpl's implementation: the readable NumPy reference (plain) or the fast path that keeps "
        f"projected keys/values of cached frames (fast); same results within the tolerance table "
        f"(default {default})",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="with --impl fast: its kernels, Numba (default) or their NumPy twins (no Numba)",
    )


def _add_audio_args(p):
    p.add_argument(
        "--resample",
        action="store_true",
        help="resample a file at another rate to the model's (soxr VHQ) instead of refusing it",
    )
    p.add_argument(
        "--channel",
        type=cli_args.channel,
        metavar="N|mean",
        help="make a multichannel file mono: take channel N (0-based), or average them (mean), instead of refusing it",
    )


def _add_report_args(p, what):
    p.add_argument("--json", action="store_true", help=f"print the {what} as JSON instead of the text report")
    p.add_argument(
        "--report", metavar="FILE", help=f"also write the {what} as JSON to FILE (atomically; checked before any work)"
    )


def _add_debug_arg(p, *, top=False):
    """``--debug`` before or after the command: the sub-parsers' default is SUPPRESS, so that their absent flag does
    not overwrite the top-level one."""
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="on an error, print the traceback above its one line",
    )


def _subparser(sub, name, **kw):
    p = sub.add_parser(name, **kw)
    _add_debug_arg(p)
    return p


# --- shared pieces of the commands --------------------------------------------------------------------------


def _dtype(args):
    return np.float64 if getattr(args, "float64", False) else np.float32


def _bar(args, *, unit: str, total=None):
    """A tqdm bar on stderr; None with --quiet and when stderr is not a terminal."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # only when a bar is shown

    return tqdm(total=total, unit=unit, file=sys.stderr, leave=False)


def _progress(args):
    """A per-chunk callback ``on_chunk(i, n)`` driving a bar (see ``_bar``), or None."""
    bar = _bar(args, unit="chunk")
    if bar is None:
        return None

    def on_chunk(i, n):
        bar.total = n
        bar.update(1)

    on_chunk.close = bar.close
    return on_chunk


def _say(text: str, *, err: bool = False, bar=None) -> None:
    """One line on stdout (or stderr), written around a progress bar when one is shown."""
    stream = sys.stderr if err else sys.stdout
    if bar is not None:
        bar.write(text, file=stream)
    else:
        print(text, file=stream)


def _notes(notes, bar=None) -> None:
    for n in notes:
        _say(f"note: {n}", err=True, bar=bar)


def _add_plot_arg(p, what: str) -> None:
    p.add_argument(
        "--plot",
        metavar="OUT.png",
        help=f"also draw {what} to OUT.png (needs matplotlib: pip install 'refimpl[plots]')",
    )


def _plot_path(args, example: str):
    """``--plot OUT.png`` checked before any work: a writable path, and matplotlib there to draw it."""
    if args.plot is None:
        return None
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib, which is not installed: pip install 'refimpl[plots]'")
    return output_path(args.plot, what="--plot", example=example)


def _save_plot(path, make_figure) -> None:
    from . import plots  # imports matplotlib: only when a picture is asked for

    plots.save(make_figure(plots), path)
    _say(f"wrote {path}", err=True)


def _report_path(args, example: str):
    """``--report FILE`` checked before any work (None without it)."""
    return None if args.report is None else output_path(args.report, what="--report", example=example)


def _write(path, text: str, what: str, bar=None) -> None:
    data = text.encode()
    atomic_write(path, lambda f: f.write(data), what=what)
    _say(f"wrote {path}", err=True, bar=bar)


def _audio_input(args, model, notices: list):
    """The audio file as given, or, with --resample / --channel, its samples made mono at the model's rate."""
    if not args.resample and args.channel is None:
        return args.audio
    rate = plan_onnx(model).config.preprocessor.sample_rate
    return load_audio(args.audio, sample_rate=rate, resample=args.resample, channel=args.channel, notices=notices)


# --- transcribe ---------------------------------------------------------------------------------------------


def cmd_transcribe(args) -> int:
    if bool(args.audio) == bool(args.manifest):
        raise ValueError(
            "give the audio files to transcribe (AUDIO [AUDIO ...]) or a NeMo manifest (--manifest FILE), "
            + ("not both" if args.audio else "found neither")
        )
    return _transcribe_manifest(args) if args.manifest else _transcribe_files(args)


def _open_model(args, att_context_size, notes):
    return api.open_model(
        args.model,
        engine=args.engine,
        att_context_size=att_context_size,
        weights=args.weights,
        impl=args.impl,
        backend=args.backend,
        dtype=_dtype(args),
        threads=args.threads,
        notes=notes,
    )


def _check_audio_files(m, paths, args, where=None) -> None:
    """Refuse a bad audio file among many before any is transcribed (``where(i)`` names the i-th's origin)."""
    rate = m.config.preprocessor.sample_rate
    for i, path in enumerate(paths):
        try:
            check_audio_file(path, sample_rate=rate, resample=args.resample, channel=args.channel)
        except (AudioError, FileNotFoundError) as e:
            if where is None:
                raise
            raise api.ManifestError(f"{where(i)}: {e}") from None


def output_files(audio: list, output_dir, formats) -> dict:
    """audio path -> [(format, path of ``<stem>.<format>`` in ``output_dir``)], every path checked (an
    OutputError before any work, two audio files of one stem included)."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"-o/--output-dir {str(folder)!r} is a file; pass a folder (the files are named <stem>.<ext>)"
        )
    stems: dict = {}
    for a in audio:
        stem = Path(a).stem
        if stem in stems and stems[stem] != a:
            raise OutputError(
                f"{stems[stem]!r} and {a!r} would both be written as {stem}.<ext> in {str(folder)!r}; rename one, or "
                f"transcribe them into different folders"
            )
        stems[stem] = a
    return {
        a: [(f, output_path(folder / f"{Path(a).stem}.{f}", what="-o/--output-dir", example="out")) for f in formats]
        for a in dict.fromkeys(audio)
    }


def transcript_document(t) -> dict:
    """The JSON object of one transcribed file (``--json``, ``-f json``)."""
    d = t.as_dict()
    keys = (
        "audio_filepath",
        "text",
        "tokens",
        "timestamps",
        "att_context_size",
        "decoder",
        "engine",
        "chunks",
        "order",
        "dropped_tail_frames",
        "audio_seconds",
        "seconds",
        "notes",
    )
    return {k: d[k] for k in keys}


def _dropped_tail_note(t) -> str:
    return (
        f"{t.audio_filepath!r}: the last {t.dropped_tail_frames} mel frames were fewer than one chunk needs and were "
        f"not run, as NeMo's streaming buffer does"
    )


def _frame_seconds(config) -> float:
    """Seconds of audio per encoder frame: what a token's timestamp counts in."""
    pre = config.preprocessor
    return config.encoder.subsampling_factor * pre.n_window_stride / pre.sample_rate


def file_text(t, fmt: str, pieces: list, frame_seconds: float) -> str:
    """What ``-f fmt`` writes for transcript ``t`` (``pieces``: its tokens' SentencePiece pieces)."""
    if fmt == "txt":
        return t.text + "\n"
    if fmt == "json":
        return json.dumps(transcript_document(t), indent=1) + "\n"
    cues = subtitles.cues(subtitles.words(pieces, t.timestamps, frame_seconds))
    return subtitles.srt(cues) if fmt == "srt" else subtitles.vtt(cues)


def _one_lookahead(asked):
    if asked and (cli_args.ALL in asked or len(set(asked)) > 1):
        raise ValueError(
            "several look-aheads (--att-context-size repeated, or all) are scored over a --manifest; transcribe "
            "audio files at one"
        )
    return asked[0] if asked else None


def _transcribe_files(args) -> int:
    att = _one_lookahead(args.att_context_size)
    if args.format is not None and args.output_dir is None:
        raise ValueError(f"-f/--format {args.format} names the files -o/--output-dir writes: give -o DIR too")
    formats = FORMATS if args.format == "all" else (args.format or "txt",)
    outputs = output_files(args.audio, args.output_dir, formats) if args.output_dir is not None else {}
    notes: list = []
    m = _open_model(args, att, notes)
    _notes(notes)
    _check_audio_files(m, args.audio, args)
    several = len(args.audio) > 1
    bar = _bar(args, unit="file", total=len(args.audio))
    try:
        for path in args.audio:
            t = api.transcribe(
                path,
                m,
                decoder=args.decoder,
                att_context_size=att,
                order=args.order,
                resample=args.resample,
                channel=args.channel,
                notes=[],
            )
            if t.dropped_tail_frames:
                t.notes.append(_dropped_tail_note(t))
            _notes(t.notes, bar)
            if args.json:
                _say(json.dumps(transcript_document(t)), bar=bar)
            else:
                _say(f"{path}: {t.text}" if several else t.text, bar=bar)
            if outputs:
                eng = m.engine_for(t.att_context_size)
                pieces = m.tokenizer.pieces(t.tokens)
                for fmt, out in outputs[path]:
                    _write(out, file_text(t, fmt, pieces, _frame_seconds(eng.config)), "-o/--output-dir", bar)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return 0


def _transcribe_manifest(args) -> int:
    if args.output_dir is not None or args.format is not None:
        raise ValueError(
            "-o/--output-dir and -f write transcripts of AUDIO files; with --manifest, --json gives every entry's "
            "pred_text"
        )
    entries = api.read_manifest(args.manifest)
    asked = args.att_context_size
    first = next((a for a in asked or () if a != cli_args.ALL), None)
    notes: list = []
    m = _open_model(args, first, notes)
    _notes(notes)
    atts = api.lookaheads(m, asked)
    for att in atts:
        m.engine_for(att)  # a look-ahead the model does not serve is refused before any entry is transcribed
    where = lambda i: f"manifest {str(args.manifest)!r} line {entries[i].line}"  # noqa: E731
    _check_audio_files(m, [e.audio_filepath for e in entries], args, where)
    bar = _bar(args, unit="file", total=len(entries) * len(atts))

    def on_entry(entry, t):
        _notes(t.notes, bar)
        if bar is not None:
            bar.update(1)

    try:
        results = [
            api.evaluate_manifest(
                entries,
                m,
                att_context_size=att,
                decoder=args.decoder,
                order=args.order,
                resample=args.resample,
                channel=args.channel,
                notes=[],
                on_entry=on_entry,
            )
            for att in atts
        ]
    finally:
        if bar is not None:
            bar.close()
    doc = {"manifest": str(args.manifest), "entries": len(entries), "results": results}
    print(json.dumps(doc, indent=1) if args.json else format_scores(doc))
    return 0


def format_scores(doc: dict) -> str:
    """The text report of ``transcribe --manifest``: WER and CER per look-ahead."""
    lines = [f"{doc['manifest']}: {doc['entries']} entries"]
    for r in doc["results"]:
        e = r["errors"]
        lines.append(
            f"att_context_size {r['att_context_size']} {r['decoder']}: WER {100 * r['wer']:.2f}% "
            f"({sum(e.values())} errors in {r['words']} words: {e['substitutions']} substitutions, "
            f"{e['deletions']} deletions, {e['insertions']} insertions), CER {100 * r['cer']:.2f}%"
        )
    return "\n".join(lines)


# --- the other commands -------------------------------------------------------------------------------------


def _texts(report, tokenizer_model):
    if tokenizer_model is None:
        return None
    tok = Tokenizer(tokenizer_model)
    return {who: {d: tok.decode(t) for d, t in per.items()} for who, per in report.tokens.items()}


def cmd_crosscheck(args) -> int:
    report_path = _report_path(args, "crosscheck.json")
    plot_path = _plot_path(args, "crosscheck.png")
    notices: list = []
    audio = _audio_input(args, args.model, notices)
    bar = _progress(args)
    try:
        report = crosscheck(
            audio,
            args.model,
            att_context_size=args.att_context_size,
            weights=args.weights,
            layers=args.layers,
            dtype=_dtype(args),
            impl=args.impl,
            backend=args.backend,
            threads=args.threads,
            on_chunk=bar,
            notices=notices,
            order=args.order,
        )
    finally:
        if bar is not None:
            bar.close()
    _notes(notices)
    if args.json:
        print(report.to_json())
    else:
        print(format_report(report, texts=_texts(report, plan_onnx(args.model).config.tokenizer_model)))
    if report_path is not None:
        _write(report_path, report.to_json(), "--report")
    if plot_path is not None:
        _save_plot(plot_path, lambda plots: plots.divergence_heatmap(report))
    return 0 if report.ok else 1


def cmd_conform(args) -> int:
    report_path = _report_path(args, "conform.json")
    plot_path = _plot_path(args, "conform.png")
    notices: list = []
    report = conform_mod.conform(
        args.audio,
        args.model,
        args.runtime,
        features=args.features,
        weights=args.weights,
        head=args.head,
        tail_padding_seconds=args.tail_padding,
        impl=args.impl,
        threads=args.threads,
        use_package=not args.emulate,
        resample=args.resample,
        channel=args.channel,
        notices=notices,
    )
    _notes(notices)
    print(conform_mod.to_json(report) if args.json else conform_mod.format_report(report))
    if report_path is not None:
        _write(report_path, conform_mod.to_json(report), "--report")
    if plot_path is not None:
        _save_plot(plot_path, lambda plots: plots.conform_costs(report))
    return 0 if report.ok else 1


def cmd_inspect(args) -> int:
    nemo = Path(args.model).suffix == ".nemo"
    config = read_nemo_config(args.model) if nemo else plan_onnx(args.model).config  # no weights read
    att = resolve_att_context_size(
        config.encoder, parse_att_context_size(args.att_context_size), fixed_by_file=not nemo, what=args.model
    )
    config = config.with_att_context_size(att)
    contract = chunk_contract(config)
    graph = [] if nemo else io_contract(args.model)
    if args.json:
        print(
            json.dumps(
                {"model": args.model, "config": config.to_dict(), "contract": contract, "graphs": graph},
                indent=1,
                default=str,
            )
        )
        return 0
    kind = (
        ("checkpoint; look-aheads " + str([list(a) for a in config.encoder.att_context_sizes]))
        if nemo
        else f"ONNX export; encoder exported for att_context_size {list(config.encoder.att_context_size)}"
    )
    print(f"model {args.model} ({kind})")
    if not config.encoder.has_cache_io:
        print("WARNING: " + stateless_message(args.model))
    print(format_contract(contract))
    if graph:
        print("as declared in the graphs (symbolic dims are the exporter's names):")
        for r in graph:
            print(f"  {r['graph']:<28} {r['kind']:<6} {r['name']:<28} {r['dtype']:<8} {r['shape']}")
    return 0


def cmd_check_inputs(args) -> int:
    inputs = load_inputs(args.inputs)
    report = check_inputs(args.model, inputs, first_chunk=args.first_chunk)
    if args.json:
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(format_check(report, plan_onnx(args.model).config))
    return 0 if report.ok else 1


def cmd_golden(args) -> int:
    if args.golden_command == "record":
        notices: list = []
        h = golden.record(
            args.model,
            args.audio,
            args.output,
            att_context_size=args.att_context_size,
            threads=args.threads,
            notices=notices,
        )
        _notes(notices)
        print(
            f"wrote {args.output}: {h['n_chunks']} chunks, att_context_size {h['att_context_size']}, "
            f"decoders {h['decoders']}; text: {h['text']}"
        )
        return 0
    report_path = _report_path(args, "verify.json")
    notes: list = []
    report = golden.verify(
        args.golden,
        args.model,
        engine=args.engine,
        weights=args.weights,
        impl=args.impl,
        backend=args.backend,
        dtype=_dtype(args),
        threads=args.threads,
        notes=notes,
    )
    _notes(notes)
    print(report.to_json() if args.json else format_report(report))
    if report_path is not None:
        _write(report_path, report.to_json(), "--report")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="refimpl",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_debug_arg(ap, top=True)
    sub = ap.add_subparsers(dest="command", required=True)

    p = _subparser(
        sub,
        "transcribe",
        help="stream audio files (or a NeMo manifest's, scored: WER, CER) through the model and print the text",
    )
    p.add_argument("audio", nargs="*", metavar="AUDIO", help="audio files at the model's rate (16 kHz), mono")
    p.add_argument(
        "--manifest",
        metavar="FILE",
        help="NeMo's manifest (JSON lines with audio_filepath, duration, text): transcribe every entry and print WER "
        "and CER against its text, for each look-ahead asked",
    )
    _add_model_args(p, impl_default="fast", lookahead=False, lookaheads=True)
    p.add_argument(
        "--decoder",
        choices=api.DECODERS,
        help="which head decodes (default: the model's RNNT head if it has one, else its CTC head)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of the text: one object per audio file, one a line; with --manifest the scores",
    )
    p.add_argument(
        "-o", "--output-dir", metavar="DIR", help="also write <stem>.<format> there for each audio file, atomically"
    )
    p.add_argument(
        "-f",
        "--format",
        choices=(*FORMATS, "all"),
        help="what -o writes: the text (txt, the default), the JSON object (json), subtitles of word cues (srt, "
        "vtt), or all four",
    )
    _add_audio_args(p)
    _add_order_arg(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_transcribe)

    p = _subparser(sub, "crosscheck", help="run onnxruntime and refimpl side by side; report the first divergence")
    p.add_argument("audio", help="audio file at the model's rate (16 kHz), mono")
    _add_model_args(p, engine=False)
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="refimpl's weights from here (a .nemo, or another export of the same model) instead of from "
        "the graph under test: checks the graph still computes what the checkpoint says",
    )
    p.add_argument("--layers", action="store_true", help="also compare every layer's intermediate tensors")
    p.add_argument("--float64", action="store_true", help="run refimpl in double precision")
    _add_threads_arg(p)
    _add_report_args(p, "report")
    _add_plot_arg(p, "the chunk x layer (with --layers) divergence heat map")
    _add_audio_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_impl_args(p, default="plain")
    _add_order_arg(p, default="step")
    p.set_defaults(func=cmd_crosscheck)

    p = _subparser(
        sub,
        "conform",
        help="does sherpa-onnx, onnx-asr or NeMo's export compute what NeMo computes on this audio? which stage "
        "differs, by how much, what it costs",
    )
    p.add_argument("audio", help="audio file at 16 kHz, mono")
    p.add_argument(
        "--model",
        required=True,
        help="the runtime's model folder: sherpa-onnx's (encoder.onnx + decoder.onnx + joiner.onnx + tokens.txt, "
        "or model.onnx for CTC; int8 too), onnx-asr's, or NeMo's own export",
    )
    p.add_argument(
        "--runtime",
        required=True,
        choices=("sherpa-onnx", "onnx-asr", "nemo"),
        help="the runtime to check; nemo = the folder's graphs driven exactly as NeMo streams (the control)",
    )
    p.add_argument(
        "--features",
        metavar="FEATS.npz",
        help="your own front end's output for this audio ([T, 80] or [80, T]; a 'layout' entry 'TF'/'FT' names it):"
        " diagnosed against NeMo's log-mel and run in place of the runtime's features",
    )
    p.add_argument("--weights", metavar="PATH", help="NeMo's side takes its weights from here (e.g. the .nemo)")
    p.add_argument("--head", choices=("rnnt", "ctc"), help="which head (default: the folder's)")
    p.add_argument(
        "--tail-padding",
        type=float,
        metavar="SECONDS",
        help="sherpa-onnx: seconds of silence appended before input_finished (default 0.66, as its examples do)",
    )
    p.add_argument("--emulate", action="store_true", help="use refimpl's emulation even when the package is installed")
    _add_threads_arg(p)
    _add_report_args(p, "report")
    _add_plot_arg(p, "what each deviating stage costs")
    _add_audio_args(p)
    _add_impl_args(p, default="fast")
    p.set_defaults(func=cmd_conform)

    p = _subparser(sub, "inspect", help="the exact shapes of every input and output, and the arithmetic behind them")
    _add_model_args(p, engine=False)
    p.add_argument("--json", action="store_true", help="print the contract as JSON instead of the text")
    p.set_defaults(func=cmd_inspect)

    p = _subparser(sub, "check-inputs", help="validate your arrays for one encoder call; explain onnxruntime errors")
    _add_model_args(p, engine=False, lookahead=False)
    p.add_argument(
        "inputs", help=".npz with audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len"
    )
    p.add_argument("--first-chunk", action="store_true", default=None, help="these inputs are a stream's first call")
    p.add_argument("--json", action="store_true", help="print the check as JSON instead of the text")
    p.set_defaults(func=cmd_check_inputs)

    p = _subparser(sub, "golden", help="record per-chunk onnxruntime outputs of your deployment; verify them later")
    gsub = p.add_subparsers(dest="golden_command", required=True)
    g = _subparser(gsub, "record", help="write golden.npz from onnxruntime on MODEL")
    _add_model_args(g, engine=False)
    g.add_argument("--audio", required=True)
    g.add_argument("-o", "--output", required=True)
    _add_threads_arg(g)
    g.set_defaults(func=cmd_golden)
    g = _subparser(gsub, "verify", help="replay golden.npz through an engine and compare")
    g.add_argument("golden")
    _add_model_args(g, lookahead=False)
    _add_report_args(g, "report")
    g.set_defaults(func=cmd_golden, engine="onnxruntime")
    _add_debug_arg(add_bench_parser(sub))
    return ap


def _thread_limit(args):
    """``--threads N`` caps BLAS (and OpenMP) pools for the whole command; onnxruntime gets it separately."""
    n = getattr(args, "threads", None)
    if not n:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def _command(args) -> str:
    """The command as the user typed it, for the one-line messages ("golden verify")."""
    return " ".join(c for c in (args.command, getattr(args, "golden_command", None)) if c)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> int:
        with _thread_limit(args):
            return args.func(args)

    return run_command(f"refimpl {_command(args)}", run, debug=args.debug, bad_input=BAD_INPUT)


if __name__ == "__main__":
    sys.exit(main())
