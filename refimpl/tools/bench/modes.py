"""The three things bench times, each on both engines in one run, interleaved so machine noise hits both alike:

- ``file``: a whole file transcribed end to end (features, encoder, decoding), as ``Model.transcribe`` does:
  refimpl in block order, onnxruntime in its chunk loop; repeated, the engines alternating per run;
- ``step``: one chunk at a time, the step (encoder + decoding) and the encoder call inside it; the engines
  alternate every ``block`` chunks;
- ``live``: audio arriving one chunk's worth at a time into a live stream (order step); the time from a block
  arriving to its tokens being out, per block; the engines alternate per block;
- ``batch``: ``streams`` streams (the audio rotated, so each hears other words at a time) stepped together as one
  batch, against one stream, per chunk; the engines and the two alternate every chunk.
"""

from __future__ import annotations

import time

import numpy as np

from ...runtime.chunking import chunk_schedule
from ...runtime.frontend import FeatureStream
from ...runtime.live import Model
from ...runtime.loop import BLOCK_FRAMES, iter_stream
from .setup import Timed, summary

MODES = ("file", "step", "live", "batch")
DEFAULT_MODES = ("file", "step", "live")  # batch on request (--mode batch): it steps 1 + --streams streams
BATCH_CHUNKS = 60  # timed chunks in batch mode (after the warm-up)
FILE_BLOCK_SECONDS = 1.0  # how a file reaches the front end in file mode


def _blocks(wave: np.ndarray, size: int):
    for i in range(0, len(wave), size):
        yield wave[i : i + size]


def features_seconds(engine, wave: np.ndarray, sample_rate: int) -> float:
    """The front end alone over the file (the same for both engines: refimpl's FeatureStream)."""
    t0 = time.perf_counter()
    fs = FeatureStream(engine.config.preprocessor, engine.featurizer)
    for b in _blocks(wave, int(FILE_BLOCK_SECONDS * sample_rate)):
        fs.accept(b)
    fs.finish()
    return time.perf_counter() - t0


def file_mode(
    engines: dict,
    path,
    wave: np.ndarray,
    *,
    decoders: tuple,
    repeats: int = 3,
    block_frames: int = BLOCK_FRAMES,
    progress=None,
) -> dict:
    """{engine: {"total": [s per run], "encoder": [...], "tokens": n}} for ``repeats`` runs of the whole file."""
    names = list(engines)
    sr = engines[names[0]].config.preprocessor.sample_rate
    res: dict = {n: {"total": [], "encoder": [], "order": engines[n].orders[-1]} for n in names}
    models = {n: Model(path, engine=Timed(e)) for n, e in engines.items()}
    decoder = decoders[0] if decoders else None
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:
            timed = models[n].engine
            timed.encoder_seconds = 0.0
            t0 = time.perf_counter()
            s = models[n].stream(decoder=decoder, order=res[n]["order"], block_frames=block_frames)
            for b in _blocks(wave, int(FILE_BLOCK_SECONDS * sr)):
                s.accept_waveform(b)
            s.input_finished()
            res[n]["total"].append(time.perf_counter() - t0)
            res[n]["encoder"].append(timed.encoder_seconds)
            res[n]["tokens"] = len(s.tokens)
            if progress is not None:
                progress(1)
    return res


def step_mode(
    engines: dict, mel: np.ndarray, *, decoders=("rnnt",), warmup: int = 2, block: int = 1, progress=None
) -> dict:
    """Stream mel [1, feat_in, F] through every engine, alternating engines every ``block`` chunks (the order
    within a round alternating too). Each engine's first ``warmup`` chunks run first, untimed.
    -> {name: {"step": [s per timed chunk], "encoder": [...], "warmup_step": [...], "chunks": n}}."""
    names = list(engines)
    timed = {n: Timed(e) for n, e in engines.items()}
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
                    if progress is not None:
                        progress(1)
    return res


def live_mode(engines: dict, path, wave: np.ndarray, *, decoders: tuple, warmup: int = 2, progress=None) -> dict:
    """Blocks of one chunk's audio (s*(R+1) hops) into a live stream per engine; per block the time from
    ``accept_waveform`` to its return (the chunk it completed decoded) -> {name: {"latency": [s], "encoder":
    [s]}}; the first ``warmup`` blocks are not counted."""
    names = list(engines)
    sp = engines[names[0]].streaming
    hop = engines[names[0]].config.preprocessor.n_window_stride
    block = sp.chunk_size * hop
    decoder = decoders[0] if decoders else None
    streams = {n: Model(path, engine=Timed(e)).stream(decoder=decoder, order="step") for n, e in engines.items()}
    res: dict = {n: {"latency": [], "encoder": []} for n in names}
    for k, b in enumerate(_blocks(wave, block)):
        for n in names if k % 2 == 0 else names[::-1]:
            timed = streams[n].loop.engine
            timed.encoder_seconds = 0.0
            t0 = time.perf_counter()
            streams[n].accept_waveform(b)
            dt = time.perf_counter() - t0
            if k >= warmup:
                res[n]["latency"].append(dt)
                res[n]["encoder"].append(timed.encoder_seconds)
                if progress is not None:
                    progress(1)
    for n in names:
        streams[n].input_finished()
        res[n]["tokens"] = len(streams[n].tokens)
    res["block_samples"] = block
    return res


