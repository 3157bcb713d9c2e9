"""``refimpl bench``: onnxruntime and refimpl on the same audio in one run, in four modes, as ratios.

How each figure is measured (``modes`` has the details of each mode):

- **audio**: ``--audio FILE``, repeated (or cut) to ``--seconds``; both engines get the same features from
  refimpl's front end, and the same chunks from the same chunk loop, each carrying its own state.
- **file**: the whole audio end to end (features, encoder, decoding): refimpl evaluates it in blocks
  (``--block-frames`` encoder frames per block), onnxruntime runs its chunk loop. ``--repeats`` runs per engine,
  alternating. ``modes.file.ratio`` = refimpl/onnxruntime of the median total time; ``encoder_ratio`` of the
  encoder time alone; decoding and features are reported separately.
- **step**: one chunk at a time (encoder + decoding, and the encoder call inside it), the engines alternating
  every ``--interleave`` chunks, after ``--warmup`` untimed chunks each; median and p90 ms per chunk.
- **live**: blocks of one chunk's worth of audio into a live stream; the time from a block's arrival to its
  tokens (compute only: the model's own look-ahead latency is the chunk plus R*s*hop), per block.
- **batch** (on request): ``--streams`` streams stepped together as one batch against one stream, per chunk;
  ``batch_over_one`` = the batch's median step / one stream's, per engine; ``ratio`` = refimpl/onnxruntime of the
  batch step.
- **ratios**: refimpl / onnxruntime of the medians, measured in the same run. The machine is noisy: compare
  ratios, not times across runs.
- **load and peak RSS**: each engine in a fresh process (``fresh``): its load, then file mode over
  ``--rss-seconds`` of audio made block by block; peak RSS = the process's high-water mark (imports included;
  ``rss_after_imports_mb`` is the baseline). refimpl's file mode holds no whole-file array, so its peak does
  not grow with the audio.
- **JIT**: ``jit_seconds`` = refimpl's first (warm-up) step minus its median step (Numba's on-disk cache loaded);
  ``cold_jit_seconds`` = the same with an empty cache, in fresh processes.
- **threads**: ``--threads N`` (1 .. the CPUs this process may use) sets onnxruntime's intra-op threads, the BLAS
  pool and Numba's threads, in the parent and the subprocesses.
- **floor**: one single-row pass of x @ W over every encoder weight matrix (the memory traffic of one step):
  no float32 engine that reads its weights once per chunk can be faster per step.

Why one module over ~350 lines: ``run_bench`` and ``format_report`` share one report layout (the ratios and
their targets); the timing loops themselves live in the sibling modules.
"""

from __future__ import annotations

import argparse
import json
import sys

from ...cli_args import max_threads
from ...cli_args import positive as _positive
from ...cli_args import threads as _threads
from ...fast.encoder import BACKENDS
from ...runtime.engines import IMPLS
from ...runtime.features import features
from ...runtime.loop import BLOCK_FRAMES
from ...runtime.streaming import available_decoders
from .fresh import cold_jit_seconds, run_child
from .modes import DEFAULT_MODES, MODES, batch_mode, features_seconds, file_mode, live_mode, step_mode, summarize
from .setup import bench_audio, bench_blocks, open_engines, thread_limits, weight_streaming_floor

__all__ = ["MODES", "add_bench_parser", "bench_audio", "bench_blocks", "format_report", "run_bench", "step_mode"]


