"""refimpl.model.preprocessing against NeMo's own preprocessor output (tests/fixtures/hybrid/goldens/mel.npz, NeMo
3.0.0), plus hand computations for what the goldens cannot show (NeMo <= 2.4, normalisation, dither).

The goldens are compared with the filterbank and window refimpl computes itself, so these tests need neither
torch nor the checkpoint reader. (The checkpoint's ``fb`` is bit-identical to ``mel_filterbank()``; its
``window`` differs from ``window_function`` by float32 ulps because torch builds it in float32 arithmetic.)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import weights_tools
from refimpl.model.audio import AudioError, load_audio
from refimpl.model.preprocessing import (
    centre_window,
    check_supported,
    frame_signal,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    normalize_batch,
    num_frames,
    pad_time,
    preemphasis,
    valid_frames,
    window_function,
)
from refimpl.tools.tolerances import compare
from weights_tools.config import ConfigError, PreprocessorConfig

FIXTURES = Path(__file__).parent / "fixtures"
GOLDENS = FIXTURES / "hybrid" / "goldens"
CLIPS = ("hello", "fox", "north_wind")
EPS32 = float(np.finfo(np.float32).eps)

# ---- tolerances: log-mel (float32) against NeMo's float32 log-mel -----------------------------------------------
# Both sides compute the same float32 operations; only the FFT libraries (and BLAS in the mel matmul) round
# differently. Measured with NeMo 3.0.0 / torch 2.13 vs NumPy 2.4: median |diff| 0 (over half the values are
# bit-identical), max 9.1e-5 (hello 3.9e-5, fox 9.1e-5, north_wind 7.5e-5, odd lengths 7.2e-5), always in bins
# near the log floor ln(2^-24) = -16.6.
LOGMEL_MEDIAN_ABS = 1e-6  # one float32 ulp of a log-mel value in [8, 16): typical values sit at -16 .. +2
# Per value: FFT rounding is relative to the energy of the whole frame (Parseval), not of the bin, and the log
# divides it by the bin's own energy P = exp(ref) = mel + 2^-24. So a value may differ by a few ulps of itself
# plus k eps32 * (loudest mel bin of its frame) / P. Measured worst: 0.38 of this bound (4 ulp, k = 32).
LOGMEL_ULPS, LOGMEL_FRAME_EPS = 4, 32
LOGMEL_MAX_ABS = 2e-4  # backstop for the whole array: 2x the measured worst 9.1e-5
# Integers (column count, valid lengths) and masked frames (exactly pad_value 0.0) must match exactly.
# The project-wide table (refimpl.tools.tolerances, entry "mel") must pass too; it is looser than the bounds above.


@pytest.fixture(scope="module")
def goldens():
    with np.load(GOLDENS / "mel.npz") as z:
        return dict(z)


@pytest.fixture(scope="module")
def clips():
    return {name: load_audio(FIXTURES / "audio" / f"{name}.wav") for name in CLIPS}


def assert_matches_nemo(mel, mel_length, ref, ref_length):
    """mel [80, F] float32 vs NeMo's, with the tolerances above; lengths and masked frames exact."""
    assert mel.dtype == np.float32 and mel.shape == ref.shape, (mel.dtype, mel.shape, ref.shape)
    assert int(mel_length) == int(ref_length)
    L = int(ref_length)
    assert np.all(mel[:, L:] == 0.0) and np.all(ref[:, L:] == 0.0)  # masked frames: exactly pad_value
    if L == 0:
        return
    got, want = mel[:, :L].astype(np.float64), ref[:, :L].astype(np.float64)
    diff = np.abs(got - want)
    power = np.exp(want)  # mel + 2^-24
    bound = LOGMEL_ULPS * np.spacing(np.abs(ref[:, :L])) + LOGMEL_FRAME_EPS * EPS32 * power.max(0) / power
    worst = np.unravel_index(np.argmax(diff / bound), diff.shape)
    assert np.all(diff <= bound), f"log-mel off at (mel, frame) {worst}: {got[worst]} vs {want[worst]}"
    assert np.median(diff) <= LOGMEL_MEDIAN_ABS
    assert diff.max() <= LOGMEL_MAX_ABS
    assert compare("mel", mel, ref).ok


