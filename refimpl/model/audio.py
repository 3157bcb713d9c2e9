"""Audio in: a file or an array becomes a float32 mono waveform at the model's sample rate, or a clear error.

Nothing here resamples, downmixes or rescales behind the caller's back. A file at the wrong rate, with more
than one channel, headerless, unreadable or holding NaN/inf, or an integer array, is refused with a message that
says what was expected, what was found, and how to fix it. What still runs but deserves a word (a truncated WAV,
float samples far outside [-1, 1]) is reported as a one-line notice: appended to ``notices`` when the caller
passes a list, else issued as an ``AudioWarning``. The next stage on the signal path is
``refimpl.preprocessing.log_mel``.

Only when asked: ``resample=True`` resamples a file at another rate to the model's with soxr (VHQ, block by block
as the file is read: ``soxr.ResampleStream`` gives the samples of a whole-file ``soxr.resample``), and
``channel=N`` takes channel N (0-based) of a multichannel file, ``channel="mean"`` the average of its channels;
each says so in one notice.

Why one module over ~350 lines: every way audio can be wrong (format, rate, channels, truncation) is
checked here, once, in the block reader that every command uses.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from weights_tools.errors import one_line

SAMPLE_RATE = 16000  # Hz; every NeMo FastConformer streaming checkpoint so far (the model's config has the truth)
CHANNELS = 1  # the preprocessor takes one waveform per stream
DTYPE = np.float32  # NeMo's preprocessor casts its input to float32
# soundfile (libsndfile) reads PCM16 as float32 by dividing by 2**15, so -32768 -> -1.0 and 32767 -> 1 - 2**-15.
INT16_SCALE = 32768.0
# Float samples whose peak exceeds this get a notice: float audio lies in [-1, 1]; a little over 1 happens after
# resampling or mixing, 100 or 32767 is a scaling bug (PCM16 values cast to float without the /32768).
PEAK_NOTICE = 1.5
# Headerless PCM: no sample rate, channel count or encoding to check.
RAW_SUFFIXES = (".raw", ".pcm", ".s16", ".s16le", ".u8", ".sln")
NAME_MAX = 255  # bytes in one file name on Linux/macOS file systems (ENAMETOOLONG beyond)
READ_BLOCK = 1 << 16  # samples per block read from a file (4 s at 16 kHz, 256 KB of float32)
RESAMPLE_QUALITY = "VHQ"  # soxr's very high quality recipe (28-bit precision)
MEAN = "mean"  # channel="mean": the average of every channel


class AudioError(ValueError):
    """Audio that refimpl will not feed to the model as it is: the message says what to do about it."""


class AudioWarning(UserWarning):
    """A notice about audio that refimpl still runs, issued when the caller passed no ``notices`` list."""


def notice(message: str, notices: list | None) -> None:
    """Hand a one-line notice to the caller: appended to ``notices``, else issued as an AudioWarning."""
    if notices is not None:
        notices.append(message)
    else:
        warnings.warn(message, AudioWarning, stacklevel=3)


def load_audio(
    path,
    *,
    sample_rate: int = SAMPLE_RATE,
    notices: list | None = None,
    resample: bool = False,
    channel: int | str | None = None,
) -> np.ndarray:
    """Read a mono audio file at ``sample_rate`` -> float32 [N] in [-1, 1).

    PCM files are scaled the way soundfile does with ``dtype='float32'`` (PCM16: /32768), which is how the
    goldens were read. Anything else is an ``AudioError`` (``FileNotFoundError`` for a missing file). A truncated
    WAV (its header promises more samples than the file holds) runs on the samples present, and float samples
    far outside [-1, 1] run as they are; each gives a one-line notice (see ``notice``). ``resample``: a file at
    another rate is resampled to ``sample_rate`` (soxr VHQ) instead of refused; ``channel``: N (0-based) or
    "mean" makes a multichannel file mono instead of refused. Each gives one notice.
    """
    blocks = list(audio_blocks(path, sample_rate=sample_rate, notices=notices, resample=resample, channel=channel))
    if not blocks:
        return np.zeros(0, DTYPE)
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)


def audio_blocks(
    path,
    *,
    sample_rate: int = SAMPLE_RATE,
    block: int = READ_BLOCK,
    notices: list | None = None,
    resample: bool = False,
    channel: int | str | None = None,
):
    """``load_audio`` a block of ``block`` samples of the file at a time (memory independent of the file's
    length): yields float32 [n] blocks with the same checks. The header is checked before the first block (the
    resample and channel notices come then); a non-finite sample stops the reading where it is found; the notices
    about the samples (truncated WAV, loud samples) come after the last block."""
    path, info = _checked_file(path, sample_rate, resample=resample, channel=channel)
    what = f"audio file {str(path)!r}"
    resampler = None
    if info.channels > 1:
        notice(_channel_notice(path, info.channels, channel), notices)
    if info.samplerate != sample_rate:
        resampler = soxr.ResampleStream(info.samplerate, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        notice(f"{str(path)!r}: resampled {info.samplerate} Hz -> {sample_rate} Hz (soxr {RESAMPLE_QUALITY})", notices)
    n, peak, whole = 0, 0.0, True
    try:
        with sf.SoundFile(str(path)) as f:
            for b in f.blocks(blocksize=block, dtype="float32", always_2d=True):  # [n, channels]
                x = pick_channel(b, channel)  # the samples the model gets are the ones checked
                _check_finite(x, what, offset=n)
                peak = max(peak, float(np.max(np.abs(x)))) if x.size else peak
                whole = whole and bool(np.array_equal(x, np.round(x)))
                n += x.shape[0]
                if resampler is not None:
                    x = resampler.resample_chunk(x)
                if x.size:
                    yield x
            if resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, DTYPE), last=True)  # the filter's delay, flushed
                if tail.size:
                    yield np.ascontiguousarray(tail, DTYPE)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as e:
        if isinstance(e, AudioError):
            raise
        raise AudioError(
            f"{str(path)!r}: its samples could not be read ({one_line(e)}); the file is corrupted: re-create or "
            f"convert it, e.g. `sox {_q(path)} -r {sample_rate} -c 1 out.wav`"
        ) from None
    if n == 0:
        info = _read_info(path, sample_rate)
        raise AudioError(
            f"{str(path)!r} holds no samples (0 frames, {info.format} {info.subtype}); "
            f"the model needs at least one sample of audio"
        )
    short = _wav_shortfall(path, n, info.samplerate)
    if short:
        notice(short, notices)
    _peak_notice(peak, whole, what, notices)


def pick_channel(b: np.ndarray, channel: int | str | None) -> np.ndarray:
    """One channel of a block [n, channels] -> float32 [n]: channel ``channel`` (None: the only one), or the
    average of them all (``"mean"``)."""
    x = b.mean(axis=1) if channel == MEAN else b[:, 0 if channel is None else int(channel)]
    return np.ascontiguousarray(x, DTYPE)


def check_audio_file(path, *, sample_rate: int = SAMPLE_RATE, resample: bool = False, channel=None):
    """The checks ``load_audio`` makes before it reads any sample (path, format, rate, channels), alone: to
    refuse a bad file among many before any is transcribed. -> soundfile's header info."""
    return _checked_file(path, sample_rate, resample=resample, channel=channel)[1]


