"""Log-mel features computed the way NeMo's ``AudioToMelSpectrogramPreprocessor`` (``FilterbankFeatures``) does.

The signal path, one function per step, in the order ``log_mel`` calls them::

    audio [B, N] float32, length [B]
      add_dither       (off unless asked: NeMo dithers only while training)
      preemphasis      y[n] = x[n] - 0.97 x[n-1]; samples n >= length -> 0           [B, N]
      stft_power       centre-pad n_fft//2, frame every hop, window, |rfft|^2         [B, n_fft//2+1, F]
      fb @ power       Slaney mel filterbank (mel_filterbank, or the checkpoint's)    [B, features, F]
      log_features     ln(mel + 2^-24)                                                [B, features, F]
      normalize_batch  "NA" for streaming models: nothing                            [B, features, F]
      mask_frames      frames t >= valid length -> pad_value (0.0)                    [B, features, F]
      pad_time         pad_to 0: nothing                                              [B, features, F']

with F = 1 + N // hop columns (for an even n_fft) and valid length floor(length / hop).

Versions. The default is NeMo >= 2.5 (the goldens come from NeMo 3.0.0). ``legacy=True`` is NeMo <= 2.4, which
differs in exactly these places (NeMo commit 0fd4de53, July 2025, "Improve ASR models' invariance to
padding/batch size"):

1. the centre padding reflects the signal (torch.stft's default ``reflect``) instead of padding zeros, which
   changes the first 2 and last 1-2 frames; torch refuses to reflect a signal of <= n_fft//2 samples;
2. the valid length is floor(length / hop) + 1, so one more frame survives masking;
3. samples n >= length are not zeroed after pre-emphasis (visible only in a zero-padded batch, where the first
   padding sample becomes -0.97 x[length-1], or with dither);
4. ``per_feature`` normalisation of a row with exactly one valid frame gives NaN (its unbiased std is 0/0)
   instead of treating the std as 0.

Precision. NeMo runs all of this in float32 with the FFT in complex64. NumPy >= 2 keeps float32 input in
complex64 through ``np.fft.rfft``, as torch does; NumPy 1.x computes it in complex128, and the result is rounded
to complex64 here, which is slightly *more* accurate than torch. The FFT libraries round differently: against
NeMo 3.0.0 more than half of the log-mel values come out bit-identical, the rest differ by a few float32 ulps,
up to ~1e-4 in bins of very low energy, where the log magnifies rounding that is relative to the whole frame.
``dtype=np.float64`` runs every step in double precision instead (further from NeMo: median 2.5e-7).

Settings that NeMo would run differently from this file, or not at all, are refused by ``check_supported``.

Why one module over ~350 lines: it is NeMo's ``AudioToMelSpectrogramPreprocessor`` step by step (dither,
pre-emphasis, STFT, mel, log, normalisation) with every setting it refuses; one stage per function, in order.
"""

from __future__ import annotations

import numpy as np

from weights_tools.config import ConfigError, PreprocessorConfig

from .audio import as_audio_batch

CONSTANT = 1e-5  # NeMo's name for the std guard of normalize_batch (also its training dither)
NO_NORMALIZATION = ("NA", "", None)  # NeMo's `if self.normalize:` and its fall-through branch
NORMALIZATIONS = ("per_feature", "all_features")
# NeMo's FilterbankFeatures builds its window with these torch functions, all with periodic=False (symmetric).
# Any other name ('ones', 'none') leaves it without a window, and its stft then fails.
WINDOWS = ("hann", "hamming", "blackman", "bartlett")
# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
SLANEY_HZ_PER_MEL = 200.0 / 3
SLANEY_MIN_LOG_HZ = 1000.0
SLANEY_MIN_LOG_MEL = SLANEY_MIN_LOG_HZ / SLANEY_HZ_PER_MEL  # 15
SLANEY_LOGSTEP = np.log(6.4) / 27.0
DEFAULT_PREPROCESSOR = PreprocessorConfig()  # NeMo's streaming FastConformer settings (frozen)


