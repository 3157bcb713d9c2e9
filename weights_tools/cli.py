"""``weights-tools``: inspect a NeMo export or checkpoint, or extract its weights to .npz. Thin over the API.

Exit codes (as ``refimpl``'s): 0 success; 2 bad input (one line on stderr: what was expected, what was found, the
fix; argparse's usage errors too); 3 internal error (one line ``weights-tools: internal error: <Type>: <message>``;
``--debug``, before or after the command, prints the traceback above it); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path

import numpy as np

from .config import ConfigError
from .contract import io_contract, streaming_numbers
from .errors import ModelLoadError, NoCacheSupportError, one_line
from .nemo_load import load_nemo, read_nemo_config
from .onnx_load import load_onnx, plan_onnx
from .outputs import OutputError, atomic_write, output_path
from .tree import flatten

EXIT_CODES = """exit codes:
  0    success
  2    bad input: one line on stderr says what was expected, what was found and the fix
  3    internal error: one line naming it (--debug prints the traceback)
  130  interrupted (Ctrl-C)"""
DISTRIBUTION = "refimpl"  # weights_tools ships in refimpl's distribution


def run_command(prog: str, run, *, debug: bool, bad_input: tuple) -> int:
    """``run()`` under the exit-code convention both command lines keep (EXIT_CODES): its own code, 0 on a closed
    stdout, 2 with one ``prog: error: ...`` line for ``bad_input``, 3 with one line naming any other exception, 130
    on Ctrl-C; ``debug`` prints the traceback above the line."""
    try:
        return run()
    except BrokenPipeError:  # `... inspect ... | head`: stdout closed early; end quietly like any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except bad_input as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            traceback.print_exc()
        hint = "" if debug else " (rerun with --debug for the traceback)"
        print(f"{prog}: internal error: {type(e).__name__}: {one_line(e)}{hint}", file=sys.stderr)
        return 3


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    bad_input = (ModelLoadError, ConfigError, OutputError, OSError)
    return run_command("weights-tools", lambda: args.run(args), debug=args.debug, bad_input=bad_input)


def version() -> str:
    """The installed distribution's version, else the package's ``__version__`` (a source tree on PYTHONPATH)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return getattr(sys.modules[__package__], "__version__", "unknown")


def stateless_warning(path, config) -> str | None:
    """The warning for an encoder exported without cache support (None for a streaming one)."""
    if config.encoder.has_cache_io:
        return None
    return (
        f"{path} was exported WITHOUT cache support (its encoder takes only audio_signal and length): it cannot "
        f"stream, every chunk would start from empty context. To fix, {NoCacheSupportError.HOW_TO_FIX}"
    )


def _add_debug_arg(p, *, top=False):
    """``--debug`` before or after the command (the sub-parsers' SUPPRESS default keeps the top-level value)."""
    p.add_argument(
        "--debug",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="on an error, print the traceback above its one line",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="weights-tools",
        description=__doc__.split("\n\n")[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _add_debug_arg(ap, top=True)
    sub = ap.add_subparsers(dest="command", required=True, metavar="command")
    ins = sub.add_parser("inspect", help="print the config, the streaming numbers and the I/O contract")
    _add_debug_arg(ins)
    ins.add_argument("--model", required=True, help="export folder, .onnx file or .nemo")
    ins.add_argument("--nemo", help="the model's .nemo (look-ahead list, preprocessor, cross-check)")
    ins.add_argument("--json", action="store_true", help="print JSON")
    ins.set_defaults(run=_inspect)
    ext = sub.add_parser("extract", help="write every parameter to an .npz keyed by its NeMo name")
    _add_debug_arg(ext)
    ext.add_argument("--model", required=True, help="export folder, .onnx file or .nemo")
    ext.add_argument("--nemo", help="the model's .nemo (cross-check only)")
    ext.add_argument("-o", "--output", required=True, help="output .npz (written exactly there, atomically)")
    ext.set_defaults(run=_extract)
    return ap


def _is_nemo(path: str) -> bool:
    return Path(path).suffix == ".nemo"


def _inspect(args) -> int:
    if _is_nemo(args.model):
        config, look, contract = read_nemo_config(args.model), None, []
    else:
        plan = plan_onnx(args.model, nemo=args.nemo)
        config, look, contract = plan.config, plan.lookahead.evidence, io_contract(args.model)
    warning = stateless_warning(args.model, config)
    report = {
        "config": config.to_dict(),
        "streaming": streaming_numbers(config),
        "lookahead_evidence": look,
        "io_contract": contract,
        "warnings": [warning] if warning else [],
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(_text(report))
    return 0


def _extract(args) -> int:
    out = output_path(args.output, what="weights archive", example="weights.npz")  # refused before reading
    if _is_nemo(args.model):
        _, weights = load_nemo(args.model)
    else:
        _, weights = load_onnx(args.model, nemo=args.nemo)
    flat = flatten(weights)
    atomic_write(out, lambda f: np.savez(f, **flat), what="weights archive")  # exactly `out`: no .npz appended
    print(f"wrote {out}: {len(flat)} arrays, {sum(a.nbytes for a in flat.values()) / 1e6:.1f} MB")
    return 0


def _text(report: dict) -> str:
    cfg = report["config"]
    lines = [f"WARNING: {w}" for w in report["warnings"]] + [f"source: {cfg['source']}"]
    for section in ("encoder", "rnnt", "ctc", "preprocessor"):
        if cfg.get(section) is None:
            lines.append(f"{section}: none")
            continue
        lines.append(f"{section}:")
        lines += [f"  {k}: {v}" for k, v in cfg[section].items()]
    lines.append(
        f"vocab_size: {cfg['vocab_size']}  blank_id: {cfg['blank_id']}  tokenizer: "
        f"{'yes' if cfg['has_tokenizer'] else 'no'}"
    )
    lines.append("streaming (one encoder call):")
    lines += [f"  {k}: {v}" for k, v in report["streaming"].items()]
    if report["lookahead_evidence"]:
        lines.append("look-ahead read from these graph constants:")
        lines += [f"  {k}: {v}" for k, v in report["lookahead_evidence"].items()]
    if report["io_contract"]:
        lines.append("I/O contract:")
        for r in report["io_contract"]:
            lines.append(
                f"  {r['graph']} {r['kind']:6} {r['name']:28} {r['dtype']:7} {str(r['shape']):60} "
                f"{r['layout']}: {r['meaning']}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