# ---- NeMo goldens -----------------------------------------------------------------------------------------------
def test_goldens_come_from_nemo_3():
    meta = json.loads((GOLDENS / "goldens.json").read_text())
    assert meta["versions"]["nemo"].split(".")[0] == "3"  # NeMo >= 2.5 behaviour, refimpl's default


@pytest.mark.parametrize("clip", CLIPS)
def test_clip_matches_nemo(goldens, clips, clip):
    mel, mel_length = log_mel(clips[clip])
    assert mel.shape[0] == 1 and mel_length.dtype == np.int64
    assert mel.shape[2] == 1 + len(clips[clip]) // 160
    assert_matches_nemo(mel[0], mel_length[0], goldens[f"{clip}/mel"], goldens[f"{clip}/mel_length"])


ODD = [1, 2, 159, 160, 161, 255, 256, 257, 399, 400, 401, 511, 512, 513, 7999, 8000, 8001, 8079, 8080, 8081, 8159]


@pytest.mark.parametrize("n", ODD)
def test_odd_lengths_match_nemo(goldens, clips, n):
    mel, mel_length = log_mel(clips["fox"][:n])
    assert mel.shape[2] == 1 + n // 160 and mel_length[0] == n // 160
    assert_matches_nemo(mel[0], mel_length[0], goldens[f"odd/{n}/mel"], goldens[f"odd/{n}/mel_length"])


def test_padded_batch_matches_nemo(goldens, clips):
    lengths = goldens["batch/audio_length"]
    rows = [clips["hello"], clips["fox"][: lengths[1]]]
    batch = np.zeros((2, lengths.max()), np.float32)
    for b, row in enumerate(rows):
        batch[b, : len(row)] = row
    mel, mel_length = log_mel(batch, lengths)
    np.testing.assert_array_equal(mel_length, goldens["batch/mel_length"])
    for b in range(2):
        assert_matches_nemo(mel[b], mel_length[b], goldens["batch/mel"][b], goldens["batch/mel_length"][b])
    # NeMo >= 2.5 is invariant to padding: the short row equals that row computed on its own, bar extra columns
    alone, alone_length = log_mel(rows[1])
    assert alone_length[0] == mel_length[1]
    # (within the table, not bit for bit: the batched and the single-row FFT may round differently with another
    # BLAS/FFT build; 5.96e-8 was seen)
    assert compare("mel", mel[1, :, : alone.shape[2]], alone[0]).ok


def test_checkpoint_preprocessor_buffers(goldens, clips):
    """weights_tools.load_nemo returns the checkpoint's preprocessor buffers: its fb is exactly mel_filterbank(),
    its window is window_function() to float32 rounding, and log-mels made with them match NeMo too."""
    config, weights = weights_tools.load_nemo(FIXTURES / "hybrid" / "model.nemo")
    fb = weights_tools.get(weights, "preprocessor.featurizer.fb")
    window = weights_tools.get(weights, "preprocessor.featurizer.window")
    cfg = config.preprocessor
    np.testing.assert_array_equal(np.asarray(fb)[0], mel_filterbank(cfg))
    np.testing.assert_allclose(window, window_function(cfg.window, cfg.n_window_size), rtol=0, atol=2.4e-7)
    for clip in CLIPS:
        mel, mel_length = log_mel(clips[clip], cfg=cfg, fb=fb, window=window)
        assert_matches_nemo(mel[0], mel_length[0], goldens[f"{clip}/mel"], goldens[f"{clip}/mel_length"])


# ---- the pieces -------------------------------------------------------------------------------------------------
def test_lengths_follow_nemo():
    cfg = PreprocessorConfig()
    for n in (0, 1, 159, 160, 161, 8159):
        assert num_frames(n, cfg) == 1 + n // 160
    np.testing.assert_array_equal(valid_frames([0, 1, 159, 160, 161, 8159], cfg), [0, 0, 0, 1, 1, 50])
    np.testing.assert_array_equal(valid_frames([0, 1, 159, 160, 161, 8159], cfg, legacy=True), [0, 1, 1, 2, 2, 51])


