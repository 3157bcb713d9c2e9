"""``refimpl bench``: onnxruntime and refimpl stream the same audio in one run, interleaved chunk by chunk.

How each figure is measured:
- **audio**: ``--audio FILE``, repeated (or cut) to ``--seconds``. The log-mel is computed once; both engines
  get the same chunks from the same chunk loop (``refimpl.runtime.streaming.iter_stream``), each carrying its
  own state.
- **interleaving**: chunk i runs on both engines back to back, the order alternating every chunk, so machine
  noise (and the cache traffic of the other engine) hits both alike; ``--block N`` alternates every N chunks
  instead (each engine then finds more of its own weights in the CPU caches, as when it runs alone). Compare
  ratios from one run, not absolute times across runs.
- **per chunk**: the whole streaming step (encoder + greedy decoding with the chosen decoder) and, inside it,
  the encoder call alone. Reported per engine: median and p90 ms per chunk, real-time factor (summed step time
  / audio seconds) and refimpl/onnxruntime ratios of the medians.
- **warm-up**: the first ``--warmup`` chunks of each engine are run before timing and not counted. refimpl's
  first call compiles its Numba kernels, or loads them from Numba's on-disk cache: ``jit_seconds`` is that first
  chunk minus the median chunk, with the cache hits/misses; ``cold_jit_seconds`` is the same in a fresh process
  with an empty Numba cache (compilation from scratch).
- **weight load and peak RSS**: each engine's load plus a few chunks in a fresh subprocess, so neither engine's
  memory is counted in the other's. Load = onnxruntime session creation (``OnnxEngine``), or refimpl's weights
  read straight into its layout plus engine set-up. Peak RSS = the subprocess's high-water mark (VmHWM, imports
  included); ``rss_after_imports_mb`` is the same process before loading, so the difference is the engine's.
- **threads**: ``--threads N`` sets onnxruntime's intra-op threads, the BLAS pool (threadpoolctl) and Numba's
  threads (``numba.set_num_threads``), in the parent and in the subprocesses.
- **floor**: one pass of x @ W with a single row over every encoder weight matrix of refimpl's layout (the
  memory traffic of one chunk, no other work): the time below which no float32 engine that reads its weights
  once per chunk can go on this machine with these threads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from weights_tools.tree import flatten

from ..fast.encoder import BACKENDS
from ..model.audio import load_audio
from ..runtime.chunking import chunk_schedule
from ..runtime.engines import IMPLS, EngineWrapper, open_refimpl
from ..runtime.features import features
from ..runtime.lookahead import parse_att_context_size
from ..runtime.loop import iter_stream
from ..runtime.onnx_engine import OnnxEngine
from ..runtime.streaming import available_decoders

CHILD_CHUNKS = 4  # chunks streamed by the load/RSS subprocess after loading


# --- set-up ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def thread_limits(threads: int, *, numba_threads: bool = True):
    """BLAS pool and Numba threads limited to ``threads`` (onnxruntime gets it at session creation). Numba is
    imported (and limited) only with ``numba_threads`` (the numpy backend never imports it)."""
    numba = None
    if numba_threads:
        import numba  # only for a numba-backend run: importing it costs the memory bench measures

        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if numba is not None:
            numba.set_num_threads(before)


def bench_audio(seconds: float | None, audio, sample_rate: int = 16000) -> np.ndarray:
    """The benchmark waveform: the file ``audio`` repeated (or cut) to ``seconds`` (all of it if None)."""
    x = load_audio(audio, sample_rate=sample_rate)
    if seconds is None:
        return x
    reps = int(np.ceil(seconds * sample_rate / len(x)))
    return np.tile(x, reps)[: int(seconds * sample_rate)]


def open_engines(
    model,
    *,
    att_context_size=None,
    threads: int = 1,
    backend: str | None = None,
    impl: str = "fast",
    which=("onnxruntime", "refimpl"),
) -> dict:
    """{name: (engine, load seconds)}. refimpl: the fast path read straight into its layout, or with
    ``impl="plain"`` the readable reference engine."""
    att = parse_att_context_size(att_context_size)
    out = {}
    for name in which:
        t0 = time.perf_counter()
        if name == "onnxruntime":
            eng = OnnxEngine(model, att_context_size=att, threads=threads)
        else:
            eng = open_refimpl(model, impl=impl, att_context_size=att, backend=backend)
        out[name] = (eng, time.perf_counter() - t0)
    return out


class _Timed(EngineWrapper):
    """An engine whose encoder calls are timed."""

    def __init__(self, engine):
        super().__init__(engine)
        self.encoder_seconds = 0.0

    def encoder(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner.encoder(*args, **kwargs)
        self.encoder_seconds += time.perf_counter() - t0
        return out


def _numba_cache_stats() -> dict:
    from ..fast import kernels  # imports Numba: only for a numba-backend run

    hits = misses = 0
    for obj in vars(kernels).values():
        stats = getattr(obj, "stats", None)
        if stats is not None and hasattr(stats, "cache_hits"):
            hits += sum(stats.cache_hits.values())
            misses += sum(stats.cache_misses.values())
    return {"numba_cache_hits": hits, "numba_cache_misses": misses}


# --- the interleaved run -----------------------------------------------------------------------------------


def stream_interleaved(engines: dict, mel: np.ndarray, *, decoders=("rnnt",), warmup: int = 2, block: int = 1) -> dict:
    """Stream mel [1, feat_in, F] through every engine, alternating engines every ``block`` chunks (the order
    within a round alternating too). Each engine's first ``warmup`` chunks run first, untimed.
    -> {name: {"step": [s per timed chunk], "encoder": [...], "warmup_step": [...], "chunks": n}}."""
    names = list(engines)
    timed = {n: _Timed(e) for n, e in engines.items()}
    streams = {n: iter_stream(timed[n], mel, decoders=decoders) for n in names}
    n_chunks = len(chunk_schedule([mel.shape[2]], engines[names[0]].streaming))
    if n_chunks <= warmup:
        raise ValueError(
            f"{n_chunks} chunks of audio are fewer than the {warmup} warm-up chunks plus one: give more --seconds"
        )
    res = {n: {"step": [], "encoder": [], "warmup_step": [], "chunks": n_chunks} for n in names}
    rounds = [range(warmup)] + [range(i, min(i + block, n_chunks)) for i in range(warmup, n_chunks, block)]
    for r, indices in enumerate(rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            for index in indices:
                timed[n].encoder_seconds = 0.0
                t0 = time.perf_counter()
                next(streams[n])  # one chunk: features sliced, encoder, decoding
                dt = time.perf_counter() - t0
                if index < warmup:
                    res[n]["warmup_step"].append(dt)
                else:
                    res[n]["step"].append(dt)
                    res[n]["encoder"].append(timed[n].encoder_seconds)
    return res


def weight_streaming_floor(engine, repeats: int = 5) -> float:
    """Seconds for one single-row pass of x @ W over every weight matrix of a fast engine's layout."""
    mats = [w for k, w in flatten(engine.ops.layout).items() if k.endswith("weight_p")]
    xs = {m.shape[1]: np.ones((1, m.shape[1]), m.dtype) for m in mats}
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for m in mats:
            np.matmul(xs[m.shape[1]], m)
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def _summary(times: list, audio_seconds_per_chunk: float) -> dict:
    a = np.asarray(times) * 1e3
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "rtf": float(a.sum() / 1e3 / (audio_seconds_per_chunk * len(a))),
    }


