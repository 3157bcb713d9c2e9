"""kaldi-native-fbank's online log-mel filterbank (``knf.OnlineFbank``), in NumPy, as sherpa-onnx configures it.

sherpa-onnx computes the features of every streaming model with kaldi-native-fbank (its C++ copy of Kaldi's
``OnlineFbank``). For a NeMo transducer its ``OnlineRecognizerTransducerNeMoImpl::PostInit`` overrides the
defaults with ``NEMO_TRANSDUCER`` below; a NeMo CTC model keeps sherpa's ``FeatureExtractorConfig`` defaults
(``SHERPA_DEFAULT``: Kaldi's povey window, DC removal, 20..7600 Hz HTK mel scale). The signal path, per frame,
in the order ``fbank`` calls the functions::

    samples [N] float32 in [-1, 1] (sherpa: normalize_samples=True, no x32768)
      frame_starts      frame f covers samples [160 f + 80 - 200, +400) (snip_edges=False) ...
      extract_frames    ... edges reflected: -1 -> 0, -2 -> 1; N -> N-1                 [F, 400]
      remove_dc_offset  (SHERPA_DEFAULT only) minus the frame mean                        [F, 400]
      preemphasis       per frame: y[i] = x[i] - 0.97 x[i-1], y[0] = x[0] - 0.97 x[0]    [F, 400]
      window            hann periodic 0.5 - 0.5 cos(2 pi n / 400), or povey               [F, 400]
      power_spectrum    zero-padded to 512, |rfft|^2                                      [F, 257]
      mel_banks         librosa-style Slaney filters over 257 bins, or Kaldi's over 256     [F, 80]
      log               ln(max(e, FLT_EPSILON = 2^-23))                                   [F, 80]

NeMo differs (see ``refimpl.model.preprocessing``): frame t is centred on sample 160 t (here 160 t + 80), the
pre-emphasis runs once over the signal, the window is symmetric (2 pi n / 399), the edges are zero-padded, and
the log guard is ln(e + 2^-24).

Precision. Every step runs in float32 in the order kaldi-native-fbank runs it (sequential sums, the filter weights
built in float32 arithmetic, ``logf``/``expf`` taken as correctly rounded float64 results). The FFT differs:
kaldi-native-fbank uses KISS FFT in float32, this file a float64 FFT rounded to float32, so the two agree to
float32 rounding of the spectrum, which the log turns into absolute differences of ~1e-6 in ordinary bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
FLT_EPSILON = float(np.finfo(np.float32).eps)  # 2^-23: the log floor (std::numeric_limits<float>::epsilon())
M_2PI = 6.283185307179586476925286766559005  # kaldi-math.h


@dataclass(frozen=True)
class FbankOptions:
    """The fields of ``knf.FbankOptions`` (``frame_opts`` and ``mel_opts`` flattened); defaults are knf's own."""

    samp_freq: float = 16000.0
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    dither: float = 0.0  # knf's default is 3e-5; sherpa sets 0 and this file only implements 0
    preemph_coeff: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    blackman_coeff: float = 0.42
    snip_edges: bool = True
    num_bins: int = 23
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist
    is_librosa: bool = False
    norm: str = "slaney"  # librosa mode only
    use_slaney_mel_scale: bool = True  # librosa mode only
    use_power: bool = True
    use_log_fbank: bool = True

    @property
    def window_shift(self) -> int:
        return int(F32(F32(self.samp_freq) * F32(0.001)) * F32(self.frame_shift_ms))

    @property
    def window_size(self) -> int:
        return int(F32(F32(self.samp_freq) * F32(0.001)) * F32(self.frame_length_ms))

    @property
    def padded_window_size(self) -> int:
        n = self.window_size
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def __post_init__(self):
        if self.dither != 0:
            raise ValueError("dither != 0 is random; sherpa-onnx runs every NeMo model with dither 0")
        if self.window_type not in ("hann", "hanning", "hamming", "povey", "rectangular", "sine", "blackman"):
            raise ValueError(f"unknown window_type {self.window_type!r}")


