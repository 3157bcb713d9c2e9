"""``refimpl`` command line: a thin layer over ``refimpl.api`` (and the other modules' Python APIs).

Exit codes: 0 success, 1 a check failed (crosscheck, golden verify), 2 bad input (a clear message, no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _add_model_args(p, *, engine=True, lookahead=True):
    p.add_argument("--model", required=True, help="folder of NeMo's ONNX export (or one .onnx file, or a .nemo)")
    if lookahead:
        p.add_argument("--att-context-size", metavar="L,R",
                       help="look-ahead to run, e.g. 70,13 (default: the one the encoder file was exported for)")
    if engine:
        p.add_argument("--engine", choices=["refimpl", "onnxruntime"], default="refimpl")
        p.add_argument("--weights", metavar="PATH",
                       help="refimpl takes its weights from here (a .nemo, or another export of the same model)")
        p.add_argument("--backend", choices=["numba", "numpy"], default="numba",
                       help="refimpl arithmetic: numba kernels (default) or plain NumPy")
        p.add_argument("--float64", action="store_true", help="run refimpl in double precision")
        p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op and BLAS threads")


def cmd_transcribe(args) -> int:
    from . import api

    t = api.transcribe(args.audio, args.model, decoder=args.decoder, engine=args.engine,
                       att_context_size=args.att_context_size, weights=args.weights, backend=args.backend,
                       dtype=np.float64 if args.float64 else np.float32, threads=args.threads)
    if args.json:
        d = t.as_dict()
        print(json.dumps({k: d[k] for k in ("text", "tokens", "att_context_size", "decoder", "engine", "chunks",
                                             "audio_seconds", "seconds")}))
    else:
        print(t.text)
        if t.dropped_tail_frames:
            print(f"note: the last {t.dropped_tail_frames} mel frames were fewer than one chunk needs and were not "
                  f"run, as NeMo's streaming buffer does", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="refimpl", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="stream an audio file through the model and print the text")
    p.add_argument("audio", help="16 kHz mono audio file")
    _add_model_args(p)
    p.add_argument("--decoder", choices=["rnnt", "ctc"], default="rnnt")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of the text")
    p.set_defaults(func=cmd_transcribe)
    return ap


def _thread_limit(args):
    """``--threads N`` caps BLAS (and OpenMP) pools for the whole command; onnxruntime gets it separately."""
    import contextlib

    n = getattr(args, "threads", None)
    if not n:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from weights_tools import ConfigError, ModelLoadError

    from .audio import AudioError
    from .engines import LookAheadError

    try:
        with _thread_limit(args):
            return args.func(args)
    except (ModelLoadError, ConfigError, AudioError, LookAheadError, ValueError, FileNotFoundError) as e:
        print(f"refimpl {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