def batch_mode(
    engines: dict, mel: np.ndarray, *, streams: int = 8, decoders=("rnnt",), warmup: int = 2, progress=None
) -> dict:
    """mel [1, feat_in, F]: one stream, and ``streams`` streams (stream k the audio rotated by k/streams of its
    length) in one batch -> {name: {"one": [s per chunk], "batch": [s per chunk]}} over ``BATCH_CHUNKS`` chunks."""
    names = list(engines)
    n = mel.shape[2]
    batch = np.stack([np.roll(mel[0], -k * (n // streams), axis=1) for k in range(streams)])  # [B, feat_in, F]
    n_chunks = len(chunk_schedule([n], engines[names[0]].streaming))
    timed_chunks = min(BATCH_CHUNKS, n_chunks - warmup)
    if timed_chunks < 1:
        raise ValueError(f"{n_chunks} chunks of audio leave none to time after {warmup} warm-up chunks")
    timed = {name: Timed(e) for name, e in engines.items()}
    its = {
        (name, kind): iter_stream(timed[name], m, decoders=decoders)
        for name in names
        for kind, m in (("one", mel), ("batch", batch))
    }
    res: dict = {name: {"one": [], "batch": [], "one_encoder": [], "batch_encoder": []} for name in names}
    for k in range(warmup + timed_chunks):
        for name in names if k % 2 == 0 else names[::-1]:
            for kind in ("one", "batch") if k % 2 == 0 else ("batch", "one"):
                timed[name].encoder_seconds = 0.0
                t0 = time.perf_counter()
                next(its[name, kind])
                dt = time.perf_counter() - t0
                if k >= warmup:
                    res[name][kind].append(dt)
                    res[name][kind + "_encoder"].append(timed[name].encoder_seconds)
        if k >= warmup and progress is not None:
            progress(1)
    res["streams"] = streams
    return res


def ratios(o: dict, r: dict, key: str = "median_ms") -> float | None:
    return None if not o.get(key) else r[key] / o[key]


def summarize(mode: str, raw: dict, audio_seconds: float, chunk_seconds: float) -> dict:
    """Per engine median/p90/RTF of the mode's measurements, and refimpl/onnxruntime ratios."""
    if mode == "file":
        per = {
            n: {
                "total": summary(v["total"], audio_seconds),
                "encoder": summary(v["encoder"], audio_seconds),
                "order": v["order"],
                "tokens": v["tokens"],
            }
            for n, v in raw.items()
        }
        key_total, key_enc = "total", "encoder"
    elif mode == "step":
        per = {
            n: {
                "step": summary(v["step"], chunk_seconds),
                "encoder": summary(v["encoder"], chunk_seconds),
                "chunks": v["chunks"],
                "first_chunk_ms": v["warmup_step"][0] * 1e3 if v["warmup_step"] else None,
            }
            for n, v in raw.items()
        }
        key_total, key_enc = "step", "encoder"
    elif mode == "batch":
        streams = raw["streams"]
        per = {}
        for n, v in raw.items():
            if n == "streams":
                continue
            one, batch = summary(v["one"], chunk_seconds), summary(v["batch"], chunk_seconds * streams)
            one_e, batch_e = summary(v["one_encoder"], chunk_seconds), summary(v["batch_encoder"], chunk_seconds)
            per[n] = {
                "one": one,
                "batch": batch,
                "batch_over_one": batch["median_ms"] / one["median_ms"],
                "one_encoder": one_e,
                "batch_encoder": batch_e,
                "encoder_batch_over_one": batch_e["median_ms"] / one_e["median_ms"],
            }
        out: dict = {"engines": per, "streams": streams}
        if "onnxruntime" in per and "refimpl" in per:
            out["ratio"] = ratios(per["onnxruntime"]["batch"], per["refimpl"]["batch"])
            out["p90_ratio"] = ratios(per["onnxruntime"]["batch"], per["refimpl"]["batch"], "p90_ms")
        return out
    else:
        per = {
            n: {
                "latency": summary(v["latency"], chunk_seconds),
                "encoder": summary(v["encoder"], chunk_seconds),
                "tokens": v["tokens"],
            }
            for n, v in raw.items()
            if n != "block_samples"
        }
        key_total, key_enc = "latency", "encoder"
    out = {"engines": per}
    if "onnxruntime" in per and "refimpl" in per:
        o, r = per["onnxruntime"], per["refimpl"]
        out["ratio"] = ratios(o[key_total], r[key_total])
        out["p90_ratio"] = ratios(o[key_total], r[key_total], "p90_ms")
        out["encoder_ratio"] = ratios(o[key_enc], r[key_enc])
    return out