# sherpa-onnx's FeatureExtractorConfig defaults (features.h), as OnlineRecognizer.from_nemo_ctc passes them.
SHERPA_DEFAULT = FbankOptions(
    num_bins=80,
    snip_edges=False,
    low_freq=20.0,
    high_freq=-400.0,
    remove_dc_offset=True,
    window_type="povey",
    is_librosa=False,
)
# ... overridden by OnlineRecognizerTransducerNeMoImpl::PostInit for NeMo transducers.
NEMO_TRANSDUCER = FbankOptions(
    num_bins=80,
    snip_edges=False,
    low_freq=0.0,
    high_freq=8000.0,
    remove_dc_offset=False,
    window_type="hann",
    is_librosa=True,
)


# --------------------------------------------------------------------------------------------------------------
# framing
# --------------------------------------------------------------------------------------------------------------
def num_frames(num_samples: int, opts: FbankOptions, *, flush: bool = True) -> int:
    """Frames ready after ``num_samples`` (knf ``NumFrames``). flush=False is the online count before
    ``input_finished()``: a frame is computed only once its last sample has arrived. flush=True (after
    ``input_finished()``) rounds N / shift to the nearest integer, reflecting the missing end samples."""
    shift, length = opts.window_shift, opts.window_size
    if opts.snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    n = (num_samples + shift // 2) // shift
    if flush:
        return n
    while n > 0 and frame_starts(np.array([n - 1]), opts)[0] + length > num_samples:
        n -= 1
    return n


def frame_starts(frames: np.ndarray, opts: FbankOptions) -> np.ndarray:
    """First sample of each frame (knf ``FirstSampleOfFrame``): shift*f, or with snip_edges=False the frame is
    centred on shift*f + shift/2 (160 f + 80 - 200 = 160 f - 120 for 10/25 ms at 16 kHz)."""
    frames = np.asarray(frames, np.int64)
    shift = opts.window_shift
    if opts.snip_edges:
        return frames * shift
    return shift * frames + shift // 2 - opts.window_size // 2


def extract_frames(x: np.ndarray, opts: FbankOptions, n_frames: int) -> np.ndarray:
    """[N] -> [F, window_size]: frame f's samples, indices outside [0, N) reflected (-1 -> 0, N -> N-1),
    repeatedly for very short signals (knf ``ExtractWindow``)."""
    n = x.shape[0]
    idx = frame_starts(np.arange(n_frames), opts)[:, None] + np.arange(opts.window_size)[None, :]  # [F, W]
    while True:
        low, high = idx < 0, idx >= n
        if not (low.any() or high.any()):
            break
        idx = np.where(low, -idx - 1, np.where(high, 2 * n - 1 - idx, idx))
    return x[idx]


# --------------------------------------------------------------------------------------------------------------
# per-frame processing
# --------------------------------------------------------------------------------------------------------------
def remove_dc_offset(frames: np.ndarray) -> np.ndarray:
    """[F, W] -> [F, W]: minus the frame mean, the sum taken sequentially in float32 as knf does."""
    total = np.cumsum(frames, axis=1, dtype=F32)[:, -1]  # [F]
    mean = (total / F32(frames.shape[1])).astype(F32)
    return frames - mean[:, None]


def preemphasis(frames: np.ndarray, coeff: float) -> np.ndarray:
    """[F, W] -> [F, W]: within each frame y[i] = x[i] - c x[i-1]; y[0] = x[0] - c x[0] (knf ``Preemphasize``)."""
    c = F32(coeff)
    y = np.empty_like(frames)
    y[:, 1:] = frames[:, 1:] - c * frames[:, :-1]
    y[:, 0] = frames[:, 0] - c * frames[:, 0]
    return y


def window_function(window_type: str, size: int, blackman_coeff: float = 0.42) -> np.ndarray:
    """[W] float32, computed in double as knf's ``GetWindow``; "hann" is periodic (2 pi n / W), the others
    use 2 pi n / (W - 1)."""
    i = np.arange(size, dtype=np.float64)
    a = M_2PI / size if window_type == "hann" else M_2PI / (size - 1)
    if window_type in ("hann", "hanning"):
        w = 0.5 - 0.5 * np.cos(a * i)
    elif window_type == "sine":
        w = np.sin(0.5 * a * i)
    elif window_type == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif window_type == "povey":
        w = np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    elif window_type == "rectangular":
        w = np.ones(size)
    elif window_type == "blackman":
        w = blackman_coeff - 0.5 * np.cos(a * i) + (0.5 - blackman_coeff) * np.cos(2 * a * i)
    else:
        raise ValueError(f"unknown window_type {window_type!r}")
    return w.astype(F32)


def power_spectrum(frames: np.ndarray, padded: int) -> np.ndarray:
    """[F, W] -> [F, padded//2 + 1]: zero-pad to ``padded``, rfft, re^2 + im^2 in float32."""
    spec = np.fft.rfft(frames.astype(np.float64), n=padded, axis=1)
    re, im = spec.real.astype(F32), spec.imag.astype(F32)
    return re * re + im * im


# --------------------------------------------------------------------------------------------------------------
# mel filterbank
# --------------------------------------------------------------------------------------------------------------
def _logf(x):
    return np.log(np.asarray(x, np.float64)).astype(F32)


def _expf(x):
    return np.exp(np.asarray(x, np.float64)).astype(F32)


def mel_scale(f):
    """HTK mel scale: 1127 ln(1 + f / 700), in float32."""
    f = np.asarray(f, F32)
    return F32(1127.0) * _logf(F32(1.0) + f / F32(700.0))


def mel_scale_slaney(f):
    """Slaney mel scale in float32: 3 f / 200 up to 1 kHz, 15 + 27 ln(f / 1000) / ln 6.4 above."""
    f = np.asarray(f, F32)
    with np.errstate(divide="ignore"):
        log_part = F32(15) + F32(14.545078505785561) * _logf(f / F32(1000))
    return np.where(f <= 1000, f * F32(3) / F32(200.0), log_part).astype(F32)


def inverse_mel_scale_slaney(m):
    m = np.asarray(m, F32)
    lin = (F32(200.0) / F32(3)) * m
    log_part = F32(1000) * _expf((m - F32(15)) * F32(0.06875177742094911))
    return np.where(m <= 15, lin, log_part).astype(F32)


def mel_banks(opts: FbankOptions) -> np.ndarray:
    """[num_bins, padded//2 + 1] float32 filter weights (knf ``MelBanks``). Librosa mode: triangles in Hz on
    the Slaney scale over all padded//2 + 1 bins, Slaney-normalised by 2 / (right - left). Kaldi mode:
    triangles in HTK mel over padded//2 bins (the Nyquist bin gets no weight)."""
    padded = opts.padded_window_size
    sr = F32(opts.samp_freq)
    nyquist = F32(0.5) * sr
    low = F32(opts.low_freq)
    high = F32(opts.high_freq) if opts.high_freq > 0 else nyquist + F32(opts.high_freq)
    if not (0 <= low < nyquist and 0 < high <= nyquist and high > low):
        raise ValueError(f"bad mel range low_freq {low}, high_freq {high} (Nyquist {nyquist})")
    bin_width = sr / F32(padded)
    fb = np.zeros((opts.num_bins, padded // 2 + 1), F32)
    bins = np.arange(opts.num_bins, dtype=F32)[:, None]
    if opts.is_librosa:
        to_mel, from_mel = (
            (mel_scale_slaney, inverse_mel_scale_slaney)
            if opts.use_slaney_mel_scale
            else (mel_scale, _inverse_mel_scale)
        )
        mel_low, mel_high = to_mel(low), to_mel(high)
        delta = (mel_high - mel_low) / F32(opts.num_bins + 1)
        left, centre, right = (from_mel(mel_low + (bins + k) * delta) for k in (0, 1, 2))  # [M, 1] Hz
        x = bin_width * np.arange(padded // 2 + 1, dtype=F32)[None, :]  # [1, K] Hz
    else:
        mel_low, mel_high = mel_scale(low), mel_scale(high)
        delta = (mel_high - mel_low) / F32(opts.num_bins + 1)
        left, centre, right = (mel_low + (bins + k) * delta for k in (0, 1, 2))  # [M, 1] mel
        x = mel_scale(bin_width * np.arange(padded // 2, dtype=F32))[None, :]  # [1, K-1] mel
    rising = (x - left) / (centre - left)
    falling = (right - x) / (right - centre)
    w = np.where(x <= centre, rising, falling).astype(F32)
    if opts.is_librosa and opts.norm:
        w = w * (F32(2) / (right - left))
    w = np.where((x > left) & (x < right), w, F32(0))
    fb[:, : w.shape[1]] = w
    return fb


def _inverse_mel_scale(m):
    m = np.asarray(m, F32)
    return F32(700.0) * (_expf(m / F32(1127.0)) - F32(1.0))


def apply_mel_banks(power: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """[F, K] x [M, K] -> [F, M]: each bin's weighted sum over its nonzero span, accumulated sequentially in
    float32 from the first nonzero weight, as knf's ``MelBanks::Compute``."""
    out = np.empty((power.shape[0], fb.shape[0]), F32)
    for m in range(fb.shape[0]):
        nz = np.flatnonzero(fb[m])
        lo, hi = nz[0], nz[-1] + 1
        out[:, m] = np.cumsum(power[:, lo:hi] * fb[m, lo:hi], axis=1, dtype=F32)[:, -1]
    return out


# --------------------------------------------------------------------------------------------------------------
# the whole front end
# --------------------------------------------------------------------------------------------------------------
def fbank(samples: np.ndarray, opts: FbankOptions = NEMO_TRANSDUCER, *, input_finished: bool = True) -> np.ndarray:
    """samples [N] (float, in [-1, 1]) -> log-mel [F, num_bins] float32, F = ``num_frames(N, opts,
    flush=input_finished)``: what ``knf.OnlineFbank`` holds after ``accept_waveform(samples)`` (in any number of
    pieces) and, with ``input_finished``, ``input_finished()``."""
    x = np.ascontiguousarray(samples, F32).reshape(-1)
    n = num_frames(x.shape[0], opts, flush=input_finished)
    if n == 0 or x.shape[0] == 0:
        return np.zeros((0, opts.num_bins), F32)
    frames = extract_frames(x, opts, n)  # [F, W]
    if opts.remove_dc_offset:
        frames = remove_dc_offset(frames)
    if opts.preemph_coeff != 0:
        frames = preemphasis(frames, opts.preemph_coeff)
    frames = frames * window_function(opts.window_type, opts.window_size, opts.blackman_coeff)
    power = power_spectrum(frames, opts.padded_window_size)  # [F, K]
    if not opts.use_power:
        power = np.sqrt(power)
    mel = apply_mel_banks(power, mel_banks(opts))  # [F, M]
    if opts.use_log_fbank:
        mel = _logf(np.maximum(mel, F32(FLT_EPSILON)))
    return mel


def to_knf_options(opts: FbankOptions):
    """The same settings as a ``kaldi_native_fbank.FbankOptions`` (for comparing with the real package)."""
    import kaldi_native_fbank as knf

    o = knf.FbankOptions()
    f, m = o.frame_opts, o.mel_opts
    f.samp_freq, f.frame_shift_ms, f.frame_length_ms = opts.samp_freq, opts.frame_shift_ms, opts.frame_length_ms
    f.dither, f.preemph_coeff, f.remove_dc_offset = opts.dither, opts.preemph_coeff, opts.remove_dc_offset
    f.window_type, f.round_to_power_of_two, f.blackman_coeff = (
        opts.window_type,
        opts.round_to_power_of_two,
        opts.blackman_coeff,
    )
    f.snip_edges = opts.snip_edges
    m.num_bins, m.low_freq, m.high_freq, m.is_librosa = opts.num_bins, opts.low_freq, opts.high_freq, opts.is_librosa
    m.norm, m.use_slaney_mel_scale = opts.norm, opts.use_slaney_mel_scale
    o.use_power, o.use_log_fbank = opts.use_power, opts.use_log_fbank
    return o
