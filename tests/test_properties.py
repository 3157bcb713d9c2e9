"""Property tests (hypothesis), each bounded in examples and wall time: corrupted ONNX, .nemo, golden and WAV bytes
always end in one of the project's errors (or ValueError / FileNotFoundError), never another exception type or a
hang; random wrong shapes, dtypes, layouts and values of the encoder inputs always give a problem naming the
input; NeMo's chunk schedule uses every frame once, in order, with only the last chunk short and a dropped tail
shorter than the subsampling factor."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from fixture_data import AUDIO, FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import weights_tools as wt
from refimpl.model.audio import AudioError, load_audio
from refimpl.runtime.chunking import chunk_schedule, dropped_tail_frames
from refimpl.runtime.lookahead import LookAheadError
from refimpl.tools import golden
from refimpl.tools.check_inputs import ENCODER_INPUTS, InputsFileError, check_encoder_inputs
from weights_tools.outputs import OutputError

# Deterministic (the same examples on every run and machine: CI stays reproducible), no example database written
# into the work tree, no per-example deadline (file sizes make timings vary) but a hard per-example time limit.
# REFIMPL_HYPOTHESIS_EXPLORE=N runs N random (not derandomized) examples per property instead: a bug hunt.
EXPLORE = int(os.environ.get("REFIMPL_HYPOTHESIS_EXPLORE", "0"))


def bounded(max_examples: int):
    return settings(
        max_examples=EXPLORE or max_examples,
        derandomize=not EXPLORE,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


EXAMPLE_SECONDS = 5.0
# The clean errors: the project's own types, FileNotFoundError, and plain ValueError (what cli.main maps to exit
# 2). A stdlib ValueError subclass (UnicodeDecodeError, JSONDecodeError, ...) is not clean: its message is Python's.
PROJECT_ERRORS = (
    wt.ModelLoadError,
    wt.ConfigError,
    AudioError,
    golden.GoldenFormatError,
    OutputError,
    LookAheadError,
    InputsFileError,
    FileNotFoundError,
)


def is_clean(e: BaseException) -> bool:
    return isinstance(e, PROJECT_ERRORS) or type(e) is ValueError


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (TimeoutError) instead of hanging: SIGALRM interrupts the example after ``seconds`` (where there is no
    SIGALRM, e.g. Windows, the examples run unbounded)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@st.composite
def corrupted(draw, data: bytes):
    """``data`` truncated, with bytes flipped or overwritten, or with bytes inserted: where the damage goes is
    drawn uniformly over the file, so headers, lengths and payloads all get hit."""
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
    n = len(data)
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    out = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    i = draw(st.integers(0, n - 1))
    chunk = draw(st.binary(min_size=1, max_size=64))
    if kind == "overwrite":
        out[i : i + len(chunk)] = chunk
        return bytes(out[:n])
    return bytes(out[:i]) + chunk + bytes(out[i:])


def _clean(fn):
    """fn() either works or raises a clean error (``is_clean``) with a one-line message; anything else fails the
    test with the exception itself."""
    try:
        with time_limit(EXAMPLE_SECONDS):
            return fn()
    except Exception as e:
        if not is_clean(e):
            raise
        assert str(e).strip() and "\n" not in str(e), (type(e), str(e))
        return None


CTC_ONNX = (FIXTURES / "ctc" / "att-70-13" / "model.onnx").read_bytes()
RNNT_DJ = (FIXTURES / "rnnt" / "att-24-3" / "decoder_joint-model.onnx").read_bytes()
CTC_NEMO = (FIXTURES / "ctc" / "model.nemo").read_bytes()
HELLO = (AUDIO / "hello.wav").read_bytes()


@bounded(300)
@given(data=corrupted(CTC_ONNX))
def test_corrupted_onnx_is_a_clean_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(data)
        _clean(lambda: wt.load_onnx(tmp))


@bounded(150)
@given(data=corrupted(RNNT_DJ))
def test_corrupted_decoder_joint_is_a_clean_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "encoder-model.onnx").symlink_to((FIXTURES / "rnnt" / "att-24-3" / "encoder-model.onnx").resolve())
        (d / "decoder_joint-model.onnx").write_bytes(data)
        _clean(lambda: wt.load_onnx(d))


@bounded(250)
@given(data=corrupted(CTC_NEMO))
def test_corrupted_nemo_is_a_clean_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.nemo"
        path.write_bytes(data)
        _clean(lambda: wt.load_nemo(path))


@pytest.fixture(scope="module")
def golden_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("g") / "golden.npz"
    golden.record(FIXTURES / "ctc" / "att-70-13", AUDIO / "hello.wav", path)
    return path.read_bytes()


@bounded(200)
@given(data=st.data())
def test_corrupted_golden_is_a_clean_error(golden_bytes, data):
    bad = data.draw(corrupted(golden_bytes))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "golden.npz"
        path.write_bytes(bad)
        if _clean(lambda: golden.read_golden(path)) is not None:  # survived the checks: verify must stay clean too
            _clean(lambda: golden.verify(path, FIXTURES / "ctc" / "att-70-13", engine="refimpl"))


@bounded(300)
@given(data=corrupted(HELLO))
def test_corrupted_wav_is_a_clean_error_or_clean_audio(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.wav"
        path.write_bytes(data)
        notices: list = []
        x = _clean(lambda: load_audio(path, notices=notices))
        if x is not None:
            assert x.dtype == np.float32 and x.ndim == 1 and x.size > 0 and np.isfinite(x).all()
            assert all(isinstance(n, str) and "\n" not in n and "clip.wav" in n for n in notices)


# --- check-inputs ---------------------------------------------------------------------------------------------
CONFIG = wt.plan_onnx(FIXTURES / "hybrid" / "att-70-13").config  # B=1, 80 mel bins, 121 frames, 2 layers, d=64


def _good():
    return {
        "audio_signal": np.zeros((1, 80, 121), np.float32),
        "length": np.array([121], np.int64),
        "cache_last_channel": np.zeros((1, 2, 70, 64), np.float32),
        "cache_last_time": np.zeros((1, 2, 64, 8), np.float32),
        "cache_last_channel_len": np.array([0], np.int64),
    }


@st.composite
def spoiled_input(draw):
    """(name, wrong value) for one encoder input: another ndim, dtype, axis order, axis size (not the batch axis
    of audio_signal, which makes every *other* input wrong instead), non-finite or negative values, or not an
    array at all."""
    name = draw(st.sampled_from(ENCODER_INPUTS))
    good = _good()[name]
    kinds = ["ndim", "dtype", "not-array"]
    kinds += ["size"] if name != "length" and name != "cache_last_channel_len" else ["negative"]
    kinds += ["layout"] if good.ndim >= 3 else []
    kinds += ["nonfinite"] if good.dtype.kind == "f" else []
    kind = draw(st.sampled_from(kinds))
    if kind == "ndim":
        ndim = draw(st.integers(0, 5).filter(lambda n: n != good.ndim))
        value = np.zeros(draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim)), good.dtype)
    elif kind == "dtype":
        dtype = draw(st.sampled_from(["float16", "float64", "int32", "int64", "uint8", "bool", "complex64", "U3"]))
        value = good.astype(dtype) if dtype != good.dtype.name else good.astype("float16")
    elif kind == "not-array":
        value = draw(st.sampled_from([None, "audio", 3.5, [[1, 2], [3]], {"a": 1}]))
    elif kind == "layout":
        perm = draw(st.permutations(range(good.ndim)).filter(lambda p: [good.shape[i] for i in p] != list(good.shape)))
        value = np.ascontiguousarray(good.transpose(perm))
    elif kind == "size":
        axis = draw(st.integers(1 if name == "audio_signal" else 0, good.ndim - 1))
        if name == "audio_signal" and axis == 2:  # any other frame count (121 is the one right answer)
            n = draw(st.integers(0, 400).filter(lambda n: n != 121))
        else:
            n = draw(st.integers(0, 200).filter(lambda n: n != good.shape[axis]))
        shape = list(good.shape)
        shape[axis] = n
        value = np.zeros(shape, good.dtype)
    elif kind == "negative":
        value = np.array([draw(st.integers(-(2**40), -1))], np.int64)
    else:
        value = good.copy()
        value.reshape(-1)[draw(st.integers(0, value.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return name, value


@bounded(500)
@given(spoiled=spoiled_input())
def test_every_wrong_input_gets_a_problem_naming_it(spoiled):
    name, value = spoiled
    inputs = _good()
    inputs[name] = value
    with time_limit(EXAMPLE_SECONDS):
        problems = check_encoder_inputs(inputs, CONFIG)
    assert any(p.input == name and p.message for p in problems), (name, value, problems)
    assert check_encoder_inputs(_good(), CONFIG) == []


@bounded(50)
@given(dropped=st.lists(st.sampled_from(ENCODER_INPUTS), min_size=1, unique=True))
def test_every_missing_input_is_named(dropped):
    inputs = {k: v for k, v in _good().items() if k not in dropped}
    problems = check_encoder_inputs(inputs, CONFIG)
    for name in dropped:
        assert any(p.input == name and p.severity == "error" and "missing" in p.message for p in problems)


# --- chunk schedule -------------------------------------------------------------------------------------------
PARAMS = [
    wt.streaming_params(wt.read_nemo_config(FIXTURES / m / "model.nemo").encoder, att)
    for m, att in (("hybrid", (70, 13)), ("hybrid", (70, 0)), ("variant", (24, 3)), ("rnnt", (24, 0)))
]


@bounded(200)
@given(p=st.sampled_from(PARAMS), lengths=st.lists(st.integers(0, 700), min_size=1, max_size=4))
def test_chunk_schedule_properties(p, lengths):
    with time_limit(EXAMPLE_SECONDS):
        chunks = chunk_schedule(lengths, p)
    lengths = np.asarray(lengths)
    used = np.zeros(len(lengths), np.int64)
    for k, c in enumerate(chunks):
        assert c.index == k and c.start == k * p.shift_size  # in order, contiguous
        active = c.n_new > 0
        assert active.any() and c.width == int(c.n_new.max()) <= p.chunk_size
        assert (used[active] == c.start).all()  # each stream's new frames follow its previous ones
        used += c.n_new
    assert (used <= lengths).all()  # no frame used twice or invented
    tail = lengths - used
    assert np.array_equal(tail, dropped_tail_frames(lengths, p))
    assert (tail < p.subsampling_factor).all()  # the dropped tail is shorter than the subsampling factor ...
    assert ((tail == 0) | (used > 0)).all()  # ... and never a whole stream: the first chunk always runs
    for b in range(len(lengths)):  # per stream: every chunk but its last is full
        sizes = [int(c.n_new[b]) for c in chunks if c.n_new[b] > 0]
        assert all(n == p.chunk_size for n in sizes[:-1])
        assert not sizes or 1 <= sizes[-1] <= p.chunk_size
    assert (chunks == []) == (not lengths.any())