def log_mel(
    audio,
    length=None,
    cfg: PreprocessorConfig = DEFAULT_PREPROCESSOR,
    *,
    fb=None,
    window=None,
    legacy: bool = False,
    dither: float = 0.0,
    seed=None,
    dtype=np.float32,
):
    """Audio [N] or zero-padded [B, N] -> (log-mel [B, features, F] ``dtype``, valid frames [B] int64).

    fb, window: the checkpoint's ``preprocessor.featurizer.fb`` (1, features, n_fft//2+1) and ``.window``
    (n_window_size,); preferred over the ones computed here. legacy: NeMo <= 2.4 (see the module docstring).
    dither: amount of N(0, 1) noise, drawn from ``np.random.default_rng(seed)``; 0 (NeMo's inference) by default.
    ``cfg.dither`` is NeMo's training-time amount and is not used here.
    """
    check_supported(cfg, window_given=window is not None)
    x, length = as_audio_batch(audio, length, dtype=dtype)  # [B, N], [B]
    seq_len = valid_frames(length, cfg, legacy=legacy)  # [B]
    if dither > 0:
        x = add_dither(x, dither, seed)
    if cfg.preemph is not None:
        x = preemphasis(x, length, cfg.preemph, zero_tail=not legacy)
    win = checked_window(window, cfg, dtype)  # [n_window_size]
    power = stft_power(x, win, cfg, pad_mode="reflect" if legacy else "constant")  # [B, n_fft//2+1, F]
    mel = apply_filterbank(checked_filterbank(fb, cfg, dtype), power)  # [B, features, F]
    mel = log_features(mel, cfg)
    mel = normalize_batch(mel, seq_len, cfg.normalize, legacy=legacy)
    mel = mask_frames(mel, seq_len, cfg.pad_value)
    mel = pad_time(mel, cfg.pad_to, cfg.pad_value)
    return mel.astype(dtype, copy=False), seq_len


def check_supported(cfg: PreprocessorConfig, *, window_given: bool = False) -> None:
    """Refuse, with the reason, every setting this file would not compute exactly as NeMo does."""
    if cfg.frame_splicing != 1:
        raise ConfigError(
            f"frame_splicing={cfg.frame_splicing} is not supported (only 1, which streaming FastConformer models use)"
        )
    if cfg.exact_pad:
        raise ConfigError(
            "exact_pad=True (center=False STFT) is not supported; streaming FastConformer models use exact_pad=False"
        )
    if cfg.window not in WINDOWS and not window_given:
        raise ConfigError(
            f"window {cfg.window!r}: NeMo's FilterbankFeatures only builds {', '.join(WINDOWS)} "
            f"(any other name leaves it without a window and its STFT fails)"
        )
    if not (cfg.normalize in NO_NORMALIZATION or cfg.normalize in NORMALIZATIONS):
        raise ConfigError(
            f"normalize {cfg.normalize!r} is not one of {NORMALIZATIONS} or 'NA' (NeMo would "
            f"silently skip normalisation; if that is meant, say normalize='NA')"
        )
    if isinstance(cfg.pad_to, bool) or not isinstance(cfg.pad_to, int) or cfg.pad_to < 0:
        raise ConfigError(
            f"pad_to {cfg.pad_to!r} is not supported (an int >= 0; 'max' needs NeMo's "
            f"max_duration, which streaming does not use)"
        )
    if cfg.mel_norm not in ("slaney", None):
        raise ConfigError(f"mel_norm {cfg.mel_norm!r} is not supported ('slaney' or None)")
    if isinstance(cfg.log_zero_guard_value, str) and cfg.log_zero_guard_value not in ("tiny", "eps"):
        raise ConfigError(f"log_zero_guard_value {cfg.log_zero_guard_value!r} must be a number, 'tiny' or 'eps'")


