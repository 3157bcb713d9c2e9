"""``refimpl`` command line: a thin layer over ``refimpl.api`` (and the other modules' Python APIs).

Exit codes: 0 success, 1 a check failed (crosscheck, golden verify), 2 bad input (a clear message, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from weights_tools import ConfigError, ModelLoadError, io_contract, plan_onnx, read_nemo_config

from . import api
from .fast.encoder import BACKENDS
from .model.audio import AudioError
from .runtime.engines import IMPLS
from .runtime.lookahead import LookAheadError, parse_att_context_size, resolve_att_context_size
from .runtime.loop import ORDERS
from .runtime.tokenizer import Tokenizer
from .tools import golden
from .tools.bench import add_bench_parser
from .tools.check_inputs import check_inputs, format_check, load_inputs
from .tools.contract import chunk_contract, format_contract, stateless_message
from .tools.crosscheck import crosscheck
from .tools.golden import GoldenFormatError
from .tools.report import format_report


def _add_model_args(p, *, engine=True, lookahead=True, impl_default="plain"):
    p.add_argument("--model", required=True, help="folder of NeMo's ONNX export (or one .onnx file, or a .nemo)")
    if lookahead:
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
        p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op and BLAS threads")
        _add_impl_args(p, default=impl_default)


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


def cmd_transcribe(args) -> int:
    notes = []
    t = api.transcribe(
        args.audio,
        args.model,
        decoder=args.decoder,
        engine=args.engine,
        att_context_size=args.att_context_size,
        weights=args.weights,
        impl=args.impl,
        backend=args.backend,
        dtype=_dtype(args),
        threads=args.threads,
        order=args.order,
        notes=notes,
    )
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.json:
        d = t.as_dict()
        print(
            json.dumps(
                {
                    k: d[k]
                    for k in (
                        "text",
                        "tokens",
                        "att_context_size",
                        "decoder",
                        "engine",
                        "chunks",
                        "order",
                        "timestamps",
                        "dropped_tail_frames",
                        "audio_seconds",
                        "seconds",
                    )
                }
            )
        )
    else:
        print(t.text)
        if t.dropped_tail_frames:
            print(
                f"note: the last {t.dropped_tail_frames} mel frames were fewer than one chunk needs and were not "
                f"run, as NeMo's streaming buffer does",
                file=sys.stderr,
            )
    return 0


def _dtype(args):
    return np.float64 if getattr(args, "float64", False) else np.float32


def _progress(args):
    """A tqdm bar on stderr for long audio; off with --quiet and when stderr is not a terminal."""
    if getattr(args, "quiet", False) or not sys.stderr.isatty():
        return None
    from tqdm import tqdm  # only when a bar is shown

    bar = tqdm(unit="chunk", file=sys.stderr, leave=False)

    def on_chunk(i, n):
        bar.total = n
        bar.update(1)

    on_chunk.close = bar.close
    return on_chunk


def _texts(report, tokenizer_model):
    if tokenizer_model is None:
        return None
    tok = Tokenizer(tokenizer_model)
    return {who: {d: tok.decode(t) for d, t in per.items()} for who, per in report.tokens.items()}


def cmd_crosscheck(args) -> int:
    notices = []
    bar = _progress(args)
    try:
        report = crosscheck(
            args.audio,
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
    for n in notices:
        print(f"note: {n}", file=sys.stderr)
    print(format_report(report, texts=_texts(report, plan_onnx(args.model).config.tokenizer_model)))
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json())
    return 0 if report.ok else 1


def cmd_conform(args) -> int:
    from weights_tools.outputs import atomic_write, output_path

    from .tools import conform as conform_mod

    if args.json:
        output_path(args.json, what="--json", example="conform.json")  # refuse before the work, not after
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
    )
    print(conform_mod.format_report(report))
    if args.json:
        text = conform_mod.to_json(report).encode()
        atomic_write(args.json, lambda f: f.write(text), what="--json")
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
        for n in notices:
            print(f"note: {n}", file=sys.stderr)
        print(
            f"wrote {args.output}: {h['n_chunks']} chunks, att_context_size {h['att_context_size']}, "
            f"decoders {h['decoders']}; text: {h['text']}"
        )
        return 0
    notes = []
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
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    print(format_report(report))
    if args.json:
        with open(args.json, "w") as f:
            f.write(report.to_json())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="refimpl", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="stream an audio file through the model and print the text")
    p.add_argument("audio", help="16 kHz mono audio file")
    _add_model_args(p, impl_default="fast")
    p.add_argument(
        "--decoder",
        choices=api.DECODERS,
        help="which head decodes (default: the model's RNNT head if it has one, else its CTC head)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the text")
    _add_order_arg(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("crosscheck", help="run onnxruntime and refimpl side by side; report the first divergence")
    p.add_argument("audio", help="16 kHz mono audio file")
    _add_model_args(p, engine=False)
    p.add_argument(
        "--weights",
        metavar="PATH",
        help="refimpl's weights from here (a .nemo, or another export of the same model) instead of from "
        "the graph under test: checks the graph still computes what the checkpoint says",
    )
    p.add_argument("--layers", action="store_true", help="also compare every layer's intermediate tensors")
    p.add_argument("--float64", action="store_true", help="run refimpl in double precision")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_impl_args(p, default="plain")
    _add_order_arg(p, default="step")
    p.set_defaults(func=cmd_crosscheck)

    p = sub.add_parser(
        "conform",
        help="does sherpa-onnx, onnx-asr or NeMo's export compute what NeMo computes on this audio? which stage "
        "differs, by how much, what it costs",
    )
    p.add_argument("audio", help="16 kHz mono audio file")
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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON to OUT")
    _add_impl_args(p, default="fast")
    p.set_defaults(func=cmd_conform)

    p = sub.add_parser("inspect", help="the exact shapes of every input and output, and the arithmetic behind them")
    _add_model_args(p, engine=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("check-inputs", help="validate your arrays for one encoder call; explain onnxruntime errors")
    _add_model_args(p, engine=False, lookahead=False)
    p.add_argument(
        "inputs", help=".npz with audio_signal, length, cache_last_channel, cache_last_time, cache_last_channel_len"
    )
    p.add_argument("--first-chunk", action="store_true", default=None, help="these inputs are a stream's first call")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_inputs)

    p = sub.add_parser("golden", help="record per-chunk onnxruntime outputs of your deployment; verify them later")
    gsub = p.add_subparsers(dest="golden_command", required=True)
    g = gsub.add_parser("record", help="write golden.npz from onnxruntime on MODEL")
    _add_model_args(g, engine=False)
    g.add_argument("--audio", required=True)
    g.add_argument("-o", "--output", required=True)
    g.add_argument("--threads", type=int, default=1)
    g.set_defaults(func=cmd_golden)
    g = gsub.add_parser("verify", help="replay golden.npz through an engine and compare")
    g.add_argument("golden")
    _add_model_args(g, lookahead=False)
    g.add_argument("--json", metavar="OUT")
    g.set_defaults(func=cmd_golden, engine="onnxruntime")
    add_bench_parser(sub)
    return ap


def _thread_limit(args):
    """``--threads N`` caps BLAS (and OpenMP) pools for the whole command; onnxruntime gets it separately."""
    n = getattr(args, "threads", None)
    if not n:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _thread_limit(args):
            return args.func(args)
    except BrokenPipeError:  # `refimpl inspect ... | head`: stdout closed early; end quietly like any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (
        ModelLoadError,
        ConfigError,
        AudioError,
        LookAheadError,
        GoldenFormatError,
        ValueError,
        FileNotFoundError,
    ) as e:
        print(f"refimpl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