# --- subprocess: load time and peak RSS --------------------------------------------------------------------


def _rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_main(spec: dict) -> dict:
    """In a fresh process: import what the engine needs, load it, stream a few chunks; report load time and
    memory. The baseline (``rss_after_imports_mb``) is taken after the imports; Numba's run-time set-up on the
    first kernel call is counted as the engine's."""
    use_numba = spec["engine"] == "refimpl" and spec["backend"] == "numba"
    if spec["engine"] == "onnxruntime":  # each engine's own imports, so the baseline RSS includes them
        import onnxruntime  # noqa: F401
    elif use_numba:
        from ..fast import kernels  # noqa: F401  (imports Numba: counted in the baseline, not the engine)
    base = _rss_mb()
    with thread_limits(spec["threads"], numba_threads=use_numba):
        ((eng, load_s),) = open_engines(
            spec["model"],
            att_context_size=spec["att_context_size"],
            threads=spec["threads"],
            backend=spec["backend"],
            impl=spec["impl"],
            which=(spec["engine"],),
        ).values()
        after_load = _rss_mb()
        mel, _ = features(bench_audio(spec["seconds"], spec["audio"]), eng.config)
        t0 = time.perf_counter()
        stream_interleaved({spec["engine"]: eng}, mel, decoders=tuple(spec["decoders"]), warmup=1, block=100)
        first = time.perf_counter() - t0
    return {
        "load_seconds": load_s,
        "rss_after_imports_mb": base,
        "rss_after_load_mb": after_load,
        "peak_rss_mb": _rss_mb("VmHWM"),
        "stream_seconds": first,
        **_numba_cache_stats(),
    }


