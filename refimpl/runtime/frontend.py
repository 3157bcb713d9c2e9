"""NeMo's log-mel computed as audio arrives, in flat memory: bit for bit the frames ``log_mel`` gives for the
whole signal, whatever the block sizes.

Frame t of NeMo's front end (``center=True``, zero padding) is the window of pre-emphasised samples
[hop*t - n_fft/2, hop*t + n_fft/2), the samples before 0 and after the end being zeros. So frame t is final as
soon as hop*t + n_fft/2 samples have arrived; every other frame waits for the end of the stream, where the
padding is known. Pre-emphasis carries the previous block's last sample. Each frame goes through the same
per-frame arithmetic as ``refimpl.model.preprocessing.log_mel`` (FFT, power, the filterbank in a fixed
summation order, log), so the result does not depend on how the audio was split. At the end, frames from the
valid length on (NeMo >= 2.5: floor(L / hop)) are set to ``pad_value``, as NeMo masks them.

Only settings NeMo's streaming models use are supported: no normalisation (it needs the whole utterance), no
dither, no pad_to, the NeMo >= 2.5 edge rules.
"""

from __future__ import annotations

import numpy as np

from weights_tools import ConfigError, PreprocessorConfig

from ..model.audio import as_audio, notice
from ..model.preprocessing import (
    NO_NORMALIZATION,
    apply_filterbank,
    centre_window,
    check_supported,
    checked_filterbank,
    checked_window,
    log_features,
    valid_frames,
)


class FeatureStream:
    """accept(samples) -> the log-mel frames [features, n] that became final; finish() -> the rest.
    ``featurizer``: the checkpoint's ``{"fb", "window"}`` when known (``features.featurizer_of``)."""

    def __init__(
        self, cfg: PreprocessorConfig, featurizer: dict | None = None, *, dtype=np.float32, notices: list | None = None
    ):
        check_supported(cfg, window_given=bool(featurizer and "window" in featurizer))
        if cfg.normalize not in NO_NORMALIZATION or cfg.pad_to:
            raise ConfigError(
                f"normalize {cfg.normalize!r} / pad_to {cfg.pad_to} need the whole utterance: features cannot be "
                f"computed as audio arrives (streaming models use normalize 'NA' and pad_to 0)"
            )
        f = featurizer or {}
        self.cfg, self.dtype = cfg, np.dtype(dtype)
        self.window = centre_window(checked_window(f.get("window"), cfg, self.dtype), cfg.n_fft)  # [n_fft]
        self.fb = checked_filterbank(f.get("fb"), cfg, self.dtype)  # [features, n_fft//2+1]
        self.pad = cfg.n_fft // 2
        self.samples = 0  # samples accepted
        self.frames = 0  # frames handed out
        self._last = None  # the last raw sample (pre-emphasis of the next block)
        self._buf = np.zeros(self.pad, self.dtype)  # pre-emphasised samples from index self._buf0 on
        self._buf0 = -self.pad  # sample index of _buf[0] (negative: the left zero padding)
        self.finished = False
        self.notices = notices  # where the one notice about loud samples goes (None: an AudioWarning)
        self._told = False

    def _preemphasise(self, x: np.ndarray) -> np.ndarray:
        if self.cfg.preemph is None:
            return x
        c = self.dtype.type(self.cfg.preemph)
        prev = x[:1] if self._last is None else np.array([self._last], self.dtype)  # y[0] = x[0]
        y = x - c * np.concatenate([prev, x[:-1]])
        if self._last is None:
            y[0] = x[0]
        return y

    def _frames(self, stop: int) -> np.ndarray:
        """Frames self.frames .. stop-1 from the buffer -> log-mel [features, n]; drops samples no frame needs."""
        n, hop, n_fft = stop - self.frames, self.cfg.n_window_stride, self.cfg.n_fft
        if n <= 0:
            return np.zeros((self.cfg.features, 0), self.dtype)
        first = self.frames * hop - self.pad - self._buf0  # buffer index of the first frame's first sample
        windows = np.lib.stride_tricks.sliding_window_view(self._buf[first:], n_fft)[::hop][:n]  # [n, n_fft]
        spec = np.fft.rfft(windows * self.window, n=n_fft, axis=-1).astype(np.complex64, copy=False)
        mag = np.sqrt(spec.real * spec.real + spec.imag * spec.imag)
        if self.cfg.mag_power != 1.0:
            mag = mag ** self.dtype.type(self.cfg.mag_power)
        mel = log_features(apply_filterbank(self.fb, mag.T[None]), self.cfg)[0]  # [features, n]
        self.frames = stop
        keep_from = self.frames * hop - self.pad - self._buf0  # the next frame's first sample
        self._buf, self._buf0 = self._buf[keep_from:], self._buf0 + keep_from
        return mel.astype(self.dtype, copy=False)

    def accept(self, samples, *, checked: bool = False) -> np.ndarray:
        """Append a block of float samples (any size, 0 included) -> the frames it completed [features, n].
        Each block is checked (``as_audio``) unless ``checked`` (a file's blocks, checked as they were read);
        samples far outside [-1, 1] get one notice per stream, not one per block."""
        if self.finished:
            raise ValueError("the stream is finished: no more audio can be accepted")
        x = np.asarray(samples)
        if x.size == 0:
            return np.zeros((self.cfg.features, 0), self.dtype)
        if checked:
            x = np.ascontiguousarray(x, self.dtype)
        else:
            said: list = []
            x = as_audio(x, dtype=self.dtype, notices=said)
            if said and not self._told:
                self._told = True
                notice(said[0], self.notices)
        y = self._preemphasise(x)
        self._last = x[-1]
        self._buf = np.concatenate([self._buf, y])
        self.samples += len(x)
        # frame t is final once samples up to hop*t + n_fft/2 are here
        ready = max(0, (self.samples - self.pad) // self.cfg.n_window_stride + 1)
        return self._frames(ready)

    def finish(self) -> np.ndarray:
        """The end of the stream: the last frames, over the right zero padding, and NeMo's masking of the frames
        from the valid length on -> [features, n]. The stream then holds 1 + L // hop frames in all."""
        if self.finished:
            raise ValueError("finish() was already called")
        self.finished = True
        total = 1 + (self.samples + 2 * self.pad - self.cfg.n_fft) // self.cfg.n_window_stride
        self._buf = np.concatenate([self._buf, np.zeros(self.pad, self.dtype)])
        start = self.frames
        mel = self._frames(total)
        valid = int(valid_frames(np.array([self.samples]), self.cfg)[0])
        mel[:, max(0, valid - start) :] = self.dtype.type(self.cfg.pad_value)
        return mel
