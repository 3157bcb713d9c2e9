"""What every bench measurement shares: thread limits, the benchmark audio, the engines, a timed wrapper."""

from __future__ import annotations

import contextlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from weights_tools.tree import flatten

from ...model.audio import load_audio
from ...runtime.engines import EngineWrapper, open_refimpl
from ...runtime.lookahead import parse_att_context_size
from ...runtime.onnx_engine import OnnxEngine

ENGINES = ("onnxruntime", "refimpl")


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


def bench_blocks(seconds: float, audio, block_seconds: float = 1.0, sample_rate: int = 16000):
    """The same waveform as ``bench_audio``, made block by block (memory independent of ``seconds``)."""
    clip = load_audio(audio, sample_rate=sample_rate)
    total, block, pos = int(seconds * sample_rate), int(block_seconds * sample_rate), 0
    while pos < total:
        n = min(block, total - pos)
        idx = (pos + np.arange(n)) % len(clip)
        yield clip[idx]
        pos += n


def open_engines(
    model, *, att_context_size=None, threads: int = 1, backend: str | None = None, impl: str = "fast", which=ENGINES
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


class Timed(EngineWrapper):
    """An engine whose encoder calls (steps and blocks) are timed."""

    def __init__(self, engine):
        super().__init__(engine)
        self.encoder_seconds = 0.0

    def encoder(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner.encoder(*args, **kwargs)
        self.encoder_seconds += time.perf_counter() - t0
        return out

    def encoder_block(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner.encoder_block(*args, **kwargs)
        self.encoder_seconds += time.perf_counter() - t0
        return out


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


def summary(times: list, audio_seconds_each: float) -> dict:
    """median/p90 in ms and the real-time factor (summed time / audio) of repeated measurements."""
    a = np.asarray(times, np.float64) * 1e3
    if a.size == 0:
        return {"median_ms": None, "p90_ms": None, "rtf": None, "n": 0}
    return {
        "median_ms": float(np.median(a)),
        "p90_ms": float(np.percentile(a, 90)),
        "rtf": float(a.sum() / 1e3 / (audio_seconds_each * len(a))),
        "n": int(a.size),
    }


def numba_cache_stats() -> dict:
    from ...fast import kernels  # imports Numba: only for a numba-backend run

    hits = misses = 0
    for obj in vars(kernels).values():
        stats = getattr(obj, "stats", None)
        if stats is not None and hasattr(stats, "cache_hits"):
            hits += sum(stats.cache_hits.values())
            misses += sum(stats.cache_misses.values())
    return {"numba_cache_hits": hits, "numba_cache_misses": misses}