def _run_child(spec: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "refimpl.tools.bench", "--child", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench subprocess for {spec['engine']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cold_jit_seconds(spec: dict) -> float:
    """First refimpl chunk with an empty Numba cache, minus the same with the warm cache (fresh processes)."""
    with tempfile.TemporaryDirectory() as d:
        cold = _run_child({**spec, "engine": "refimpl"}, {"NUMBA_CACHE_DIR": d})
    warm = _run_child({**spec, "engine": "refimpl"})
    return cold["stream_seconds"] - warm["stream_seconds"]


# --- the API -----------------------------------------------------------------------------------------------


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
    warmup: int = 2,
    block: int = 1,
    subprocesses: bool = True,
    cold_jit: bool = True,
    floor: bool = True,
) -> dict:
    """Benchmark refimpl against onnxruntime on ``model`` (a folder of NeMo's ONNX export). Returns a dict
    (see the module docstring for how each number is measured); ``format_report`` prints it."""
    backend = (backend or BACKENDS[0]) if impl == "fast" else None  # the plain reference has no backend
    with thread_limits(threads, numba_threads=backend == "numba"):
        engines = open_engines(model, att_context_size=att_context_size, threads=threads, backend=backend, impl=impl)
        ort, ref = engines["onnxruntime"][0], engines["refimpl"][0]
        if decoder == "auto":
            decoders = available_decoders(ort, ("rnnt", "ctc"))[:1]
        else:
            decoders = () if decoder == "none" else (decoder,)
        wave = bench_audio(seconds, audio)
        mel, audio_seconds = features(wave, ort.config)
        runs = stream_interleaved(
            {"onnxruntime": ort, "refimpl": ref}, mel, decoders=decoders, warmup=warmup, block=block
        )
        floor_s = weight_streaming_floor(ref) if floor and ref.impl == "fast" else None
    p = ort.streaming
    chunk_seconds = p.chunk_size * ort.config.preprocessor.n_window_stride / ort.config.preprocessor.sample_rate
    result = {
        "model": str(model),
        "att_context_size": list(ort.config.encoder.att_context_size),
        "audio_seconds": float(audio_seconds),
        "chunks": runs["refimpl"]["chunks"],
        "timed_chunks": len(runs["refimpl"]["step"]),
        "chunk_ms_of_audio": chunk_seconds * 1e3,
        "threads": threads,
        "refimpl_impl": impl,
        "backend": backend,
        "decoders": list(decoders),
        "interleave_block": block,
        "engines": {},
    }
    for name, (_, load_s) in engines.items():
        r = runs[name]
        step, enc = _summary(r["step"], chunk_seconds), _summary(r["encoder"], chunk_seconds)
        first = r["warmup_step"][0] if r["warmup_step"] else None
        result["engines"][name] = {
            "step": step,
            "encoder": enc,
            "load_seconds_in_run": load_s,
            "first_chunk_ms": None if first is None else first * 1e3,
        }
    ref_r = result["engines"]["refimpl"]
    if ref_r["first_chunk_ms"] is not None and backend == "numba":
        ref_r["jit_seconds"] = (ref_r["first_chunk_ms"] - ref_r["step"]["median_ms"]) / 1e3
        ref_r.update(_numba_cache_stats())
    o, r = result["engines"]["onnxruntime"], result["engines"]["refimpl"]
    result["ratios"] = {
        "step_median": r["step"]["median_ms"] / o["step"]["median_ms"],
        "step_p90": r["step"]["p90_ms"] / o["step"]["p90_ms"],
        "encoder_median": r["encoder"]["median_ms"] / o["encoder"]["median_ms"],
    }
    if floor_s is not None:
        result["floor"] = {
            "ms_per_chunk": floor_s * 1e3,
            "ratio_to_onnxruntime_encoder": floor_s * 1e3 / o["encoder"]["median_ms"],
        }
    if subprocesses:
        spec = {
            "model": str(model),
            "att_context_size": att_context_size,
            "threads": threads,
            "backend": backend,
            "impl": impl,
            "decoders": list(decoders),
            "audio": str(audio),
            "seconds": CHILD_CHUNKS * chunk_seconds + 0.5,
        }
        weights_mb = sum(f.stat().st_size for _, f in ort.files.graphs) / 2**20
        result["weights_mb"] = weights_mb
        for name in ("onnxruntime", "refimpl"):
            child = _run_child({**spec, "engine": name})
            child["peak_rss_over_weights"] = child["peak_rss_mb"] / weights_mb
            child["engine_rss_over_weights"] = (child["peak_rss_mb"] - child["rss_after_imports_mb"]) / weights_mb
            result["engines"][name]["fresh_process"] = child
        result["ratios"]["load"] = (
            result["engines"]["refimpl"]["fresh_process"]["load_seconds"]
            / result["engines"]["onnxruntime"]["fresh_process"]["load_seconds"]
        )
        if cold_jit and backend == "numba":
            result["engines"]["refimpl"]["cold_jit_seconds"] = _cold_jit_seconds(spec)
    return result


def format_report(r: dict) -> str:
    o, f = r["engines"]["onnxruntime"], r["engines"]["refimpl"]
    lines = [
        f"refimpl bench: {r['model']}  att_context_size {r['att_context_size']}  "
        f"{r['audio_seconds']:.1f} s of audio, {r['chunks']} chunks of {r['chunk_ms_of_audio']:.0f} ms "
        f"({r['timed_chunks']} timed, engines alternating every {r['interleave_block']})  threads {r['threads']}  "
        f"refimpl {r['refimpl_impl']}, "
        f"backend {r['backend']}  decoding {'+'.join(r['decoders']) or 'none'}",
        f"{'':44s}{'onnxruntime':>12s}{'refimpl':>12s}{'ratio':>8s}",
    ]

    def row(label, a, b, ratio=True, fmt="{:12.1f}"):
        rt = f"{b / a:8.2f}" if ratio and a else ""
        lines.append(f"{label:44s}" + fmt.format(a) + fmt.format(b) + rt)

    for part in ("step", "encoder"):
        what = "step (encoder + decoding)" if part == "step" else "encoder alone"
        row(f"{what} ms/chunk median", o[part]["median_ms"], f[part]["median_ms"])
        row(f"{what} ms/chunk p90", o[part]["p90_ms"], f[part]["p90_ms"])
    row("real-time factor (step)", o["step"]["rtf"], f["step"]["rtf"], fmt="{:12.3f}")
    if f.get("first_chunk_ms") is not None:
        row("first (warm-up) chunk ms", o["first_chunk_ms"], f["first_chunk_ms"], ratio=False)
    if "jit_seconds" in f:
        lines.append(
            f"refimpl JIT at first chunk: {f['jit_seconds']:.2f} s (Numba cache: {f['numba_cache_hits']} "
            f"hits, {f['numba_cache_misses']} misses)"
            + (f"; compiling from an empty cache: {f['cold_jit_seconds']:.1f} s" if "cold_jit_seconds" in f else "")
        )
    if "fresh_process" in f:
        oc, fc = o["fresh_process"], f["fresh_process"]
        row("weight load s (fresh process)", oc["load_seconds"], fc["load_seconds"], fmt="{:12.2f}")
        row("peak RSS MiB (fresh process)", oc["peak_rss_mb"], fc["peak_rss_mb"], ratio=False, fmt="{:12.0f}")
        row(
            "  of which after imports MiB",
            oc["rss_after_imports_mb"],
            fc["rss_after_imports_mb"],
            ratio=False,
            fmt="{:12.0f}",
        )
        lines.append(
            f"weights (ONNX files) {r['weights_mb']:.0f} MiB: peak RSS / weights onnxruntime "
            f"{oc['peak_rss_over_weights']:.2f}, refimpl {fc['peak_rss_over_weights']:.2f} "
            f"(without the imports: {oc['engine_rss_over_weights']:.2f}, {fc['engine_rss_over_weights']:.2f})"
        )
    if "floor" in r:
        lines.append(
            f"weight-streaming floor (one single-row pass over refimpl's weight matrices): "
            f"{r['floor']['ms_per_chunk']:.1f} ms = {r['floor']['ratio_to_onnxruntime_encoder']:.2f} x "
            f"onnxruntime's encoder median"
        )
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------


def cmd_bench(args) -> int:
    r = run_bench(
        args.model,
        args.audio,
        att_context_size=args.att_context_size,
        seconds=args.seconds,
        threads=args.threads,
        backend=args.backend,
        impl=args.impl,
        decoder=args.decoder,
        warmup=args.warmup,
        block=args.block,
        subprocesses=not args.no_subprocess,
        cold_jit=not args.no_cold_jit,
    )
    print(json.dumps(r, indent=1) if args.json else format_report(r))
    return 0


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``refimpl bench`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "bench",
        help="stream the same audio through onnxruntime and refimpl, interleaved, "
        "and compare ms per chunk, load time and memory",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--model", required=True, help="folder of NeMo's ONNX export (encoder + decoder_joint)")
    p.add_argument(
        "--att-context-size", metavar="L,R", help="look-ahead (default: the one the encoder file was exported for)"
    )
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of audio to stream (default 60)")
    p.add_argument("--audio", metavar="FILE", required=True, help="16 kHz mono audio, repeated (or cut) to --seconds")
    p.add_argument(
        "--threads",
        type=int,
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
        help="decoding inside each step (default: RNNT if the export has it, else CTC)",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed chunks per engine first (default 2)")
    p.add_argument(
        "--block",
        type=int,
        default=1,
        help="chunks each engine runs before the other takes over (default 1: chunk by chunk)",
    )
    p.add_argument(
        "--no-subprocess",
        action="store_true",
        help="skip the fresh-process load-time / peak-RSS / cold-JIT measurements",
    )
    p.add_argument("--no-cold-jit", action="store_true", help="skip the empty-Numba-cache compile measurement")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_bench)
    return p


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child_main(json.loads(sys.argv[2]))))
    else:
        ap = argparse.ArgumentParser(prog="python -m refimpl.bench")
        add_bench_parser(ap.add_subparsers(dest="command", required=True))
        a = ap.parse_args(["bench"] + sys.argv[1:])
        sys.exit(a.func(a))