def run_bench(
    model,
    audio,
    *,
    att_context_size=None,
    seconds: float = 60.0,
    threads: int = 1,
    backend: str | None = None,
    impl: str = "fast",
    decoder: str = "auto",
    modes=DEFAULT_MODES,
    streams: int = 8,
    warmup: int = 2,
    interleave: int = 1,
    repeats: int = 3,
    block_frames: int = BLOCK_FRAMES,
    subprocesses: bool = True,
    rss_seconds: float | None = None,
    cold_jit: bool = True,
    floor: bool = True,
    progress=None,
) -> dict:
    """Benchmark refimpl against onnxruntime on ``model`` (a folder of NeMo's ONNX export) -> a dict (see the
    module docstring); ``format_report`` prints it. ``progress(n)`` is called as measurements complete."""
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    if not 1 <= threads <= max_threads():
        raise ValueError(f"threads must be 1..{max_threads()} (the CPUs this process may use), got {threads}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes must be some of {MODES}, got {list(modes)}")
    backend = (backend or BACKENDS[0]) if impl == "fast" else None  # the plain reference has no backend
    with thread_limits(threads, numba_threads=backend == "numba"):
        opened = open_engines(model, att_context_size=att_context_size, threads=threads, backend=backend, impl=impl)
        engines = {n: e for n, (e, _) in opened.items()}
        ort, ref = engines["onnxruntime"], engines["refimpl"]
        decoders = available_decoders(ort)[:1] if decoder == "auto" else (() if decoder == "none" else (decoder,))
        wave = bench_audio(seconds, audio)
        cfg = ort.config
        audio_seconds = len(wave) / cfg.preprocessor.sample_rate
        chunk_seconds = ort.streaming.chunk_size * cfg.preprocessor.n_window_stride / cfg.preprocessor.sample_rate
        result: dict = {
            "model": str(model),
            "att_context_size": list(cfg.encoder.att_context_size),
            "audio_seconds": audio_seconds,
            "chunk_ms_of_audio": chunk_seconds * 1e3,
            "lookahead_ms": cfg.encoder.att_context_size[1]
            * ort.streaming.subsampling_factor
            * cfg.preprocessor.n_window_stride
            / cfg.preprocessor.sample_rate
            * 1e3,
            "threads": threads,
            "refimpl_impl": impl,
            "backend": backend,
            "decoders": list(decoders),
            "block_frames": block_frames,
            "modes": {},
            "engines": {n: {"load_seconds_in_run": t} for n, (_, t) in opened.items()},
        }
        if "file" in modes:
            raw = file_mode(
                engines, model, wave, decoders=decoders, repeats=repeats, block_frames=block_frames, progress=progress
            )
            m = summarize("file", raw, audio_seconds, chunk_seconds)
            m["features_ms"] = features_seconds(ref, wave, cfg.preprocessor.sample_rate) * 1e3
            for e in m["engines"].values():
                e["decoding_ms"] = e["total"]["median_ms"] - e["encoder"]["median_ms"] - m["features_ms"]
            result["modes"]["file"] = m
        if "step" in modes:
            mel, _ = features(wave, cfg)
            raw = step_mode(engines, mel, decoders=decoders, warmup=warmup, block=interleave, progress=progress)
            m = summarize("step", raw, audio_seconds, chunk_seconds)
            m["interleave"] = interleave
            r = m["engines"]["refimpl"]
            if backend == "numba" and r["first_chunk_ms"] is not None:
                r["jit_seconds"] = (r["first_chunk_ms"] - r["step"]["median_ms"]) / 1e3
            result["modes"]["step"] = m
        if "live" in modes:
            raw = live_mode(engines, model, wave, decoders=decoders, warmup=warmup, progress=progress)
            result["modes"]["live"] = summarize("live", raw, audio_seconds, chunk_seconds)
        if "batch" in modes:
            mel, _ = features(wave, cfg)
            raw = batch_mode(engines, mel, streams=streams, decoders=decoders, warmup=warmup, progress=progress)
            result["modes"]["batch"] = summarize("batch", raw, audio_seconds, chunk_seconds)
        if floor and ref.impl == "fast" and "step" in modes:
            f = weight_streaming_floor(ref)
            result["floor"] = {
                "ms_per_step": f * 1e3,
                "ratio_to_onnxruntime_encoder": f
                * 1e3
                / result["modes"]["step"]["engines"]["onnxruntime"]["encoder"]["median_ms"],
            }
    if subprocesses:
        spec = {
            "model": str(model),
            "att_context_size": att_context_size,
            "threads": threads,
            "backend": backend,
            "impl": impl,
            "decoder": decoders[0] if decoders else None,
            "audio": str(audio),
            "seconds": rss_seconds or seconds,
        }
        weights_mb = sum(f.stat().st_size for _, f in ort.files.graphs) / 2**20
        result["weights_mb"] = weights_mb
        for name in ("onnxruntime", "refimpl"):
            child = run_child({**spec, "engine": name})
            child["peak_rss_over_weights"] = child["peak_rss_mb"] / weights_mb
            child["engine_rss_over_weights"] = (child["peak_rss_mb"] - child["rss_after_imports_mb"]) / weights_mb
            result["engines"][name]["fresh_process"] = child
            if progress is not None:
                progress(1)
        fp = {n: result["engines"][n]["fresh_process"] for n in ("onnxruntime", "refimpl")}
        result["load_ratio"] = fp["refimpl"]["load_seconds"] / fp["onnxruntime"]["load_seconds"]
        if cold_jit and backend == "numba":
            result["engines"]["refimpl"]["cold_jit_seconds"] = cold_jit_seconds(spec)
    return result


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else format("-", spec.rstrip("f").split(".")[0] + "s")