# ----------------------------------------------------------------------------------------------------------
# lengths
# ----------------------------------------------------------------------------------------------------------
def num_frames(n_samples: int, cfg: PreprocessorConfig) -> int:
    """Columns torch.stft(center=True) makes from n_samples: 1 + (N + 2 (n_fft//2) - n_fft) // hop."""
    return 1 + (n_samples + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.n_window_stride


def valid_frames(length, cfg: PreprocessorConfig, *, legacy: bool = False) -> np.ndarray:
    """NeMo's ``seq_len`` [B] int64: floor((L + 2 (n_fft//2) - n_fft) / hop), +1 in NeMo <= 2.4; 0 for L = 0.

    For n_fft even this is floor(L / hop): the last column, whose window reaches past the signal, is not valid.
    """
    length = np.asarray(length, np.int64)
    n = (length + 2 * (cfg.n_fft // 2) - cfg.n_fft) // cfg.n_window_stride + (1 if legacy else 0)
    return np.where(length == 0, 0, n).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# waveform steps
# ----------------------------------------------------------------------------------------------------------
def add_dither(x: np.ndarray, amount: float, seed=None) -> np.ndarray:
    """[B, N] -> [B, N]: x + amount * N(0, 1), from np.random.default_rng(seed) (reproducible given a seed).

    Like NeMo, the noise covers the whole array, padding included; pre-emphasis then zeroes the padding.
    """
    noise = np.random.default_rng(seed).standard_normal(x.shape, dtype=x.dtype)
    return x + x.dtype.type(amount) * noise


def preemphasis(x: np.ndarray, length: np.ndarray, coeff: float, *, zero_tail: bool = True) -> np.ndarray:
    """[B, N] -> [B, N]: y[0] = x[0], y[n] = x[n] - coeff x[n-1] over the whole row (not per frame).

    zero_tail (NeMo >= 2.5): samples n >= length[b] are set to 0, so padding cannot leak into the last frames.
    """
    c = x.dtype.type(coeff)
    y = np.concatenate([x[:, :1], x[:, 1:] - c * x[:, :-1]], axis=1)
    if zero_tail:
        y[np.arange(x.shape[1])[None, :] >= length[:, None]] = 0
    return y


# ----------------------------------------------------------------------------------------------------------
# STFT
# ----------------------------------------------------------------------------------------------------------
def window_function(name: str, n: int, dtype=np.float32) -> np.ndarray:
    """Symmetric window [n], as torch.<name>_window(n, periodic=False), computed in float64 then cast.

    torch computes these in float32 arithmetic, so they differ from this by a few float32 ulps (<= 2.4e-7);
    pass the checkpoint's ``window`` to use NeMo's exact values.
    """
    if n == 1:
        return np.ones(1, dtype)
    k = np.arange(n, dtype=np.float64)
    phase = 2 * np.pi * k / (n - 1)
    windows = {
        "hann": lambda: 0.5 - 0.5 * np.cos(phase),
        "hamming": lambda: 0.54 - 0.46 * np.cos(phase),
        "blackman": lambda: 0.42 - 0.5 * np.cos(phase) + 0.08 * np.cos(2 * phase),
        "bartlett": lambda: 1 - np.abs(2 * k / (n - 1) - 1),
    }
    if name not in windows:
        raise ConfigError(f"window {name!r} is not one of {WINDOWS}")
    return windows[name]().astype(dtype)


def centre_window(window: np.ndarray, n_fft: int) -> np.ndarray:
    """[win] -> [n_fft]: zero-padded on both sides as torch.stft does, (n_fft - win) // 2 zeros on the left."""
    left = (n_fft - len(window)) // 2
    out = np.zeros(n_fft, window.dtype)
    out[left : left + len(window)] = window
    return out


def frame_signal(x: np.ndarray, n_fft: int, hop: int, *, pad_mode: str = "constant") -> np.ndarray:
    """[B, N] -> [B, F, n_fft] as torch.stft(center=True): pad n_fft//2 each side, frame t starts at t*hop.

    pad_mode "constant" pads zeros (NeMo >= 2.5); "reflect" mirrors the row without repeating its edge sample
    (torch's default, NeMo <= 2.4), which torch (and so this) only allows for rows longer than n_fft//2.
    F = 1 + (N + 2 (n_fft//2) - n_fft) // hop. The frames are a read-only view into the padded copy.
    """
    pad = n_fft // 2
    if pad_mode == "reflect" and x.shape[1] <= pad:
        raise ValueError(
            f"reflect padding (NeMo <= 2.4) needs more than n_fft//2 = {pad} samples, got "
            f"{x.shape[1]}; torch.stft refuses this too"
        )
    padded = np.pad(x, ((0, 0), (pad, pad)), mode=pad_mode)  # [B, N + 2 pad]
    return np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop]


def stft_power(x: np.ndarray, window: np.ndarray, cfg: PreprocessorConfig, *, pad_mode: str = "constant") -> np.ndarray:
    """[B, N] -> |STFT|^mag_power [B, n_fft//2+1, F] (mag_power 2: the power spectrum), in x's precision.

    As NeMo: the magnitude sqrt(re^2 + im^2) is taken first and then raised to mag_power (for float32 the
    round trip through sqrt is part of what is being reproduced).
    """
    frames = frame_signal(x, cfg.n_fft, cfg.n_window_stride, pad_mode=pad_mode)  # [B, F, n_fft]
    w = centre_window(window.astype(x.dtype), cfg.n_fft)  # [n_fft]
    spec = np.fft.rfft(frames * w, n=cfg.n_fft, axis=-1)  # [B, F, n_fft//2+1]
    spec = spec.astype(np.result_type(x.dtype, np.complex64), copy=False)  # NumPy 1.x returns complex128
    mag = np.sqrt(spec.real * spec.real + spec.imag * spec.imag)
    if cfg.mag_power != 1.0:
        mag = mag ** x.dtype.type(cfg.mag_power)
    return mag.transpose(0, 2, 1)


# ----------------------------------------------------------------------------------------------------------
# mel filterbank
# ----------------------------------------------------------------------------------------------------------
def hz_to_mel(f) -> np.ndarray:
    """Slaney mel scale: f / (200/3) below 1 kHz, 15 + ln(f / 1000) / (ln 6.4 / 27) above."""
    f = np.asarray(f, np.float64)
    log_part = SLANEY_MIN_LOG_MEL + np.log(np.maximum(f, SLANEY_MIN_LOG_HZ) / SLANEY_MIN_LOG_HZ) / SLANEY_LOGSTEP
    return np.where(f >= SLANEY_MIN_LOG_HZ, log_part, f / SLANEY_HZ_PER_MEL)


def mel_to_hz(m) -> np.ndarray:
    """Inverse of hz_to_mel."""
    m = np.asarray(m, np.float64)
    log_part = SLANEY_MIN_LOG_HZ * np.exp(SLANEY_LOGSTEP * (m - SLANEY_MIN_LOG_MEL))
    return np.where(m >= SLANEY_MIN_LOG_MEL, log_part, m * SLANEY_HZ_PER_MEL)


def mel_filterbank(cfg: PreprocessorConfig = DEFAULT_PREPROCESSOR, dtype=np.float32) -> np.ndarray:
    """Triangular filters on the Slaney mel scale [features, n_fft//2+1], as librosa.filters.mel(htk=False).

    features + 2 edges equally spaced in mel between lowfreq and highfreq (None or 0 -> sample_rate/2, as
    NeMo's `highfreq or sample_rate / 2`); filter m rises from edge m to m+1 and falls to m+2; with mel_norm
    "slaney" it is scaled by 2 / (f[m+2] - f[m]) so that every filter has the same area.
    For float32 the triangles are rounded to float32 before the scaling, as librosa does: that makes this
    bit-identical to the checkpoint's ``preprocessor.featurizer.fb``. dtype=np.float64 keeps full precision.
    """
    fft_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)  # [K]
    fmax = cfg.highfreq or cfg.sample_rate / 2
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(cfg.lowfreq), hz_to_mel(fmax), cfg.features + 2))  # [M+2]
    width = np.diff(edges_hz)  # [M+1]
    rising = (fft_hz[None, :] - edges_hz[:-2, None]) / width[:-1, None]  # [M, K]
    falling = (edges_hz[2:, None] - fft_hz[None, :]) / width[1:, None]  # [M, K]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(dtype)  # [M, K]
    if cfg.mel_norm == "slaney":
        weights = (weights * (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]).astype(dtype)
    return weights


