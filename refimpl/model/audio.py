"""Audio in: a file or an array becomes a float32 mono waveform at the model's sample rate, or a clear error.

Nothing here resamples, downmixes or rescales behind the caller's back. A file at the wrong rate, with more
than one channel, or an integer array is refused with a message that says what was expected, what was found,
and how to fix it. The next stage on the signal path is ``refimpl.preprocessing.log_mel``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # Hz; every NeMo FastConformer streaming checkpoint so far (the model's config has the truth)
CHANNELS = 1  # the preprocessor takes one waveform per stream
DTYPE = np.float32  # NeMo's preprocessor casts its input to float32
# soundfile (libsndfile) reads PCM16 as float32 by dividing by 2**15, so -32768 -> -1.0 and 32767 -> 1 - 2**-15.
INT16_SCALE = 32768.0


class AudioError(ValueError):
    """Audio that refimpl will not feed to the model as it is: the message says what to do about it."""


def load_audio(path, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a mono audio file at ``sample_rate`` -> float32 [N] in [-1, 1).

    PCM files are scaled the way soundfile does with ``dtype='float32'`` (PCM16: /32768), which is how the
    goldens were read. Anything else is an ``AudioError`` (``FileNotFoundError`` for a missing file).
    """
    path = Path(os.fspath(path))
    if not path.exists():
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist (working directory: {os.getcwd()})")
    if path.is_dir():
        raise AudioError(f"{str(path)!r} is a directory, not an audio file; pass the path of a .wav/.flac file")
    info = _read_info(path, sample_rate)
    if info.samplerate != sample_rate:
        raise AudioError(
            f"{str(path)!r}: found {info.samplerate} Hz, the model expects {sample_rate} Hz; resample first, "
            f"e.g. `sox {_q(path)} -r {sample_rate} out.wav` (refimpl never resamples silently)"
        )
    if info.channels != CHANNELS:
        raise AudioError(
            f"{str(path)!r}: found {info.channels} channels, the model expects 1 (mono); downmix or pick one "
            f"channel first, e.g. `sox {_q(path)} -c 1 out.wav` or `sox {_q(path)} out.wav remix 1` "
            f"(refimpl never averages channels silently)"
        )
    x, _ = sf.read(path, dtype="float32", always_2d=True)  # [N, 1]
    if x.shape[0] == 0:
        raise AudioError(
            f"{str(path)!r} holds no samples (0 frames, {info.format} {info.subtype}); "
            f"the model needs at least one sample of audio"
        )
    return np.ascontiguousarray(x[:, 0])


def as_audio(x, *, dtype=DTYPE) -> np.ndarray:
    """Check an in-memory waveform and return it as C-contiguous ``dtype`` [N] (a copy only when needed).

    Accepts a 1-D float array (float16/32/64). Integers are refused rather than guessed at: for PCM16 use
    ``x.astype(np.float32) / 32768``.
    """
    x = _check_samples(x, "audio array")
    if x.ndim != 1:
        raise AudioError(f"audio array has shape {x.shape}, expected 1-D [samples] (mono); {_shape_hint(x.shape)}")
    return np.ascontiguousarray(x, dtype=dtype)


def as_audio_batch(x, length=None, *, dtype=DTYPE) -> tuple[np.ndarray, np.ndarray]:
    """One waveform [N] or a zero-padded batch [B, N], with per-row valid lengths -> ([B, N] dtype, [B] int64).

    ``length=None`` means every row is N samples long. Row b is valid in samples 0 .. length[b]-1.
    """
    x = _check_samples(x, "audio batch")
    if x.ndim not in (1, 2):
        raise AudioError(f"audio batch has shape {x.shape}, expected [samples] or [batch, samples]")
    x = np.ascontiguousarray(np.atleast_2d(x), dtype=dtype)  # [B, N]
    B, N = x.shape
    if length is None:
        return x, np.full(B, N, np.int64)
    length = np.asarray(length)
    if length.ndim == 0 and B == 1:
        length = length.reshape(1)
    if length.dtype.kind not in "iu" or length.shape != (B,):
        raise AudioError(
            f"length must be integers of shape ({B},) (one per row of the {B} x {N} batch), "
            f"got dtype {length.dtype}, shape {length.shape}"
        )
    length = length.astype(np.int64)
    if np.any(length < 0) or np.any(length > N):
        raise AudioError(f"length {length.tolist()} must lie in 0..{N} (the batch has {N} samples per row)")
    return x, length


def _check_samples(x, what: str) -> np.ndarray:
    """Refuse what is not floating point, empty, or not finite (shape is the caller's business)."""
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        raise AudioError(
            f"{what} has dtype {x.dtype}, expected floating point samples in [-1, 1]; for PCM16 data use "
            f"x.astype(np.float32) / {INT16_SCALE:g} (what soundfile does when reading with dtype='float32')"
        )
    if x.dtype.kind != "f":
        raise AudioError(f"{what} has dtype {x.dtype}, expected float32 (or float64) samples in [-1, 1]")
    if x.size == 0:
        raise AudioError(f"{what} is empty (shape {x.shape}); the model needs at least one sample of audio")
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(f"{what} has {bad} non-finite samples (NaN or inf) out of {x.size}; fix the source")
    return x


def _read_info(path: Path, sample_rate: int):
    """soundfile's header info, or an AudioError naming the file and saying what can be read."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(
            f"{str(path)!r} could not be read as audio ({e}); expected a {sample_rate} Hz mono file in a format "
            f"libsndfile reads (WAV, FLAC, OGG, ...); convert it first, e.g. `sox {_q(path)} -r {sample_rate} "
            f"-c 1 out.wav`"
        ) from None


def _shape_hint(shape: tuple) -> str:
    if len(shape) == 2 and 1 in shape:
        return "it looks like mono with an extra axis: pass x.reshape(-1)"
    if len(shape) == 2:
        n, c = (shape[0], shape[1]) if shape[0] >= shape[1] else (shape[1], shape[0])
        return (
            f"it looks like {c} channels of {n} samples: downmix or pick one channel yourself "
            f"(refimpl never averages channels silently)"
        )
    return "pass one waveform as a 1-D array"


def _q(path: Path) -> str:
    """The path quoted for a shell command in a hint."""
    s = str(path)
    return f"'{s}'" if any(c in s for c in " \"'$&;()") else s