def format_report(r: dict) -> str:
    lines = [
        f"refimpl bench: {r['model']}  att_context_size {r['att_context_size']}  {r['audio_seconds']:.1f} s of "
        f"audio  chunk {r['chunk_ms_of_audio']:.0f} ms + look-ahead {r['lookahead_ms']:.0f} ms  threads "
        f"{r['threads']}  refimpl {r['refimpl_impl']}{', ' + r['backend'] if r['backend'] else ''}  decoding "
        f"{'+'.join(r['decoders']) or 'none'}",
        f"{'':46s}{'onnxruntime':>12s}{'refimpl':>12s}{'ratio':>8s}",
    ]

    def row(label, a, b, ratio=True, spec="12.1f"):
        rt = f"{b / a:8.2f}" if ratio and isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else ""
        lines.append(f"{label:46s}{_fmt(a, spec)}{_fmt(b, spec)}{rt}")

    titles = {
        "file": ("total", "whole file"),
        "step": ("step", "step (encoder + decoding) per chunk"),
        "live": ("latency", "live: block in -> tokens out"),
    }
    for mode, m in r["modes"].items():
        if mode == "batch":
            o, f = m["engines"]["onnxruntime"], m["engines"]["refimpl"]
            lines.append(f"batch mode ({m['streams']} streams in one step against one stream):")
            row("  one stream: step ms median", o["one"]["median_ms"], f["one"]["median_ms"])
            row(f"  {m['streams']} streams: step ms median", o["batch"]["median_ms"], f["batch"]["median_ms"])
            row(f"  {m['streams']} streams: step ms p90", o["batch"]["p90_ms"], f["batch"]["p90_ms"])
            row(
                f"  {m['streams']} streams / one stream",
                o["batch_over_one"],
                f["batch_over_one"],
                ratio=False,
                spec="12.2f",
            )
            n = m["streams"]
            row("  encoder alone: one stream ms median", o["one_encoder"]["median_ms"], f["one_encoder"]["median_ms"])
            row(
                f"  encoder alone: {n} streams ms median",
                o["batch_encoder"]["median_ms"],
                f["batch_encoder"]["median_ms"],
            )
            row(
                f"  encoder alone: {n} streams / one",
                o["encoder_batch_over_one"],
                f["encoder_batch_over_one"],
                ratio=False,
                spec="12.2f",
            )
            continue
        key, title = titles[mode]
        o, f = m["engines"]["onnxruntime"], m["engines"]["refimpl"]
        extra = f" (refimpl {f['order']} order, onnxruntime {o['order']})" if mode == "file" else ""
        lines.append(f"{mode} mode{extra}:")
        row(f"  {title} ms median", o[key]["median_ms"], f[key]["median_ms"])
        row(f"  {title} ms p90", o[key]["p90_ms"], f[key]["p90_ms"])
        row("  encoder alone ms median", o["encoder"]["median_ms"], f["encoder"]["median_ms"])
        row("  real-time factor", o[key]["rtf"], f[key]["rtf"], spec="12.3f")
        if mode == "file":
            row("  decoding ms (total - encoder - features)", o["decoding_ms"], f["decoding_ms"])
            lines.append(f"  features (refimpl's front end, both engines): {m['features_ms']:.1f} ms")
        if mode == "step" and "jit_seconds" in f:
            lines.append(f"  refimpl JIT at its first chunk: {f['jit_seconds']:.2f} s")
    if "floor" in r:
        lines.append(
            f"weight-streaming floor (one single-row pass over refimpl's weights): "
            f"{r['floor']['ms_per_step']:.1f} ms = {r['floor']['ratio_to_onnxruntime_encoder']:.2f} x "
            f"onnxruntime's step encoder median"
        )
    o, f = r["engines"]["onnxruntime"], r["engines"]["refimpl"]
    if "fresh_process" in f:
        oc, fc = o["fresh_process"], f["fresh_process"]
        lines.append(f"fresh processes, file mode over {fc['audio_seconds']:.0f} s of audio:")
        row("  weight load s", oc["load_seconds"], fc["load_seconds"], spec="12.2f")
        row("  peak RSS MiB", oc["peak_rss_mb"], fc["peak_rss_mb"], spec="12.0f")
        row(
            "  RSS after imports MiB", oc["rss_after_imports_mb"], fc["rss_after_imports_mb"], ratio=False, spec="12.0f"
        )
        lines.append(
            f"  weights (ONNX files) {r['weights_mb']:.0f} MiB: peak RSS / weights onnxruntime "
            f"{oc['peak_rss_over_weights']:.2f}, refimpl {fc['peak_rss_over_weights']:.2f}"
        )
        if "cold_jit_seconds" in f:
            lines.append(f"  refimpl first chunk with an empty Numba cache: +{f['cold_jit_seconds']:.1f} s")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------