def test_window_functions_are_symmetric_torch_style():
    n = np.arange(400)
    np.testing.assert_allclose(window_function("hann", 400), 0.5 - 0.5 * np.cos(2 * np.pi * n / 399), atol=1e-7)
    for name in ("hann", "hamming", "blackman", "bartlett"):
        w = window_function(name, 400)
        assert w.dtype == np.float32 and w.shape == (400,)
        np.testing.assert_array_equal(w, w[::-1])  # periodic=False
    assert window_function("hann", 400)[0] == 0 and window_function("hamming", 400)[0] == np.float32(0.08)
    np.testing.assert_array_equal(window_function("bartlett", 5), [0, 0.5, 1, 0.5, 0])
    np.testing.assert_array_equal(window_function("hann", 1), [1])
    padded = centre_window(window_function("hann", 400), 512)  # torch.stft: (512 - 400) // 2 = 56 zeros left
    assert np.all(padded[:56] == 0) and np.all(padded[456:] == 0) and padded[56 + 199] > 0.99


def test_slaney_mel_scale():
    assert hz_to_mel(1000.0) == pytest.approx(15.0)  # linear part: 3 mel per 200 Hz
    assert hz_to_mel(500.0) == pytest.approx(7.5)
    assert hz_to_mel(6400.0) == pytest.approx(15.0 + 27.0)  # log part: 27 mel per factor 6.4
    f = np.array([0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12)


def test_mel_filterbank_shape_and_slaney_norm():
    fb = mel_filterbank()
    assert fb.shape == (80, 257) and fb.dtype == np.float32 and np.all(fb >= 0)
    assert np.all(fb.sum(axis=1) > 0)  # no empty filter at 80 mels / 512-point FFT
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)  # filters ordered by frequency
    edges = mel_to_hz(np.linspace(0, hz_to_mel(8000.0), 82))
    unnormed = mel_filterbank(dataclasses.replace(PreprocessorConfig(), mel_norm=None), dtype=np.float64)
    assert unnormed.max() <= 1.0  # plain triangles peak at <= 1
    slaney = 2 / (edges[2:] - edges[:-2])  # equal area: 2 / (width of the triangle's base)
    np.testing.assert_allclose(mel_filterbank(dtype=np.float64), unnormed * slaney[:, None])