# ----------------------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------------------
def apply_filterbank(fb: np.ndarray, power: np.ndarray) -> np.ndarray:
    """fb [D, K] x power [B, K, F] -> mel [B, D, F], every frame summed over its K bins in one fixed order
    (einsum's loop, not BLAS: a BLAS product rounds a column differently depending on how many columns it is
    given), so a frame's features are the same whether it is computed alone, in a batch or in a stream."""
    return np.einsum("dk,bkf->bdf", fb, power)


def log_features(mel: np.ndarray, cfg: PreprocessorConfig) -> np.ndarray:
    """[B, D, T] -> [B, D, T]: natural log with NeMo's zero guard ("add": ln(x + g), "clamp": ln(max(x, g)))."""
    if not cfg.log:
        return mel
    guard = cfg.log_zero_guard_value
    if isinstance(guard, str):  # "tiny" / "eps" of the working precision, as NeMo's torch.finfo
        guard = getattr(np.finfo(mel.dtype), guard)
    guard = mel.dtype.type(guard)
    if cfg.log_zero_guard_type == "add":
        return np.log(mel + guard)
    return np.log(np.maximum(mel, guard))


def normalize_batch(x: np.ndarray, seq_len: np.ndarray, normalize, *, legacy: bool = False) -> np.ndarray:
    """[B, D, T] -> [B, D, T]: NeMo's normalize_batch over the valid frames t < seq_len[b] of each row.

    per_feature: each feature row minus its mean, over its unbiased std + 1e-5 (CONSTANT); a row with a single
    valid frame has std 0 (NaN when legacy); invalid frames become 0. all_features: one mean and unbiased std
    (+ 1e-5) over all features and valid frames of the row. "NA", "" and None: unchanged.
    """
    if normalize in NO_NORMALIZATION:
        return x
    valid = (np.arange(x.shape[2])[None, :] < seq_len[:, None])[:, None, :]  # [B, 1, T]
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalize == "per_feature":
            n = valid.sum(axis=2).astype(x.dtype)  # [B, 1]
            mean = np.where(valid, x, 0).sum(axis=2) / n  # [B, D]
            centred = np.where(valid, x - mean[:, :, None], 0)
            std = np.sqrt((centred * centred).sum(axis=2) / (n - 1))  # [B, D]
            if not legacy:
                std = np.where(np.isnan(std), 0, std).astype(x.dtype)
            y = (x - mean[:, :, None]) / (std + x.dtype.type(CONSTANT))[:, :, None]
            return y if legacy else np.where(valid, y, 0).astype(x.dtype)
        if normalize == "all_features":
            rows = [x[b, :, : seq_len[b]] for b in range(x.shape[0])]
            mean = np.array([r.mean() if r.size else np.nan for r in rows], x.dtype)  # [B]
            std = np.array([r.std(ddof=1) if r.size > 1 else np.nan for r in rows], x.dtype)  # [B]
            return (x - mean[:, None, None]) / (std + x.dtype.type(CONSTANT))[:, None, None]
    raise ConfigError(f"normalize {normalize!r} is not one of {NORMALIZATIONS} or 'NA'")