def _checked_file(path, sample_rate: int, *, resample: bool = False, channel=None) -> tuple:
    """(path, header info) after the checks made before any sample is read: the path, the format, the rate and
    the channels."""
    if os.fspath(path) == "-":
        raise AudioError(
            "reading audio from stdin is not supported: pass a file path (save the stream first, e.g. "
            "`cat > in.wav`, or `sox -t raw -r 16000 -e signed-integer -b 16 -c 1 - in.wav` for raw PCM)"
        )
    path = Path(os.fspath(path))
    _check_path(path)
    if path.is_dir():
        raise AudioError(f"{str(path)!r} is a directory, not an audio file; pass the path of a .wav/.flac file")
    if path.suffix.lower() in RAW_SUFFIXES:
        raise AudioError(
            f"{str(path)!r} is headerless raw audio ({path.suffix}): refimpl needs a header that states the sample "
            f"rate, channels and encoding; add one, e.g. for {sample_rate} Hz mono 16-bit PCM: "
            f"`sox -t raw -r {sample_rate} -e signed-integer -b 16 -c 1 {_q(path)} out.wav`"
        )
    info = _read_info(path, sample_rate)
    if info.samplerate != sample_rate and not resample:
        raise AudioError(
            f"{str(path)!r}: found {info.samplerate} Hz, the model expects {sample_rate} Hz; resample first, "
            f"e.g. `sox {_q(path)} -r {sample_rate} out.wav`, or ask refimpl to (--resample; resample=True in "
            f"Python) (refimpl never resamples silently)"
        )
    if info.channels != CHANNELS and channel is None:
        raise AudioError(
            f"{str(path)!r}: found {info.channels} channels, the model expects 1 (mono); downmix or pick one "
            f"channel first, e.g. `sox {_q(path)} -c 1 out.wav` or `sox {_q(path)} out.wav remix 1`, or ask "
            f"refimpl to (--channel 0 for the first, --channel mean for their average) (refimpl never averages "
            f"channels silently)"
        )
    if channel is not None and channel != MEAN and not 0 <= int(channel) < info.channels:
        raise AudioError(
            f"{str(path)!r}: channel {channel} was asked, the file has {info.channels} "
            f"({'only channel 0' if info.channels == 1 else f'channels 0..{info.channels - 1}'}); pass one of "
            f"them (0-based), or mean"
        )
    return path, info


def _channel_notice(path: Path, channels: int, channel) -> str:
    if channel == MEAN:
        return f"{str(path)!r}: averaged its {channels} channels into one (channel mean)"
    return f"{str(path)!r}: took channel {channel} of its {channels} (channels 0..{channels - 1})"