def _modes(text):
    modes = tuple(m.strip() for m in text.split(","))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)} (comma-separated), got {', '.join(bad)}")
    return modes


def cmd_bench(args) -> int:
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm  # only when a bar is shown

        bar = tqdm(unit="measurement", file=sys.stderr, leave=False)
    try:
        r = run_bench(
            args.model,
            args.audio,
            att_context_size=args.att_context_size,
            seconds=args.seconds,
            threads=args.threads,
            backend=args.backend,
            impl=args.impl,
            decoder=args.decoder,
            modes=args.mode,
            streams=args.streams,
            warmup=args.warmup,
            interleave=args.interleave,
            repeats=args.repeats,
            block_frames=args.block_frames,
            subprocesses=not args.no_subprocess,
            rss_seconds=args.rss_seconds,
            cold_jit=not args.no_cold_jit,
            progress=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(r, indent=1) if args.json else format_report(r))
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``refimpl bench`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench",
        help="onnxruntime and refimpl on the same audio in one run: file, step and "
        "live modes, ratios, load time and memory",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="folder of NeMo's ONNX export (encoder + decoder_joint)")
    p.add_argument("--audio", metavar="FILE", required=True, help="16 kHz mono audio, repeated (or cut) to --seconds")
    p.add_argument(
        "--att-context-size", metavar="L,R", help="look-ahead (default: the one the encoder file was exported for)"
    )
    p.add_argument(
        "--mode",
        type=_modes,
        default=DEFAULT_MODES,
        metavar="file,step,live,batch",
        help="what to time (comma-separated; default file,step,live)",
    )
    p.add_argument("--streams", type=_positive(int), default=8, help="batch mode: streams stepped together (default 8)")
    p.add_argument("--seconds", type=_positive(float), default=60.0, help="seconds of audio (default 60)")
    p.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="onnxruntime intra-op threads, BLAS threads and Numba threads (default 1)",
    )
    p.add_argument("--backend", choices=BACKENDS, help="the fast path's kernels: Numba (default) or their NumPy twins")
    p.add_argument(
        "--impl",
        choices=IMPLS,
        default="fast",
        help="refimpl implementation to benchmark: fast (default) or the plain NumPy reference",
    )
    p.add_argument(
        "--decoder",
        choices=["auto", "rnnt", "ctc", "none"],
        default="auto",
        help="decoding (default: RNNT if the export has it, else CTC)",
    )
    p.add_argument("--repeats", type=_positive(int), default=3, help="file mode: whole-file runs per engine")
    p.add_argument(
        "--block-frames",
        type=_positive(int),
        default=BLOCK_FRAMES,
        help=f"file mode: encoder frames per block (default {BLOCK_FRAMES})",
    )
    p.add_argument("--warmup", type=int, default=2, help="step and live: untimed chunks per engine first")
    p.add_argument(
        "--interleave",
        type=_positive(int),
        default=1,
        help="step mode: chunks each engine runs before the other takes over (default 1)",
    )
    p.add_argument(
        "--rss-seconds",
        type=_positive(float),
        help="fresh processes: seconds of audio for the peak-RSS run (default --seconds)",
    )
    p.add_argument("--no-subprocess", action="store_true", help="skip the fresh-process load/RSS/JIT measurements")
    p.add_argument("--no-cold-jit", action="store_true", help="skip the empty-Numba-cache compile measurement")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)
    return p