def mask_frames(x: np.ndarray, seq_len: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
    """[B, D, T] -> [B, D, T]: frames t >= seq_len[b] set to pad_value (NeMo's final masked_fill)."""
    invalid = np.arange(x.shape[2])[None, :] >= seq_len[:, None]  # [B, T]
    return np.where(invalid[:, None, :], x.dtype.type(pad_value), x)


def pad_time(x: np.ndarray, pad_to: int, pad_value: float = 0.0) -> np.ndarray:
    """[B, D, T] -> [B, D, T']: right-pad the time axis with pad_value up to a multiple of pad_to (0: none)."""
    if pad_to <= 0 or x.shape[2] % pad_to == 0:
        return x
    extra = pad_to - x.shape[2] % pad_to
    return np.pad(x, ((0, 0), (0, 0), (0, extra)), constant_values=pad_value)


def checked_window(window, cfg: PreprocessorConfig, dtype) -> np.ndarray:
    """The caller's (checkpoint) window [n_window_size], or the one named by cfg."""
    if window is None:
        return window_function(cfg.window, cfg.n_window_size, dtype)
    window = np.asarray(window)
    if window.shape != (cfg.n_window_size,):
        raise ValueError(
            f"window has shape {window.shape}, expected ({cfg.n_window_size},) = n_window_size "
            f"(the checkpoint's preprocessor.featurizer.window)"
        )
    return window.astype(dtype)


def checked_filterbank(fb, cfg: PreprocessorConfig, dtype) -> np.ndarray:
    """The caller's (checkpoint) filterbank (1, D, K) or (D, K) as [D, K], or mel_filterbank(cfg)."""
    if fb is None:
        return mel_filterbank(cfg, dtype)
    fb = np.asarray(fb)
    expected = (cfg.features, cfg.n_fft // 2 + 1)
    if fb.shape[-2:] != expected or fb.ndim not in (2, 3) or (fb.ndim == 3 and fb.shape[0] != 1):
        raise ValueError(
            f"fb has shape {fb.shape}, expected (1, {expected[0]}, {expected[1]}) = (1, features, "
            f"n_fft//2+1) (the checkpoint's preprocessor.featurizer.fb)"
        )
    return fb.reshape(expected).astype(dtype)