def as_audio(x, *, dtype=DTYPE, notices: list | None = None) -> np.ndarray:
    """Check an in-memory waveform and return it as C-contiguous ``dtype`` [N] (a copy only when needed).

    Accepts a 1-D float array (float16/32/64). Integers are refused rather than guessed at: for PCM16 use
    ``x.astype(np.float32) / 32768``. Samples far outside [-1, 1] run as they are, with a notice.
    """
    x = _check_samples(x, "audio array")
    if x.ndim != 1:
        raise AudioError(f"audio array has shape {x.shape}, expected 1-D [samples] (mono); {_shape_hint(x.shape)}")
    _range_notice(x, "audio array", notices)
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
    _check_finite(x, what)
    return x


def _check_finite(x: np.ndarray, what: str, *, offset: int | None = None) -> None:
    """``offset``: x is the block of a file that starts at this sample (None: x is the whole audio)."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(-1))
        counted = f"out of {x.size}" if offset is None else f"in samples {offset}..{offset + x.size - 1}"
        offset = offset or 0
        raise AudioError(
            f"{what} has {bad.size} non-finite samples (NaN or inf) {counted}, the first at sample "
            f"{offset + int(bad[0])}; the model cannot transcribe them: fix the source (refimpl never replaces "
            f"them silently)"
        )


def _range_notice(x: np.ndarray, what: str, notices: list | None) -> None:
    """A notice when float samples go far outside [-1, 1] (the model still runs on them as they are)."""
    peak = float(np.max(np.abs(x)))
    if peak > PEAK_NOTICE:
        _peak_notice(peak, bool(np.array_equal(x, np.round(x))), what, notices)


def _peak_notice(peak: float, whole_numbers: bool, what: str, notices: list | None) -> None:
    if peak <= PEAK_NOTICE:
        return
    if peak <= INT16_SCALE and whole_numbers:
        notice(
            f"{what} peaks at {peak:g} and every sample is a whole number: it looks like PCM16 values cast to "
            f"float without the /32768; float audio lies in [-1, 1], so the features are off by "
            f"{2 * np.log(INT16_SCALE):.1f} in log-mel: divide by 32768 (x / 32768); running it as it is",
            notices,
        )
        return
    notice(
        f"{what} peaks at {peak:g}, {peak:.0f}x the full scale of float audio ([-1, 1]), which shifts every "
        f"log-mel feature by {2 * np.log(peak):.1f}: scale it into [-1, 1] (e.g. x / {peak:g}) or fix the gain "
        f"at the source; running it as it is",
        notices,
    )


def _check_path(path: Path) -> None:
    """FileNotFoundError for a missing file, AudioError for a path no file system can hold or that cannot be
    accessed (never a bare OSError)."""
    long = [part for part in path.parts if len(os.fsencode(part)) > NAME_MAX]
    if long:
        name = long[0]
        shown = name if len(name) <= 60 else f"{name[:40]}...{name[-15:]}"
        raise AudioError(
            f"audio path component {shown!r} is {len(os.fsencode(name))} bytes long; file systems allow at most "
            f"{NAME_MAX} bytes per name, so no such file can exist: check the path, or rename the file to a "
            f"shorter name"
        )
    try:
        exists = path.exists()
    except OSError as e:
        raise AudioError(f"cannot access audio file {str(path)!r}: {e.strerror or e}") from None
    if not exists:
        raise FileNotFoundError(f"audio file {str(path)!r} does not exist (working directory: {os.getcwd()})")
    if path.is_file() and not os.access(path, os.R_OK):
        raise AudioError(f"audio file {str(path)!r} is not readable (permission denied): check its permissions")


def _read_info(path: Path, sample_rate: int):
    """soundfile's header info, or an AudioError naming the file and saying what can be read."""
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as e:
        raise AudioError(
            f"{str(path)!r} could not be read as audio ({one_line(e)}); expected a {sample_rate} Hz mono file in a "
            f"format libsndfile reads (WAV, FLAC, OGG, ...); convert it first, e.g. `sox {_q(path)} -r {sample_rate} "
            f"-c 1 out.wav` (headerless PCM: `sox -t raw -r {sample_rate} -e signed-integer -b 16 -c 1 "
            f"{_q(path)} out.wav`)"
        ) from None


def _wav_shortfall(path: Path, present: int, sample_rate: int) -> str | None:
    """The notice for a RIFF/WAVE file whose ``data`` chunk header promises more sample frames than the file
    holds (``present`` is what libsndfile read), else None. A data size of 0 or 0xFFFFFFFF is a streaming
    writer's "length unknown", not truncation."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos, block = 12, 0
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = f.read(4), int.from_bytes(f.read(4), "little")
                if cid == b"fmt ":
                    fmt = f.read(min(n, 16))
                    block = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else 0
                elif cid == b"data":
                    if n in (0, 0xFFFFFFFF) or block <= 0:
                        return None
                    promised = n // block
                    if promised <= present:
                        return None
                    return (
                        f"audio file {str(path)!r} is truncated: its WAV header says {promised} samples "
                        f"({promised / sample_rate:.2f} s) but the file holds {present} "
                        f"({present / sample_rate:.2f} s); running on the {present} samples present (re-create or "
                        f"re-download the file to get the rest)"
                    )
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


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