def test_frame_signal_constant_and_reflect_by_hand():
    x = np.arange(1, 11, dtype=np.float32)[None]  # [1, 10]: 1..10
    zeros = frame_signal(x, 8, 2, pad_mode="constant")  # pad 4 each side
    reflect = frame_signal(x, 8, 2, pad_mode="reflect")
    assert zeros.shape == reflect.shape == (1, 1 + 10 // 2, 8)
    np.testing.assert_array_equal(zeros[0, 0], [0, 0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(reflect[0, 0], [5, 4, 3, 2, 1, 2, 3, 4])  # mirrored, edge sample not repeated
    np.testing.assert_array_equal(reflect[0, -1], [7, 8, 9, 10, 9, 8, 7, 6])
    np.testing.assert_array_equal(zeros[0, 2], reflect[0, 2])  # interior frames are the same


def test_preemphasis_whole_signal_and_tail():
    x = np.array([[1, 2, 3, 4], [1, 2, 0, 0]], np.float32)
    c = np.float32(0.97)
    y = preemphasis(x, np.array([4, 2]), 0.97)
    np.testing.assert_array_equal(y[0], [1, 2 - c * 1, 3 - c * 2, 4 - c * 3])
    np.testing.assert_array_equal(y[1], [1, 2 - c * 1, 0, 0])  # NeMo >= 2.5: n >= length -> 0
    legacy = preemphasis(x, np.array([4, 2]), 0.97, zero_tail=False)
    assert legacy[1, 2] == -c * 2  # NeMo <= 2.4: the padding sees the last valid sample


# ---- NeMo <= 2.4 (legacy=True): no golden, so its defining properties -------------------------------------------
def test_legacy_first_frame_is_reflect_padded_by_hand():
    cfg = PreprocessorConfig(n_window_size=8, n_window_stride=2, n_fft=8, features=2, preemph=None, window="hann")
    x = np.array([0.5, -0.25, 0.125, 1.0, -0.5, 0.75, 0.25, -1.0, 0.5, 0.0], np.float32)
    win = np.hanning(8)  # NumPy's symmetric Hann = torch.hann_window(8, periodic=False)
    frame0 = np.array([-0.5, 1.0, 0.125, -0.25, 0.5, -0.25, 0.125, 1.0])  # x[4], x[3], x[2], x[1] | x[0..3]
    power = np.abs(np.fft.rfft(frame0 * win)) ** 2
    want = np.log(mel_filterbank(cfg, np.float64) @ power + 2.0**-24)
    mel, mel_length = log_mel(x, cfg=cfg, legacy=True, window=win)
    np.testing.assert_allclose(mel[0, :, 0], want, rtol=0, atol=1e-5)
    assert mel_length[0] == 10 // 2 + 1


def test_legacy_differs_only_in_edge_frames_and_length(clips):
    x = clips["fox"][16000:24000]  # speech at both ends (the clip itself starts and ends in digital silence)
    new, new_length = log_mel(x)
    old, old_length = log_mel(x, legacy=True)
    assert old.shape == new.shape and old_length[0] == new_length[0] + 1
    assert new.shape[2] == 51 and new_length[0] == 50
    # frame t reads padded samples [160t, 160t + 512): frames 0, 1 reach into the 256-sample left padding,
    # frames 49, 50 into the right one (which starts at padded sample 256 + 8000); the rest are bit-identical
    np.testing.assert_array_equal(old[0, :, 2:49], new[0, :, 2:49])
    assert not np.allclose(old[0, :, :2], new[0, :, :2]) and not np.allclose(old[0, :, 49], new[0, :, 49])
    assert np.all(new[0, :, 50] == 0) and np.all(old[0, :, 50] != 0)  # legacy keeps one more frame


def test_legacy_refuses_short_audio_like_torch():
    with pytest.raises(ValueError, match="reflect padding .* 256 samples, got 256"):
        log_mel(np.zeros(256, np.float32), legacy=True)


# ---- options ----------------------------------------------------------------------------------------------------
def test_per_feature_normalization_by_hand():
    x = np.array([[[1.0, 2.0, 4.0, 9.0], [3.0, 3.0, 3.0, 9.0]]], np.float32)  # [1, 2, 4], valid frames 3
    y = normalize_batch(x, np.array([3]), "per_feature")
    mean, std = np.array([7 / 3, 3.0]), np.array([np.std([1, 2, 4], ddof=1), 0.0]) + 1e-5  # unbiased + CONSTANT
    np.testing.assert_allclose(y[0, :, :3], (x[0, :, :3] - mean[:, None]) / std[:, None], rtol=1e-6)
    assert np.all(y[0, :, 3] == 0)  # invalid frames -> 0
    one = np.array([1])  # a single valid frame
    np.testing.assert_array_equal(normalize_batch(x, one, "per_feature")[0, :, 0], [0, 0])  # std 0, not NaN
    assert np.all(np.isnan(normalize_batch(x, one, "per_feature", legacy=True)[0, :, 0]))  # NeMo <= 2.4


def test_all_features_normalization_by_hand():
    x = np.array([[[1.0, 2.0, 50.0], [4.0, 8.0, 50.0]]], np.float32)
    y = normalize_batch(x, np.array([2]), "all_features")
    v = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_allclose(y[0], (x[0] - v.mean()) / (v.std(ddof=1) + 1e-5), rtol=1e-6)


def test_normalization_in_log_mel_masks_and_na_does_nothing(clips):
    x = clips["hello"]
    plain, _ = log_mel(x)
    for na in ("NA", "", None):
        np.testing.assert_array_equal(log_mel(x, cfg=PreprocessorConfig(normalize=na))[0], plain)
    normed, length = log_mel(x, cfg=PreprocessorConfig(normalize="per_feature"))
    L = int(length[0])
    np.testing.assert_allclose(normed[0, :, :L].mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(normed[0, :, :L].std(axis=1, ddof=1), 1, atol=1e-3)
    assert np.all(normed[0, :, L:] == 0.0)


def test_pad_to_pads_time_with_pad_value(clips):
    cfg = PreprocessorConfig(pad_to=16, pad_value=-5.0)
    mel, length = log_mel(clips["hello"], cfg=cfg)
    plain, _ = log_mel(clips["hello"])
    assert mel.shape[2] % 16 == 0 and mel.shape[2] - 16 < plain.shape[2] <= mel.shape[2]
    assert np.all(mel[0, :, length[0] :] == -5.0)
    np.testing.assert_array_equal(mel[0, :, : length[0]], plain[0, :, : length[0]])
    assert pad_time(np.ones((1, 2, 32)), 16).shape == (1, 2, 32)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(frame_splicing=2), "frame_splicing=2"),
        (dict(exact_pad=True), "exact_pad"),
        (dict(window="ones"), "window 'ones'"),
        (dict(normalize="per_features"), "normalize 'per_features'"),
        (dict(pad_to="max"), "pad_to 'max'"),
        (dict(mel_norm="l2"), "mel_norm 'l2'"),
    ],
)
def test_unsupported_settings_are_refused(change, message):
    cfg = dataclasses.replace(PreprocessorConfig(), **change)
    with pytest.raises(ConfigError, match=message):
        log_mel(np.zeros(1600, np.float32), cfg=cfg)


def test_checkpoint_fb_and_window_are_used_and_checked(clips):
    x = clips["hello"][:4000]
    plain, _ = log_mel(x)
    given, _ = log_mel(x, fb=mel_filterbank()[None], window=window_function("hann", 400))
    np.testing.assert_array_equal(given, plain)
    assert not np.array_equal(log_mel(x, window=window_function("hamming", 400))[0], plain)
    with pytest.raises(ValueError, match=r"fb has shape \(80, 256\), expected \(1, 80, 257\)"):
        log_mel(x, fb=np.zeros((80, 256), np.float32))
    with pytest.raises(ValueError, match=r"window has shape \(512,\), expected \(400,\)"):
        log_mel(x, window=np.ones(512, np.float32))
    check_supported(dataclasses.replace(PreprocessorConfig(), window="ones"), window_given=True)


def test_dither_is_off_by_default_and_seedable(clips):
    x = clips["hello"][:8000]
    plain, _ = log_mel(x)
    np.testing.assert_array_equal(log_mel(x)[0], plain)  # deterministic, no noise
    a, _ = log_mel(x, dither=1e-5, seed=7)
    np.testing.assert_array_equal(log_mel(x, dither=1e-5, seed=7)[0], a)
    assert not np.array_equal(a, plain) and not np.array_equal(log_mel(x, dither=1e-5, seed=8)[0], a)
    loud = plain > -5  # dither of 1e-5 is invisible where there is signal
    np.testing.assert_allclose(a[loud], plain[loud], atol=1e-3)


def test_dither_does_not_reach_padding_frames():
    batch = np.zeros((2, 3200), np.float32)
    batch[:, :1600] = 0.1 * np.sin(np.arange(1600, dtype=np.float32))
    mel, length = log_mel(batch, [3200, 1600], dither=1e-3, seed=0)
    assert length.tolist() == [20, 10] and np.all(mel[1, :, 10:] == 0.0)


def test_float64_mode(clips, goldens):
    mel, length = log_mel(clips["fox"], dtype=np.float64)
    assert mel.dtype == np.float64 and length.dtype == np.int64
    diff = np.abs(mel[0] - goldens["fox/mel"])  # NeMo rounds in float32; measured median 2.5e-7, max 1.1e-4
    assert np.median(diff) <= LOGMEL_MEDIAN_ABS and diff.max() <= LOGMEL_MAX_ABS


def test_bad_input_is_refused():
    with pytest.raises(AudioError, match=r"dtype int16.*/ 32768"):
        log_mel(np.zeros(1600, np.int16))
    with pytest.raises(AudioError, match=r"length must be integers of shape \(2,\)"):
        log_mel(np.zeros((2, 1600), np.float32), [1600])
    with pytest.raises(AudioError, match=r"length \[1601\] must lie in 0..1600"):
        log_mel(np.zeros(1600, np.float32), 1601)
    with pytest.raises(AudioError, match=r"shape \(1, 2, 1600\)"):
        log_mel(np.zeros((1, 2, 1600), np.float32))
