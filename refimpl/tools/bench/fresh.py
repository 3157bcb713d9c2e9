"""Load time, peak memory and cold JIT, each engine in a fresh process (so neither engine's memory is counted in
the other's): the child loads the engine, then transcribes ``seconds`` of audio made block by block
(``setup.bench_blocks``) the way file mode does, and reports its memory high-water mark.

    python -m refimpl.tools.bench.fresh '<json spec>'     (what run_bench starts; prints one JSON line)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ...runtime.live import Model
from .setup import bench_blocks, numba_cache_stats, open_engines, thread_limits


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident set (VmRSS) or its high-water mark (VmHWM), MiB."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(spec: dict) -> dict:
    """In a fresh process: the engine's imports, its load, then a file-mode run; load time and memory. The
    baseline (``rss_after_imports_mb``) is taken after the imports."""
    use_numba = spec["engine"] == "refimpl" and spec["backend"] == "numba"
    if spec["engine"] == "onnxruntime":  # each engine's own imports, so the baseline RSS includes them
        import onnxruntime  # noqa: F401
    elif use_numba:
        from ...fast import kernels  # noqa: F401  (imports Numba: counted in the baseline, not the engine)
    base = rss_mb()
    with thread_limits(spec["threads"], numba_threads=use_numba):
        ((eng, load_s),) = open_engines(
            spec["model"],
            att_context_size=spec["att_context_size"],
            threads=spec["threads"],
            backend=spec["backend"],
            impl=spec["impl"],
            which=(spec["engine"],),
        ).values()
        after_load = rss_mb()
        t0 = time.perf_counter()
        order = spec.get("order") or eng.orders[-1]
        s = Model(spec["model"], engine=eng).stream(decoder=spec["decoder"], order=order)
        first_chunk = None
        for block in bench_blocks(spec["seconds"], spec["audio"]):
            s.accept_waveform(block)
            if first_chunk is None and s.chunks:
                first_chunk = time.perf_counter() - t0
        s.input_finished()
        stream_s = time.perf_counter() - t0
    return {
        "load_seconds": load_s,
        "rss_after_imports_mb": base,
        "rss_after_load_mb": after_load,
        "peak_rss_mb": rss_mb("VmHWM"),
        "stream_seconds": stream_s,
        "first_chunk_seconds": first_chunk,
        "audio_seconds": spec["seconds"],
        **(numba_cache_stats() if use_numba else {}),
    }


def run_child(spec: dict, env_extra: dict | None = None) -> dict:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(env_extra or {})
    proc = subprocess.run(
        [sys.executable, "-m", "refimpl.tools.bench.fresh", json.dumps(spec)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bench subprocess for {spec['engine']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cold_jit_seconds(spec: dict) -> float:
    """The first refimpl chunk with an empty Numba cache, minus the same with the warm cache (fresh processes)."""
    # step order: the first chunk runs as soon as its audio is in (block order would wait for a whole block)
    short = {**spec, "engine": "refimpl", "seconds": min(spec["seconds"], 5.0), "order": "step"}
    with tempfile.TemporaryDirectory() as d:
        cold = run_child(short, {"NUMBA_CACHE_DIR": d})
    warm = run_child(short)
    return cold["first_chunk_seconds"] - warm["first_chunk_seconds"]


if __name__ == "__main__":
    print(json.dumps(child_main(json.loads(sys.argv[1]))))
